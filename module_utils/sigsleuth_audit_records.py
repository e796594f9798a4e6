# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Audit records into events: field decoding and event assembly. Standard library only; Python 3.9+.
"""One ``AuditEvent`` per audited syscall, assembled from the records that share its stamp.

Values a process chooses (comm, exe, cwd, argv, proctitle, key) are written by the kernel quoted or
hex-encoded and never contain a space, so splitting records on spaces cannot be shifted by a hostile name.
"""

from __future__ import annotations

import collections
import re

from ansible.module_utils.sigsleuth_audit_rules import ARCHES, syscall_name
from ansible.module_utils.sigsleuth_vocabulary import (
    FORK_SYSCALLS, KILL_SYSCALLS_SIGNAL_IN_A1, KILL_SYSCALLS_SIGNAL_IN_A2, decode_name,
)

IDENTITY_FIELDS = ("uid", "auid", "euid", "ses", "tty", "cwd")
UNSET_ID = 4294967295  # (uid_t)-1: auid/ses of a process that never logged in
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_KILL_A1, _KILL_A2, _FORKS = (frozenset(KILL_SYSCALLS_SIGNAL_IN_A1), frozenset(KILL_SYSCALLS_SIGNAL_IN_A2),
                              frozenset(FORK_SYSCALLS))

EVENT_FIELDS = (
    "serial", "time_ns", "key", "keys", "syscall", "syscall_nr", "arch", "abi", "success", "exit",
    "pid", "ppid", "uid", "auid", "euid", "suid", "gid", "egid", "ses", "tty", "comm", "exe", "cwd",
    "argv", "argv_source", "argc", "argv_complete", "proctitle", "obj_pids", "args", "signal",
    "target_pid", "target_tid", "child_pid", "records", "source",
)


class AuditEvent(collections.namedtuple("AuditEvent", EVENT_FIELDS)):
    """One audited syscall, assembled from its records (immutable).

    serial, time_ns     the stamp: event serial and CLOCK_REALTIME ns (ms precision, coarse clock)
    key, keys           the rule key that matched (ours when one of the keys is ours) and all of them
    syscall, syscall_nr name ("kill", "execve", ...; None when unknown) and number for its arch
    arch, abi           "x86_64"/"i386"/"aarch64"/"arm" (hex for others) and "b64"/"b32"
    success, exit       bool and the return value (negative errno on failure; the child pid for fork)
    pid, ppid           thread group id of the caller and its parent *at syscall exit* (an adopted
                        process shows its reaper here, not its fork parent)
    uid auid euid suid gid egid ses   ints; auid/ses None when unset (never logged in)
    tty                 "pts0" or None
    comm, exe, cwd      str; comm/exe after the syscall (the new image for execve)
    argv, argv_source   list of str from the EXECVE records ("execve"), else from the 128-byte
                        PROCTITLE ("proctitle"), else None; argc from EXECVE; argv_complete False
                        when pieces were missing or argv came from proctitle
    proctitle           the PROCTITLE argv (decoded only when there was no EXECVE record), or None
    obj_pids            kill targets: [{"pid", "auid", "uid", "ses", "comm"}] from OBJ_PID records
    args                (a0, a1, a2, a3) as unsigned ints
    signal              the signal number of a kill-family call (a1, or a2 for tgkill and
                        rt_tgsigqueueinfo), else None
    target_pid          kill: a0 as signed pid (negative = process group, -1 = all); tgkill and
                        rt_(tg)sigqueueinfo: the tgid; pidfd_send_signal: the first OBJ_PID
    target_tid          tkill/tgkill/rt_tgsigqueueinfo: the thread id
    child_pid           fork/vfork/clone/clone3: the new pid (or tid, for a thread)
    records, source     how many records made the event, and the file it was read from
    """

    __slots__ = ()

    def to_dict(self):
        return dict(zip(self._fields, self))

    def identity(self):
        """What audit says of the caller's identity: uid, auid, euid, ses, tty, cwd (those it recorded)."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS if getattr(self, name) is not None}

    def victims(self):
        """(pid, name at the kill) of each target; the name is None when audit gave no OBJ_PID record."""
        targets = [(entry.get("pid"), entry.get("comm")) for entry in self.obj_pids or () if entry.get("pid")]
        if not targets and self.target_pid and self.target_pid > 0:
            targets = [(self.target_pid, None)]
        return targets

    def witness(self):
        """The report's ``audit`` record of a kill this event witnessed (time_ns still CLOCK_REALTIME ns)."""
        return {"serial": self.serial, "time_ns": self.time_ns, "key": self.key, "syscall": self.syscall,
                "ppid": self.ppid, "exe": self.exe}


_new_event = tuple.__new__  # AuditEvent from a complete tuple, without namedtuple's per-field __new__



def _untrusted(value):
    """A kernel-escaped string value as bytes: "quoted", or hex when it had a space, quote or control byte."""
    if value[:1] == b'"':
        return value[1:-1] if len(value) > 1 and value[-1:] == b'"' else value[1:]
    if value in (b"(null)", b"(none)", b""):
        return None
    if len(value) % 2 == 0 and _HEX.issuperset(value):
        return bytes.fromhex(value.decode("ascii"))
    return value  # neither: keep what the log says


def record_text(value):
    if value is None:
        return None
    if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1:
        return value[1:-1].decode("utf-8", "backslashreplace")
    raw = _untrusted(value)
    return decode_name(raw) if raw is not None else None


def _int(value, base=10):
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        return None


def record_id(value):
    number = _int(value)
    if number is None or number == UNSET_ID or number == -1:
        return None
    return number


_TOKEN = re.compile(rb"(?<!\S)([^\s=]+)=(\S*)")


def record_fields(body):
    """key=value tokens of a record body (the part before any 0x1d enrichment) as a dict of bytes.

    Every value the kernel writes is a single token (strings a process controls are quoted without
    spaces or hex-encoded), so a token boundary can never be moved by a name. The first of a
    duplicated key wins.
    """
    fields = {}
    for key, value in _TOKEN.findall(body.partition(b"\x1d")[0]):
        if key not in fields:
            fields[key] = value
    return fields


# The SYSCALL record as the kernel writes it (audit_log_exit); anything else takes the generic path.
_SYSCALL_RE = re.compile(
    rb" ?arch=(\S+) syscall=(\S+) (?:success=(\S+) exit=(\S+) )?a0=(\S+) a1=(\S+) a2=(\S+) a3=(\S+) "
    rb"items=\S+ ppid=(\S+) pid=(\S+) auid=(\S+) uid=(\S+) gid=(\S+) euid=(\S+) suid=(\S+) fsuid=\S+ "
    rb"egid=(\S+) sgid=\S+ fsgid=\S+ tty=(\S+) ses=(\S+) comm=(\S+) exe=(\S+)(?: subj=\S+)? key=(\S+)\s*$")
_SYSCALL_KEYS = (b"arch", b"syscall", b"success", b"exit", b"a0", b"a1", b"a2", b"a3", b"ppid", b"pid",
                 b"auid", b"uid", b"gid", b"euid", b"suid", b"egid", b"tty", b"ses", b"comm", b"exe", b"key")
_ARCH_CODES = {}
_SYSCALL_CACHE = {}  # (arch bytes, syscall bytes) -> (arch, abi, number, name)


def _arch(value):
    """arch=c000003e -> ("x86_64", "b64", 0xc000003e), cached."""
    known = _ARCH_CODES.get(value)
    if known is None:
        code = _int(value, 16)
        if code is None:
            known = (None, None, None)
        else:
            known = (ARCHES.get(code, "%x" % code), "b64" if code & 0x80000000 else "b32", code)
        if len(_ARCH_CODES) < 64:
            _ARCH_CODES[value] = known
    return known


def _signed32(value):
    if value is None:
        return None
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _assemble_execve(bodies):
    """(argv, argc, complete) from one or more EXECVE records: argc, aN, and aN_len with aN[i] pieces."""
    if len(bodies) == 1:  # the usual single record "argc=N a0=.. a1=.." (the kernel writes them in order)
        body = bodies[0]
        tokens = body.partition(b"\x1d")[0].split()
        if tokens and tokens[0][:5] == b"argc=" and b"[" not in body and tokens[0][5:] == b"%d" % (len(tokens) - 1):
            values = [token.partition(b"=") for token in tokens[1:]]
            if all(key[:1] == b"a" for key, _, _ in values):
                return ([(value[1:-1] if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1 else (_untrusted(value) or b"")).decode(
                    "utf-8", "backslashreplace") for _, _, value in values], len(values), True)
    argc = None
    whole = {}
    pieces = {}
    for body in bodies:
        for key, value in _TOKEN.findall(body.partition(b"\x1d")[0]):
            if key == b"argc":
                argc = _int(value)
            elif key[:1] == b"a":
                name = key[1:]
                if name[-1:] == b"]":
                    index, _, part = name[:-1].partition(b"[")
                    index, part = _int(index), _int(part)
                    if index is not None and part is not None:
                        pieces.setdefault(index, {})[part] = _untrusted(value) or b""
                elif name.isdigit():
                    whole[int(name)] = value[1:-1] if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1 \
                        else (_untrusted(value) or b"")
                # aN_len: the pieces carry the data
    if argc is None and not whole and not pieces:
        return None, None, False
    count = max(max(whole, default=-1), max(pieces, default=-1)) + 1
    if argc is not None:
        count = min(count, argc)
    complete = argc is not None and count == argc
    argv = []
    for index in range(count):
        value = whole.get(index)
        if value is None:
            parts = pieces.get(index)
            if parts is None:
                value, complete = b"", False
            else:
                order = sorted(parts)
                if order != list(range(len(order))):
                    complete = False
                value = b"".join(parts[i] for i in order)
        argv.append(value.decode("utf-8", "backslashreplace"))  # as decode_name, without a call per argument
    return argv, argc, complete


def build_event(serial, time_ns, records, keys, syscalls, stats, source):
    syscall_body = None
    execve = []
    cwd = title = None
    obj_pids = []
    for rtype, body in records:
        if rtype == b"SYSCALL":
            if syscall_body is None:
                syscall_body = body
        elif rtype == b"EXECVE":
            execve.append(body)
        elif rtype == b"CWD":
            cwd = body
        elif rtype == b"PROCTITLE":
            title = body
        elif rtype == b"OBJ_PID":
            obj_pids.append(body)
    if syscall_body is None:
        stats.incomplete_events += 1
        return None
    raw, _, enriched = syscall_body.partition(b"\x1d")
    match = _SYSCALL_RE.match(raw)
    if match is not None:
        values = match.groups()
    else:
        fields = record_fields(raw)
        values = tuple(fields.get(key) for key in _SYSCALL_KEYS)
    (arch_v, nr_v, success_v, exit_v, a0, a1, a2, a3, ppid_v, pid_v, auid_v, uid_v, gid_v, euid_v, suid_v,
     egid_v, tty_v, ses_v, comm_v, exe_v, key_v) = values

    known = _SYSCALL_CACHE.get((arch_v, nr_v))
    if known is None:
        arch, abi, _ = _arch(arch_v) if arch_v is not None else (None, None, None)
        nr = _int(nr_v)
        known = (arch, abi, nr, syscall_name(arch, nr))
        if known[3] is not None and len(_SYSCALL_CACHE) < 256:
            _SYSCALL_CACHE[(arch_v, nr_v)] = known
    arch, abi, nr, name = known
    if name is None and enriched:  # ENRICHED logs name every syscall after the 0x1d separator
        at = enriched.find(b"SYSCALL=")
        if at >= 0:
            name = enriched[at + 8:].split(None, 1)[0].decode("ascii", "replace") or None
    if key_v is not None and key_v[:1] == b'"' and key_v[-1:] == b'"' and len(key_v) > 1:
        raw_key = key_v[1:-1]
    else:
        raw_key = _untrusted(key_v) if key_v is not None else None
    if raw_key is None:
        event_keys = []
        key = None
    elif b"\x01" in raw_key:  # several keys on one rule
        event_keys = [decode_name(k) for k in raw_key.split(b"\x01")]
        key = next((k for k in event_keys if k in keys), event_keys[0])
    else:
        key = decode_name(raw_key)
        event_keys = [key]
    if key not in keys and name not in syscalls:
        stats.foreign_events += 1
        return None

    try:  # the common case in one go; a damaged number falls back to field-by-field
        args = (int(a0, 16), int(a1, 16), int(a2, 16), int(a3, 16))
        exit_value = int(exit_v) if exit_v is not None else None
        pid, ppid = int(pid_v), int(ppid_v)
        uid, auid, euid, suid, gid, egid, ses = (int(uid_v), int(auid_v), int(euid_v), int(suid_v), int(gid_v),
                                                 int(egid_v), int(ses_v))
        if auid == UNSET_ID:
            auid = None
        if ses == UNSET_ID:
            ses = None
    except (TypeError, ValueError):
        args = (_int(a0, 16), _int(a1, 16), _int(a2, 16), _int(a3, 16))
        exit_value, pid, ppid = _int(exit_v), _int(pid_v), _int(ppid_v)
        uid, auid, euid, suid, gid, egid, ses = (_int(uid_v), record_id(auid_v), _int(euid_v), _int(suid_v),
                                                 _int(gid_v), _int(egid_v), record_id(ses_v))
    success = success_v == b"yes" if success_v is not None else None
    signal = target_pid = target_tid = child_pid = None
    if name in _KILL_A1:
        signal = args[1]
        if name == "kill":
            target_pid = _signed32(args[0])
        elif name == "tkill":
            target_tid = args[0]
        elif name == "rt_sigqueueinfo":
            target_pid = args[0]
    elif name in _KILL_A2:
        signal = args[2]
        target_pid, target_tid = args[0], args[1]
    elif name in _FORKS and success and exit_value:
        child_pid = exit_value

    targets = []
    for body in obj_pids:
        f = record_fields(body)
        targets.append({"pid": _int(f.get(b"opid")), "auid": record_id(f.get(b"oauid")), "uid": record_id(f.get(b"ouid")),
                        "ses": record_id(f.get(b"oses")), "comm": record_text(f.get(b"ocomm"))})
    if name == "pidfd_send_signal" and targets:
        target_pid = targets[0]["pid"]

    if cwd is not None:
        value = cwd.partition(b"\x1d")[0].strip()
        cwd = record_text(value[4:]) if value[:4] == b"cwd=" else record_text(record_fields(cwd).get(b"cwd"))
    proctitle = None
    if execve:
        argv, argc, complete = _assemble_execve(execve)
        argv_source = "execve" if argv is not None else None
    else:
        argv, argc, complete, argv_source = None, None, False, None
    if argv is None and title is not None:
        raw_title = _untrusted(record_fields(title).get(b"proctitle", b""))
        if raw_title:
            proctitle = [decode_name(part) for part in raw_title.rstrip(b"\0").split(b"\0")]
            argv, argv_source, complete = proctitle, "proctitle", False  # the kernel keeps 128 bytes

    tty = tty_v.decode("ascii", "backslashreplace") if tty_v not in (None, b"(none)") else None
    stats.events += 1
    return _new_event(AuditEvent, (
        serial, time_ns, key, event_keys, name, nr, arch, abi, success, exit_value, pid, ppid, uid, auid, euid,
        suid, gid, egid, ses, tty, record_text(comm_v), record_text(exe_v), cwd, argv, argv_source, argc, complete,
        proctitle, targets, args, signal, target_pid, target_tid, child_pid, len(records), source))

