"""sigsleuth_audit on this very machine: a user's own audit rules stay byte-for-byte identical, auditd is
left running or stopped exactly as found, and a real kill staged while armed is parsed back from audit.log.

Runs the real module through the project's ansible (``.venv/bin/ansible localhost -m sigsleuth_audit``) and
holds the test lock for the whole module.
"""

import json
import os
import subprocess
import time

import pytest

from ansible.module_utils import sigsleuth_audit_log as audit_log
from ansible.module_utils import sigsleuth_auditd as auditd
from ansible.module_utils import sigsleuth_audit_rules as rules
from ansible.module_utils import sigsleuth_vocabulary as vocabulary
from tests.lock import armed_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_RULES = [
    ["-w", "/etc/hosts", "-p", "wa", "-k", "userwatch"],
    ["-a", "always,exit", "-F", "arch=b64", "-S", "openat", "-F", "a2=0x7654321", "-F", "key=userkey"],
]


def auditctl(*args, check=True):
    proc = subprocess.run(["auditctl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=dict(os.environ, LC_ALL="C"))
    if check and proc.returncode != 0:
        raise AssertionError("auditctl %s failed: %s" % (" ".join(args), proc.stderr))
    return proc.stdout


def rules_text():
    return auditctl("-l")


def run_audit_module(args, check=False):
    ansible = os.environ.get("SIGSLEUTH_ANSIBLE") or os.path.join(ROOT, ".venv", "bin", "ansible")
    if not os.path.exists(ansible):
        pytest.fail("%s not found: run `make venv` first (or set SIGSLEUTH_ANSIBLE)" % ansible)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    # -o: one line per host, "localhost | CHANGED => {json}"
    argv = [ansible, "localhost", "-o", "-m", "sigsleuth_audit", "-a", json.dumps(args)]
    if check:
        argv.append("--check")
    proc = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    for line in proc.stdout.splitlines():
        head, sep, payload = line.partition(" => ")
        if sep and head.startswith("localhost"):
            try:
                return json.loads(payload)
            except ValueError:
                break
    raise AssertionError("no module result (rc=%s):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))


@pytest.fixture(scope="module")
def lock():
    if os.geteuid() != 0:
        pytest.skip("arms audit on this machine: run as root")
    with armed_lock():
        yield


@pytest.fixture
def host(lock, tmp_path):
    """The audit state as found; every test ends with it restored (rules, auditd, enabled, backlog limit)."""
    if subprocess.run(["sh", "-c", "command -v auditctl"], stdout=subprocess.DEVNULL).returncode != 0:
        pytest.skip("auditd is not installed (.ci/run installs it)")
    found = auditd.audit_status()
    found_rules = rules_text()
    rules_d = sorted(os.listdir("/etc/audit/rules.d")) if os.path.isdir("/etc/audit/rules.d") else None
    assert "sigsleuth_" not in found_rules, "sigsleuth audit rules are loaded before the test: a previous run " \
                                            "did not disarm"
    state = {"dir": str(tmp_path / "state")}
    yield state
    # Whatever happened: disarm, and put the host back exactly as it was found.
    problems = []
    try:
        result = run_audit_module({"state": "absent", "state_dir": state["dir"]})
        if result.get("failed"):
            problems.append("disarm failed: %s" % result.get("msg"))
    except AssertionError as exc:
        problems.append(str(exc))
    for rule in USER_RULES:
        auditctl(*(["-W"] + rule[1:] if rule[0] == "-w" else ["-d"] + rule[1:]), check=False)
    for line in rules_text().splitlines():
        if "sigsleuth_" in line:
            auditctl(*rules.rule_argv(line, delete=True)[1:], check=False)
            problems.append("left behind: %s" % line)
    now = auditd.audit_status()
    if now["running"] and not found["running"]:
        auditd.stop_auditd(pid=now["pid"])
    elif found["running"] and not now["running"]:
        auditd.start_auditd()
    now = auditd.audit_status()
    if now["enabled"] != found["enabled"]:
        auditctl("-e", str(found["enabled"]))
    if now["backlog_limit"] != found["backlog_limit"]:
        auditctl("-b", str(found["backlog_limit"]))
    if rules_text() != found_rules:
        problems.append("rules differ from those found:\n%s\nvs\n%s" % (rules_text(), found_rules))
    if rules_d is not None and sorted(os.listdir("/etc/audit/rules.d")) != rules_d:
        problems.append("/etc/audit/rules.d differs: %s" % os.listdir("/etc/audit/rules.d"))
    assert not problems, "\n".join(problems)


def set_auditd(running):
    status = auditd.audit_status()
    if running and not status["running"]:
        auditd.start_auditd()
    elif not running and status["running"]:
        auditd.stop_auditd(pid=status["pid"])


def wait_for_events(log_file, since_ns, predicate, timeout=15.0):
    """Parse the real log (auditd flushes asynchronously) until predicate(events) holds."""
    deadline = time.monotonic() + timeout
    while True:
        stats = audit_log.AuditStats()
        found = list(audit_log.iter_audit_events(log_file, since_ns=since_ns, stats=stats))
        if predicate(found) or time.monotonic() > deadline:
            return found, stats
        time.sleep(0.25)


@pytest.mark.parametrize("auditd_running", [False, True], ids=["auditd-stopped", "auditd-running"])
def test_user_rules_survive_arm_and_disarm_byte_for_byte(host, auditd_running):
    set_auditd(auditd_running)
    before_status = auditd.audit_status()
    try:
        for rule in USER_RULES:
            auditctl(*rule)
        before = rules_text()
        assert "userwatch" in before and "userkey" in before

        result = run_audit_module({"signals": ["KILL", "TERM"], "fork": True, "state_dir": host["dir"]})
        assert not result.get("failed"), result
        assert result["changed"] is True and result["started_auditd"] is (not auditd_running)
        after_arm = rules_text()
        # Foreign rules: the same bytes, the same place; ours appended after them, exactly as we wrote them.
        assert after_arm.startswith(before)
        assert after_arm[len(before):].splitlines() == result["rules"]
        assert rules.our_rules(after_arm.splitlines()) == result["rules"]
        assert auditd.audit_status()["running"]

        again = run_audit_module({"signals": ["KILL", "TERM"], "fork": True, "state_dir": host["dir"]})
        assert again["changed"] is False, again
        checked = run_audit_module({"signals": ["KILL", "TERM"], "fork": True, "state_dir": host["dir"]}, check=True)
        assert checked["changed"] is False, checked
        assert rules_text() == after_arm

        # A real kill, read back from the real log
        victim = subprocess.Popen(["sleep", "300"])
        time.sleep(0.2)
        subprocess.run(["/bin/sh", "-c", "/usr/bin/kill -9 %d; true" % victim.pid], check=True)
        victim.wait()

        def has_kill(found):
            return any(e.syscall == "kill" and e.signal == 9 and e.target_pid == victim.pid for e in found)

        found, stats = wait_for_events(result["log_file"], result["armed_at_ns"], has_kill)
        assert has_kill(found), (stats.as_dict(), found[-5:])
        (kill,) = [e for e in found if e.syscall == "kill" and e.target_pid == victim.pid]
        assert kill.key == rules.KEY_KILL and kill.exe == "/usr/bin/kill" and kill.comm == "kill"
        assert kill.obj_pids[0]["pid"] == victim.pid and kill.obj_pids[0]["comm"] == "sleep"
        assert kill.argv[:3] == ["/usr/bin/kill", "-9", str(victim.pid)]
        execs = [e for e in found if e.syscall == "execve" and e.pid == kill.pid]
        assert execs and execs[-1].argv == ["/usr/bin/kill", "-9", str(victim.pid)] and execs[-1].cwd
        forks = [e for e in found if e.key == rules.KEY_FORK and e.child_pid == kill.pid]
        assert forks and forks[0].comm == "sh"  # the shell forked the killer
        assert stats.covers_since is True and stats.errors == [] and stats.malformed_lines == 0

        result = run_audit_module({"state": "absent", "state_dir": host["dir"]})
        assert not result.get("failed"), result
        assert result["changed"] is True
        assert rules_text() == before  # byte for byte
        status = auditd.audit_status()
        assert status["running"] is auditd_running
        assert status["enabled"] == before_status["enabled"]
        assert status["backlog_limit"] == before_status["backlog_limit"]
        assert not os.path.exists(host["dir"])

        result = run_audit_module({"state": "absent", "state_dir": host["dir"]})
        assert result["changed"] is False, result
    finally:
        for rule in USER_RULES:
            delete = ["-W"] + rule[1:] if rule[0] == "-w" else ["-d"] + rule[1:]
            auditctl(*delete, check=False)


def test_persist_writes_and_removes_exactly_one_file(host):
    if not os.path.isdir("/etc/audit/rules.d"):
        pytest.skip("no /etc/audit/rules.d on this host")
    before = sorted(os.listdir("/etc/audit/rules.d"))
    result = run_audit_module({"signals": ["KILL"], "persist": True, "state_dir": host["dir"]})
    assert not result.get("failed"), result
    assert result["persist_file"] == vocabulary.AUDIT_RULES_FILE
    assert sorted(os.listdir("/etc/audit/rules.d")) == sorted(before + ["sigsleuth.rules"])
    with open(vocabulary.AUDIT_RULES_FILE) as handle:
        assert [line.strip() for line in handle if line.startswith("-")] == result["rules"]
    result = run_audit_module({"state": "absent", "state_dir": host["dir"]})
    assert not result.get("failed") and result["changed"]
    assert sorted(os.listdir("/etc/audit/rules.d")) == before
