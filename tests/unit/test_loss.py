"""Loss is stated once per source; a kill's gaps point to it briefly and never repeat a sentence."""

from ansible.module_utils.sigsleuth_clock import Clock
from ansible.module_utils.sigsleuth_loss import Losses, kill_gaps
from ansible.module_utils.sigsleuth_report import kill_dict
from test_lineage import S, exec_, exit_, fork, kill, run, snap

OFFSET = 1_790_000_000 * S  # boot ns + OFFSET = wall clock


def overrun_trace():
    """The daemon (snapshot) forks a job shell before the loss; after it the shell's child kills a victim.
    The kill's sender and the shell are known from before the loss; the shell's parent fork is lost."""
    events = (fork(10 * S, 100, 200) + exec_(10 * S + 1, 200, "/bin/sh") + fork(20 * S, 200, 300)
              + exec_(20 * S + 1, 300, "/bin/kill") + kill(30 * S, 300, 150) + exit_(31 * S, 300))
    return run(events, snapshot=[snap(100, 1, "daemon"), snap(150, 1, "victim"), snap(1, 0, "init")])


def lost(losses, until_ns, *reasons):
    for reason in reasons:
        losses.ftrace.add(reason, until_ns)
    return losses


def test_the_statement_is_made_once_and_kills_point_to_it():
    lineage = overrun_trace()
    losses = lost(Losses(), 25 * S, "CPU 0 lost 497408 events to buffer overrun and 0 dropped, before 05:28:54Z",
                  "CPU 1 lost 12 events to buffer overrun and 0 dropped, before 05:28:50Z")
    (k,) = lineage.kills
    gaps = kill_gaps(k, losses, Clock(OFFSET))
    assert len(gaps) == len(set(gaps)), gaps
    assert not any("497408" in gap for gap in gaps), "the long statement belongs in sources.ftrace.loss"
    assert all(len(gap) < 300 for gap in gaps), gaps
    pointer = "ftrace lost events before %s (see sources.ftrace.loss)" % Clock(OFFSET).short(25 * S)
    assert any(gap.startswith("identified from records older than the trace loss") and pointer in gap
               for gap in gaps), gaps
    assert losses.ftrace.statement().count("CPU") == 2


def test_an_unseen_top_of_the_chain_names_the_process_and_the_loss():
    lineage = run(fork(20 * S, 200, 300) + exec_(20 * S + 1, 300, "/bin/kill") + kill(30 * S, 300, 150),
                  snapshot=[snap(150, 1, "victim")])
    (k,) = lineage.kills
    clock = Clock(OFFSET)
    assert "parent of ?[200] unknown: it started before arming and was not in the arm-time snapshot" in \
        kill_gaps(k, Losses(), clock)
    gaps = kill_gaps(k, lost(Losses(), 25 * S, "CPU 0 lost 9 events"), clock)
    assert "parent of ?[200] unknown: ftrace lost events before %s (see sources.ftrace.loss)" % clock.short(25 * S) \
        in gaps


def test_audit_loss_and_a_stepped_clock_are_one_line_each():
    lineage = overrun_trace()
    losses = Losses()
    losses.audit.add("the kernel lost 5 audit records since arming (backlog full or rate limit)")
    losses.audit.add("auditd stopped while armed")
    losses.clock_step = "the wall clock was stepped by +2.000000 s between arm and collect"
    (k,) = lineage.kills
    record = kill_dict(k, Clock(OFFSET), losses)
    audit = [gap for gap in record["gaps"] if "sources.audit.loss" in gap]
    clock = [gap for gap in record["gaps"] if "sources.clock.step" in gap]
    assert len(audit) == 1 and len(clock) == 1, record["gaps"]
    assert "kernel lost 5" not in audit[0]


def test_no_loss_no_gaps():
    (k,) = overrun_trace().kills
    assert kill_gaps(k, Losses(), Clock(OFFSET)) == []
