# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The lineage engine: process incarnations, their links, and pruning. Standard library only; Python 3.9+.
"""Feed events one at a time; read kills with their sender's ancestry.

Every process is a `Process` object: one incarnation, identified by its `ProcessKey`. A pid that is reused
later gets a new object, so a kill recorded against an earlier incarnation can never pick up a newcomer's
details. Kills capture their sender, victim and ancestry at the moment of the kill; how each send came about
is decided in sigsleuth_attribution.

Time is kept on the boot clock (ns) as the trace records it; the report converts to wall-clock time.
"""

from __future__ import annotations

import collections
import itertools

from ansible.module_utils import sigsleuth_attribution as attribution
from ansible.module_utils.sigsleuth_attribution import (
    EvidenceWindow, SendEvidence, attribute, forget_oldest, remember, rlimit_mechanism,
)
from ansible.module_utils.sigsleuth_procfs import START_TOLERANCE_NS
from ansible.module_utils.sigsleuth_short_lives import (
    EXIT_NS, IMAGE, LIFECYCLE, OWN, PARENT, PID, SERIAL, START_NS, ParentImage, is_short_life,
)
from ansible.module_utils.sigsleuth_trace_parser import (
    CGROUP_ATTACH, EXEC, EXIT, FORK, MARK_VICTIM, NEWTASK, RENAME, SIGNAL_GENERATE,
)
from ansible.module_utils.sigsleuth_vocabulary import (
    CLONE_THREAD, KILL_SYSCALLS, RLIMIT_CPU, RLIMIT_RTTIME, SI_KERNEL, SI_USER, SOURCE_AUDIT, SOURCE_INHERITED, SOURCE_PROC,
    SOURCE_SNAPSHOT, SOURCE_TRACE, SOURCE_UNSEEN, decode_name,
)

# Opens of a cgroup.kill file, recorded with syscall precision where the kernel filters on user-space strings.
CGROUP_KILL_OPENS = ("openat", "open", "openat2")
MAX_ANCESTRY = 512  # a guard against a corrupt cycle, far deeper than any real process tree
NO_LIMITS = frozenset()
# The OOM killer marks its victim right after signalling it.
OOM_MARK_WINDOW_NS = 1_000_000_000
# Audit stamps come from a coarse clock taken at syscall entry: a process seen exec'ing this long before its
# parent's fork (vfork) returned is still the forked one.
SAME_PROCESS_SLACK_NS = 50_000_000

RESULTS = {0: "delivered", 1: "ignored", 2: "already_pending", 3: "overflow_fail", 4: "lose_info"}
UNSEEN_NOTE = "neither its fork nor an arm-time snapshot entry was seen"
# An exiting task sends its children's parent-death signals after its exit event, once its memory and files
# are released; sent later than this, or to any other process, a send from its pid is a later process's.
PARENT_DEATH_WINDOW_NS = 1_000_000_000
# What a child has from its parent's image at fork, and the sources that mean a process knows it of its own.
IMAGE_FACTS = ("comm", "exe", "argv", "uid")
OWN_SOURCES = frozenset((SOURCE_TRACE, SOURCE_AUDIT, SOURCE_SNAPSHOT, SOURCE_PROC))

# One incarnation's identity: its pid (thread group id), its start (boot ns; None while unknown) and the
# lineage's serial number for it, which keeps two incarnations apart even when the start is unknown.
ProcessKey = collections.namedtuple("ProcessKey", "pid start_ns serial")
_new_key = tuple.__new__  # a ProcessKey from a complete tuple, without namedtuple's per-field __new__ (per fork)
# What a process was at the moment of a kill: later renames and execs do not change a kill's record.
ProcessAtKill = collections.namedtuple("ProcessAtKill", "process comm exe argv")


class Process:
    """One incarnation of a process (thread group)."""

    __slots__ = (
        "key", "pid", "start_ns", "parent", "comm", "exe", "argv", "uid", "exit_ns", "exited", "source",
        "known_since_ns", "live_children", "notes", "alive_confirmed", "ppid_hint", "facts_from", "rlimits",
        "ns_pid", "cgroup", "memory_cgroup", "extra", "exec_times", "rlimits_from", "parent_by_ppid",
    )

    def __init__(self, key, parent, comm, exe, source, known_since_ns):
        self.key = key
        self.pid, self.start_ns = key[0], key[1]  # by index: a namedtuple's field access costs more (per fork)
        self.parent = parent
        self.comm = comm
        self.exe = exe
        self.argv = None
        self.uid = None
        self.exit_ns = None
        self.exited = False
        self.source = source
        self.known_since_ns = known_since_ns
        self.live_children = 0
        self.notes = []
        self.alive_confirmed = False
        self.ppid_hint = None  # the parent pid a snapshot reported, when that parent itself is unknown
        self.facts_from = {"comm": source, "exe": source}
        self.rlimits = NO_LIMITS  # resource numbers of CPU-time limits set on it or inherited
        self.rlimits_from = None  # the evidence label of where they were seen
        self.parent_by_ppid = None  # (ppid, syscall): the parent is only audit's ppid at that syscall
        self.ns_pid = None
        self.cgroup = None         # unified (v2) hierarchy path
        self.memory_cgroup = None  # v1 memory controller path
        self.extra = {}  # identity facts only audit knows: auid, euid, ses, tty, cwd
        self.exec_times = None  # boot ns of each exec seen since arming

    def at_kill(self):
        return ProcessAtKill(self, self.comm, self.exe, self.argv)

    def __repr__(self):
        return "Process(%d %r start=%s exited=%s)" % (self.pid, self.comm, self.start_ns, self.exited)


def forked_process(pid, ts, serial, parent, image, source):
    """The child parent forked at ts, with the image (comm, exe, argv, uid, CPU-time limits, cgroups) of image:
    the parent itself, or what the parent was at that fork (a short life told later, sigsleuth_short_lives)."""
    proc = Process(_new_key(ProcessKey, (pid, ts, serial)), parent, image.comm, image.exe, source, ts)
    proc.argv = image.argv
    proc.uid = image.uid
    proc.rlimits, proc.rlimits_from = image.rlimits, image.rlimits_from
    proc.cgroup = image.cgroup
    proc.memory_cgroup = image.memory_cgroup
    proc.facts_from = {"comm": SOURCE_INHERITED, "exe": SOURCE_INHERITED, "argv": SOURCE_INHERITED,
                       "uid": SOURCE_INHERITED}  # IMAGE_FACTS; a literal, as this runs once per fork
    return proc


def _ancestry_now(proc):
    """proc's ancestors as they are now, nearest first (at most MAX_ANCESTRY; a loop is cut)."""
    ancestry, seen = [], set()
    parent = proc.parent
    while parent is not None and len(ancestry) < MAX_ANCESTRY and parent.key not in seen:
        seen.add(parent.key)
        ancestry.append(parent.at_kill())
        parent = parent.parent
    return ancestry


def exec_image(proc, ts, filename, source, comm=None, argv=None):
    """What an exec of filename at ts makes of the process: its exe, comm and argv."""
    proc.exe = filename
    if proc.exec_times is None:
        proc.exec_times = [ts]
    else:
        proc.exec_times.append(ts)
    if comm is None:
        # The kernel names the task after the last path component of the exec'd file, cut to 15 bytes.
        base = filename.rsplit("/", 1)[-1].encode("utf-8", "surrogateescape")[:15]
        # 92 is a backslash: without one, decode_name's own fast path, inline (this runs once per exec).
        comm = base.decode("utf-8", "backslashreplace") if 92 not in base \
            else decode_name(filename.rsplit("/", 1)[-1], limit=15)
    proc.comm = comm
    proc.argv = argv
    proc.facts_from = dict(proc.facts_from, comm=source, exe=source, argv=source if argv is not None else None)


def renamed(proc, candidates):
    """A task_rename of the process: candidates are the (old, new) readings of its line (one, in binary)."""
    if len(candidates) == 1:
        proc.comm = decode_name(candidates[0][1])
    else:
        matching = [new for old, new in candidates if decode_name(old) == proc.comm]
        if len(matching) == 1:
            proc.comm = decode_name(matching[0])
        else:
            proc.notes.append("a rename to one of %r could not be told apart"
                              % [decode_name(new) for _old, new in candidates])
    proc.facts_from["comm"] = SOURCE_TRACE


class Kill:
    """One delivery of an armed signal to one victim. `send` is the evidence attribution decided it from."""

    __slots__ = (
        "ts_ns", "signal", "code", "errno", "result", "group", "sender", "sender_tid", "victim", "victim_tid",
        "ancestry", "mechanism", "origin", "evidence", "count", "syscall_args", "notes", "sender_at_kill",
        "trigger", "oom", "audit", "audit_facts", "send", "attribution_note", "mechanism_candidates",
        "trace_missed",
    )

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))
        self.ancestry = self.ancestry or []
        self.notes = self.notes or []
        self.audit_facts = self.audit_facts or {}
        self.count = self.count or 1

    def members(self):
        """The victim, the sender and its ancestors: every process the kill's record names."""
        return [self.victim] + ([self.sender] if self.sender is not None else []) + [
            ancestor.process for ancestor in self.ancestry]


class Lineage:
    """Process lineage built from a stream of events.

    feed((event, ts_ns, cpu, tid, tgid, fields)) accepts what `sigsleuth_trace_parser.iter_events` yields; the
    add_snapshot() call must come first. `kills` grows as signal events of the armed signals arrive.
    """

    def __init__(self, signals, snapshot_time_ns=None, memory_hierarchy=None, precision="light",
                 opens_traced=False, serials=None):
        """precision: "syscall" when kill-family syscalls and CPU-time limits were traced (their events are
        ignored otherwise, as a light arm would not have them); opens_traced: opens of cgroup.kill too; serials:
        another lineage's incarnation counter, so that the two lineages' ProcessKeys never collide."""
        self.signals = frozenset(signals)
        self.syscalls_traced = precision == "syscall"
        self.opens_traced = self.syscalls_traced and opens_traced
        self.memory_hierarchy = memory_hierarchy  # v1 memory controller's hierarchy id, for cgroup moves
        self.snapshot_time_ns = snapshot_time_ns
        self.by_pid = {}          # tgid -> current Process incarnation (pruned when dead and childless)
        self.thread_group = {}    # tid -> tgid, for threads that are not their group's leader
        self.clone_flags = {}     # new tid -> clone flags, from task_newtask until its fork event
        self.evidence = EvidenceWindow()
        self.kills = []
        self.serials = serials if serials is not None else itertools.count(1)
        self._last_kill = {}      # (victim key, signal) -> Kill, to fold repeated sends
        self.recently_exited = {}  # pid -> exited Process, the newest few: a zombie holds its pid
        self.exited_tids = {}  # tid -> ts of its exit, the newest few: a parent death comes next
        # For the drain, which reads argv in /proc after an exec: when a list, every process the trace shows
        # exec'ing is appended to it, and execs_folded counts the execs of short lives (gone already).
        self.execs_seen = None
        self.execs_folded = 0
        self._handlers = {
            FORK: self._on_fork,
            EXEC: self._on_exec,
            EXIT: self._on_exit,
            NEWTASK: self._on_newtask,
            RENAME: self._on_rename,
            SIGNAL_GENERATE: self._on_signal,
            MARK_VICTIM: self._on_mark_victim,
            CGROUP_ATTACH: self._on_cgroup_attach,
        }
        if self.syscalls_traced:
            self._handlers.update({"sys_enter_prlimit64": self._on_prlimit, "sys_enter_setrlimit": self._on_setrlimit})
            for name in KILL_SYSCALLS:
                self._handlers["sys_enter_" + name] = self._syscall_enter_handler(name)
                self._handlers["sys_exit_" + name] = self._on_syscall_exit
        if self.opens_traced:
            for name in CGROUP_KILL_OPENS:
                self._handlers["sys_enter_" + name] = self._on_cgroup_kill_open

    def new_process(self, pid, start_ns, parent, comm, exe, source, known_since_ns):
        """A new incarnation of pid, linked to its parent and indexed as the pid's current one."""
        proc = Process(_new_key(ProcessKey, (pid, start_ns, next(self.serials))), parent, comm, exe, source,
                       known_since_ns)
        if parent is not None:
            parent.live_children += 1
        self.by_pid[pid] = proc
        return proc

    def adopt(self, proc, parent):
        """Link a process whose parent was unknown to the parent another witness names."""
        if proc.parent is None and parent is not None and parent is not proc:
            proc.parent = parent
            parent.live_children += 1

    def _relink(self, proc, parent):
        proc.parent_by_ppid = None  # its fork names its parent now
        if proc.parent is not parent:
            if proc.parent is not None:
                proc.parent.live_children -= 1
            proc.parent = None
            self.adopt(proc, parent)

    # ------------------------------------------------------------ snapshot

    def add_snapshot(self, entries):
        """Seed the table with the arm-time process table (entries as sigsleuth_procfs.read_process)."""
        staged = []
        for entry in entries:
            proc = self.new_process(entry["pid"], entry.get("start_boot_ns"), None, entry.get("comm"),
                                    entry.get("exe"), SOURCE_SNAPSHOT, self.snapshot_time_ns)
            proc.argv = entry.get("argv")
            proc.uid = entry.get("uid")
            proc.ns_pid = entry.get("ns_pid")
            proc.cgroup = entry.get("cgroup")
            proc.memory_cgroup = entry.get("memory_cgroup")
            if entry.get("rlimits"):
                proc.rlimits, proc.rlimits_from = frozenset(entry["rlimits"]), "snapshot:rlimits"
            proc.facts_from.update(argv=SOURCE_SNAPSHOT, uid=SOURCE_SNAPSHOT)
            for tid in entry.get("threads") or ():
                if tid != proc.pid:
                    self.thread_group[tid] = proc.pid
            staged.append((proc, entry.get("ppid")))
        for proc, ppid in staged:
            self.adopt(proc, self.by_pid.get(ppid) if ppid else None)
            if proc.parent is None and ppid:
                proc.ppid_hint = ppid
            if ppid == 1 and proc.parent is not None:
                proc.notes.append("its parent at arm time was pid 1, which adopts orphans: if its real parent "
                                  "exited before arming, that parent is unknown")

    # ------------------------------------------------------------ the stream

    def feed(self, event):
        name, ts, _cpu, tid, tgid, fields = event
        if tgid is not None and tgid != tid and self.thread_group.get(tid) != tgid:
            self._learn_thread(tid, tgid)
        handler = self._handlers.get(name)
        if handler is not None:
            handler(ts, tid, tgid, fields)

    def feed_all(self, events):
        """feed() each event of a read pass in turn, short lives (sigsleuth_short_lives) each in one step: the
        drain's loop, with the look-ups bound once per pass.

        A fork starts a short life's record; its rename and exec join it, its exit ends it among the recent
        exits. Anything else that touches it while it runs - a child or thread of its, a thread's exec or exit
        in its group, an event that names its pid, any event but a fork, exec, exit, rename or newtask, a
        thread group id - and the end of the pass make it its Process first (`_unfold`), as if fed one event
        at a time from its fork.

        The record's begin and end are written out here, not called: they run once per process of the host."""
        handlers = self._handlers
        thread_group, by_pid, clone_flags = self.thread_group, self.by_pid, self.clone_flags
        exited_tids, recently_exited = self.exited_tids, self.recently_exited
        in_kill_syscall = self.evidence.in_kill_syscall if self.syscalls_traced else None
        serials = self.serials
        high = attribution.RECENT_LIMIT + attribution.RECENT_SLACK  # read here: the tests shorten the memory
        folded = 0
        lives = {}  # pid -> the record of a short life begun in this pass that has not ended
        for event in events:
            name, ts, _cpu, tid, tgid, fields = event
            if lives:
                if tid in lives:
                    if name == RENAME or (name == EXEC and fields[1] == tid and fields[2] == tid):
                        lives[tid].append(event)
                        if name == EXEC:
                            folded += 1
                        continue
                    if name == EXIT and fields[2] is not False and tgid is None:
                        # _on_exit()'s effects: the record among the recent exits. remember(), inline: the
                        # fork took tid out of both, and nothing put it back while the life ran.
                        life = lives.pop(tid)
                        if in_kill_syscall is not None:
                            in_kill_syscall.pop(tid, None)
                        exited_tids[tid] = ts
                        life[EXIT_NS] = ts
                        recently_exited[tid] = life
                        if len(recently_exited) > high or len(exited_tids) > high:
                            forget_oldest(exited_tids)
                            forget_oldest(recently_exited)
                        parent = life[PARENT]
                        parent.live_children -= 1
                        if parent.exited and parent.live_children == 0:
                            self._forget(parent)
                        continue
                    self._unfold(lives, tid)  # a parent, a thread's exec, a thread group id: a Process now
                if tgid is not None or name not in LIFECYCLE:
                    self._unfold_all(lives)  # a send, a cgroup move, a syscall: what it reads is all there
                else:
                    owner = thread_group.get(tid)
                    if owner in lives:
                        self._unfold(lives, owner)
                    if name == FORK:
                        parent_tid, child = fields
                        if parent_tid in lives:
                            self._unfold(lives, parent_tid)
                        if child in lives:
                            self._unfold(lives, child)  # forked again: its exit was not seen
                    elif name == EXEC:
                        if fields[1] in lives:
                            self._unfold(lives, fields[1])
                    elif name == NEWTASK:
                        if fields[0] in lives:
                            self._unfold(lives, fields[0])
            if name == FORK and tgid is None:
                # fork()'s effects for a short life, unless its parent is unknown or dead (process_of(acting=
                # True) makes a newcomer of a dead one), a live process holds its pid, or it is a thread.
                parent_tid, child = fields
                parent = by_pid.get(thread_group.get(parent_tid, parent_tid))
                if parent is not None and not (parent.exited and parent.pid == parent_tid) \
                        and child not in clone_flags:
                    old = by_pid.get(child)
                    if old is None or old.exited:
                        thread_group.pop(child, None)
                        exited_tids.pop(child, None)
                        recently_exited.pop(child, None)
                        if old is not None:
                            del by_pid[child]  # an exited one its children kept: the newcomer's exit unindexes it
                        parent.live_children += 1
                        lives[child] = [child, ts, next(serials), parent, parent.comm, parent.exe, parent.argv,
                                        parent.uid, parent.rlimits, parent.rlimits_from, parent.cgroup,
                                        parent.memory_cgroup, None]
                        continue
            elif tgid is not None and tgid != tid and thread_group.get(tid) != tgid:
                self._learn_thread(tid, tgid)
            handler = handlers.get(name)
            if handler is not None:
                handler(ts, tid, tgid, fields)
        self.execs_folded += folded
        if lives:
            self._unfold_all(lives)  # alive at the end of the pass

    def _unfold(self, lives, pid):
        """A short life in progress made its Process, indexed as fork() and its own events would have left it."""
        proc = self._life_process(lives.pop(pid))
        self.by_pid[pid] = proc
        if proc.exec_times is not None:
            # Its execs are seen, no longer folded (one entry each, as _on_exec makes): it may still be there.
            self.execs_folded -= len(proc.exec_times)
            if self.execs_seen is not None:
                self.execs_seen.extend([proc] * len(proc.exec_times))

    def _unfold_all(self, lives):
        for pid in list(lives):
            self._unfold(lives, pid)

    def _life_process(self, life):
        """The Process a short life's record stands for (its fork and its own exec and rename events)."""
        proc = forked_process(life[PID], life[START_NS], life[SERIAL], life[PARENT],
                              ParentImage._make(life[IMAGE:EXIT_NS]), SOURCE_TRACE)
        for name, ts, _cpu, _tid, _tgid, fields in life[OWN:]:
            if name == EXEC:
                exec_image(proc, ts, fields[0], SOURCE_TRACE)
            else:
                renamed(proc, fields[1])
        return proc

    def exited_process(self, pid):
        """The recently exited process of pid, or None: a short life's record made into its Process."""
        proc = self.recently_exited.get(pid)
        if is_short_life(proc):
            life = proc
            proc = self._life_process(life)
            proc.exited = True
            proc.exit_ns = life[EXIT_NS]
            self.recently_exited[pid] = proc  # in place: its rank among the recent exits stays
        return proc

    def process_of(self, tid, tgid=None, ts=None, acting=False):
        """The current incarnation for a thread; an 'unseen' placeholder when nothing is known of it.

        acting: the thread acts at ts (forks, execs, renames itself, makes a syscall). A dead process cannot
        act, but its live children keep an exited leader indexed: its pid acting again is a newcomer whose fork
        was not seen. Without acting the exited one is found, as for a send: an exiting task still sends its
        parent-death signals after its exit event."""
        if tgid is None:
            tgid = self.thread_group.get(tid, tid)
        proc = self.by_pid.get(tgid)
        if proc is None or (acting and proc.exited and tid == tgid):
            previous = proc
            if previous is not None:
                self.exited_tids.pop(tid, None)  # what its old owner did is no evidence for the newcomer
                self.recently_exited.pop(tid, None)
            proc = self.new_process(tgid, None, None, None, None, SOURCE_UNSEEN, ts)
            proc.notes.append(UNSEEN_NOTE)
            if previous is not None:
                proc.notes.append("pid %d's previous process (%s) exited at boot+%.6fs: this is a later one"
                                  % (tgid, previous.comm or "comm unknown", (previous.exit_ns or 0) / 1e9))
        return proc

    def sender_of(self, tid, tgid, ts, code, victim):
        """The process sending from tid at ts (a send's current). A dead thread sends nothing of its own: after
        a process's exit only its parent-death signals to its own children (SI_USER) come from its pid, within
        PARENT_DEATH_WINDOW_NS. Any other user send (SI_USER, or a negative si_code: tkill, sigqueue) from a
        pid whose process exited is a later process of that pid whose fork was not seen, never the dead one;
        kernel sends (SI_KERNEL, CLD_*) are the kernel's, whatever ran, and are left as they are."""
        current = self.process_of(tid, tgid, ts)
        if code > SI_USER:
            return current
        if current.exited and tid == current.pid:
            if code == SI_USER and victim.parent is current and current.exit_ns is not None \
                    and ts - current.exit_ns <= PARENT_DEATH_WINDOW_NS:
                return current
            return self.process_of(tid, tgid, ts, acting=True)
        if tid in self.recently_exited and not current.exited and victim.parent is not current:
            # Its process exited and nobody kept it indexed (no live child): a pid reused, the fork lost.
            self.exited_tids.pop(tid, None)
            self.recently_exited.pop(tid, None)
        return current

    def _learn_thread(self, tid, tgid):
        """A record showed tid running in thread group tgid: undo a guess that tid was a process."""
        self.thread_group[tid] = tgid
        wrong = self.by_pid.get(tid)
        if wrong is not None and wrong.live_children == 0 and wrong.source != SOURCE_SNAPSHOT:
            del self.by_pid[tid]
            if wrong.parent is not None:
                wrong.parent.live_children -= 1

    def _on_newtask(self, ts, tid, tgid, fields):
        self.clone_flags[fields[0]] = fields[2]

    def _on_fork(self, ts, tid, tgid, fields):
        parent_tid, child = fields
        flags = self.clone_flags.pop(child, None)
        self.fork(ts, parent_tid, tgid, child, thread=None if flags is None else bool(flags & CLONE_THREAD))

    def fork(self, ts, parent_tid, parent_tgid, child, thread=None, source=SOURCE_TRACE):
        """parent_tid created child at ts; thread=None when the clone flags are unknown (a process is assumed)."""
        if thread:
            self.thread_group[child] = parent_tgid if parent_tgid is not None \
                else self.thread_group.get(parent_tid, parent_tid)
            return None
        parent = self.process_of(parent_tid, parent_tgid, ts, acting=True)
        self.thread_group.pop(child, None)
        self.exited_tids.pop(child, None)  # what its old owner did is no evidence for the newcomer
        self.recently_exited.pop(child, None)
        old = self.by_pid.get(child)
        if old is not None and not old.exited and self._same_as_forked(old, ts, source):
            # Known already: forked between enabling the trace and taking the snapshot, or (audit) seen
            # exec'ing before its parent's vfork returned. The same process; the fork is the better witness,
            # and what was said for lack of it goes.
            if old.source == SOURCE_UNSEEN and UNSEEN_NOTE in old.notes:
                old.notes.remove(UNSEEN_NOTE)
            old.start_ns = ts
            old.known_since_ns = ts
            old.source = source
            self._relink(old, parent)
            self.inherit_image(old, parent)
            return old
        if old is not None and not old.exited:
            old.exited = True
            old.notes.append("its exit was not seen; pid %d was reused by a fork at boot+%.6fs" % (child, ts / 1e9))
            self._forget(old)
        # new_process() inline: this runs once per fork of the whole host.
        proc = forked_process(child, ts, next(self.serials), parent, parent, source)
        parent.live_children += 1
        self.by_pid[child] = proc
        return proc

    @staticmethod
    def inherit_image(child, parent):
        """Give a child its parent's comm, exe, argv and uid where it knows none of its own (the fact unseen,
        or inherited at fork; an image of its own keeps its argv even when that is unknown). True when it
        took the parent's exe. For a process seen acting before its fork was read, and (audit) for the
        children of a parent whose exec is read after their forks."""
        took_image = child.facts_from.get("exe") not in OWN_SOURCES
        for name in IMAGE_FACTS if took_image else ("uid",):
            if child.facts_from.get(name) not in OWN_SOURCES:
                setattr(child, name, getattr(parent, name))
                child.facts_from[name] = SOURCE_INHERITED
        return took_image

    @staticmethod
    def _same_as_forked(old, ts, source):
        if old.source == SOURCE_SNAPSHOT:
            return old.start_ns is not None and abs(old.start_ns - ts) <= START_TOLERANCE_NS
        # The trace is in time order, so only audit (stamped at syscall entry) can show a child first.
        slack = SAME_PROCESS_SLACK_NS if source == SOURCE_AUDIT else 0
        return old.source == SOURCE_UNSEEN and old.known_since_ns is not None \
            and old.known_since_ns >= ts - slack

    def _on_exec(self, ts, tid, tgid, fields):
        filename, pid, old_pid = fields
        if old_pid != pid:
            # A non-leader thread exec'd and took over the leader's pid: the leader's exit seen before it is no
            # newcomer's.
            self.thread_group.pop(old_pid, None)
        proc = self.exec(ts, pid, filename, by_leader=old_pid == pid)
        if self.execs_seen is not None:
            self.execs_seen.append(proc)

    def exec(self, ts, pid, filename, source=SOURCE_TRACE, comm=None, argv=None, by_leader=True):
        """pid exec'd filename at ts; returns the process. by_leader: the exec'ing task was the leader itself."""
        proc = self.process_of(pid, pid, ts, acting=by_leader)
        exec_image(proc, ts, filename, source, comm, argv)
        return proc

    def _on_rename(self, ts, tid, tgid, fields):
        renamed(self.process_of(tid, tgid, ts, acting=True), fields[1])

    def _on_exit(self, ts, tid, tgid, fields):
        _comm, _tid, group_dead = fields
        leader = tgid if tgid is not None else self.thread_group.get(tid, tid)
        if group_dead is None:
            group_dead = tid == leader
        if self.syscalls_traced:
            self.evidence.syscall_exited(tid)
        remember(self.exited_tids, tid, ts)
        self.thread_group.pop(tid, None)
        if not group_dead:
            return
        proc = self.by_pid.get(leader)
        if proc is None or proc.exited:
            return
        proc.exited = True
        proc.exit_ns = ts
        remember(self.recently_exited, leader, proc)
        self._forget(proc)

    def _forget(self, proc):
        """Drop dead processes nobody can descend from any more from the index (kills keep their refs)."""
        while proc is not None and proc.exited and proc.live_children == 0:
            if self.by_pid.get(proc.pid) is proc:
                del self.by_pid[proc.pid]
            parent = proc.parent
            if parent is None:
                return
            parent.live_children -= 1
            proc = parent

    # ------------------------------------------------------------ evidence around sends

    def _syscall_enter_handler(self, syscall):
        def on_enter(ts, tid, tgid, fields):
            proc = self.by_pid.get(tgid if tgid is not None else self.thread_group.get(tid, tid))
            if proc is not None and proc.exited and proc.pid == tid:
                self.process_of(tid, tgid, ts, acting=True)  # a dead process makes no syscall: a newcomer
            self.evidence.syscall_entered(tid, syscall, fields)
        return on_enter

    def _on_syscall_exit(self, ts, tid, tgid, fields):
        self.evidence.syscall_exited(tid)

    def _on_cgroup_kill_open(self, ts, tid, tgid, fields):
        # The kernel's filter recorded only opens of a cgroup.kill file: the opener may write "1" to it next.
        opener = self.process_of(tid, tgid, ts, acting=True)
        self.evidence.cgroup_kill_opened(opener.key, ts)

    def _on_cgroup_attach(self, ts, tid, tgid, fields):
        hierarchy, path, moved = fields
        proc = self.process_of(moved, None, ts)
        if hierarchy == 0:
            proc.cgroup = path
        elif hierarchy == self.memory_hierarchy:
            proc.memory_cgroup = path

    def _on_prlimit(self, ts, tid, tgid, fields):
        if fields.get("new_rlim"):
            target = fields.get("pid", 0)
            proc = self.process_of(tid, tgid, ts, acting=True) if target == 0 else self.process_of(target, None, ts)
            self._set_limit(proc, fields.get("resource"))

    def _on_setrlimit(self, ts, tid, tgid, fields):
        self._set_limit(self.process_of(tid, tgid, ts, acting=True), fields.get("resource"))

    @staticmethod
    def _set_limit(proc, resource):
        if resource in (RLIMIT_CPU, RLIMIT_RTTIME):
            proc.rlimits = proc.rlimits | {resource}
            proc.rlimits_from = "ftrace:sys_enter_prlimit64/setrlimit"

    def _on_mark_victim(self, ts, tid, tgid, fields):
        """The OOM killer marks its victim right after sending SIGKILL: that kill is an OOM kill."""
        pid, comm, total_vm, anon, file_rss, shmem, uid = fields
        for kill in reversed(self.kills[-64:]):
            if kill.victim.pid == pid and kill.send.si_code == SI_KERNEL and ts - kill.ts_ns <= OOM_MARK_WINDOW_NS:
                kill.send.oom_marked = True
                attribute(kill)
                kill.oom = {"total_vm_kb": total_vm, "anon_rss_kb": anon, "file_rss_kb": file_rss,
                            "shmem_rss_kb": shmem, "uid": uid,
                            "cgroup": kill.victim.memory_cgroup or kill.victim.cgroup}
                return

    # ------------------------------------------------------------ kills

    def _on_signal(self, ts, tid, tgid, fields):
        sig, errno, code, _comm, target_tid, group, result = fields
        if sig not in self.signals:
            return
        victim_tgid = self.thread_group.get(target_tid, target_tid)
        victim = self.by_pid.get(victim_tgid) or self.exited_process(victim_tgid) \
            or self.process_of(target_tid, victim_tgid, ts)
        fold_key = (victim.key, sig)
        previous = self._last_kill.get(fold_key)
        if previous is not None and result != 0:
            # A send to a victim that is already dying or has it pending folds into the first record.
            previous.count += 1
            return
        current = self.sender_of(tid, tgid, ts, code, victim)
        send = self.evidence.around(SendEvidence(code, current, tid, witnesses=["ftrace:signal_generate"],
                                                 syscalls_traced=self.syscalls_traced,
                                                 opens_traced=self.opens_traced, signal=sig), ts, sig)
        send.thread_exiting = tid in self.exited_tids
        send.victim_is_current = current is victim
        send.victim_rlimit, send.victim_rlimit_from = rlimit_mechanism(victim.rlimits), victim.rlimits_from
        kill = Kill(ts_ns=ts, signal=sig, code=code, errno=errno, result=result, group=group, victim=victim,
                    victim_tid=target_tid, send=send)
        attribute(kill)
        self.record_kill(kill)
        self._last_kill[fold_key] = kill

    def record_kill(self, kill):
        """Keep a kill with its sender's identity and ancestry as they are at this moment."""
        if kill.sender is not None:
            kill.ancestry = _ancestry_now(kill.sender)
            kill.sender_at_kill = kill.sender.at_kill()
        self.kills.append(kill)

    @staticmethod
    def recapture_after_fork(kill):
        """A kill whose sender's fork is read only after it (audit logs a syscall when it returns: a child can
        kill before its parent's clone returns): the facts unknown at the kill that the fork gave it, and the
        ancestry the fork names. A fact the sender has of its own since (a later exec) is not the kill's."""
        sender, (_proc, *was) = kill.sender, kill.sender_at_kill
        now = sender.at_kill()
        kill.sender_at_kill = ProcessAtKill(sender, *(
            getattr(now, name) if value is None and sender.facts_from.get(name) == SOURCE_INHERITED else value
            for name, value in zip(ProcessAtKill._fields[1:], was)))
        kill.ancestry = _ancestry_now(sender)
