# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Audit records into events: field decoding and event assembly. Standard library only; Python 3.9+.
"""One ``AuditEvent`` per audited syscall, assembled from the records that share its stamp.

Values a process chooses (comm, exe, cwd, argv, proctitle, key) are written by the kernel quoted or
hex-encoded and never contain a space, so splitting records on spaces cannot be shifted by a hostile name.
They become text through vocabulary.decode_name, which escapes what is not UTF-8 and every backslash.
Log converters quote values the kernel writes bare (success="yes", tty="(none)"): those are read too.
"""

from __future__ import annotations

import binascii
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
    "target_pid", "target_tid", "child_pid", "records", "source", "node", "forced",
)
# Fields added after the first release take these defaults, so events built by field name keep working.
_LATER_FIELD_DEFAULTS = (None, False)  # node, forced


class AuditEvent(collections.namedtuple("AuditEvent", EVENT_FIELDS, defaults=_LATER_FIELD_DEFAULTS)):
    """One audited syscall, assembled from its records (immutable).

    serial, time_ns     the stamp: event serial and CLOCK_REALTIME ns (ms precision, coarse clock)
    key, keys           the rule key that matched (ours when one of the keys is ours) and all of them
    syscall, syscall_nr name ("kill", "execve", ...; None when unknown) and number for its arch
    arch, abi           "x86_64"/"i386"/"aarch64"/"arm" (hex for others) and "b64"/"b32"
    success, exit       bool and the return value (negative errno on failure; the child pid for fork);
                        success is None when the record has no readable success= value
    pid, ppid           thread group id of the caller and its parent *at syscall exit* (an adopted
                        process shows its reaper here, not its fork parent)
    uid auid euid suid gid egid ses   ints; auid/ses None when unset (never logged in)
    tty                 "pts0" or None
    comm, exe, cwd      str (decode_name's encoding); comm/exe after the syscall (the new image for execve)
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
    node                the host's node= name in a log that gathers several hosts, else None
    forced              True when the event was closed before its records could all arrive (too many
                        events open at once): a record logged later is missing from it
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


# ---------------------------------------------------------------- values

def _untrusted(value):
    """A kernel-escaped string value as bytes: "quoted", or hex when it had a space, quote or control byte."""
    if value[:1] == b'"':
        return value[1:-1] if len(value) > 1 and value[-1:] == b'"' else value[1:]
    if value in (b"(null)", b"(none)", b""):
        return None
    if len(value) % 2 == 0 and _HEX.issuperset(value):
        return binascii.a2b_hex(value)
    if value[-1:] == b'"' and _HEX.issuperset(value[:-1]) and len(value) % 2:
        return binascii.a2b_hex(value[:-1])  # hex with a stray closing quote, as some logs have after key=
    return value  # neither: keep what the log says


def record_text(value):
    """A string value (comm, exe, cwd, key, ...) as text in decode_name's encoding; None when unset."""
    if value is None:
        return None
    if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1:
        return decode_name(value[1:-1])
    raw = _untrusted(value)
    return decode_name(raw) if raw is not None else None


def _unquoted(value):
    """A value the kernel writes bare, without the quotes a log converter may have added."""
    if value is not None and value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1:
        return value[1:-1]
    return value


def _int(value, base=10):
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 2:
            return _int(value[1:-1], base)  # quoted by a log converter
        return None


def record_id(value):
    number = _int(value)
    if number is None or number == UNSET_ID or number == -1:
        return None
    return number


def _decode_all(raws):
    """decode_name of each piece in one call: joined on NUL, which no argument or name can hold."""
    joined = b"\0".join(raws)
    if joined.count(0) == len(raws) - 1:  # 0: NUL
        return decode_name(joined).split("\0")
    return [decode_name(raw) for raw in raws]  # a damaged log with NUL inside a value


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


# ---------------------------------------------------------------- the SYSCALL record

# The SYSCALL record as the kernel writes it (audit_log_exit); anything else takes the generic path.
_SYSCALL_RE = re.compile(
    rb" ?arch=(\S+) syscall=(\S+) (?:success=(\S+) exit=(\S+) )?a0=(\S+) a1=(\S+) a2=(\S+) a3=(\S+) "
    rb"items=\S+ ppid=(\S+) pid=(\S+) auid=(\S+) uid=(\S+) gid=(\S+) euid=(\S+) suid=(\S+) fsuid=\S+ "
    rb"egid=(\S+) sgid=\S+ fsgid=\S+ tty=(\S+) ses=(\S+) comm=(\S+) exe=(\S+)(?: subj=\S+)? key=(\S+)\s*$")
_SYSCALL_KEYS = (b"arch", b"syscall", b"success", b"exit", b"a0", b"a1", b"a2", b"a3", b"ppid", b"pid",
                 b"auid", b"uid", b"gid", b"euid", b"suid", b"egid", b"tty", b"ses", b"comm", b"exe", b"key")
_SUCCESS = {b"yes": True, b"no": False, b'"yes"': True, b'"no"': False}
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


def _syscall_of(arch_v, nr_v, enriched):
    """(arch, abi, number, name) of a SYSCALL record not in the cache; the name is None when neither the
    table nor the log knows it (only known names are cached)."""
    arch, abi, _code = _arch(arch_v) if arch_v is not None else (None, None, None)
    nr = _int(nr_v)
    known = (arch, abi, nr, syscall_name(arch, nr))
    if known[3] is not None and len(_SYSCALL_CACHE) < 256:
        _SYSCALL_CACHE[(arch_v, nr_v)] = known
    if known[3] is None and enriched:  # ENRICHED logs name every syscall after the 0x1d separator
        at = enriched.find(b"SYSCALL=")
        if at >= 0:
            name = enriched[at + 8:].split(None, 1)[0].decode("ascii", "replace") or None
            return known[:3] + (name,)
    return known


def _rule_keys(key_v, keys):
    """(the key that matters, all keys) of key=: ours when one of several keys on the rule is ours."""
    if key_v is None:
        return None, []
    if key_v[:1] == b'"' and key_v[-1:] == b'"' and len(key_v) > 1:
        raw_key = key_v[1:-1]
    else:
        raw_key = _untrusted(key_v)
        if raw_key is None:
            return None, []
    if b"\x01" in raw_key:  # several keys on one rule
        event_keys = [decode_name(k) for k in raw_key.split(b"\x01")]
        return next((k for k in event_keys if k in keys), event_keys[0]), event_keys
    key = decode_name(raw_key)
    return key, [key]


def _numbers_one_by_one(values, stats):
    """(args, exit, pid, ppid, uid, auid, euid, suid, gid, egid, ses) of a SYSCALL record with a damaged,
    quoted or missing number, field by field: what is there but cannot be read is None (counted)."""
    (_arch_v, _nr_v, _success_v, exit_v, a0, a1, a2, a3, ppid_v, pid_v, auid_v, uid_v, gid_v, euid_v, suid_v, egid_v,
     _tty_v, ses_v, _comm_v, _exe_v, _key_v) = values
    raws = (a0, a1, a2, a3, exit_v, pid_v, ppid_v, uid_v, auid_v, euid_v, suid_v, gid_v, egid_v, ses_v)
    numbers = [_int(raw, 16) for raw in raws[:4]] + [_int(raw) for raw in raws[4:]]
    stats.damaged_values += sum(1 for raw, number in zip(raws, numbers) if raw is not None and number is None)
    args = tuple(numbers[:4])
    exit_value, pid, ppid, uid, auid, euid, suid, gid, egid, ses = numbers[4:]
    return (args, exit_value, pid, ppid, uid, None if auid in (UNSET_ID, -1) else auid, euid, suid, gid, egid,
            None if ses in (UNSET_ID, -1) else ses)


def _signed32(value):
    if value is None:
        return None
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _signal_and_target(name, args, success, exit_value):
    """(signal, target_pid, target_tid, child_pid) as the syscall's arguments and result say."""
    if name in _KILL_A1:
        if name == "kill":
            return args[1], _signed32(args[0]), None, None
        if name == "tkill":
            return args[1], None, args[0], None
        if name == "rt_sigqueueinfo":
            return args[1], args[0], None, None
        return args[1], None, None, None  # pidfd_send_signal: the target is its OBJ_PID
    if name in _KILL_A2:
        return args[2], args[0], args[1], None
    if name in _FORKS and success and exit_value:
        return None, None, None, exit_value
    return None, None, None, None


# ---------------------------------------------------------------- the other records

def _sort_records(records):
    """(SYSCALL body, [EXECVE bodies], CWD body, PROCTITLE body, [OBJ_PID bodies]) of one event."""
    syscall_body = cwd = title = None
    execve = []
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
    return syscall_body, execve, cwd, title, obj_pids


def _targets(obj_pids):
    targets = []
    for body in obj_pids:
        f = record_fields(body)
        targets.append({"pid": _int(f.get(b"opid")), "auid": record_id(f.get(b"oauid")),
                        "uid": record_id(f.get(b"ouid")), "ses": record_id(f.get(b"oses")),
                        "comm": record_text(f.get(b"ocomm"))})
    return targets


def _cwd(body):
    value = body.partition(b"\x1d")[0].strip()
    return record_text(value[4:]) if value[:4] == b"cwd=" else record_text(record_fields(body).get(b"cwd"))


def _argv(title):
    """(argv, argv_source, argc, argv_complete, proctitle) from the PROCTITLE, for an event without EXECVE."""
    if title is not None:
        raw_title = _untrusted(record_fields(title).get(b"proctitle", b""))
        if raw_title:
            proctitle = decode_name(raw_title.rstrip(b"\0")).split("\0")
            return proctitle, "proctitle", None, False, proctitle  # the kernel keeps 128 bytes
    return None, None, None, False, None


def _assemble_execve(bodies):
    """(argv, argc, complete) from one or more EXECVE records: argc, aN, and aN_len with aN[i] pieces."""
    # The usual single record "argc=N a0=.. a1=..", in order; no "[" (91: an int is searched for by memchr).
    if len(bodies) == 1:
        body = bodies[0]
        tokens = body.partition(b"\x1d")[0].split()
        if tokens and tokens[0][:5] == b"argc=" and 91 not in body and tokens[0][5:] == b"%d" % (len(tokens) - 1):
            values = [token.partition(b"=") for token in tokens[1:]]
            if all(key[:1] == b"a" for key, _equals, _value in values):
                return (_decode_all([value[1:-1] if value[:1] == b'"' and value[-1:] == b'"' and len(value) > 1
                                     else (_untrusted(value) or b"") for _key, _equals, value in values]),
                        len(values), True)
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
                    index, _bracket, part = name[:-1].partition(b"[")
                    index, part = _int(index), _int(part)
                    if index is not None and part is not None:
                        pieces.setdefault(index, {})[part] = _untrusted(value) or b""
                elif name.isdigit():
                    whole[int(name)] = _untrusted(value) or b""
                # aN_len: the pieces carry the data
    if argc is None and not whole and not pieces:
        return None, None, False
    return _join_pieces(argc, whole, pieces)


def _join_pieces(argc, whole, pieces):
    count = max((*whole, *pieces), default=-1) + 1
    if argc is not None:
        count = min(count, argc)
    complete = argc is not None and count == argc
    raws = []
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
        raws.append(value)
    return (_decode_all(raws) if raws else []), argc, complete


# ---------------------------------------------------------------- the event

def build_event(serial, time_ns, records, keys, syscalls, stats, source, node=None, forced=False):
    """The AuditEvent of one stamp's records; None (counted) without a SYSCALL record or for other rules."""
    syscall_body, execve, cwd, title, obj_pids = _sort_records(records)
    if syscall_body is None:
        stats.incomplete_events += 1
        return None
    raw, _separator, enriched = syscall_body.partition(b"\x1d")
    match = _SYSCALL_RE.match(raw)
    if match is not None:
        values = match.groups()
    else:
        fields = record_fields(raw)
        values = tuple(fields.get(key) for key in _SYSCALL_KEYS)
    (arch_v, nr_v, success_v, _exit_v, _a0, _a1, _a2, _a3, _ppid_v, _pid_v, _auid_v, _uid_v, _gid_v, _euid_v, _suid_v, _egid_v,
     tty_v, _ses_v, comm_v, exe_v, key_v) = values
    known = _SYSCALL_CACHE.get((arch_v, nr_v))
    arch, abi, nr, name = known if known is not None else _syscall_of(arch_v, nr_v, enriched)
    # The usual case without a call: one quoted key (no \x01 between keys; an int is searched for by memchr).
    if key_v is not None and key_v[:1] == b'"' and key_v[-1:] == b'"' and len(key_v) > 1 and 1 not in key_v:
        key = decode_name(key_v[1:-1])
        event_keys = [key]
    else:
        key, event_keys = _rule_keys(key_v, keys)
    if key not in keys and name not in syscalls:
        stats.foreign_events += 1
        return None

    (_arch_v, _nr_v, _success_v, exit_v, a0, a1, a2, a3, ppid_v, pid_v, auid_v, uid_v, gid_v, euid_v, suid_v, egid_v,
     _tty_v, ses_v, _comm_v, _exe_v, _key_v) = values
    try:  # the common case in one go; a damaged, quoted or missing number falls back to field-by-field
        args = (int(a0, 16), int(a1, 16), int(a2, 16), int(a3, 16))
        exit_value = int(exit_v) if exit_v is not None else None
        pid, ppid, uid, auid, euid, suid, gid, egid, ses = (int(pid_v), int(ppid_v), int(uid_v), int(auid_v),
                                                            int(euid_v), int(suid_v), int(gid_v), int(egid_v),
                                                            int(ses_v))
        if auid == UNSET_ID:
            auid = None
        if ses == UNSET_ID:
            ses = None
    except (TypeError, ValueError):
        args, exit_value, pid, ppid, uid, auid, euid, suid, gid, egid, ses = _numbers_one_by_one(values, stats)
    success = _SUCCESS.get(success_v) if success_v is not None else None
    if success is None and success_v is not None:
        stats.damaged_values += 1
    signal, target_pid, target_tid, child_pid = _signal_and_target(name, args, success, exit_value)
    targets = _targets(obj_pids) if obj_pids else []
    if name == "pidfd_send_signal" and targets:
        target_pid = targets[0]["pid"]
    argv = None
    if execve:
        argv, argc, complete = _assemble_execve(execve)
        argv_source, proctitle = "execve", None
    if argv is None:
        argv, argv_source, argc, complete, proctitle = _argv(title)
    if tty_v is not None and tty_v[:1] == b'"':
        tty_v = _unquoted(tty_v)
    tty = tty_v.decode("ascii", "backslashreplace") if tty_v not in (None, b"(none)") else None
    stats.events += 1
    return _new_event(AuditEvent, (
        serial, time_ns, key, event_keys, name, nr, arch, abi, success, exit_value, pid, ppid, uid, auid, euid,
        suid, gid, egid, ses, tty, record_text(comm_v), record_text(exe_v),
        _cwd(cwd) if cwd is not None else None, argv, argv_source, argc, complete, proctitle, targets, args,
        signal, target_pid, target_tid, child_pid, len(records), source, decode_name(node) if node else None,
        forced))
