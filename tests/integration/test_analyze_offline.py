"""`sigsleuth analyze` against a live collect, for real: arm with ftrace and audit, stage the seed's kill,
collect, save what a sosreport would hold (the instance's trace, audit.log, state.json and the snapshot),
disarm, and analyze the saved copies offline with .venv/bin/sigsleuth: the same kills, senders, ancestries and
audit facts as the live collect."""

import json
import os
import shutil
import subprocess

from sigsleuth_support import INVENTORY_HOST, ROOT, STATE_DIR, run_playbook

WITH_AUDIT = ["-e", json.dumps({"sigsleuth_sources": ["ftrace", "audit"]})]
AUDIT_FACTS = ("uid", "auid", "euid", "argv", "cwd")


def sigsleuth_command():
    path = os.path.join(ROOT, ".venv", "bin", "sigsleuth")
    assert os.access(path, os.X_OK), "%s not found: run `make venv` first" % path
    return path


def save_inputs(saved):
    """What a sosreport would carry: the instance's trace, the audit log, state.json and the snapshot."""
    with open(os.path.join(STATE_DIR, "state.json")) as handle:
        state = json.load(handle)
    trace = os.path.join(state["ftrace"]["tracefs"], "instances", state["ftrace"]["instance"], "trace")
    shutil.copyfile(trace, str(saved / "trace"))
    shutil.copyfile(state["audit"]["log_file"], str(saved / "audit.log"))
    shutil.copyfile(os.path.join(STATE_DIR, "state.json"), str(saved / "state.json"))
    shutil.copyfile(state["snapshot"]["path"], str(saved / "snapshot.jsonl"))
    return saved


def same_process(live, offline, what):
    assert (offline is None) == (live is None), what
    if live is None:
        return
    for key in ("pid", "tid", "comm", "argv", "started", "exited_at", "ns_pid", "cgroup") + AUDIT_FACTS:
        assert offline.get(key) == live.get(key), "%s: %s is %r offline, %r live" % (
            what, key, offline.get(key), live.get(key))
    # Offline keeps the exec'd path (it is the host's, not this machine's); here it resolves to the same file.
    assert offline["exe"] is None or os.path.realpath(offline["exe"]) == live["exe"], (what, offline, live)


def test_offline_analysis_gives_the_kills_of_the_live_collect(armed, scenarios, collect, tmp_path):
    armed(("KILL",), *WITH_AUDIT)
    scenario = scenarios("seed", "now")
    scenario.trigger()
    truth = scenario.wait()
    live = collect()
    assert live["sources"]["audit"]["armed"] is True and live["sources"]["ftrace"]["armed"] is True, live["sources"]
    saved_dir = tmp_path / "saved"
    saved_dir.mkdir()
    saved = save_inputs(saved_dir)
    run_playbook("disarm.yml")
    assert not os.path.exists(STATE_DIR)

    out = tmp_path / "offline"
    proc = subprocess.run([sigsleuth_command(), "analyze", "--trace", str(saved / "trace"),
                           "--audit-log", str(saved / "audit.log"), "--state", str(saved / "state.json"),
                           "--snapshot", str(saved / "snapshot.jsonl"), "--host", INVENTORY_HOST,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    offline = json.loads((out / INVENTORY_HOST / "report.json").read_text())
    assert (out / "summary.md").is_file() and (out / "summary.html").is_file()

    victim = truth["kills"][0]["victim"]["pid"]
    assert any(kill["victim"]["pid"] == victim for kill in live["kills"]), live["kills"]
    # The trace was saved just after the live collect read it: what it recorded since is later than that.
    offline_kills = [kill for kill in offline["kills"] if kill["time"] <= live["collected_at"]]
    assert len(offline_kills) == len(live["kills"]), (offline_kills, live["kills"])
    for live_kill, offline_kill in zip(live["kills"], offline_kills):
        label = "kill of %s[%s] at %s" % (live_kill["victim"]["comm"], live_kill["victim"]["pid"], live_kill["time"])
        for key in ("time", "signal", "origin", "mechanism", "mechanism_candidates", "evidence", "count", "syscall",
                    "si_code", "result"):
            assert offline_kill.get(key) == live_kill.get(key), "%s: %s" % (label, key)
        same_process(live_kill["victim"], offline_kill["victim"], label + ", victim")
        same_process(live_kill["sender"], offline_kill["sender"], label + ", sender")
        assert len(offline_kill["ancestry"]) == len(live_kill["ancestry"]), label
        for index, (a, b) in enumerate(zip(live_kill["ancestry"], offline_kill["ancestry"])):
            same_process(a, b, "%s, ancestor %d" % (label, index))
    staged = [kill for kill in offline_kills if kill["victim"]["pid"] == victim]
    assert len(staged) == 1 and staged[0]["sender"]["comm"] == "kill", staged
    assert staged[0]["sender"]["facts_from"].get("argv") == "audit", staged[0]["sender"]
    for name in ("ftrace", "audit", "snapshot"):
        assert offline["sources"][name]["armed"] is True, offline["sources"][name]
    assert offline["sources"]["ftrace"]["events_read"] >= live["sources"]["ftrace"]["events_read"]
    assert offline["sources"]["audit"]["mode"] == live["sources"]["audit"]["mode"] == "enrich"
