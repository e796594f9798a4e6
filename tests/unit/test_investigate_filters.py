"""investigate.yml's control-node decisions: its variables checked, and the latch that ends every host's wait."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "roles", "sigsleuth", "filter_plugins"))

from sigsleuth_investigate import FilterModule, sigsleuth_investigate_settings, sigsleuth_latch  # noqa: E402


def settings(victim, timeout=3600, poll=5):
    return sigsleuth_investigate_settings(victim, timeout, poll)


@pytest.mark.parametrize("victim, pid, comm", [
    ("collector-agent", None, "collector-agent"),
    ("4242", 4242, None),
    (4242, 4242, None),
    ("Web Content", None, "Web Content"),
    ("kworker/0:1", None, "kworker/0:1"),
    ({"comm": "123"}, None, "123"),
    ({"comm": " padded "}, None, " padded "),
    ({"pid": "77"}, 77, None),
    ("agent-2", None, "agent-2"),
    ("ünïcode", None, "ünïcode"),
])
def test_a_victim_is_a_pid_or_a_comm(victim, pid, comm):
    result = settings(victim)
    assert result["errors"] == []
    assert (result["victim"]["pid"], result["victim"]["comm"]) == (pid, comm)
    assert result["victim"]["label"] == (comm if comm is not None else "pid %d" % pid)


@pytest.mark.parametrize("victim, words", [
    (None, "is empty"),
    ("", "is empty"),
    ("   ", "is empty"),
    ("123 agent", "both a pid and a name"),
    ("agent 123", "both a pid and a name"),
    ("agent[123]", "both a pid and a name"),
    ("agent (123)", "both a pid and a name"),
    ("0", "not a process id"),
    (0, "not a process id"),
    (99999999, "not a process id"),
    (True, "not a pid or a name"),
    (["agent"], "not a pid or a name"),
    (1.5, "not a pid or a name"),
    (" agent", "white space"),
    ("agent\n", "white space"),
    ("collector-agent-long", "the kernel keeps at most 15"),
    ({"pid": 1, "comm": "x"}, "exactly one of pid and comm"),
    ({}, "exactly one of pid and comm"),
    ({"comm": ""}, "comm is empty"),
    ({"pid": "x"}, "not a number"),
])
def test_bad_victims_are_refused_with_the_reason(victim, words):
    result = settings(victim)
    assert len(result["errors"]) == 1 and words in result["errors"][0], result["errors"]
    assert result["victim"] is None


def test_a_long_name_is_refused_with_what_the_kernel_keeps():
    error = settings("collector-agent-long")["errors"][0]
    assert "'collector-agent'" in error and "ps -o comm=" in error


@pytest.mark.parametrize("value, seconds", [(10, 10), ("10", 10), ("2.5", 2.5), (0.5, 0.5)])
def test_timeout_and_poll_are_positive_seconds(value, seconds):
    result = settings("agent", value, value)
    assert result["errors"] == [] and result["timeout"] == seconds and result["poll"] == seconds


@pytest.mark.parametrize("value", [0, -1, "0", "-5", "abc", "", None, True, float("nan"), float("inf"), [5]])
def test_non_positive_or_non_numbers_are_refused(value):
    for name, result in (("sigsleuth_timeout", settings("agent", timeout=value)),
                         ("sigsleuth_poll", settings("agent", poll=value))):
        assert len(result["errors"]) == 1 and result["errors"][0].startswith(name + " must be a positive"), result


def test_every_problem_is_listed_at_once():
    assert len(settings("", 0, -1)["errors"]) == 3


def test_the_latch_is_set_by_the_first_host_that_sees_the_kill(tmp_path):
    assert sigsleuth_latch([], tmp_path) is False
    assert sigsleuth_latch([{"victim": {"pid": 1}}], tmp_path) is True
    # Every other host's next look sees it, with no kill of its own.
    assert sigsleuth_latch([], tmp_path) is True and sigsleuth_latch(None, str(tmp_path)) is True
    assert FilterModule().filters() == {"sigsleuth_investigate_settings": sigsleuth_investigate_settings,
                                        "sigsleuth_latch": sigsleuth_latch}
