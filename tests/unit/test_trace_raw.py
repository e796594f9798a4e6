"""The binary reader off-line: pages built from this kernel's event formats (tests/fixtures/raw) decode into
exactly the events the text parser makes of the same trace, in time order across CPUs, with every kind of
ring-buffer record (time extends, padding, long events, lost-event marks) and hostile names."""

import glob
import os
import shutil
import struct

import pytest

from ansible.module_utils import sigsleuth_trace_raw as raw
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_trace_parser import PAYLOAD_PARSERS, TraceStats, iter_events
from ansible.module_utils.sigsleuth_vocabulary import name_bytes

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
EVENTS = os.path.join(FIXTURES, "raw", "events")
TRACES = sorted(glob.glob(os.path.join(FIXTURES, "ftrace", "forensics_*.trace")))
PAGE = 4096
LIGHT = ("sched/sched_process_fork", "sched/sched_process_exec", "sched/sched_process_exit", "task/task_newtask",
         "task/task_rename", "signal/signal_generate", "oom/mark_victim", "cgroup/cgroup_attach_task")


def formats():
    found = {}
    for path in glob.glob(os.path.join(EVENTS, "*", "*", "format")):
        name = os.path.basename(os.path.dirname(path))
        with open(path) as handle:
            found[name] = raw.EventFormat.parse(name, handle.read())
    return found


FORMATS = formats()


# ---------------------------------------------------------------- an encoder: fields back into records

def _text_fields(name, fields):
    """{format field: value} for the tuple the text parser makes of an event (names back to their bytes)."""
    if name == "sched_process_fork":
        return {"parent_pid": fields[0], "child_pid": fields[1], "parent_comm": b"p", "child_comm": b"c"}
    if name == "sched_process_exec":
        return {"filename": name_bytes(fields[0]), "pid": fields[1], "old_pid": fields[2]}
    if name == "sched_process_exit":
        return {"comm": fields[0], "pid": fields[1], "prio": 120, "group_dead": int(bool(fields[2]))}
    if name == "task_newtask":
        return {"pid": fields[0], "comm": fields[1], "clone_flags": fields[2], "oom_score_adj": 0}
    if name == "task_rename":
        old, new = fields[1][0]
        return {"pid": fields[0], "oldcomm": old, "newcomm": new, "oom_score_adj": 0}
    if name == "signal_generate":
        sig, errno, code, comm, pid, group, result = fields
        return {"sig": sig, "errno": errno, "code": code, "comm": name_bytes(comm), "pid": pid, "group": group,
                "result": result}
    if name == "mark_victim":
        pid, comm, total_vm, anon, file_rss, shmem, uid = fields
        return {"pid": pid, "comm": name_bytes(comm), "total_vm": total_vm, "anon_rss": anon, "file_rss": file_rss,
                "shmem_rss": shmem, "uid": uid, "pgtables": 0, "oom_score_adj": 0}
    if name == "cgroup_attach_task":
        root, path, pid = fields
        return {"dst_root": root, "dst_level": 1, "dst_id": 7, "pid": pid, "dst_path": name_bytes(path),
                "comm": b"x"}
    if name.startswith("sys_enter_"):
        return {key: value % (1 << 64) for key, value in fields.items()}
    if name.startswith("sys_exit_"):
        return {"ret": fields}
    raise AssertionError(name)


def record(name, tid, values):
    """An event's record (common fields, then its own) as the kernel lays it out, dynamic strings at the end."""
    fmt = FORMATS[name]
    fixed = max(offset + size for offset, size, _signed, _kind in fmt.fields.values())
    body = bytearray(fixed)
    struct.pack_into("<HBBi", body, 0, fmt.id, 0, 0, tid)
    for field, (offset, size, signed, kind) in fmt.fields.items():
        if field.startswith("common_") or field == "__syscall_nr":
            continue
        value = values.get(field, 0)
        if kind == "chars":
            body[offset:offset + size] = value[:size - 1].ljust(size, b"\0")
        elif kind in ("data_loc", "rel_loc"):
            text = (value or b"") + b"\0"
            start = len(body) - (offset + 4 if kind == "rel_loc" else 0)
            struct.pack_into("<I", body, offset, (len(text) << 16) | start)
            body += text
        else:
            struct.pack_into("<" + raw._INTS[(size, int(signed))], body, offset, value)
    return bytes(body)


def event_bytes(delta, body, force_long=False):
    """Ring-buffer records for one event: a time extend first when the delta does not fit in 27 bits."""
    out = b""
    if delta >= 1 << 27:
        out += struct.pack("<II", raw.TIME_EXTEND | ((delta & ((1 << 27) - 1)) << 5), delta >> 27)
        delta = 0
    body = body + b"\0" * (-len(body) % 4)
    if force_long or len(body) > 4 * raw.DATA_MAX_TYPE_LEN:
        return out + struct.pack("<II", delta << 5, len(body) + 4) + body
    return out + struct.pack("<I", (len(body) // 4) | (delta << 5)) + body


def pages_of(events, lost_first=None):
    """Pages (bytes) holding events [(ts_ns, record bytes)] of one CPU, in order."""
    pages, chunk, page_ts, last = [], b"", None, None
    count = 0

    def close():
        flags = len(chunk)
        tail = b""
        if lost_first is not None and not pages:
            flags |= raw.MISSED_EVENTS
            if lost_first >= 0:
                flags |= raw.MISSED_STORED
                tail = struct.pack("<Q", lost_first)
        page = struct.pack("<QQ", page_ts, flags) + chunk + tail
        pages.append(page.ljust(PAGE, b"\0"))

    for ts, body in events:
        count += 1
        if page_ts is None:
            page_ts, last = ts, ts
        piece = event_bytes(ts - last, body, force_long=count % 7 == 0)
        if 16 + len(chunk) + len(piece) + 8 > PAGE:
            close()
            chunk, page_ts, last = b"", ts, ts
            piece = event_bytes(0, body, force_long=count % 7 == 0)
        chunk += piece
        last = ts
    if chunk:
        close()
    return pages


def fake_instance(tmp_path, per_cpu_pages, enabled=LIGHT, clock="local global [boot] mono"):
    instance = tmp_path / "instances" / "fake"
    for event in enabled:
        target = instance / "events" / event
        target.mkdir(parents=True)
        shutil.copy(os.path.join(EVENTS, event, "format"), target / "format")
        (target / "enable").write_text("1\n")
    for header in ("header_page", "header_event"):
        (tmp_path / "events").mkdir(exist_ok=True)
        shutil.copy(os.path.join(EVENTS, header), tmp_path / "events" / header)
    (instance / "trace_clock").write_text(clock + "\n")
    for cpu, pages in per_cpu_pages.items():
        folder = instance / "per_cpu" / ("cpu%d" % cpu)
        folder.mkdir(parents=True)
        (folder / "trace_pipe_raw").write_bytes(b"".join(pages))
    return str(instance)


def read_all(instance, tracefs, stats=None, clock_ns=lambda: 1 << 62):
    stats = stats or TraceStats()
    reader = raw.RawReader(instance, tracefs, stats, clock_ns=clock_ns)
    events = []
    while True:
        batch, pages = reader.read_pass()
        events += batch
        if not pages and not reader.held:
            break
        if not pages:
            events += reader.read_pass(everything=True)[0]
            break
    reader.close()
    return events, stats


def text_events(path):
    with open(path, "rb") as stream:
        return list(iter_events(stream, TraceStats()))


def comparable(event):
    """An event as the lineage reads it: binary records leave out (None) an exit's comm and a rename's old name,
    and the text's one reading of a rename is its first."""
    name, ts, cpu, tid, _tgid, fields = event
    if name == "task_rename":
        fields = (fields[0], ((None, fields[1][0][1]),))
    elif name == "sched_process_exit":
        fields = (None,) + tuple(fields[1:])
    return name, ts, cpu, tid, fields


def encodable(events):
    # Renames whose two names the text could not tell apart have one split in binary: the first is kept.
    return [event for event in events if event[0] in PAYLOAD_PARSERS]


def binary_instance(root, events):
    """A fake instance under root whose per-CPU trace_pipe_raw files hold events (text parser tuples) as pages."""
    by_cpu = {}
    for event in events:
        body = record(event[0], event[3], _text_fields(event[0], event[5]))
        by_cpu.setdefault(event[2], []).append((event[1], body))
    return fake_instance(root, {cpu: pages_of(per_cpu) for cpu, per_cpu in by_cpu.items()},
                         enabled=sorted({_event_path(event[0]) for event in events} | set(LIGHT)))


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("path", TRACES, ids=os.path.basename)
def test_every_fixture_trace_decodes_to_the_text_parsers_events(path, tmp_path):
    expected = encodable(text_events(path))
    instance = binary_instance(tmp_path, expected)
    decoded, stats = read_all(instance, str(tmp_path))
    assert [comparable(event) for event in decoded] == [comparable(event) for event in expected]
    assert all(event[4] is None for event in decoded)  # binary records carry no tgid: the lineage keeps its own
    assert stats.events == len(expected) and stats.lost_events == 0


def _event_path(name):
    for path in glob.glob(os.path.join(EVENTS, "*", name)):
        return os.path.relpath(path, EVENTS)
    raise AssertionError(name)


def test_the_lineage_fed_binary_names_the_same_senders_as_fed_text(tmp_path):
    path = os.path.join(FIXTURES, "ftrace", "forensics_kill_family.trace")
    expected = encodable(text_events(path))
    instance = binary_instance(tmp_path, expected)
    decoded, _stats = read_all(instance, str(tmp_path))
    from_text, from_raw = (Lineage([9, 15, 2], precision="syscall", opens_traced=True) for _ in range(2))
    for event in expected:
        from_text.feed(event)
    for event in decoded:
        from_raw.feed(event)
    assert from_raw.kills and [(k.victim.pid, k.sender.pid if k.sender else None, k.mechanism)
                               for k in from_raw.kills] == \
        [(k.victim.pid, k.sender.pid if k.sender else None, k.mechanism) for k in from_text.kills]


@pytest.mark.parametrize("path", TRACES, ids=os.path.basename)
def test_the_names_binary_records_leave_out_are_never_missed(path, tmp_path):
    """An exit's comm and a rename's old name are None in binary: the lineage ends with the same names as fed
    the text's events (without their thread group ids, which binary records do not carry either)."""
    expected = encodable(text_events(path))
    decoded, _stats = read_all(binary_instance(tmp_path, expected), str(tmp_path))
    assert any(event[0] in ("sched_process_exit", "task_rename") for event in decoded)
    from_text, from_raw = (Lineage([9, 15, 2], precision="syscall", opens_traced=True) for _ in range(2))
    for event in expected:
        from_text.feed(event[:4] + (None,) + event[5:])
    for event in decoded:
        from_raw.feed(event)

    def names(lineage):
        return ({pid: (proc.comm, proc.exe, proc.exited) for pid, proc in lineage.by_pid.items()},
                [(kill.sender_at_kill.comm if kill.sender_at_kill else None,
                  [ancestor.comm for ancestor in kill.ancestry]) for kill in lineage.kills])
    assert names(from_raw) == names(from_text)


def hostile(tmp_path, names):
    events = []
    for number, name in enumerate(names):
        ts = 1_000_000_000 + number * 1000
        events.append((ts, record("task_rename", 100 + number, {"pid": 100 + number, "oldcomm": b"sh",
                                                                 "newcomm": name})))
        events.append((ts + 1, record("sched_process_exec", 100 + number,
                                      {"filename": b"/tmp/" + name + b" pid=1 old_pid=1", "pid": 100 + number,
                                       "old_pid": 100 + number})))
    return read_all(fake_instance(tmp_path, {0: pages_of(events)}), str(tmp_path))[0]


def test_names_are_their_bytes_whatever_they_hold(tmp_path):
    names = [b"a\nb pid=1", b" newcomm=x", b"\xff\xfe", b"back\\slash", b"sig=9 res=0"]
    decoded = hostile(tmp_path, names)
    renames = [event for event in decoded if event[0] == "task_rename"]
    execs = [event for event in decoded if event[0] == "sched_process_exec"]
    assert [event[5][1] for event in renames] == [((None, name),) for name in names]
    assert [event[5][1] for event in execs] == [100 + number for number in range(len(names))]
    assert execs[0][5][0] == "/tmp/a\nb pid=1 pid=1 old_pid=1" and execs[2][5][0] == "/tmp/\\xff\\xfe pid=1 old_pid=1"


def test_cpus_merge_in_time_order_and_the_youngest_events_wait_for_the_next_pass(tmp_path):
    def fork(ts, child):
        return ts, record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": child})
    cpu0 = [fork(1000, 10), fork(3000, 30), fork(9000, 90)]
    cpu1 = [fork(2000, 20), fork(4000, 40), fork(8000, 80)]
    instance = fake_instance(tmp_path, {0: pages_of(cpu0), 1: pages_of(cpu1)})
    stats = TraceStats()
    reader = raw.RawReader(instance, str(tmp_path), stats, clock_ns=lambda: 5000 + raw.HOLD_BACK_NS)
    first, pages = reader.read_pass()
    assert pages == 2 and [event[5][1] for event in first] == [10, 20, 30, 40]
    assert [event[5][1] for event in reader.held] == [80, 90]
    rest, _pages = reader.read_pass(everything=True)
    assert [event[5][1] for event in rest] == [80, 90] and stats.events == 6
    assert stats.first_ts_per_cpu == {0: 1000, 1: 2000} and stats.last_ts == 9000
    reader.close()


def test_time_extends_long_events_and_padding_keep_every_timestamp(tmp_path):
    times = [10, 11, 11 + (1 << 27), 12 + (5 << 40), 13 + (5 << 40)]
    events = [(ts, record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": number}))
              for number, ts in enumerate(times)]
    page = bytearray(pages_of(events)[0])
    # Padding to the end of the page after the data, as the kernel leaves a page it moved on from.
    commit = struct.unpack_from("<Q", page, 8)[0]
    struct.pack_into("<I", page, 16 + commit, raw.PADDING)
    struct.pack_into("<Q", page, 8, commit + 4)
    instance = fake_instance(tmp_path, {0: [bytes(page)]})
    decoded, _stats = read_all(instance, str(tmp_path))
    assert [event[1] for event in decoded] == times


def test_a_discarded_event_keeps_its_time_and_is_skipped(tmp_path):
    body = record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": 5})
    chunk = event_bytes(0, body) + struct.pack("<II", raw.PADDING | (7 << 5), 8) + b"\0" * 4 + event_bytes(3, body)
    page = (struct.pack("<QQ", 100, len(chunk)) + chunk).ljust(PAGE, b"\0")
    decoded, _stats = read_all(fake_instance(tmp_path, {0: [page]}), str(tmp_path))
    assert [event[1] for event in decoded] == [100, 110]


def test_lost_events_are_counted_with_the_time_of_what_follows(tmp_path):
    events = [(5000, record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": 2}))]
    stats = TraceStats()
    read_all(fake_instance(tmp_path, {0: pages_of(events, lost_first=42)}), str(tmp_path), stats)
    assert stats.lost_events == 42 and stats.lost_markers == [(0, 42, 5000)]


def test_lost_events_without_a_count_say_so(tmp_path):
    events = [(5000, record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": 2}))]
    stats = TraceStats()
    read_all(fake_instance(tmp_path, {1: pages_of(events, lost_first=-1)}), str(tmp_path), stats)
    assert stats.lost_events == 0 and stats.lost_markers == [(1, None, 5000)]


def test_events_of_unknown_ids_are_counted_never_guessed(tmp_path):
    body = bytearray(record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": 2}))
    struct.pack_into("<H", body, 0, 65000)
    stats = TraceStats()
    decoded, _ = read_all(fake_instance(tmp_path, {0: pages_of([(1, bytes(body))])}), str(tmp_path), stats)
    assert decoded == [] and stats.foreign == 1


def test_a_torn_page_is_counted_and_the_rest_still_read(tmp_path):
    good = pages_of([(7, record("sched_process_fork", 1, {"parent_pid": 1, "child_pid": 2}))])[0]
    torn = struct.pack("<QQ", 1, 4000)  # says 4000 bytes of data and holds none
    instance = fake_instance(tmp_path, {0: [good]})
    path = os.path.join(instance, "per_cpu", "cpu0", "trace_pipe_raw")
    with open(path, "ab") as handle:
        handle.write(torn)
    decoded, stats = read_all(instance, str(tmp_path))
    assert [event[5] for event in decoded] == [(1, 2)] and stats.malformed == 1


@pytest.mark.parametrize("change, reason", [
    (lambda instance, root: (open(os.path.join(instance, "trace_clock"), "w").write("[local] boot\n")),
     "trace clock"),
    (lambda instance, root: _enable(instance, "sched/sched_switch"), "no decoder"),
    (lambda instance, root: _rewrite(os.path.join(root, "events", "header_event"), "27 bits", "29 bits"),
     "event header"),
    (lambda instance, root: _rewrite(os.path.join(instance, "events", "task", "task_rename", "format"),
                                     "offset:28;", "offset:10;"), "one struct"),
])
def test_a_layout_it_does_not_know_is_refused_with_the_reason(tmp_path, change, reason):
    instance = fake_instance(tmp_path, {0: []})
    change(instance, str(tmp_path))
    with pytest.raises(raw.RawFormatError, match=reason):
        raw.RawReader(instance, str(tmp_path), TraceStats())


def _enable(instance, event):
    target = os.path.join(instance, "events", event)
    os.makedirs(target)
    with open(os.path.join(target, "enable"), "w") as handle:
        handle.write("1\n")


def _rewrite(path, old, new):
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text.replace(old, new, 1))
