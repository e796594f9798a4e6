"""The set_stats summary: who killed what, the sender's ancestry and the loss, within fixed bounds that count
whatever they leave out."""

import copy
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "sigsleuth", "filter_plugins"))

import sigsleuth_stats as stats  # noqa: E402
from test_summary_filter import SEED_KILL, process, report  # noqa: E402


def outcome(kills, error=None):
    return {"report": report(kills), "error": error}


def kill_at(second, sender_comm="kill"):
    kill = copy.deepcopy(SEED_KILL)
    kill["time"] = "2026-11-26T07:01:%02d.000000Z" % second
    kill["sender"]["comm"] = sender_comm
    return kill


def test_a_kill_keeps_its_sender_ancestry_and_loss():
    summary = stats.sigsleuth_stats(outcome([SEED_KILL]), report_path="/r/web1/report.json")
    assert summary["error"] is None and summary["report_path"] == "/r/web1/report.json"
    assert (summary["kills_total"], summary["kills_omitted"], summary["truncated"]) == (1, 0, False)
    kill = summary["kills"][0]
    assert kill["time"] == SEED_KILL["time"] and kill["signal"] == "SIGKILL"
    assert (kill["mechanism"], kill["origin"]) == ("kill", "user")
    assert kill["victim"] == {"pid": 1234, "comm": "agent", "exe": "/opt/agent", "exited": True}
    assert kill["sender"] == {"pid": 1250, "comm": "kill", "exe": "/usr/bin/kill", "exited": True}
    assert [entry["comm"] for entry in kill["ancestry"]] == ["sh", "daemon", "init"]
    assert summary["sources"] == {"ftrace": {"armed": True, "loss": None}}
    assert summary["collected_at"] == "2026-11-26T07:05:00.000000Z"


def test_the_loss_statement_and_a_kernel_kill_without_sender():
    kill = dict(SEED_KILL, sender=None, origin="kernel", mechanism="oom_kill", ancestry=[],
                gaps=["ftrace lost events before 07:00:30Z (see sources.ftrace.loss)"])
    lost = outcome([kill])
    lost["report"]["sources"]["ftrace"]["loss"] = "12 events overwritten on cpu 1 before 07:00:30Z"
    lost["report"]["sources"]["audit"] = {"armed": False, "reason": "auditd is not running"}
    summary = stats.sigsleuth_stats(lost)
    assert summary["kills"][0]["sender"] is None and summary["kills"][0]["gaps"] == kill["gaps"]
    assert summary["sources"]["ftrace"]["loss"].startswith("12 events overwritten")
    assert summary["sources"]["audit"] == {"armed": False, "loss": "auditd is not running"}


def test_a_failed_collection_says_why():
    summary = stats.sigsleuth_stats({"report": None, "error": "state file unreadable"})
    assert summary["error"] == "state file unreadable" and summary["kills_total"] is None
    assert stats.sigsleuth_stats(None)["kills_total"] is None


def test_the_most_recent_kills_are_kept_and_the_rest_counted():
    kills = [kill_at(second) for second in range(25)]
    summary = stats.sigsleuth_stats(outcome(kills))
    assert summary["kills_total"] == 25
    assert len(summary["kills"]) == stats.MAX_KILLS
    assert summary["kills_omitted"] == 25 - stats.MAX_KILLS and summary["truncated"]
    assert summary["kills"][-1]["time"] == kills[-1]["time"]
    assert summary["kills"][0]["time"] == kills[25 - stats.MAX_KILLS]["time"]


def test_long_ancestries_gaps_and_names_are_cut_and_counted():
    kill = copy.deepcopy(SEED_KILL)
    kill["ancestry"] = [process(100 + depth, "p%d" % depth, "/x" * 300) for depth in range(40)]
    kill["gaps"] = ["gap %d" % number for number in range(9)]
    summary = stats.sigsleuth_stats(outcome([kill]))
    kept = summary["kills"][0]
    assert len(kept["ancestry"]) == stats.MAX_ANCESTRY and kept["ancestry_omitted"] == 40 - stats.MAX_ANCESTRY
    assert [entry["pid"] for entry in kept["ancestry"]] == list(range(100, 100 + stats.MAX_ANCESTRY))
    assert len(kept["gaps"]) == stats.MAX_GAPS and kept["gaps_omitted"] == 6
    assert len(kept["ancestry"][0]["exe"]) == stats.MAX_TEXT and kept["ancestry"][0]["exe"].endswith("…")
    assert summary["truncated"]


def test_the_summary_never_exceeds_its_byte_bound():
    kills = []
    for second in range(30):
        kill = kill_at(second, sender_comm="k" * 500)
        kill["ancestry"] = [process(depth, "c" * 500, "/e" * 2000) for depth in range(30)]
        kill["gaps"] = ["g" * 5000] * 10
        kills.append(kill)
    summary = stats.sigsleuth_stats(outcome(kills, error="e" * 10000))
    assert len(json.dumps(summary)) <= stats.MAX_BYTES
    assert summary["kills_total"] == 30
    assert summary["kills_omitted"] + len(summary["kills"]) == 30
    assert summary["kills"], "at least the latest kill fits"
    assert summary["kills"][-1]["time"] == kills[-1]["time"]


def test_the_filter_is_registered():
    assert stats.FilterModule().filters() == {"sigsleuth_stats": stats.sigsleuth_stats}
