# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The watch drain's life: start, stop, query, and what collect reads of it. Standard library only; 3.9+.
"""Everything about one host's watch drain that is not the drain loop itself (sigsleuth_drain).

The ``watch`` section of the state file (written only by the sigsleuth_watch module) records the drain's
identity and history: pid, start_ticks (/proc/PID/stat start time), started_at_ns, restarts, instance,
stopped_at_ns. The drain writes its own files (sigsleuth_drain.WatchFiles), never state.json.
"""

from __future__ import annotations

import gc
import os
import signal
import time

from ansible.module_utils.sigsleuth_checkpoint import load as load_checkpoint
from ansible.module_utils.sigsleuth_clock import boot_ns, iso_utc
from ansible.module_utils.sigsleuth_detach import is_alive, request, start_detached, stop
from ansible.module_utils.sigsleuth_drain import Drain, WatchFiles, read_json
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_procfs import iter_snapshot, memory_hierarchy
from ansible.module_utils.sigsleuth_state import SECTION_FTRACE, SECTION_SNAPSHOT, atomic_write
from ansible.module_utils.sigsleuth_trace_parser import TraceStats
from ansible.module_utils.sigsleuth_trace_raw import READER_RAW, READER_TEXT, RawFormatError, RawReader
from ansible.module_utils.sigsleuth_tracefs import PRECISION_SYSCALL
from ansible.module_utils.sigsleuth_vocabulary import PROC, SIGKILL

FLUSH_WAIT_S = 15.0


def instance_dir(ftrace):
    return os.path.join(ftrace["tracefs"], "instances", ftrace["instance"])


def drain_alive(section, proc=PROC):
    return bool(section) and is_alive(section.get("pid"), section.get("start_ticks"), proc)


def check_writable(state_dir):
    """Fail early, naming the path, where the drain could not persist anything (e.g. a read-only fs)."""
    probe = os.path.join(state_dir, ".sigsleuth-watch-probe")
    try:
        if not os.path.isdir(state_dir):
            os.makedirs(state_dir, mode=0o700)
        atomic_write(probe, b"")
        os.unlink(probe)
    except OSError as exc:
        raise OSError("the watch drain cannot write its state to %s: %s" % (state_dir, exc.strerror or exc))


def _fresh_lineage(sections, proc=PROC):
    """A lineage seeded with the arm-time snapshot, as collect would start it."""
    ftrace, snapshot = sections[SECTION_FTRACE], sections.get(SECTION_SNAPSHOT) or {}
    offset = ftrace.get("clock_offset_ns") or 0
    lineage = Lineage(ftrace.get("signals") or [SIGKILL],
                      snapshot_time_ns=boot_ns(snapshot.get("taken_at_ns"), offset),
                      memory_hierarchy=memory_hierarchy(proc), precision=ftrace.get("precision", PRECISION_SYSCALL),
                      opens_traced=ftrace.get("cgroup_kill_opens", False))
    if snapshot.get("path"):
        lineage.add_snapshot(iter_snapshot(snapshot["path"]))
    return lineage


def traced_settings(ftrace):
    """What the instance traces now, as the lineage needs it."""
    return {"signals": sorted(ftrace.get("signals") or [SIGKILL]),
            "precision": ftrace.get("precision", PRECISION_SYSCALL),
            "opens_traced": ftrace.get("cgroup_kill_opens", False)}


def build_drain(state_dir, sections, status, flush_interval, proc=PROC):
    """The drain to run: from its checkpoint when there is one (a restart), else from the snapshot."""
    files = WatchFiles(state_dir)
    restored = load_checkpoint(files.checkpoint, traced_settings(sections[SECTION_FTRACE]))
    if restored is not None:
        lineage, stats, extra = restored
        status["flush_seq"] = extra.get("flush_seq", 0)
        previous = read_json(files.status) or {}
        status["argv_caught"], status["argv_missed"] = previous.get("argv_caught", 0), previous.get("argv_missed", 0)
    else:
        lineage, stats = _fresh_lineage(sections, proc), TraceStats()
    ftrace = sections[SECTION_FTRACE]
    return Drain(lineage, stats, files, instance_dir(ftrace), ftrace.get("clock_offset_ns") or 0, status,
                 proc_root=proc, flush_interval=flush_interval)


def open_raw_reader(ftrace, stats, status):
    """The per-CPU binary reader, or None (with the reason in status) where its layout is unknown here.

    Binary pages cost the drain about half of what trace_pipe's text does (bench/bench_watch.py readers): the
    kernel formats nothing and nothing is matched. Text remains the fallback, and what collect reads."""
    try:
        reader = RawReader(instance_dir(ftrace), ftrace["tracefs"], stats)
    except (RawFormatError, OSError, ValueError) as exc:
        status["reader"], status["reader_fallback"] = READER_TEXT, str(exc)
        return None
    status["reader"] = READER_RAW
    return reader


def start(state_dir, sections, restarts, flush_interval):
    """Start a detached drain; returns the new watch section. Raises OSError/DetachError with the reason."""
    check_writable(state_dir)
    started_at_ns = time.time_ns()
    ftrace = sections[SECTION_FTRACE]
    pipe_path = os.path.join(instance_dir(ftrace), "trace_pipe")

    def run_drain(ready):
        fd = os.open(pipe_path, os.O_RDONLY | os.O_NONBLOCK)
        status = {"pid": os.getpid(), "started_at_ns": started_at_ns, "restarts": restarts,
                  "instance": ftrace["instance"]}
        drain = build_drain(state_dir, sections, status, flush_interval)
        raw = open_raw_reader(ftrace, drain.stats, status)
        wakeup = drain.install_signals()
        drain.flush()
        # What exists now (modules, the restored lineage) lives as long as the drain: the collector never
        # walks it again. Events are freed by reference counting, so the collector runs only after a flush,
        # once a minute (sigsleuth_drain.COLLECT_INTERVAL_S), never counting the allocations of every event
        # (measured: a tenth of the drain's instructions at the default thresholds, 3 % at 100,000).
        gc.freeze()
        gc.disable()
        drain.collect_garbage = gc.collect
        ready()
        try:
            if raw is not None:
                drain.run_raw(raw, fd, wakeup)
            else:
                drain.run(fd, wakeup)
        except Exception as exc:
            drain.status["crashed"] = "%s: %s" % (type(exc).__name__, exc)
            drain.flush(final=True)
            raise

    pid, start_ticks = start_detached(run_drain)
    return {"pid": pid, "start_ticks": start_ticks, "started_at_ns": started_at_ns, "restarts": restarts,
            "instance": ftrace["instance"], "flush_interval": flush_interval, "stopped_at_ns": None,
            "traced": traced_settings(ftrace)}


def stop_drain(section, proc=PROC):
    """Stop the recorded drain (it flushes first); True when it was running."""
    return stop(section.get("pid"), section.get("start_ticks"), proc=proc)


def request_flush(state_dir, section, timeout=FLUSH_WAIT_S, proc=PROC):
    """Ask a live drain to consume what the buffer holds now and flush; True once it did."""
    files = WatchFiles(state_dir)
    before = (read_json(files.status) or {}).get("flush_seq", 0)
    if not request(section.get("pid"), section.get("start_ticks"), signal.SIGUSR1, proc):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (read_json(files.status) or {}).get("flush_seq", 0) > before:
            return True
        if not drain_alive(section, proc):
            return False
        time.sleep(0.01)
    return False


def remove_files(state_dir):
    """Remove the drain's files; the names of those that were there."""
    removed = []
    for path in WatchFiles(state_dir).all():
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def drain_summary(section, status, alive):
    """What the module and the report say about the drain (times as ns; the report converts)."""
    status = status or {}
    crashed = bool(section) and not alive and section.get("stopped_at_ns") is None
    return {
        "running": alive,
        "pid": section.get("pid") if section else None,
        "started_at_ns": section.get("started_at_ns") if section else None,
        "stopped_at_ns": section.get("stopped_at_ns") if section else None,
        "crashed": crashed,
        "crash_reason": status.get("crashed"),
        "restarts": section.get("restarts", 0) if section else 0,
        "events": status.get("events", 0),
        "lost_events": status.get("lost_events", 0),
        "overrun": status.get("overrun", 0),
        "dropped": status.get("dropped", 0),
        "kills": status.get("kills", 0),
        "live_processes": status.get("live_processes"),
        "argv_caught": status.get("argv_caught", 0),
        "argv_missed": status.get("argv_missed", 0),
        "last_flush_ns": status.get("last_flush_ns"),
        "rss_kb": status.get("rss_kb"),
        "reader": status.get("reader"),
        "reader_fallback": status.get("reader_fallback"),
        "started": iso_utc(section.get("started_at_ns")) if section else None,
        "last_flush": iso_utc(status.get("last_flush_ns")),
    }


def matching_kills(state_dir, victim_comm=None, victim_pid=None):
    """The kill index entries of the victim (all of them when no victim is named): a constant-size read."""
    index = read_json(WatchFiles(state_dir).kills) or {}
    kills = index.get("kills") or []
    if victim_pid is not None:
        kills = [kill for kill in kills if (kill.get("victim") or {}).get("pid") == victim_pid]
    if victim_comm is not None:
        kills = [kill for kill in kills if (kill.get("victim") or {}).get("comm") == victim_comm]
    return kills, index.get("count", 0)


# ---------------------------------------------------------------- what collect reads

class WatchedTrace:
    """What collect gets from the drain: its lineage and counters as last persisted, and what it says of itself."""

    def __init__(self, lineage, stats, summary, alive, flushed):
        self.lineage = lineage
        self.stats = stats
        self.summary = summary
        self.alive = alive      # the drain runs: it owns trace_pipe, and the buffer's rest is its to read
        self.flushed = flushed  # it consumed and persisted everything up to this collect's request


def read_watched(state_dir, section, proc=PROC):
    """The drain's persisted state for collect (after asking a live drain to flush); None without a checkpoint."""
    alive = drain_alive(section, proc)
    flushed = alive and request_flush(state_dir, section, proc=proc)
    alive = alive and drain_alive(section, proc)
    files = WatchFiles(state_dir)
    restored = load_checkpoint(files.checkpoint)
    if restored is None:
        return None
    lineage, stats, _extra = restored
    return WatchedTrace(lineage, stats, drain_summary(section, read_json(files.status), alive), alive, flushed)


def watch_source(watched, clock_iso):
    """sources.ftrace.watch: the drain as the report states it (clock_iso: wall-clock ns -> ISO text)."""
    summary = dict(watched.summary)
    for key in ("started_at_ns", "stopped_at_ns", "last_flush_ns"):
        summary.pop(key, None)
    summary["running_since"] = summary.pop("started")
    summary["stopped_at"] = clock_iso(watched.summary.get("stopped_at_ns"))
    summary["events_consumed"] = summary.pop("events")
    summary["flushed_for_this_collect"] = watched.flushed
    return summary


def crash_statement(watched):
    """The loss statement for a drain that died without being stopped (SIGKILL, a crash), or None."""
    summary = watched.summary
    if not summary.get("crashed"):
        return None
    reason = (" (%s)" % summary["crash_reason"]) if summary.get("crash_reason") else ""
    return ("the watch drain (pid %s) died without being stopped%s, after its last flush at %s: events it "
            "consumed after that flush are lost; what it had persisted and what the buffer still holds are "
            "reported (run playbooks/arm.yml again to restart it)"
            % (summary.get("pid"), reason, summary.get("last_flush") or "an unknown time"))
