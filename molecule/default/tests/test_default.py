"""Verify the armed host after the side effect: instance and state present, the staged kill reported."""

import json
import os

INSTANCE = "/sys/kernel/tracing/instances/sigsleuth"
STATE = "/var/lib/sigsleuth/state.json"


def read(host, path):
    return host.check_output("cat %s", path).strip()


def test_instance_is_armed(host):
    assert host.file(INSTANCE).is_directory
    assert "[boot]" in read(host, INSTANCE + "/trace_clock")
    assert read(host, INSTANCE + "/tracing_on") == "1"
    assert read(host, INSTANCE + "/options/overwrite") == "1"
    assert read(host, INSTANCE + "/options/record-tgid") == "1"
    assert read(host, INSTANCE + "/events/signal/signal_generate/filter") == "sig==9 || sig==15"
    for event in ("signal/signal_generate", "sched/sched_process_fork", "sched/sched_process_exec",
                  "sched/sched_process_exit", "task/task_newtask", "task/task_rename"):
        assert read(host, "%s/events/%s/enable" % (INSTANCE, event)) == "1", event


def test_state_file(host):
    state = host.file(STATE)
    assert state.is_file
    assert state.mode == 0o600
    assert host.file(os.path.dirname(STATE)).mode == 0o700
    data = json.loads(state.content_string)
    assert data["ftrace"]["instance"] == "sigsleuth"
    assert data["ftrace"]["signals"] == [9, 15]
    assert host.file(data["snapshot"]["path"]).is_file


def test_report_names_the_kill_sender(host):
    path = os.path.join(os.environ["SIGSLEUTH_REPORT_DIR"], "localhost", "report.json")
    report = host.file(path)
    assert report.is_file and report.mode == 0o600
    kills = json.loads(report.content_string)["kills"]
    staged = [kill for kill in kills
              if kill["victim"].get("comm") == "sleep" and (kill.get("sender") or {}).get("comm") == "kill"]
    assert staged, "no SIGKILL of sleep by kill in %s" % path
    kill = staged[-1]
    assert kill["signal"] == {"number": 9, "name": "SIGKILL"}
    assert kill["sender"]["exe"] in ("/bin/kill", "/usr/bin/kill")
    assert kill["ancestry"] and kill["ancestry"][0]["comm"] == "sh"
    assert os.path.isfile(os.path.join(os.environ["SIGSLEUTH_REPORT_DIR"], "summary.md"))
