"""The audit.log parser on edge cases from real logs (linux-audit, go-libaudit, laurel) and hand-made ones.

Each case reads a fixture under tests/fixtures/audit/edge/ or tests/fixtures/audit/laurel/ (their READMEs say
where the lines come from).
"""

import os

import pytest

from ansible.module_utils import sigsleuth_audit_log as audit_log
from ansible.module_utils import sigsleuth_loss as loss
from ansible.module_utils.sigsleuth_audit_log import AuditStats, iter_audit_events
from ansible.module_utils.sigsleuth_vocabulary import name_bytes
from test_audit_parser import syscall_line

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "audit")


def read(name, **kwargs):
    stats = AuditStats()
    found = list(iter_audit_events([os.path.join(FIXTURES, name)], stats=stats, **kwargs))
    return found, stats


def accounted(stats):
    """Every line read is a record we used, a record of another type, or counted as malformed."""
    return stats.lines == stats.records + stats.ignored_records + stats.before_since + stats.malformed_lines


def test_stamp_without_colon_is_a_record():
    found, stats = read("edge/stamp_without_colon.log")
    (event,) = found
    assert event.serial == 59 and [target["pid"] for target in event.obj_pids] == [8000]
    # the EOE without a colon closed the event: the record after it is an orphan, counted
    assert stats.incomplete_events == 1
    assert [record["type"] for record in stats.daemon_records] == ["DAEMON_CONFIG"]
    assert stats.malformed_lines == 0 and accounted(stats)


def test_hosts_of_a_central_log_are_apart_even_with_the_same_stamp():
    found, stats = read("edge/two_nodes_same_stamp.log")
    by_node = {event.node: event for event in found}
    assert sorted(by_node, key=str) == [None, "host-a", "host-b"]
    assert [(event.pid, event.target_pid, [t["comm"] for t in event.obj_pids], event.argv[-1])
            for event in (by_node["host-a"], by_node["host-b"], by_node[None])] == [
        (100, 500, ["agent-a"], "500"), (200, 600, ["agent-b"], "600"), (300, 700, ["agent-c"], "700")]
    assert stats.nodes == ["host-a", "host-b"] and stats.incomplete_events == 0


def test_completion_is_decided_by_time_not_by_serial_distance():
    found, stats = read("edge/late_records.log")
    near, late = found
    # 1,100 serials later but the same millisecond: still this event's target
    assert near.serial == 100 and [t["pid"] for t in near.obj_pids] == [500] and near.argv == ["kill", "-9", "500"]
    # a record 2.5 s later closed event 1300 first: its OBJ_PID is an orphan, counted, never attached elsewhere
    assert late.serial == 1300 and late.obj_pids == [] and late.target_pid == 0x1f5
    assert stats.incomplete_events == 1 and stats.foreign_events == 2
    assert not near.forced and not late.forced and stats.forced_completions == 0


def test_an_event_closed_to_make_room_is_marked_and_counted(monkeypatch):
    monkeypatch.setattr(audit_log, "MAX_PENDING", 3)
    found, stats = read("edge/forced_completion.log")
    # the fourth open event closes the first before its OBJ_PID arrives: that record ends up an orphan
    assert [(event.serial, event.forced, len(event.obj_pids)) for event in found] == [
        (1, True, 0), (2, False, 1), (3, False, 1), (4, False, 1)]
    assert stats.forced_completions == 1 and stats.incomplete_events == 1 and stats.max_pending == 3
    assert any("closed before all their records arrived" in reason for reason in loss.audit_loss_reasons(stats))


def test_hex_key_with_a_stray_quote_is_decoded():
    (event,), _ = read("edge/key_stray_quote.log")
    assert event.keys == ["exec", "64bit"] and event.syscall == "execve" and event.comm == "grep"
    (event,), _ = read("edge/key_stray_quote.log", keys=("64bit",), syscalls=())
    assert event.key == "64bit"


def test_a_literal_backslash_never_reads_like_an_undecodable_byte():
    literal, invalid, execve = read("edge/names_with_backslash.log")[0]
    assert literal.comm == "k\\\\xffill" and invalid.comm == "k\\xffill"
    assert name_bytes(literal.comm) == b"k\\xffill" and name_bytes(invalid.comm) == b"k\xffill"
    assert literal.exe == "/tmp/k\\\\xffill" and invalid.exe == "/tmp/k\\xffill"
    assert literal.obj_pids[0]["comm"] == "v\\\\x41" and invalid.obj_pids[0]["comm"] == "v\\xc3"
    assert literal.argv == ["kill", "-9", "a\\\\b"] and invalid.argv == ["kill", "-9", "\\xff"]
    assert execve.argv == ["/bin/echo", "back\\\\slash", "\\xff\\\\", "caf\u00e9 \\\\x41"]
    assert execve.cwd == "/srv/a\\\\b"


@pytest.mark.parametrize("chunk", [1 << 20, 1 << 16, 4096, 1000, 333])
def test_overlong_line_is_dropped_wherever_the_reads_cut_it(monkeypatch, chunk):
    monkeypatch.setattr(audit_log, "CHUNK", chunk)
    found, stats = read("edge/overlong_line.log")
    # event 2 lost its PROCTITLE (it stays open to the end); the 18 KB one of event 3 is read
    assert sorted((event.serial, event.argv) for event in found) == [(1, ["kill"]), (2, None), (3, ["B" * 9000])]
    assert stats.overlong_lines == 1 and stats.malformed_lines == 1 and stats.truncated_lines == 0
    assert stats.overlong_bytes == 54 + 70000  # the whole line, its newline aside
    assert accounted(stats)


def test_quoted_values_are_read_and_unreadable_ones_counted():
    unknown, quoted = read("edge/quoted_values.log")[0]
    assert unknown.success is None and quoted.success is True and quoted.tty is None
    assert read("edge/quoted_values.log")[1].damaged_values == 1


def test_laurel_weblogic_record_with_quoted_values():
    (event,), stats = read("laurel/record-weblogic.txt")
    assert event.success is True and event.exit == 0 and event.tty is None and event.auid is None
    assert event.comm == "java" and event.exe == "/usr/java/jdk1.8.0_151/bin/java"
    assert event.argc == 14 and event.argv_complete and event.argv[-1] == "weblogic.Server"
    assert event.cwd == "/u01/oracle/user_projects/domains/base_domain"
    assert stats.damaged_values == 0 and stats.malformed_lines == 0 and accounted(stats)


def test_laurel_shell_trace_with_quoted_values_loses_nothing():
    found, stats = read("laurel/shell-proc-trace-confusion.txt")
    with open(os.path.join(FIXTURES, "laurel", "shell-proc-trace-confusion.txt"), "rb") as handle:
        lines = handle.read().split(b"\n")[:-1]
    assert len(found) == 72 and all(event.success for event in found)
    forks = [event for event in found if event.syscall == "clone"]
    execs = [event for event in found if event.syscall == "execve"]
    assert len(forks) == 67 and all(event.child_pid for event in forks)
    assert [event.comm for event in execs] == ["rm", "csh", "hostname", "id", "awk"]
    # the comments and blank lines are the only lines not read as records, and they are counted
    assert stats.malformed_lines == sum(1 for line in lines if not line.startswith(b"type="))
    assert stats.damaged_values == 0 and stats.incomplete_events == 0 and accounted(stats)


def test_events_without_an_end_record_close_by_time_so_memory_stays_bounded(tmp_path):
    """Without PROCTITLE or EOE (an older kernel), an event closes once a record TIME_WINDOW_NS later is read."""
    path = tmp_path / "audit.log"
    path.write_text("".join(syscall_line(serial, seconds=1795676000 + serial // 1000, millis=serial % 1000)
                            for serial in range(1, 5001)))
    stats = AuditStats()
    found = list(iter_audit_events([str(path)], stats=stats))
    assert [event.serial for event in found] == list(range(1, 5001)) and not any(event.forced for event in found)
    window_ms = audit_log.TIME_WINDOW_NS // 1_000_000
    assert window_ms < stats.max_pending <= window_ms + 2 and stats.forced_completions == 0


def test_a_syscall_record_missing_fields_is_read_as_far_as_it_goes(tmp_path):
    path = tmp_path / "audit.log"
    path.write_text("type=SYSCALL msg=audit(1795676000.000:5): arch=c000003e syscall=62 a0=1f4 a1=9 pid=7\n")
    (event,), stats = read(str(path))
    assert event.key is None and event.keys == [] and event.syscall == "kill" and event.signal == 9
    assert event.pid == 7 and event.success is None and event.ppid is None and stats.damaged_values == 0
