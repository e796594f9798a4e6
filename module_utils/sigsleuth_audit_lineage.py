# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Audit alone builds the lineage: forks, execs and kills from audit.log. Standard library only; Python 3.9+.
"""Audit-only mode: audit's fork, exec and kill events feed the lineage engine.

Audit has no exit events and no thread ids; what that leaves open is said in the report. Audit stamps are
wall-clock milliseconds from a coarse clock taken at syscall entry; they are moved onto the boot clock with
the arm-time offset.
"""

from __future__ import annotations

import collections

from ansible.module_utils.sigsleuth_attribution import SendEvidence, attribute
from ansible.module_utils.sigsleuth_lineage import Kill
from ansible.module_utils.sigsleuth_vocabulary import (
    CLONE_NEWPID, CLONE_THREAD, EXEC_SYSCALLS, FORK_SYSCALLS, KILL_SYSCALLS, SIGKILL, SOURCE_AUDIT,
    SOURCE_UNSEEN, UNSHARE_SYSCALL,
)

# How long an audited exec of a known pid waits for a fork returning that pid (a vfork child's exec is
# logged before its parent's clone returns, and a newcomer may have reused the pid).
EXEC_HOLD_NS = 200_000_000
# Forks and execs remembered for an exec that is read after forks that came after it: the newest acts of
# the processes that acted last.
RECENT_PROCESSES = 1024
RECENT_ACTS_EACH = 32


def feed_audit_lineage(lineage, events, offset_ns):
    """Build the lineage from audit alone: forks (with the fork rules armed), execs and kills."""
    feeder = AuditLineage(lineage, offset_ns)
    for event in events:
        if event.success:
            feeder.feed(event)
    feeder.flush()


class AuditLineage:
    """Audit events into the lineage, in the order they happened rather than the order they were logged.

    A vfork/posix_spawn child's execve is logged before the clone that created it returns in the parent. An
    exec of a pid that already has an incarnation is therefore held back for EXEC_HOLD_NS: if a fork
    returning that pid arrives meanwhile, the exec belongs to the new process, never to the old owner. Any
    event that involves the pid before then (its own fork, exec or kill, a kill aimed at it) applies the held
    exec first, so facts keep their order.

    A log whose events are out of order may also show a parent's forks before the exec that came before
    them (audit numbers a task's syscalls in the order they return): the children it forked after that exec
    then take the exec's image when it is read.
    """

    def __init__(self, lineage, offset_ns):
        self.lineage = lineage
        self.offset_ns = offset_ns
        # Notes given to a process because its fork had not been read yet: process key -> notes.
        self.provisional = {}
        # Pid namespaces: fork returns the child's pid as the parent's namespace sees it, while audit's pid=
        # and ppid= are global. A process inside a child namespace gets its forks ignored (its children are
        # linked by their ppid when they act); an unshare(CLONE_NEWPID) caller's later children live in one.
        self.in_child_ns = set()   # process keys
        self.unsharers = set()     # process keys
        self.sigkilled = {}  # victim key -> its SIGKILL record: a second SIGKILL only reaches a dying process
        self.held = []       # (ts, exec event) held back, oldest first
        # process key -> the kills it sent while its fork had not been read: the fork, when read, completes them
        self.kills_before_fork = {}
        # process key -> [(serial, the child it forked, or None for an exec)], both least recent first
        self.recent = collections.OrderedDict()

    def feed(self, event):
        ts = event.time_ns - self.offset_ns
        while self.held and self.held[0][0] < ts - EXEC_HOLD_NS:
            self._exec(*self.held.pop(0))
        name = event.syscall
        if name == UNSHARE_SYSCALL:
            if event.args[0] & CLONE_NEWPID:
                self.unsharers.add(self.lineage.process_of(event.pid, event.pid, ts).key)
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
            for victim_pid, _victim_name in event.victims():
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
        self._adopt_unseen(event, ts)  # a forker not seen before is linked by the ppid its clone recorded
        parent = lineage.process_of(event.pid, event.pid, ts)
        name_from(parent, event.comm)
        if not event.child_pid or event.child_pid <= 0 or parent.key in self.in_child_ns:
            return  # in a child namespace the pid is namespace-local: the child is linked by its ppid
        thread = None  # clone3 keeps its flags in memory audit does not record
        if event.syscall == "clone":
            thread = bool(event.args[0] & CLONE_THREAD)
        elif event.syscall in ("fork", "vfork"):
            thread = False
        proc = lineage.fork(ts, event.pid, event.pid, event.child_pid, thread=thread, source=SOURCE_AUDIT)
        if proc is None:
            return
        self._settle_provisional(proc)
        for kill in self.kills_before_fork.pop(proc.key, ()):
            if kill.sender is proc:
                lineage.recapture_after_fork(kill)
        self._remember(parent, event.serial, proc)
        if parent.key in self.unsharers or (event.syscall == "clone" and event.args[0] & CLONE_NEWPID):
            self.in_child_ns.add(proc.key)
        self._release(event.child_pid)  # an exec held back for this pid is the new child's

    def _exec(self, ts, event):
        self._adopt_unseen(event, ts)
        proc = self.lineage.exec(ts, event.pid, event.exe, source=SOURCE_AUDIT, comm=event.comm, argv=event.argv)
        set_facts(proc, event.identity())
        self._pass_on_image(proc, event.serial)

    def _remember(self, proc, serial, child):
        """A fork of child (an exec when child is None) by proc, kept while proc is among the last to act;
        returns proc's earlier acts."""
        acts = self.recent.get(proc.key)
        if acts is None:
            acts = self.recent[proc.key] = []
            if len(self.recent) > RECENT_PROCESSES:
                self.recent.popitem(last=False)
        else:
            self.recent.move_to_end(proc.key)
            if len(acts) >= RECENT_ACTS_EACH:
                del acts[0]
        acts.append((serial, child))
        return acts

    def _pass_on_image(self, proc, serial):
        """The children proc forked after this exec and before its next one (by serial) that were read before
        the exec take its image, and pass it on to their own children unless they exec'd themselves."""
        acts = self._remember(proc, serial, None)
        if serial is None or all(other is None or other < serial for other, _act in acts[:-1]):
            return  # in log order: nothing of proc was read after this exec
        later_execs = [other for other, child in acts if child is None and other is not None and other > serial]
        todo = [(proc, serial, min(later_execs, default=None))]
        done = set()
        while todo:
            parent, after, until = todo.pop()
            for fork_serial, child in self.recent.get(parent.key, ()):
                if child is None or child.parent is not parent or child.key in done:
                    continue
                if not _between(fork_serial, after, until):
                    continue
                done.add(child.key)
                if self.lineage.inherit_image(child, parent):
                    todo.append((child, None, None))  # it never exec'd: all its forks have this image

    def _kill(self, ts, event):
        lineage = self.lineage
        self._adopt_unseen(event, ts)
        sender = lineage.process_of(event.pid, event.pid, ts)
        name_from(sender, event.comm)
        set_facts(sender, event.identity())
        for victim_pid, victim_comm in event.victims():
            victim = lineage.process_of(victim_pid, None, ts)
            name_from(victim, victim_comm)
            earlier = self.sigkilled.get(victim.key) if event.signal == SIGKILL else None
            if earlier is not None:
                earlier.count += 1
                continue
            send = SendEvidence(current=sender, signal=event.signal)
            send.audit = event
            kill = Kill(ts_ns=ts, signal=event.signal, victim=victim, victim_tid=event.target_tid or victim_pid,
                        syscall_args={"syscall": event.syscall, "target": event.target_pid}, send=send,
                        audit=event.witness())
            attribute(kill)
            lineage.record_kill(kill)
            if kill.sender is sender:
                if sender.source == SOURCE_UNSEEN:
                    self.kills_before_fork.setdefault(sender.key, []).append(kill)
                if kill.sender_at_kill.exe is None and event.exe:
                    # The kernel's own record of the caller's executable at the kill.
                    kill.audit_facts.setdefault(sender.key, {})["exe"] = event.exe
            if event.signal == SIGKILL:
                self.sigkilled[victim.key] = kill

    def _adopt_unseen(self, event, ts):
        """A process whose fork was not audited (its parent predates audit being enabled) gets the ppid audit
        recorded at its fork, exec or kill as its parent, with a note: that may be an adopter if the real
        parent had already exited.

        Its fork may still come: a vfork/posix_spawn parent's clone is logged when it returns, after the
        child's exec. The notes given here are kept in `provisional` so that fork can take them back.
        """
        lineage = self.lineage
        proc = lineage.process_of(event.pid, event.pid, ts)
        if proc.source != SOURCE_UNSEEN:
            return
        if proc.parent is None and event.ppid and event.ppid != event.pid:
            parent = lineage.by_pid.get(event.ppid)
            if parent is not None:
                lineage.adopt(proc, parent)
                if parent.key in self.in_child_ns:
                    self.in_child_ns.add(proc.key)
                    why = "it was forked inside a pid namespace, where fork returns namespace-local pids"
                else:
                    why = "its fork was not audited"
                proc.notes.append("%s; its parent is the ppid %d audit recorded at %s, which is the adopting "
                                  "process instead if the real parent had already exited"
                                  % (why, event.ppid, event.syscall))
                proc.parent_by_ppid = (event.ppid, event.syscall)
        self.provisional[proc.key] = list(proc.notes)

    def _settle_provisional(self, proc):
        """The fork of a process first seen exec'ing was read after all: drop what was said for lack of it."""
        notes = self.provisional.pop(proc.key, None)
        if notes is not None and proc.source == SOURCE_AUDIT:
            proc.notes[:] = [note for note in proc.notes if note not in notes]
            proc.parent_by_ppid = None


def _between(serial, after, until):
    """serial comes after `after` and before `until` (either None: no bound; an unknown serial is only
    inside no bounds)."""
    if after is None and until is None:
        return True
    return serial is not None and (after is None or serial > after) and (until is None or serial < until)


def name_from(proc, comm):
    """Audit records the task's name at each syscall: the newest one is its name now (prctl renames too)."""
    if comm is not None and comm != proc.comm:
        proc.comm = comm
        proc.facts_from["comm"] = SOURCE_AUDIT


def set_facts(proc, facts):
    """Audit's identity facts onto a process, labelled as audit's."""
    for key, value in facts.items():
        if key == "uid":
            proc.uid = value
        else:
            proc.extra[key] = value
        proc.facts_from[key] = SOURCE_AUDIT
