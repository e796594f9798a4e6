# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Attribution: who sent a signal, how, and on whose account. Standard library only; Python 3.9+.
"""One table decides every send's mechanism, origin and sender, for the ftrace and the audit-only paths alike.

`signal:signal_generate` names the current task and the target, but kill(), cgroup.kill and a parent-death
signal all look alike there (SI_USER, the sender as current). What was seen around the send is gathered in
a `SendEvidence`; `attribute()` takes the first row of `RULES` that holds for it. Evidence that arrives after
the send (the OOM killer's mark_victim, audit's record of the syscall) is added to the same SendEvidence and
the kill is attributed again, so the table stays the only place where a decision is made. docs/DESIGN.md
shows the same table.

`EvidenceWindow` keeps the short-lived facts the table reads: kill-family syscalls in flight, threads that
just exited, small writes.
"""

from __future__ import annotations

import collections

from ansible.module_utils.sigsleuth_vocabulary import RLIMIT_CPU, RLIMIT_RTTIME, SI_KERNEL, SI_QUEUE, SI_TKILL, SI_USER

ORIGIN_USER = "user"
ORIGIN_KERNEL = "kernel"
# The sender a row names: the task that was current when the signal was generated, or nobody.
CURRENT = "current"
NOBODY = None
# cgroup.kill signals every member from inside one small write(2); the window bounds how long that may take.
WRITE_WINDOW_NS = 1_000_000_000
# Recently exited threads and small writes are only needed for microseconds: keep the newest few.
RECENT_LIMIT = 4096


class SendEvidence:
    """What was seen around one send. Filled by whoever saw it; read only by `attribute()`."""

    __slots__ = ("si_code", "current", "current_tid", "syscall", "syscall_args", "thread_exiting", "small_write",
                 "victim_is_current", "victim_rlimit", "oom_marked", "audit", "witnesses")

    def __init__(self, si_code=None, current=None, current_tid=None, witnesses=()):
        self.si_code = si_code            # None when only audit saw the send (audit records no siginfo)
        self.current = current            # the Process running when the signal was generated
        self.current_tid = current_tid    # its thread (None when only audit saw it)
        self.syscall = None               # a kill-family syscall of that thread in flight, same signal
        self.syscall_args = None
        self.thread_exiting = False       # that thread's exit was just traced
        self.small_write = False          # that thread is inside a write(2) of at most 2 bytes
        self.victim_is_current = False
        self.victim_rlimit = None         # "rlimit_cpu"/"rlimit_rttime": a CPU-time limit set on the victim
        self.oom_marked = False           # oom:mark_victim named the victim right after
        self.audit = None                 # the audit event of the same send (audit-only, or matched)
        self.witnesses = list(witnesses)  # events that saw the send itself, e.g. ftrace:signal_generate


def _unknown_note(evidence):
    if evidence.si_code in (SI_TKILL, SI_QUEUE):
        return ("si_code %d means a %s, but the syscall entry was not traced"
                % (evidence.si_code, "tkill/tgkill" if evidence.si_code == SI_TKILL else "sigqueue-family syscall"))
    return ("the sending mechanism could not be determined: no kill-family syscall, write or exit of the sender "
            "was seen around it")


def _traced_syscall(evidence):
    """the syscall's name"""
    return evidence.syscall


def _traced_syscall_label(evidence):
    """`ftrace:sys_enter_<syscall>`"""
    return "ftrace:sys_enter_" + evidence.syscall


def _cpu_limit(evidence):
    """rlimit_cpu or rlimit_rttime"""
    return evidence.victim_rlimit


def _audited_syscall(evidence):
    """the syscall's name"""
    return evidence.audit.syscall


def _audited_syscall_label(evidence):
    """`audit:<syscall>#<serial>`"""
    return audit_label(evidence.audit)


Rule = collections.namedtuple("Rule", "when holds mechanism origin sender evidence note")

# DESIGN.md's table, in order: the first row that holds decides. `when` says in words what `holds` tests;
# mechanism and evidence are a value or a function of the evidence (whose docstring says what it gives).
# tests/unit/test_attribution.py holds DESIGN.md's table against this one.
RULES = (
    Rule("a kill-family syscall entry of the same thread, still open, same signal",
         lambda e: e.syscall is not None,
         _traced_syscall, ORIGIN_USER, CURRENT, _traced_syscall_label, None),
    Rule("SI_KERNEL, and oom:mark_victim names the victim right after",
         lambda e: e.si_code == SI_KERNEL and e.oom_marked,
         "oom_kill", ORIGIN_KERNEL, NOBODY, "ftrace:mark_victim", None),
    Rule("SI_KERNEL in the victim's own context, a CPU-time limit set on it or inherited",
         lambda e: e.si_code == SI_KERNEL and e.victim_is_current and e.victim_rlimit is not None,
         _cpu_limit, ORIGIN_KERNEL, NOBODY, "ftrace:sys_enter_prlimit64/setrlimit", None),
    Rule("SI_KERNEL otherwise",
         lambda e: e.si_code == SI_KERNEL,
         "kernel", ORIGIN_KERNEL, NOBODY, None, None),
    Rule("SI_USER from a thread whose exit was just traced",
         lambda e: e.si_code == SI_USER and e.thread_exiting,
         "pdeath_signal", ORIGIN_KERNEL, CURRENT, "ftrace:sched_process_exit", None),
    Rule("SI_USER inside a write(2) of at most 2 bytes",
         lambda e: e.si_code == SI_USER and e.small_write,
         "cgroup_kill", ORIGIN_USER, CURRENT, "ftrace:sys_enter_write", None),
    Rule("audit's record of the kill-family syscall (audit alone, or matched in combined mode)",
         lambda e: e.audit is not None and e.audit.syscall is not None,
         _audited_syscall, ORIGIN_USER, CURRENT, _audited_syscall_label, None),
    Rule("none of these",
         lambda e: True,
         "unknown", ORIGIN_USER, CURRENT, None, _unknown_note),
)


def table_rows():
    """RULES in words, one tuple per row: (evidence, mechanism, origin, sender, decided by)."""
    def words(item):
        if item is None:
            return "-"
        return item.__doc__ if callable(item) else "`%s`" % item
    return [(rule.when, words(rule.mechanism), rule.origin,
             "the current task" if rule.sender == CURRENT else "null", words(rule.evidence)) for rule in RULES]


def audit_label(event):
    return "audit:%s#%d" % (event.syscall, event.serial)


def _value(item, evidence):
    return item(evidence) if callable(item) else item


def decide(evidence):
    """(mechanism, origin, names the current task as sender, decisive evidence label or None, note or None)."""
    for rule in RULES:
        if rule.holds(evidence):
            return (_value(rule.mechanism, evidence), rule.origin, rule.sender == CURRENT,
                    _value(rule.evidence, evidence), _value(rule.note, evidence))
    raise AssertionError("the last rule always holds")


def attribute(kill):
    """Set the kill's mechanism, origin, sender, trigger, evidence and attribution note from kill.send."""
    evidence = kill.send
    mechanism, origin, by_current, label, note = decide(evidence)
    kill.mechanism, kill.origin, kill.attribution_note = mechanism, origin, note
    if by_current:
        kill.sender, kill.sender_tid, kill.trigger = evidence.current, evidence.current_tid, None
    else:
        kill.sender = kill.sender_tid = None
        kill.trigger = (evidence.current, evidence.current_tid) if evidence.current is not None else None
    if evidence.syscall is not None and label == "ftrace:sys_enter_" + evidence.syscall:
        kill.syscall_args = dict(evidence.syscall_args, syscall=evidence.syscall)
    kill.evidence = list(evidence.witnesses)
    if label is not None:
        kill.evidence.append(label)
    if evidence.audit is not None and audit_label(evidence.audit) not in kill.evidence:
        kill.evidence.append(audit_label(evidence.audit))


def rlimit_mechanism(rlimits):
    """rlimit_cpu / rlimit_rttime when a CPU-time limit was set on the victim or inherited by it."""
    if RLIMIT_CPU in rlimits:
        return "rlimit_cpu"
    if RLIMIT_RTTIME in rlimits:
        return "rlimit_rttime"
    return None


class EvidenceWindow:
    """Short-lived facts around sends, per thread: kill-family syscalls in flight, recent exits, small writes."""

    def __init__(self):
        self.in_kill_syscall = {}                      # tid -> (syscall, args) between entry and exit
        self.exited_tids = collections.OrderedDict()   # tid -> ts of its exit, the newest RECENT_LIMIT
        self.small_writes = collections.OrderedDict()  # tid -> ts of its last write(2) of at most 2 bytes

    def syscall_entered(self, tid, syscall, args):
        self.in_kill_syscall[tid] = (syscall, args)

    def syscall_exited(self, tid):
        self.in_kill_syscall.pop(tid, None)

    def thread_exited(self, tid, ts):
        self.in_kill_syscall.pop(tid, None)
        remember(self.exited_tids, tid, ts)

    def thread_reused(self, tid):
        """A fork handed out tid again: what its old owner did is no evidence for the newcomer."""
        self.exited_tids.pop(tid, None)

    def small_write(self, tid, ts):
        remember(self.small_writes, tid, ts)

    def around(self, evidence, ts, signal):
        """Fill in what this window knows about the current thread of a send at ts."""
        tid = evidence.current_tid
        syscall = self.in_kill_syscall.get(tid)
        if syscall is not None and syscall[1].get("sig") == signal:
            evidence.syscall, evidence.syscall_args = syscall
        evidence.thread_exiting = tid in self.exited_tids
        written = self.small_writes.get(tid)
        evidence.small_write = written is not None and ts - written <= WRITE_WINDOW_NS
        return evidence


def remember(recent, key, value):
    """Insert into an OrderedDict that keeps only its newest RECENT_LIMIT entries.

    (A plain dict would do, but dropping its oldest entry again and again makes finding the next oldest
    crawl over the deleted slots.)"""
    recent.pop(key, None)
    recent[key] = value
    if len(recent) > RECENT_LIMIT:
        recent.popitem(last=False)
