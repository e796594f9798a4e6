"""playbooks/investigate.yml for real: it arms with the watch drain, waits for a kill of the victim, then collects,
disarms and prints the tree; it times out honestly; SIGINT to ansible-playbook still leaves the host disarmed;
and bad input is refused before any host is touched.

The playbook runs in the background (Popen) so the test can stage the kill while it waits, or interrupt it.
Its output is read line by line as it comes (PYTHONUNBUFFERED), each line with the moment it arrived, so
"returns within a few polls of the kill" is counted in polls (the wait's retry lines after the kill), not
in seconds. The interrupt guard, detached on this control node, writes to the playbook's stderr: the test
reads stderr to its end, which comes when the guard has finished and gone.
"""

import glob
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from sigsleuth_support import (
    INVENTORY_HOST, ROOT, STATE_DIR, ansible_playbook_path, assert_no_residue, disarm_quietly, parse_recap,
)

POLL = 2
WAIT_TASK = "TASK [Wait for a kill of "
RETRY_LINE = "FAILED - RETRYING: [%s]: Wait for a kill of" % INVENTORY_HOST


def guard_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "sigsleuth-investigate-*")))


def read_state():
    try:
        with open(os.path.join(STATE_DIR, "state.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def process_alive(pid, start_ticks):
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
    except OSError:
        return False
    return int(fields[19]) == start_ticks and fields[0] not in (b"Z", b"X")


class Investigation:
    """ansible-playbook playbooks/investigate.yml in the background, its output lines timestamped as they come."""

    def __init__(self, report_dir, *extra):
        self.argv = [ansible_playbook_path(), os.path.join("playbooks", "investigate.yml"),
                     "-e", "sigsleuth_report_dir=%s" % report_dir] + list(extra)
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PYTHONUNBUFFERED="1")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.errors = [], []
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True)]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    def stdout(self):
        return "\n".join(line for _, line in self.lines)

    def stderr(self):
        return "\n".join(line for _, line in self.errors)

    def wait_for_line(self, text, timeout=300):
        deadline = time.monotonic() + timeout
        while not any(text in line for _, line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("no line with %r (rc %s)\n%s" % (text, self.proc.poll(), self.output()))
            time.sleep(0.1)

    def finish(self, timeout=600):
        """Wait for ansible-playbook and for its output to end (the guard holds stderr until it is gone)."""
        try:
            self.rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("investigate.yml did not end within %ss\n%s" % (timeout, self.output()))
        for reader in self.readers:
            reader.join(timeout=300)
            assert not reader.is_alive(), "the playbook's output did not end:\n%s" % self.output()
        return self.rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self):
        return "$ %s\n--- stdout\n%s\n--- stderr\n%s" % (" ".join(self.argv), self.stdout()[-20000:],
                                                         self.stderr()[-8000:])


@pytest.fixture
def investigate(host_baseline, tmp_path):
    """Factory: investigate(*extra) starts the playbook; afterwards nothing may be left armed, running or on disk
    (a failed test still gets the host disarmed)."""
    runs = []
    before = guard_dirs()

    def start(*extra):
        run = Investigation(tmp_path / "reports", *extra)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
    try:
        assert_no_residue(host_baseline, "after investigate.yml")
    except AssertionError:
        disarm_quietly()
        raise
    assert guard_dirs() <= before, "the guard's directory was left behind: %s" % (guard_dirs() - before)


def wait_for_drain(run, timeout=300):
    """The drain's identity once arm started it (it is recorded in the state file)."""
    deadline = time.monotonic() + timeout
    while True:
        watch = (read_state() or {}).get("watch") or {}
        if watch.get("pid") and watch.get("start_ticks"):
            return watch
        if run.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the watch drain never started\n%s" % run.output())
        time.sleep(0.1)


def test_a_kill_ends_the_wait_and_is_named(investigate, scenarios, tmp_path):
    scenario = scenarios("seed", "now")
    run = investigate("-e", "sigsleuth_victim=collector-agent", "-e", "sigsleuth_timeout=900",
                      "-e", "sigsleuth_poll=%d" % POLL)
    drain = wait_for_drain(run)
    run.wait_for_line(WAIT_TASK)
    # About 15 s after the playbook started, and only once it is waiting.
    time.sleep(max(0.0, 15 - (time.monotonic() - run.started)))
    kill_seen_from = time.monotonic()
    scenario.trigger()
    truth = scenario.wait()
    assert run.finish() == 0, run.output()
    assert parse_recap(run.stdout())[INVENTORY_HOST]["failed"] == 0, run.output()

    retries_after_kill = [line for at, line in run.lines if at > kill_seen_from and RETRY_LINE in line]
    assert len(retries_after_kill) <= 3, "the wait went on for %d polls after the kill\n%s" % (
        len(retries_after_kill), run.output())
    assert not process_alive(drain["pid"], drain["start_ticks"]), "the drain still runs"

    expected = truth["kills"][0]
    report = json.loads((tmp_path / "reports" / INVENTORY_HOST / "report.json").read_text())
    kills = [k for k in report["kills"] if k["victim"]["pid"] == expected["victim"]["pid"]]
    assert len(kills) == 1, report["kills"]
    kill = kills[0]
    assert (kill["sender"]["pid"], kill["sender"]["comm"]) == (expected["sender"]["pid"], "kill"), kill
    chain = [(a["pid"], a["comm"]) for a in kill["ancestry"][:3]]
    assert chain == [(a["pid"], a["comm"]) for a in expected["ancestry"]], (chain, expected["ancestry"])

    text = run.stdout().split("TASK [Show who killed collector-agent]", 1)[1]
    assert "1 kill of collector-agent" in text
    assert "victim  collector-agent[%d]" % expected["victim"]["pid"] in text
    assert "← sender  kill[%d]" % expected["sender"]["pid"] in text
    for ancestor in expected["ancestry"]:
        assert "← %s[%d]" % (ancestor["comm"], ancestor["pid"]) in text, ancestor
    assert "timed out" not in run.stdout()


def test_no_kill_times_out_non_zero_and_disarms(investigate):
    run = investigate("-e", "sigsleuth_victim=investigate-nil", "-e", "sigsleuth_timeout=10",
                      "-e", "sigsleuth_poll=%d" % POLL)
    wait_for_drain(run)
    run.wait_for_line(WAIT_TASK)
    waiting_since = time.monotonic()
    assert run.finish() != 0, run.output()
    assert "timed out after 10 s, no kill of investigate-nil seen" in run.stdout(), run.output()
    # It waited for the timeout, not longer than a generous bound (arm/collect/disarm included).
    assert time.monotonic() - waiting_since >= 10 - POLL, run.output()
    assert time.monotonic() - run.started < 600, run.output()
    assert "localhost: no kills of investigate-nil" in run.stdout()
    recap = parse_recap(run.stdout())[INVENTORY_HOST]
    assert recap["failed"] == 1 and recap["rescued"] == 0, run.output()


def test_sigint_mid_wait_still_disarms(investigate, tmp_path):
    run = investigate("-e", "sigsleuth_victim=investigate-nil", "-e", "sigsleuth_timeout=900",
                      "-e", "sigsleuth_poll=%d" % POLL)
    drain = wait_for_drain(run)
    run.wait_for_line(RETRY_LINE)
    run.proc.send_signal(signal.SIGINT)
    rc = run.finish()
    assert rc != 0, run.output()
    # The interrupted run never reached its own collect and disarm: the guard did both.
    assert "TASK [Disarm the hosts]" not in run.stdout(), run.output()
    errors = run.stderr()
    assert "ended before disarming; collecting and disarming the same hosts now" in errors, run.output()
    assert "the cleanup run finished (rc 0): the hosts are disarmed" in errors, run.output()
    assert "TASK [Disarm the hosts]" in errors and "Show who killed investigate-nil" in errors, run.output()
    assert not process_alive(drain["pid"], drain["start_ticks"]), "the drain still runs"
    assert not os.path.exists(STATE_DIR), "%s is still there" % STATE_DIR
    # What the drain had seen until the interrupt is in the report the guard's run collected.
    assert (tmp_path / "reports" / INVENTORY_HOST / "report.json").is_file()


BAD_INPUT = [
    pytest.param([], "sigsleuth_victim is empty", id="no-victim"),
    pytest.param(["-e", "sigsleuth_victim="], "sigsleuth_victim is empty", id="empty-victim"),
    pytest.param(["-e", "sigsleuth_victim='123 agent'"], "holds both a pid and a name", id="pid-and-name"),
    pytest.param(["-e", '{"sigsleuth_victim": {"pid": 12, "comm": "agent"}}'], "exactly one of pid and comm",
                 id="pid-and-comm-mapping"),
    pytest.param(["-e", "sigsleuth_victim=agent", "-e", "sigsleuth_timeout=0"],
                 "sigsleuth_timeout must be a positive number of seconds", id="zero-timeout"),
    pytest.param(["-e", "sigsleuth_victim=agent", "-e", '{"sigsleuth_poll": -5}'],
                 "sigsleuth_poll must be a positive number of seconds", id="negative-poll"),
    pytest.param(["-e", "sigsleuth_victim=agent", "-e", "sigsleuth_timeout=soon"],
                 "sigsleuth_timeout must be a positive number of seconds", id="timeout-not-a-number"),
]


@pytest.mark.parametrize("extra, words", BAD_INPUT)
def test_bad_input_is_refused_before_any_host_is_touched(extra, words, tmp_path):
    """No lock needed: nothing may be armed, so the run gets its own state dir and instance name to prove it."""
    state_dir = tmp_path / "state"
    instance = "investigate_bad_%d" % os.getpid()
    before = guard_dirs()
    argv = [ansible_playbook_path(), os.path.join("playbooks", "investigate.yml"),
            "-e", "sigsleuth_state_dir=%s" % state_dir, "-e", "sigsleuth_instance=%s" % instance,
            "-e", "sigsleuth_report_dir=%s" % (tmp_path / "reports")] + extra
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert words in output, output
    recap = parse_recap(proc.stdout)[INVENTORY_HOST]
    assert recap["ok"] == 0 and recap["changed"] == 0 and recap["failed"] == 1, output
    assert "TASK [Start the interrupt guard" not in output and "Arm with the watch drain" not in output
    assert not state_dir.exists() and not (tmp_path / "reports").exists()
    assert not any(os.path.exists(os.path.join(point, "instances", instance))
                   for point in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"))
    assert guard_dirs() == before
