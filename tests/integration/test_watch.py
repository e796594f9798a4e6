"""The watch drain for real (issue 9): arm with sigsleuth_watch on this machine, stage kills, collect.

* A long window (256 KiB per CPU, 20,000 fork+exec between the job shell's fork and its kill): with watch on
  the ancestry is complete; with watch off the report says the parent is unknown because of the overrun.
* The drain SIGKILLed mid-scenario: collect says it crashed and when it last flushed, still names what it
  can; arm restarts it; disarm leaves nothing.
* Arm twice: one drain, nothing changed; check mode starts nothing; watch off stops the drain and keeps the
  instance.
* Hostile names: a process named with a newline and fake fields, its exe a script in /tmp: reported as named,
  never executed or opened again by the drain.
* The binary pages the drain reads (trace_pipe_raw) decode to exactly the events of the same buffer's text.
* A state dir on a read-only filesystem: arm fails naming the path.

Everything runs under its own instance and state dir (WATCH), so nothing collides with other tests.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from sigsleuth_support import (
    INVENTORY_HOST, assert_no_residue, run_playbook, tracefs_instances,
)

from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events
from ansible.module_utils.sigsleuth_trace_raw import RawReader

STATE_DIR = "/var/lib/sigsleuth-watch-it"
INSTANCE = "watch_it"
WATCH = {"sigsleuth_instance": INSTANCE, "sigsleuth_state_dir": STATE_DIR}
LONG_WINDOW = 20000


def extra(**more):
    return ["-e", json.dumps(dict(WATCH, **more))]


def drain_processes():
    """pids of every process that is a sigsleuth watch drain (the module daemonized), found by cmdline."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as handle:
                cmdline = handle.read()
            with open("/proc/%s/stat" % name, "rb") as handle:
                state = handle.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if b"AnsiballZ_sigsleuth_watch" in cmdline and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def instance_exists():
    return any(INSTANCE in names for names in tracefs_instances().values())


def watch_section():
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        return json.load(handle).get("watch")


def wait_gone(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid in drain_processes():
        time.sleep(0.05)
    return pid not in drain_processes()


def assert_no_watch_residue(context):
    assert not os.path.exists(STATE_DIR), "%s left behind %s" % (STATE_DIR, context)
    assert not instance_exists(), "instance %s left behind %s" % (INSTANCE, context)
    leftovers = [pid for pid in drain_processes() if not wait_gone(pid, 5.0)]
    assert not leftovers, "drain processes left behind %s: %s" % (context, leftovers)


@pytest.fixture
def watched(host_baseline):
    """Factory: watched(sigsleuth_watch=True, ...) runs arm.yml with WATCH; disarmed after the test."""
    armed = {"on": False}

    def arm(*args, expect_rc=0, **more):
        armed["on"] = True
        return run_playbook("arm.yml", *(extra(**more) + list(args)), expect_rc=expect_rc)

    yield arm
    if armed["on"]:
        run = run_playbook("disarm.yml", *extra(), expect_rc=None)
        assert run.rc == 0, "disarm failed:\n%s" % run.output()
    assert_no_watch_residue("after disarm")
    assert_no_residue(host_baseline, "after disarm")


@pytest.fixture
def collect_watch(tmp_path, report_schema):
    def run():
        report_dir = tmp_path / "reports"
        result = run_playbook("collect.yml", *extra(sigsleuth_report_dir=str(report_dir)))
        path = report_dir / INVENTORY_HOST / "report.json"
        assert path.is_file(), "collect wrote no report\n%s" % result.output()
        with open(path) as handle:
            report = json.load(handle)
        errors = list(report_schema.iter_errors(report))
        assert not errors, "report.json does not match the schema: %s" % [e.message for e in errors[:5]]
        return report
    return run


def chain_pids(expected):
    return [want["pid"] for want in expected["ancestry"]] + [os.getpid()]


def the_kill(report, expected):
    matches = [k for k in report["kills"] if k["victim"]["pid"] == expected["victim"]["pid"]
               and k["signal"]["number"] == expected["signal"]["number"]]
    assert len(matches) == 1, "expected one record of %s, found %d: %s" % (expected["victim"], len(matches),
                                                                           report["kills"])
    return matches[0]


def assert_no_wrong_ancestor(kill, expected):
    pids = [entry["pid"] for entry in kill["ancestry"]]
    want = chain_pids(expected)
    assert pids == want[:len(pids)] or pids[:len(want)] == want, "ancestry %s is not %s..." % (pids, want)


# ---------------------------------------------------------------- long window

@pytest.mark.parametrize("watch", [True, False], ids=["watch-on", "watch-off"])
def test_long_window(watch, watched, scenarios, collect_watch):
    scenario = scenarios("storm", "now", storm=LONG_WINDOW)
    watched(sigsleuth_watch=watch, sigsleuth_buffer_size_kb=256)
    scenario.trigger()
    truth = scenario.wait(timeout=600)
    report = collect_watch()
    (expected,) = truth["kills"]
    kill = the_kill(report, expected)
    ftrace = report["sources"]["ftrace"]
    assert (kill["sender"] or {}).get("pid") == expected["sender"]["pid"], kill["sender"]
    assert_no_wrong_ancestor(kill, expected)
    unknown = [gap for gap in kill["gaps"] if gap.startswith("parent of") and "unknown" in gap]
    if watch:
        assert ftrace["watch"]["running"] is True and ftrace["watch"]["events_consumed"] >= 2 * LONG_WINDOW
        assert ftrace["loss"] is None, ftrace["loss"]
        pids = [entry["pid"] for entry in kill["ancestry"]]
        assert pids[:len(chain_pids(expected))] == chain_pids(expected), pids
        assert not unknown, kill["gaps"]
    else:
        assert "watch" not in ftrace
        assert ftrace["loss"] is not None and "overrun" in ftrace["loss"], ftrace["loss"]
        assert unknown and "see sources.ftrace.loss" in unknown[0], kill["gaps"]


# ---------------------------------------------------------------- the drain killed

def test_drain_sigkilled_mid_scenario(watched, scenarios, collect_watch):
    scenario = scenarios("storm", "now", storm=3000)
    watched(sigsleuth_watch=True)
    first = watch_section()
    scenario.trigger()
    time.sleep(0.5)
    os.kill(first["pid"], signal.SIGKILL)
    truth = scenario.wait(timeout=300)
    assert wait_gone(first["pid"])
    report = collect_watch()
    (expected,) = truth["kills"]
    kill = the_kill(report, expected)
    watch = report["sources"]["ftrace"]["watch"]
    assert watch["running"] is False and watch["crashed"] is True and watch["last_flush"], watch
    assert "died without being stopped" in report["sources"]["ftrace"]["loss"]
    assert watch["last_flush"] in report["sources"]["ftrace"]["loss"]
    assert (kill["sender"] or {}).get("pid") == expected["sender"]["pid"], kill["sender"]
    assert_no_wrong_ancestor(kill, expected)
    if [entry["pid"] for entry in kill["ancestry"]][:len(chain_pids(expected))] != chain_pids(expected):
        assert any("unknown" in gap for gap in kill["gaps"]), kill["gaps"]

    run = watched(sigsleuth_watch=True)
    assert run.host()["changed"] >= 1
    second = watch_section()
    assert second["pid"] != first["pid"] and second["restarts"] == 1 and drain_processes() == [second["pid"]]
    again = collect_watch()
    assert again["sources"]["ftrace"]["watch"]["running"] is True
    assert again["sources"]["ftrace"]["watch"]["restarts"] == 1
    the_kill(again, expected)


# ---------------------------------------------------------------- idempotence, check mode, switching off

def test_arm_twice_check_mode_and_switching_off(watched, collect_watch):
    watched("--check", sigsleuth_watch=True)
    assert not os.path.exists(STATE_DIR) and drain_processes() == [], "check mode started something"

    watched(sigsleuth_watch=True)
    first = watch_section()
    assert drain_processes() == [first["pid"]]
    run = watched(sigsleuth_watch=True)
    assert run.host()["changed"] == 0, run.output()
    assert watch_section()["pid"] == first["pid"] and drain_processes() == [first["pid"]]

    # Re-armed with another signal: the drain goes on from its checkpoint, recording that signal too.
    run = watched(sigsleuth_watch=True, sigsleuth_signals=["KILL", "TERM"])
    second = watch_section()
    assert second["pid"] != first["pid"] and drain_processes() == [second["pid"]], run.output()
    assert second["traced"]["signals"] == [9, 15]
    victim = subprocess.Popen(["sleep", "1000"])
    time.sleep(0.5)
    victim.terminate()
    victim.wait()

    run = watched(sigsleuth_watch=False, sigsleuth_signals=["KILL", "TERM"])
    assert run.host()["changed"] >= 1
    assert wait_gone(second["pid"]) and drain_processes() == []
    assert instance_exists(), "switching watch off removed the instance"
    assert watch_section()["stopped_at_ns"] is not None
    report = collect_watch()
    watch = report["sources"]["ftrace"]["watch"]
    assert watch["running"] is False and watch["crashed"] is False and watch["stopped_at"], watch
    assert report["sources"]["ftrace"]["loss"] is None
    terms = [k for k in report["kills"] if k["victim"]["pid"] == victim.pid]
    assert len(terms) == 1 and terms[0]["signal"]["name"] == "SIGTERM", report["kills"]


# ---------------------------------------------------------------- hostile names

def test_hostile_comm_and_exe_in_tmp(watched, collect_watch):
    workdir = tempfile.mkdtemp(prefix="sigsleuth-watch-hostile-", dir="/tmp")
    victim = None
    try:
        watched(sigsleuth_watch=True)
        drain = watch_section()["pid"]
        name = "k\nill) pid=1 \\x"
        script = os.path.join(workdir, name)
        marker = os.path.join(workdir, "marker")
        with open(script, "w") as handle:
            handle.write("#!/bin/sh\necho ran >> '%s'\nsleep 1000\n" % marker)
        os.chmod(script, 0o755)
        victim = subprocess.Popen([script])
        time.sleep(1.0)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        report = collect_watch()
        records = [k for k in report["kills"] if k["victim"]["pid"] == victim.pid]
        assert len(records) == 1, report["kills"]
        # 15 bytes, the most a comm holds; the report writes the literal backslash as \\ (decode_name).
        assert records[0]["victim"]["comm"] == name.replace("\\", "\\\\"), records[0]["victim"]
        assert (records[0]["sender"] or {}).get("pid") == os.getpid()
        with open(marker) as handle:
            assert handle.read() == "ran\n", "the hostile script ran more than once"
        links = []
        for fd in os.listdir("/proc/%d/fd" % drain):
            try:
                links.append(os.readlink("/proc/%d/fd/%s" % (drain, fd)))
            except OSError:
                pass
        assert not [link for link in links if link.startswith(workdir)], links
        assert drain in drain_processes(), "the drain died on a hostile name"
        assert report["sources"]["ftrace"]["watch"]["reader"] == "trace_pipe_raw", report["sources"]["ftrace"]
    finally:
        if victim is not None and victim.poll() is None:
            victim.kill()
            victim.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- binary pages = text

def test_binary_pages_decode_to_the_text_of_the_same_buffer(watched):
    """The instance's `trace` (text, not consumed), then its per-CPU trace_pipe_raw (binary, consumed): the
    same events, fields and order, for fork+exec, threads, renames to hostile names and kills."""
    watched(sigsleuth_watch=False)
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        ftrace = json.load(handle)["ftrace"]
    instance = os.path.join(ftrace["tracefs"], "instances", ftrace["instance"])
    workdir = tempfile.mkdtemp(prefix="sigsleuth-raw-", dir="/tmp")
    try:
        script = os.path.join(workdir, "we ird\nname pid=1")
        shutil.copy("/bin/true", script)
        subprocess.run(["sh", "-c", "for i in $(seq 200); do /bin/true; done; sleep 100 & kill -9 $!; wait;"
                        " sleep 100 & kill -15 $!; wait; '%s'" % script], check=False)
        subprocess.run([sys.executable, "-c", "import ctypes, threading; t = threading.Thread(target=len, "
                        "args=((),)); t.start(); t.join(); ctypes.CDLL(None).prctl(15, b'a\\nb pid=1 x', 0, 0, 0)"],
                       check=True)
        _write(os.path.join(instance, "tracing_on"), "0")
        with open(os.path.join(instance, "trace"), "rb") as stream:
            text = list(iter_events(stream, TraceStats()))
        stats = TraceStats()
        reader = RawReader(instance, ftrace["tracefs"], stats)
        binary = []
        while True:
            events, pages = reader.read_pass(everything=True)
            binary += events
            if not pages:
                break
        reader.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def same(event, rounded):
        name, ts, cpu, tid, _tgid, fields = event
        # Binary records leave out the names the lineage never reads (an exit's comm, a rename's old name).
        if name == "task_rename":
            fields = (fields[0], ((None, fields[1][0][1]),))
        elif name == "sched_process_exit":
            fields = (None,) + tuple(fields[1:])
        return name, (ts + 500) // 1000 * 1000 if rounded else ts, cpu, tid, fields  # text prints rounded us
    assert len(text) > 1000 and [same(e, True) for e in binary] == [same(e, False) for e in text]
    names = {event[0] for event in binary}
    assert {"sched_process_fork", "sched_process_exec", "sched_process_exit", "task_newtask", "task_rename",
            "signal_generate"} <= names, names
    assert any(event[5][1][0][1] == b"a\nb pid=1 x" for event in binary if event[0] == "task_rename")


def _write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------- read-only state dir

def test_read_only_state_dir_fails_naming_the_path(host_baseline):
    readonly = tempfile.mkdtemp(prefix="sigsleuth-watch-ro-", dir="/run")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", readonly], check=True)
    try:
        run = run_playbook("arm.yml", "-e", json.dumps(dict(WATCH, sigsleuth_state_dir=readonly,
                                                            sigsleuth_watch=True)), expect_rc=None)
        assert run.rc != 0, run.output()
        assert run.host()["failed"] >= 1
        assert readonly in run.stdout, run.output()
        assert drain_processes() == []
        assert not instance_exists(), "a failed arm left the instance behind"
    finally:
        subprocess.run(["umount", readonly], check=False)
        os.rmdir(readonly)
    assert_no_residue(host_baseline, "after the read-only arm")
