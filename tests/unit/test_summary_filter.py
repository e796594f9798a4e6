"""The Markdown summary filter: trees, failed hosts, and hostile names kept as data."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "sigsleuth", "filter_plugins"))

from sigsleuth_summary import FilterModule, md_escape, sigsleuth_summary  # noqa: E402


def process(pid, comm, exe=None, exited=True, started=None, exited_at=None, tid=None):
    entry = {"pid": pid, "comm": comm, "exe": exe, "exited": exited, "started": started, "exited_at": exited_at}
    if tid is not None:
        entry["tid"] = tid
    return entry


def report(kills, host="web1"):
    return {
        "schema_version": "1.0.0", "host": host, "armed_at": "2026-11-26T07:00:00.000000Z",
        "collected_at": "2026-11-26T07:05:00.000000Z", "signals": [9],
        "sources": {"ftrace": {"armed": True, "events_read": 10, "lines_skipped": 0, "loss": None,
                               "per_cpu": {"0": {"overrun": 0}}},
                    "clock": {"trace_clock": "boot", "step": None}},
        "kills": kills,
    }


SEED_KILL = {
    "time": "2026-11-26T07:01:02.123456Z",
    "signal": {"number": 9, "name": "SIGKILL"},
    "victim": process(1234, "agent", "/opt/agent", exited=True, exited_at="2026-11-26T07:01:02.123460Z", tid=1234),
    "sender": process(1250, "kill", "/usr/bin/kill", exited=True, started="2026-11-26T07:01:02.100000Z", tid=1250),
    "origin": "user",
    "mechanism": "kill",
    "count": 1,
    "ancestry": [process(1249, "sh", "/usr/bin/sh"), process(1200, "daemon", "/usr/sbin/daemon", exited=False),
                 process(1, "init", "/sbin/init", exited=False)],
    "gaps": [],
}


def lines_of(text):
    return text.split("\n")


def test_a_kill_reads_as_a_tree():
    text = sigsleuth_summary({"web1": {"report": report([SEED_KILL]), "error": None}})
    lines = lines_of(text)
    assert "# sigsleuth summary" in lines
    assert "1 host, 1 kill." in lines
    assert "## web1" in lines
    assert "### 2026-11-26T07:01:02.123456Z  SIGKILL  mechanism=kill origin=user" in lines
    tree = [line for line in lines if line.lstrip().startswith("- ")]
    assert tree[0] == "- victim agent\\[1234\\] /opt/agent (exited 2026-11-26T07:01:02.123460Z)"
    assert tree[1] == ("  - ← sender kill\\[1250\\] /usr/bin/kill (exited, started 2026-11-26T07:01:02.100000Z)")
    assert tree[2] == "    - ← sh\\[1249\\] /usr/bin/sh (exited)"
    assert tree[3] == "      - ← daemon\\[1200\\] /usr/sbin/daemon (alive)"
    assert tree[4] == "        - ← init\\[1\\] /sbin/init (alive)"
    assert "Gaps:" not in lines
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_gaps_count_threads_and_kernel_sends():
    kill = dict(SEED_KILL, count=2, gaps=["the chain stops at pid 1200: its parent is unknown"],
                sender=process(1250, "worker", tid=1251))
    kernel_kill = dict(SEED_KILL, sender=None, origin="kernel", mechanism="unknown", ancestry=[])
    text = sigsleuth_summary({"db1": {"report": report([kill, kernel_kill]), "error": None}})
    assert "mechanism=kill origin=user count=2" in text
    assert "sender worker\\[1250 tid 1251\\]" in text
    assert "Gaps:" in text and "- the chain stops at pid 1200: its parent is unknown" in text
    assert "- ← no sending process (origin kernel)" in text


def test_hosts_without_kills_failed_or_missing_are_stated():
    text = sigsleuth_summary({
        "quiet": {"report": report([]), "error": None},
        "broken": {"report": None, "error": "sigsleuth collection failed: no tracefs"},
        "gone": {},
    })
    lines = lines_of(text)
    assert "3 hosts, 0 kills; no report from broken, gone." in lines
    assert "No kill with an armed signal was recorded." in lines
    assert "**Collection failed:** sigsleuth collection failed: no tracefs" in lines
    assert "No result: the host failed or was unreachable before collection." in lines
    assert [line for line in lines if line.startswith("## ")] == ["## broken", "## gone", "## quiet"]


HOSTILE = [
    "evil\n## pwned",
    "`rm -rf`",
    "*bold*_x_",
    "[link](http://x)",
    "<script>",
    "a|b#c",
    "\x1b[31mred",
    "rtl\u202eexe.txt",
    "line\u2028sep",
    "back\\slash",
    "kworker-2 [001]",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_data(name):
    kill = dict(SEED_KILL, victim=process(7, name, "/tmp/" + name), sender=process(8, name),
                ancestry=[process(9, name)], gaps=[name])
    text = sigsleuth_summary({name: {"report": report([kill]), "error": name}})
    for line in lines_of(text):
        # Structure comes only from our own markers; a name never opens a line of its own.
        assert not line.startswith("## pwned")
        line = line.replace("**Collection failed:** ", "")
        assert "\x1b" not in line and "\u202e" not in line and "\u2028" not in line
        for char in "`*_[]<>|":
            # Every such character is preceded by an odd run of backslashes, i.e. escaped.
            index = line.find(char)
            while index != -1:
                run = len(line[:index]) - len(line[:index].rstrip("\\"))
                assert run % 2 == 1, (char, line)
                index = line.find(char, index + 1)
    assert len([line for line in lines_of(text) if line.startswith("## ")]) == 1


def test_md_escape():
    assert md_escape(None) == "?"
    assert md_escape(42) == "42"
    assert md_escape("a_b") == "a\\_b"
    assert md_escape("x\ny") == "x\\\\x0ay"
    assert md_escape("back\\slash") == "back\\\\slash"
    assert md_escape("/usr/bin/kill") == "/usr/bin/kill"


def test_filters_are_registered():
    filters = FilterModule().filters()
    assert filters["sigsleuth_summary"] is sigsleuth_summary
    assert filters["sigsleuth_md_escape"] is md_escape


def test_kernel_kill_shows_the_trigger_as_not_the_sender():
    from sigsleuth_summary import sigsleuth_summary as render
    kill = {"time": "2026-11-26T07:00:00.000000Z", "signal": {"number": 9, "name": "SIGKILL"}, "origin": "kernel",
            "mechanism": "oom_kill", "victim": {"pid": 10, "comm": "hog", "exited": True}, "sender": None,
            "trigger": {"pid": 20, "comm": "alloc`er", "exited": False}, "ancestry": [], "gaps": [],
            "evidence": ["ftrace:signal_generate", "ftrace:mark_victim"]}
    text = render({"h": {"report": {"host": "h", "kills": [kill], "sources": {}}, "error": None}})
    assert "no sending process (origin kernel)" in text
    assert "not the sender" in text and "alloc\\`er" in text
    assert "Evidence: ftrace:signal\\_generate, ftrace:mark\\_victim" in text
