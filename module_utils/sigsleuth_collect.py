# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Collection on a target: state -> sources -> lineage -> report. Standard library only; Python 3.9+.
"""The orchestration behind the sigsleuth_facts module: it reads; it never changes the host."""

from __future__ import annotations

import os
import socket
import time

from ansible.module_utils.sigsleuth_audit_lineage import AuditLineage, feed_audit_lineage
from ansible.module_utils.sigsleuth_audit_log import AuditStats, iter_audit_events
from ansible.module_utils.sigsleuth_auditd import audit_status
from ansible.module_utils.sigsleuth_clock import Clock, boot_ns, clock_offset_ns, clock_step, iso_utc
from ansible.module_utils.sigsleuth_command import SigsleuthError
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_loss import Losses, audit_loss, ftrace_loss
from ansible.module_utils.sigsleuth_merge import AuditWitness, bridge_trace_loss
from ansible.module_utils.sigsleuth_procfs import iter_snapshot, memory_hierarchy, settle_liveness
from ansible.module_utils.sigsleuth_report import (
    audit_source, build_report, clock_source, ftrace_source, not_armed, snapshot_source,
)
from ansible.module_utils.sigsleuth_state import (
    SECTION_AUDIT, SECTION_FTRACE, SECTION_SNAPSHOT, SECTION_WATCH, StateStore,
)
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events
from ansible.module_utils.sigsleuth_tracefs import PRECISION_SYSCALL, read_loss_counters
from ansible.module_utils.sigsleuth_vocabulary import PROC, SIGKILL
from ansible.module_utils.sigsleuth_watch_control import crash_statement, read_watched, watch_source

NOT_ARMED = "sigsleuth is not armed on this host (run playbooks/arm.yml first)"
REBOOTED = "the host rebooted since arming: the trace buffer and the process table died with it"


def collect(state_dir, host=None, proc=PROC, trace_file=None, audit_log=None, audit_run=None):
    """Return the report dict for this host.

    `trace_file` and `audit_log` override the live trace instance and the armed audit log (replays, tests).
    """
    store = StateStore(state_dir)
    state = store.load()
    collected_at_ns = time.time_ns()
    host = host or socket.gethostname()
    sections = {} if store.is_stale(state) else state
    ftrace, audit, snapshot = (sections.get(name) for name in (SECTION_FTRACE, SECTION_AUDIT, SECTION_SNAPSHOT))
    offset_now = clock_offset_ns()
    losses = Losses()
    if ftrace is None and (audit is None or audit.get("armed") is False):
        reason = REBOOTED if state and sections is not state else NOT_ARMED
        sources = {"ftrace": not_armed(reason), "audit": not_armed(reason)}
        return build_report(host, None, collected_at_ns, (), sources, [], Clock(offset_now), losses)

    offset_arm = (ftrace or {}).get("clock_offset_ns") or (audit or {}).get("clock_offset_ns") or offset_now
    clock = Clock(offset_arm)
    signals = (ftrace or audit).get("signals") or [SIGKILL]
    # An arm from before the light default recorded the syscall events: its state names no precision.
    lineage = Lineage(signals, snapshot_time_ns=boot_ns((snapshot or {}).get("taken_at_ns"), offset_arm),
                      memory_hierarchy=memory_hierarchy(proc),
                      precision=(ftrace or {}).get("precision", PRECISION_SYSCALL),
                      opens_traced=(ftrace or {}).get("cgroup_kill_opens", False))
    watched = read_watched(state_dir, sections[SECTION_WATCH], proc) \
        if ftrace is not None and sections.get(SECTION_WATCH) and trace_file is None else None
    if watched is None:
        sources = {"snapshot": _read_snapshot(lineage, snapshot, clock)}
        sources["ftrace"], traced = _read_trace(lineage, ftrace, clock, losses.ftrace, trace_file)
    else:
        # The drain's lineage already holds the snapshot and everything it consumed.
        lineage = watched.lineage
        sources = {"snapshot": snapshot_source(snapshot, clock)}
        sources["ftrace"], traced = _read_watched(watched, ftrace, clock, losses.ftrace)
    sources["audit"] = _read_audit(lineage, audit, offset_arm, losses, traced, audit_log, audit_run, snapshot)
    losses.clock_step = clock_step(offset_arm, offset_now)
    sources["clock"] = clock_source((ftrace or {}).get("clock"), offset_arm, offset_now, losses.clock_step)
    settle_liveness([member for kill in lineage.kills for member in kill.members()], proc)
    armed_times = [section.get(key) for section, key in ((ftrace, "armed_at_ns"), (audit, "armed_at_ns"),
                                                         (snapshot, "taken_at_ns")) if section and section.get(key)]
    return build_report(host, min(armed_times) if armed_times else None, collected_at_ns, signals, sources,
                        lineage.kills, clock, losses)


def _read_snapshot(lineage, section, clock):
    if section is None:
        return snapshot_source(None, clock)
    try:
        lineage.add_snapshot(iter_snapshot(section["path"]))
    except OSError as exc:
        return snapshot_source(section, clock, error="cannot read the snapshot: %s" % exc)
    return snapshot_source(section, clock)


def _read_trace(lineage, section, clock, loss, trace_file):
    """Stream the instance's trace into the lineage: (the ftrace source of the report, whether it was read)."""
    if section is None:
        return not_armed("not armed (sigsleuth_sources leaves ftrace out, or tracefs was not usable on this "
                         "host)"), False
    if section.get("armed_at_ns") is None:
        return not_armed("arming ftrace did not complete on this host (the state records no arm time): run "
                         "playbooks/arm.yml again"), False
    instance = os.path.join(section["tracefs"], "instances", section["instance"])
    per_cpu = read_loss_counters(instance) if trace_file is None else {}
    stats = TraceStats()
    path = trace_file or os.path.join(instance, "trace")
    error = None
    try:
        with open(path, "rb") as stream:
            for event in iter_events(stream, stats):
                lineage.feed(event)
    except OSError as exc:
        error = "cannot read %s: %s" % (path, exc)
        loss.add("the trace could not be read")
    ftrace_loss(loss, per_cpu, stats, clock)
    return ftrace_source(section, stats, per_cpu, loss, clock, error), error is None


def _read_watched(watched, section, clock, loss):
    """With watch on: the drain's persisted state, plus - when it no longer runs - the buffer's unconsumed rest."""
    instance = os.path.join(section["tracefs"], "instances", section["instance"])
    per_cpu = read_loss_counters(instance)
    stats, error, rest_first = watched.stats, None, []
    flushed_until = stats.last_ts  # the last event the drain had persisted
    first_ever = dict(stats.first_ts_per_cpu)
    if not watched.alive:
        path = os.path.join(instance, "trace")
        try:
            with open(path, "rb") as stream:
                for event in iter_events(stream, stats):
                    if not rest_first:
                        rest_first.append(event[1])
                    watched.lineage.feed(event)
        except OSError as exc:
            error = "cannot read %s: %s" % (path, exc)
            loss.add("the trace could not be read")
        for cpu, ts in first_ever.items():
            stats.first_ts_per_cpu[cpu] = ts
    crashed = crash_statement(watched)
    if crashed:
        loss.add(crashed, rest_first[0] if rest_first else None, since_ns=flushed_until)
    ftrace_loss(loss, per_cpu, stats, clock)
    source = ftrace_source(section, stats, per_cpu, loss, clock, error)
    source["watch"] = watch_source(watched, iso_utc)
    return source, error is None


def _witness_and_bridge(lineage, events, offset_arm, losses, snapshot):
    """Combined mode, in one pass over the audit log: audit's facts onto the traced kills, and audit's own
    lineage (seeded with the same snapshot) for the kills and ancestors the trace lost. Returns how many
    kills only audit saw."""
    witness = AuditWitness(lineage, offset_arm, losses.trace_until_ns)
    own = AuditLineage(Lineage(lineage.signals, snapshot_time_ns=lineage.snapshot_time_ns,
                               memory_hierarchy=lineage.memory_hierarchy, serials=lineage.serials), offset_arm)
    if snapshot is not None:
        try:
            own.lineage.add_snapshot(iter_snapshot(snapshot["path"]))
        except OSError:
            pass  # the snapshot source already says it could not be read
    for event in events:
        witness.feed(event)
        if event.success:
            own.feed(event)
    own.flush()
    matches = witness.finish()
    added, _continued = bridge_trace_loss(lineage, own.lineage, matches, witness.unmatched)
    losses.audit_bridged = True
    return added


def _read_audit(lineage, section, offset_arm, losses, traced, audit_log, run, snapshot):
    """Stream the audit log: enrich the traced kills, or (no usable trace) build the lineage from it."""
    if section is None:
        return not_armed("not armed (sigsleuth_sources leaves audit out, and sigsleuth_audit_where_running is off)")
    if section.get("armed") is False:
        return not_armed(section.get("reason") or "not armed")
    status = status_error = None
    try:
        status = audit_status(**({} if run is None else {"run": run}))
    except (SigsleuthError, OSError) as exc:
        status_error = "cannot read the audit status: %s" % exc
    stats = AuditStats()
    events = iter_audit_events(audit_log or section.get("log_file"), since_ns=section.get("armed_at_ns"),
                               stats=stats)
    only_audit_saw = None
    try:
        if traced:
            only_audit_saw = _witness_and_bridge(lineage, events, offset_arm, losses, snapshot)
        else:
            feed_audit_lineage(lineage, events, offset_arm)
    except (OSError, ValueError) as exc:
        stats.errors.append("reading the audit log failed: %s" % exc)
    audit_loss(losses.audit, stats, section, status)
    return audit_source(section, stats, losses.audit, not traced, status, status_error, only_audit_saw)
