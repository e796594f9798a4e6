# -*- coding: utf-8 -*-
# Audit side of sigsleuth: rules for the kill family, exec and fork; a streaming audit.log parser.
# Standard library only; Python 3.9+.
"""Audit rules (build, compare, load) and a streaming audit.log parser.

Rules
    ``build_rules()`` returns our rules in the exact text ``auditctl -l`` prints for them, so "which of
    ours are loaded" is a plain comparison with ``our_rules(list_rules())``. Only rules whose key is one
    of ``OUR_KEYS`` are ever touched.

Parser
    ``iter_audit_events(log_file_or_paths, since_ns=..., stats=AuditStats())`` reads audit.log and its
    rotations (audit.log.N ... audit.log.1, audit.log) oldest first, groups records into events by the
    ``msg=audit(SECONDS.MS:SERIAL)`` stamp (records of concurrent events interleave; an event is complete
    at its EOE record, when records SERIAL_WINDOW serials or TIME_WINDOW_NS later have been seen, or at
    the end), and yields one ``AuditEvent`` per kill-family / exec / fork syscall. Memory is bounded by
    that window, not by the file. Values a process chooses (comm, exe, cwd, argv, proctitle, key) are
    written by the kernel quoted or hex-encoded and never contain a space, so splitting records on spaces
    cannot be shifted by a hostile name.

Timing facts the consumer must know
    * An audit stamp is the syscall *entry* time from the coarse realtime clock (tick resolution, e.g.
      4 ms at HZ=250), written with millisecond precision. Match audit events to ftrace events by pid and
      a time window of about one tick plus 1 ms, never by order.
    * Events are yielded in log order (roughly serial order). A child's execve can be logged before
      the parent's clone() exit record that names it, because the child runs before the parent returns.
    * The kernel gives a task an audit context at fork time only once audit has ever been enabled on
      this boot: processes that already existed when audit was first enabled are never audited (their
      kills are invisible to audit; ftrace still sees them). ``audit_status()`` before arming tells
      whether audit was enabled; the module records it.
"""

from __future__ import annotations

import collections
import errno
import gzip
import os
import re
import subprocess
import time

try:
    from ansible.module_utils.sigsleuth_common import decode_name
except ImportError:  # plain import when used outside Ansible (bench, tools)
    from sigsleuth_common import decode_name

KEY_KILL = "sigsleuth_kill"
KEY_EXEC = "sigsleuth_exec"
KEY_FORK = "sigsleuth_fork"
OUR_KEYS = (KEY_KILL, KEY_EXEC, KEY_FORK)

# The signal is a1 for these ...
KILL_SYSCALLS_A1 = ("kill", "tkill", "pidfd_send_signal", "rt_sigqueueinfo")
# ... and a2 for these (a1 is the thread id: a filter on a1 would match tid 9 instead).
KILL_SYSCALLS_A2 = ("tgkill", "rt_tgsigqueueinfo")
KILL_SYSCALLS = KILL_SYSCALLS_A1 + KILL_SYSCALLS_A2
EXEC_SYSCALLS = ("execve", "execveat")
# unshare(CLONE_NEWPID) puts the caller's later children in a new pid namespace, where fork's return value is a
# namespace-local pid: the merge must know, or it would take that pid for a global one.
FORK_SYSCALLS = ("clone", "fork", "vfork", "clone3", "unshare")
OUR_SYSCALLS = frozenset(KILL_SYSCALLS + EXEC_SYSCALLS + FORK_SYSCALLS)
_KILL_A1, _KILL_A2, _FORKS = frozenset(KILL_SYSCALLS_A1), frozenset(KILL_SYSCALLS_A2), frozenset(FORK_SYSCALLS)

RULES_FILE = "/etc/audit/rules.d/sigsleuth.rules"
AUDITD_CONF = "/etc/audit/auditd.conf"
DEFAULT_LOG_FILE = "/var/log/audit/audit.log"
LOG_ROOT = "/var/log"

# AUDIT_ARCH_* values as printed in SYSCALL records, and the syscall numbers we name without ausyscall.
ARCHES = {
    0xC000003E: "x86_64",
    0x40000003: "i386",
    0xC00000B7: "aarch64",
    0x40000028: "arm",
}
_BUILTIN_TABLES = {
    "x86_64": {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
               "pidfd_send_signal": 424, "execve": 59, "execveat": 322, "clone": 56, "fork": 57,
               "vfork": 58, "clone3": 435, "unshare": 272},
    "i386": {"kill": 37, "tkill": 238, "tgkill": 270, "rt_sigqueueinfo": 178, "rt_tgsigqueueinfo": 335,
             "pidfd_send_signal": 424, "execve": 11, "execveat": 358, "clone": 120, "fork": 2,
             "vfork": 190, "clone3": 435, "unshare": 310},
    "aarch64": {"kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
                "pidfd_send_signal": 424, "execve": 221, "execveat": 281, "clone": 220, "clone3": 435,
                "unshare": 97},
    "arm": {"kill": 37, "tkill": 238, "tgkill": 268, "rt_sigqueueinfo": 178, "rt_tgsigqueueinfo": 363,
            "pidfd_send_signal": 424, "execve": 11, "execveat": 387, "clone": 120, "fork": 2, "vfork": 190,
            "clone3": 435, "unshare": 337},
}
_SYSCALL_NAMES = {arch: {nr: name for name, nr in table.items()} for arch, table in _BUILTIN_TABLES.items()}
# machine -> (its 64-bit audit arch, its 32-bit compat arch)
_MACHINE_ABIS = {"x86_64": ("x86_64", "i386"), "aarch64": ("aarch64", "arm")}

UNSET_ID = 4294967295  # (uid_t)-1: auid/ses of a process that never logged in

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
_HEX = frozenset(b"0123456789ABCDEFabcdef")


class AuditError(Exception):
    """A problem the caller should report as-is (bad configuration, auditctl failure)."""

    def __init__(self, msg, rc=None, stdout=None, stderr=None):
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


# ---------------------------------------------------------------- running commands

def default_runner(argv):
    """run(argv) -> (rc, stdout, stderr) with LC_ALL=C; the module passes its own run_command."""
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              universal_newlines=True, check=False)
    except OSError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


def _run_checked(run, argv):
    rc, out, err = run(argv)
    if rc != 0:
        raise AuditError("`%s` failed (rc=%s): %s" % (" ".join(argv), rc, (err or out or "").strip()),
                         rc=rc, stdout=out, stderr=err)
    return out


# ---------------------------------------------------------------- configuration and status

def read_auditd_conf(path=AUDITD_CONF):
    """auditd.conf as a dict of lower-case keys to string values ({} when the file is missing)."""
    settings = {}
    try:
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _, value = line.partition("=")
                settings[key.strip().lower()] = value.strip()
    except FileNotFoundError:
        return {}
    return settings


def read_log_file_setting(auditd_conf=AUDITD_CONF):
    """The audit log path auditd writes (``log_file``), refusing anything outside /var/log.

    Raises AuditError with a clear message for a path outside /var/log (we read and report from it as
    root; an arbitrary path is not something to follow blindly) or a relative path.
    """
    value = read_auditd_conf(auditd_conf).get("log_file") or DEFAULT_LOG_FILE
    if not os.path.isabs(value):
        raise AuditError("auditd.conf log_file %r (%s) is not an absolute path" % (value, auditd_conf))
    real = os.path.realpath(value)
    if os.path.commonpath([real, LOG_ROOT]) != LOG_ROOT or real == LOG_ROOT:
        raise AuditError("auditd.conf log_file %r (%s) is outside %s; sigsleuth only reads audit logs "
                         "under %s" % (value, auditd_conf, LOG_ROOT, LOG_ROOT))
    return value


def audit_status(run=default_runner):
    """``auditctl -s`` as a dict: enabled, failure, pid, rate_limit, backlog_limit, lost, backlog, ...

    Numbers are ints; ``locked`` is True when enabled is 2 (rules cannot change until reboot);
    ``running`` is True when the kernel has an audit daemon registered.
    """
    out = _run_checked(run, ["auditctl", "-s"])
    status = {}
    text = out.strip()
    if text.startswith("AUDIT_STATUS:"):  # old auditctl: one line of key=value
        pairs = (item.partition("=") for item in text[len("AUDIT_STATUS:"):].split())
        items = [(key, value) for key, _, value in pairs]
    else:
        items = [(line.split(None, 1) + [""])[:2] for line in text.splitlines() if line.strip()]
    for key, value in items:
        value = value.strip()
        try:
            status[key] = int(value)
        except ValueError:
            status[key] = value
    if "enabled" not in status or "pid" not in status:
        raise AuditError("cannot understand `auditctl -s` output: %r" % out[:200])
    status["locked"] = status["enabled"] == 2
    status["running"] = isinstance(status["pid"], int) and status["pid"] > 0
    return status


def supported_abis(machine=None, proc="/proc"):
    """The audit ABIs (``b64``/``b32``) whose syscalls can run here, e.g. ["b64", "b32"] on x86_64."""
    machine = machine or os.uname().machine
    if machine in _MACHINE_ABIS:
        return ["b64", "b32"] if _compat_enabled(machine, proc) else ["b64"]
    if machine.endswith("64") or machine == "s390x":
        return ["b64"]
    return ["b32"]


def _compat_enabled(machine, proc):
    if machine == "x86_64":
        # CONFIG_IA32_EMULATION registers abi/vsyscall32; ia32_emulation=0 on the command line turns it off.
        if not os.path.exists(os.path.join(proc, "sys/abi/vsyscall32")):
            return False
        try:
            with open(os.path.join(proc, "cmdline")) as handle:
                words = handle.read().split()
        except OSError:
            words = []
        return not any(word in ("ia32_emulation=0", "ia32_emulation=false", "ia32_emulation=off",
                                "ia32_emulation=n", "ia32_emulation=no") for word in words)
    try:  # arm64 and others: a compat syscall table in kallsyms
        with open(os.path.join(proc, "kallsyms"), "rb") as handle:
            for line in handle:
                if line.endswith(b" compat_sys_call_table\n"):
                    return True
    except OSError:
        pass
    return False


def syscall_table(abi, run=default_runner, machine=None):
    """{name: number} of the syscalls we use for an ABI, as ausyscall knows them (our built-in table
    when ausyscall is missing, e.g. in check mode before auditd is installed)."""
    rc, out, _ = run(["ausyscall", abi, "--dump"])
    if rc == 0 and out:
        table = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1] in OUR_SYSCALLS:
                table[parts[1]] = int(parts[0])
        if table:
            return table
    machine = machine or os.uname().machine
    arches = _MACHINE_ABIS.get(machine)
    if arches:
        return dict(_BUILTIN_TABLES[arches[0] if abi == "b64" else arches[1]])
    return {}


# ---------------------------------------------------------------- rules

def _syscall_list(names, table):
    present = sorted((table[name], name) for name in names if name in table)
    return ",".join(name for _, name in present)


def build_rules(signals, abis, tables, exec_rules=True, fork_rules=False):
    """Our rules, in load order, each in the exact form ``auditctl -l`` prints it.

    signals: signal numbers; abis: ["b64", "b32"]; tables: {abi: syscall_table(abi)}. One rule per
    (ABI, signal, argument position), so each rule filters on one signal number; syscalls an ABI lacks
    are left out. Exec and fork rules only log successful calls (a failed one changes no lineage).
    Fork rules cost one event per process or thread created: several times the volume of the exec rules
    on a busy host; enable them only when audit is the only source of lineage.
    """
    rules = []
    for signal in signals:
        for abi in abis:
            table = tables.get(abi) or {}
            for names, arg in ((KILL_SYSCALLS_A1, "a1"), (KILL_SYSCALLS_A2, "a2")):
                syscalls = _syscall_list(names, table)
                if syscalls:
                    rules.append("-a always,exit -F arch=%s -S %s -F %s=0x%X -F key=%s"
                                 % (abi, syscalls, arg, int(signal), KEY_KILL))
    for wanted, names, key in ((exec_rules, EXEC_SYSCALLS, KEY_EXEC), (fork_rules, FORK_SYSCALLS, KEY_FORK)):
        if not wanted:
            continue
        for abi in abis:
            syscalls = _syscall_list(names, tables.get(abi) or {})
            if syscalls:
                rules.append("-a always,exit -F arch=%s -S %s -F success=1 -F key=%s" % (abi, syscalls, key))
    return rules


def rule_key(rule):
    """The key of a rule line as ``auditctl -l`` prints it (``-F key=K`` or ``-k K``), or None."""
    words = rule.split()
    for index, word in enumerate(words):
        if word == "-F" and index + 1 < len(words) and words[index + 1].startswith("key="):
            return words[index + 1][4:]
        if word == "-k" and index + 1 < len(words):
            return words[index + 1]
    return None


def rule_identity(rule):
    """A comparison key for a rule line that does not depend on the order of its -S list."""
    words = rule.split()
    for index, word in enumerate(words[:-1]):
        if word == "-S":
            words[index + 1] = ",".join(sorted(words[index + 1].split(",")))
    return tuple(words)


def our_rules(lines):
    """The lines that carry one of our keys, in their loaded order."""
    return [line for line in lines if rule_key(line) in OUR_KEYS]


def list_rules(run=default_runner):
    """The loaded rules, one ``auditctl -l`` line each ([] for "No rules")."""
    out = _run_checked(run, ["auditctl", "-l"])
    return [line.rstrip() for line in out.splitlines() if line.strip() and line.strip() != "No rules"]


def rule_argv(rule, delete=False):
    """auditctl argv that adds (or deletes) a rule given in ``auditctl -l`` form."""
    words = rule.split()
    if delete and words and words[0] == "-a":
        words[0] = "-d"
    elif delete and words and words[0] == "-w":
        words[0] = "-W"
    return ["auditctl"] + words


def rules_file_text(rules):
    """The content of our persistent rules file (read by augenrules at the next auditd start)."""
    head = ("## sigsleuth: kill-family, exec and fork rules. Written by sigsleuth_audit; removed at disarm.\n"
            "## Do not edit: disarm deletes exactly this file.\n")
    return head + "".join(rule + "\n" for rule in rules)


# ---------------------------------------------------------------- auditd lifecycle

def has_systemd(root="/"):
    return os.path.isdir(os.path.join(root, "run/systemd/system"))


def start_auditd(run=default_runner, timeout=10.0):
    """Start auditd and wait until the kernel has registered it.

    Returns the new status. Raises AuditError when it does not come up.
    """
    # The daemon itself, with or without systemd: the unit's ExecStartPost runs `augenrules --load`, whose
    # -D would flush rules loaded at runtime by others and load the persistent set, changing rules that are
    # not ours to change. auditd daemonises; `auditctl --signal TERM` stops it again.
    argv = ["auditd"]
    rc, out, err = run(argv)
    if rc == 127 or (rc != 0 and "No such file" in (err or "")):
        argv = ["/usr/sbin/auditd"]
        rc, out, err = run(argv)
    if rc != 0:
        raise AuditError("cannot start auditd with `%s` (rc=%s): %s" % (" ".join(argv), rc, (err or out or "").strip()),
                         rc=rc, stdout=out, stderr=err)
    status = _wait_status(run, lambda s: s["running"], timeout)
    if status is None:
        raise AuditError("auditd was started but did not register with the kernel within %.0f s "
                         "(see its messages in syslog)" % timeout)
    return status


def stop_auditd(run=default_runner, pid=None, timeout=10.0):
    """Stop auditd (``auditctl --signal TERM``, else SIGTERM to its pid) and wait until it is gone."""
    rc, _, _ = run(["auditctl", "--signal", "TERM"])
    if rc != 0 and pid:
        try:
            os.kill(pid, 15)
        except OSError:
            pass
    status = _wait_status(run, lambda s: not s["running"], timeout)
    if status is None:
        raise AuditError("auditd did not stop within %.0f s" % timeout)
    return status


def _wait_status(run, predicate, timeout):
    deadline = time.monotonic() + timeout
    while True:
        status = audit_status(run)
        if predicate(status):
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


# ---------------------------------------------------------------- events

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


_new_event = tuple.__new__  # AuditEvent from a complete tuple, without namedtuple's per-field __new__


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


def _untrusted(value):
    """A kernel-escaped string value as bytes: "quoted", or hex when it had a space, quote or control byte."""
    if value[:1] == b'"':
        return value[1:-1] if len(value) > 1 and value[-1:] == b'"' else value[1:]
    if value in (b"(null)", b"(none)", b""):
        return None
    if len(value) % 2 == 0 and _HEX.issuperset(value):
        return bytes.fromhex(value.decode("ascii"))
    return value  # neither: keep what the log says


def _text(value):
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


def _id(value):
    number = _int(value)
    if number is None or number == UNSET_ID or number == -1:
        return None
    return number


_TOKEN = re.compile(rb"(?<!\S)([^\s=]+)=(\S*)")


def _fields(body):
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


def _build_event(serial, time_ns, records, keys, syscalls, stats, source):
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
        fields = _fields(raw)
        values = tuple(fields.get(key) for key in _SYSCALL_KEYS)
    (arch_v, nr_v, success_v, exit_v, a0, a1, a2, a3, ppid_v, pid_v, auid_v, uid_v, gid_v, euid_v, suid_v,
     egid_v, tty_v, ses_v, comm_v, exe_v, key_v) = values

    known = _SYSCALL_CACHE.get((arch_v, nr_v))
    if known is None:
        arch, abi, _ = _arch(arch_v) if arch_v is not None else (None, None, None)
        nr = _int(nr_v)
        known = (arch, abi, nr, _SYSCALL_NAMES.get(arch, {}).get(nr))
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
        uid, auid, euid, suid, gid, egid, ses = (_int(uid_v), _id(auid_v), _int(euid_v), _int(suid_v),
                                                 _int(gid_v), _int(egid_v), _id(ses_v))
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
        f = _fields(body)
        targets.append({"pid": _int(f.get(b"opid")), "auid": _id(f.get(b"oauid")), "uid": _id(f.get(b"ouid")),
                        "ses": _id(f.get(b"oses")), "comm": _text(f.get(b"ocomm"))})
    if name == "pidfd_send_signal" and targets:
        target_pid = targets[0]["pid"]

    if cwd is not None:
        value = cwd.partition(b"\x1d")[0].strip()
        cwd = _text(value[4:]) if value[:4] == b"cwd=" else _text(_fields(cwd).get(b"cwd"))
    proctitle = None
    if execve:
        argv, argc, complete = _assemble_execve(execve)
        argv_source = "execve" if argv is not None else None
    else:
        argv, argc, complete, argv_source = None, None, False, None
    if argv is None and title is not None:
        raw_title = _untrusted(_fields(title).get(b"proctitle", b""))
        if raw_title:
            proctitle = [decode_name(part) for part in raw_title.rstrip(b"\0").split(b"\0")]
            argv, argv_source, complete = proctitle, "proctitle", False  # the kernel keeps 128 bytes

    tty = tty_v.decode("ascii", "backslashreplace") if tty_v not in (None, b"(none)") else None
    stats.events += 1
    return _new_event(AuditEvent, (
        serial, time_ns, key, event_keys, name, nr, arch, abi, success, exit_value, pid, ppid, uid, auid, euid,
        suid, gid, egid, ses, tty, _text(comm_v), _text(exe_v), cwd, argv, argv_source, argc, complete,
        proctitle, targets, args, signal, target_pid, target_tid, child_pid, len(records), source))


def audit_loss_reasons(stats, section=None, status=None):
    """Plain-language reasons why audit events since arming may be missing, [] when none are known.

    stats: the AuditStats of a read with since_ns=armed_at_ns; section: the state file's ``audit`` section
    (lost_at_arm); status: audit_status() at collect. Covers unreadable logs, kernel-side loss (the
    ``lost`` counter), rotation that discarded records since arming, sigsleuth's rules removed by
    someone while armed, auditd stopped while armed, and audit switched off.
    """
    from_ns = (section or {}).get("armed_at_ns")
    reasons = list(stats.errors)
    lost_before = (section or {}).get("lost_at_arm")
    lost_now = (status or {}).get("lost")
    if isinstance(lost_before, int) and isinstance(lost_now, int) and lost_now > lost_before:
        reasons.append("the kernel lost %d audit records since arming (backlog full or rate limit)"
                       % (lost_now - lost_before))
    if stats.covers_since is False:
        reasons.append("audit log rotation discarded records written since arming (the oldest record left is "
                       "newer than the arm time)")
    removed = [change for change in stats.rule_changes if change["op"] in ("remove_rule", "del_rule")]
    if removed:
        reasons.append("sigsleuth's audit rules were removed while armed (first at %d ns, by auid %s): later "
                       "events were not recorded" % (removed[0]["time_ns"], removed[0]["auid"]))
    stopped = [record for record in stats.daemon_records if record["type"] in ("DAEMON_END", "DAEMON_ABORT")
               and (from_ns is None or record["time_ns"] >= from_ns)]
    if stopped:
        reasons.append("auditd stopped while armed (%s at %d ns): records sent while it was down went to the "
                       "kernel log, not audit.log" % (stopped[0]["type"], stopped[0]["time_ns"]))
    if status and status.get("enabled") == 0:
        reasons.append("audit is disabled now (auditctl -s: enabled 0): nothing was recorded since it was "
                       "switched off")
    if stats.forced_completions:
        reasons.append("%d audit events were closed before all their records arrived (more than %d events in "
                       "flight at once)" % (stats.forced_completions, MAX_PENDING))
    return reasons


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
        except AuditError as exc:
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
        return _build_event(entry[0], entry[1], entry[2], self.keys, self.syscalls, self.stats, entry[3])

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
            f = _fields(body)
            key = _text(f.get(b"key"))
            if key in OUR_KEYS and len(stats.rule_changes) < MAX_NOTES:
                stats.rule_changes.append({"time_ns": time_ns, "op": _text(f.get(b"op")), "key": key,
                                           "auid": _id(f.get(b"auid")), "res": _text(f.get(b"res"))})
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
