# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The instance's per-CPU trace_pipe_raw: binary ring-buffer pages decoded into the text parser's events.
"""Decode the ring buffer's own pages, as the watch drain reads them from ``per_cpu/cpuN/trace_pipe_raw``.

Reading the binary pages spares the kernel formatting every event as text (system time charged to the
reader) and the parser matching that text; each event is decoded at the offsets its ``format`` file gives,
into the tuple ``sigsleuth_trace_parser`` makes of its text line, so the lineage cannot tell the two apart;
only the names the lineage never reads from a binary record are None (an exit's comm, a rename's old name:
skipping them spares 7 % of the decoding). Names come out as the bytes the kernel stored, never split by a
newline they hold.

A page (sub-buffer) is a header - its timestamp (u64) and ``commit`` (the data length in the low 27 bits,
bit 31 "events were lost before this page", bit 30 "their count is stored after the data") - and events,
each behind a 32-bit header: ``type_len`` (5 bits) and ``time_delta`` (27 bits). type_len 1-28 is a data
event of that many 4-byte words; 0 a data event whose length follows; 29 padding; 30 a time extend; 31 an
absolute timestamp (libtraceevent's kbuffer reads them the same way).

The CPUs' streams are merged in time order per read pass. An event written on one CPU while another was
being read could be older than what that other CPU gave, so events younger than the moment the pass began
(less HOLD_BACK_NS) wait for the next pass: the lineage sees one ordered stream, as from trace_pipe.
"""

from __future__ import annotations

import operator
import os
import re
import struct
import sys
import time

from ansible.module_utils.sigsleuth_trace_parser import (
    CGROUP_ATTACH, EXEC, EXIT, FORK, MARK_VICTIM, NEWTASK, PAYLOAD_PARSERS, RENAME, SIGNAL_GENERATE,
    signed_syscall_arg,
)
from ansible.module_utils.sigsleuth_tracefs import format_fields
from ansible.module_utils.sigsleuth_vocabulary import decode_name

COMMIT_MASK = (1 << 27) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
TS_MSB = 0xF8 << 56  # an absolute timestamp lacks these bits: they come from the running one
PADDING, TIME_EXTEND, TIME_STAMP = 29, 30, 31
DATA_MAX_TYPE_LEN = 28
# How long an event may take from its timestamp to its commit (an interrupt in between); younger events wait.
HOLD_BACK_NS = 2_000_000
CLOCK = "boot"  # the trace clock a pass's start is read in (CLOCK_BOOTTIME): what arm sets
READER_RAW, READER_TEXT = "trace_pipe_raw", "trace_pipe"
_TS = operator.itemgetter(1)
_DATA_SIZE = (0,) + tuple(4 * type_len for type_len in range(1, DATA_MAX_TYPE_LEN + 1)) + (0,) * 3  # by type_len

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COMMON = struct.Struct("<H2xi")  # common_type, (flags, preempt_count), common_pid
_SMALL_EVENT = struct.Struct("<IH2xi")  # an event header followed at once by the common fields
_INTS = {(1, 0): "B", (1, 1): "b", (2, 0): "H", (2, 1): "h", (4, 0): "I", (4, 1): "i", (8, 0): "Q", (8, 1): "q"}


class RawFormatError(Exception):
    """The instance's binary layout is not one this decoder knows: the drain reads trace_pipe instead."""


class EventFormat:
    """One event's fields from its ``format`` file: name -> (offset, size, signed, kind)."""

    def __init__(self, name, event_id, fields):
        self.name = name
        self.id = event_id
        self.fields = fields

    @classmethod
    def parse(cls, name, text):
        event_id = None
        for line in text.splitlines():
            if line.strip().startswith("ID:"):
                event_id = int(line.strip()[3:])
        fields = {}
        for field in format_fields(text):
            if field.offset is None or field.size is None or field.signed is None:
                continue  # never in a kernel's format: not guessed at
            decl = field.decl
            kind = "rel_loc" if "__rel_loc" in decl else "data_loc" if "__data_loc" in decl \
                else "chars" if field.length is not None and "char" in decl \
                else "bool" if decl.split()[0] == "bool" and field.size == 1 else "int"
            fields[field.name] = (field.offset, field.size, field.signed == 1, kind)
        if event_id is None:
            raise RawFormatError("%s: no ID in its format" % name)
        return cls(name, event_id, fields)

    def need(self, *names):
        missing = [name for name in names if name not in self.fields]
        if missing:
            raise RawFormatError("%s: no field %s in its format" % (self.name, ", ".join(missing)))
        return [self.fields[name] for name in names]


def layout(fmt, names):
    """One struct for several fields (integers, and char arrays as their full bytes), in names' order: built
    from the format's offsets, so a field of another size or place fails here (RawFormatError), never reads
    wrong. Dynamic strings (__data_loc) are read as their u32 location."""
    text, position = "<", 0
    for name in names:
        offset, size, signed, kind = fmt.need(name)[0]
        if kind == "chars":
            code = "%ds" % size
        elif kind in ("data_loc", "rel_loc") and size == 4:
            code = "I"
        elif kind == "bool":
            code = "?"  # any byte but 0 is True, as the kernel's C bool reads
        else:
            code = _INTS.get((size, int(signed))) if kind == "int" else None
        if code is None or offset < position:
            raise RawFormatError("%s: field %s cannot be read in one struct" % (fmt.name, name))
        text += ("%dx" % (offset - position) if offset > position else "") + code
        position = offset + size
    return struct.Struct(text)


def _string_at(fmt, name):
    """(page, data, loc) -> the dynamic string's bytes up to its NUL, for a __data_loc or __rel_loc field."""
    offset, _size, _signed, kind = fmt.need(name)[0]
    relative = offset + 4 if kind == "rel_loc" else 0  # __rel_loc counts from the end of its own field

    def string_at(page, data, loc):
        start = data + relative + (loc & 0xFFFF)
        return page[start:start + (loc >> 16)].partition(b"\0")[0]
    return string_at


# ---------------------------------------------------------------- decoders: the text parser's tuples
# Each is (page, data) -> fields, data being the offset of the event's record (its common_type) in the page.
# The hot ones are one struct read each; a name is its bytes up to the first NUL.

def _fork(fmt):
    return layout(fmt, ("parent_pid", "child_pid")).unpack_from  # (parent_tid, child_tid), no frame of ours


def _exec(fmt):
    unpack = layout(fmt, ("filename", "pid", "old_pid")).unpack_from
    offset, _size, _signed, kind = fmt.need("filename")[0]
    relative = offset + 4 if kind == "rel_loc" else 0

    def decode(page, data):
        # _string_at() and decode_name()'s fast path, inline: this runs once per exec of the whole host.
        loc, pid, old_pid = unpack(page, data)
        start = data + relative + (loc & 0xFFFF)
        name = page[start:start + (loc >> 16)].partition(b"\0")[0]
        return (name.decode("utf-8", "backslashreplace") if 92 not in name else decode_name(name)), pid, old_pid
    return decode


def _exit(fmt):
    # (None, pid, group_dead): the exiting task's comm is not read (the lineage knows the process's own).
    if "group_dead" not in fmt.fields:
        unpack_pid = layout(fmt, ("pid",)).unpack_from
        return lambda page, data: (None, unpack_pid(page, data)[0], None)
    unpack = layout(fmt, ("pid", "group_dead")).unpack_from
    if fmt.fields["group_dead"][3] == "bool":
        return lambda page, data: (None,) + unpack(page, data)

    def decode(page, data):
        pid, dead = unpack(page, data)
        return None, pid, dead != 0
    return decode


def _newtask(fmt):
    unpack = layout(fmt, ("pid", "comm", "clone_flags")).unpack_from

    def decode(page, data):
        pid, comm, flags = unpack(page, data)
        return pid, comm.partition(b"\0")[0], flags
    return decode


def _rename(fmt):
    # In binary the two names are separate fields: never ambiguous, one candidate, whose old name is not read
    # (None; the text needs it only to choose among several readings of one line).
    unpack = layout(fmt, ("pid", "newcomm")).unpack_from

    def decode(page, data):
        pid, new = unpack(page, data)
        return pid, ((None, new.partition(b"\0")[0]),)
    return decode


def _signal(fmt):
    unpack = layout(fmt, ("sig", "errno", "code", "comm", "pid", "group", "result")).unpack_from

    def decode(page, data):
        sig, errno, code, comm, pid, group, result = unpack(page, data)
        return sig, errno, code, decode_name(comm.partition(b"\0")[0]), pid, group, result
    return decode


def _mark_victim(fmt):
    unpack = layout(fmt, ("pid", "comm", "total_vm", "anon_rss", "file_rss", "shmem_rss", "uid")).unpack_from
    string_at = _string_at(fmt, "comm")

    def decode(page, data):
        pid, loc, total_vm, anon, file_rss, shmem, uid = unpack(page, data)
        return pid, decode_name(string_at(page, data, loc)), total_vm, anon, file_rss, shmem, uid
    return decode


def _cgroup_attach(fmt):
    unpack = layout(fmt, ("dst_root", "pid", "dst_path")).unpack_from
    string_at = _string_at(fmt, "dst_path")

    def decode(page, data):
        root, pid, loc = unpack(page, data)
        return root, decode_name(string_at(page, data, loc)), pid
    return decode


def _syscall_enter(fmt):
    # Every argument is stored as an unsigned long; the text parser's sign rules apply to its value.
    names = [name for name, (offset, _size, _signed, _kind) in sorted(fmt.fields.items(), key=lambda i: i[1][0])
             if offset >= 16 and not name.startswith("common_") and name != "__syscall_nr"]
    for name in names:
        if fmt.fields[name][1] != 8:
            raise RawFormatError("%s: argument %s is not 8 bytes" % (fmt.name, name))
    unpack = layout(fmt, names).unpack_from if names else None

    def decode(page, data):
        if unpack is None:
            return {}
        return {name: signed_syscall_arg(name, value) for name, value in zip(names, unpack(page, data))}
    return decode


def _syscall_exit(fmt):
    unpack = layout(fmt, ("ret",)).unpack_from
    return lambda page, data: unpack(page, data)[0]


DECODERS = {FORK: _fork, EXEC: _exec, EXIT: _exit, NEWTASK: _newtask, RENAME: _rename, SIGNAL_GENERATE: _signal,
            MARK_VICTIM: _mark_victim, CGROUP_ATTACH: _cgroup_attach}


def decoder_for(name, fmt):
    if name in DECODERS:
        return DECODERS[name](fmt)
    if name.startswith("sys_enter_") and name in PAYLOAD_PARSERS:
        return _syscall_enter(fmt)
    if name.startswith("sys_exit_") and name in PAYLOAD_PARSERS:
        return _syscall_exit(fmt)
    raise RawFormatError("%s: no binary decoder" % name)


def enabled_events(instance_dir):
    """(subsystem, name) of every event enabled in the instance."""
    events = []
    root = os.path.join(instance_dir, "events")
    for system in sorted(os.listdir(root)):
        folder = os.path.join(root, system)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            try:
                with open(os.path.join(folder, name, "enable")) as handle:
                    if handle.read().strip() not in ("0", ""):
                        events.append((system, name))
            except OSError:
                continue
    return events


def load_decoders(instance_dir):
    """{event id: (name, decoder)} for every enabled event; RawFormatError when one cannot be decoded."""
    decoders = {}
    for system, name in enabled_events(instance_dir):
        if name not in PAYLOAD_PARSERS:
            raise RawFormatError("%s/%s is enabled and has no decoder" % (system, name))
        with open(os.path.join(instance_dir, "events", system, name, "format")) as handle:
            fmt = EventFormat.parse(name, handle.read())
        decoders[fmt.id] = (sys.intern(name), decoder_for(name, fmt))  # the very str the lineage compares with
    return decoders


def check_layout(tracefs_root, instance_dir):
    """The page size, after checking the page and event headers are the ones this decoder reads."""
    try:
        with open(os.path.join(tracefs_root, "events", "header_page")) as handle:
            page = handle.read()
        with open(os.path.join(tracefs_root, "events", "header_event")) as handle:
            event = handle.read()
    except OSError as exc:
        raise RawFormatError("the ring buffer's headers cannot be read: %s" % exc)
    fields = {field.name: (field.offset, field.size) for field in format_fields(page)}
    if fields.get("timestamp") != (0, 8) or fields.get("commit") != (8, 8) or fields.get("data", (0,))[0] != 16:
        raise RawFormatError("the ring buffer's page header is not the 64-bit one: %r" % fields)
    if not re.search(r"type_len\s*:\s*5 bits", event) or not re.search(r"time_delta\s*:\s*27 bits", event):
        raise RawFormatError("the ring buffer's event header is not 5 + 27 bits")
    if sys.byteorder != "little":
        raise RawFormatError("this host is big-endian: the decoder reads little-endian pages")
    size_file = os.path.join(instance_dir, "buffer_subbuf_size_kb")
    try:
        with open(size_file) as handle:
            return int(handle.read().strip()) * 1024
    except (OSError, ValueError):
        return 16 + fields["data"][1]


# ---------------------------------------------------------------- pages

def decode_page(page, cpu, decoders, out, stats):
    """Append the page's events to out as (event, ts_ns, cpu, tid, None, fields); count the rest in stats.

    Returns the page's lost-events count: 0, the number stored, or -1 when events were lost uncounted."""
    ts = _U64.unpack_from(page, 0)[0]
    commit = _U64.unpack_from(page, 8)[0]
    end = 16 + (commit & COMMIT_MASK)
    lost = 0
    if commit & MISSED_EVENTS:
        lost = _U64.unpack_from(page, end)[0] if commit & MISSED_STORED and end + 8 <= len(page) else -1
    if end > len(page):
        stats.malformed += 1  # a page shorter than its header says (never from the kernel): read what it holds
        end = len(page)
    unpack_u32 = _U32.unpack_from
    common = _COMMON.unpack_from
    small = _SMALL_EVENT.unpack_from
    small_end = min(end, len(page) - _SMALL_EVENT.size)  # where the header and common fields fit in one read
    append = out.append
    find = decoders.get
    data_size = _DATA_SIZE
    offset = 16
    foreign = 0
    while offset + 4 <= end:
        if offset <= small_end:
            # The usual case, in one read: a small data event's header, common_type and common_pid.
            header, event_type, tid = small(page, offset)
            size = data_size[header & 31]
            if size:
                ts += header >> 5
                data = offset + 4
                offset = data + size
                if offset > end:
                    break  # a torn event (never from the kernel): not guessed at
                entry = find(event_type)
                if entry is None:
                    foreign += 1
                else:
                    append((entry[0], ts, cpu, tid, None, entry[1](page, data)))
                continue
            type_len = header & 31
        else:
            header = unpack_u32(page, offset)[0]
            type_len = header & 31
        if 0 < type_len <= DATA_MAX_TYPE_LEN:
            ts += header >> 5
            data = offset + 4
            offset = data + type_len * 4
        elif type_len == 0:
            ts += header >> 5
            data = offset + 8
            offset = data + ((unpack_u32(page, offset + 4)[0] - 4 + 3) & ~3)
        elif type_len == TIME_EXTEND:
            ts += (unpack_u32(page, offset + 4)[0] << 27) + (header >> 5)
            offset += 8
            continue
        elif type_len == TIME_STAMP:
            ts = ((unpack_u32(page, offset + 4)[0] << 27) | (header >> 5)) | (ts & TS_MSB)
            offset += 8
            continue
        else:  # padding: to the end of the page, or a discarded event of the length that follows
            if header >> 5 == 0:
                break
            ts += header >> 5
            offset += 4 + unpack_u32(page, offset + 4)[0]
            continue
        if offset > end:
            break
        event_type, tid = common(page, data)
        entry = decoders.get(event_type)
        if entry is None:
            foreign += 1
            continue
        append((entry[0], ts, cpu, tid, None, entry[1](page, data)))
    stats.foreign += foreign
    return lost


class RawReader:
    """The instance's per-CPU trace_pipe_raw files, read in passes that yield one time-ordered stream."""

    def __init__(self, instance_dir, tracefs_root, stats, clock_ns=None):
        self.page_size = check_layout(tracefs_root, instance_dir)
        if clock_ns is None:
            with open(os.path.join(instance_dir, "trace_clock")) as handle:
                selected = re.search(r"\[([^\]]+)\]", handle.read())
            if selected is None or selected.group(1) != CLOCK:
                raise RawFormatError("the instance's trace clock is not %r: passes could not be cut in time" % CLOCK)
        self.decoders = load_decoders(instance_dir)
        self.stats = stats
        self.clock_ns = clock_ns or (lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        self.fds = []
        per_cpu = os.path.join(instance_dir, "per_cpu")
        for name in sorted(os.listdir(per_cpu), key=lambda n: int(n[3:]) if n[3:].isdigit() else -1):
            if re.match(r"^cpu\d+$", name):
                fd = os.open(os.path.join(per_cpu, name, "trace_pipe_raw"), os.O_RDONLY | os.O_NONBLOCK)
                self.fds.append((int(name[3:]), fd))
        self.held = []  # events younger than the last pass's start, for the next pass

    def close(self):
        for _cpu, fd in self.fds:
            os.close(fd)
        self.fds = []

    def read_pass(self, everything=False):
        """Every page the CPUs hold now, decoded and merged: the events older than the pass's start (all of
        them when everything is true: at the end). Returns (events, pages read)."""
        cutoff = self.clock_ns() - HOLD_BACK_NS
        stats = self.stats
        events = self.held
        self.held = []
        runs = 1 if events else 0
        pages = 0
        for cpu, fd in self.fds:
            before = len(events)
            while True:
                try:
                    page = os.read(fd, self.page_size)
                except BlockingIOError:
                    break
                if not page:
                    break
                pages += 1
                stats.bytes += len(page)
                mark = len(events)
                try:
                    lost = decode_page(page, cpu, self.decoders, events, stats)
                except struct.error:
                    stats.malformed += 1  # a page shorter than its header says (never from the kernel)
                    continue
                if lost:
                    stats.lost_events += max(lost, 0)
                    next_ts = events[mark][1] if len(events) > mark else None
                    stats.lost_markers.append((cpu, lost if lost > 0 else None, next_ts))
            if len(events) > before:
                runs += 1
                if cpu not in stats.first_ts_per_cpu:
                    stats.first_ts_per_cpu[cpu] = events[before][1]
        if runs > 1:
            events.sort(key=_TS)  # each CPU's run is in order already: the sort merges them
        if not everything and events and events[-1][1] > cutoff:
            split = _first_after(events, cutoff)
            self.held = events[split:]
            events = events[:split]
        if events:
            stats.events += len(events)
            stats.lines += len(events)
            stats.last_ts = events[-1][1]
        return events, pages


def _first_after(events, cutoff):
    low, high = 0, len(events)
    while low < high:
        middle = (low + high) // 2
        if events[middle][1] > cutoff:
            high = middle
        else:
            low = middle + 1
    return low
