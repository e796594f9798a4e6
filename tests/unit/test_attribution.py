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


def evidence(si_code=SI_USER, precision="syscall", **facts):
    send = SendEvidence(si_code, current="current task", current_tid=11, signal=9,
                        syscalls_traced=precision == "syscall", opens_traced=precision == "syscall")
    for name, value in facts.items():
        setattr(send, name, value)
    return send


@pytest.mark.parametrize("facts, decision", [
    (dict(syscall="tgkill", syscall_args={"sig": 9}), ("tgkill", "user", True, "ftrace:sys_enter_tgkill")),
    (dict(si_code=SI_KERNEL, oom_marked=True), ("oom_kill", "kernel", False, "ftrace:mark_victim")),
    (dict(si_code=SI_KERNEL, victim_is_current=True, victim_rlimit="rlimit_cpu",
          victim_rlimit_from="ftrace:sys_enter_prlimit64/setrlimit"),
     ("rlimit_cpu", "kernel", False, "ftrace:sys_enter_prlimit64/setrlimit")),
    (dict(si_code=SI_KERNEL, victim_rlimit="rlimit_cpu"), ("kernel", "kernel", False, None)),
    (dict(thread_exiting=True), ("pdeath_signal", "kernel", True, "ftrace:sched_process_exit")),
    (dict(opened_cgroup_kill=True), ("cgroup_kill", "user", True, "ftrace:sys_enter_openat(cgroup.kill)")),
    (dict(opens_traced=False), ("cgroup_kill", "user", True, "ftrace:no_kill_syscall")),
    (dict(si_code=None, audit=audit_event("rt_sigqueueinfo", 42)),
     ("rt_sigqueueinfo", "user", True, "audit:rt_sigqueueinfo#42")),
    (dict(), ("unknown", "user", True, None)),
])
def test_each_row_decides_as_it_says(facts, decision):
    assert decide(evidence(**facts))[:4] == decision


@pytest.mark.parametrize("si_code, family, candidates", [
    (SI_USER, "user_signal", ["kill", "pidfd_send_signal", "cgroup_kill"]),
    (SI_TKILL, "thread_signal", ["tkill", "tgkill", "pidfd_send_signal"]),
    (SI_QUEUE, "queued_signal", ["rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"]),
    (-2, "queued_signal", ["rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"]),
])
def test_light_names_the_honest_family_never_the_narrower_name(si_code, family, candidates):
    mechanism, origin, by_current, label, _, named = decide(evidence(si_code, precision="light"))
    assert (mechanism, origin, by_current, list(named)) == (family, "user", True, candidates)
    assert "not told apart" in label and "sigsleuth_precision: syscall" in label


def test_light_still_names_what_the_signal_itself_tells():
    assert decide(evidence(SI_KERNEL, "light", oom_marked=True))[0] == "oom_kill"
    assert decide(evidence(SI_USER, "light", thread_exiting=True))[0] == "pdeath_signal"
    assert decide(evidence(SI_KERNEL, "light", victim_is_current=True, victim_rlimit="rlimit_cpu",
                           victim_rlimit_from="snapshot:rlimits"))[:4] == (
        "rlimit_cpu", "kernel", False, "snapshot:rlimits")
    own = decide(evidence(SI_KERNEL, "light", victim_is_current=True))
    assert own[0] == "kernel" and list(own[5]) == ["rlimit_cpu", "rlimit_rttime", "kernel"]
    assert decide(evidence(SI_KERNEL, "light"))[5] is None  # not in its own context: no CPU-time limit
    # Audit's record names the exact syscall, light or not.
    assert decide(evidence(SI_USER, "light", audit=audit_event("kill", 3)))[0] == "kill"


def test_cgroup_kill_is_only_ever_a_sigkill():
    assert decide(evidence(opened_cgroup_kill=True, signal=15))[0] == "unknown"
    assert decide(evidence(opens_traced=False, signal=15))[0] == "unknown"


def test_an_earlier_row_wins():
    """A traced kill-family syscall decides even when the sender's thread is exiting or opened cgroup.kill."""
    assert decide(evidence(syscall="kill", syscall_args={}, thread_exiting=True, opened_cgroup_kill=True))[0] == "kill"
    assert decide(evidence(si_code=SI_KERNEL, oom_marked=True, victim_is_current=True,
                           victim_rlimit="rlimit_cpu"))[0] == "oom_kill"


@pytest.mark.parametrize("si_code, facts, words", [
    (SI_TKILL, {}, "tkill/tgkill"), (SI_QUEUE, {}, "sigqueue"),
    (SI_USER, {"victim_is_current": True}, "to itself"), (SI_USER, {}, "opened no cgroup.kill")])
def test_unknown_says_why(si_code, facts, words):
    assert words in decide(evidence(si_code, **facts))[4]


def test_remember_keeps_the_newest_in_order_and_stays_bounded():
    from ansible.module_utils.sigsleuth_attribution import RECENT_LIMIT, RECENT_SLACK, remember
    recent = {}
    for number in range(5 * RECENT_LIMIT):
        remember(recent, number % (3 * RECENT_LIMIT), number)
        assert len(recent) <= RECENT_LIMIT + RECENT_SLACK
    assert len(recent) >= RECENT_LIMIT
    values = list(recent.values())
    assert values == sorted(values) and values[-1] == 5 * RECENT_LIMIT - 1  # newest last, none lost among them
    assert values == list(range(values[0], 5 * RECENT_LIMIT))
    remember(recent, values[0] % (3 * RECENT_LIMIT), "again")  # a key remembered again moves to the newest end
    assert list(recent.values())[-1] == "again"
