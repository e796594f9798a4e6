"""The trace text parser: captured fixtures and lines built to mislead it."""

import io
import os

import pytest

from ansible.module_utils.sigsleuth_trace_parser import (
    TraceStats, iter_events, parse_exec, parse_fork, parse_rename, parse_signal_generate,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace")


def events_of(text, chunk_size=1 << 20):
    stats = TraceStats()
    data = text.encode() if isinstance(text, str) else text
    return list(iter_events(io.BytesIO(data), stats, chunk_size=chunk_size)), stats


def header(task="bash", tid=100, tgid=100, cpu=0, ts="12.000001", flags="....."):
    return "%16s-%-7d (%7s) [%03d] %s %12s: " % (task, tid, tgid, cpu, flags, ts)


SIGNAL = "signal_generate: sig=9 errno=0 code=0 comm=%s pid=%d grp=1 res=0"


def test_captured_fixture_parses_completely():
    with open(os.path.join(FIXTURES, "seed_small.trace"), "rb") as handle:
        stats = TraceStats()
        events = list(iter_events(handle, stats))
    assert stats.malformed == 0
    assert stats.events == len(events) == stats.entries_in_buffer
    names = {event[0] for event in events}
    assert {"signal_generate", "sched_process_fork", "sched_process_exec", "sched_process_exit",
            "task_newtask", "task_rename", "sys_enter_kill", "sys_exit_kill"} <= names


def test_record_fields():
    (event,), stats = events_of(header(tid=5842, tgid=5842, cpu=1, ts="372.345531") + SIGNAL % ("sleep", 5839) + "\n")
    name, ts, cpu, tid, tgid, fields = event
    assert (name, ts, cpu, tid, tgid) == ("signal_generate", 372345531000, 1, 5842, 5842)
    assert fields == (9, 0, 0, "sleep", 5839, 1, 0)


@pytest.mark.parametrize("task", ["<...>", "a b c", "kworker-2 [001]", "b-3 (3)", "a pid=7 grp=0 r",
                                  "x-1 (1) [2] d..", "]]]-9-9", "1234567890"])
def test_task_column_never_moves_the_fields(task):
    (event,), stats = events_of(header(task=task, tid=4242, tgid=4240, cpu=1) + SIGNAL % ("victim", 77) + "\n")
    assert event[3:5] == (4242, 4240)
    assert event[5][4] == 77
    assert stats.malformed == 0


@pytest.mark.parametrize("comm", ["a pid=7 grp=0 res=0", "pid=1 grp=1", "x res=1", "sp ace", "-9-", "[001]"])
def test_hostile_victim_name_in_payload(comm):
    fields = parse_signal_generate((SIGNAL % (comm, 31337)).split(": ", 1)[1].encode())
    assert fields == (9, 0, 0, comm, 31337, 1, 0)


def test_name_with_newline_joins_split_record():
    text = header(tid=10, tgid=10) + SIGNAL % ("ab\ncd", 55) + "\n" + header(tid=11, tgid=11) + SIGNAL % ("x", 56) + "\n"
    events, stats = events_of(text)
    assert [event[5][3:5] for event in events] == [("ab\ncd", 55), ("x", 56)]
    assert stats.malformed == 0


def test_newline_in_task_column_is_skipped_not_guessed():
    text = "   ab\ncd-4242    (   4242) [000] .....   1.000001: " + SIGNAL % ("v", 9) + "\n"
    events, stats = events_of(text)
    assert [(event[3], event[5][4]) for event in events] == [(4242, 9)]
    assert stats.malformed == 1


def test_markers_comments_and_loss():
    text = ("# tracer: nop\n#\n# entries-in-buffer/entries-written: 10/250   #P:2\n"
            "##### CPU 1 buffer started ####\n"
            + header(ts="1.000000") + SIGNAL % ("v", 9) + "\n"
            + "CPU:0 [LOST 240 EVENTS]\n"
            + header(ts="2.000000") + SIGNAL % ("v", 10) + "\n")
    events, stats = events_of(text)
    assert len(events) == 2
    assert (stats.entries_in_buffer, stats.entries_written) == (10, 250)
    assert stats.cpu_buffer_started == {1}
    assert stats.lost_events == 240
    assert stats.lost_markers == [(0, 240, 1_000_000_000)]
    assert stats.malformed == 0


def test_truncated_and_garbage_lines_are_counted():
    good = header() + SIGNAL % ("v", 9) + "\n"
    text = good + "garbage line\n" + header() + "signal_generate: sig=9 errno=0 code=0 comm=v pid=1\n" + good
    text += header()[:20]  # a torn last line, no newline
    events, stats = events_of(text)
    assert len(events) == 2
    assert stats.malformed == 3


def test_binary_garbage_does_not_crash():
    data = bytes(range(256)) * 50 + b"\n" + (header() + SIGNAL % ("v", 9) + "\n").encode() + b"\xff\xfe\x00\n"
    events, stats = events_of(data)
    assert len(events) == 1
    assert stats.malformed >= 1


def test_foreign_events_are_counted():
    text = header() + "sched_switch: prev_comm=a prev_pid=1 ==> next_comm=b next_pid=2\n" + header() + SIGNAL % ("v", 9) + "\n"
    events, stats = events_of(text)
    assert len(events) == 1 and stats.foreign == 1


def test_records_split_across_chunks():
    text = "".join(header(tid=i, tgid=i) + SIGNAL % ("name\nwith newline", i) + "\n" for i in range(1, 200))
    events, stats = events_of(text, chunk_size=97)
    assert [event[3] for event in events] == list(range(1, 200))
    assert stats.malformed == 0


def test_no_tgid_column():
    (event,), _ = events_of("            bash-2514    [000] .....   132.619229: " + SIGNAL % ("v", 9) + "\n")
    assert event[3:5] == (2514, None)


def test_fork_uses_fixed_fields_only():
    assert parse_fork(b"comm=a pid=3 child_comm=b child_pid=4") == (3, 4)
    assert parse_fork(b"comm=x pid=1 y pid=3 child_comm=b child_pid=9 child_pid=4") == (3, 4)
    assert parse_fork(b"comm=a pid=3 child_comm=b") is None


def test_exec_filename_with_fake_fields():
    assert parse_exec(b"filename=/tmp/a pid=1 old_pid=1 b pid=20 old_pid=20") == ("/tmp/a pid=1 old_pid=1 b", 20, 20)


def test_rename_ambiguity_returns_every_split():
    tid, candidates = parse_rename(b"pid=5 oldcomm=x newcomm=y newcomm=z oom_score_adj=0")
    assert tid == 5
    assert candidates == ((b"x", b"y newcomm=z"), (b"x newcomm=y", b"z"))


def test_syscall_records():
    text = (header() + "sys_kill(pid: 0x16cf, sig: 9)\n" + header() + "sys_kill -> 0x0\n"
            + header() + "sys_tgkill(tgid: 0x10, pid: 0x11, sig: 0xf)\n" + header() + "sys_kill -> 0xfffffffffffffffd\n")
    events, _ = events_of(text)
    assert events[0][0] == "sys_enter_kill" and events[0][5] == {"pid": 0x16cf, "sig": 9}
    assert events[1][0] == "sys_exit_kill" and events[1][5] == 0
    assert events[2][5] == {"tgid": 16, "pid": 17, "sig": 15}
    assert events[3][5] == -3


def test_non_utf8_names_are_kept_as_data():
    data = (header() + "signal_generate: sig=9 errno=0 code=0 comm=").encode() + b"\xff\xfeok" + b" pid=5 grp=1 res=0\n"
    (event,), _ = events_of(data)
    assert event[5][3] == "\\xff\\xfeok"


def test_negative_int_syscall_args():
    (event,), _ = events_of(header() + "sys_kill(pid: 0xffffc67a, sig: 9)\n")
    assert event[5] == {"pid": -14726, "sig": 9}


def test_cgroup_attach_keeps_paths_with_spaces():
    from ansible.module_utils.sigsleuth_trace_parser import parse_cgroup_attach
    assert parse_cgroup_attach(b"dst_root=0 dst_id=123 dst_level=1 dst_path=/a b pid=7 x pid=42 comm=b pid=1") \
        == (0, "/a b pid=7 x", 42)
