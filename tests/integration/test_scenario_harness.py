"""The scenario harness itself: it stages real kills, tells the truth about them, and leaves nothing behind.

No arming here, but the kills are real, so the module holds the arm lock: an armed run elsewhere must not see
them. The harness runs daemonised here (`start` without --foreground, as playbooks/demo.yml runs it); this
test process is made a child subreaper so the daemonised supervisor comes back to it and is reaped.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sigsleuth_support import HARNESS, child_subreaper, harness, reap_pid, scenario_processes, zombie_children

SCENARIOS = ["seed", "bash-builtin", "pgroup", "reaped-chain", "term-int", "storm"]
# Processes orphaned inside each scenario (adopted by the supervisor): their fate depends on --reap.
ORPHANS = {"seed": ["killer"], "reaped-chain": ["mid"]}
TOKEN_VAR = "SIGSLEUTH_SCENARIO"


def read_stat(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            tail = handle.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return {"state": tail[0].decode(), "ppid": int(tail[1]), "start_ticks": int(tail[19])}


def token_holders(token):
    needle = ("%s=%s" % (TOKEN_VAR, token)).encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/environ" % name, "rb") as handle:
                    if needle in handle.read().split(b"\0"):
                        found.append(int(name))
            except OSError:
                pass
    return found


def assert_nothing_left(state):
    assert token_holders(state["token"]) == [], "processes with the scenario's token are left"
    assert scenario_processes() == [], "scenario processes are left: %s" % scenario_processes()
    assert zombie_children() == [], "zombies are left under the test process"
    assert not os.path.exists(state["workdir"]), "workdir left: %s" % state["workdir"]
    assert not os.path.exists(state["state_file"]), "state file left: %s" % state["state_file"]


@pytest.fixture(scope="module", autouse=True)
def lock(arm_lock):
    yield


@pytest.mark.parametrize("reap", ["now", "late"])
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_stages_a_real_kill_and_leaves_nothing(name, reap, tmp_path):
    state_path = str(tmp_path / "state.json")
    with child_subreaper():
        ready = json.loads(harness("start", name, "--state", state_path, "--reap", reap, "--storm", "500").stdout)
        supervisor = ready["supervisor"]["pid"]
        try:
            assert ready["status"] == "ready"
            assert read_stat(supervisor)["ppid"] == os.getpid(), "the daemonised supervisor was not adopted by us"
            for role, entry in ready["processes"].items():
                stat = read_stat(entry["pid"])
                assert stat is not None and stat["state"] not in "ZX", "%s is not running" % role
                assert stat["start_ticks"] == entry["start_ticks"]
                with open("/proc/%d/comm" % entry["pid"]) as handle:
                    assert handle.read().strip() == entry["comm"]
                assert os.readlink("/proc/%d/exe" % entry["pid"]) == entry["exe"]
            harness("trigger", "--state", state_path)
            truth = json.loads(harness("wait", "--state", state_path, "--timeout", "120").stdout)
            check_truth(name, reap, truth)
            if reap == "late":
                time.sleep(0.5)  # still not reaped a while later: they wait for stop
                for role in ORPHANS.get(name, []):
                    stat = read_stat(truth["processes"][role]["pid"])
                    assert stat is not None and stat["state"] == "Z" and stat["ppid"] == supervisor, (
                        "%s should still be a zombie of the supervisor: %s" % (role, stat))
        finally:
            stopped = harness("stop", "--state", state_path, check=False)
            reap_pid(supervisor)
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["forced"] == []
    assert_nothing_left(ready)


def check_truth(name, reap, truth):
    assert truth["status"] == "done", truth.get("error")
    assert truth["scenario"] == name and truth["reap"] == reap
    processes = truth["processes"]
    expected_kills = {"pgroup": 3}.get(name, 1)
    assert len(truth["kills"]) == expected_kills
    assert len(truth["unreported"]) == (1 if name == "term-int" else 0)
    for kill in truth["kills"] + truth["unreported"]:
        victim = next(p for p in processes.values() if p["pid"] == kill["victim"]["pid"])
        assert victim["exit"] == "killed by " + kill["signal"]["name"]
        assert victim["exited"] and victim["reaped"]
        sender = next(p for p in processes.values() if p["pid"] == kill["sender"]["pid"])
        assert sender["exited"] is True and not sender["before_trigger"]
        assert kill["sender"]["exe"] == os.path.realpath(kill["sender"]["exe"])
        roles = [entry["role"] for entry in kill["ancestry"]]
        assert roles[-1] == "supervisor"
        assert {"seed": ["job-shell", "daemon", "supervisor"],
                "reaped-chain": ["mid", "top", "supervisor"]}.get(name, ["daemon", "supervisor"]) == roles
        if name == "seed":
            assert kill["sender"]["comm"] == "kill"
            shell = kill["ancestry"][0]
            assert (shell["comm"], shell["exe"], shell["exited"], shell["reaped"]) == (
                "sh", os.path.realpath("/bin/sh"), True, True)
        if name == "bash-builtin":
            assert (kill["sender"]["comm"], kill["sender"]["exe"]) == ("bash", os.path.realpath("/usr/bin/bash"))
    for role in ORPHANS.get(name, []):
        pid = processes[role]["pid"]
        assert processes[role]["exited"] is True
        if reap == "now":
            assert processes[role]["reaped"] is True and pid in truth["reaped_orphans"]
        else:
            assert processes[role]["reaped"] is False and pid not in truth["reaped_orphans"]
    if name == "reaped-chain":
        top = processes["top"]
        assert (top["exited"], top["reaped"], top["exit"]) == (True, True, "exit 0")
        assert read_stat(top["pid"]) is None or read_stat(top["pid"])["start_ticks"] != top["start_ticks"]
    if name == "pgroup":
        leader = processes["agent"]["pid"]
        assert {processes[r]["pgid"] for r in ("agent", "worker-1", "worker-2")} == {leader}
    for entry in processes.values():
        if entry["before_trigger"]:
            assert entry["started"] <= truth["triggered_at"]


def test_run_does_it_all_in_one_and_leaves_nothing():
    proc = subprocess.run([sys.executable, HARNESS, "run", "seed", "--reap", "late"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    truth = json.loads(proc.stdout)
    check_truth("seed", "late", truth)
    assert_nothing_left(truth)


def test_reaper_reaps_what_its_command_orphans():
    started = time.monotonic()
    proc = subprocess.run([sys.executable, HARNESS, "reaper", "--", "/bin/sh", "-c",
                           "/usr/bin/sleep 0.4 & echo $!; exit 0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    orphan = int(proc.stdout.split()[0])
    assert time.monotonic() - started >= 0.4, "the reaper did not wait for the orphan"
    stat = read_stat(orphan)
    assert stat is None or stat["state"] != "Z", "the orphan was left a zombie"


def test_reaper_passes_on_the_exit_code():
    proc = subprocess.run([sys.executable, HARNESS, "reaper", "--", "/bin/sh", "-c", "exit 7"], timeout=60)
    assert proc.returncode == 7


def test_stop_without_state_is_a_no_op(tmp_path):
    proc = harness("stop", "--state", str(tmp_path / "none.json"))
    assert json.loads(proc.stdout)["stopped"] is False


def test_start_refuses_to_overwrite_a_running_scenario(tmp_path):
    state_path = str(tmp_path / "state.json")
    with child_subreaper():
        ready = json.loads(harness("start", "seed", "--state", state_path).stdout)
        try:
            again = harness("start", "seed", "--state", state_path, check=False)
            assert again.returncode != 0 and "already running" in again.stderr
        finally:
            harness("stop", "--state", state_path)
            reap_pid(ready["supervisor"]["pid"])
    assert_nothing_left(ready)


def test_unknown_scenario_is_rejected(tmp_path):
    proc = harness("start", "nope", "--state", str(tmp_path / "s.json"), check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert not os.path.exists(tmp_path / "s.json")


def test_stop_cleans_up_after_a_supervisor_that_died(tmp_path):
    """A supervisor killed outright cannot clean up: stop finds its processes by token and kills them."""
    state_path = str(tmp_path / "state.json")
    with child_subreaper():
        ready = json.loads(harness("start", "reaped-chain", "--state", state_path).stdout)
        supervisor = ready["supervisor"]["pid"]
        os.kill(supervisor, signal.SIGKILL)
        reap_pid(supervisor)
        assert token_holders(ready["token"]), "the scenario's processes should have outlived the supervisor"
        stopped = harness("stop", "--state", state_path, check=False)
        assert stopped.returncode == 1, "stop must say it had to force-kill strays"
        forced = json.loads(stopped.stdout)["forced"]
        # The victim and agentd-mid wait for ever; daemons waiting for a trigger give up once orphaned.
        assert {ready["processes"][role]["pid"] for role in ("agent", "mid")} <= set(forced)
        time.sleep(0.2)
    assert_nothing_left(ready)
