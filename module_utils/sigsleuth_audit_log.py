# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Reading audit.log and its rotations. Standard library only; Python 3.9+.
"""Stream audit.log and its rotations into ``AuditEvent`` objects, with loss accounting.

``iter_audit_events(log_file_or_paths, since_ns=..., stats=AuditStats())`` reads audit.log and its
rotations (audit.log.N ... audit.log.1, audit.log) oldest first, groups records into events by the
``msg=audit(SECONDS.MS:SERIAL)`` stamp (records of concurrent events interleave; an event is complete at its
EOE record, when records SERIAL_WINDOW serials or TIME_WINDOW_NS later have been seen, or at the end), and
yields one event per kill-family / exec / fork syscall. Memory is bounded by that window, not by the file.

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

# Grouping window: an event is complete once a record this many serials (or this much time) later is seen.
SERIAL_WINDOW = 1000
TIME_WINDOW_NS = 2_000_000_000  # auditd's own end_of_event_timeout default
MAX_PENDING = 4096  # hard cap on events being assembled at once
# Audit stamps come from the coarse clock: accept records this much before since_ns.
SINCE_SLACK_NS = 20_000_000
CHUNK = 1 << 20
MAX_LINE = 1 << 16  # the kernel caps a record at ~9 KB; longer lines are garbage
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
        self.malformed_lines = 0     # not an audit record, or a broken header
        self.truncated_lines = 0     # a last line without its newline (being written, or cut)
        self.events = 0              # events yielded
        self.foreign_events = 0      # complete syscall events of other rules (other keys, other syscalls)
        self.incomplete_events = 0   # records grouped under a stamp with no SYSCALL record
        self.before_since = 0        # records older than since_ns (skipped)
        self.forced_completions = 0  # events closed early because MAX_PENDING were open
        self.max_pending = 0         # most events being assembled at once (memory is bounded by this)
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


# One record per line: [node=NAME ]type=TYPE msg=audit(SECONDS.MS:SERIAL):BODY. Matched a chunk at a time,
# so the per-line work is done in C; lines that do not match are counted as malformed.
_RECORD = re.compile(rb"^(?:node=\S+ )?type=(\S+) msg=audit\(([0-9.:]+)\):(.*)$", re.M)


def _chunks(handle, stats):
    """(text, line count) of complete lines, read CHUNK bytes at a time; memory bounded by CHUNK."""
    carry = b""
    skipping = False  # inside an over-long line: drop until its newline
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        stats.bytes += len(chunk)
        if carry:
            chunk = carry + chunk
        end = chunk.rfind(b"\n")
        if end < 0:
            carry = chunk
        else:
            carry = chunk[end + 1:]
            chunk = chunk[:end + 1]
            if skipping:
                chunk = chunk[chunk.find(b"\n") + 1:]
                skipping = False
            if chunk:
                yield chunk, chunk.count(b"\n")
        if len(carry) > MAX_LINE:
            stats.malformed_lines += 1
            carry = b""
            skipping = True
    if carry and not skipping:
        stats.truncated_lines += 1


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
    keys = frozenset(keys)
    syscalls = frozenset(syscalls)
    if paths_or_log_file is None:
        try:
            paths_or_log_file = read_log_file_setting()
        except SigsleuthError as exc:
            stats.errors.append(exc.msg)
            return
    if isinstance(paths_or_log_file, (str, bytes, os.PathLike)):
        log_file = os.fsdecode(paths_or_log_file)
        entries = audit_log_paths(log_file)
        if not any(index == 0 for _, index in entries):
            stats.errors.append("audit log %s does not exist" % log_file)
    else:
        log_file = None
        entries = [(os.fsdecode(path), None) for path in paths_or_log_file]
    cutoff = None if since_ns is None else since_ns - SINCE_SLACK_NS
    skipped_old = False

    # Open everything first: a rotation renames files under us, but open descriptors keep their content.
    opened = []
    seen = set()
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

    state = _ParseState(stats, keys, syscalls, cutoff)
    try:
        while opened:
            for handle, raw, info in opened:
                try:
                    for event in state.feed(handle, info["path"]):
                        yield event
                except OSError as exc:
                    stats.errors.append("reading %s failed: %s" % (info["path"], exc))
                finally:
                    raw.close()
            opened = []
            if log_file is None or not follow_rotation:
                break
            # Files that appeared since we listed the directory hold newer records (auditd rotated).
            for path, index in audit_log_paths(log_file):
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
        for event in state.finish():
            yield event
    finally:
        for _, raw, _ in opened:
            raw.close()
        if since_ns is not None:
            if skipped_old:
                stats.covers_since = True
            elif stats.earliest_ns is not None:
                stats.covers_since = stats.earliest_ns <= since_ns
            else:
                stats.covers_since = False


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
    """Grouping of records into events across the files of one read."""

    def __init__(self, stats, keys, syscalls, cutoff):
        self.stats = stats
        self.keys = keys
        self.syscalls = syscalls
        self.cutoff = cutoff
        self.pending = {}  # stamp bytes -> [serial, time_ns, records, source]

    def feed(self, handle, source):
        """Yield the events completed while reading one file."""
        stats = self.stats
        pending = self.pending
        cutoff = self.cutoff
        wanted = _WANTED
        complete = self._complete
        last_stamp = None
        last = None  # the pending entry of last_stamp, or None when its records are skipped
        lines_seen = malformed = records = ignored = before = 0
        earliest, latest = stats.earliest_ns, stats.latest_ns
        most = stats.max_pending
        try:
            for chunk, count in _chunks(handle, stats):
                lines_seen += count
                found = _RECORD.findall(chunk)
                malformed += count - len(found)
                for rtype, stamp, body in found:
                    if rtype not in wanted:
                        ignored += 1
                        if earliest is None or rtype == b"CONFIG_CHANGE" or rtype[:7] == b"DAEMON_":
                            stats.earliest_ns, stats.latest_ns = earliest, latest
                            self._note(rtype, stamp, body)
                            earliest, latest = stats.earliest_ns, stats.latest_ns
                        continue
                    if stamp == last_stamp:
                        if last is not None:
                            last[2].append((rtype, body))
                            records += 1
                            if rtype == b"EOE":
                                event = complete(stamp)
                                last_stamp = last = None
                                if event is not None:
                                    yield event
                        continue
                    parsed = _parse_stamp(stamp)
                    if parsed is None:
                        malformed += 1
                        continue
                    time_ns, serial = parsed
                    if earliest is None or time_ns < earliest:
                        earliest = time_ns
                    if latest is None or time_ns > latest:
                        latest = time_ns
                    last_stamp = stamp
                    if cutoff is not None and time_ns < cutoff:
                        before += 1
                        last = None
                        continue
                    records += 1
                    last = pending.get(stamp)
                    if last is None:
                        if pending:
                            oldest = pending[next(iter(pending))]
                            if (serial - oldest[0] > SERIAL_WINDOW or oldest[0] - serial > SERIAL_WINDOW
                                    or time_ns - oldest[1] > TIME_WINDOW_NS or len(pending) >= MAX_PENDING):
                                for event in self._expire(serial, time_ns):
                                    yield event
                        last = [serial, time_ns, [], source]
                        pending[stamp] = last
                        if len(pending) > most:
                            most = len(pending)
                    last[2].append((rtype, body))
                    if rtype == b"EOE":
                        event = complete(stamp)
                        last_stamp = last = None
                        if event is not None:
                            yield event
        finally:
            stats.lines += lines_seen
            stats.malformed_lines += malformed
            stats.records += records
            stats.ignored_records += ignored
            stats.before_since += before
            stats.earliest_ns, stats.latest_ns = earliest, latest
            stats.max_pending = most

    def _expire(self, serial, time_ns):
        """Complete the oldest pending events that the window has passed; returns a list."""
        pending = self.pending
        done = []
        while pending:
            stamp = next(iter(pending))
            entry = pending[stamp]
            in_window = abs(serial - entry[0]) <= SERIAL_WINDOW and time_ns - entry[1] <= TIME_WINDOW_NS
            if in_window and len(pending) < MAX_PENDING:
                break
            if in_window:
                self.stats.forced_completions += 1
            event = self._complete(stamp)
            if event is not None:
                done.append(event)
        return done

    def _complete(self, stamp):
        entry = self.pending.pop(stamp, None)
        if entry is None:
            return None
        return build_event(entry[0], entry[1], entry[2], self.keys, self.syscalls, self.stats, entry[3])

    def finish(self):
        for stamp in list(self.pending):
            event = self._complete(stamp)
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
