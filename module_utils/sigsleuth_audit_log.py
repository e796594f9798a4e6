# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Reading audit.log and its rotations. Standard library only; Python 3.9+.
"""Stream audit.log and its rotations into ``AuditEvent`` objects, with loss accounting.

``iter_audit_events(log_file_or_paths, since_ns=..., stats=AuditStats())`` reads audit.log and its
rotations (audit.log.N ... audit.log.1, audit.log) oldest first, groups records into events by their
``[node=NAME ]... msg=audit(SECONDS.MS:SERIAL)`` stamp (records of concurrent events interleave, and a log
that gathers several hosts repeats stamps across nodes), and yields one event per kill-family / exec / fork
syscall. An event is complete at its PROCTITLE record (the kernel writes it last, before EOE) or EOE, once
a record TIME_WINDOW_NS away in time has been read (as ausearch decides), or at the end; with MAX_PENDING
events open at once the oldest is closed early, marked ``forced`` and counted. Memory is bounded by those
open events and MAX_LINE, not by the file.

Timing facts the consumer must know
    * An audit stamp is the syscall *entry* time from the coarse realtime clock (tick resolution, e.g.
      4 ms at HZ=250), written with millisecond precision. Match audit events to ftrace events by pid and
      a time window of about one tick plus 1 ms, never by order.
    * Events are yielded in log order (roughly serial order). A child's execve can be logged before
      the parent's clone() exit record that names it, because the child runs before the parent returns.
    * The kernel gives a task an audit context at fork time only once audit has ever been enabled on
      this boot: processes that already existed when audit was first enabled are never audited (their
      kills are invisible to audit; ftrace still sees them).
"""

from __future__ import annotations

import errno
import gzip
import os
import re

from ansible.module_utils.sigsleuth_audit_records import build_event, record_fields, record_text, record_id
from ansible.module_utils.sigsleuth_audit_rules import OUR_KEYS, OUR_SYSCALLS
from ansible.module_utils.sigsleuth_auditd import read_log_file_setting
from ansible.module_utils.sigsleuth_command import SigsleuthError
from ansible.module_utils.sigsleuth_vocabulary import decode_name

# Grouping: an event is complete once a record this far away in time is read (auditd's own
# end_of_event_timeout default); more than MAX_PENDING open events close the oldest early (forced).
TIME_WINDOW_NS = 2_000_000_000
MAX_PENDING = 4096
# Audit stamps come from the coarse clock: accept records this much before since_ns.
SINCE_SLACK_NS = 20_000_000
CHUNK = 1 << 20
MAX_LINE = 1 << 16  # the kernel caps a record at ~9 KB; longer lines are garbage, dropped and counted
MAX_NOTES = 100

_WANTED = frozenset((b"SYSCALL", b"EXECVE", b"CWD", b"PROCTITLE", b"OBJ_PID", b"EOE"))
_ROTATED = re.compile(r"^\.(\d+)(\.gz)?$")


class AuditStats:
    """What the parser read, skipped and noticed. ``as_dict()`` is ready for the report's ``sources``."""

    def __init__(self):
        self.files = []              # [{"path", "size", "inode", "dev", "mtime_ns", "read", "reason"}]
        self.errors = []             # plain-language problems (missing/unreadable files, ...)
        self.bytes = 0               # bytes read (after decompression)
        self.lines = 0
        self.records = 0             # records of the types we use (SYSCALL, EXECVE, CWD, PROCTITLE, OBJ_PID, EOE)
        self.ignored_records = 0     # well-formed records of other types (PATH, USER_*, AVC, ...)
        self.malformed_lines = 0     # not an audit record, a broken header, or longer than MAX_LINE
        self.overlong_lines = 0      # lines longer than MAX_LINE (also counted as malformed), dropped ...
        self.overlong_bytes = 0      # ... with this many bytes
        self.truncated_lines = 0     # a last line without its newline (being written, or cut)
        self.damaged_values = 0      # SYSCALL values that could not be read (a number, success=): left None
        self.events = 0              # events yielded
        self.foreign_events = 0      # complete syscall events of other rules (other keys, other syscalls)
        self.incomplete_events = 0   # records grouped under a stamp with no SYSCALL record
        self.before_since = 0        # records older than since_ns (skipped)
        self.forced_completions = 0  # events closed early because MAX_PENDING were open (marked forced)
        self.max_pending = 0         # most events being assembled at once (memory is bounded by this)
        self.nodes = []              # node= names seen (a log gathering several hosts), up to MAX_NOTES
        self.earliest_ns = None      # time of the oldest record found in the files read
        self.latest_ns = None        # time of the newest record
        self.covers_since = None     # True when the log reaches back to since_ns (nothing rotated away)
        self.rotations_during_read = 0
        self.rule_changes = []       # CONFIG_CHANGE records about our keys: {"time_ns", "op", "key", "auid", "res"}
        self.daemon_records = []     # DAEMON_* records (auditd start/stop/rotate/abort): {"time_ns", "type"}

    def as_dict(self):
        return {name: (list(value) if isinstance(value, list) else value) for name, value in vars(self).items()}


# ---------------------------------------------------------------- files

def audit_log_paths(log_file):
    """[(path, rotation index)] of a log and its rotations, oldest first: audit.log.N ... .1, audit.log.

    ``.N.gz`` (compressed rotations) are included. Index 0 is the live file.
    """
    directory, base = os.path.split(log_file)
    found = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return []
    for name in names:
        if name == base:
            found.append((0, os.path.join(directory, name)))
        elif name.startswith(base):
            match = _ROTATED.match(name[len(base):])
            if match:
                found.append((int(match.group(1)), os.path.join(directory, name)))
    found.sort(key=lambda item: -item[0])
    return [(path, index) for index, path in found]


def _open(path):
    handle = open(path, "rb")
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=handle, mode="rb"), handle
    return handle, handle


# One record per line: [node=NAME ]type=TYPE msg=audit(SECONDS.MS:SERIAL):BODY (some records, EOE and
# DAEMON_CONFIG among them, have no colon after the stamp: ausearch groups those too). Matched a chunk at a
# time, so the per-line work is done in C; lines that do not match are counted as malformed. Every part is
# bounded so that no line longer than MAX_LINE can match, wherever the reads cut the file.
_NODE_MAX, _TYPE_MAX, _STAMP_MAX = 255, 64, 40
_BODY_MAX = MAX_LINE - len(b"node= type= msg=audit():") - _NODE_MAX - _TYPE_MAX - _STAMP_MAX
_RECORD = re.compile(rb"^(?:node=(\S{1,%d}) )?type=(\S{1,%d}) msg=audit\(([0-9.:]{1,%d})\)(?::|(?= )|$)(.{0,%d})$"
                     % (_NODE_MAX, _TYPE_MAX, _STAMP_MAX, _BODY_MAX), re.M)


def _chunks(handle, stats):
    """(text, line count) of complete lines, read CHUNK bytes at a time; memory bounded by CHUNK + MAX_LINE.

    What is held over from one read to the next never grows past MAX_LINE: a longer line is dropped and
    counted, as _RECORD drops one that a read holds whole.
    """
    carry = b""
    skipping = False  # inside an over-long line: drop up to its newline
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        stats.bytes += len(chunk)
        if skipping:
            end = chunk.find(b"\n")
            stats.overlong_bytes += len(chunk) if end < 0 else end
            if end < 0:
                continue
            stats.lines += 1  # the dropped line ends here
            chunk = chunk[end + 1:]
            skipping = False
        elif carry:
            chunk = carry + chunk
        end = chunk.rfind(b"\n")
        if end < 0:
            carry = chunk
        else:
            carry = chunk[end + 1:]
            chunk = chunk[:end + 1]
            yield chunk, chunk.count(b"\n")
        if len(carry) > MAX_LINE:
            stats.malformed_lines += 1
            stats.overlong_lines += 1
            stats.overlong_bytes += len(carry)
            carry = b""
            skipping = True
    if carry and not skipping:
        stats.truncated_lines += 1


def _count_malformed(chunk, count, stats):
    """Count a chunk's lines that are no record; those longer than MAX_LINE also as over-long."""
    stats.malformed_lines += count
    if len(chunk) > MAX_LINE:
        lengths = [length for length in map(len, chunk.split(b"\n")) if length > MAX_LINE]
        stats.overlong_lines += len(lengths)
        stats.overlong_bytes += sum(lengths)


def iter_audit_events(paths_or_log_file=None, since_ns=None, stats=None, keys=OUR_KEYS, syscalls=OUR_SYSCALLS,
                      follow_rotation=True):
    """Yield AuditEvent objects for our syscalls from an audit log set, oldest first.

    paths_or_log_file: the live log path (default: auditd.conf's log_file) -- its rotations are read
        too, oldest first, and a rotation that happens during the read is followed -- or a list of paths
        read in the given order.
    since_ns: CLOCK_REALTIME ns; records older than this (less SINCE_SLACK_NS, for the coarse audit
        clock) are skipped, and rotated files last written before it are not read at all.
    stats: an AuditStats filled as the read goes (also when the caller stops early).
    keys / syscalls: an event is yielded when its key is in ``keys`` or its syscall in ``syscalls``
        (another rule listed before ours may have matched first and given the event its own key).
    Never raises on file content or configuration: missing or unreadable files, and a log_file setting
    outside /var/log, are noted in ``stats.errors``.
    """
    stats = AuditStats() if stats is None else stats
    log_file, entries = _log_entries(paths_or_log_file, stats)
    if entries is None:
        return
    cutoff = None if since_ns is None else since_ns - SINCE_SLACK_NS
    # Open everything first: a rotation renames files under us, but open descriptors keep their content.
    opened, seen, skipped_old = _open_entries(entries, stats, cutoff)
    state = _ParseState(stats, frozenset(keys), frozenset(syscalls), cutoff)
    try:
        while opened:
            for handle, raw, info in opened:
                try:
                    yield from state.feed(handle, info["path"])
                except OSError as exc:
                    stats.errors.append("reading %s failed: %s" % (info["path"], exc))
                finally:
                    raw.close()
            opened = []
            if log_file is None or not follow_rotation:
                break
            opened = _rotated_meanwhile(log_file, seen, stats)
        yield from state.finish()
    finally:
        for _handle, raw, _info in opened:
            raw.close()
        if since_ns is not None:
            stats.covers_since = skipped_old or (stats.earliest_ns is not None and stats.earliest_ns <= since_ns)


def _log_entries(paths_or_log_file, stats):
    """(the live log or None, [(path, rotation index or None)]); entries None when there is nothing to read."""
    if paths_or_log_file is None:
        try:
            paths_or_log_file = read_log_file_setting()
        except SigsleuthError as exc:
            stats.errors.append(exc.msg)
            return None, None
    if isinstance(paths_or_log_file, (str, bytes, os.PathLike)):
        log_file = os.fsdecode(paths_or_log_file)
        entries = audit_log_paths(log_file)
        if not any(index == 0 for _path, index in entries):
            stats.errors.append("audit log %s does not exist" % log_file)
        return log_file, entries
    return None, [(os.fsdecode(path), None) for path in paths_or_log_file]


def _open_entries(entries, stats, cutoff):
    """([(handle, raw, info)] to read, {(dev, inode)} opened, whether a rotated file older than cutoff held data)."""
    opened = []
    seen = set()
    skipped_old = False
    for path, index in entries:
        item = _open_entry(path, stats)
        if item is None:
            continue
        handle, raw, info = item
        seen.add((info["dev"], info["inode"]))
        if cutoff is not None and info["mtime_ns"] < cutoff - TIME_WINDOW_NS and index not in (None, 0):
            info["read"], info["reason"] = False, "last written before since_ns"
            if info["size"]:
                skipped_old = True
            raw.close()
            continue
        opened.append((handle, raw, info))
    return opened, seen, skipped_old


def _rotated_meanwhile(log_file, seen, stats):
    """Files that appeared since the directory was listed: they hold newer records (auditd rotated)."""
    opened = []
    for path, _index in audit_log_paths(log_file):
        item = _open_entry(path, stats, quiet=True)
        if item is None:
            continue
        handle, raw, info = item
        if (info["dev"], info["inode"]) in seen:
            stats.files.pop()
            raw.close()
            continue
        seen.add((info["dev"], info["inode"]))
        opened.append((handle, raw, info))
    if opened:
        stats.rotations_during_read += 1
    return opened


def _open_entry(path, stats, quiet=False):
    try:
        handle, raw = _open(path)
        st = os.fstat(raw.fileno())
    except OSError as exc:
        if not (quiet and exc.errno == errno.ENOENT):
            stats.errors.append("cannot read audit log %s: %s" % (path, exc.strerror or exc))
        return None
    info = {"path": path, "size": st.st_size, "inode": st.st_ino, "dev": st.st_dev, "mtime_ns": st.st_mtime_ns,
            "read": True, "reason": None}
    stats.files.append(info)
    return handle, raw, info


class _ParseState:
    """Grouping of records into events across the files of one read.

    An open event is a list [serial, time_ns, records, source, (node, stamp)], kept in ``pending`` by its
    (node, stamp) in the order events began.
    """

    def __init__(self, stats, keys, syscalls, cutoff):
        self.stats = stats
        self.keys = keys
        self.syscalls = syscalls
        self.cutoff = cutoff
        self.max_pending = MAX_PENDING
        self.pending = {}
        self.ready = []  # events completed early while a record began a new event, not yet yielded
        self.run = (None, None, None, None)  # (node, stamp, open event or None, ended) of the last record
        self.nodes = set()

    def feed(self, handle, source):
        """Yield the events completed while reading one file."""
        stats = self.stats
        for chunk, count in _chunks(handle, stats):
            stats.lines += count
            found = _RECORD.findall(chunk)
            if len(found) != count:
                _count_malformed(chunk, count - len(found), stats)
            yield from self._group(found, source)

    def _group(self, found, source):
        """Yield the events that one chunk's records complete.

        Records of one event mostly follow each other: a run of records with the stamp of the previous one
        goes straight into its event (or is skipped with it), and only the first record of a run is looked up
        (in _begin). ``ended`` is the type of the record that completed the run's event (None while it is open
        or skipped): after a PROCTITLE, the kernel writes the event's EOE.
        """
        wanted = _WANTED
        stats = self.stats
        ready = self.ready
        last_node, last_stamp, last, ended = self.run
        records = ignored = before = 0
        try:
            for node, rtype, stamp, body in found:
                if rtype not in wanted:
                    ignored += 1
                    if rtype == b"CONFIG_CHANGE" or rtype[:7] == b"DAEMON_" or stats.earliest_ns is None:
                        self._note(rtype, stamp, body)
                    continue
                if stamp == last_stamp and node == last_node:
                    if last is not None:
                        last[2].append((rtype, body))
                        records += 1
                        if rtype == b"PROCTITLE" or rtype == b"EOE":  # the kernel's last records of an event
                            event = self._complete(last)
                            last, ended = None, rtype
                            if event is not None:
                                yield event
                        continue
                    if ended is None:
                        before += 1
                        continue
                    if ended == b"PROCTITLE" and rtype == b"EOE":  # the end of the event its PROCTITLE completed
                        records += 1
                        ended = rtype
                        continue
                    # a record after its event's end: an orphan of its own (counted when it completes)
                last = self._begin(node, stamp, rtype, source)
                last_node, last_stamp = (node, stamp) if last is not False else (None, None)
                ended = None
                if ready:
                    yield from ready
                    del ready[:]
                if last:
                    last[2].append((rtype, body))
                    records += 1
                    if rtype == b"PROCTITLE" or rtype == b"EOE":
                        event = self._complete(last)
                        last, ended = None, rtype
                        if event is not None:
                            yield event
        finally:
            self.run = (last_node, last_stamp, last, ended)
            stats.records += records
            stats.ignored_records += ignored
            stats.before_since += before

    def _begin(self, node, stamp, rtype, source):
        """The open event a record begins or joins; None when its stamp is before since_ns (and so are the
        records that follow with it); False to skip this record alone (a broken stamp, or the EOE of an
        event already complete)."""
        stats = self.stats
        parsed = _parse_stamp(stamp)
        if parsed is None:
            stats.malformed_lines += 1
            return False
        time_ns, serial = parsed
        if stats.earliest_ns is None or time_ns < stats.earliest_ns:
            stats.earliest_ns = time_ns
        if stats.latest_ns is None or time_ns > stats.latest_ns:
            stats.latest_ns = time_ns
        if self.cutoff is not None and time_ns < self.cutoff:
            stats.before_since += 1
            return None
        pending = self.pending
        entry = pending.get((node, stamp))
        if entry is not None:
            return entry
        if rtype == b"EOE":
            stats.records += 1
            return False
        if pending:
            oldest = next(iter(pending.values()))
            if abs(time_ns - oldest[1]) > TIME_WINDOW_NS or len(pending) >= self.max_pending:
                self._expire(time_ns)
        entry = pending[(node, stamp)] = [serial, time_ns, [], source, (node, stamp)]
        if len(pending) > stats.max_pending:
            stats.max_pending = len(pending)
        if node and node not in self.nodes and len(self.nodes) < MAX_NOTES:
            self.nodes.add(node)
            stats.nodes.append(decode_name(node))
        return entry

    def _expire(self, time_ns):
        """Complete the oldest open events that a record at time_ns shows complete, or that must make room."""
        pending = self.pending
        while pending:
            entry = next(iter(pending.values()))
            passed = abs(time_ns - entry[1]) > TIME_WINDOW_NS  # either way: a clock step ends it too
            if not passed and len(pending) < self.max_pending:
                break
            if not passed:
                self.stats.forced_completions += 1
            event = self._complete(entry, forced=not passed)
            if event is not None:
                self.ready.append(event)

    def _complete(self, entry, forced=False):
        if self.pending.pop(entry[4], None) is None:
            return None
        return build_event(entry[0], entry[1], entry[2], self.keys, self.syscalls, self.stats, entry[3],
                           entry[4][0], forced)

    def finish(self):
        for entry in list(self.pending.values()):
            event = self._complete(entry)
            if event is not None:
                yield event

    def _note(self, rtype, stamp, body):
        """Track the oldest record of any type, and remember rule changes and auditd start/stop."""
        parsed = _parse_stamp(stamp)
        if parsed is None:
            return
        time_ns = parsed[0]
        stats = self.stats
        if stats.earliest_ns is None or time_ns < stats.earliest_ns:
            stats.earliest_ns = time_ns
        if stats.latest_ns is None or time_ns > stats.latest_ns:
            stats.latest_ns = time_ns
        if self.cutoff is not None and time_ns < self.cutoff:
            return
        if rtype == b"CONFIG_CHANGE":
            f = record_fields(body)
            key = record_text(f.get(b"key"))
            if key in OUR_KEYS and len(stats.rule_changes) < MAX_NOTES:
                stats.rule_changes.append({"time_ns": time_ns, "op": record_text(f.get(b"op")), "key": key,
                                           "auid": record_id(f.get(b"auid")), "res": record_text(f.get(b"res"))})
        elif rtype[:7] == b"DAEMON_" and len(stats.daemon_records) < MAX_NOTES:
            stats.daemon_records.append({"time_ns": time_ns, "type": rtype.decode("ascii", "replace")})


def _parse_stamp(stamp):
    """b"1795676148.625:546" -> (time_ns, serial) or None."""
    seconds, dot, rest = stamp.partition(b".")
    millis, colon, serial = rest.partition(b":")
    if not (dot and colon and seconds.isdigit() and millis.isdigit() and serial.isdigit()):
        return None
    if len(millis) != 3:
        return None
    return int(seconds) * 1_000_000_000 + int(millis) * 1_000_000, int(serial)
