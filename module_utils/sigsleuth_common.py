# -*- coding: utf-8 -*-
# Shared helpers for sigsleuth target-side code. Standard library only; Python 3.9+.
"""Signal names, clocks, the state file, atomic writes and name decoding."""

from __future__ import annotations

import datetime
import json
import os
import tempfile
import time

STATE_DIR = "/var/lib/sigsleuth"
STATE_FILE = "state.json"
STATE_FORMAT = 1
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

# Linux numbering (x86, arm, arm64, riscv, s390 share it). Real-time signals are accepted by number.
SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "PWR": 30, "SYS": 31,
}
SIGNAL_ALIASES = {"IOT": 6, "POLL": 29, "CLD": 17}
SIGNAL_NAMES = {number: "SIG" + name for name, number in SIGNALS.items()}
MAX_SIGNAL = 64


def signal_name(number):
    """SIGKILL for 9, SIGRTMIN+2 for 36, SIG64 style for anything else."""
    if number in SIGNAL_NAMES:
        return SIGNAL_NAMES[number]
    if 34 <= number <= MAX_SIGNAL:
        return "SIGRTMIN+%d" % (number - 34) if number != 34 else "SIGRTMIN"
    return "SIG%d" % number


def parse_signal(value):
    """Turn KILL, SIGKILL, sigkill, 9 or "9" into 9; raise ValueError naming the valid choices."""
    if isinstance(value, bool):
        raise ValueError(_bad_signal(value))
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            if text.startswith("SIG"):
                text = text[3:]
            number = SIGNALS.get(text, SIGNAL_ALIASES.get(text))
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
    names = ", ".join(name for name, _ in sorted(SIGNALS.items(), key=lambda item: item[1]))
    return "valid names are %s (with or without SIG), or numbers 1-%d" % (names, MAX_SIGNAL)


def _bad_signal(value):
    return "unknown signal %r; %s" % (value, _valid_signals_text())


# ---------------------------------------------------------------- clocks

def clock_offset_ns():
    """CLOCK_REALTIME - CLOCK_BOOTTIME in ns, from the tightest of a few bracketed reads."""
    best = None
    for _ in range(5):
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        real = time.time_ns()
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        width = after - before
        if best is None or width < best[0]:
            best = (width, real - (before + after) // 2)
    return best[1]


def iso_utc(realtime_ns):
    """ISO 8601 UTC with microseconds: 2026-11-26T06:52:53.123456Z. None stays None."""
    if realtime_ns is None:
        return None
    seconds, nanos = divmod(int(realtime_ns), 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (nanos // 1000)


def read_boot_id(path=BOOT_ID_PATH):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


# ---------------------------------------------------------------- names

def decode_name(raw):
    """Kernel names are bytes chosen by the process: keep them as data, never fail on them."""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------- files

def atomic_write(path, data, mode=0o600):
    """Write bytes or text to path through a temp file in the same directory and a rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sigsleuth-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class StateStore:
    """The per-host record of what arm changed, one section per owner (ftrace, snapshot, audit).

    A file written under another boot_id is stale: its runtime state died with the reboot.
    """

    def __init__(self, state_dir=STATE_DIR, boot_id_path=BOOT_ID_PATH):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self.boot_id_path = boot_id_path

    def load(self):
        """The whole state dict, or {} when there is none. Raises ValueError on a corrupt file."""
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError("cannot read sigsleuth state %s: %s" % (self.path, exc))
        if not isinstance(data, dict):
            raise ValueError("cannot read sigsleuth state %s: not a JSON object" % self.path)
        return data

    def is_stale(self, data=None):
        data = self.load() if data is None else data
        return bool(data) and data.get("boot_id") != read_boot_id(self.boot_id_path)

    def section(self, name, data=None):
        """The current-boot section, or None (also None when the file is stale); `data` saves a re-read."""
        data = self.load() if data is None else data
        if not data or self.is_stale(data):
            return None
        return data.get(name)

    def put(self, name, value):
        """Create or replace one section; creates the directory (0700) on first use."""
        data = self.load()
        if data and self.is_stale(data):
            data = {"dir_created": data.get("dir_created", False)}
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, mode=0o700)
            data["dir_created"] = True
        data.setdefault("dir_created", False)
        data["format"] = STATE_FORMAT
        data["boot_id"] = read_boot_id(self.boot_id_path)
        data[name] = value
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def drop(self, name):
        """Remove one section; when none is left remove the file and the directory arm created.

        Returns True when anything on disk changed.
        """
        data = self.load()
        if not data:
            return False
        changed = False
        if name in data:
            del data[name]
            changed = True
        owners = [key for key in data if key not in ("format", "boot_id", "dir_created")]
        if owners:
            if changed:
                atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
            return changed
        os.unlink(self.path)
        if data.get("dir_created"):
            try:
                os.rmdir(self.state_dir)
            except OSError:
                pass  # something else lives there now: leave it
        return True


# ---------------------------------------------------------------- modules

class ModuleRunner:
    """AnsibleModule.run_command in the (argv) -> (rc, stdout, stderr) shape the module_utils take, with the
    C locale so that parsed output never depends on the target's language."""

    def __init__(self, module):
        self.module = module

    def __call__(self, argv):
        return self.module.run_command(argv, environ_update={"LC_ALL": "C", "LANG": "C"})


def fail_from(module, exc, **kwargs):
    """fail_json from a command error carrying msg, rc, stdout and stderr (TracefsError, AuditError)."""
    module.fail_json(msg=exc.msg, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr, **kwargs)
