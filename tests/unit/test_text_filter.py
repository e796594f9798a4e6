"""The plain-text filter: trees a person reads in a terminal, short for a fleet, hostile names harmless."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "sigsleuth", "filter_plugins"))

from sigsleuth_text import FilterModule, sigsleuth_kills_of, sigsleuth_text, visible  # noqa: E402


def process(pid, comm, exe=None, exited=True, **extra):
    entry = {"pid": pid, "comm": comm, "exe": exe, "exited": exited}
    entry.update(extra)
    return entry


def report(kills, host="web1"):
    return {
        "schema_version": "1.3.0", "host": host, "armed_at": "2026-11-26T07:00:00.000000Z",
        "collected_at": "2026-11-26T07:05:00.000000Z", "signals": [9],
        "sources": {"ftrace": {"armed": True, "events_read": 10, "loss": None},
                    "audit": {"armed": False, "reason": "auditd is not running"},
                    "snapshot": {"armed": True, "processes": 99},
                    "clock": {"trace_clock": "boot", "step": None}},
        "kills": kills,
    }


SEED_KILL = {
    "time": "2026-11-26T07:01:02.123456Z",
    "signal": {"number": 9, "name": "SIGKILL"},
    "victim": process(1234, "collector-agent", "/opt/agent/collector-agent", tid=1234,
                      exited_at="2026-11-26T07:01:02.123460Z"),
    "sender": process(1250, "kill", "/usr/bin/kill", tid=1250, argv=["kill", "-9", "1234"], uid=0,
                      started="2026-11-26T07:01:02.100000Z"),
    "origin": "user",
    "mechanism": "user_signal",
    "mechanism_candidates": ["kill", "pidfd_send_signal", "cgroup_kill"],
    "evidence": ["ftrace:signal_generate"],
    "count": 1,
    "ancestry": [process(1249, "sh", "/usr/bin/sh", argv=["sh", "/opt/agent/cleanup.sh"]),
                 process(1200, "agentd-cron", "/usr/sbin/agentd-cron", exited=False,
                         cgroup="/system.slice/agentd.service"),
                 process(1, "init", "/sbin/init", exited=False)],
    "gaps": [],
}


def test_a_kill_reads_as_a_tree_without_markup():
    text = sigsleuth_text({"web1": {"report": report([SEED_KILL]), "error": None}})
    lines = text.split("\n")
    assert lines[0] == "sigsleuth: 1 host, 1 kill"
    assert lines[1] == "web1: 1 kill; armed 2026-11-26T07:00:00.000000Z, collected 2026-11-26T07:05:00.000000Z"
    assert lines[2] == ("  sources: ftrace armed: yes, loss: none; audit armed: no (auditd is not running); "
                        "snapshot armed: yes")
    assert lines[3] == ("  2026-11-26T07:01:02.123456Z  SIGKILL  mechanism: user_signal (one of kill, "
                        "pidfd_send_signal, cgroup_kill)  origin: user")
    # Times of the kill's own day read as times of day; a cgroup is named once up a chain that shares it.
    assert lines[4] == "    victim  collector-agent[1234]  /opt/agent/collector-agent  exited 07:01:02.123460Z"
    assert lines[5] == ("      ← sender  kill[1250]  /usr/bin/kill  argv: kill -9 1234  uid: 0  exited  "
                        "started 07:01:02.100000Z")
    assert lines[6] == "        ← sh[1249]  /usr/bin/sh  argv: sh /opt/agent/cleanup.sh  exited"
    assert lines[7] == ("          ← agentd-cron[1200]  /usr/sbin/agentd-cron  cgroup: /system.slice/agentd.service"
                        "  alive")
    assert lines[8] == "            ← init[1]  /sbin/init  alive"
    assert lines[9] == "    evidence: ftrace:signal_generate"
    assert lines[10] == "    gaps: none"
    assert text.endswith("\n") and not text.endswith("\n\n")
    for markup in ("\\[", "**", "True", "False", "None", "#"):
        assert markup not in text, markup


def test_a_cgroup_is_named_where_it_changes():
    unit = "/system.slice/agentd.service"
    kill = dict(SEED_KILL, victim=dict(SEED_KILL["victim"], cgroup=unit),
                sender=dict(SEED_KILL["sender"], cgroup=unit),
                ancestry=[process(1200, "agentd", cgroup=unit, exited=False),
                          process(1, "init", cgroup="/", exited=False, started="2026-11-01T00:00:00.000000Z")])
    lines = sigsleuth_text({"h": {"report": report([kill]), "error": None}}).split("\n")
    assert "cgroup: " + unit in lines[4] and "cgroup" not in lines[5] and "cgroup" not in lines[6]
    assert lines[7] == "          ← init[1]  cgroup: /  alive  started 2026-11-01T00:00:00.000000Z"


def test_a_fleet_is_short_failed_hosts_say_why():
    fleet = {
        "web1": {"report": report([SEED_KILL]), "error": None},
        "quiet1": {"report": report([]), "error": None},
        "quiet2": {"report": dict(report([]), sources={"ftrace": {"armed": True, "loss": "12 events lost"}}),
                   "error": None},
        "db1": {"report": None, "error": "Failed to connect to the host via ssh:\nConnection refused"},
        "gone": {},
    }
    lines = sigsleuth_text(fleet).rstrip("\n").split("\n")
    assert lines[0] == "sigsleuth: 5 hosts, 1 kill; no report from db1, gone"
    assert "db1: collection failed: Failed to connect to the host via ssh: Connection refused" in lines
    assert "gone: no result: the host failed or was unreachable before collection" in lines
    assert "quiet1: no kills; ftrace loss: none" in lines
    assert "quiet2: no kills; ftrace loss: 12 events lost" in lines
    assert len(lines) == 1 + 2 + 8 + 4  # header, web1 and its kill (8 lines), one line for each other host


def test_victim_restricts_by_comm_or_pid():
    other = dict(SEED_KILL, victim=process(77, "worker", "/usr/bin/worker"))
    fleet = {"web1": {"report": report([SEED_KILL, other]), "error": None},
             "web2": {"report": report([other]), "error": None}}
    by_comm = sigsleuth_text(fleet, victim="collector-agent")
    assert by_comm.startswith("sigsleuth: 2 hosts, 1 kill of collector-agent\n")
    assert "worker[77]" not in by_comm and "collector-agent[1234]" in by_comm
    assert "web2: no kills of collector-agent (1 kill of other victims)" in by_comm
    for pid in (77, "77", {"pid": 77}):
        by_pid = sigsleuth_text(fleet, victim=pid)
        assert "2 kills of pid 77" in by_pid and "collector-agent[1234]" not in by_pid
    # A comm that looks like a number, said to be a comm.
    numeric = dict(SEED_KILL, victim=process(5, "77", "/usr/bin/x"))
    fleet["web3"] = {"report": report([numeric]), "error": None}
    assert "web3: 1 kill of 77" in sigsleuth_text(fleet, victim={"comm": "77", "label": "77"})
    assert sigsleuth_kills_of(fleet, {"comm": "77"}) == {"web1": 0, "web2": 0, "web3": 1}
    assert sigsleuth_kills_of(fleet, "collector-agent") == {"web1": 1, "web2": 0, "web3": 0}


def test_hostile_names_are_visible_and_harmless():
    hostile = "\x1b[2J\x1b]0;pwned\x07ev\u202eil\r\n"
    kill = dict(SEED_KILL, victim=process(1234, hostile, "/tmp/\x1b[31mred"),
                sender=process(1250, "sh\x00x", argv=["-c", "echo 'hi'\nrm", ""]), ancestry=[],
                gaps=["parent of sh[1250] unknown:\nlost"])
    text = sigsleuth_text({"\x1bhost": {"report": report([kill]), "error": None}})
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\r" not in text
    assert "\x00" not in text
    assert "\\x1b[2J\\x1b]0;pwned\\x07ev\\u202eil\\x0d\\x0a[1234]" in text
    assert "/tmp/\\x1b[31mred" in text
    assert "argv: -c 'echo '\\''hi'\\''\\x0arm' ''" in text
    assert "\\x1bhost: 1 kill" in text
    assert "← parent unknown (see gaps)" in text
    assert "gap: parent of sh[1250] unknown: lost" in text
    # Every line of the output is one terminal line.
    assert all("\n" not in line for line in text.split("\n"))


def test_kernel_sends_counts_and_many_kills():
    kernel = dict(SEED_KILL, sender=None, origin="kernel", mechanism="oom_kill", mechanism_candidates=[],
                  trigger=process(99, "hog", exited=False), count=3)
    text = sigsleuth_text({"h": {"report": report([kernel] * 12), "error": None}}, max_kills=2)
    assert "sent 3 times" in text
    assert "← no sending process: the kernel sent it" in text
    assert "running when the kernel sent it (not the sender): hog[99]  alive" in text
    assert "h: 12 kills" in text and "(10 earlier kills not shown: see the host's report.json)" in text
    assert text.count("mechanism: oom_kill") == 2


def test_visible_and_the_filter_name():
    assert visible(None) == "none"
    assert visible("a" * 500).endswith("…") and len(visible("a" * 500)) == 240
    assert visible("\\x41") == "\\x41"  # the report's own escapes pass through as they are
    assert FilterModule().filters() == {"sigsleuth_text": sigsleuth_text, "sigsleuth_kills_of": sigsleuth_kills_of}
    assert sigsleuth_text({}) == "sigsleuth: 0 hosts, 0 kills\n"
