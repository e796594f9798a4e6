"""Arm, collect and disarm on this machine: idempotence, check mode, no residue, tracefs mounted as found,
bad input. Every test leaves the host as the module found it (checked by the fixtures)."""

import json
import os
import subprocess

import pytest

from sigsleuth_support import (
    INSTANCE, STATE_DIR, assert_no_residue, disarm_quietly, run_playbook, signals_extra_vars, tracefs_mounts,
)

TRACEFS = "/sys/kernel/tracing"


def instance_dirs():
    """Every sigsleuth-named instance under any mounted tracefs."""
    return [os.path.join(point, "instances", INSTANCE) for point in tracefs_mounts()
            if os.path.isdir(os.path.join(point, "instances", INSTANCE))]


@pytest.fixture
def disarmed_after(host_baseline):
    """Whatever the test did, disarm afterwards and check the host is as the module found it."""
    yield
    result = disarm_quietly()
    assert getattr(result, "rc", None) == 0, "disarm failed:\n%s" % getattr(result, "output", lambda: result)()
    assert_no_residue(host_baseline, "after disarm")


PRECISIONS = ["light", "syscall"]


def precision_vars(precision):
    return ["-e", json.dumps({"sigsleuth_precision": precision})]


def event_enabled(event):
    with open(os.path.join(instance_dirs()[0], "events", event, "enable")) as handle:
        return handle.read().strip() == "1"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_arm_twice_changes_nothing_the_second_time(armed, precision):
    first = armed(["KILL", "TERM"], *precision_vars(precision))
    assert first.host()["failed"] == 0
    assert first.host()["changed"] > 0, "the first arm changed nothing?\n" + first.output()
    assert instance_dirs() and os.path.isdir(STATE_DIR)
    assert event_enabled("syscalls/sys_enter_kill") is (precision == "syscall")
    assert not event_enabled("syscalls/sys_enter_write"), "ordinary writes are never recorded"
    second = armed(["KILL", "TERM"], *precision_vars(precision))
    assert second.host()["failed"] == 0
    assert second.host()["changed"] == 0, "the second arm changed something:\n" + second.output()


def test_arm_with_other_signals_rearms(armed):
    armed(["KILL"])
    again = armed(["KILL", "TERM"])
    assert again.host()["changed"] > 0, "changing the signals must change the arm:\n" + again.output()
    with open(os.path.join(instance_dirs()[0], "events", "signal", "signal_generate", "filter")) as handle:
        text = handle.read()
    assert "15" in text and "9" in text, "the signal filter does not cover KILL and TERM: %r" % text


def test_changing_precision_updates_the_armed_host_in_place(armed):
    armed(["KILL"])
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        armed_at = json.load(handle)["ftrace"]["armed_at_ns"]
    precise = armed(["KILL"], *precision_vars("syscall"))
    assert precise.host()["changed"] > 0 and event_enabled("syscalls/sys_enter_kill"), precise.output()
    assert "ftrace armed (syscall precision)" in precise.stdout, precise.output()
    light = armed(["KILL"], *precision_vars("light"))
    assert light.host()["changed"] > 0 and not event_enabled("syscalls/sys_enter_kill"), light.output()
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        ftrace = json.load(handle)["ftrace"]
    assert ftrace["precision"] == "light" and ftrace["armed_at_ns"] > armed_at


def test_unknown_precision_is_refused_before_any_host_is_touched(host_baseline, disarmed_after):
    run = run_playbook("arm.yml", *precision_vars("exact"), expect_rc=2)
    assert "sigsleuth_precision" in run.stdout and "light" in run.stdout and "syscall" in run.stdout, run.output()
    assert instance_dirs() == [] and not os.path.exists(STATE_DIR)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_check_mode_arm_on_an_unarmed_host_changes_nothing(host_baseline, disarmed_after, precision):
    run = run_playbook("arm.yml", "--check", "--diff", *signals_extra_vars(["KILL", "TERM"]),
                       *precision_vars(precision))
    assert run.host()["failed"] == 0
    assert run.host()["changed"] > 0, "check mode must say what it would change:\n" + run.output()
    assert instance_dirs() == [], "check mode created a tracefs instance"
    assert not os.path.exists(STATE_DIR), "check mode created %s" % STATE_DIR
    assert_no_residue(host_baseline, "after arm --check")


def test_disarm_leaves_nothing_and_is_idempotent(host_baseline, armed):
    armed(["KILL"])
    assert instance_dirs() and os.path.isdir(STATE_DIR)
    first = run_playbook("disarm.yml")
    assert first.host()["changed"] > 0
    assert instance_dirs() == []
    assert_no_residue(host_baseline, "after the first disarm")
    second = run_playbook("disarm.yml")
    assert second.host()["changed"] == 0, "the second disarm changed something:\n" + second.output()
    assert_no_residue(host_baseline, "after the second disarm")


def test_disarm_on_a_never_armed_host_changes_nothing(host_baseline):
    run = run_playbook("disarm.yml")
    assert run.host()["changed"] == 0, run.output()
    assert_no_residue(host_baseline, "after disarming a host never armed")


def test_tracefs_mounted_by_arm_is_unmounted_by_disarm(host_baseline, armed):
    """Arm mounts tracefs when it is not mounted, and disarm unmounts it again (and only then)."""
    was_mounted = TRACEFS in host_baseline["tracefs_mounts"]
    if was_mounted:
        umount = subprocess.run(["umount", TRACEFS], capture_output=True, text=True)
        if umount.returncode != 0:
            pytest.skip("cannot unmount %s to set the test up: %s" % (TRACEFS, umount.stderr.strip()))
    try:
        assert TRACEFS not in tracefs_mounts()
        armed(["KILL"])
        assert TRACEFS in tracefs_mounts(), "arm did not mount tracefs at %s" % TRACEFS
        assert os.path.isdir(os.path.join(TRACEFS, "instances", INSTANCE))
        run_playbook("disarm.yml")
        assert TRACEFS not in tracefs_mounts(), "disarm left the tracefs mount it made"
        assert not os.path.exists(STATE_DIR)
    finally:
        if was_mounted and TRACEFS not in tracefs_mounts():
            subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)


def test_disarm_keeps_a_tracefs_mount_it_did_not_make(host_baseline, armed):
    if TRACEFS not in host_baseline["tracefs_mounts"]:
        pytest.skip("tracefs is not mounted here to begin with")
    armed(["KILL"])
    run_playbook("disarm.yml")
    assert TRACEFS in tracefs_mounts(), "disarm unmounted a tracefs it did not mount"


def test_unknown_signal_is_a_clear_error_and_changes_nothing(host_baseline, disarmed_after):
    run = run_playbook("arm.yml", *signals_extra_vars(["KILL", "NOPE"]), expect_rc=2)
    assert "NOPE" in run.stdout and "valid names" in run.stdout and "TERM" in run.stdout, run.output()
    assert instance_dirs() == [] and not os.path.exists(STATE_DIR)


def test_collect_on_an_unarmed_host_says_so(host_baseline, collect):
    report = collect()
    assert report["kills"] == []
    assert report["sources"]["ftrace"]["armed"] is False
    assert "arm" in report["sources"]["ftrace"].get("reason", ""), report["sources"]["ftrace"]
    assert_no_residue(host_baseline, "after collecting on an unarmed host")


def test_collect_into_an_unwritable_report_dir_is_a_clear_error(armed, tmp_path):
    armed(["KILL"])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the report directory should be\n")
    run = run_playbook("collect.yml", "-e", "sigsleuth_report_dir=%s" % (blocker / "reports"), expect_rc=2)
    assert "cannot write sigsleuth reports" in run.stdout, run.output()


def test_reports_are_kept_private(armed, collect, tmp_path):
    armed(["KILL"])
    collect()  # checks report.json 0600 and the host directory 0700
    summary = tmp_path / "reports" / "summary.md"
    assert oct(summary.stat().st_mode & 0o777) == oct(0o600)
    assert json.loads((tmp_path / "reports" / "localhost" / "report.json").read_text())["host"] == "localhost"
