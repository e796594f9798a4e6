"""Issue 4's kill mechanisms replayed from traces captured on a real kernel.

tests/integration/test_forensics.py staged each case for real (SIGSLEUTH_CAPTURE_FIXTURES=1) and saved its
slice of the live trace as tests/fixtures/ftrace/forensics_<case>.trace, with a .truth holding the ground
truth, the arm-time snapshot entries of the processes involved (and their ancestors), the armed signals and
the clock offset. Here each slice goes through the parser and the lineage engine alone, and the kill records
are checked with the same checker as the integration test: sender pid/tid, victim pid/tid, mechanism, origin,
evidence, ancestry and the case's own facts.
"""

import datetime
import io
import json
import re
import os

import pytest

from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_clock import Clock
from ansible.module_utils.sigsleuth_loss import Losses
from ansible.module_utils.sigsleuth_report import kill_dict
from tests.integration.forensics_stage import CASE_NAMES, check_case

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace")
SLACK_NS = 50_000_000
# What the engine still gets wrong on these traces (as tests/integration/test_forensics.py in ftrace mode).
KNOWN_WRONG = {}


def iso(realtime_ns):
    seconds, nanos = divmod(int(realtime_ns), 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (nanos // 1000)


def replay(case, precision="syscall", edit=None):
    """The case's kills from its captured trace. The captures were armed with syscall precision; a light
    replay ignores the syscall events, as a light arm would not have recorded them. edit: a function of the
    trace's lines returning the lines to replay instead."""
    base = os.path.join(FIXTURES, "forensics_%s" % case)
    with open(base + ".truth") as handle:
        truth = json.load(handle)
    lineage = Lineage(truth["signals"], snapshot_time_ns=truth["snapshot_time_ns"],
                      memory_hierarchy=truth["memory_hierarchy"], precision=precision,
                      opens_traced=truth.get("cgroup_kill_opens", False))
    lineage.add_snapshot(truth["snapshot"])
    stats = TraceStats()
    with open(base + ".trace", "rb") as stream:
        if edit is not None:
            stream = io.BytesIO(b"".join(edit(stream.readlines())))
        for event in iter_events(stream, stats):
            lineage.feed(event)
    clock = Clock(truth["clock_offset_ns"])
    return truth, [kill_dict(kill, clock, Losses()) for kill in lineage.kills], stats


def case_param(name):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_WRONG[name])] if name in KNOWN_WRONG else []
    return pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("precision", ["syscall", "light"])
@pytest.mark.parametrize("case", [case_param(name) for name in CASE_NAMES])
def test_captured_case_is_attributed(case, precision):
    truth, kills, _stats = replay(case, precision)
    t0, t1 = truth["window"]["real_ns"]
    problems = check_case(kills, truth, ("ftrace",), (iso(t0 - SLACK_NS), iso(t1 + SLACK_NS)), precision)
    assert not problems, "%d problem(s) replaying %s:\n%s" % (len(problems), case, "\n".join(problems))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_captured_trace_parses_cleanly(case):
    """Every line of a real capture is a record, a comment or a continuation of a record (hostile names)."""
    truth, _kills, stats = replay(case)
    assert stats.malformed == 0, "%d lines of forensics_%s.trace were not understood" % (stats.malformed, case)
    assert stats.events > 0
    assert truth["kills"], "the fixture holds no expected kill"


# What a clean-clone CI run's trace showed (forensics ftrace-syscall, pid_reuse): a process whose fork the
# trace did not hold took an exited ancestor's pid while the ancestor's child (the killer) still lived, renamed
# itself, exec'd, forked and exited, before the case's own newcomer took the pid.
LOST_FORK_NEWCOMER = (
    b"              sh-%(pid)d    (   %(pid)d) [001] ..... %(t1)s: task_rename: pid=%(pid)d oldcomm=spawner "
    b"newcomm=sh oom_score_adj=0\n",
    b"              sh-%(pid)d    (   %(pid)d) [001] ..... %(t2)s: sched_process_exec: filename=/bin/sh "
    b"pid=%(pid)d old_pid=%(pid)d\n",
    b"              sh-%(pid)d    (   %(pid)d) [001] ..... %(t3)s: sched_process_fork: comm=sh pid=%(pid)d "
    b"child_comm=sh child_pid=%(child)d\n",
    b"              sh-%(pid)d    (   %(pid)d) [001] ..... %(t4)s: sched_process_exit: comm=sh pid=%(pid)d "
    b"prio=120 group_dead=true\n",
)
ANCESTOR_EXIT = re.compile(rb" (\d+\.\d{6}): sched_process_exit: comm=fx-ancestor-\w pid=(\d+) ")


def with_lost_fork_newcomers(lines):
    """After each ancestor's exit, a newcomer of unseen fork on its pid (LOST_FORK_NEWCOMER), 10 us apart."""
    edited = []
    for line in lines:
        edited.append(line)
        found = ANCESTOR_EXIT.search(line)
        if found:
            at, pid = float(found.group(1)), int(found.group(2))
            values = {b"t%d" % i: b"%.6f" % (at + i * 10e-6) for i in range(1, 5)}
            values.update({b"pid": pid, b"child": 900000 + pid})
            edited.extend(template % values for template in LOST_FORK_NEWCOMER)
    return edited


@pytest.mark.parametrize("precision", ["syscall", "light"])
def test_a_newcomer_of_unseen_fork_on_an_exited_ancestors_pid_changes_no_ancestry(precision):
    truth, kills, stats = replay("pid_reuse", precision, edit=with_lost_fork_newcomers)
    assert stats.malformed == 0 and stats.events > 4 * len(LOST_FORK_NEWCOMER)
    t0, t1 = truth["window"]["real_ns"]
    problems = check_case(kills, truth, ("ftrace",), (iso(t0 - SLACK_NS), iso(t1 + SLACK_NS)), precision)
    assert not problems, "%d problem(s) replaying pid_reuse with newcomers:\n%s" % (len(problems), "\n".join(problems))
