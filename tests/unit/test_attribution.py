"""The attribution table: DESIGN.md shows it as the code has it, and each row decides as it says."""

import os

import pytest

from ansible.module_utils.sigsleuth_attribution import SendEvidence, decide, table_rows
from ansible.module_utils.sigsleuth_audit_records import EVENT_FIELDS, AuditEvent
from ansible.module_utils.sigsleuth_vocabulary import SI_KERNEL, SI_QUEUE, SI_TKILL, SI_USER

DESIGN = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "DESIGN.md")


def design_table():
    with open(DESIGN) as handle:
        text = handle.read()
    section = text[text.index("## How a send is attributed"):]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| evidence") and not line.startswith("| ---"):
            rows.append(tuple(cell.strip() for cell in line.strip("|").split(" | ")))
        elif rows and not line.startswith("|"):
            break
    return rows


def test_design_shows_the_table_the_code_has():
    assert design_table() == table_rows()


def audit_event(syscall="kill", serial=7):
    fields = dict.fromkeys(EVENT_FIELDS)
    fields.update(syscall=syscall, serial=serial)
    return AuditEvent(**fields)


def evidence(si_code=SI_USER, **facts):
    send = SendEvidence(si_code, current="current task", current_tid=11)
    for name, value in facts.items():
        setattr(send, name, value)
    return send


@pytest.mark.parametrize("facts, decision", [
    (dict(syscall="tgkill", syscall_args={"sig": 9}), ("tgkill", "user", True, "ftrace:sys_enter_tgkill")),
    (dict(si_code=SI_KERNEL, oom_marked=True), ("oom_kill", "kernel", False, "ftrace:mark_victim")),
    (dict(si_code=SI_KERNEL, victim_is_current=True, victim_rlimit="rlimit_cpu"),
     ("rlimit_cpu", "kernel", False, "ftrace:sys_enter_prlimit64/setrlimit")),
    (dict(si_code=SI_KERNEL, victim_rlimit="rlimit_cpu"), ("kernel", "kernel", False, None)),
    (dict(thread_exiting=True), ("pdeath_signal", "kernel", True, "ftrace:sched_process_exit")),
    (dict(small_write=True), ("cgroup_kill", "user", True, "ftrace:sys_enter_write")),
    (dict(si_code=None, audit=audit_event("rt_sigqueueinfo", 42)),
     ("rt_sigqueueinfo", "user", True, "audit:rt_sigqueueinfo#42")),
    (dict(), ("unknown", "user", True, None)),
])
def test_each_row_decides_as_it_says(facts, decision):
    assert decide(evidence(**facts))[:4] == decision


def test_an_earlier_row_wins():
    """A traced kill-family syscall decides even when the sender's thread is exiting or writing."""
    assert decide(evidence(syscall="kill", syscall_args={}, thread_exiting=True, small_write=True))[0] == "kill"
    assert decide(evidence(si_code=SI_KERNEL, oom_marked=True, victim_is_current=True,
                           victim_rlimit="rlimit_cpu"))[0] == "oom_kill"


@pytest.mark.parametrize("si_code, words", [(SI_TKILL, "tkill/tgkill"), (SI_QUEUE, "sigqueue"),
                                            (SI_USER, "could not be determined")])
def test_unknown_says_why(si_code, words):
    assert words in decide(evidence(si_code))[4]
