# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Streaming parser for the text of a tracefs instance's `trace` file. Standard library only; Python 3.9+.
"""Turn trace text into events, one at a time, without trusting anything a process can name itself.

A trace line is ``TASK-TID (TGID) [CPU] FLAGS SECONDS.MICROS: EVENT: PAYLOAD``. TASK comes from the kernel's
small saved-cmdlines cache (often ``<...>``, sometimes stale) and is never used. Process names inside the
payload are up to 15 arbitrary bytes, so every payload is parsed from the fixed fields at its ends inward:
a name can never move a pid, a signal number or a result.

A name holding a newline splits a record over two lines; the parser joins the pieces back when the first
piece's payload is incomplete and the second has no header of its own.

Memory is bounded by the read size and MAX_LINE: a longer line is skipped and counted wherever the reads cut
it. A saved copy with CRLF line ends (its first line says so) is read as if its line ends were LF.
"""

from __future__ import annotations

import re

from ansible.module_utils.sigsleuth_vocabulary import KILL_SYSCALLS, decode_name

# Events the lineage engine understands (payload parsers below).
SIGNAL_GENERATE = "signal_generate"
FORK = "sched_process_fork"
EXEC = "sched_process_exec"
EXIT = "sched_process_exit"
NEWTASK = "task_newtask"
RENAME = "task_rename"
MARK_VICTIM = "mark_victim"
CGROUP_ATTACH = "cgroup_attach_task"
# Syscalls whose entry is evidence for how a signal came about: CPU limits, and opens of cgroup.kill (filtered).
EVIDENCE_SYSCALLS = ("prlimit64", "setrlimit", "openat", "open", "openat2")

# A record header: TASK-TID (TGID) [CPU] FLAGS SECONDS.MICROS: EVENT. The kernel prints TASK with "%16s" and a
# task name has at most 15 bytes, so TASK is exactly 16 bytes in a well-formed line; matching starts at the "-"
# after it (a literal the regex engine finds fast) and the 16 bytes before it are checked by position.
TASK_WIDTH = 16
# Where a line does not start with exactly TASK_WIDTH bytes of task name, the header may sit this far in.
MAX_TASK_WIDTH = 32
# The kernel prints one event into a page (4 KB): a longer line is garbage, skipped and counted. Every part of
# _RECORD is bounded so that it never matches a longer line either, whatever the read size.
MAX_LINE = 1 << 16
_HEADER_MAX = 256  # the longest header _RECORD takes, from the "-" to the payload (232 bytes)
_RECORD = re.compile(
    rb"-(\d{1,10}) {1,16}(?:\( {0,16}([\d-]{1,10})\) {1,16})?\[(\d{1,6})\] {1,16}\S{1,16} {1,16}(\d{1,12}\.\d{6}): "
    rb"(\w{1,64}(?:: |\(| -> ))([^\n]{0,%d})\n" % (MAX_LINE - MAX_TASK_WIDTH - _HEADER_MAX)
)
_ENTRIES = re.compile(rb"entries-in-buffer/entries-written: (\d+)/(\d+)")
_LOST = re.compile(rb"CPU:(\d+) \[LOST (\d+) EVENTS\]")
_CPU_STARTED = re.compile(rb"##### CPU (\d+) buffer started ####")

_SIGNAL = re.compile(rb"sig=(\d+) errno=(-?\d+) code=(-?\d+) comm=(.*) pid=(\d+) grp=(\d+) res=(\d+)\Z", re.S)
_MARK_VICTIM = re.compile(rb"pid=(\d+) comm=(.*) total-vm=(\d+)kB anon-rss=(\d+)kB file-rss:(\d+)kB "
                          rb"shmem-rss:(\d+)kB uid=(\d+) pgtables=(\d+)kB oom_score_adj=(-?\d+)\Z", re.S)
_SYSCALL_ARG = re.compile(rb"(\w+): (0x[0-9a-f]+|\d+)")

CHUNK = 1 << 20


class TraceStats:
    """What the parser saw besides events: the `sources.ftrace` counters of the report."""

    def __init__(self):
        self.bytes = 0
        self.lines = 0
        self.events = 0
        self.malformed = 0          # lines that are neither records, comments nor markers, or broken records
        self.skipped_bytes = 0      # bytes of lines longer than MAX_LINE (each also counts as malformed)
        self.crlf = False           # True when the line ends were CRLF (a saved copy) and were read as LF
        self.foreign = 0            # well-formed records of events we do not read
        self.lost_events = 0        # sum of "LOST N EVENTS" markers
        self.lost_markers = []      # (cpu, count, ts_ns of the next record or None)
        self.cpu_buffer_started = set()
        self.first_ts_per_cpu = {}
        self.last_ts = None
        self.entries_in_buffer = None
        self.entries_written = None

    def as_dict(self):
        return {
            "bytes_read": self.bytes,
            "lines_read": self.lines,
            "events_read": self.events,
            "lines_skipped": self.malformed,
            "bytes_skipped": self.skipped_bytes,
            "foreign_events": self.foreign,
            "lost_events_marked": self.lost_events,
            "entries_in_buffer": self.entries_in_buffer,
            "entries_written": self.entries_written,
            **({"line_ends": "crlf"} if self.crlf else {}),
        }


# ---------------------------------------------------------------- payload parsers
# Each takes the payload bytes and returns a tuple, or None when the payload is incomplete or broken.

def parse_signal_generate(payload):
    """(sig, errno, code, comm, target_tid, group, result)"""
    m = _SIGNAL.match(payload)
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), decode_name(m.group(4)),
            int(m.group(5)), int(m.group(6)), int(m.group(7)))


def parse_fork(payload):
    """(parent_tid, child_tid). The names in between are not needed: the child starts with its parent's."""
    head, sep, child = payload.rpartition(b" child_pid=")
    if not sep or not child.isdigit() or not head.startswith(b"comm="):
        return None
    marker = head.rfind(b" child_comm=")
    parent = head[:marker].rpartition(b" pid=")[2] if marker > 0 else b""
    if not parent.isdigit():
        return None
    return int(parent), int(child)


def parse_exec(payload):
    """(filename, pid, old_pid)"""
    head, sep, old_pid = payload.rpartition(b" old_pid=")
    filename, sep2, pid = head.rpartition(b" pid=")
    if not sep or not sep2 or not pid.isdigit() or not old_pid.isdigit() or not filename.startswith(b"filename="):
        return None
    return decode_name(filename[9:]), int(pid), int(old_pid)


def parse_exit(payload):
    """(comm as bytes, tid, group_dead) where group_dead is None on kernels that do not report it."""
    head, sep, tail = payload.rpartition(b" pid=")
    if not sep or not head.startswith(b"comm="):
        return None
    parts = tail.split(b" ")
    if not parts[0].isdigit() or len(parts) > 3 or len(parts) < 2 or not parts[1].startswith(b"prio="):
        return None
    if len(parts) == 2:
        return head[5:], int(parts[0]), None
    dead = parts[2]
    if dead == b"group_dead=true":
        return head[5:], int(parts[0]), True
    if dead == b"group_dead=false":
        return head[5:], int(parts[0]), False
    return None


def parse_newtask(payload):
    """(tid, comm as bytes, clone_flags)"""
    head, sep, tail = payload.rpartition(b" clone_flags=")
    flags, sep2, _adj = tail.partition(b" oom_score_adj=")
    pid, sep3, comm = head.partition(b" comm=")
    if not sep or not sep2 or not sep3 or not pid.startswith(b"pid=") or not pid[4:].isdigit():
        return None
    try:
        return int(pid[4:]), comm, int(flags, 16)
    except ValueError:
        return None


def parse_rename(payload):
    """(tid, candidates) with candidates a tuple of (oldcomm, newcomm) splits, as bytes.

    Two free-form names side by side are ambiguous when a name holds " newcomm=": every split is returned
    and the caller picks the one whose old name it already knows.
    """
    head, sep, _adj = payload.rpartition(b" oom_score_adj=")
    pid, sep2, middle = head.partition(b" oldcomm=")
    if not sep or not sep2 or not pid.startswith(b"pid=") or not pid[4:].isdigit():
        return None
    candidates = []
    start = 0
    while True:
        at = middle.find(b" newcomm=", start)
        if at < 0:
            break
        candidates.append((middle[:at], middle[at + 9:]))
        start = at + 1
    if not candidates:
        return None
    return int(pid[4:]), tuple(candidates)


def parse_mark_victim(payload):
    """(pid, comm, total_vm_kb, anon_rss_kb, file_rss_kb, shmem_rss_kb, uid)"""
    m = _MARK_VICTIM.match(payload)
    if m is None:
        return None
    g = m.groups()
    return int(g[0]), decode_name(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), int(g[6])


# Syscall arguments declared int (pid_t, int) print as their 32-bit pattern: -14726 reads 0xffffc67a.
_INT_ARGS = frozenset(("pid", "tgid", "sig", "pidfd", "resource", "fd"))


def parse_cgroup_attach(payload):
    """(hierarchy id, path, tid): a task moved into a cgroup."""
    head, sep, _comm = payload.rpartition(b" comm=")
    head, sep2, pid = head.rpartition(b" pid=")
    root, sep3, rest = head.partition(b" dst_id=")
    _before, sep4, path = rest.partition(b" dst_path=")
    if not (sep and sep2 and sep3 and sep4) or not pid.isdigit() or not root.startswith(b"dst_root="):
        return None
    try:
        return int(root[9:]), decode_name(path), int(pid)
    except ValueError:
        return None


def parse_syscall_args(payload):
    """{argname: int} from a syscall entry ("pid: 0x16cf, sig: 9)"); small values print in decimal."""
    if not payload.endswith(b")"):
        return None
    args = {}
    for name, value in _SYSCALL_ARG.findall(payload):
        name = name.decode()
        args[name] = signed_syscall_arg(name, int(value, 0))
    return args


def signed_syscall_arg(name, number):
    """A syscall argument as the syscall sees it, from its unsigned 64-bit record (text or binary)."""
    if number >= 1 << 63:
        return number - (1 << 64)
    if name in _INT_ARGS and 1 << 31 <= number < 1 << 32:
        return number - (1 << 32)
    return number


def parse_syscall_exit(payload):
    """The return value of a syscall exit ("0x0"), as a signed int."""
    try:
        value = int(payload, 16)
    except ValueError:
        return None
    return value - (1 << 64) if value >= 1 << 63 else value


PAYLOAD_PARSERS = {
    SIGNAL_GENERATE: parse_signal_generate,
    FORK: parse_fork,
    EXEC: parse_exec,
    EXIT: parse_exit,
    NEWTASK: parse_newtask,
    RENAME: parse_rename,
    MARK_VICTIM: parse_mark_victim,
    CGROUP_ATTACH: parse_cgroup_attach,
}
# How each event's name ends its record header: "name: payload", syscall entries "sys_kill(args)" and
# syscall exits "sys_kill -> 0x0".
_PARSERS_BY_BYTES = {(name + ": ").encode(): (name, parser) for name, parser in PAYLOAD_PARSERS.items()}
for _name in KILL_SYSCALLS + EVIDENCE_SYSCALLS:
    PAYLOAD_PARSERS["sys_enter_" + _name] = parse_syscall_args
    PAYLOAD_PARSERS["sys_exit_" + _name] = parse_syscall_exit
    _PARSERS_BY_BYTES[("sys_%s(" % _name).encode()] = ("sys_enter_" + _name, parse_syscall_args)
    _PARSERS_BY_BYTES[("sys_%s -> " % _name).encode()] = ("sys_exit_" + _name, parse_syscall_exit)


# ---------------------------------------------------------------- the stream

def iter_events(stream, stats=None, chunk_size=CHUNK):
    """Yield (event, ts_ns, cpu, tid, tgid, fields) for every record we understand.

    `stream` is a binary file object (the instance's `trace`, or a saved copy); it is read in chunks, so
    memory does not grow with the buffer. `tgid` is None when the trace lacks the record-tgid column.
    Anything else is counted in `stats`, never guessed at.
    """
    stats = TraceStats() if stats is None else stats
    parsers = _PARSERS_BY_BYTES
    finditer = _RECORD.finditer
    first_ts = stats.first_ts_per_cpu
    pending = None  # a record whose payload was cut by a newline inside a name
    last_ts = None
    cpus = {}  # CPU column bytes -> number; the first record of each CPU sets its first timestamp
    skipped = stats.skipped_bytes
    for text in _texts(stream, stats, chunk_size):
        if pending is not None and stats.skipped_bytes != skipped:
            pending = None  # a split record never goes on past a line skipped between reads
            stats.malformed += 1
        position = 0
        for m in finditer(text):
            start = m.start()
            if start - position != TASK_WIDTH or pending is not None:
                # Not a plain line: comments, markers, garbage, a long task column or a split record's tail.
                stats.last_ts = last_ts
                yield from _between(text, position, start, stats, pending)
                pending = None
                if _buried(text, position, m, stats):
                    position = m.end()
                    continue
            position = m.end()
            tid, tgid, cpu, stamp, name, payload = m.groups()
            entry = parsers.get(name)
            if entry is None:
                stats.foreign += 1
                continue
            ts = int(stamp.replace(b".", b"")) * 1000  # seconds.micros -> ns, exactly
            cpu_number = cpus.get(cpu)
            if cpu_number is None:
                cpu_number = cpus[cpu] = int(cpu)
                first_ts[cpu_number] = ts
            last_ts = ts
            if tgid == tid:
                tid = tgid = int(tid)
            else:
                tid = int(tid)
                tgid = None if tgid is None or tgid[0] == 45 else int(tgid)  # 45 is "-": tgid not recorded
            fields = entry[1](payload)
            if fields is None:
                pending = (entry, ts, cpu_number, tid, tgid, payload)
                continue
            stats.events += 1
            yield entry[0], ts, cpu_number, tid, tgid, fields
        stats.last_ts = last_ts
        if position < len(text):
            yield from _between(text, position, len(text), stats, pending, before_record=False)
            pending = None
        skipped = stats.skipped_bytes
    if pending is not None:
        stats.malformed += 1


def _texts(stream, stats, chunk_size):
    """The stream's complete lines, a read at a time, with LF line ends; counts lines, skips over-long ones.

    What is held over from one read to the next never grows past MAX_LINE. Whether the line ends are CRLF is
    decided once, by the first line, so a name ending in CR in an LF trace keeps it.
    """
    carry = b""
    skipping = False  # inside an over-long line: skip up to its newline
    crlf = None
    while True:
        chunk = stream.read(chunk_size)
        if chunk:
            stats.bytes += len(chunk)
            if skipping:
                chunk, skipping = _skip_rest_of_line(chunk, stats)
            cut = chunk.rfind(b"\n")
            if cut < 0:
                carry += chunk
                text = None
            else:
                text = carry + chunk[:cut + 1]
                carry = chunk[cut + 1:]
            if len(carry) > MAX_LINE:
                stats.malformed += 1
                stats.skipped_bytes += len(carry)
                carry = b""
                skipping = True
            if text is None:
                continue
        elif carry:
            text = carry + b"\n"  # a truncated last line: parsed as far as it goes, a torn record is rejected
            carry = b""
        else:
            stats.lines += skipping  # an over-long line cut off by the end
            break
        if crlf is None:
            first = text.find(b"\n")
            crlf = stats.crlf = first > 0 and text[first - 1] == 13  # 13 is "\r"
        if crlf:
            text = text.replace(b"\r\n", b"\n")
        stats.lines += text.count(b"\n")
        yield text


def _skip_rest_of_line(chunk, stats):
    """(what follows the over-long line's end in chunk, whether the line goes on past it)."""
    end = chunk.find(b"\n")
    if end < 0:
        stats.skipped_bytes += len(chunk)
        return b"", True
    stats.skipped_bytes += end
    stats.lines += 1
    return chunk[end + 1:], False


def _buried(text, position, match, stats):
    """True (counted) when a header was found deep inside a line: not the start of a record."""
    start = match.start()
    newline = text.rfind(b"\n", position, start)
    line_start = newline + 1 if newline >= 0 else position
    if start - line_start <= MAX_TASK_WIDTH:
        return False
    stats.malformed += 1
    if match.end() - 1 - line_start > MAX_LINE:
        stats.skipped_bytes += match.end() - 1 - line_start
    return True


def _between(text, begin, end, stats, pending, before_record=True):
    """Handle the lines between two records; join a split record back together.

    Before a record, its task column ends the text: the TASK_WIDTH bytes in front of it, even when a newline
    inside the task's name split them over lines; otherwise whatever follows the last newline.
    """
    column = end - TASK_WIDTH
    if before_record and column >= begin and (column == begin or text[column - 1] == 10):
        end = column  # 10 is "\n": the column starts a line, so everything before it is whole lines
    lines = text[begin:end].split(b"\n")
    lines.pop()
    for line in lines:
        if not line:
            continue
        if len(line) > MAX_LINE:
            if pending is not None:  # a split record never goes on past a skipped line
                pending = None
                stats.malformed += 1
            stats.malformed += 1
            stats.skipped_bytes += len(line)
            continue
        if pending is not None:
            entry, ts, cpu, tid, tgid, payload = pending
            payload = payload + b"\n" + line
            fields = entry[1](payload)
            if fields is not None:
                stats.events += 1
                stats.lines -= 1  # two physical lines, one record
                pending = None
                yield entry[0], ts, cpu, tid, tgid, fields
                continue
            # Still incomplete: keep joining only while the joined text stays plausibly one record.
            if len(payload) < 4096:
                pending = (entry, ts, cpu, tid, tgid, payload)
                stats.lines -= 1
                continue
            pending = None
            stats.malformed += 1
        if line[:1] == b"#":
            m = _ENTRIES.search(line)
            if m:
                stats.entries_in_buffer, stats.entries_written = int(m.group(1)), int(m.group(2))
            m = _CPU_STARTED.search(line)
            if m:
                stats.cpu_buffer_started.add(int(m.group(1)))
            continue
        m = _LOST.search(line)
        if m:
            stats.lost_events += int(m.group(2))
            stats.lost_markers.append((int(m.group(1)), int(m.group(2)), stats.last_ts))
            continue
        stats.malformed += 1
    if pending is not None:
        stats.malformed += 1
