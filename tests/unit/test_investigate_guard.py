"""The interrupt guard (roles/sigsleuth/files/sigsleuth_guard.py) with a stand-in for ansible-playbook.

The stand-in forks a "worker" that starts the guard exactly as investigate.yml's task does (the worker's pid
given, its parent watched), then lingers until the test lets it end. Run again with "-e", it is the cleanup
run: it records its arguments, working directory and environment, and exits with the status asked for.
Nothing is armed: the guard's decisions (when to run again, with which phase, what it says, what it leaves)
are what is tested here; tests/integration/test_investigate.py interrupts the real playbook.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUARD = os.path.join(ROOT, "roles", "sigsleuth", "files", "sigsleuth_guard.py")
sys.path.insert(0, os.path.dirname(GUARD))

import sigsleuth_guard  # noqa: E402

STAND_IN = r'''
import json, os, subprocess, sys, time
record, control = os.environ["STAND_IN_RECORD"], os.environ["STAND_IN_CONTROL"]
if "-e" in sys.argv:
    with open(record, "a") as handle:
        handle.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(),
                                 "env": os.environ.get("STAND_IN_ENV")}) + "\n")
    print("the cleanup run says hello")
    sys.exit(int(os.environ.get("STAND_IN_RC", "0")))
worker = os.fork()
if worker == 0:
    os._exit(subprocess.call([sys.executable, %(guard)r, "start", "--dir", sys.argv[1],
                              "--worker", str(os.getpid())]))
_, status = os.waitpid(worker, 0)
if status != 0:
    sys.exit(3)
while not os.path.exists(control):
    time.sleep(0.02)
'''


class StandIn:
    def __init__(self, tmp_path, *args, rc=0):
        self.dir = tmp_path / "guard"
        self.dir.mkdir(mode=0o700)
        self.record = tmp_path / "record.jsonl"
        self.control = tmp_path / "exit-now"
        self.errors = tmp_path / "stderr.txt"
        script = tmp_path / "ansible-playbook-stand-in.py"
        script.write_text(STAND_IN % {"guard": GUARD})
        env = dict(os.environ, STAND_IN_RECORD=str(self.record), STAND_IN_CONTROL=str(self.control),
                   STAND_IN_ENV="kept", STAND_IN_RC=str(rc))
        self.cwd = tmp_path
        with open(self.errors, "wb") as errors:
            self.proc = subprocess.Popen([sys.executable, str(script), str(self.dir)] + list(args), cwd=str(tmp_path),
                                         env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        self.guard = None

    def ready(self):
        deadline = time.monotonic() + 20
        while not (self.dir / "guard.json").exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.stderr()
            time.sleep(0.02)
        self.guard = json.loads((self.dir / "guard.json").read_text())
        return self

    def mark(self, step):
        return subprocess.run([sys.executable, GUARD, "mark", "--dir", str(self.dir), step],
                              capture_output=True, text=True, check=True)

    def end(self, how="exit"):
        if how == "exit":
            self.control.write_text("")
        else:
            self.proc.send_signal(how)
        self.proc.wait(timeout=20)

    def guard_gone(self, timeout=30):
        deadline = time.monotonic() + timeout
        while sigsleuth_guard.is_alive(self.guard["pid"], self.guard["start_ticks"]):
            assert time.monotonic() < deadline, "the guard is still running"
            time.sleep(0.05)
        # It was our stand-in's grandchild; whoever adopted it reaps it.

    def cleanup_runs(self):
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def stderr(self):
        return self.errors.read_text() if self.errors.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.guard and sigsleuth_guard.is_alive(self.guard["pid"], self.guard["start_ticks"]):
            os.kill(self.guard["pid"], signal.SIGKILL)


@pytest.fixture
def stand_in(tmp_path):
    made = []

    def make(*args, rc=0):
        made.append(StandIn(tmp_path, *args, rc=rc))
        return made[-1].ready()

    yield make
    for one in made:
        one.stop()


def test_a_run_that_is_done_is_left_alone(stand_in):
    run = stand_in()
    assert run.guard["watches"]["pid"] == run.proc.pid
    result = json.loads(run.mark("done").stdout)
    assert result == {"changed": True, "mark": "done"}
    run.guard_gone()
    assert not run.dir.exists()
    run.end()
    time.sleep(0.5)
    assert run.cleanup_runs() == [] and run.stderr() == ""


@pytest.mark.parametrize("how", ["exit", signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_an_early_end_runs_the_same_command_to_collect_and_disarm(stand_in, how):
    run = stand_in("-i", "inventory", "--limit", "web*", "--step")
    run.end(how)
    run.guard_gone()
    runs = run.cleanup_runs()
    assert len(runs) == 1, run.stderr()
    assert runs[0]["argv"] == [str(run.dir), "-i", "inventory", "--limit", "web*",
                               "-e", '{"__sigsleuth_investigate_cleanup": "collect"}']
    assert runs[0]["cwd"] == str(run.cwd) and runs[0]["env"] == "kept"
    said = run.stderr()
    assert "ended before disarming; collecting and disarming the same hosts now" in said
    assert "the cleanup run says hello" in said
    assert "the cleanup run finished (rc 0): the hosts are disarmed" in said
    assert not run.dir.exists()


def test_after_collect_only_disarm_is_left(stand_in):
    run = stand_in()
    run.mark("collected")
    run.end(signal.SIGKILL)
    run.guard_gone()
    assert [r["argv"][-1] for r in run.cleanup_runs()] == ['{"__sigsleuth_investigate_cleanup": "disarm"}']
    assert "ended before disarming; disarming the same hosts now" in run.stderr()


def test_a_failed_cleanup_says_so_and_keeps_its_log(stand_in):
    run = stand_in(rc=2)
    run.end()
    run.guard_gone()
    said = run.stderr()
    assert "the cleanup run failed (rc 2)" in said and "playbooks/disarm.yml" in said
    log = (run.dir / "guard.log").read_text()
    assert "the cleanup run says hello" in log and "failed (rc 2)" in log


def test_only_the_process_that_forked_the_worker_is_watched(tmp_path):
    # This test process is not a fork of its child `sleep`: same parent, other executable and argv.
    child = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(sigsleuth_guard.GuardError, match="is not the ansible-playbook process"):
            sigsleuth_guard.playbook_process(child.pid)
    finally:
        child.kill()
        child.wait()
    with pytest.raises(sigsleuth_guard.GuardError, match="no process"):
        sigsleuth_guard.playbook_process(2 ** 22 + 1)


def test_start_and_mark_without_a_directory(tmp_path, capsys):
    assert sigsleuth_guard.main(["start", "--dir", str(tmp_path / "none"), "--worker", str(os.getpid())]) == 1
    assert json.loads(capsys.readouterr().out)["msg"].endswith("is not a directory")
    assert sigsleuth_guard.main(["mark", "--dir", str(tmp_path / "none"), "done"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
