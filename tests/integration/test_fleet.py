"""Arm, collect and disarm over SSH across a fleet at once (the SSH test fleet of fleet_support.py).

The four hosts of the `fleet` fixture are this machine reached over four sshd: fleet-root (root),
fleet-sudo (an unprivileged user with sudo become), fleet-py39 (a Python 3.9 target) and fleet-down
(unreachable). They share one kernel, so each has its own tracefs instance and state dir, and a kill staged here
shows in every host's instance: each host's report must name the sender and ancestry of the kill staged for it.
Faults: the unreachable host, and a host whose instance is removed between arm and collect, are named in
summary.md with the reason; the others still get their reports; collect again is safe; disarm works on the
partly armed host.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from forensics_stage import _child_named
from sigsleuth_support import ROOT, signals_extra_vars
from test_kill_scenarios import Findings, check_kill, summarize

REACHABLE = ("fleet-root", "fleet-sudo", "fleet-py39")
UNREACHABLE_RC = 4  # ansible-playbook: some host was unreachable
FAILED_RC = 2       # ansible-playbook: some host failed


def assert_outcomes(run, ok=(), failed=(), unreachable=(), absent=()):
    """Each named host ended as said in the PLAY RECAP (absent: not in the play at all)."""
    for name in ok:
        line = run.host(name)
        assert line["failed"] == 0 and line["unreachable"] == 0, "%s did not succeed: %s\n%s" % (
            name, line, run.output())
    for name in failed:
        assert run.host(name)["failed"] >= 1, "%s did not fail: %s\n%s" % (name, run.host(name), run.output())
    for name in unreachable:
        assert run.host(name)["unreachable"] >= 1, "%s is not unreachable: %s\n%s" % (
            name, run.host(name), run.output())
    for name in absent:
        assert name not in run.recap, "%s ran although it was left out:\n%s" % (name, run.output())


def load_reports(report_dir, names, report_schema):
    reports = {}
    for name in names:
        path = report_dir / name / "report.json"
        assert path.is_file(), "no report for %s at %s" % (name, path)
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), "%s is not 0600" % path
        with open(path) as handle:
            report = json.load(handle)
        errors = list(report_schema.iter_errors(report))
        assert not errors, "%s's report does not match the schema: %s" % (name, errors[0].message)
        assert report["host"] == name, "%s's report names host %r" % (name, report["host"])
        reports[name] = report
    return reports


def summary_section(report_dir, name):
    """The lines summary.md has for one host (from its heading to the next host's)."""
    text = (report_dir / "summary.md").read_text()
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line[3:].replace("\\", "") == name
            continue
        if inside:
            lines.append(line)
    assert lines or ("## " + name) in text, "summary.md has no section for %s:\n%s" % (name, text)
    return "\n".join(lines)


def tracefs_instance_dir(instance):
    return os.path.join("/sys/kernel/tracing/instances", instance)


def ansible_adhoc(fleet, host, module, args, *extra):
    argv = [os.path.join(ROOT, ".venv", "bin", "ansible"), host, "-i", fleet.inventory, "-m", module, "-a", args,
            "-o"] + list(extra)
    proc = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, **fleet.env()), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, "%s\n%s\n%s" % (" ".join(argv), proc.stdout, proc.stderr)
    return proc.stdout


def test_a_kill_staged_for_each_host_is_attributed_in_that_host_s_report(fleet, scenarios, tmp_path,
                                                                       report_schema):
    staged = {name: scenarios("seed", "now") for name in REACHABLE}
    arm = fleet.run("arm.yml", *signals_extra_vars(["KILL"]))
    assert arm.rc == UNREACHABLE_RC, "arm: rc %d\n%s" % (arm.rc, arm.output())
    assert_outcomes(arm, ok=REACHABLE, unreachable=["fleet-down"])
    for name in REACHABLE:
        assert os.path.isdir(tracefs_instance_dir(fleet.host(name).instance)), "%s has no instance" % name
    for scenario in staged.values():
        scenario.trigger()
    truths = {name: scenario.wait() for name, scenario in staged.items()}

    report_dir = tmp_path / "reports"
    collect = fleet.run("collect.yml", "-e", "sigsleuth_report_dir=%s" % report_dir)
    assert collect.rc == FAILED_RC, "collect: rc %d\n%s" % (collect.rc, collect.output())
    assert_outcomes(collect, ok=REACHABLE, failed=["fleet-down"])
    reports = load_reports(report_dir, REACHABLE, report_schema)
    assert not (report_dir / "fleet-down").exists(), "the unreachable host got a report directory"

    findings = Findings()
    for name, report in reports.items():
        findings.check(report["sources"]["ftrace"].get("armed") is True, "%s: ftrace not armed" % name)
        for expected in truths[name]["kills"]:
            before = len(findings.problems)
            check_kill(findings, report, truths[name], expected)
            findings.problems[before:] = ["%s: %s" % (name, problem) for problem in findings.problems[before:]]
    assert not findings.problems, "%d mismatch(es):\n- %s\n%s" % (
        len(findings.problems), "\n- ".join(findings.problems),
        "\n".join("%s:\n%s" % (name, summarize(report)) for name, report in reports.items()))

    down = summary_section(report_dir, "fleet-down")
    assert "unreachable" in down and "Connection refused" in down, \
        "summary.md does not say why fleet-down was not collected:\n%s" % down


def test_become_over_sudo_and_a_python_3_9_target(fleet):
    """fleet-sudo logs in as the unprivileged test user and becomes root through sudo; fleet-py39's modules run
    on Python 3.9 (the same inventory arm and collect used above)."""
    user = fleet.host("fleet-sudo").user
    login = ansible_adhoc(fleet, "fleet-sudo", "ansible.builtin.command", "id -un", "-e", "ansible_become=false")
    assert login.strip().endswith(user), "fleet-sudo did not log in as %s: %s" % (user, login)
    become = ansible_adhoc(fleet, "fleet-sudo", "ansible.builtin.command", "id -un")
    assert become.strip().endswith("root"), "become on fleet-sudo did not give root: %s" % become
    assert "Accepted publickey for %s" % user in fleet.sshd_log(fleet.host("fleet-sudo"))
    facts = ansible_adhoc(fleet, "fleet-py39", "ansible.builtin.setup", "gather_subset=!all filter=ansible_python")
    version = json.loads(facts.split("=>", 1)[1])["ansible_facts"]["ansible_python"]["version"]
    assert (version["major"], version["minor"]) == (3, 9), "fleet-py39 runs Python %s" % version


def test_limit_arms_collects_and_disarms_only_the_chosen_hosts(fleet, tmp_path):
    chosen = ["fleet-root", "fleet-py39"]
    arm = fleet.run("arm.yml", "--limit", ",".join(chosen))
    assert arm.rc == 0, arm.output()
    assert_outcomes(arm, ok=chosen, absent=["fleet-sudo", "fleet-down"])
    instances = {host.name: os.path.isdir(tracefs_instance_dir(host.instance)) for host in fleet.hosts}
    assert instances == {"fleet-root": True, "fleet-sudo": False, "fleet-py39": True, "fleet-down": False}

    report_dir = tmp_path / "reports"
    collect = fleet.run("collect.yml", "--limit", "fleet-root", "-e", "sigsleuth_report_dir=%s" % report_dir)
    assert collect.rc == 0, collect.output()
    assert_outcomes(collect, ok=["fleet-root"], absent=["fleet-sudo", "fleet-py39", "fleet-down"])
    assert sorted(p.name for p in report_dir.iterdir() if p.is_dir()) == ["fleet-root"]
    summary = (report_dir / "summary.md").read_text()
    assert "## fleet-root" in summary and "fleet-py39" not in summary and "fleet-down" not in summary, summary

    disarm = fleet.run("disarm.yml", "--limit", ",".join(chosen))
    assert disarm.rc == 0, disarm.output()
    for host in fleet.hosts:
        assert not os.path.isdir(tracefs_instance_dir(host.instance)), "%s still armed" % host.name
        assert not os.path.exists(host.state_dir), "%s's state dir is left" % host.name


def test_faults_are_named_with_reasons_and_the_others_still_report(fleet, tmp_path, report_schema):
    """fleet-down is unreachable; fleet-py39's instance is removed between arm and collect. fleet-root and
    fleet-sudo still get their reports; summary.md names both failed hosts with the reason; collect again is
    safe; disarm then works on the partly armed fleet-py39 and leaves nothing."""
    arm = fleet.run("arm.yml")
    assert arm.rc == UNREACHABLE_RC, arm.output()
    broken = fleet.host("fleet-py39")
    os.rmdir(tracefs_instance_dir(broken.instance))  # behind sigsleuth's back

    report_dir = tmp_path / "reports"
    for attempt in ("first", "again"):
        collect = fleet.run("collect.yml", "-e", "sigsleuth_report_dir=%s" % report_dir)
        assert collect.rc == FAILED_RC, "collect (%s): rc %d\n%s" % (attempt, collect.rc, collect.output())
        assert_outcomes(collect, ok=["fleet-root", "fleet-sudo"], failed=["fleet-py39", "fleet-down"])
        load_reports(report_dir, ["fleet-root", "fleet-sudo"], report_schema)
        py39 = summary_section(report_dir, "fleet-py39")
        assert "Collection failed" in py39 and "the armed trace could not be read" in py39 \
            and broken.instance in py39.replace("\\", ""), \
            "summary.md (%s) does not say why fleet-py39 failed:\n%s" % (attempt, py39)
        down = summary_section(report_dir, "fleet-down")
        assert "Collection failed" in down and "unreachable" in down and "Connection refused" in down, \
            "summary.md (%s) does not say why fleet-down failed:\n%s" % (attempt, down)
        assert "could not collect on fleet-py39" in collect.stdout, collect.output()

    disarm = fleet.run("disarm.yml")
    assert disarm.rc == UNREACHABLE_RC, disarm.output()
    assert_outcomes(disarm, ok=REACHABLE, unreachable=["fleet-down"])
    for host in fleet.hosts:
        assert not os.path.isdir(tracefs_instance_dir(host.instance)), "%s still armed" % host.name
        assert not os.path.exists(host.state_dir), "%s's state dir is left" % host.name


# A parent that holds a secret in its argv from before arm (so every host's snapshot records it), then, told
# to, forks a shell that SIGKILLs the parent's sleeping victim: the parent is the sender's parent in the report.
SECRET_PARENT = r"""
import os, subprocess, sys, time
victim = subprocess.Popen(["sleep", "300"])
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.05)
subprocess.call(["sh", "-c", 'kill -9 "$1"', "sh", str(victim.pid)])
victim.wait()
time.sleep(600)
"""


def collect_secret_fleet(fleet, tmp_path, *extra):
    """Stage the secret parent's kill across the fleet, collect with -v (module results printed too) and
    disarm: (the collect run, the report dir, each reachable host's kill sent by the parent's child)."""
    tmp_path.mkdir()
    go = tmp_path / "go"
    parent = subprocess.Popen([sys.executable, "-c", SECRET_PARENT, str(go), "--password=hunter2"])
    try:
        time.sleep(0.5)  # the parent and its victim exist before arm: the snapshot holds their argv
        arm = fleet.run("arm.yml")
        assert arm.rc == UNREACHABLE_RC, arm.output()
        go.touch()
        deadline = time.monotonic() + 10
        while _child_named(parent.pid, "sleep"):  # until the victim is killed and reaped
            assert time.monotonic() < deadline, "the staged kill did not happen"
            time.sleep(0.1)
        report_dir = tmp_path / "reports"
        collect = fleet.run("collect.yml", "-v", "-e", "sigsleuth_report_dir=%s" % report_dir, *extra)
        assert collect.rc == FAILED_RC, collect.output()
        assert_outcomes(collect, ok=REACHABLE, failed=["fleet-down"])
        kills = {}
        for name in REACHABLE:
            report = json.loads((report_dir / name / "report.json").read_text())
            found = [kill for kill in report["kills"] if kill["ancestry"] and kill["ancestry"][0]["pid"] == parent.pid]
            assert found, "%s: no kill sent by the parent's child:\n%s" % (name, summarize(report))
            kills[name] = found[0]
        disarm = fleet.run("disarm.yml")
        assert disarm.rc == UNREACHABLE_RC, disarm.output()
        return collect, report_dir, kills
    finally:
        for child in _children(parent.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()


def leaks(collect, report_dir, secret="hunter2"):
    """Where the secret reached the control node: file names and contents under the report dir, the output."""
    found = [str(path) for path in report_dir.rglob("*")
             if secret in path.name or (path.is_file() and secret.encode() in path.read_bytes())]
    return found + (["collect's output"] if secret in collect.stdout + collect.stderr else [])


def test_a_secret_in_argv_reaches_no_file_and_no_output_on_the_control_node(fleet, tmp_path):
    """Redaction happens on each target before the facts cross SSH: a staged `--password=hunter2` argv of the
    sender's parent is `<redacted>` in every host's report, and `hunter2` is in no file under the report
    directory and nowhere in collect's output; with `sigsleuth_redact: []` it is there (the check is real)."""
    collect, report_dir, kills = collect_secret_fleet(fleet, tmp_path / "default")
    for name, kill in kills.items():
        assert "--password=<redacted>" in (kill["ancestry"][0].get("argv") or []), \
            "%s: the parent's argv is not redacted: %r" % (name, kill["ancestry"][0].get("argv"))
    assert not leaks(collect, report_dir), "the secret reached the control node in: %s" % leaks(collect, report_dir)

    collect, report_dir, kills = collect_secret_fleet(fleet, tmp_path / "off", "-e", '{"sigsleuth_redact": []}')
    assert all("--password=hunter2" in (kill["ancestry"][0].get("argv") or []) for kill in kills.values()), kills
    assert leaks(collect, report_dir), "with sigsleuth_redact: [] the argv should be kept as it was"


def _children(pid):
    """The pids of pid's live children (the kernel's own list, as forensics_stage._child_named reads it)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid), "rb") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []
