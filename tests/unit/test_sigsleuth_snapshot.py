"""sigsleuth_snapshot against a fake /proc: take, keep, check mode, diff, remove, stale state."""

import json
import os
from unittest import mock

import pytest

import sigsleuth_snapshot
import sigsleuth_trace
from sigsleuth_fakes import FakeKernel, load_state, make_fake_proc, run_module

PROCESSES = [
    {"pid": 1, "ppid": 0, "comm": "init", "start_ticks": 1, "exe": "/sbin/init", "argv": ["/sbin/init"], "uid": 0},
    {"pid": 4242, "ppid": 1, "comm": "agent d)", "start_ticks": 500, "exe": "/opt/agent", "argv": ["agent", "-f"],
     "uid": 1000, "cpu_limit": "300"},
]


@pytest.fixture
def kernel(tmp_path):
    proc = str(tmp_path / "proc")
    make_fake_proc(proc, PROCESSES)
    fake = FakeKernel(tmp_path)
    with fake.patched(sigsleuth_snapshot, sigsleuth_trace), mock.patch.dict(sigsleuth_snapshot.PATHS, proc=proc):
        yield fake


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / "state")


def snap(state_dir, state="present", check_mode=False):
    return run_module(sigsleuth_snapshot, dict(state=state, state_dir=state_dir), check_mode=check_mode)


def test_take_a_snapshot(kernel, state_dir):
    result, failed = snap(state_dir)
    assert not failed, result
    assert result["changed"] is True
    path = os.path.join(state_dir, "snapshot.jsonl")
    assert result["path"] == path and result["count"] == 2
    with open(path) as handle:
        entries = [json.loads(line) for line in handle]
    assert {entry["pid"]: entry["comm"] for entry in entries} == {1: "init", 4242: "agent d)"}
    agent = [entry for entry in entries if entry["pid"] == 4242][0]
    assert agent["ppid"] == 1 and agent["exe"] == "/opt/agent" and agent["argv"] == ["agent", "-f"]
    assert agent["uid"] == 1000 and agent["start_ticks"] == 500
    assert agent["rlimits"] == [0] and [e for e in entries if e["pid"] == 1][0]["rlimits"] == []  # RLIMIT_CPU
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    section = load_state(state_dir)["snapshot"]
    assert section == {"path": path, "taken_at_ns": result["taken_at_ns"], "count": 2}
    assert result["diff"] == {"before": {}, "after": section}


def test_second_run_keeps_the_snapshot(kernel, state_dir):
    snap(state_dir)
    with open(os.path.join(state_dir, "state.json"), "rb") as handle:
        before = handle.read()
    result, failed = snap(state_dir)
    assert not failed and result["changed"] is False
    with open(os.path.join(state_dir, "state.json"), "rb") as handle:
        assert handle.read() == before


def test_a_lost_snapshot_file_is_retaken(kernel, state_dir):
    snap(state_dir)
    os.unlink(os.path.join(state_dir, "snapshot.jsonl"))
    result, failed = snap(state_dir)
    assert not failed and result["changed"] is True
    assert os.path.isfile(os.path.join(state_dir, "snapshot.jsonl"))


def test_check_mode_writes_nothing(kernel, state_dir):
    result, failed = snap(state_dir, check_mode=True)
    assert not failed and result["changed"] is True
    assert "would take" in result["msg"]
    assert not os.path.exists(state_dir)

    snap(state_dir)
    result, failed = snap(state_dir, state="absent", check_mode=True)
    assert not failed and result["changed"] is True
    assert os.path.isfile(os.path.join(state_dir, "snapshot.jsonl"))


def test_remove(kernel, state_dir):
    snap(state_dir)
    result, failed = snap(state_dir, state="absent")
    assert not failed and result["changed"] is True
    assert result["diff"]["after"] == {}
    assert not os.path.exists(state_dir)
    result, failed = snap(state_dir, state="absent")
    assert not failed and result["changed"] is False


def test_remove_never_armed(kernel, state_dir):
    result, failed = snap(state_dir, state="absent")
    assert not failed and result["changed"] is False
    assert not os.path.exists(state_dir)


def test_stale_snapshot_is_replaced_and_removable(kernel, state_dir):
    first, _ = snap(state_dir)
    kernel.reboot()
    result, failed = snap(state_dir)
    assert not failed and result["changed"] is True
    assert result["taken_at_ns"] >= first["taken_at_ns"]
    assert load_state(state_dir)["boot_id"] == "boot-2"

    kernel.reboot("boot-3")
    result, failed = snap(state_dir, state="absent")
    assert not failed and result["changed"] is True
    assert not os.path.exists(state_dir)


def test_sections_share_the_state_dir(kernel, state_dir):
    """The directory goes only when the last section does, whichever order disarm runs in."""
    run_module(sigsleuth_trace, dict(state_dir=state_dir))
    snap(state_dir)
    snap(state_dir, state="absent")
    assert os.path.exists(state_dir)
    assert "ftrace" in load_state(state_dir) and "snapshot" not in load_state(state_dir)
    run_module(sigsleuth_trace, dict(state="absent", state_dir=state_dir))
    assert not os.path.exists(state_dir)


def test_existing_state_dir_is_kept(kernel, tmp_path):
    state_dir = str(tmp_path / "existing")
    os.makedirs(state_dir)
    snap(state_dir)
    snap(state_dir, state="absent")
    assert os.path.isdir(state_dir) and os.listdir(state_dir) == []


def test_not_root(kernel, state_dir):
    with mock.patch.object(os, "geteuid", return_value=1000):
        result, failed = snap(state_dir)
    assert failed and "must run as root" in result["msg"]
    assert not os.path.exists(state_dir)
