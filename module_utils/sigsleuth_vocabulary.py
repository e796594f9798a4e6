# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth's shared vocabulary. Standard library only; Python 3.9+.
"""The words every part of sigsleuth uses: signals, siginfo codes, syscall families, clone and rlimit
constants, where things live on a target, how a process came to be known, and how a name chosen by a
process becomes text."""

from __future__ import annotations

import re
import signal

# ---------------------------------------------------------------- signals

SIGKILL = int(signal.SIGKILL)
MAX_SIGNAL = 64
REALTIME_FIRST = 34  # the kernel's SIGRTMIN (glibc reserves 32 and 33 for itself)
# The one standard Linux signal Python < 3.11 does not define.
_UNDEFINED_BEFORE_311 = {16: "SIGSTKFLT"}
_STANDARD = {int(member): member.name for member in signal.Signals if int(member) < REALTIME_FIRST}
_STANDARD.update((number, name) for number, name in _UNDEFINED_BEFORE_311.items() if number not in _STANDARD)


def signal_name(number):
    """SIGKILL for 9, SIGRTMIN+2 for 36, SIG32 style for anything else."""
    if number in _STANDARD:
        return _STANDARD[number]
    if REALTIME_FIRST <= number <= MAX_SIGNAL:
        return "SIGRTMIN" if number == REALTIME_FIRST else "SIGRTMIN+%d" % (number - REALTIME_FIRST)
    return "SIG%d" % number


def _signal_by_name(text):
    """KILL, SIGKILL (upper case) and the aliases Python knows (IOT, POLL, CLD, RTMIN, RTMAX) -> number."""
    name = text if text.startswith("SIG") else "SIG" + text
    member = signal.Signals.__members__.get(name)
    if member is not None:
        return int(member)
    return next((number for number, known in _UNDEFINED_BEFORE_311.items() if known == name), None)


def parse_signal(value):
    """Turn KILL, SIGKILL, sigkill, 9 or "9" into 9; raise ValueError naming the valid choices."""
    if isinstance(value, bool):
        raise ValueError(_bad_signal(value))
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().upper()
        number = int(text) if text.isdigit() else _signal_by_name(text)
        if number is None:
            raise ValueError(_bad_signal(value))
    if not 1 <= number <= MAX_SIGNAL:
        raise ValueError(_bad_signal(value))
    return number


def parse_signals(values):
    """A sorted, de-duplicated list of signal numbers; ValueError on any bad entry or an empty list."""
    if isinstance(values, (str, int)):
        values = [values]
    numbers = sorted({parse_signal(v) for v in values or []})
    if not numbers:
        raise ValueError("no signals given; " + _valid_signals_text())
    return numbers


def _valid_signals_text():
    names = ", ".join(name[3:] for _number, name in sorted(_STANDARD.items()))
    return "valid names are %s (with or without SIG), or numbers 1-%d" % (names, MAX_SIGNAL)


def _bad_signal(value):
    return "unknown signal %r; %s" % (value, _valid_signals_text())


# ---------------------------------------------------------------- siginfo codes (include/uapi/asm-generic/siginfo.h)

SI_USER = 0        # kill(), and sends the kernel makes on a process's behalf (cgroup.kill, parent death)
SI_KERNEL = 0x80   # the kernel on its own account (OOM, CPU-time limits, fatal faults)
SI_QUEUE = -1      # sigqueue / rt_sigqueueinfo
SI_TKILL = -6      # tkill / tgkill

# ---------------------------------------------------------------- syscall families

# Where each kill-family syscall carries the signal: a1 for these ...
KILL_SYSCALLS_SIGNAL_IN_A1 = ("kill", "tkill", "pidfd_send_signal", "rt_sigqueueinfo")
# ... and a2 for these (a1 is the thread id).
KILL_SYSCALLS_SIGNAL_IN_A2 = ("tgkill", "rt_tgsigqueueinfo")
KILL_SYSCALLS = ("kill", "tkill", "tgkill", "pidfd_send_signal", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
EXEC_SYSCALLS = ("execve", "execveat")
FORK_SYSCALLS = ("clone", "fork", "vfork", "clone3")
# unshare(CLONE_NEWPID) puts the caller's later children in a new pid namespace, where fork returns
# namespace-local pids: whoever reads audited forks must know.
UNSHARE_SYSCALL = "unshare"

CLONE_THREAD = 0x00010000
CLONE_NEWPID = 0x20000000
RLIMIT_CPU = 0
RLIMIT_RTTIME = 15

# ---------------------------------------------------------------- where things live on a target

STATE_DIR = "/var/lib/sigsleuth"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
PROC = "/proc"
MOUNTS = "/proc/mounts"
DEFAULT_TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACEFS = "/sys/kernel/debug/tracing"
AUDITD_CONF = "/etc/audit/auditd.conf"
DEFAULT_AUDIT_LOG = "/var/log/audit/audit.log"
AUDIT_LOG_ROOT = "/var/log"
AUDIT_RULES_FILE = "/etc/audit/rules.d/sigsleuth.rules"

# ---------------------------------------------------------------- how a process came to be known, in order of trust

SOURCE_TRACE = "ftrace"       # its fork was traced
SOURCE_SNAPSHOT = "snapshot"  # it was in the arm-time process table
SOURCE_AUDIT = "audit"        # its fork was audited (audit-only mode)
SOURCE_UNSEEN = "unseen"      # it acted, but neither its fork nor a snapshot entry is known
SOURCE_PROC = "proc"          # a fact read from /proc of the live process at collection
SOURCE_INHERITED = "inherited"  # a fact copied from the parent at fork

# ---------------------------------------------------------------- names
# A name is bytes chosen by a process. As text it reads as UTF-8 with two escapes, which make the text say
# exactly which bytes it was: a byte that is not part of valid UTF-8 becomes \xNN (lower-case hex) and a
# literal backslash becomes \\. So k\xffill (a 0xff byte) never reads like k\\xffill (a backslash, then "xff").
# The report's schema documents the same encoding.

_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def decode_name(raw, limit=None):
    """A kernel name (bytes) as text, escaped as above; never fails.

    Text is taken as already decoded. ``limit`` keeps the name's first ``limit`` bytes, as the kernel cuts a
    task name (text is cut by the bytes it stands for, never inside an escape).
    """
    if limit is None:
        try:
            if 92 not in raw:  # 92 is "\\" (an int is found by memchr); the handler only runs on non-UTF-8
                return raw.decode("utf-8", "backslashreplace")
        except TypeError:  # text, already decoded
            return raw
        return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return decode_name((name_bytes(raw) if isinstance(raw, str) else bytes(raw))[:limit])


def _unescape(match):
    escape = match.group(1)
    return b"\\" if escape == b"\\" else bytes((int(escape[1:], 16),))


def name_bytes(text):
    """The bytes decode_name made ``text`` from (its inverse); a backslash that starts no escape is kept."""
    raw = text.encode("utf-8", "surrogateescape")
    return _ESCAPE.sub(_unescape, raw) if 92 in raw else raw
