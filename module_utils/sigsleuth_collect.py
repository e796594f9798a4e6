# -*- coding: utf-8 -*-
# Collection on a target: state -> trace -> lineage -> report. Standard library only; Python 3.9+.
"""The glue behind the sigsleuth_facts module. It reads; it never changes the host."""

from __future__ import annotations

import os
import socket
import time

from ansible.module_utils.sigsleuth_common import StateStore, clock_offset_ns, iso_utc
from ansible.module_utils.sigsleuth_ftrace import TraceStats, iter_events
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_procfs import PROC, START_TOLERANCE_NS, iter_snapshot, read_process
from ansible.module_utils.sigsleuth_report import Clock, build_report
from ansible.module_utils.sigsleuth_tracefs import read_loss_counters

# A wall-clock step larger than this between arm and collect is reported.
CLOCK_STEP_NS = 1_000_000


class Loss:
    """The window in which trace events were lost: everything at or before `until_ns` is suspect."""

    def __init__(self):
        self.until_ns = None
        self.reasons = []

    def add(self, until_ns, reason):
        if until_ns is not None and (self.until_ns is None or until_ns > self.until_ns):
            self.until_ns = until_ns
        self.reasons.append(reason)

    def describe(self):
        return "; ".join(self.reasons) if self.reasons else "no loss"


def collect(state_dir, host=None, proc=PROC, trace_file=None):
    """Return the report dict for this host. `trace_file` overrides the instance's trace (tests, replays)."""
    store = StateStore(state_dir)
    state = store.load()
    collected_at_ns = time.time_ns()
    host = host or socket.gethostname()
    sources = {}
    stale = store.is_stale(state)
    ftrace = None if stale else state.get("ftrace")
    snapshot = None if stale else state.get("snapshot")
    offset_now = clock_offset_ns()
    if ftrace is None:
        reason = ("the host rebooted since arming: the trace buffer and the process table died with it"
                  if stale else "ftrace is not armed on this host (run playbooks/arm.yml first)")
        sources["ftrace"] = {"armed": False, "reason": reason}
        return build_report(host, None, collected_at_ns, (), sources, [], Clock(offset_now), Loss())

    offset_arm = ftrace.get("clock_offset_ns", offset_now)
    clock = Clock(offset_arm)
    signals = ftrace.get("signals") or [9]
    instance = os.path.join(ftrace["tracefs"], "instances", ftrace["instance"])
    loss = Loss()

    lineage = Lineage(signals, snapshot_time_ns=_boot_ns(snapshot and snapshot.get("taken_at_ns"), offset_arm))
    snapshot_source = {"armed": snapshot is not None}
    if snapshot is not None:
        try:
            lineage.add_snapshot(iter_snapshot(snapshot["path"]))
            snapshot_source.update(taken_at=iso_utc(snapshot.get("taken_at_ns")), processes=snapshot.get("count"))
        except OSError as exc:
            snapshot_source.update(error="cannot read the snapshot: %s" % exc)
    sources["snapshot"] = snapshot_source

    per_cpu = read_loss_counters(instance) if trace_file is None else {}
    stats = TraceStats()
    ftrace_source = {
        "armed": True,
        "instance": ftrace["instance"],
        "clock": ftrace.get("clock"),
        "buffer_size_kb": ftrace.get("buffer_size_kb"),
        "missing_optional_events": ftrace.get("missing_optional_events", []),
    }
    path = trace_file or os.path.join(instance, "trace")
    try:
        with open(path, "rb") as stream:
            for event in iter_events(stream, stats):
                lineage.feed(event)
    except OSError as exc:
        ftrace_source["error"] = "cannot read %s: %s" % (path, exc)
        loss.add(None, "the trace could not be read")

    ftrace_source.update(stats.as_dict())
    ftrace_source["per_cpu"] = {}
    for cpu, counters in per_cpu.items():
        oldest = counters.get("oldest_event_ts_ns")
        ftrace_source["per_cpu"][str(cpu)] = {
            "entries": counters.get("entries"),
            "overrun": counters.get("overrun", 0),
            "commit_overrun": counters.get("commit_overrun", 0),
            "dropped_events": counters.get("dropped_events", 0),
            "oldest_event_time": clock.iso(oldest) if isinstance(oldest, int) else None,
        }
        overrun = counters.get("overrun", 0) or 0
        dropped = (counters.get("dropped_events", 0) or 0) + (counters.get("commit_overrun", 0) or 0)
        if overrun or dropped:
            until = oldest if isinstance(oldest, int) else stats.last_ts
            loss.add(until, "CPU %d lost %d events to buffer overrun and %d dropped, before %s"
                     % (cpu, overrun, dropped, clock.iso(until) or "an unknown time"))
    for cpu, count, ts in stats.lost_markers:
        loss.add(ts, "CPU %d reported %d lost events at %s" % (cpu, count, clock.iso(ts) or "an unknown time"))
    first = [ts for ts in stats.first_ts_per_cpu.values()]
    ftrace_source["oldest_event_time"] = clock.iso(min(first)) if first else None
    ftrace_source["loss"] = loss.describe() if loss.reasons else None
    sources["ftrace"] = ftrace_source

    clock_note = None
    step = offset_now - offset_arm
    if abs(step) > CLOCK_STEP_NS:
        clock_note = ("the wall clock was stepped by %+.6f s between arm and collect; times use the arm-time "
                      "offset and may be off by up to that much" % (step / 1e9))
    sources["clock"] = {"trace_clock": ftrace.get("clock"), "offset_at_arm_ns": offset_arm,
                        "offset_at_collect_ns": offset_now, "step": clock_note}

    confirm_live_processes(lineage, proc)
    for kill in lineage.kills:
        if clock_note:
            kill.notes.append(clock_note)
    armed_at_ns = min(v for v in (ftrace.get("armed_at_ns"), (snapshot or {}).get("taken_at_ns")) if v)
    return build_report(host, armed_at_ns, collected_at_ns, signals, sources, lineage.kills, clock, loss)


def confirm_live_processes(lineage, proc=PROC):
    """Settle what the trace did not say: is each process named in a kill still the same live process?

    /proc may only fill in a process whose start time matches its incarnation; a pid that now belongs to
    someone else is marked exited, never merged.
    """
    seen = set()
    for kill in lineage.kills:
        members = [kill.victim] + ([kill.sender] if kill.sender else []) + [p for p, _, _, _ in kill.chain]
        for member in members:
            if id(member) in seen or member.exited:
                continue
            seen.add(id(member))
            live = read_process(member.pid, proc)
            if live is None:
                member.exited = True
                member.notes.append("exited at an unknown time (its exit was not traced)")
                continue
            if member.start_ns is None:
                member.notes.append("pid %d is alive now, but nothing proves it is the same process" % member.pid)
                continue
            if abs(live["start_boot_ns"] - member.start_ns) > START_TOLERANCE_NS:
                member.exited = True
                member.notes.append("exited at an unknown time; pid %d now belongs to another process" % member.pid)
                continue
            member.alive_confirmed = True
            for key in ("exe", "argv", "uid"):
                if getattr(member, key) is None and live.get(key) is not None:
                    setattr(member, key, live[key])
                    member.facts_from[key] = "proc"


def _boot_ns(realtime_ns, offset_ns):
    return None if realtime_ns is None or offset_ns is None else realtime_ns - offset_ns
