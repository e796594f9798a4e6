# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Short lives: processes born and dead within one read pass, told to the lineage in one step. Stdlib only.
"""Which processes of a read pass the lineage may take in one step, and what it keeps of them.

Most processes on a busy host are leaves that live a few milliseconds: fork, exec (and the rename that comes
with it), exit. Once one has exited and had no child, nobody can descend from it (Laurel's rule): all the
lineage keeps of it is its entry among the recent exits, which only a send to that pid right after its exit,
or the checkpoint, ever reads. So the drain's lineage tells such a process in one step: the fork's and the
exit's effects on the index at their own places in the stream, and a short life's record - the parent, what
the parent was at the fork, the process's own events - among the recent exits instead of a `Process`, made
into the very `Process` a full replay would have built only when something reads it.

A pass qualifies only when all its events are lifecycle events (fork, exec, exit, rename, newtask) without a
thread group id (the binary reader's): a pass with a signal, a cgroup move or a syscall is fed event by event.
A process qualifies when, in the pass, it is forked once, exits as a whole, forks nothing, is no thread, and
nothing but its own exec (as its own leader) and renames names it after its fork.
"""

from __future__ import annotations

import collections

from ansible.module_utils.sigsleuth_trace_parser import EXEC, EXIT, FORK, NEWTASK, RENAME

NOTHING = frozenset()


# A short life's record is one list, made once per process of the host: [pid, start_ns, serial, parent, the
# parent's image at the fork (IMAGE_FIELDS), exit_ns, then its own exec and rename events in order].
PID, START_NS, SERIAL, PARENT, IMAGE, EXIT_NS, OWN = 0, 1, 2, 3, 4, 12, 13
IMAGE_FIELDS = ("comm", "exe", "argv", "uid", "rlimits", "rlimits_from", "cgroup", "memory_cgroup")
# What a child takes from its parent at fork, as sigsleuth_lineage.forked_process reads it.
ParentImage = collections.namedtuple("ParentImage", IMAGE_FIELDS)


def is_short_life(entry):
    return entry.__class__ is list


def short_lives(events, thread_group):
    """The pids of the pass that may be told in one step (see the module's docstring); NOTHING when the pass
    holds anything but lifecycle events. thread_group is the lineage's tid -> tgid map before the pass."""
    born = {}  # pid forked in the pass -> whether its exit came yet
    spoiled = set()
    for name, _ts, _cpu, tid, tgid, fields in events:
        if tgid is not None:
            return NOTHING
        if name == FORK:
            parent_tid, child = fields
            if parent_tid in born:
                spoiled.add(parent_tid)  # a parent: its children may descend from it
            if child in born:
                spoiled.add(child)  # forked twice in one pass
            else:
                born[child] = False
        elif name == EXIT:
            if tid in born:
                if born[tid] or fields[2] is False:
                    spoiled.add(tid)  # a second exit, or a thread's
                born[tid] = True
            elif thread_group.get(tid) in born:
                spoiled.add(thread_group[tid])  # a thread the lineage still counts in that group
        elif name == EXEC:
            pid = fields[1]
            if tid in born or pid in born:
                if tid != pid or fields[2] != pid or born.get(pid):
                    spoiled.add(tid)  # a thread's exec, taking over its leader's pid
                    spoiled.add(pid)
        elif name == RENAME:
            if born.get(tid):
                spoiled.add(tid)
        elif name == NEWTASK:
            spoiled.add(tid)  # a thread's creator, and the thread
            spoiled.add(fields[0])
        else:
            return NOTHING
    return {pid for pid, ended in born.items() if ended and pid not in spoiled}
