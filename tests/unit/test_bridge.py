"""Combined mode across a trace loss: audit's own lineage adds the kills the trace lost and continues the
ancestries the trace could not (sigsleuth_merge.bridge_trace_loss, through collect's single audit pass)."""

from ansible.module_utils.sigsleuth_audit_lineage import AuditLineage
from ansible.module_utils.sigsleuth_clock import Clock
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_loss import Losses
from ansible.module_utils.sigsleuth_merge import AuditWitness, bridge_trace_loss
from ansible.module_utils.sigsleuth_report import kill_dict
from test_merge import MS, OFFSET, event, snapshot

SNAPSHOT = [snapshot(1, 0, "init"), snapshot(100, 1, "daemon"), snapshot(200, 1, "agent"),
            snapshot(201, 1, "agent2")]


def traced(events, precision="light"):
    lineage = Lineage([9], snapshot_time_ns=0, precision=precision)
    lineage.add_snapshot(SNAPSHOT)
    for item in events:
        lineage.feed(item)
    return lineage


def combined(trace_events, audit_events, loss_until_ms=40):
    """What collect does in combined mode, on hand-made events: one pass, then the bridge."""
    lineage = traced(trace_events)
    losses = Losses()
    if loss_until_ms is not None:
        losses.ftrace.add("CPU 0 lost 9000 events to buffer overrun", loss_until_ms * MS)
    witness = AuditWitness(lineage, OFFSET, losses.trace_until_ns)
    own = AuditLineage(Lineage([9], snapshot_time_ns=0, serials=lineage.serials), OFFSET)
    own.lineage.add_snapshot(SNAPSHOT)
    for item in audit_events:
        witness.feed(item)
        own.feed(item)
    own.flush()
    added, continued = bridge_trace_loss(lineage, own.lineage, witness.finish(), witness.unmatched)
    losses.audit_bridged = True
    return lineage, losses, added, continued


# The trace kept only the end: the killer's exec and its kill (its job shell's fork and exec were lost).
TRACE = [("sched_process_exec", 50 * MS, 0, 300, 300, ("/usr/bin/kill", 300, 300)),
         ("signal_generate", 60 * MS + 500_000, 0, 300, 300, (9, 0, 0, "agent", 200, 1, 0))]
AUDIT = [
    event(1, 20, "execve", 250, 100, comm="sh", exe="/usr/bin/dash", argv=["sh", "/opt/agent/cleanup.sh"]),
    event(2, 30, "kill", 310, 250, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=201, args=(201, 9, 0, 0),
          obj_pids=[{"pid": 201, "comm": "agent2"}]),
    event(3, 45, "execve", 300, 250, comm="kill", exe="/usr/bin/kill", argv=["kill", "-9", "200"]),
    event(4, 60, "kill", 300, 250, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=200, args=(200, 9, 0, 0),
          obj_pids=[{"pid": 200, "comm": "agent"}]),
]


def test_audit_continues_the_ancestry_the_trace_lost_and_hands_back_to_the_trace():
    lineage, losses, _, continued = combined(TRACE, AUDIT)
    assert continued == 1
    (kill,) = [k for k in lineage.kills if k.victim.pid == 200]
    assert [(a.process.pid, a.comm) for a in kill.ancestry] == [(250, "sh"), (100, "daemon"), (1, "init")]
    sh = kill.ancestry[0].process
    assert sh.source == "audit" or sh.facts_from.get("exe") == "audit"
    assert kill.ancestry[1].process in lineage.by_pid.values()  # the trace's own daemon, not audit's copy
    record = kill_dict(kill, Clock(OFFSET), losses)
    assert record["ancestry"][0]["facts_from"]["exe"] == "audit"
    assert record["ancestry"][0]["argv"] == ["sh", "/opt/agent/cleanup.sh"]
    assert not any(gap.startswith("parent of") and "unknown" in gap for gap in record["gaps"]), record["gaps"]
    # Without audited forks, sh's parent is audit's ppid at its exec: honest about what that may be.
    assert any(gap.startswith("parent of sh[250] is only the ppid audit recorded at its execve (pid 100)")
               for gap in record["gaps"]), record["gaps"]
    assert any("come from audit's records" in note for note in record["sender"]["notes"])


def test_a_kill_the_trace_lost_is_reported_from_audit():
    lineage, losses, added, _ = combined(TRACE, AUDIT)
    assert added == 1
    (kill,) = [k for k in lineage.kills if k.victim.pid == 201]
    record = kill_dict(kill, Clock(OFFSET), losses)
    assert record["sender"]["pid"] == 310 and record["mechanism"] == "kill" and record["origin"] == "user"
    assert record["evidence"] == ["audit:kill#2"] and record["audit"]["serial"] == 2
    assert [a["pid"] for a in record["ancestry"]] == [250, 100, 1]
    assert any(gap.startswith("the trace lost this send") and "see sources.ftrace.loss" in gap
               for gap in record["gaps"]), record["gaps"]
    assert [k.ts_ns for k in lineage.kills] == sorted(k.ts_ns for k in lineage.kills)


def test_audit_never_overrides_what_the_trace_saw():
    """The trace saw the killer's parent (pid 260): audit's different ppid does not replace it."""
    trace = [("task_newtask", 44 * MS, 0, 260, 260, (300, "sh", 0x1200000)),
             ("sched_process_fork", 44 * MS, 0, 260, 260, (260, 300))] + TRACE
    lineage, losses, _, continued = combined(trace, AUDIT)
    (kill,) = [k for k in lineage.kills if k.victim.pid == 200]
    assert continued == 0 and [a.process.pid for a in kill.ancestry] == [260]


def test_without_a_loss_nothing_audit_only_is_invented():
    lineage, losses, added, continued = combined(TRACE, AUDIT[2:], loss_until_ms=None)
    assert added == 0 and len(lineage.kills) == 1


def test_a_traced_sender_the_trace_knew_nothing_of_has_the_exe_audit_recorded_at_its_kill():
    trace = [("signal_generate", 60 * MS + 500_000, 0, 300, 300, (9, 0, 0, "agent", 200, 1, 0))]
    audit = [event(4, 60, "kill", 300, 1, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=200,
                   args=(200, 9, 0, 0), obj_pids=[{"pid": 200, "comm": "agent"}])]
    lineage, losses, _, _ = combined(trace, audit, loss_until_ms=None)
    (kill,) = lineage.kills
    sender = kill_dict(kill, Clock(OFFSET), losses, resolve_exe=False)["sender"]
    assert sender["pid"] == 300 and sender["exe"] == "/usr/bin/kill" and sender["facts_from"]["exe"] == "audit"
