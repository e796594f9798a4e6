"""Issue 4 for real: every way a process gets killed, staged on this machine and attributed right.

One arm/collect/disarm cycle per source mode runs every case of forensics_stage.CASES (they do not interfere:
each has its own victims, senders and cgroups), because a cycle costs ~30 s of ansible. Cases with a part
that must predate arming (a snapshot-only ancestor, a pid namespace, victims with hostile names) stage it
first. The test process is a child subreaper for the cycle, so every orphan comes back to it and is reaped
(pid 1 here does not reap).

Each test then checks one case's kill records against its ground truth (forensics_stage.check_case): victim
pid/tid, sender pid/tid/comm/exe, mechanism, origin, the decisive evidence, the ancestry parent first up to
this test process and on to pid 1, and case-specific facts (count, trigger, oom, namespace pids, cgroup).

Modes: ftrace alone; ftrace and audit; audit alone (what audit cannot see must be absent or an honest
"unknown"). Modes with audit run once the role arms audit (roles/sigsleuth/tasks/arm.yml).

SIGSLEUTH_FORENSICS_KEEP=DIR keeps each cycle's report.json and trace copy in DIR/<mode>/ (pytest's own temp
directories are rotated away by other runs). SIGSLEUTH_CAPTURE_FIXTURES=1 also writes each case's slice of the live trace to
tests/fixtures/ftrace/forensics_<case>.trace with its truth (.truth), for tests/unit/test_forensics_fixtures.py.
"""

import datetime
import json
import os
import re
import shutil
import time

import pytest

from forensics_stage import (
    ARMED_SIGNALS, CASE_NAMES, Stage, check_case, describe_kill, prepare_cases, run_cases, token_holders,
)
from sigsleuth_support import (
    INVENTORY_HOST, ROOT, STATE_DIR, assert_no_residue, child_subreaper, disarm_quietly, run_playbook,
    zombie_children,
)

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "ftrace")
ARM_TASKS = os.path.join(ROOT, "roles", "sigsleuth", "tasks", "arm.yml")
# (sources, precision): each precision with ftrace alone and with audit; audit alone has no precision.
MODES = [(("ftrace",), "light"), (("ftrace",), "syscall"), (("ftrace", "audit"), "light"),
         (("ftrace", "audit"), "syscall"), (("audit",), None)]


def mode_id(mode):
    sources, precision = mode
    return "+".join(sources) + ("-" + precision if precision else "")
# Clock conversion and scheduling slack around a case's window.
SLACK_NS = 50_000_000
# What the engine still gets wrong, by (mode, case) -> what the report says instead; applied as a strict xfail, so
# a fix turns the XPASS into a failure and the entry goes with the fix.
KNOWN_WRONG = {}


def role_arms(source):
    with open(ARM_TASKS) as handle:
        text = handle.read()
    return {"ftrace": "sigsleuth_trace", "audit": "sigsleuth_audit"}[source] in text


def iso(realtime_ns):
    seconds, nanos = divmod(int(realtime_ns), 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (nanos // 1000)


class Cycle:
    def __init__(self, mode, precision):
        self.mode = mode
        self.precision = precision
        self.report = None
        self.truths = {}
        self.cleanup_problems = []
        self.trace_path = None
        self.cgroups = []


@pytest.fixture(scope="module", params=MODES, ids=[mode_id(m) for m in MODES])
def cycle(request, host_baseline, report_schema, tmp_path_factory):
    """Stage every case under one arming in this mode; yields the report and the truths (host clean again)."""
    mode, precision = request.param
    missing = [source for source in mode if not role_arms(source)]
    if missing:
        pytest.skip("the role does not arm %s yet (roles/sigsleuth/tasks/arm.yml)" % ", ".join(missing))
    workdir = tmp_path_factory.mktemp("forensics-" + mode_id(request.param))
    stage = Stage(str(workdir))
    result = Cycle(mode, precision or "syscall")
    extra = {"sigsleuth_signals": ARMED_SIGNALS, "sigsleuth_sources": list(mode)}
    if precision:
        extra["sigsleuth_precision"] = precision
    armed = False
    with child_subreaper():
        try:
            prepared = prepare_cases(stage)
            armed = True
            run_playbook("arm.yml", "-e", json.dumps(extra))
            with open(os.path.join(STATE_DIR, "state.json")) as handle:
                state = json.load(handle)
            result.truths = run_cases(stage, prepared)
            time.sleep(0.2)  # let the last exits reach the buffer
            if "ftrace" in mode:
                result.trace_path = save_trace(state, str(workdir))
                if os.environ.get("SIGSLEUTH_CAPTURE_FIXTURES") and request.param == (("ftrace",), "syscall"):
                    capture_fixtures(result.trace_path, state, result.truths)
            result.report = collect(str(workdir / "reports"), report_schema, keep_as=mode_id(request.param),
                                    trace_path=result.trace_path, truths=result.truths)
        finally:
            if armed:
                disarm = disarm_quietly()
                if getattr(disarm, "rc", 1) != 0:
                    result.cleanup_problems.append("disarm failed: %s" % getattr(disarm, "output", lambda: disarm)())
            result.cgroups = list(stage.cgroups)
            result.cleanup_problems += stage.cleanup()
    result.cleanup_problems += ["zombie left under the test process: %d" % pid for pid in zombie_children()]
    result.cleanup_problems += ["process left: %d" % pid for pid in token_holders(stage.token)]
    result.cleanup_problems += ["cgroup left: %s" % path for path in result.cgroups if os.path.exists(path)]
    try:
        assert_no_residue(host_baseline, "after the %s cycle" % mode_id(request.param))
    except AssertionError as exc:
        result.cleanup_problems.append(str(exc))
    yield result


def save_trace(state, workdir):
    """A copy of the live trace (reading `trace` does not consume it), for the record and for fixtures."""
    ftrace = state["ftrace"]
    source = os.path.join(ftrace["tracefs"], "instances", ftrace["instance"], "trace")
    target = os.path.join(workdir, "trace.txt")
    with open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def collect(report_dir, schema, keep_as, trace_path=None, truths=None):
    run = run_playbook("collect.yml", "-e", "sigsleuth_report_dir=%s" % report_dir)
    path = os.path.join(report_dir, INVENTORY_HOST, "report.json")
    assert os.path.isfile(path), "collect wrote no %s\n%s" % (path, run.output())
    keep = os.environ.get("SIGSLEUTH_FORENSICS_KEEP")
    if keep:
        keep = os.path.join(keep, keep_as)
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, os.path.join(keep, "report.json"))
        if trace_path:
            shutil.copy(trace_path, os.path.join(keep, "trace.txt"))
        with open(os.path.join(keep, "truths.json"), "w") as handle:
            json.dump(truths, handle, indent=1)
    with open(path) as handle:
        report = json.load(handle)
    errors = sorted(schema.iter_errors(report), key=lambda e: list(e.absolute_path))
    report["__schema_errors"] = ["%s: %s" % ("/".join(str(p) for p in error.absolute_path), error.message)
                                 for error in errors]
    return report


# ---------------------------------------------------------------- fixture capture

_STAMP = re.compile(rb"\] \S+ +(\d+)\.(\d{6}): ")


def trace_slice(trace_path, t0, t1):
    """The header comments plus every record stamped within [t0, t1] (boot ns); a record's continuation
    lines (a name with a newline) stay with it."""
    out = []
    keep = False
    with open(trace_path, "rb") as handle:
        for line in handle:
            if line.startswith(b"#"):
                out.append(line)
                continue
            m = _STAMP.search(line)
            if m:
                ts = int(m.group(1)) * 1_000_000_000 + int(m.group(2)) * 1000
                keep = t0 <= ts <= t1
            if keep:
                out.append(line)
    return b"".join(out)


def snapshot_closure(state, pids):
    """The arm-time snapshot entries of `pids` and of their ancestors (by ppid)."""
    entries = {}
    with open(state["snapshot"]["path"]) as handle:
        for line in handle:
            entry = json.loads(line)
            entries[entry["pid"]] = entry
    wanted, todo = {}, list(pids)
    while todo:
        pid = todo.pop()
        if pid in wanted or pid not in entries:
            continue
        wanted[pid] = entries[pid]
        todo.append(entries[pid].get("ppid"))
    return sorted(wanted.values(), key=lambda e: e["pid"])


def memory_hierarchy():
    """The cgroup v1 memory controller's hierarchy id on this machine (cgroup_attach_task names it)."""
    with open("/proc/cgroups") as handle:
        for line in handle:
            fields = line.split()
            if fields[:1] == ["memory"] and fields[1] != "0":
                return int(fields[1])
    return None


def capture_fixtures(trace_path, state, truths):
    for name, truth in truths.items():
        if truth.get("error"):
            continue
        t0, t1 = truth["window"]["boot_ns"]
        pids = set()
        for kill in truth["kills"]:
            pids.add(kill["victim"]["pid"])
            pids.update(p["pid"] for p in kill["ancestry"])
            if kill["sender"]:
                pids.add(kill["sender"]["pid"])
        base = os.path.join(FIXTURES, "forensics_%s" % name)
        with open(base + ".trace", "wb") as handle:
            handle.write(trace_slice(trace_path, t0 - 1_000_000, t1 + SLACK_NS))
        fixture = dict(truth, signals=ARMED_SIGNALS, clock_offset_ns=state["ftrace"]["clock_offset_ns"],
                       cgroup_kill_opens=state["ftrace"].get("cgroup_kill_opens", False),
                       memory_hierarchy=memory_hierarchy(),
                       snapshot_time_ns=state["snapshot"]["taken_at_ns"] - state["ftrace"]["clock_offset_ns"],
                       snapshot=snapshot_closure(state, pids))
        with open(base + ".truth", "w") as handle:
            json.dump(fixture, handle, indent=1, sort_keys=True)
            handle.write("\n")


# ---------------------------------------------------------------- the tests

def known_wrong(request, cycle, what):
    reason = KNOWN_WRONG.get((mode_id((cycle.mode, cycle.precision if "ftrace" in cycle.mode else None)), what))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_kill_is_attributed(request, cycle, case):
    known_wrong(request, cycle, case)
    truth = cycle.truths[case]
    t0, t1 = truth["window"]["real_ns"]
    problems = check_case(cycle.report["kills"], truth, cycle.mode, (iso(t0 - SLACK_NS), iso(t1 + SLACK_NS)),
                          cycle.precision)
    assert not problems, "%d problem(s) with case %s in mode %s (%s precision):\n%s\n(trace copy: %s)" % (
        len(problems), case, "+".join(cycle.mode), cycle.precision, "\n".join(problems), cycle.trace_path)


def test_report_matches_the_schema(request, cycle):
    known_wrong(request, cycle, "schema")
    errors = cycle.report["__schema_errors"]
    assert not errors, "report.json does not match schema/report.schema.json (%d errors):\n%s" % (
        len(errors), "\n".join(errors[:20]))


def test_nothing_was_lost(cycle):
    """The cases ran in a quiet buffer: a loss would make every other result here suspect."""
    ftrace = cycle.report["sources"].get("ftrace", {})
    if "ftrace" in cycle.mode:
        assert ftrace.get("armed") is True and ftrace.get("loss") is None, ftrace
    audit = cycle.report["sources"].get("audit", {})
    if "audit" in cycle.mode:
        assert audit.get("armed") is True and audit.get("loss") is None, audit


def test_no_record_for_a_victim_is_left_unexplained(cycle):
    """Every kill of a staged victim is an expected one (no stray duplicate, no record with a wrong signal)."""
    expected = {(k["victim"]["pid"], k["signal"]) for t in cycle.truths.values() for k in t["kills"]}
    victims = {pid for pid, _ in expected}
    extra = [describe_kill(k) for k in cycle.report["kills"]
             if k["victim"]["pid"] in victims and (k["victim"]["pid"], k["signal"]["number"]) not in expected]
    assert not extra, "unexpected records for staged victims:\n" + "\n".join(extra)


def test_cycle_left_nothing_behind(cycle):
    """No process, zombie, cgroup, trace instance, audit rule or state file remains."""
    assert not cycle.cleanup_problems, "\n".join(cycle.cleanup_problems)
