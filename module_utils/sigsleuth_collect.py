# -*- coding: utf-8 -*-
# Collection on a target: state -> trace -> lineage -> report. Standard library only; Python 3.9+.
"""The glue behind the sigsleuth_facts module. It reads; it never changes the host."""

from __future__ import annotations

import os
import socket
import time

from ansible.module_utils.sigsleuth_audit import (
    AuditError, AuditStats, audit_loss_reasons, audit_status, iter_audit_events,
)
from ansible.module_utils.sigsleuth_common import StateStore, clock_offset_ns, iso_utc
from ansible.module_utils.sigsleuth_ftrace import TraceStats, iter_events
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_merge import enrich_with_audit, feed_audit_lineage
from ansible.module_utils.sigsleuth_procfs import (
    PROC, START_TOLERANCE_NS, is_zombie, iter_snapshot, memory_hierarchy, read_process,
)
from ansible.module_utils.sigsleuth_report import Clock, build_report
from ansible.module_utils.sigsleuth_tracefs import read_loss_counters

# What audit alone never records: these kills are missing from an audit-only report, not "unknown".
AUDIT_BLIND_SPOTS = ("audit alone records kill-family syscalls only: kills by cgroup.kill, the OOM killer, "
                     "parent-death signals and CPU-time limits leave no audit record and are missing from this "
                     "report; arm ftrace to see them")
# A wall-clock step larger than this between arm and collect is reported.
CLOCK_STEP_NS = 1_000_000


class Loss:
    """The window in which trace events were lost: everything at or before `until_ns` is suspect."""

    def __init__(self):
        self.until_ns = None
        self.reasons = []
        self.audit_notes = []  # audit loss applies to every kill: its records carry no per-CPU window

    def add(self, until_ns, reason):
        if until_ns is not None and (self.until_ns is None or until_ns > self.until_ns):
            self.until_ns = until_ns
        self.reasons.append(reason)

    def describe(self):
        return "; ".join(self.reasons) if self.reasons else "no loss"


def collect(state_dir, host=None, proc=PROC, trace_file=None, audit_log=None, audit_run=None):
    """Return the report dict for this host.

    `trace_file` and `audit_log` override the live trace instance and the armed audit log (replays, tests).
    """
    store = StateStore(state_dir)
    state = store.load()
    collected_at_ns = time.time_ns()
    host = host or socket.gethostname()
    sources = {}
    stale = store.is_stale(state)
    ftrace = None if stale else state.get("ftrace")
    audit = None if stale else state.get("audit")
    snapshot = None if stale else state.get("snapshot")
    offset_now = clock_offset_ns()
    if ftrace is None and audit is None:
        reason = ("the host rebooted since arming: the trace buffer and the process table died with it"
                  if stale else "sigsleuth is not armed on this host (run playbooks/arm.yml first)")
        sources["ftrace"] = {"armed": False, "reason": reason}
        sources["audit"] = {"armed": False, "reason": reason}
        return build_report(host, None, collected_at_ns, (), sources, [], Clock(offset_now), Loss())

    offset_arm = (ftrace or {}).get("clock_offset_ns") or (audit or {}).get("clock_offset_ns") or offset_now
    clock = Clock(offset_arm)
    signals = (ftrace or audit).get("signals") or [9]
    loss = Loss()
    lineage = Lineage(signals, snapshot_time_ns=_boot_ns(snapshot and snapshot.get("taken_at_ns"), offset_arm),
                      memory_hierarchy=memory_hierarchy(proc))
    sources["snapshot"] = _read_snapshot(lineage, snapshot)
    traced = False
    if ftrace is not None and ftrace.get("armed_at_ns") is None:
        sources["ftrace"] = {"armed": False, "reason": "arming ftrace did not complete on this host (the state "
                                                      "records no arm time): run playbooks/arm.yml again"}
    elif ftrace is not None:
        sources["ftrace"] = _read_trace(lineage, ftrace, clock, loss, trace_file)
        traced = "error" not in sources["ftrace"]
    else:
        sources["ftrace"] = {"armed": False, "reason": "not armed (sigsleuth_sources leaves ftrace out, or "
                                                      "tracefs was not usable on this host)"}
    if audit is not None:
        sources["audit"] = _read_audit(lineage, audit, offset_arm, loss, traced, audit_log, audit_run)
    else:
        sources["audit"] = {"armed": False, "reason": "not armed"}

    clock_note = None
    step = offset_now - offset_arm
    if abs(step) > CLOCK_STEP_NS:
        clock_note = ("the wall clock was stepped by %+.6f s between arm and collect; times use the arm-time "
                      "offset and may be off by up to that much" % (step / 1e9))
    sources["clock"] = {"trace_clock": (ftrace or {}).get("clock"), "offset_at_arm_ns": offset_arm,
                        "offset_at_collect_ns": offset_now, "step": clock_note}

    confirm_live_processes(lineage, proc)
    for kill in lineage.kills:
        if clock_note:
            kill.notes.append(clock_note)
        kill.notes.extend(loss.audit_notes)
    armed_times = [v for v in ((ftrace or {}).get("armed_at_ns"), (audit or {}).get("armed_at_ns"),
                               (snapshot or {}).get("taken_at_ns")) if v]
    armed_at_ns = min(armed_times) if armed_times else None
    return build_report(host, armed_at_ns, collected_at_ns, signals, sources, lineage.kills, clock, loss)


def _read_snapshot(lineage, snapshot):
    source = {"armed": snapshot is not None}
    if snapshot is None:
        source["reason"] = "no arm-time process snapshot was taken"
        return source
    try:
        lineage.add_snapshot(iter_snapshot(snapshot["path"]))
        source.update(taken_at=iso_utc(snapshot.get("taken_at_ns")), processes=snapshot.get("count"))
    except OSError as exc:
        source["error"] = "cannot read the snapshot: %s" % exc
    return source


def _read_trace(lineage, ftrace, clock, loss, trace_file):
    """Stream the instance's trace into the lineage; returns the ftrace source entry of the report."""
    instance = os.path.join(ftrace["tracefs"], "instances", ftrace["instance"])
    per_cpu = read_loss_counters(instance) if trace_file is None else {}
    stats = TraceStats()
    source = {
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
        source["error"] = "cannot read %s: %s" % (path, exc)
        loss.add(None, "the trace could not be read")

    source.update(stats.as_dict())
    source["per_cpu"] = {}
    for cpu, counters in per_cpu.items():
        oldest = counters.get("oldest_event_ts_ns")
        source["per_cpu"][str(cpu)] = {
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
    counted = {int(cpu) for cpu, counters in source["per_cpu"].items() if counters["overrun"]}
    for cpu in sorted(stats.cpu_buffer_started - counted):
        # The trace marks a CPU whose oldest events were overwritten; without live counters it is the only sign.
        until = stats.first_ts_per_cpu.get(cpu)
        loss.add(until, "CPU %d's buffer was overwritten: its events before %s are gone"
                 % (cpu, clock.iso(until) or "an unknown time"))
    first = list(stats.first_ts_per_cpu.values())
    source["oldest_event_time"] = clock.iso(min(first)) if first else None
    source["loss"] = loss.describe() if loss.reasons else None
    return source


def _read_audit(lineage, audit, offset_arm, loss, traced, audit_log, run):
    """Stream the audit log: enrich the traced kills, or (no usable trace) build the lineage from it."""
    source = {"armed": True, "mode": "enrich" if traced else "lineage", "log_file": audit.get("log_file"),
              "rules": len(audit.get("rules") or ()), "lost_at_arm": audit.get("lost_at_arm"),
              "backlog_at_arm": audit.get("backlog_at_arm")}
    status_kwargs = {} if run is None else {"run": run}
    try:
        status = audit_status(**status_kwargs)
        source.update(lost_at_collect=status.get("lost"), backlog_at_collect=status.get("backlog"),
                      enabled=status.get("enabled"))
    except (AuditError, OSError) as exc:
        source["status_error"] = "cannot read the audit status: %s" % exc
        status = {}
    stats = AuditStats()
    events = iter_audit_events(audit_log or audit.get("log_file"), since_ns=audit.get("armed_at_ns"), stats=stats)
    try:
        if traced:
            source["kills_only_audit_saw"] = enrich_with_audit(lineage, events, offset_arm, loss.until_ns)
        else:
            feed_audit_lineage(lineage, events, offset_arm)
            source["cannot_see"] = AUDIT_BLIND_SPOTS
    except (OSError, ValueError) as exc:
        stats.errors.append("reading the audit log failed: %s" % exc)
    source.update(stats.as_dict())
    source["events_read"] = stats.events
    source["lines_skipped"] = stats.malformed_lines + stats.truncated_lines
    source["oldest_event_time"] = iso_utc(stats.earliest_ns)
    problems = audit_loss_reasons(stats, audit, status)
    source["loss"] = "; ".join(problems) if problems else None
    loss.audit_notes.extend("audit: " + problem for problem in problems)
    return source


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
            if is_zombie(member.pid, proc):
                # Where pid 1 does not reap, orphans stay zombies: still in /proc, but long dead.
                member.exited = True
                member.notes.append("exited at an unknown time; it is a zombie its parent has not reaped yet")
                continue
            member.alive_confirmed = True
            for key in ("exe", "argv", "uid"):
                if getattr(member, key) is None and live.get(key) is not None:
                    setattr(member, key, live[key])
                    member.facts_from[key] = "proc"


def _boot_ns(realtime_ns, offset_ns):
    return None if realtime_ns is None or offset_ns is None else realtime_ns - offset_ns
