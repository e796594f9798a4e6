"""sigsleuth_watch without a kernel: query reads the kill index only, check mode starts nothing, no trace armed
refuses to start, stopping nothing changes nothing, absent removes leftover files."""

import json
import os

import pytest

import sigsleuth_watch
from ansible.module_utils.sigsleuth_drain import WatchFiles
from ansible.module_utils.sigsleuth_state import StateStore
from sigsleuth_fakes import run_module

KILLS = {"count": 3, "kills": [
    {"time": "2026-12-02T15:00:00.000000Z", "ts_ns": 1, "signal": "SIGKILL", "number": 9,
     "victim": {"pid": 10, "comm": "agent"}, "sender": {"pid": 12, "comm": "kill"}, "mechanism": "kill", "count": 1},
    {"time": "2026-12-02T15:00:01.000000Z", "ts_ns": 2, "signal": "SIGKILL", "number": 9,
     "victim": {"pid": 11, "comm": "other"}, "sender": None, "mechanism": "oom_kill", "count": 1},
    {"time": "2026-12-02T15:00:02.000000Z", "ts_ns": 3, "signal": "SIGTERM", "number": 15,
     "victim": {"pid": 13, "comm": "agent"}, "sender": {"pid": 12, "comm": "kill"}, "mechanism": "kill", "count": 1},
]}


@pytest.fixture
def state_dir(tmp_path):
    path = str(tmp_path / "state")
    if os.geteuid() != 0:
        pytest.skip("sigsleuth_watch refuses to run unless root")
    return path


def watch(state_dir, check_mode=False, **args):
    return run_module(sigsleuth_watch, dict(args, state_dir=state_dir), check_mode=check_mode)


def with_dead_drain(state_dir):
    store = StateStore(state_dir)
    store.put("watch", {"pid": 999999, "start_ticks": 1, "started_at_ns": 1, "restarts": 0, "stopped_at_ns": None})
    with open(WatchFiles(state_dir).kills, "w") as handle:
        json.dump(KILLS, handle)


@pytest.mark.parametrize("victim, pids", [({"victim_comm": "agent"}, [10, 13]), ({"victim_pid": 11}, [11]),
                                          ({}, [10, 11, 13]), ({"victim_comm": "nobody"}, [])])
def test_query_reads_the_kill_index(state_dir, victim, pids):
    with_dead_drain(state_dir)
    result, failed = watch(state_dir, state="query", **victim)
    assert not failed and result["changed"] is False
    assert result["running"] is False and result["drain"]["crashed"] is True
    assert [kill["victim"]["pid"] for kill in result["kills"]] == pids and result["kills_total"] == 3


def test_query_in_check_mode_and_without_any_drain(state_dir):
    result, failed = watch(state_dir, check_mode=True, state="query", victim_comm="agent")
    assert not failed and result["running"] is False and result["kills"] == [] and result["changed"] is False
    assert not os.path.exists(state_dir)


def test_check_mode_starts_nothing_and_no_trace_refuses(state_dir):
    result, failed = watch(state_dir, check_mode=True, state="running")
    assert not failed and result["changed"] is True and not os.path.exists(state_dir)
    result, failed = watch(state_dir, state="running")
    assert failed and "not armed" in result["msg"] and "state.json" in result["msg"]


def test_stopping_nothing_changes_nothing_and_absent_removes_leftovers(state_dir):
    result, failed = watch(state_dir, state="stopped")
    assert not failed and result["changed"] is False
    with_dead_drain(state_dir)
    StateStore(state_dir).put("ftrace", {"instance": "x"})  # keeps the state file after the watch section goes
    result, failed = watch(state_dir, state="absent", check_mode=True)
    assert not failed and result["changed"] is True and os.path.exists(WatchFiles(state_dir).kills)
    result, failed = watch(state_dir, state="absent")
    assert not failed and result["changed"] is True
    assert not any(os.path.exists(path) for path in WatchFiles(state_dir).all())
    assert "watch" not in StateStore(state_dir).load()


def test_victim_comm_and_pid_are_exclusive(state_dir):
    result, failed = watch(state_dir, state="query", victim_comm="a", victim_pid=1)
    assert failed and "mutually exclusive" in result["msg"]
