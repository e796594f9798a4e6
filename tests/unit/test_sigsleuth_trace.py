"""sigsleuth_trace against a fake tracefs: arm, idempotence, check mode, diff, disarm and the failures."""

import json
import os
from unittest import mock

import pytest

import sigsleuth_trace
from ansible.module_utils import sigsleuth_tracefs
from sigsleuth_fakes import FakeKernel, load_state, run_module, snapshot_tree

SYSCALLS = [event for event in sigsleuth_tracefs.KILL_SYSCALL_EVENTS]


@pytest.fixture
def kernel(tmp_path):
    fake = FakeKernel(tmp_path)
    with fake.patched(sigsleuth_trace):
        yield fake


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / "state")


def arm(state_dir, check_mode=False, **args):
    return run_module(sigsleuth_trace, dict(state_dir=state_dir, **args), check_mode=check_mode)


def disarm(state_dir, check_mode=False, **args):
    return run_module(sigsleuth_trace, dict(state="absent", state_dir=state_dir, **args), check_mode=check_mode)


def top_level(kernel):
    tree = snapshot_tree(kernel.root)
    return {path: text for path, text in tree.items() if not path.startswith("instances" + os.sep)}


def test_arm_creates_and_configures_the_instance(kernel, state_dir):
    top_before = top_level(kernel)
    result, failed = arm(state_dir, signals=["KILL", "sigterm"])
    assert not failed, result
    assert result["changed"] is True
    assert result["signals"] == [9, 15]
    assert result["signal_names"] == ["SIGKILL", "SIGTERM"]
    assert result["missing_optional_events"] == []
    path = kernel.instance()
    assert result["instance_path"] == path
    assert kernel.read(path, "trace_clock").split().count("[boot]") == 1
    assert int(kernel.read(path, "buffer_size_kb")) >= 8192
    assert kernel.read(path, "options", "record-tgid") == "1"
    assert kernel.read(path, "options", "overwrite") == "1"
    assert kernel.read(path, "tracing_on") == "1"
    assert kernel.read(path, "events", "signal", "signal_generate", "filter") == "sig==9 || sig==15"
    assert kernel.read(path, "events", "signal", "signal_generate", "enable") == "1"
    for event in sigsleuth_tracefs.LINEAGE_EVENTS:
        assert kernel.read(path, "events", event, "enable") == "1"
        want = sigsleuth_tracefs.NEWTASK_FILTER if event == sigsleuth_tracefs.NEWTASK_EVENT else "none"
        assert kernel.read(path, "events", event, "filter") == want, event
    # The light default records nothing whose rate follows ordinary syscalls.
    for event in sigsleuth_tracefs.SYSCALL_EVENTS:
        assert kernel.read(path, "events", event, "enable") == "0", event
    for event in sigsleuth_tracefs.CGROUP_KILL_OPEN_EVENTS:
        assert kernel.read(path, "events", event, "enable") == "0", event
    assert kernel.read(path, "events", "oom", "mark_victim", "enable") == "1"
    assert kernel.read(path, "events", "cgroup", "cgroup_attach_task", "enable") == "1"
    assert kernel.read(path, "events", "sched", "sched_switch", "enable") == "0"
    assert result["precision"] == "light" and result["cgroup_kill_opens"] is False
    # The top-level buffer is never touched.
    assert top_level(kernel) == top_before

    state = load_state(state_dir)
    assert state["boot_id"] == "boot-1"
    assert state["dir_created"] is True
    ftrace = state["ftrace"]
    assert ftrace["instance"] == "sigsleuth"
    assert ftrace["tracefs"] == kernel.root
    assert ftrace["mounted_by_us"] is False
    assert ftrace["signals"] == [9, 15]
    assert ftrace["clock"] == "boot"
    assert ftrace["buffer_size_kb"] == 8192
    assert isinstance(ftrace["armed_at_ns"], int) and ftrace["armed_at_ns"] == result["armed_at_ns"]
    assert isinstance(ftrace["clock_offset_ns"], int)
    assert ftrace["missing_optional_events"] == []
    assert ftrace["precision"] == "light"
    assert oct(os.stat(state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(state_dir, "state.json")).st_mode & 0o777) == "0o600"


def test_second_arm_changes_nothing(kernel, state_dir):
    arm(state_dir, signals=["KILL"])
    with open(os.path.join(state_dir, "state.json"), "rb") as handle:
        state_before = handle.read()
    kernel.writes.clear()
    result, failed = arm(state_dir, signals=["SIGKILL", 9])
    assert not failed, result
    assert result["changed"] is False
    assert kernel.writes == []
    with open(os.path.join(state_dir, "state.json"), "rb") as handle:
        assert handle.read() == state_before
    assert result["armed_at_ns"] == load_state(state_dir)["ftrace"]["armed_at_ns"]
    assert result["diff"]["before"] == result["diff"]["after"]


def test_check_mode_on_a_fresh_host_changes_nothing(kernel, state_dir):
    before = snapshot_tree(kernel.root)
    result, failed = arm(state_dir, check_mode=True, signals=["KILL"])
    assert not failed, result
    assert result["changed"] is True
    assert "would create" in result["msg"]
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["events"]["signal/signal_generate"]["filter"] == "sig==9"
    assert kernel.writes == []
    assert snapshot_tree(kernel.root) == before
    assert not os.path.exists(state_dir)


def test_new_signals_update_the_filters_in_place(kernel, state_dir):
    arm(state_dir, signals=["KILL"])
    kernel.writes.clear()
    result, failed = arm(state_dir, check_mode=True, signals=["KILL", "TERM"])
    assert not failed and result["changed"] is True
    assert kernel.writes == []
    assert kernel.read(kernel.instance(), "events", "signal", "signal_generate", "filter") == "sig==9"

    result, failed = arm(state_dir, signals=["KILL", "TERM"])
    assert not failed and result["changed"] is True
    before = result["diff"]["before"]["events"]["signal/signal_generate"]
    after = result["diff"]["after"]["events"]["signal/signal_generate"]
    assert (before["filter"], after["filter"]) == ("sig==9", "sig==9 || sig==15")
    assert kernel.read(kernel.instance(), "events", "signal", "signal_generate", "filter") == "sig==9 || sig==15"
    # Only filters were written: the clock (which would clear the buffer) and the size stay as they were.
    assert {path.rsplit("/", 1)[-1] for path, _ in kernel.writes} == {"filter"}
    assert load_state(state_dir)["ftrace"]["signals"] == [9, 15]


def test_disarm_removes_the_instance_and_the_state(kernel, state_dir):
    arm(state_dir)
    result, failed = disarm(state_dir, check_mode=True)
    assert not failed and result["changed"] is True
    assert os.path.isdir(kernel.instance()) and os.path.exists(state_dir)
    assert result["diff"]["after"] == {}

    result, failed = disarm(state_dir)
    assert not failed, result
    assert result["changed"] is True
    assert result["diff"]["before"]["trace_clock"] == "boot"
    assert not os.path.exists(kernel.instance())
    assert ("instances/sigsleuth/tracing_on", "0") in kernel.writes
    assert not os.path.exists(state_dir)
    assert kernel.commands == []  # not mounted by us: no umount

    result, failed = disarm(state_dir)
    assert not failed and result["changed"] is False


def test_disarm_of_a_host_never_armed(kernel, state_dir):
    before = snapshot_tree(kernel.root)
    result, failed = disarm(state_dir)
    assert not failed, result
    assert result["changed"] is False
    assert snapshot_tree(kernel.root) == before
    assert not os.path.exists(state_dir)


def test_stale_state_after_a_reboot(kernel, state_dir):
    arm(state_dir)
    kernel.reboot()
    # After a reboot an instance of our name is not ours any more: disarm must not touch it.
    before = snapshot_tree(kernel.root)
    result, failed = disarm(state_dir)
    assert not failed, result
    assert result["changed"] is True
    assert "earlier boot" in result["msg"]
    assert snapshot_tree(kernel.root) == before
    assert not os.path.exists(state_dir)


def test_arm_after_a_reboot_arms_afresh(kernel, state_dir):
    arm(state_dir)
    old = load_state(state_dir)["ftrace"]["armed_at_ns"]
    kernel.reboot()
    kernel._remove_instance_dir(kernel.instance())  # the reboot took it
    result, failed = arm(state_dir)
    assert not failed, result
    assert result["changed"] is True
    state = load_state(state_dir)
    assert state["boot_id"] == "boot-2"
    assert state["ftrace"]["armed_at_ns"] > old


def test_foreign_instance_is_left_alone(kernel, state_dir):
    kernel._make_instance_dir(kernel.instance())
    before = snapshot_tree(kernel.root)
    result, failed = arm(state_dir)
    assert failed
    assert "did not create it" in result["msg"] and kernel.instance() in result["msg"]
    assert snapshot_tree(kernel.root) == before
    assert kernel.writes == []
    assert not os.path.exists(state_dir)

    result, failed = disarm(state_dir)
    assert not failed and result["changed"] is False
    assert os.path.isdir(kernel.instance())


def test_other_instances_are_never_touched(kernel, state_dir):
    kernel._make_instance_dir(kernel.instance("someone-else"))
    before = snapshot_tree(kernel.instance("someone-else"))
    arm(state_dir)
    disarm(state_dir)
    assert snapshot_tree(kernel.instance("someone-else")) == before
    assert not any(path.startswith("instances/someone-else") for path, _ in kernel.writes)


def test_unknown_signal_name_lists_valid_names(kernel, state_dir):
    result, failed = arm(state_dir, signals=["KILL", "SIGFOO"])
    assert failed
    assert "SIGFOO" in result["msg"]
    assert "valid names are HUP, INT" in result["msg"] and "KILL" in result["msg"]
    assert kernel.writes == [] and not os.path.exists(state_dir)


def test_missing_required_event_fails_naming_it(tmp_path, state_dir):
    events = [event for event in FakeKernel(tmp_path / "x").events if event != "task/task_rename"]
    kernel = FakeKernel(tmp_path, events=events)
    with kernel.patched(sigsleuth_trace):
        result, failed = arm(state_dir)
    assert failed
    assert "task:task_rename" in result["msg"]
    assert result["missing_events"] == ["task/task_rename"]
    assert not os.path.exists(kernel.instance())
    assert not os.path.exists(state_dir)


def test_missing_optional_events_arm_anyway(tmp_path, state_dir):
    missing = ["syscalls/sys_enter_pidfd_send_signal", "oom/mark_victim"]
    events = [event for event in FakeKernel(tmp_path / "x").events if event not in missing]
    kernel = FakeKernel(tmp_path, events=events)
    with kernel.patched(sigsleuth_trace):
        result, failed = arm(state_dir)
        assert not failed, result
        assert sorted(result["missing_optional_events"]) == sorted(missing)
        assert sorted(load_state(state_dir)["ftrace"]["missing_optional_events"]) == sorted(missing)
        result, failed = arm(state_dir)
        assert not failed and result["changed"] is False


def test_not_root(kernel, state_dir):
    with mock.patch.object(os, "geteuid", return_value=1000):
        result, failed = arm(state_dir)
    assert failed
    assert "must run as root" in result["msg"] and "become" in result["msg"]
    with mock.patch.object(os, "geteuid", return_value=1000):
        result, failed = disarm(state_dir)
    assert failed and "must run as root" in result["msg"]


def test_mounts_tracefs_when_needed_and_unmounts_at_disarm(kernel, state_dir):
    kernel.set_mounted(False)
    result, failed = arm(state_dir, check_mode=True, tracefs_path=kernel.root + "-unmounted")
    assert not failed and result["changed"] is True and "mount tracefs" in result["msg"]
    assert kernel.commands == []

    result, failed = arm(state_dir)
    assert not failed, result
    assert kernel.commands == [["mount", "-t", "tracefs", "nodev", kernel.root]]
    assert result["mounted_by_us"] is True
    assert load_state(state_dir)["ftrace"]["mounted_by_us"] is True

    result, failed = arm(state_dir, signals=["KILL", "TERM"])
    assert not failed and result["changed"] is True
    assert load_state(state_dir)["ftrace"]["mounted_by_us"] is True

    result, failed = disarm(state_dir)
    assert not failed, result
    assert kernel.commands[-1] == ["umount", kernel.root]
    assert "unmount" in result["msg"]


def test_disarm_after_tracefs_was_unmounted_behind_our_back(kernel, state_dir):
    arm(state_dir)
    kernel.unmount_behind_our_back()
    result, failed = disarm(state_dir, check_mode=True)
    assert not failed and "mount tracefs" in result["msg"]
    assert kernel.commands == []

    result, failed = disarm(state_dir)
    assert not failed, result
    # Mounted again just long enough to remove the instance, then put back as it was found: unmounted.
    assert kernel.commands == [["mount", "-t", "tracefs", "nodev", kernel.root], ["umount", kernel.root]]
    assert not os.path.exists(kernel.instance())
    assert not os.path.exists(state_dir)


def test_corrupt_ftrace_section_fails_clearly(kernel, state_dir):
    arm(state_dir)
    state = load_state(state_dir)
    state["ftrace"]["instance"] = "../../etc"
    with open(os.path.join(state_dir, "state.json"), "w") as handle:
        json.dump(state, handle)
    result, failed = disarm(state_dir)
    assert failed and "corrupt" in result["msg"]
    assert os.path.isdir(kernel.instance())


def test_unmountable_tracefs_fails_clearly(kernel, state_dir):
    kernel.set_mounted(False)
    kernel.mount_result = (32, "", "mount: /sys/kernel/tracing: permission denied.")
    result, failed = arm(state_dir)
    assert failed
    assert result["msg"].startswith("cannot mount tracefs at %s" % kernel.root)
    assert "permission denied" in result["msg"]
    assert result["rc"] == 32 and "permission denied" in result["stderr"]
    assert not os.path.exists(state_dir)


def test_rejected_filter_rolls_back(kernel, state_dir):
    kernel.reject_filters = True
    result, failed = arm(state_dir)
    assert failed
    assert "Invalid argument" in result["msg"]
    assert not os.path.exists(kernel.instance())
    assert not os.path.exists(state_dir)


def test_already_armed_with_another_instance(kernel, state_dir):
    arm(state_dir)
    result, failed = arm(state_dir, instance="other")
    assert failed
    assert "already armed" in result["msg"] and "disarm it first" in result["msg"]
    assert not os.path.exists(kernel.instance("other"))


@pytest.mark.parametrize("name", ["../escape", "", ".", "..", "a/b", "-x"])
def test_instance_names_cannot_leave_instances_dir(kernel, state_dir, name):
    result, failed = arm(state_dir, instance=name)
    assert failed and "invalid instance name" in result["msg"]
    assert kernel.writes == []


def test_buffer_size_must_be_positive(kernel, state_dir):
    result, failed = arm(state_dir, buffer_size_kb=0)
    assert failed and "buffer_size_kb" in result["msg"]


def test_corrupt_state_file_fails_clearly(kernel, state_dir):
    os.makedirs(state_dir)
    with open(os.path.join(state_dir, "state.json"), "w") as handle:
        handle.write("{not json")
    result, failed = arm(state_dir)
    assert failed and "cannot read sigsleuth state" in result["msg"]


def test_syscall_precision_adds_the_rare_syscall_events(kernel, state_dir, monkeypatch):
    monkeypatch.setattr(sigsleuth_trace, "user_string_filters", lambda: True)
    result, failed = arm(state_dir, signals=["KILL", "TERM"], precision="syscall")
    assert not failed, result
    assert result["precision"] == "syscall" and result["cgroup_kill_opens"] is True
    path = kernel.instance()
    for event in SYSCALLS:
        assert kernel.read(path, "events", event, "filter") == "sig==9 || sig==15"
        assert kernel.read(path, "events", event, "enable") == "1"
    assert kernel.read(path, "events", "syscalls", "sys_exit_kill", "enable") == "1"
    assert "resource == 0" in kernel.read(path, "events", "syscalls", "sys_enter_prlimit64", "filter")
    for event in sigsleuth_tracefs.CGROUP_KILL_OPEN_EVENTS:
        assert kernel.read(path, "events", event, "filter") == 'filename.ustring ~ "*/cgroup.kill"'
        assert kernel.read(path, "events", event, "enable") == "1"
    assert load_state(state_dir)["ftrace"]["precision"] == "syscall"
    result, failed = arm(state_dir, signals=["KILL", "TERM"], precision="syscall")
    assert not failed and result["changed"] is False


def test_changing_precision_updates_the_instance_in_place(kernel, state_dir, monkeypatch):
    monkeypatch.setattr(sigsleuth_trace, "user_string_filters", lambda: False)
    arm(state_dir, precision="syscall")
    path = kernel.instance()
    assert kernel.read(path, "events", "syscalls", "sys_enter_kill", "enable") == "1"
    assert kernel.read(path, "events", "syscalls", "sys_enter_openat", "enable") == "0"  # no user-string filters
    kernel.writes.clear()
    result, failed = arm(state_dir, precision="light")
    assert not failed and result["changed"] is True
    assert os.path.isdir(path) and not any(path_.endswith("tracing_on") for path_, _ in kernel.writes)
    for event in SYSCALLS:
        assert kernel.read(path, "events", event, "enable") == "0"
        assert kernel.read(path, "events", event, "filter") == "none"
    # Disabled first, then the filter cleared: never a moment of unfiltered recording.
    order = [written for written, _ in kernel.writes if "sys_enter_kill/" in written]
    assert order == ["instances/sigsleuth/events/syscalls/sys_enter_kill/enable",
                     "instances/sigsleuth/events/syscalls/sys_enter_kill/filter"], kernel.writes
    assert load_state(state_dir)["ftrace"]["precision"] == "light"


def test_syscall_precision_without_syscall_events_falls_back_to_light(tmp_path, state_dir):
    events = [event for event in sigsleuth_tracefs.REQUIRED_EVENTS + ("oom/mark_victim",)]
    kernel = FakeKernel(tmp_path, events=events)
    warnings = []
    with kernel.patched(sigsleuth_trace), \
            mock.patch.object(sigsleuth_trace.AnsibleModule, "warn", lambda self, text: warnings.append(text)):
        result, failed = arm(state_dir, precision="syscall")
    assert not failed, result
    assert result["precision"] == "light"
    assert any("armed with light precision" in w and "syscalls:sys_enter_kill" in w for w in warnings), warnings
