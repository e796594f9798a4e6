# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Combined mode: audit as the second witness of what ftrace saw. Standard library only; Python 3.9+.
"""ftrace built the lineage; audit adds who (uid, auid, euid, ses, tty), argv and cwd to each kill's sender
and ancestors, and the syscall and rule key to each kill (`AuditWitness`). Where the trace lost events,
audit's own lineage, built in the same pass over the audit log, adds the kills the trace lost and continues
ancestries the trace could not (`bridge_trace_loss`).

Audit stamps are wall-clock milliseconds from a coarse clock taken at syscall entry; ftrace stamps are boot
clock microseconds. Events are matched by pid and time, never by order.
"""

from __future__ import annotations

from ansible.module_utils.sigsleuth_attribution import ORIGIN_USER, attribute
from ansible.module_utils.sigsleuth_lineage import MAX_ANCESTRY, SAME_PROCESS_SLACK_NS
from ansible.module_utils.sigsleuth_vocabulary import EXEC_SYSCALLS, KILL_SYSCALLS, SOURCE_UNSEEN

# How far apart the two witnesses' stamps of one kill may be: the audit clock is coarse (up to a tick behind).
KILL_MATCH_NS = 50_000_000
# An audited exec matches a traced one stamped this much earlier (coarse clock) ...
LIFE_SLACK_NS = 20_000_000
# ... or up to this much later (the trace fires once the new program is loaded).
EXEC_MATCH_NS = 500_000_000
UNTRACED_EXEC_NOTE = ("audit facts from an exec the trace did not see (trace events were lost then): "
                      "attributed by time alone")
_KILLS, _EXECS = frozenset(KILL_SYSCALLS), frozenset(EXEC_SYSCALLS)


class AuditWitness:
    """Audit's events, one at a time, set against the kills the trace found (see the module docstring)."""

    def __init__(self, lineage, offset_ns, loss_until_ns=None):
        self.lineage = lineage
        self.offset_ns = offset_ns
        self.loss_until_ns = loss_until_ns
        self.interest = {}   # pid -> the incarnations of that pid named in kills
        self.by_sender = {}  # sender pid -> [(kill index, kill)]
        for index, kill in enumerate(lineage.kills):
            for proc in kill.members():
                bucket = self.interest.setdefault(proc.pid, [])
                if all(known is not proc for known in bucket):
                    bucket.append(proc)
            if kill.sender is not None:
                self.by_sender.setdefault(kill.sender.pid, []).append((index, kill))
        self.execs = {}      # process key -> [(ts, exec event)]
        self.best = {}       # kill index -> (distance, kill event)
        self.unmatched = []  # serials of armed-signal kill events no traced kill matches

    def feed(self, event):
        if event.syscall in _KILLS:
            if event.signal in self.lineage.signals and event.success \
                    and not _match_kill(event, event.time_ns - self.offset_ns, self.by_sender, self.best):
                self.unmatched.append(event.serial)
        elif event.syscall in _EXECS and event.success and event.pid in self.interest:
            ts = event.time_ns - self.offset_ns
            proc = _incarnation_at(self.interest[event.pid], ts, self.loss_until_ns)
            if proc is not None:
                self.execs.setdefault(proc.key, []).append((ts, event))

    def finish(self):
        """Attach what audit knew to each traced kill; returns {kill index: the audit kill event matched}."""
        for index, kill in enumerate(self.lineage.kills):
            _apply(kill, self.best.get(index), self.execs)
        return {index: match[1] for index, match in self.best.items()}


def _match_kill(event, ts, by_sender, best):
    """Note the audited kill against each traced kill it may be; True when there was one."""
    matched = False
    victims = [pid for pid, _name in event.victims()]
    for index, kill in by_sender.get(event.pid, ()):
        distance = abs(ts - kill.ts_ns)
        targets = not victims or kill.victim.pid in victims or (event.target_pid or 0) < 0
        if kill.signal == event.signal and distance <= KILL_MATCH_NS and targets:
            matched = True
            if index not in best or distance < best[index][0]:
                best[index] = (distance, event)
    return matched


def _incarnation_at(procs, ts, loss_until_ns):
    """The incarnation that made an audited exec at ts, or None.

    The trace saw every exec since arming, so an audited exec belongs to the incarnation with a traced exec
    at that moment: the audit stamp is read at syscall entry from a coarse clock (up to a tick early) and
    the trace's sched_process_exec fires when loading is done (later still). Matching lives instead would
    give a reused pid's newcomer to the old process. Only where trace events were lost does a life that
    covers the stamp stand in, with a note.
    """
    best = None
    for proc in procs:
        for traced in proc.exec_times or ():
            distance = traced - ts
            if -LIFE_SLACK_NS <= distance <= EXEC_MATCH_NS and (best is None or abs(distance) < best[0]):
                best = (abs(distance), proc)
    if best is not None:
        return best[1]
    if loss_until_ns is None or ts > loss_until_ns:
        return None
    for proc in procs:
        start = proc.start_ns if proc.start_ns is not None else proc.known_since_ns
        if (start is None or ts >= start - LIFE_SLACK_NS) and (proc.exit_ns is None or ts <= proc.exit_ns):
            if UNTRACED_EXEC_NOTE not in proc.notes:
                proc.notes.append(UNTRACED_EXEC_NOTE)
            return proc
    return None


def _apply(kill, match, execs):
    """Attach the facts audit knew at the moment of the kill to the kill, its sender and ancestors."""
    for proc in kill.members():
        latest = None
        for ts, event in execs.get(proc.key, ()):
            if ts <= kill.ts_ns + LIFE_SLACK_NS and (latest is None or ts >= latest[0]):
                latest = (ts, event)
        if latest is not None:
            facts = latest[1].identity()
            if latest[1].argv is not None:
                facts["argv"] = latest[1].argv
            kill.audit_facts[proc.key] = facts
    if match is None:
        if kill.sender is not None and kill.origin == ORIGIN_USER:
            kill.notes.append("audit recorded no matching kill-family syscall for this send")
        return
    event = match[1]
    kill.send.audit = event
    kill.audit = event.witness()
    attribute(kill)
    sender_facts = kill.audit_facts.setdefault(kill.sender.key, {})
    sender_facts.update(event.identity())
    if event.exe and kill.sender_at_kill is not None and kill.sender_at_kill.exe is None:
        sender_facts["exe"] = event.exe  # the kernel's own record of the sender's executable at the kill
    # A kill's PROCTITLE can be the one audit cached before the sender's last exec: trust it only when the
    # sender has not exec'd since arming.
    if "argv" not in sender_facts and event.argv is not None and not kill.sender.exec_times:
        sender_facts["argv"] = event.argv
    _note_adoption(kill.sender, event.ppid, kill.ts_ns)


def _note_adoption(sender, audit_ppid, kill_ts):
    """Not a gap: the traced fork names the real parent; audit's ppid is the kernel's current parent."""
    parent = sender.parent
    if audit_ppid is None or parent is None or audit_ppid == parent.pid:
        return
    if parent.exited and (parent.exit_ns is None or parent.exit_ns <= kill_ts):
        note = ("adopted by pid %d after its fork parent pid %d (%s) exited (audit's ppid at the kill); the "
                "ancestry follows the fork parent" % (audit_ppid, parent.pid, parent.comm))
    else:
        note = ("audit's ppid at the kill is %d, but pid %d (%s) forked it (e.g. with CLONE_PARENT, which makes "
                "the forker's parent the kernel parent); the ancestry follows the forker"
                % (audit_ppid, parent.pid, parent.comm))
    if note not in sender.notes:
        sender.notes.append(note)


# ---------------------------------------------------------------- bridging the trace's loss

BRIDGED_NOTE = ("its parent and what lies above come from audit's records (the ppid audit recorded at its exec "
                "or kill; the trace lost its fork)")


def bridge_trace_loss(lineage, audit_lineage, matches, unmatched_serials):
    """Where the trace lost events, let audit's own lineage (built from the same audit log) fill in.

    * A kill audit recorded and no traced kill matches is added to the report as audit saw it, with audit's
      ancestry, never only counted.
    * A traced kill whose ancestry stops at a process the trace never saw start, and which audit's record of
      the same kill can take further, is continued with audit's ancestors, as long as audit's chain agrees
      with the trace's as far as the trace goes; where an ancestor is one the trace knows too (the same pid
      and start), the trace's own chain takes over again from there.
    Returns (kills added, kills continued).
    """
    by_serial = {kill.audit["serial"]: kill for kill in audit_lineage.kills if kill.audit}
    continued = 0
    for index, event in matches.items():
        audit_kill = by_serial.get(event.serial)
        if audit_kill is not None and _continue_ancestry(lineage, lineage.kills[index], audit_kill):
            continued += 1
    added = [by_serial[serial] for serial in unmatched_serials if serial in by_serial]
    for kill in added:
        kill.trace_missed = True
    lineage.kills.extend(added)
    lineage.kills.sort(key=lambda kill: kill.ts_ns)
    return len(added), continued


def _continue_ancestry(lineage, kill, audit_kill):
    if kill.sender is None:
        return False
    chain = [kill.sender] + [ancestor.process for ancestor in kill.ancestry]
    top = chain[-1]
    if top.source != SOURCE_UNSEEN or top.parent is not None:
        return False
    pids = [proc.pid for proc in chain]
    if [audit_kill.sender.pid] + [ancestor.process.pid for ancestor in audit_kill.ancestry][:len(pids) - 1] != pids:
        return False  # audit's chain disagrees with the trace's where both speak: leave it as the trace says
    beyond = audit_kill.ancestry[len(pids) - 1:]  # the top's parent and on up, as audit saw them
    for ancestor in beyond:
        twin = _trace_twin(lineage, ancestor.process)
        if twin is not None:
            kill.ancestry.append(twin.at_kill())
            kill.ancestry.extend(_trace_chain_above(twin))
            break
        kill.ancestry.append(ancestor)
    if beyond:
        top.notes.append(BRIDGED_NOTE)
    return bool(beyond)


def _trace_twin(lineage, proc):
    """The trace's incarnation of the same process (same pid and start), or None."""
    known = lineage.by_pid.get(proc.pid)
    if known is None or known.start_ns is None or proc.start_ns is None:
        return None
    return known if abs(known.start_ns - proc.start_ns) <= SAME_PROCESS_SLACK_NS else None


def _trace_chain_above(proc):
    above = []
    parent = proc.parent
    while parent is not None and len(above) < MAX_ANCESTRY:
        above.append(parent.at_kill())
        parent = parent.parent
    return above
