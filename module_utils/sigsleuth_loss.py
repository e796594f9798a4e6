# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Loss and gaps: what each source lost, stated once, and what that leaves open in each kill. Stdlib only.
"""Every source's loss is one `SourceLoss`: its reasons are stated once, in ``sources.<name>.loss``, and a
kill whose record they may affect says so briefly in its ``gaps``, pointing there (`kill_gaps`).

The trace's loss has a window: every event at or before `until_ns` (boot clock) may be missing, so an
identity established before it and used after it is unverified. Audit's loss has no window (its records
carry no per-CPU position): it is a caveat on every kill that audit informed.
"""

from __future__ import annotations

from ansible.module_utils.sigsleuth_audit_log import MAX_PENDING
from ansible.module_utils.sigsleuth_vocabulary import SOURCE_UNSEEN

SOURCE_FTRACE = "ftrace"
SOURCE_AUDIT = "audit"


class SourceLoss:
    """What one source lost since arming."""

    def __init__(self, source):
        self.source = source
        self.reasons = []
        self.until_ns = None  # boot ns of the end of the loss window; None when there is none, or no window
        self.since_ns = None  # boot ns of its start, when known (a watch drain's last flush): kills before it
        #                       were recorded, with their ancestry, before anything was lost

    def add(self, reason, until_ns=None, since_ns=None):
        if until_ns is not None and (self.until_ns is None or until_ns > self.until_ns):
            self.until_ns = until_ns
        if since_ns is not None:
            self.since_ns = since_ns if self.since_ns is None else min(self.since_ns, since_ns)
        self.reasons.append(reason)

    def __bool__(self):
        return bool(self.reasons)

    def statement(self):
        """The one plain-language statement of this loss (sources.<name>.loss), or None."""
        return "; ".join(self.reasons) if self.reasons else None

    def pointer(self, clock):
        """A brief mention for a kill's gaps, pointing at the statement."""
        if self.until_ns is not None:
            return "%s lost events before %s (see sources.%s.loss)" % (
                self.source, clock.short(self.until_ns), self.source)
        return "%s lost records (see sources.%s.loss)" % (self.source, self.source)

    def covers(self, boot_ns):
        """True when something at boot_ns may have been lost."""
        return bool(self.reasons) and (self.until_ns is None or (boot_ns is not None and boot_ns <= self.until_ns))


class Losses:
    """The losses of one collection: ftrace's, audit's and a wall-clock step."""

    def __init__(self):
        self.ftrace = SourceLoss(SOURCE_FTRACE)
        self.audit = SourceLoss(SOURCE_AUDIT)
        self.clock_step = None  # the statement in sources.clock.step, or None
        self.audit_bridged = False  # audit's own lineage was asked where the trace's lost events

    @property
    def trace_until_ns(self):
        return self.ftrace.until_ns


# ---------------------------------------------------------------- each source's loss

def ftrace_loss(loss, per_cpu, stats, clock):
    """Fill the ftrace SourceLoss from the live per-CPU counters and what the parser saw in the text.

    per_cpu: {cpu: counters} from sigsleuth_tracefs.read_loss_counters (empty for a saved trace); stats: the
    parser's TraceStats.
    """
    overrun_cpus = set()
    for cpu, counters in sorted(per_cpu.items()):
        oldest = counters.get("oldest_event_ts_ns")
        overrun = counters.get("overrun", 0) or 0
        dropped = (counters.get("dropped_events", 0) or 0) + (counters.get("commit_overrun", 0) or 0)
        if overrun:
            overrun_cpus.add(cpu)
        if overrun or dropped:
            until = oldest if isinstance(oldest, int) else stats.last_ts
            loss.add("CPU %d lost %d events to buffer overrun and %d dropped, before %s"
                     % (cpu, overrun, dropped, clock.iso(until) or "an unknown time"), until)
    for cpu, count, ts in stats.lost_markers:
        loss.add("CPU %d reported %s lost events at %s" % (cpu, "an unknown number of" if count is None else count,
                                                           clock.iso(ts) or "an unknown time"), ts)
    for cpu in sorted(stats.cpu_buffer_started - overrun_cpus):
        # The trace marks a CPU whose oldest events were overwritten; without live counters it is the only sign.
        until = stats.first_ts_per_cpu.get(cpu)
        loss.add("CPU %d's buffer was overwritten: its events before %s are gone"
                 % (cpu, clock.iso(until) or "an unknown time"), until)
    return loss


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


def audit_loss(loss, stats, section=None, status=None):
    for reason in audit_loss_reasons(stats, section, status):
        loss.add(reason)
    return loss


# ---------------------------------------------------------------- a kill's gaps

def _name(proc):
    return "%s[%d]" % (proc.comm if proc.comm is not None else "?", proc.pid)


def kill_gaps(kill, losses, clock):
    """Why this kill's sender, ancestry or victim may be incomplete or unverified; no sentence twice."""
    gaps = []
    for text in list(kill.notes) + [kill.attribution_note] + _chain_gaps(kill, losses, clock) \
            + _loss_gaps(kill, losses, clock):
        if text and text not in gaps:
            gaps.append(text)
    return gaps


def _chain_gaps(kill, losses, clock):
    """Where the sender's ancestry may stop early, or rests on a parent audit could only guess."""
    gaps = []
    chain = ([kill.sender] if kill.sender is not None else []) + [ancestor.process for ancestor in kill.ancestry]
    trace = losses.ftrace
    for proc in chain:
        if proc.parent_by_ppid is not None and proc.parent is not None:
            ppid, syscall = proc.parent_by_ppid
            gaps.append("parent of %s is only the ppid audit recorded at its %s (pid %d): the process that adopted "
                        "it, if its real parent had already exited (its fork was not audited)"
                        % (_name(proc), syscall, ppid))
    top = chain[-1] if chain else None
    if top is not None and top.source == SOURCE_UNSEEN:
        why = trace.pointer(clock) if trace else "it started before arming and was not in the arm-time snapshot"
        if trace and losses.audit_bridged:
            why += ", and audit recorded no fork or exec that names it"
        gaps.append("parent of %s unknown: %s" % (_name(top), why))
    elif top is not None and top.parent is None and top.pid != 1 and top.ppid_hint:
        gaps.append("parent of %s unknown: its parent pid %d at arm time was not in the snapshot"
                    % (_name(top), top.ppid_hint))
    return gaps


def _loss_gaps(kill, losses, clock):
    """What each source's loss may have taken from this kill, pointing to the source's statement."""
    gaps = []
    trace = losses.ftrace
    if kill.trace_missed:
        gaps.append("the trace lost this send (%s): sender, target and ancestry come from audit alone"
                    % trace.pointer(clock) if trace
                    else "only audit recorded this send: the trace has no signal_generate for it")
    if trace.until_ns is not None and (trace.since_ns is None or kill.ts_ns > trace.since_ns):
        chain = ([kill.sender] if kill.sender is not None else []) + [a.process for a in kill.ancestry]
        doubtful = [proc for proc in [kill.victim] + chain
                    if proc.known_since_ns is not None and proc.known_since_ns <= trace.until_ns
                    and not proc.alive_confirmed and proc.source != SOURCE_UNSEEN]
        if doubtful:
            gaps.append("identified from records older than the trace loss, so possibly another process that "
                        "reused the pid: %s (%s)" % (", ".join(_name(proc) for proc in doubtful), trace.pointer(clock)))
        if kill.ts_ns <= trace.until_ns and not kill.trace_missed:
            gaps.append("this kill happened while the trace was losing events (%s)" % trace.pointer(clock))
    if losses.audit:
        gaps.append("audit's record of this kill may be incomplete: %s" % losses.audit.pointer(clock))
    if losses.clock_step:
        gaps.append("times may be off: the wall clock was stepped between arm and collect (see sources.clock.step)")
    return gaps
