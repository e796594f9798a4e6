"""Redaction for real (issue 10, item 5): arm ftrace and audit on this machine (so argv and cwd come from audit's
EXECVE, PROCTITLE and CWD records), stage a kill whose sender and its parent run with a password in their argv
and a token in their working directory, collect, and find the secret in no file under the report dir and
nowhere in ansible-playbook's output (collect runs with -v, so every module result, the sigsleuth facts
included, is printed), while the culprit is still named and ``<redacted>`` is there. With
``sigsleuth_redact: []`` the argv is kept. A malformed pattern fails before any host task ran, at arm and at
collect. The host is disarmed and checked for residue after each test (conftest's fixtures).
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from sigsleuth_support import (
    INVENTORY_HOST, STATE_DIR, assert_no_residue, disarm_quietly, run_playbook, tracefs_instances,
)

SECRET = "hunter2"
REDACTED = "<redacted>"
WITH_AUDIT = ["-e", json.dumps({"sigsleuth_sources": ["ftrace", "audit"]})]
NO_REDACTION = ["-e", json.dumps({"sigsleuth_redact": []})]
MALFORMED = ["-e", json.dumps({"sigsleuth_redact": ["--password=(?P<secret>\\S+)", "("]})]

# The sender's parent: started with the secret as a separate argument, it runs the sender, a shell whose
# builtin kill sends the SIGKILL and whose own argv carries the secret as --password=..., and reports the
# shell's pid.
PARENT = r"""
import subprocess, sys
victim, pid_file = sys.argv[3], sys.argv[4]
child = subprocess.Popen(["/bin/sh", "-c", 'kill -9 "$1"', "redact-sender", victim, "--password=%s"])
with open(pid_file, "w") as handle:
    handle.write(str(child.pid))
sys.exit(child.wait())
""" % SECRET


@pytest.fixture
def staged(tmp_path):
    """Factory: staged() starts the victim and, in a directory named token=<secret>, the parent that has it
    killed; returns (victim pid, parent pid, sender pid). Everything is killed and reaped after the test."""
    procs = []

    def stage():
        workdir = tmp_path / "work" / ("token=" + SECRET)
        workdir.mkdir(parents=True)
        script = tmp_path / "redact_parent.py"
        script.write_text(PARENT)
        pid_file = tmp_path / "sender.pid"
        victim = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        procs.append(victim)
        parent = subprocess.Popen([sys.executable, str(script), "--password", SECRET, str(victim.pid),
                                   str(pid_file)], cwd=str(workdir), stdin=subprocess.DEVNULL)
        procs.append(parent)
        assert parent.wait(timeout=60) == 0, "the staged sender failed"
        assert victim.wait(timeout=60) == -signal.SIGKILL, "the victim was not SIGKILLed"
        return victim.pid, parent.pid, int(pid_file.read_text())

    yield stage
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def collect_into(report_dir, *extra, expect_rc=0):
    return run_playbook("collect.yml", "-v", "-e", "sigsleuth_report_dir=%s" % report_dir, *extra,
                        expect_rc=expect_rc)


def read_report(report_dir, report_schema):
    path = report_dir / INVENTORY_HOST / "report.json"
    assert path.is_file(), "collect wrote no %s" % path
    assert oct(path.stat().st_mode & 0o777) == oct(0o600), "report.json is not 0600"
    assert oct((report_dir / INVENTORY_HOST).stat().st_mode & 0o777) == oct(0o700), "host dir is not 0700"
    assert oct((report_dir / "summary.md").stat().st_mode & 0o777) == oct(0o600), "summary.md is not 0600"
    assert oct(report_dir.stat().st_mode & 0o777) == oct(0o700), "the report dir collect made is not 0700"
    report = json.loads(path.read_text())
    errors = [error.message for error in report_schema.iter_errors(report)]
    assert not errors, "report.json does not match the schema: %s" % errors[:10]
    return report


def files_holding(root, needle):
    """Every file under root whose name or content holds needle."""
    found = []
    for directory, _, names in os.walk(str(root)):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                if needle.encode() in handle.read() or needle in path:
                    found.append(path)
    return found


def the_kill(report, victim_pid):
    kills = [kill for kill in report["kills"] if kill["victim"]["pid"] == victim_pid]
    assert len(kills) == 1, "expected one kill of pid %d, got %s" % (victim_pid, report["kills"])
    return kills[0]


def test_a_secret_in_argv_and_cwd_never_reaches_the_control_node(armed, staged, tmp_path, report_schema):
    armed(["KILL"], *WITH_AUDIT)
    victim, parent, sender = staged()
    report_dir = tmp_path / "reports"
    run = collect_into(report_dir)
    report = read_report(report_dir, report_schema)
    assert report["sources"]["audit"]["armed"] is True, report["sources"]["audit"]

    kill = the_kill(report, victim)
    assert (kill["sender"]["pid"], kill["sender"]["comm"]) == (sender, "sh"), kill["sender"]
    assert kill["ancestry"][0]["pid"] == parent, kill["ancestry"]
    assert kill["sender"]["argv"] == ["/bin/sh", "-c", 'kill -9 "$1"', "redact-sender", str(victim),
                                      "--password=" + REDACTED], kill["sender"]
    assert kill["sender"]["facts_from"].get("argv") == "audit", kill["sender"]["facts_from"]
    assert kill["sender"]["cwd"].endswith("/work/token=" + REDACTED), kill["sender"]
    assert kill["ancestry"][0]["argv"][2:4] == ["--password", REDACTED], kill["ancestry"][0]
    assert report["redaction"]["applied"] is True and report["redaction"]["redacted"] >= 3, report["redaction"]

    assert files_holding(report_dir, SECRET) == []
    assert str(report_dir / INVENTORY_HOST / "report.json") in files_holding(report_dir, REDACTED)
    assert SECRET not in run.stdout and SECRET not in run.stderr, run.output()
    assert REDACTED in run.stdout, "collect -v printed no redacted facts:\n" + run.output()

    # Off: the same kill with argv and cwd as the processes had them.
    plain_dir = tmp_path / "reports-plain"
    plain_run = collect_into(plain_dir, *NO_REDACTION)
    assert SECRET in plain_run.stdout, "collect -v shows the facts: without redaction the secret is there"
    plain_report = read_report(plain_dir, report_schema)
    plain = the_kill(plain_report, victim)
    assert plain["sender"]["argv"][-1] == "--password=" + SECRET, plain["sender"]
    assert plain["sender"]["cwd"].endswith("/work/token=" + SECRET), plain["sender"]
    assert plain["ancestry"][0]["argv"][2:4] == ["--password", SECRET], plain["ancestry"][0]
    assert plain_report["redaction"] == dict(report["redaction"], applied=False, patterns=0, redacted=0)

    # Malformed: refused before the collection task reached the host; no report written.
    refused_dir = tmp_path / "reports-refused"
    run = collect_into(refused_dir, *MALFORMED, expect_rc=2)
    assert "pattern 2 '(' is not a valid regular expression" in run.stdout, run.output()
    assert run.host()["failed"] == 1 and run.host()["changed"] == 0, run.output()
    assert "Read the trace and reconstruct each kill" not in run.stdout, run.output()
    assert not refused_dir.exists()


def test_a_malformed_pattern_is_refused_before_arm_touches_the_host(host_baseline):
    before = tracefs_instances()
    try:
        run = run_playbook("arm.yml", *WITH_AUDIT, *MALFORMED, expect_rc=2)
    finally:
        if os.path.exists(STATE_DIR) or tracefs_instances() != before:
            disarm_quietly()
    assert "pattern 2 '(' is not a valid regular expression" in run.stdout, run.output()
    assert run.host()["failed"] == 1 and run.host()["changed"] == 0, run.output()
    assert "Arm the tracefs instance" not in run.stdout, run.output()
    assert tracefs_instances() == before and not os.path.exists(STATE_DIR)
    assert_no_residue(host_baseline, "after a refused arm")


def test_disarm_ignores_the_patterns(host_baseline):
    """Disarm must always be able to leave a host as found: a bad pattern does not stop it."""
    run = run_playbook("disarm.yml", *MALFORMED)
    assert run.host()["failed"] == 0, run.output()
    assert_no_residue(host_baseline, "after disarm")
