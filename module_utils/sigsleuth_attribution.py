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

With the light default no syscall is traced: where the signal alone cannot tell two mechanisms apart, a row
names the honest family (user_signal, thread_signal, queued_signal) with the candidates it stands for, never
the narrower name. Syscall precision names the exact syscall.

`EvidenceWindow` keeps the short-lived facts the table reads: kill-family syscalls in flight, threads that
just exited, processes that just opened a cgroup.kill file.
"""

from __future__ import annotations

import collections
import itertools

from ansible.module_utils.sigsleuth_vocabulary import (
    RLIMIT_CPU, RLIMIT_RTTIME, SI_KERNEL, SI_QUEUE, SI_TKILL, SI_USER, SIGKILL,
)

ORIGIN_USER = "user"
ORIGIN_KERNEL = "kernel"
# The sender a row names: the task that was current when the signal was generated, or nobody.
CURRENT = "current"
NOBODY = None
# A writer opens cgroup.kill, writes "1" and closes it: the open comes well within this of the kill.
OPEN_WINDOW_NS = 10_000_000_000
# Recently exited threads and openers are only needed for a moment: keep the newest few.
RECENT_LIMIT = 4096
RECENT_SLACK = RECENT_LIMIT // 4  # how many more a recent-exits dict may hold before its oldest go
PRECISION_HINT = "sigsleuth_precision: syscall tells them apart"
# What each light family stands for, and the mechanisms a kernel send in the victim's own context may be.
USER_SIGNAL_CANDIDATES = ("kill", "pidfd_send_signal", "cgroup_kill")
THREAD_SIGNAL_CANDIDATES = ("tkill", "tgkill", "pidfd_send_signal")
QUEUED_SIGNAL_CANDIDATES = ("rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal")
OWN_CONTEXT_CANDIDATES = ("rlimit_cpu", "rlimit_rttime", "kernel")


class SendEvidence:
    """What was seen around one send. Filled by whoever saw it; read only by `attribute()`."""

    __slots__ = ("signal", "si_code", "current", "current_tid", "syscalls_traced", "opens_traced", "syscall", "syscall_args",
                 "thread_exiting", "opened_cgroup_kill", "victim_is_current", "victim_rlimit", "victim_rlimit_from",
                 "oom_marked", "audit", "witnesses")

    def __init__(self, si_code=None, current=None, current_tid=None, witnesses=(), syscalls_traced=False,
                 opens_traced=False, signal=None):
        self.signal = signal
        self.si_code = si_code            # None when only audit saw the send (audit records no siginfo)
        self.current = current            # the Process running when the signal was generated
        self.current_tid = current_tid    # its thread (None when only audit saw it)
        self.syscalls_traced = syscalls_traced  # syscall precision: kill-family calls and CPU limits traced
        self.opens_traced = opens_traced  # ... and opens of cgroup.kill files (user-string filters)
        self.syscall = None               # a kill-family syscall of that thread in flight, same signal
        self.syscall_args = None
        self.thread_exiting = False       # that thread's exit was just traced
        self.opened_cgroup_kill = False   # that process opened a cgroup.kill file just before
        self.victim_is_current = False
        self.victim_rlimit = None         # "rlimit_cpu"/"rlimit_rttime": a CPU-time limit set on the victim
        self.victim_rlimit_from = None    # the evidence label of where that limit was seen
        self.oom_marked = False           # oom:mark_victim named the victim right after
        self.audit = None                 # the audit event of the same send (audit-only, or matched)
        self.witnesses = list(witnesses)  # events that saw the send itself, e.g. ftrace:signal_generate


def _unknown_note(evidence):
    if evidence.si_code in (SI_TKILL, SI_QUEUE):
        return ("si_code %d means a %s, but its syscall entry was not in the trace"
                % (evidence.si_code, "tkill/tgkill" if evidence.si_code == SI_TKILL else "sigqueue-family syscall"))
    if evidence.si_code == SI_USER and evidence.victim_is_current:
        return ("a send to itself outside any kill-family syscall (the kernel sends SIGPIPE and SIGXFSZ so): the "
                "mechanism could not be determined")
    if evidence.si_code == SI_USER and evidence.opens_traced:
        return ("SI_USER outside any kill-family syscall, and the sender opened no cgroup.kill file since arming: "
                "the mechanism could not be determined (a cgroup.kill opened before arming would look so)")
    return ("the sending mechanism could not be determined: no kill-family syscall or exit of the sender was seen "
            "around it")


def _traced_syscall(evidence):
    """the syscall's name"""
    return evidence.syscall


def _traced_syscall_label(evidence):
    """`ftrace:sys_enter_<syscall>`"""
    return "ftrace:sys_enter_" + evidence.syscall


def _cpu_limit(evidence):
    """rlimit_cpu or rlimit_rttime"""
    return evidence.victim_rlimit


def _cpu_limit_label(evidence):
    """`snapshot:rlimits` (a limit the arm-time snapshot saw) or `ftrace:sys_enter_prlimit64/setrlimit`"""
    return evidence.victim_rlimit_from


def _audited_syscall(evidence):
    """the syscall's name"""
    return evidence.audit.syscall


def _audited_syscall_label(evidence):
    """`audit:<syscall>#<serial>`"""
    return audit_label(evidence.audit)


def _family_label(code_name, candidates):
    return "ftrace:si_code=%s (%s not told apart; %s)" % (code_name, ", ".join(candidates), PRECISION_HINT)


def _kernel_candidates(evidence):
    # In its own context a kernel send may be a CPU-time limit set after arming, which light does not see.
    if evidence.victim_is_current and not evidence.syscalls_traced:
        return OWN_CONTEXT_CANDIDATES
    return None


def _kernel_label(evidence):
    """`ftrace:si_code=SI_KERNEL (...)` in the victim's own context with light precision, else none"""
    candidates = _kernel_candidates(evidence)
    return _family_label("SI_KERNEL", candidates) if candidates else None


def _light(evidence):
    return evidence.si_code is not None and not evidence.syscalls_traced


Rule = collections.namedtuple("Rule", "when holds mechanism origin sender evidence note candidates")

# DESIGN.md's table, in order: the first row that holds decides. `when` says in words what `holds` tests;
# mechanism, evidence and candidates are a value or a function of the evidence (whose docstring says what it
# gives). tests/unit/test_attribution.py holds DESIGN.md's table against this one.
RULES = (
    Rule("a kill-family syscall entry of the same thread, still open, same signal (syscall precision)",
         lambda e: e.syscall is not None,
         _traced_syscall, ORIGIN_USER, CURRENT, _traced_syscall_label, None, None),
    Rule("SI_KERNEL, and oom:mark_victim names the victim right after",
         lambda e: e.si_code == SI_KERNEL and e.oom_marked,
         "oom_kill", ORIGIN_KERNEL, NOBODY, "ftrace:mark_victim", None, None),
    Rule("SI_KERNEL in the victim's own context, a CPU-time limit set on it or inherited (known at arm time, or "
         "set since with syscall precision)",
         lambda e: e.si_code == SI_KERNEL and e.victim_is_current and e.victim_rlimit is not None,
         _cpu_limit, ORIGIN_KERNEL, NOBODY, _cpu_limit_label, None, None),
    Rule("SI_KERNEL otherwise",
         lambda e: e.si_code == SI_KERNEL,
         "kernel", ORIGIN_KERNEL, NOBODY, _kernel_label, None, _kernel_candidates),
    Rule("SI_USER from a thread whose exit was just traced",
         lambda e: e.si_code == SI_USER and e.thread_exiting,
         "pdeath_signal", ORIGIN_KERNEL, CURRENT, "ftrace:sched_process_exit", None, None),
    Rule("SIGKILL with SI_USER outside any kill-family syscall, from a process that just opened a cgroup.kill file "
         "(syscall precision)",
         lambda e: e.si_code == SI_USER and e.signal == SIGKILL and e.syscalls_traced and e.opened_cgroup_kill,
         "cgroup_kill", ORIGIN_USER, CURRENT, "ftrace:sys_enter_openat(cgroup.kill)", None, None),
    Rule("SIGKILL with SI_USER outside any kill-family syscall, to another process, where the kernel cannot filter "
         "opens of cgroup.kill (syscall precision)",
         lambda e: e.si_code == SI_USER and e.signal == SIGKILL and e.syscalls_traced and not e.opens_traced
         and not e.victim_is_current,
         "cgroup_kill", ORIGIN_USER, CURRENT, "ftrace:no_kill_syscall", None, None),
    Rule("audit's record of the kill-family syscall (audit alone, or matched in combined mode)",
         lambda e: e.audit is not None and e.audit.syscall is not None,
         _audited_syscall, ORIGIN_USER, CURRENT, _audited_syscall_label, None, None),
    Rule("SI_USER (light precision)",
         lambda e: _light(e) and e.si_code == SI_USER,
         "user_signal", ORIGIN_USER, CURRENT, _family_label("SI_USER", USER_SIGNAL_CANDIDATES), None,
         USER_SIGNAL_CANDIDATES),
    Rule("SI_TKILL (light precision)",
         lambda e: _light(e) and e.si_code == SI_TKILL,
         "thread_signal", ORIGIN_USER, CURRENT, _family_label("SI_TKILL", THREAD_SIGNAL_CANDIDATES), None,
         THREAD_SIGNAL_CANDIDATES),
    Rule("SI_QUEUE or another negative si_code (light precision)",
         lambda e: _light(e) and e.si_code < 0,
         "queued_signal", ORIGIN_USER, CURRENT, _family_label("negative", QUEUED_SIGNAL_CANDIDATES), None,
         QUEUED_SIGNAL_CANDIDATES),
    Rule("none of these",
         lambda e: True,
         "unknown", ORIGIN_USER, CURRENT, None, _unknown_note, None),
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
    """The first rule that holds, and what it gives: (mechanism, origin, names the current task as sender,
    decisive evidence label or None, note or None, candidates or None)."""
    for rule in RULES:
        if rule.holds(evidence):
            return (_value(rule.mechanism, evidence), rule.origin, rule.sender == CURRENT,
                    _value(rule.evidence, evidence), _value(rule.note, evidence), _value(rule.candidates, evidence))
    raise AssertionError("the last rule always holds")


def attribute(kill):
    """Set the kill's mechanism, origin, sender, trigger, evidence, candidates and note from kill.send."""
    evidence = kill.send
    mechanism, origin, by_current, label, note, candidates = decide(evidence)
    kill.mechanism, kill.origin, kill.attribution_note = mechanism, origin, note
    kill.mechanism_candidates = list(candidates) if candidates else None
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
    """Short-lived facts around sends (syscall precision): kill-family syscalls in flight, per thread, and
    recent opens of a cgroup.kill file, per process (the writer may be another thread of the opener). Recent
    thread exits are lifecycle: the lineage keeps them."""

    def __init__(self):
        self.in_kill_syscall = {}                           # tid -> (syscall, args) between entry and exit
        self.cgroup_kill_opens = {}  # process key -> ts of its last open of a cgroup.kill

    def syscall_entered(self, tid, syscall, args):
        self.in_kill_syscall[tid] = (syscall, args)

    def syscall_exited(self, tid):
        """The syscall's exit, or the thread's: it is in no kill-family syscall any more."""
        self.in_kill_syscall.pop(tid, None)

    def cgroup_kill_opened(self, key, ts):
        remember(self.cgroup_kill_opens, key, ts)

    def around(self, evidence, ts, signal):
        """Fill in what this window knows about the current thread of a send at ts."""
        syscall = self.in_kill_syscall.get(evidence.current_tid)
        if syscall is not None and syscall[1].get("sig") == signal:
            evidence.syscall, evidence.syscall_args = syscall
        opened = self.cgroup_kill_opens.get(evidence.current.key) if evidence.current is not None else None
        evidence.opened_cgroup_kill = opened is not None and ts - opened <= OPEN_WINDOW_NS
        return evidence


def remember(recent, key, value):
    """Insert into a dict (in insertion order, newest last) that keeps at least its newest RECENT_LIMIT entries.

    The oldest are dropped RECENT_SLACK at a time: one at a time, each would cost a walk over the slots its
    predecessors left (an OrderedDict avoids that at several times the cost of every insert)."""
    recent.pop(key, None)
    recent[key] = value
    if len(recent) > RECENT_LIMIT + RECENT_SLACK:
        forget_oldest(recent)


def forget_oldest(recent):
    """remember()'s trim, for callers that insert themselves: the oldest RECENT_SLACK go once recent holds more
    than RECENT_LIMIT + RECENT_SLACK."""
    if len(recent) > RECENT_LIMIT + RECENT_SLACK:
        for stale in list(itertools.islice(recent, RECENT_SLACK)):
            del recent[stale]
