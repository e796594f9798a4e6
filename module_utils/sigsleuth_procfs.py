# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Process table reading for sigsleuth. Standard library only; Python 3.9+.
"""Read /proc, take and stream the arm-time snapshot, and check a live process's identity."""

from __future__ import annotations

import json
import os

from ansible.module_utils.sigsleuth_state import atomic_write
from ansible.module_utils.sigsleuth_vocabulary import PROC, RLIMIT_CPU, RLIMIT_RTTIME, SOURCE_PROC, decode_name

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NS_PER_TICK = 1_000_000_000 // CLK_TCK
# /proc start times have tick resolution; a traced fork at t matches a start in [t - 1 tick, t + 1 tick].
START_TOLERANCE_NS = 2 * NS_PER_TICK


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def read_stat(pid, proc=PROC):
    """(comm, ppid, start_ticks) from /proc/PID/stat, or None when the process is gone.

    The name sits between the first '(' and the last ')': it may hold spaces and parentheses itself.
    """
    raw = _read_bytes("%s/%d/stat" % (proc, pid))
    if not raw:
        return None
    head, _paren, tail = raw.rpartition(b")")
    comm = head.partition(b"(")[2]
    fields = tail.split()
    try:
        # tail: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        #       cutime cstime priority nice num_threads itrealvalue starttime ...
        return decode_name(comm), int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def is_zombie(pid, proc=PROC):
    """True when pid has exited but its parent has not reaped it yet (state Z, or X while being reaped)."""
    raw = _read_bytes("%s/%d/stat" % (proc, pid))
    fields = raw.rpartition(b")")[2].split() if raw else []
    return bool(fields) and fields[0] in (b"Z", b"X")


def read_process(pid, proc=PROC):
    """A snapshot entry for one live process, or None when it vanished while being read."""
    stat = read_stat(pid, proc)
    if stat is None:
        return None
    comm, ppid, start_ticks = stat
    base = "%s/%d" % (proc, pid)
    try:
        exe = decode_name(os.readlink(base + "/exe").encode("utf-8", "surrogateescape"))
    except OSError:
        exe = None  # kernel threads, or a process we may not inspect
    cmdline = _read_bytes(base + "/cmdline")
    argv = [decode_name(arg) for arg in cmdline.split(b"\0")[:-1]] if cmdline else None
    uid = ns_pid = None
    status = _read_bytes(base + "/status") or b""
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            uid = int(line.split()[1])
        elif line.startswith(b"NSpid:"):
            ns_pid = int(line.split()[-1])  # as seen inside its own (innermost) pid namespace
    try:
        threads = sorted(int(tid) for tid in os.listdir(base + "/task"))
    except OSError:
        threads = [pid]
    entry = {
        "pid": pid,
        "ppid": ppid,
        "start_ticks": start_ticks,
        "start_boot_ns": start_ticks * NS_PER_TICK,
        "comm": comm,
        "exe": exe,
        "argv": argv,
        "uid": uid,
        "threads": threads,
        "ns_pid": ns_pid,
    }
    entry["cgroup"], entry["memory_cgroup"] = read_cgroups(base)
    entry["rlimits"] = read_cpu_limits(base)
    return entry


# /proc/PID/limits rows of the CPU-time limits a kernel enforces with a signal (RLIMIT_CPU, RLIMIT_RTTIME).
_CPU_LIMIT_ROWS = ((b"Max cpu time", RLIMIT_CPU), (b"Max realtime timeout", RLIMIT_RTTIME))


def read_cpu_limits(base):
    """The CPU-time limits (RLIMIT_CPU, RLIMIT_RTTIME) set on a process, soft or hard, as resource numbers."""
    found = []
    for line in (_read_bytes(base + "/limits") or b"").splitlines():
        for row, resource in _CPU_LIMIT_ROWS:
            if line.startswith(row):
                soft, hard = (line[len(row):].split() + [b"", b""])[:2]
                if soft != b"unlimited" or hard != b"unlimited":
                    found.append(resource)
    return found


def read_cgroups(base):
    """(unified v2 path, v1 memory path) of a process; None for what it is not in."""
    raw = _read_bytes(base + "/cgroup") or b""
    unified = memory = None
    for line in raw.splitlines():
        hierarchy, _colon, rest = line.partition(b":")
        controllers, _colon, path = rest.partition(b":")
        if hierarchy == b"0" and controllers == b"":
            unified = decode_name(path)
        elif b"memory" in controllers.split(b","):
            memory = decode_name(path)
    return unified, memory


def memory_hierarchy(proc=PROC):
    """The hierarchy id of the cgroup v1 memory controller, or None (v2 only, or no memory controller)."""
    for line in (_read_bytes(proc + "/cgroups") or b"").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == b"memory" and fields[1].isdigit() and fields[1] != b"0":
            return int(fields[1])
    return None


def iter_processes(proc=PROC):
    for name in os.listdir(proc):
        if name.isdigit():
            entry = read_process(int(name), proc)
            if entry is not None:
                yield entry


def take_snapshot(path, proc=PROC):
    """Write the process table as JSON lines (0600, atomically); returns the number of processes."""
    lines = [json.dumps(entry, sort_keys=True) for entry in iter_processes(proc)]
    atomic_write(path, "\n".join(lines) + "\n")
    return len(lines)


def iter_snapshot(path):
    """Stream snapshot entries; a damaged line is skipped, never fatal."""
    with open(path, "rb") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("pid"), int):
                yield entry


def settle_liveness(processes, proc=PROC):
    """Settle what the events did not say: is each process still the same live process?

    /proc may only fill in a process whose start time matches its incarnation; a pid that now belongs to
    someone else is marked exited, never merged.
    """
    seen = set()
    for member in processes:
        if member.key in seen or member.exited:
            continue
        seen.add(member.key)
        live = read_process(member.pid, proc)
        if live is None:
            member.exited = True
            member.notes.append("exited at an unknown time (its exit was not traced)")
        elif member.start_ns is None:
            member.notes.append("pid %d is alive now, but nothing proves it is the same process" % member.pid)
        elif abs(live["start_boot_ns"] - member.start_ns) > START_TOLERANCE_NS:
            member.exited = True
            member.notes.append("exited at an unknown time; pid %d now belongs to another process" % member.pid)
        elif is_zombie(member.pid, proc):
            # Where pid 1 does not reap, orphans stay zombies: still in /proc, but long dead.
            member.exited = True
            member.notes.append("exited at an unknown time; it is a zombie its parent has not reaped yet")
        else:
            member.alive_confirmed = True
            for key in ("exe", "argv", "uid"):
                if getattr(member, key) is None and live.get(key) is not None:
                    setattr(member, key, live[key])
                    member.facts_from[key] = SOURCE_PROC
