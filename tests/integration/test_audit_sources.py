"""Audit as a source, for real, through the playbooks: issue 2's kill scenarios in audit-only mode
(`sigsleuth_sources: [audit]`) and in combined mode, checked against the harness's ground truth for sender,
ancestry (through the reaped job shell) and the identity facts only audit knows (auid, euid, ses, tty, cwd,
argv), each named as coming from audit; where audit cannot know a fact (thread ids, exit times), the report
must say so rather than state one. Also: arm twice changes nothing, check mode loads no rule, a user's own
audit rule is byte-for-byte the same after arm and after disarm, auditd is left running or stopped exactly as
found, a host without usable tracefs falls back to audit alone, and a locked audit configuration fails the
host with a clear message while ftrace stays armed.

The scenarios of one mode share one arm/collect/disarm cycle. Their processes run with a login uid and a
controlling terminal (as on a real login), so audit has an auid, a session and a tty to report.

The kernel gives a process an audit context only when it is created after audit was first enabled in this
boot: processes older than that are never audited. The `audit_enabled_once` fixture therefore switches audit
on and off again once (leaving it as found) before any scenario is staged, so the staged daemons are
auditable whether or not anything enabled audit earlier in this boot.
"""

import fcntl
import functools
import json
import os
import shutil
import subprocess
import termios
import time

import pytest

from ansible.module_utils import sigsleuth_auditd as auditd
from sigsleuth_support import (
    INSTANCE, STATE_DIR, assert_no_residue, audit_rules, auditd_running, disarm_quietly, run_playbook,
    seconds_between, tracefs_instances,
)

AUDIT_ONLY = ["-e", json.dumps({"sigsleuth_sources": ["audit"]})]
WITH_AUDIT = ["-e", json.dumps({"sigsleuth_sources": ["ftrace", "audit"]})]
# A user's own rule, which must survive arm and disarm byte for byte (its place in the list included).
USER_RULE = ["-w", "/etc/hosts", "-p", "wa", "-k", "userwatch"]
# The staged processes' login uid (as if a user had logged in): audit's auid, and a fresh session id.
LOGIN_UID = 4242
SLACK_S = 0.05          # clock conversion and scheduling slack against the harness's own clock readings
START_SLACK_S = 0.02    # /proc start times have tick resolution
SCENARIOS = [("seed", "now"), ("seed", "late"), ("bash-builtin", "now"), ("pgroup", "now"),
             ("reaped-chain", "now"), ("reaped-chain", "late")]
IDENTITY = ("uid", "auid", "euid", "ses", "tty", "cwd", "argv")


# ---------------------------------------------------------------- the host's audit

def auditctl_path():
    return shutil.which("auditctl") or next(
        (path for path in ("/usr/sbin/auditctl", "/sbin/auditctl") if os.path.exists(path)), None)


def auditctl(*args, check=True):
    proc = subprocess.run([auditctl_path()] + list(args), capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"))
    if check and proc.returncode != 0:
        raise AssertionError("auditctl %s failed: %s" % (" ".join(args), proc.stderr))
    return proc.stdout


def audit_status():
    """`auditctl -s` as {name: int or str}."""
    status = {}
    for line in auditctl("-s").splitlines():
        name, _, value = line.partition(" ")
        status[name] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return status


def audit_enabled():
    return audit_status()["enabled"]


def start_auditd():
    auditd.start_auditd()
    # auditd switches audit on once it has registered: wait for that too, so what is "found" is settled.
    try:
        wait_for(lambda: audit_enabled() != 0, "auditd to enable audit", timeout=5.0)
    except AssertionError:
        pass


def stop_auditd():
    auditd.stop_auditd(pid=audit_status()["pid"])
    # ... and wait until the process is gone, so nothing of it is left for the next test to find.
    wait_for(lambda: not auditd_processes(), "the auditd process to exit")


def auditd_processes():
    """Live (not zombie) processes named auditd."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % name, "rb") as handle:
                head, _, tail = handle.read().rpartition(b")")
        except OSError:
            continue
        if head.partition(b"(")[2] == b"auditd" and tail.split()[:1] != [b"Z"]:
            found.append(int(name))
    return found


def wait_for(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def audit_enabled_once(host_baseline):
    if auditctl_path() is None:
        pytest.skip("auditd is not installed (.ci/run installs it)")
    if audit_enabled() == 0:
        auditctl("-e", "1")
        auditctl("-e", "0")


@pytest.fixture
def audit_found(host_baseline, audit_enabled_once):
    """Factory: audit_found(running) sets auditd running or stopped, adds USER_RULE and returns the rule
    list as found. Afterwards the host is disarmed and must show exactly that rule list and that auditd
    state; then USER_RULE goes, auditd is put back as the module found it, and nothing may be left."""
    found = {}
    original = audit_status()

    def prepare(running):
        if running and not auditd_running():
            start_auditd()
        elif not running and auditd_running():
            stop_auditd()
        auditctl(*USER_RULE)
        status = audit_status()
        found.update(running=running, rules=audit_rules(), enabled=status["enabled"],
                     backlog_limit=status["backlog_limit"])
        assert "userwatch" in found["rules"]
        return found["rules"]

    yield prepare
    problems = []
    disarmed = disarm_quietly()
    if getattr(disarmed, "rc", None) != 0:
        problems.append("disarm failed:\n%s" % (disarmed.output() if hasattr(disarmed, "output") else disarmed))
    if found:
        if audit_rules() != found["rules"]:
            problems.append("audit rules after disarm differ from those found:\n%s\nfound:\n%s"
                            % (audit_rules(), found["rules"]))
        if auditd_running() != found["running"]:
            problems.append("auditd was found %s and is %s after disarm" % (
                "running" if found["running"] else "stopped", "running" if auditd_running() else "stopped"))
        status = audit_status()
        for key in ("enabled", "backlog_limit"):
            if status[key] != found[key]:
                problems.append("audit %s was %s and is %s after disarm" % (key, found[key], status[key]))
    auditctl("-W", *USER_RULE[1:], check=False)
    if auditd_running() and not original["pid"]:
        stop_auditd()
    elif original["pid"] and not auditd_running():
        start_auditd()
    for key, flag in (("enabled", "-e"), ("backlog_limit", "-b")):
        if audit_status()[key] != original[key]:
            auditctl(flag, str(original[key]))
    assert not problems, "\n".join(problems)
    assert_no_residue(host_baseline, "after disarm")


# ---------------------------------------------------------------- a logged-in session with a terminal

class LoginSession:
    """A login uid, a session and a controlling terminal for one scenario supervisor, and so for every process
    it starts (one terminal per session: a terminal controls one session only)."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        self.audit_tty = os.ttyname(self.slave).replace("/dev/", "").replace("/", "")  # /dev/pts/3 -> pts3

    def preexec(self):
        os.setsid()
        fcntl.ioctl(self.slave, termios.TIOCSCTTY, 0)
        with open("/proc/self/loginuid", "w") as handle:
            handle.write(str(LOGIN_UID))

    def close(self):
        for fd in (self.slave, self.master):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def login_sessions():
    """Factory of LoginSessions; their terminals are closed after the test (request it before `scenarios`,
    so the scenarios are stopped first)."""
    made = []

    def new():
        made.append(LoginSession())
        return made[-1]

    yield new
    for session in made:
        session.close()


def stage(scenarios, login_sessions, name, reap):
    """Stage one scenario in its own login session; returns (scenario, what audit should say of its
    processes: auid, ses, tty, cwd, uid, euid)."""
    session = login_sessions()
    scenario = scenarios(name, reap, preexec_fn=session.preexec)
    pid = scenario.ready["supervisor"]["pid"]
    with open("/proc/%d/loginuid" % pid) as handle:
        assert int(handle.read()) == LOGIN_UID
    with open("/proc/%d/sessionid" % pid) as handle:
        ses = int(handle.read())
    return scenario, {"uid": 0, "euid": 0, "auid": LOGIN_UID, "ses": ses, "tty": session.audit_tty,
                      "cwd": os.readlink("/proc/%d/cwd" % pid)}


def stage_all(scenarios, login_sessions):
    return [stage(scenarios, login_sessions, name, reap) for name, reap in SCENARIOS]


def trigger_all(staged):
    for scenario, _ in staged:
        scenario.trigger()
    return [(scenario, identity, scenario.wait()) for scenario, identity in staged]


# ---------------------------------------------------------------- checking a report against the truth

class Findings:
    """Every mismatch with the ground truth, so one run shows all of them."""

    def __init__(self, report):
        self.report = report
        self.problems = []

    def check(self, condition, message):
        if not condition:
            self.problems.append(message)
        return condition

    def assert_none(self):
        assert not self.problems, "%d mismatch(es):\n- %s\nkills in the report:\n%s" % (
            len(self.problems), "\n- ".join(self.problems), summarize(self.report))


def summarize(report):
    lines = []
    for kill in report["kills"]:
        sender = kill["sender"] or {}
        chain = " <- ".join("%s[%s]%s" % (a["comm"], a["pid"], " (exited)" if a["exited"] else "")
                            for a in kill["ancestry"])
        lines.append("  %s %s %s[%s] <- %s[%s] %s <- %s  mechanism=%s gaps=%s sender=%s" % (
            kill["time"], kill["signal"]["name"], kill["victim"]["comm"], kill["victim"]["pid"],
            sender.get("comm"), sender.get("pid"), sender.get("exe"), chain, kill["mechanism"], kill["gaps"],
            {k: sender.get(k) for k in IDENTITY + ("tid", "facts_from", "notes")}))
    return "\n".join(lines) or "  (no kills)"


def in_window(findings, truth, when, what):
    if not findings.check(when is not None, "%s: missing" % what):
        return
    findings.check(seconds_between(truth["triggered_at"], when) >= -SLACK_S,
                   "%s %s is before the trigger %s" % (what, when, truth["triggered_at"]))
    findings.check(seconds_between(when, truth["done_at"]) >= -SLACK_S,
                   "%s %s is after the kill completed %s" % (what, when, truth["done_at"]))


def expected_argv(truth, kill):
    """The killer's argv, as the harness made it exec."""
    victim = kill["victim"]["pid"]
    return {
        "seed": ["/usr/bin/kill", "-9", str(victim)],
        "bash-builtin": ["/usr/bin/bash", "-c", 'kill -9 "$1"', "bash", str(victim)],
        "pgroup": ["/usr/bin/kill", "-9", "--", "-%d" % truth["processes"]["agent"]["pid"]],
        "reaped-chain": ["/usr/bin/kill", "-9", str(victim)],
    }[truth["scenario"]]


def check_times(findings, reported, expected, truth, mode, what):
    """started / exited_at. Audit records no exits: there the exit time must be unknown, and said to be."""
    if expected["before_trigger"]:
        if findings.check(reported.get("started") is not None, "%s: start time missing" % what):
            findings.check(abs(seconds_between(expected["started"], reported["started"])) <= START_SLACK_S,
                           "%s: started %s, expected %s" % (what, reported["started"], expected["started"]))
    else:
        in_window(findings, truth, reported.get("started"), what + " started")
    if not expected["exited"]:
        findings.check(reported.get("exited_at") is None, "%s is alive but has exited_at %s"
                       % (what, reported.get("exited_at")))
    elif mode == "combined":
        in_window(findings, truth, reported.get("exited_at"), what + " exited_at")
    else:
        findings.check(reported.get("exited_at") is None, "%s: audit knows no exit time, yet exited_at is %s"
                       % (what, reported.get("exited_at")))
        findings.check(any("exited at an unknown time" in note for note in reported.get("notes", [])),
                       "%s: the unknown exit time is not noted: %s" % (what, reported.get("notes")))


def check_process(findings, reported, expected, truth, mode, what):
    for key in ("pid", "comm", "exe", "exited"):
        findings.check(reported.get(key) == expected[key], "%s: %s is %r, expected %r"
                       % (what, key, reported.get(key), expected[key]))
    check_times(findings, reported, expected, truth, mode, what)


def check_identity(findings, reported, wanted, what):
    """Audit's identity facts, each present, right, and attributed to audit."""
    for key, value in wanted.items():
        findings.check(reported.get(key) == value, "%s: %s is %r, expected %r" % (what, key, reported.get(key), value))
        findings.check(reported.get("facts_from", {}).get(key) == "audit", "%s: facts_from[%s] is %r, expected "
                       "'audit'" % (what, key, reported.get("facts_from", {}).get(key)))


def check_scenario(findings, report, truth, identity, mode):
    records = []
    for expected in truth["kills"]:
        label = "%s/%s: %s to %s[%d]" % (truth["scenario"], truth["reap"], expected["signal"]["name"],
                                         expected["victim"]["comm"], expected["victim"]["pid"])
        matches = [k for k in report["kills"] if k["victim"]["pid"] == expected["victim"]["pid"]
                   and k["signal"]["number"] == expected["signal"]["number"]]
        if not findings.check(len(matches) == 1, "%s: %d records, expected 1" % (label, len(matches))):
            continue
        kill = matches[0]
        records.append(kill)
        check = findings.check
        in_window(findings, truth, kill["time"], label + " time")
        check((kill["origin"], kill["mechanism"], kill.get("count")) == ("user", "kill", 1),
              "%s: origin/mechanism/count %r" % (label, (kill["origin"], kill["mechanism"], kill.get("count"))))
        check(kill["gaps"] == [], "%s: gaps although nothing was lost: %s" % (label, kill["gaps"]))
        audit = kill.get("audit") or {}
        check((audit.get("syscall"), audit.get("key")) == ("kill", "sigsleuth_kill"),
              "%s: the kill's audit event is %r" % (label, audit))
        check(any(e.startswith("audit:kill#") for e in kill["evidence"]), "%s: evidence %r names no audit "
              "event" % (label, kill["evidence"]))
        if mode == "combined":
            check("ftrace:signal_generate" in kill["evidence"], "%s: evidence %r" % (label, kill["evidence"]))

        victim = next(p for p in truth["processes"].values() if p["pid"] == expected["victim"]["pid"])
        check_process(findings, kill["victim"], victim, truth, mode, label + ": victim")
        check(kill["victim"].get("tid") == victim["pid"], "%s: victim tid %r" % (label, kill["victim"].get("tid")))

        sender = kill["sender"]
        if not check(sender is not None, label + ": no sender"):
            continue
        killer = next(p for p in truth["processes"].values() if p["pid"] == expected["sender"]["pid"])
        check_process(findings, sender, killer, truth, mode, label + ": sender")
        if mode == "combined":
            check(sender.get("tid") == killer["pid"], "%s: sender tid %r" % (label, sender.get("tid")))
        else:  # audit records no thread ids
            check(sender.get("tid") is None, "%s: sender tid %r, but audit knows none" % (label, sender.get("tid")))
            check(sender["facts_from"].get("comm") == "audit" and sender["facts_from"].get("exe") == "audit",
                  "%s: sender comm/exe not from audit: %s" % (label, sender["facts_from"]))
            check(sender.get("source") == "audit", "%s: sender source %r" % (label, sender.get("source")))
        if truth["reap"] == "late" and killer["exited"] and not killer.get("reaped"):
            check(sender["exited"] is True, "%s: the sender is a zombie, reported alive" % label)
        check_identity(findings, sender, dict(identity, argv=expected_argv(truth, kill)), label + ": sender")
        check(not any("not audited" in note or "neither its fork" in note for note in sender.get("notes", [])),
              "%s: the sender's fork was audited, but its notes say otherwise: %s" % (label, sender.get("notes")))

        chain = expected["ancestry"]
        ancestry = kill["ancestry"]
        if not check(len(ancestry) > len(chain), "%s: ancestry of %d, expected more than %d"
                     % (label, len(ancestry), len(chain))):
            continue
        for depth, want in enumerate(chain):
            check_process(findings, ancestry[depth], want, truth, mode,
                          "%s: ancestor %d (%s)" % (label, depth + 1, want["role"]))
            if want["role"] == "job-shell":
                # Reaped long before collection; audit still knows who it was.
                check_identity(findings, ancestry[depth], dict(identity, argv=ancestry[depth].get("argv")),
                               label + ": job shell")
                check((ancestry[depth].get("argv") or [])[:2] == ["/bin/sh", "-c"],
                      "%s: job shell argv %r" % (label, ancestry[depth].get("argv")))
        above = ancestry[len(chain)]
        check((above.get("pid"), above.get("exited")) == (os.getpid(), False), "%s: the supervisor's parent is "
              "%s[%s], expected this test process [%d]" % (label, above.get("comm"), above.get("pid"), os.getpid()))
        check(ancestry[-1]["pid"] == 1, "%s: the chain stops at %s[%s], not pid 1"
              % (label, ancestry[-1]["comm"], ancestry[-1]["pid"]))
        if mode == "combined" and truth["scenario"] == "seed":
            supervisor = truth["processes"]["supervisor"]["pid"]
            check(any("adopted by pid %d" % supervisor in note for note in sender.get("notes", [])),
                  "%s: audit's ppid (the adopting supervisor) differs from the fork parent, and the sender's "
                  "notes do not say so: %s" % (label, sender.get("notes")))
    if truth["scenario"] == "pgroup" and len(records) == 3:
        findings.check(len({r["sender"]["pid"] for r in records if r["sender"]}) == 1,
                       "pgroup: the victims do not share one sender")
        findings.check(max(abs(seconds_between(records[0]["time"], r["time"])) for r in records) < 0.1,
                       "pgroup: the kills are not at one moment")


def check_header(findings, report, outcomes):
    first_ready = min(truth["ready_at"] for _, _, truth in outcomes)
    last_ready = max(truth["ready_at"] for _, _, truth in outcomes)
    first_trigger = min(truth["triggered_at"] for _, _, truth in outcomes)
    findings.check(report["armed_at"] is not None and seconds_between(last_ready, report["armed_at"]) >= -SLACK_S
                   and seconds_between(report["armed_at"], first_trigger) >= -SLACK_S,
                   "armed_at %s is not between staging (%s .. %s) and the first trigger %s"
                   % (report["armed_at"], first_ready, last_ready, first_trigger))
    findings.check(report["signals"] == [9], "signals %r" % report["signals"])
    audit = report["sources"].get("audit", {})
    findings.check(audit.get("armed") is True, "sources.audit %r" % audit)
    findings.check(audit.get("loss") is None, "sources.audit.loss: %s" % audit.get("loss"))
    findings.check(not audit.get("errors"), "sources.audit.errors: %s" % audit.get("errors"))


# ---------------------------------------------------------------- the tests

def test_audit_only_attributes_the_scenarios(audit_found, login_sessions, scenarios, collect):
    """Audit alone, auditd found stopped: check mode loads nothing; arm loads our rules after the user's,
    fork rules included, and starts auditd; a second arm changes nothing; every kill is attributed from
    audit; disarm (audit_found) leaves the user's rule list byte-for-byte and auditd stopped."""
    found_rules = audit_found(running=False)
    staged = stage_all(scenarios, login_sessions)

    check = run_playbook("arm.yml", "--check", "--diff", *AUDIT_ONLY)
    assert check.host()["failed"] == 0 and check.host()["changed"] > 0, check.output()
    assert audit_rules() == found_rules, "check mode changed the audit rules:\n%s" % audit_rules()
    assert not auditd_running(), "check mode started auditd"
    assert not os.path.exists(STATE_DIR), "check mode created %s" % STATE_DIR

    first = run_playbook("arm.yml", *AUDIT_ONLY)
    assert first.host()["changed"] > 0, first.output()
    rules = audit_rules()
    assert rules.startswith(found_rules), "the user's rule moved or changed:\n%s" % rules
    ours = rules[len(found_rules):]
    assert "key=sigsleuth_fork" in ours and "key=sigsleuth_kill" in ours and "key=sigsleuth_exec" in ours, ours
    assert auditd_running(), "arm did not start auditd"
    assert not any(INSTANCE in (names or []) for names in tracefs_instances().values()), \
        "audit-only arm created a tracefs instance"
    second = run_playbook("arm.yml", *AUDIT_ONLY)
    assert second.host()["changed"] == 0, "the second arm changed something:\n" + second.output()
    assert audit_rules() == rules

    outcomes = trigger_all(staged)
    report = collect()
    findings = Findings(report)
    check_header(findings, report, outcomes)
    ftrace = report["sources"]["ftrace"]
    findings.check(ftrace.get("armed") is False and ftrace.get("reason"), "sources.ftrace %r" % ftrace)
    findings.check(report["sources"]["audit"].get("mode") == "lineage", "sources.audit.mode %r"
                   % report["sources"]["audit"].get("mode"))
    for _, identity, truth in outcomes:
        check_scenario(findings, report, truth, identity, "audit")
    findings.assert_none()


def test_combined_attributes_the_scenarios(audit_found, login_sessions, scenarios, collect):
    """The default arm where auditd is found running with audit enabled joins it: ftrace's lineage, exits and
    thread ids, audit's identity facts and syscall; a second arm changes nothing; disarm leaves auditd
    running, its settings and the user's rules as found."""
    found_rules = audit_found(running=True)
    auditd_pid = int(auditctl("-s").split("pid ")[1].split()[0])
    status_before = audit_settings()
    staged = stage_all(scenarios, login_sessions)

    first = run_playbook("arm.yml")
    assert first.host()["changed"] > 0, first.output()
    assert "audit armed (auditd already runs with audit enabled" in first.stdout, first.output()
    assert audit_settings() == status_before, "joining auditd changed its settings"
    rules = audit_rules()
    assert rules.startswith(found_rules), "the user's rule moved or changed:\n%s" % rules
    ours = rules[len(found_rules):]
    assert "key=sigsleuth_kill" in ours and "key=sigsleuth_exec" in ours and "sigsleuth_fork" not in ours, ours
    second = run_playbook("arm.yml")
    assert second.host()["changed"] == 0, "the second arm changed something:\n" + second.output()

    outcomes = trigger_all(staged)
    report = collect()
    findings = Findings(report)
    check_header(findings, report, outcomes)
    sources = report["sources"]
    findings.check(sources["ftrace"].get("armed") is True and sources["ftrace"].get("loss") is None,
                   "sources.ftrace %r" % sources["ftrace"])
    findings.check(sources["audit"].get("mode") == "enrich", "sources.audit.mode %r" % sources["audit"].get("mode"))
    findings.check(sources["audit"].get("kills_only_audit_saw") == 0, "audit saw %r kills the trace did not"
                   % sources["audit"].get("kills_only_audit_saw"))
    for _, identity, truth in outcomes:
        check_scenario(findings, report, truth, identity, "combined")
    findings.assert_none()
    assert int(auditctl("-s").split("pid ")[1].split()[0]) == auditd_pid, "auditd was restarted"


def test_tracefs_unusable_falls_back_to_audit_alone(audit_found, login_sessions, scenarios, collect, tmp_path):
    """A tracefs that cannot be mounted: with ftrace alone the host fails with the cause; with audit too it
    warns, arms audit with the fork rules, stays idempotent, and the kill is still attributed."""
    found_rules = audit_found(running=False)
    nowhere = "sigsleuth_tracefs_path=%s" % (tmp_path / "no-such-dir")

    alone = run_playbook("arm.yml", "-e", nowhere, "-e", json.dumps({"sigsleuth_sources": ["ftrace"]}),
                         expect_rc=2)
    assert "cannot mount tracefs" in alone.stdout and alone.host()["failed"] == 1, alone.output()
    assert audit_rules() == found_rules and not os.path.exists(STATE_DIR)

    scenario, identity = stage(scenarios, login_sessions, "bash-builtin", "now")
    first = run_playbook("arm.yml", "-e", nowhere, *WITH_AUDIT)
    assert first.host()["failed"] == 0, first.output()
    assert "WARNING" in first.stdout and "falling back to audit alone" in first.stdout, first.output()
    assert "cannot mount tracefs" in first.stdout
    assert "key=sigsleuth_fork" in audit_rules()[len(found_rules):], audit_rules()
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        state = json.load(handle)
    assert "ftrace" not in state and state["audit"]["fork"] is True and "snapshot" in state, state
    second = run_playbook("arm.yml", "-e", nowhere, *WITH_AUDIT)
    assert second.host()["changed"] == 0 and second.host()["failed"] == 0, second.output()

    scenario.trigger()
    truth = scenario.wait()
    report = collect()
    findings = Findings(report)
    check_header(findings, report, [(scenario, identity, truth)])
    findings.check(report["sources"]["ftrace"].get("armed") is False, "sources.ftrace %r" % report["sources"]["ftrace"])
    check_scenario(findings, report, truth, identity, "audit")
    findings.assert_none()


def test_locked_audit_fails_the_host_and_keeps_ftrace(audit_found, tmp_path):
    """`auditctl -s` showing enabled 2 (locked until reboot; faked here, since really locking would outlive
    the test): the audit part fails with the module's message, ftrace and the snapshot stay armed, the host
    fails at the end of arm, and disarm takes the rest down."""
    found_rules = audit_found(running=False)
    path = locked_auditctl(tmp_path)
    run = run_playbook("arm.yml", *WITH_AUDIT, expect_rc=2, env={"PATH": path})
    assert run.host()["failed"] == 1, run.output()
    assert "could not arm the audit source" in run.stdout and "locked" in run.stdout, run.output()
    assert "ftrace and the process snapshot are armed" in run.stdout, run.output()
    assert any(INSTANCE in (names or []) for names in tracefs_instances().values()), "ftrace is not armed"
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        state = json.load(handle)
    assert "ftrace" in state and "snapshot" in state and "audit" not in state, state
    assert audit_rules() == found_rules, "rules changed on a locked host:\n%s" % audit_rules()
    assert not auditd_running(), "auditd was started on a locked host"


def test_default_arm_leaves_audit_off_where_it_is_off(audit_found, scenarios, collect):
    """Audit found stopped and off: the default arm does not turn it on (that alone costs up to 2x on
    syscall-heavy work), says so, and the report says audit was not armed and why."""
    found_rules = audit_found(running=False)
    settings = audit_settings()
    run = run_playbook("arm.yml")
    assert "audit not armed: audit is off on this host" in run.stdout, run.output()
    assert not auditd_running() and audit_rules() == found_rules and audit_settings() == settings
    report = collect()
    audit = report["sources"]["audit"]
    assert audit["armed"] is False and "audit is off" in audit["reason"], audit
    assert report["sources"]["ftrace"]["armed"] is True and report["sources"]["ftrace"]["precision"] == "light"


def test_default_arm_on_a_locked_audit_arms_ftrace_and_says_why_not_audit(audit_found, tmp_path, collect):
    audit_found(running=False)
    path = locked_auditctl(tmp_path)
    run = run_playbook("arm.yml", env={"PATH": path})
    assert run.host()["failed"] == 0, run.output()
    assert "audit not armed" in run.stdout and "locked" in run.stdout, run.output()
    report = collect()
    assert report["sources"]["audit"]["armed"] is False and "locked" in report["sources"]["audit"]["reason"]


def locked_auditctl(tmp_path):
    """A PATH whose auditctl answers as on a host whose audit configuration is locked (-e 2)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    real = auditctl_path()
    (fake / "auditctl").write_text(
        "#!/bin/sh\n"
        "# auditctl as on a host whose audit configuration is locked (-e 2); changes are refused.\n"
        'case "$1" in\n'
        "  -s) %s -s | sed 's/^enabled [01]$/enabled 2/' ;;\n"
        '  -l) exec %s -l ;;\n'
        '  *) echo "Error sending add rule data request (Operation not permitted)" >&2; exit 1 ;;\n'
        "esac\n" % (real, real))
    (fake / "auditctl").chmod(0o755)
    return "%s:%s" % (fake, os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))


def audit_settings():
    """What joining must leave as it is: enabled, the daemon's pid, the backlog and rate limits."""
    return {key: value for key, value in audit_status().items()
            if key in ("enabled", "pid", "backlog_limit", "rate_limit", "failure")}


# ---------------------------------------------------------------- audit across the trace's loss

def small_buffer(fork_rules=False):
    return ["-e", json.dumps({"sigsleuth_sources": ["ftrace", "audit"], "sigsleuth_buffer_size_kb": 64,
                              "sigsleuth_audit_fork": fork_rules})]


def fork_noise(count):
    """count fork+exec of /bin/true on every CPU, each loop pinned to its CPU: enough to overrun each CPU's
    small trace buffer many times over, wherever the scheduler put the kill (one unpinned loop can stay on
    the other CPU on a busy machine, and leave the send in the trace)."""
    loop = 'i=0; while [ "$i" -lt %d ]; do /bin/true; i=$((i+1)); done' % count
    workers = [subprocess.Popen(["sh", "-c", loop], preexec_fn=functools.partial(os.sched_setaffinity, 0, {cpu}))
               for cpu in sorted(os.sched_getaffinity(0))]
    assert [worker.wait() for worker in workers] == [0] * len(workers)


def chain_pids(truth, expected):
    """The pids of the expected ancestry, this test process, and on up (as the report must show them)."""
    return [want["pid"] for want in expected["ancestry"]] + [os.getpid()]


def check_no_sentence_twice(findings, report, label, kill):
    gaps = kill["gaps"]
    findings.check(len(gaps) == len(set(gaps)), "%s: a gap is said twice: %s" % (label, gaps))
    statement = report["sources"]["ftrace"].get("loss") or ""
    findings.check(not any(statement and statement in gap for gap in gaps),
                   "%s: the loss statement is repeated in the gaps instead of pointed to: %s" % (label, gaps))


@pytest.mark.parametrize("fork_rules", [True, False], ids=["fork-rules", "exec-rules-only"])
def test_a_kill_the_trace_lost_is_reported_from_audit(audit_found, login_sessions, scenarios, collect, fork_rules):
    """The seed's kill, then fork noise that overwrites it in a small buffer: the kill is still in the
    report, from audit, with its sender, and says that the trace lost it. With audit's fork rules its whole
    ancestry is exact; with exec rules alone the killer (reparented when its job shell exited) has only
    audit's ppid at its exec for a parent, and the gaps say that this may be the process that adopted it."""
    audit_found(running=True)
    scenario, identity = stage(scenarios, login_sessions, "seed", "now")
    run_playbook("arm.yml", *small_buffer(fork_rules))
    scenario.trigger()
    truth = scenario.wait()
    fork_noise(3000)
    report = collect()
    findings = Findings(report)
    findings.check(report["sources"]["ftrace"].get("loss") is not None, "the trace was not overrun: %s"
                   % report["sources"]["ftrace"])
    (expected,) = truth["kills"]
    label = "seed: SIGKILL to %s[%d]" % (expected["victim"]["comm"], expected["victim"]["pid"])
    matches = [k for k in report["kills"] if k["victim"]["pid"] == expected["victim"]["pid"]]
    if findings.check(len(matches) == 1, "%s: %d records, expected 1" % (label, len(matches))):
        kill = matches[0]
        findings.check("ftrace:signal_generate" not in kill["evidence"], "%s: the trace kept the send after all; "
                       "the noise did not overrun it: %s" % (label, kill["evidence"]))
        findings.check((kill["sender"] or {}).get("pid") == expected["sender"]["pid"],
                       "%s: sender %s" % (label, kill["sender"]))
        findings.check((kill["origin"], kill["mechanism"]) == ("user", "kill"), "%s: %s/%s" % (
            label, kill["origin"], kill["mechanism"]))
        pids = [ancestor["pid"] for ancestor in kill["ancestry"]]
        if fork_rules:
            findings.check(pids[:len(chain_pids(truth, expected))] == chain_pids(truth, expected) and pids[-1] == 1,
                           "%s: ancestry %s, expected %s ... 1" % (label, pids, chain_pids(truth, expected)))
        else:
            adopter = pids[0] if pids else None
            findings.check(any(gap.startswith("parent of kill[%d] is only the ppid audit recorded at its execve "
                                              "(pid %s)" % (expected["sender"]["pid"], adopter)) for gap in kill["gaps"]),
                           "%s: the sender's parent is audit's ppid %s, but the gaps do not say what that may be: %s"
                           % (label, adopter, kill["gaps"]))
            findings.check(pids[-1:] == [1], "%s: the chain stops at %s, not pid 1" % (label, pids[-1:]))
        findings.check(any(gap.startswith("the trace lost this send") and "see sources.ftrace.loss" in gap
                           for gap in kill["gaps"]), "%s: gaps do not say the trace lost it: %s" % (label, kill["gaps"]))
        check_no_sentence_twice(findings, report, label, kill)
    findings.check(report["sources"]["audit"].get("kills_only_audit_saw", 0) >= 1,
                   "sources.audit.kills_only_audit_saw %r" % report["sources"]["audit"].get("kills_only_audit_saw"))
    findings.assert_none()


def test_audit_completes_the_ancestry_across_a_trace_overrun(audit_found, login_sessions, scenarios, collect):
    """The storm scenario in a small buffer: the killer's fork is long overwritten when it kills, so the trace's
    chain stops at the killer; audit's record of the same kill continues it, labelled, up to pid 1."""
    audit_found(running=True)
    scenario, identity = stage(scenarios, login_sessions, "storm", "now")
    run_playbook("arm.yml", *small_buffer())
    scenario.trigger()
    truth = scenario.wait()
    report = collect()
    findings = Findings(report)
    findings.check(report["sources"]["ftrace"].get("loss") is not None, "the trace was not overrun")
    (expected,) = truth["kills"]
    label = "storm: SIGKILL to %s[%d]" % (expected["victim"]["comm"], expected["victim"]["pid"])
    matches = [k for k in report["kills"] if k["victim"]["pid"] == expected["victim"]["pid"]]
    if findings.check(len(matches) == 1, "%s: %d records, expected 1" % (label, len(matches))):
        kill = matches[0]
        sender = kill["sender"] or {}
        findings.check("ftrace:signal_generate" in kill["evidence"], "%s: the trace lost the send itself" % label)
        findings.check(sender.get("pid") == expected["sender"]["pid"], "%s: sender %s" % (label, sender))
        findings.check(any("come from audit's records" in note for note in sender.get("notes", [])),
                       "%s: the sender's notes do not say its ancestry comes from audit: %s"
                       % (label, sender.get("notes")))
        pids = [ancestor["pid"] for ancestor in kill["ancestry"]]
        findings.check(pids[:len(chain_pids(truth, expected))] == chain_pids(truth, expected) and pids[-1] == 1,
                       "%s: ancestry %s, expected %s ... 1" % (label, pids, chain_pids(truth, expected)))
        findings.check(not any(gap.startswith("parent of") and "unknown" in gap for gap in kill["gaps"]),
                       "%s: a parent is still unknown: %s" % (label, kill["gaps"]))
        check_no_sentence_twice(findings, report, label, kill)
    findings.assert_none()
