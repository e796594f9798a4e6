"""Helpers for the integration tests (conftest.py holds the fixtures built on them)."""

import contextlib
import ctypes
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HARNESS = os.path.join(ROOT, "tests", "scenarios", "sigsleuth_scenarios.py")
SCHEMA_PATH = os.path.join(ROOT, "schema", "report.schema.json")
STATE_DIR = "/var/lib/sigsleuth"
INSTANCE = "sigsleuth"
INVENTORY_HOST = "localhost"
PR_SET_CHILD_SUBREAPER = 36
SCENARIO_MARKERS = ("sigsleuth-scen", "sigsleuth-scenario-")


def ansible_playbook_path():
    """The project's ansible-playbook (make venv); SIGSLEUTH_ANSIBLE_PLAYBOOK overrides it."""
    path = os.environ.get("SIGSLEUTH_ANSIBLE_PLAYBOOK") or os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
    if not os.access(path, os.X_OK):
        pytest.fail("%s not found: run `make venv` first (or set SIGSLEUTH_ANSIBLE_PLAYBOOK)" % path)
    return path


# ---------------------------------------------------------------- time

def parse_time(text):
    """ISO 8601 UTC with microseconds (the report's format) -> aware datetime."""
    assert isinstance(text, str), "expected an ISO 8601 time, got %r" % (text,)
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def seconds_between(a, b):
    return (parse_time(b) - parse_time(a)).total_seconds()


# ---------------------------------------------------------------- playbooks

class PlaybookRun:
    def __init__(self, argv, proc):
        self.argv = argv
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.recap = parse_recap(proc.stdout)

    def host(self, name=INVENTORY_HOST):
        assert name in self.recap, "no PLAY RECAP line for %s in:\n%s" % (name, self.output())
        return self.recap[name]

    def output(self):
        return "$ %s\n--- stdout\n%s\n--- stderr\n%s" % (" ".join(self.argv), self.stdout[-20000:], self.stderr[-5000:])


RECAP_LINE = re.compile(r"^(\S+)\s*:\s*((?:\w+=\d+\s*)+)$")


def parse_recap(stdout):
    """{host: {ok: N, changed: N, unreachable: N, failed: N, ...}} from the PLAY RECAP block."""
    recap = {}
    lines = stdout.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    except ValueError:
        return recap
    for line in lines[start + 1:]:
        match = RECAP_LINE.match(line.strip())
        if match:
            recap[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return recap


def run_playbook(name, *args, expect_rc=0, timeout=900, env=None):
    """Run playbooks/<name> from the project root; fail the test with the output when rc is not expected.
    `env` adds to (or overrides) the environment it runs in, which the modules on this host inherit."""
    argv = [ansible_playbook_path(), os.path.join("playbooks", name)] + list(args)
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", **(env or {}))
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    run = PlaybookRun(argv, proc)
    if expect_rc is not None and run.rc != expect_rc:
        pytest.fail("ansible-playbook exited %d (expected %d)\n%s" % (run.rc, expect_rc, run.output()))
    return run


def signals_extra_vars(signals):
    return ["-e", json.dumps({"sigsleuth_signals": list(signals)})]


# ---------------------------------------------------------------- the host

def tracefs_mounts():
    """Mount points of tracefs, from /proc/self/mountinfo."""
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            head, _, tail = line.partition(" - ")
            if tail.split()[:1] == ["tracefs"]:
                points.append(head.split()[4])
    return sorted(points)


def tracefs_instances():
    """{mount point: sorted instance names} for every mounted tracefs."""
    found = {}
    for point in tracefs_mounts():
        try:
            found[point] = sorted(os.listdir(os.path.join(point, "instances")))
        except OSError:
            found[point] = None
    return found


def audit_rules():
    """`auditctl -l` output, or None where auditctl is not installed."""
    auditctl = shutil.which("auditctl") or ("/usr/sbin/auditctl" if os.path.exists("/usr/sbin/auditctl") else None)
    if auditctl is None:
        return None
    proc = subprocess.run([auditctl, "-l"], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
    return proc.stdout if proc.returncode == 0 else None


def auditd_running():
    """Whether the kernel has an audit daemon registered (`auditctl -s`: pid not 0).

    Not "an auditd process exists": a stopped auditd lingers for a moment after it has let go of the kernel,
    and a starting one exists before it registers, so a process check taken at the wrong moment disagrees
    with what audit does. Without auditctl, the process check is all there is.
    """
    auditctl = shutil.which("auditctl") or ("/usr/sbin/auditctl" if os.path.exists("/usr/sbin/auditctl") else None)
    if auditctl is not None:
        proc = subprocess.run([auditctl, "-s"], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
        for line in proc.stdout.splitlines():
            if line.startswith("pid "):
                return line.split()[1] not in ("0", "")
    return bool(pids_matching(lambda pid, comm, args: comm == "auditd"))


def pids_matching(predicate):
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open("/proc/%d/comm" % pid) as handle:
                comm = handle.read().rstrip("\n")
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                args = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if predicate(pid, comm, args):
            found.append(pid)
    return found


def scenario_processes():
    """Live or zombie processes of any staged scenario (the harness names them all recognisably)."""
    return pids_matching(lambda pid, comm, args: pid != os.getpid() and (
        comm == "sigsleuth-scen" or any(marker in args for marker in SCENARIO_MARKERS)))


def zombie_children():
    """Zombies whose parent is this test process."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as handle:
                tail = handle.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if tail[:1] == [b"Z"] and int(tail[1]) == os.getpid():
            found.append(int(name))
    return found


def host_snapshot():
    return {
        "tracefs_mounts": tracefs_mounts(),
        "tracefs_instances": tracefs_instances(),
        "state_dir": os.path.exists(STATE_DIR),
        "audit_rules": audit_rules(),
        "auditd_running": auditd_running(),
    }


def assert_no_residue(before, context=""):
    """The host is as `before` found it: no instance, state dir, audit rule, mount change or scenario process."""
    after = host_snapshot()
    where = " (%s)" % context if context else ""
    assert not os.path.exists(STATE_DIR) or before["state_dir"], "%s left behind%s" % (STATE_DIR, where)
    assert after["tracefs_mounts"] == before["tracefs_mounts"], \
        "tracefs mounts changed%s: %s -> %s" % (where, before["tracefs_mounts"], after["tracefs_mounts"])
    assert after["tracefs_instances"] == before["tracefs_instances"], \
        "tracefs instances changed%s: %s -> %s" % (where, before["tracefs_instances"], after["tracefs_instances"])
    if before["audit_rules"] is not None:
        assert after["audit_rules"] == before["audit_rules"], "audit rules changed%s" % where
    if after["audit_rules"] is not None:
        assert "sigsleuth" not in after["audit_rules"], "sigsleuth audit rules left behind%s:\n%s" % (
            where, after["audit_rules"])
    assert after["auditd_running"] == before["auditd_running"], \
        "auditd was %s and is now %s%s" % ("running" if before["auditd_running"] else "stopped",
                                          "running" if after["auditd_running"] else "stopped", where)
    leftovers = scenario_processes()
    assert not leftovers, "scenario processes left behind%s: %s" % (where, leftovers)


def disarm_quietly():
    """Best-effort disarm for finalizers: never raises, returns the run (or the exception)."""
    try:
        return run_playbook("disarm.yml", expect_rc=None)
    except Exception as exc:  # a finalizer must go on cleaning up
        return exc


# ---------------------------------------------------------------- subreaper

def set_child_subreaper(on):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_pid(pid, timeout=30.0):
    """Reap one (adopted) child once it exits; returns its wait status or None when it is not ours."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() > deadline:
            raise AssertionError("pid %d did not exit within %ss" % (pid, timeout))
        time.sleep(0.02)


@contextlib.contextmanager
def child_subreaper():
    """Make this test process a child subreaper for the block: daemonised scenario supervisors (and anything
    else orphaned below us) come back to us instead of pid 1, and are reaped here. Needed where pid 1 does not
    reap orphans, as on this project's VMs; harmless elsewhere."""
    set_child_subreaper(True)
    try:
        yield
    finally:
        set_child_subreaper(False)
        for pid in zombie_children():
            reap_pid(pid, timeout=1.0)


# ---------------------------------------------------------------- scenarios

def harness(*args, check=True, timeout=600):
    proc = subprocess.run([sys.executable, HARNESS] + list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail("sigsleuth_scenarios.py %s exited %d\n--- stdout\n%s\n--- stderr\n%s"
                    % (" ".join(args), proc.returncode, proc.stdout[-5000:], proc.stderr[-5000:]))
    return proc


class StagedScenario:
    """A scenario whose supervisor is our own child (start --foreground), so we are its real fork parent and
    we reap it; its processes are up (state "ready") when the constructor returns."""

    def __init__(self, name, reap, workdir, storm=None, preexec_fn=None):
        """preexec_fn runs in the supervisor's process before it execs (e.g. to give it a login uid or a
        controlling terminal, which every process of the scenario then inherits)."""
        self.name = name
        self.reap = reap
        self.state_path = os.path.join(workdir, "scenario-%s-%s.json" % (name, reap))
        self.log_path = self.state_path + ".log"
        argv = [sys.executable, HARNESS, "start", name, "--state", self.state_path, "--reap", reap, "--foreground"]
        if storm is not None:
            argv += ["--storm", str(storm)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=preexec_fn)
        self.stopped = False
        self.ready = self._wait_for("ready", timeout=60)

    def _wait_for(self, status, timeout):
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state and state.get("status") == status:
                return state
            if state and state.get("status") == "error":
                self.stop()
                pytest.fail("scenario %s failed: %s\n%s" % (self.name, state.get("error"), self.log()))
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("scenario %s did not reach %s (supervisor rc %s)\n%s"
                            % (self.name, status, self.proc.returncode, self.log()))
            time.sleep(0.02)

    def state(self):
        try:
            with open(self.state_path) as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def log(self):
        try:
            with open(self.log_path) as handle:
                return handle.read()[-5000:]
        except OSError:
            return ""

    def trigger(self):
        harness("trigger", "--state", self.state_path)

    def wait(self, timeout=300):
        """Wait for the kill; returns the final ground truth."""
        return json.loads(harness("wait", "--state", self.state_path, "--timeout", str(timeout)).stdout)

    def stop(self):
        """Kill and reap everything; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        proc = harness("stop", "--state", self.state_path, check=False)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert proc.returncode == 0, "stop had to force-kill strays:\n%s\n%s\n%s" % (
            proc.stdout, proc.stderr, self.log())


def kill_signal_name(number):
    return signal.Signals(number).name
