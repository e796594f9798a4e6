# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The per-host state store of sigsleuth. Standard library only; Python 3.9+.
"""What arm changed on a host, recorded in ``<state_dir>/state.json`` (0600, directory 0700).

Layout: ``{"format": 1, "boot_id": ..., "dir_created": bool, <section>: {...}, ...}`` with one section per
owner, each written only by its owner:

``ftrace`` (sigsleuth_trace)
    instance, tracefs, mounted_by_us, signals, clock, buffer_size_kb, missing_optional_events, armed_at_ns,
    clock_offset_ns (CLOCK_REALTIME - CLOCK_BOOTTIME at arm). armed_at_ns is None while an arm is under way.
``snapshot`` (sigsleuth_snapshot)
    path, taken_at_ns, count.
``audit`` (sigsleuth_audit)
    signals, exec, fork, abis, rules, persist_file, log_file, log_format, armed_at_ns, clock_offset_ns and what
    disarm must undo: started_auditd, auditd_pid, enabled_before, enabled_set_by_us, backlog_limit_before,
    backlog_limit_set, audit_was_enabled, lost_at_arm, backlog_at_arm.
``watch`` (sigsleuth_watch)
    pid, start_ticks (/proc/PID/stat start time: the drain's identity), started_at_ns, restarts, instance,
    flush_interval, stopped_at_ns (None while it should be running). The drain's own files are listed in
    sigsleuth_drain.WatchFiles.

``*_ns`` times are CLOCK_REALTIME nanoseconds. A file written under another boot_id is stale: its runtime
state died with the reboot.
"""

from __future__ import annotations

import json
import os
import tempfile

from ansible.module_utils.sigsleuth_vocabulary import BOOT_ID_PATH, STATE_DIR

STATE_FILE = "state.json"
STATE_FORMAT = 1
SECTION_FTRACE = "ftrace"
SECTION_SNAPSHOT = "snapshot"
SECTION_AUDIT = "audit"
SECTION_WATCH = "watch"
_HEADER_KEYS = ("format", "boot_id", "dir_created")


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


def read_boot_id(path=BOOT_ID_PATH):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


class StateStore:
    """The per-host record of what arm changed, one section per owner (see the module docstring)."""

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
        self._write(data)

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
        owners = [key for key in data if key not in _HEADER_KEYS]
        if owners:
            if changed:
                self._write(data)
            return changed
        os.unlink(self.path)
        if data.get("dir_created"):
            try:
                os.rmdir(self.state_dir)
            except OSError:
                pass  # something else lives there now: leave it
        return True

    def _write(self, data):
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
