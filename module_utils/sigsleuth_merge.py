# -*- coding: utf-8 -*-
# Audit as the second witness: audit events into the lineage. Standard library only; Python 3.9+.
"""Two ways audit events meet the lineage engine.

* Audit-only (`feed_audit_lineage`): fork, exec and kill events build the lineage themselves. Audit has no
  exit events and no thread ids; what that leaves open is said in the report.
* Combined (`enrich_with_audit`): ftrace built the lineage; audit adds who (uid, auid, euid, ses, tty), argv
  and cwd to each kill's sender and ancestors, and the syscall and rule key to each kill. Both passes stream
  the audit log and keep only what concerns the processes named in kills.

Audit stamps are wall-clock milliseconds from a coarse clock taken at syscall entry; ftrace stamps are boot
clock microseconds. Events are matched by pid and time, never by order.
"""

from __future__ import annotations

from ansible.module_utils.sigsleuth_lineage import CLONE_THREAD, SOURCE_AUDIT, SOURCE_UNSEEN, Kill

CLONE_NEWPID = 0x20000000
SIGKILL = 9

FORK_SYSCALLS = frozenset(("clone", "clone3", "fork", "vfork"))
EXEC_SYSCALLS = frozenset(("execve", "execveat"))
KILL_SYSCALLS = frozenset(("kill", "tkill", "tgkill", "pidfd_send_signal", "rt_sigqueueinfo", "rt_tgsigqueueinfo"))
# How far apart the two witnesses' stamps of one kill may be: the audit clock is coarse (up to a tick behind).
KILL_MATCH_NS = 50_000_000
# An audited exec matches a traced one stamped this much earlier (coarse clock) ...
LIFE_SLACK_NS = 20_000_000
# ... or up to this much later (the trace fires once the new program is loaded).
EXEC_MATCH_NS = 500_000_000
# How long an audited exec of a known pid waits for a fork returning that pid (a vfork child's exec is
# logged before its parent's clone returns, and a newcomer may have reused the pid).
EXEC_HOLD_NS = 200_000_000
UNTRACED_EXEC_NOTE = ("audit facts from an exec the trace did not see (trace events were lost then): "
                      "attributed by time alone")
IDENTITY_FIELDS = ("uid", "auid", "euid", "ses", "tty", "cwd")


def _identity(event):
    return {name: getattr(event, name) for name in IDENTITY_FIELDS if getattr(event, name) is not None}


# ---------------------------------------------------------------- audit-only

def feed_audit_lineage(lineage, events, offset_ns):
    """Build the lineage from audit alone: forks (with the fork rules armed), execs and kills."""
    feeder = _AuditLineage(lineage, offset_ns)
    for event in events:
        if event.success:
            feeder.feed(event)
    feeder.flush()


class _AuditLineage:
    """Audit events into the lineage, in the order they happened rather than the order they were logged.

    A vfork/posix_spawn child's execve is logged before the clone that created it returns in the parent. An
    exec of a pid that already has an incarnation is therefore held back for EXEC_HOLD_NS: if a fork
    returning that pid arrives meanwhile, the exec belongs to the new process, never to the old owner. Any
    event that involves the pid before then (its own fork, exec or kill, a kill aimed at it) applies the held
    exec first, so facts keep their order.
    """

    def __init__(self, lineage, offset_ns):
        self.lineage = lineage
        self.offset_ns = offset_ns
        # Notes given to a process because its fork had not been read yet: id(process) -> (process, notes).
        self.provisional = {}
        # Pid namespaces: fork returns the child's pid as the parent's namespace sees it, while audit's pid=
        # and ppid= are global. A process inside a child namespace gets its forks ignored (its children are
        # linked by their ppid when they act); an unshare(CLONE_NEWPID) caller's later children live in one.
        self.in_child_ns = set()
        self.unsharers = set()
        self.sigkilled = {}  # id(victim) -> its SIGKILL record: a second SIGKILL only reaches a dying process
        self.held = []       # (ts, exec event) held back, oldest first

    def feed(self, event):
        ts = event.time_ns - self.offset_ns
        while self.held and self.held[0][0] < ts - EXEC_HOLD_NS:
            self._exec(*self.held.pop(0))
        name = event.syscall
        if name == "unshare":
            if event.args[0] & CLONE_NEWPID:
                self.unsharers.add(id(self.lineage.process_of(event.pid, event.pid, ts)))
        elif name in FORK_SYSCALLS:
            self._fork(ts, event)
        elif name in EXEC_SYSCALLS:
            self._release(event.pid)
            if event.pid in self.lineage.by_pid:
                # Maybe a newcomer in a reused pid whose vfork is logged next: wait for it, or for the
                # process's own next act (fork, kill), or EXEC_HOLD_NS.
                self.held.append((ts, event))
            else:
                self._exec(ts, event)
        elif name in KILL_SYSCALLS and event.signal in self.lineage.signals:
            # Execs held for the sender and its victims happened before the kill: they come first.
            self._release(event.pid)
            for victim_pid, _ in _victims(event):
                self._release(victim_pid)
            self._kill(ts, event)

    def flush(self):
        for ts, event in self.held:
            self._exec(ts, event)
        self.held = []

    def _release(self, pid):
        for item in [item for item in self.held if item[1].pid == pid]:
            self.held.remove(item)
            self._exec(*item)

    def _fork(self, ts, event):
        lineage = self.lineage
        self._release(event.pid)
        parent = lineage.process_of(event.pid, event.pid, ts)
        _name_from(parent, event.comm)
        if not event.child_pid or event.child_pid <= 0 or id(parent) in self.in_child_ns:
            return  # in a child namespace the pid is namespace-local: the child is linked by its ppid
        thread = None  # clone3 keeps its flags in memory audit does not record
        if event.syscall == "clone":
            thread = bool(event.args[0] & CLONE_THREAD)
        elif event.syscall in ("fork", "vfork"):
            thread = False
        proc = lineage.fork(ts, event.pid, event.pid, event.child_pid, thread=thread, source=SOURCE_AUDIT)
        if proc is None:
            return
        _settle_provisional(proc, self.provisional)
        if id(parent) in self.unsharers or (event.syscall == "clone" and event.args[0] & CLONE_NEWPID):
            self.in_child_ns.add(id(proc))
        self._release(event.child_pid)  # an exec held back for this pid is the new child's

    def _exec(self, ts, event):
        lineage = self.lineage
        _adopt_unseen(lineage, event, ts, self.provisional, self.in_child_ns)
        proc = lineage.exec(ts, event.pid, event.exe, source=SOURCE_AUDIT, comm=event.comm, argv=event.argv)
        for key, value in _identity(event).items():
            _set_fact(proc, key, value)

    def _kill(self, ts, event):
        lineage = self.lineage
        _adopt_unseen(lineage, event, ts, self.provisional, self.in_child_ns)
        sender = lineage.process_of(event.pid, event.pid, ts)
        _name_from(sender, event.comm)
        for key, value in _identity(event).items():
            _set_fact(sender, key, value)
        for victim_pid, victim_comm in _victims(event):
            victim = lineage.process_of(victim_pid, None, ts)
            _name_from(victim, victim_comm)
            earlier = self.sigkilled.get(id(victim)) if event.signal == SIGKILL else None
            if earlier is not None:
                earlier.count += 1
                continue
            kill = Kill(ts_ns=ts, signal=event.signal, code=None, errno=None, result=None, group=None,
                        sender=sender, sender_tid=None, victim=victim,
                        victim_tid=event.target_tid or victim_pid, chain=[], mechanism=event.syscall,
                        origin="user", evidence=["audit:%s#%d" % (event.syscall, event.serial)], count=1,
                        syscall_args={"syscall": event.syscall, "target": event.target_pid}, notes=[],
                        trigger=None, oom=None)
            kill.audit = _kill_audit(event, self.offset_ns)
            lineage.record_kill(kill)
            if event.signal == SIGKILL:
                self.sigkilled[id(victim)] = kill


def _name_from(proc, comm):
    """Audit records the task's name at each syscall: the newest one is its name now (prctl renames too)."""
    if comm is not None and comm != proc.comm:
        proc.comm = comm
        proc.facts_from["comm"] = SOURCE_AUDIT


def _victims(event):
    """(pid, name at the kill) of each target; the name is None when audit gave no OBJ_PID record."""
    targets = [(entry.get("pid"), entry.get("comm")) for entry in event.obj_pids or () if entry.get("pid")]
    if not targets and event.target_pid and event.target_pid > 0:
        targets = [(event.target_pid, None)]
    return targets


def _adopt_unseen(lineage, event, ts, provisional, in_child_ns):
    """A process whose fork was not audited (its parent predates audit being enabled) gets the ppid audit
    recorded as its parent, with a note: that may be an adopter if the real parent had already exited.

    Its fork may still come: a vfork/posix_spawn parent's clone is logged when it returns, after the child's
    exec. The notes given here are kept in `provisional` so that fork can take them back.
    """
    proc = lineage.process_of(event.pid, event.pid, ts)
    if proc.source != SOURCE_UNSEEN:
        return
    if proc.parent is None and event.ppid and event.ppid != event.pid:
        parent = lineage.by_pid.get(event.ppid)
        if parent is not None:
            proc.parent = parent
            parent.live_children += 1
            if id(parent) in in_child_ns:
                in_child_ns.add(id(proc))
                why = "it was forked inside a pid namespace, where fork returns namespace-local pids"
            else:
                why = "its fork was not audited"
            proc.notes.append("%s; its parent is the ppid %d audit recorded at %s, which is the adopting process "
                              "instead if the real parent had already exited" % (why, event.ppid, event.syscall))
    provisional[id(proc)] = (proc, list(proc.notes))


def _settle_provisional(proc, provisional):
    """The fork of a process first seen exec'ing was read after all: drop what was said for lack of it."""
    if proc is None:
        return
    entry = provisional.pop(id(proc), None)
    if entry is not None and entry[0] is proc and proc.source == SOURCE_AUDIT:
        proc.notes[:] = [note for note in proc.notes if note not in entry[1]]


def _set_fact(proc, key, value):
    setattr(proc, key, value) if key == "uid" else proc.extra.__setitem__(key, value)
    proc.facts_from[key] = SOURCE_AUDIT


def _kill_audit(event, offset_ns):
    return {"serial": event.serial, "time_ns": event.time_ns, "key": event.key, "syscall": event.syscall,
            "ppid": event.ppid, "exe": event.exe}


# ---------------------------------------------------------------- combined

def enrich_with_audit(lineage, events, offset_ns, loss_until_ns=None):
    """Add audit's facts to the kills ftrace found; returns how many armed-signal kill events audit had
    that no traced kill matches (a sign that the trace lost them)."""
    interest = {}
    for kill in lineage.kills:
        for proc in _members(kill):
            bucket = interest.setdefault(proc.pid, [])
            if all(known is not proc for known in bucket):
                bucket.append(proc)
    by_sender = {}
    for kill in lineage.kills:
        if kill.sender is not None:
            by_sender.setdefault(kill.sender.pid, []).append(kill)
    execs = {}          # id(process) -> [(ts, event)]
    best = {}           # id(kill) -> (distance, event)
    unmatched = 0
    for event in events:
        name = event.syscall
        if name in KILL_SYSCALLS:
            if event.signal not in lineage.signals or not event.success:
                continue
            ts = event.time_ns - offset_ns
            matched = False
            for kill in by_sender.get(event.pid, ()):
                distance = abs(ts - kill.ts_ns)
                if kill.signal == event.signal and distance <= KILL_MATCH_NS and _targets(event, kill):
                    matched = True
                    if id(kill) not in best or distance < best[id(kill)][0]:
                        best[id(kill)] = (distance, event)
            unmatched += not matched
        elif name in EXEC_SYSCALLS and event.success and event.pid in interest:
            ts = event.time_ns - offset_ns
            proc = _incarnation_at(interest[event.pid], event, ts, loss_until_ns)
            if proc is not None:
                execs.setdefault(id(proc), []).append((ts, event))
    for kill in lineage.kills:
        _apply(kill, best.get(id(kill)), execs, offset_ns)
    return unmatched


def _members(kill):
    members = [kill.victim]
    if kill.sender is not None:
        members.append(kill.sender)
    members.extend(proc for proc, _, _, _ in kill.chain)
    return members


def _targets(event, kill):
    victims = [pid for pid, _ in _victims(event)]
    return not victims or kill.victim.pid in victims or (event.target_pid or 0) < 0


def _incarnation_at(procs, event, ts, loss_until_ns):
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


def _apply(kill, match, execs, offset_ns):
    """Attach the facts audit knew at the moment of the kill to the kill, its sender and ancestors."""
    kill.audit_facts = {}
    for proc in _members(kill):
        latest = None
        for ts, event in execs.get(id(proc), ()):
            if ts <= kill.ts_ns + LIFE_SLACK_NS and (latest is None or ts >= latest[0]):
                latest = (ts, event)
        if latest is not None:
            facts = _identity(latest[1])
            if latest[1].argv is not None:
                facts["argv"] = latest[1].argv
            kill.audit_facts[id(proc)] = facts
    if match is None:
        if kill.sender is not None and kill.origin == "user":
            kill.notes.append("audit recorded no matching kill-family syscall for this send")
        return
    event = match[1]
    kill.evidence.append("audit:%s#%d" % (event.syscall, event.serial))
    kill.audit = _kill_audit(event, offset_ns)
    if kill.mechanism in ("unknown", "kill") and event.syscall:
        kill.mechanism = event.syscall
    sender_facts = kill.audit_facts.setdefault(id(kill.sender), {})
    sender_facts.update(_identity(event))
    # A kill's PROCTITLE can be the one audit cached before the sender's last exec: trust it only when the
    # sender has not exec'd since arming.
    if "argv" not in sender_facts and event.argv is not None and not kill.sender.exec_times:
        sender_facts["argv"] = event.argv
    parent = kill.sender.parent
    if event.ppid is not None and parent is not None and event.ppid != parent.pid:
        # Not a gap: the traced fork names the real parent; audit's ppid is the kernel's current parent.
        if parent.exited and (parent.exit_ns is None or parent.exit_ns <= kill.ts_ns):
            note = ("adopted by pid %d after its fork parent pid %d (%s) exited (audit's ppid at the kill); the "
                    "ancestry follows the fork parent" % (event.ppid, parent.pid, parent.comm))
        else:
            note = ("audit's ppid at the kill is %d, but pid %d (%s) forked it (e.g. with CLONE_PARENT, which makes "
                    "the forker's parent the kernel parent); the ancestry follows the forker"
                    % (event.ppid, parent.pid, parent.comm))
        if note not in kill.sender.notes:
            kill.sender.notes.append(note)
