"""module_utils/sigsleuth_tracefs: finding tracefs, event probing, settings comparison, loss counters."""

import os

from ansible.module_utils import sigsleuth_tracefs as tracefs
from sigsleuth_fakes import EVENT_FIELDS, FakeKernel


def test_find_tracefs_prefers_sys_kernel_tracing(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "proc /proc proc rw 0 0\n"
        "nodev /sys/kernel/debug/tracing tracefs rw 0 0\n"
        "nodev /sys/kernel/tracing tracefs rw 0 0\n")
    monkeypatch.setattr(tracefs, "is_tracefs_root", lambda path: True)
    assert tracefs.find_tracefs(str(mounts)) == "/sys/kernel/tracing"


def test_find_tracefs_unescapes_mount_points(tmp_path):
    root = tmp_path / "my tracing"
    (root / "instances").mkdir(parents=True)
    (root / "events").mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text("nodev %s tracefs rw 0 0\n" % str(root).replace(" ", "\\040"))
    assert tracefs.find_tracefs(str(mounts)) == str(root)


def test_find_tracefs_none_when_not_mounted(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\nnone /sys/kernel/debug debugfs rw 0 0\n")
    assert tracefs.find_tracefs(str(mounts)) is None
    assert tracefs.find_tracefs(str(tmp_path / "missing")) is None


def test_signal_field_read_from_format():
    fake = "\tfield:int __syscall_nr;\toffset:8;\n\tfield:pid_t tgid;\toffset:16;\n\tfield:int sig;\toffset:32;\n"
    assert tracefs.signal_field(fake) == "sig"
    assert tracefs.signal_field("\tfield:char comm[16];\toffset:8;\n") is None


def test_probe_events(tmp_path):
    kernel = FakeKernel(tmp_path, events=[e for e in EVENT_FIELDS if e != "syscalls/sys_enter_tgkill"])
    fields, missing_required, missing_optional = tracefs.probe_events(kernel.root)
    assert missing_required == []
    assert missing_optional == ["syscalls/sys_enter_tgkill"]
    assert fields["signal/signal_generate"] == "sig"
    assert fields["syscalls/sys_enter_kill"] == "sig"
    assert "sched/sched_process_fork" not in fields


def test_desired_settings():
    desired = tracefs.desired_settings([15, 9, 9], 4096, missing_optional=["oom/mark_victim"])
    assert desired["trace_clock"] == "boot"
    assert desired["buffer_size_kb"] == 4096
    assert desired["options"] == {"record-tgid": "1", "overwrite": "1"}
    assert desired["tracing_on"] == "1"
    assert desired["events"]["signal/signal_generate"] == {"enable": "1", "filter": "sig==9 || sig==15"}
    assert desired["events"]["syscalls/sys_enter_tgkill"] == {"enable": "0", "filter": "none"}  # light
    assert desired["events"]["sched/sched_process_exit"] == {"enable": "1", "filter": "none"}
    assert "oom/mark_victim" not in desired["events"]
    precise = tracefs.desired_settings([15, 9], 4096, precision="syscall", opens=True)
    assert precise["events"]["syscalls/sys_enter_tgkill"] == {"enable": "1", "filter": "sig==9 || sig==15"}
    assert precise["events"]["syscalls/sys_exit_tgkill"] == {"enable": "1", "filter": "none"}
    assert precise["events"]["syscalls/sys_enter_openat"]["filter"] == 'filename.ustring ~ "*/cgroup.kill"'
    assert tracefs.desired_settings([9], precision="syscall")["events"]["syscalls/sys_enter_openat"]["enable"] == "0"


def test_user_string_filters_since_5_17():
    assert tracefs.user_string_filters("6.18.44-fc")
    assert tracefs.user_string_filters("5.17.0")
    assert not tracefs.user_string_filters("5.15.0-91-generic")
    assert not tracefs.user_string_filters("4.18.0-513.el8.x86_64")


def test_buffer_size_rounding_is_not_a_change():
    assert tracefs.buffer_size_matches(8192, 8195)
    assert tracefs.buffer_size_matches(1, 7)
    assert not tracefs.buffer_size_matches(8192, 1410)
    assert not tracefs.buffer_size_matches(8192, 16387)
    assert not tracefs.buffer_size_matches(8192, None)


def test_observed_settings_of_a_missing_instance(tmp_path):
    assert tracefs.observed_settings(str(tmp_path / "nope")) is None


def test_observed_filter_with_parse_error_never_matches(tmp_path):
    kernel = FakeKernel(tmp_path)
    kernel._make_instance_dir(kernel.instance())
    path = os.path.join(kernel.instance(), "events", "signal", "signal_generate", "filter")
    with open(path, "w") as handle:
        handle.write("sig==9\n      ^\nparse_error: Field not found\n")
    observed = tracefs.observed_settings(kernel.instance())
    assert observed["events"]["signal/signal_generate"]["filter"] != "sig==9"
    assert observed["trace_clock"] == "local"
    assert observed["buffer_size_kb"] == 1410


def test_read_loss_counters(tmp_path):
    kernel = FakeKernel(tmp_path)
    kernel._make_instance_dir(kernel.instance())
    counters = tracefs.read_loss_counters(kernel.instance())
    assert sorted(counters) == [0, 1]
    cpu = counters[0]
    assert cpu["entries"] == 12
    assert cpu["overrun"] == 3
    assert cpu["commit_overrun"] == 0
    assert cpu["dropped_events"] == 1
    assert cpu["oldest_event_ts_ns"] == 263_807_203_000
    assert cpu["now_ts_ns"] == 270_000_001_000
    assert tracefs.read_loss_counters(str(tmp_path / "nope")) == {}


def test_remove_instance_of_nothing():
    assert tracefs.remove_instance("/nonexistent/instances/sigsleuth") is False
