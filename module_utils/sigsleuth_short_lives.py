# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Short lives: processes born and dead within one read pass, told to the lineage in one step. Stdlib only.
"""What the lineage keeps of a process that lives and dies within one read pass, and which events it takes in.

Most processes on a busy host are leaves that live a few milliseconds: fork, exec (and the rename that comes
with it), exit. Once one has exited and had no child, nobody can descend from it (Laurel's rule): all the
lineage keeps of it is its entry among the recent exits, which only a send to that pid right after its exit,
or the checkpoint, ever reads. So the drain's lineage (`Lineage.feed_all`) tells such a process in one step:
the fork's and the exit's effects on the index at their own places in the stream, and a short life's record -
the parent, what the parent was at the fork, the process's own events - among the recent exits instead of a
`Process`, made into the very `Process` a full replay would have built only when something reads it.

Every fork of the pass (without a thread group id, as the binary reader gives them) starts a record, and its
own rename and exec (as its own leader) join it. While it runs, anything else that could read or change it
- a child or thread of its, another thread's exec or exit in its group, an event naming its pid, any event not
in LIFECYCLE, a thread group id - makes it its `Process` at that moment, as does the end of the pass; its exit
as a whole ends the record among the recent exits.
"""

from __future__ import annotations

import collections

from ansible.module_utils.sigsleuth_trace_parser import EXEC, EXIT, FORK, NEWTASK, RENAME

# The events a short life's record takes in; any other, while it runs, makes it its Process.
LIFECYCLE = frozenset((FORK, EXEC, EXIT, RENAME, NEWTASK))


# A short life's record is one list, made once per process of the host: [pid, start_ns, serial, parent, the
# parent's image at the fork (IMAGE_FIELDS), exit_ns, then its own exec and rename events in order].
PID, START_NS, SERIAL, PARENT, IMAGE, EXIT_NS, OWN = 0, 1, 2, 3, 4, 12, 13
IMAGE_FIELDS = ("comm", "exe", "argv", "uid", "rlimits", "rlimits_from", "cgroup", "memory_cgroup")
# What a child takes from its parent at fork, as sigsleuth_lineage.forked_process reads it.
ParentImage = collections.namedtuple("ParentImage", IMAGE_FIELDS)


def is_short_life(entry):
    return entry.__class__ is list
