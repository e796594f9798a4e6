# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: a host's report cut down to what a job's artifacts should hold. Runs on the control node.
"""Filter ``sigsleuth_stats``: one host's collect outcome -> a bounded summary for ``ansible.builtin.set_stats``.

An Automation Controller / AWX job keeps what a play sets with set_stats (per_host: false) as the job's
artifacts, and nothing of the report files the play writes on its execution node. The summary holds what
answers "who killed it": each kill's time, signal, victim, sender, mechanism, origin and the sender's
ancestry (parent first), its gaps, and each source's loss statement, within fixed bounds (MAX_KILLS, the most
recent kept; MAX_ANCESTRY; MAX_TEXT characters per text; at most MAX_BYTES of JSON); whatever it leaves out it
counts, and says where the full report is (the report file and the host's ``sigsleuth`` fact).
"""

from __future__ import annotations

import json

DOCUMENTATION = r"""
name: sigsleuth_stats
short_description: Cut a host's sigsleuth report down to a bounded summary for set_stats
version_added: "1.0.0"
description:
  - Takes a host's collect outcome C({report, error}) and returns the kills (time, signal, victim, sender,
    mechanism, origin, ancestry parent first, gaps) and each source's loss, within fixed bounds; whatever is
    left out is counted in C(kills_omitted), C(ancestry_omitted), C(gaps_omitted) and C(truncated).
  - The full report stays in the report file and in the host's C(sigsleuth) fact.
positional: _input
options:
  _input:
    description: The outcome C({report, error}); either may be null.
    type: dict
    required: true
  report_path:
    description: Where the full report was written on the control node, repeated in the summary.
    type: str
"""

EXAMPLES = r"""
- name: Return the host's summary to the job
  ansible.builtin.set_stats:
    data:
      sigsleuth_reports: "{{ {inventory_hostname: outcome | sigsleuth.sigsleuth.sigsleuth_stats} }}"
    per_host: false
"""

RETURN = r"""
_value:
  description: The bounded summary.
  type: dict
"""

MAX_KILLS = 10
MAX_ANCESTRY = 12
MAX_GAPS = 3
MAX_TEXT = 200
MAX_BYTES = 16384
PROCESS_FACTS = ("pid", "comm", "exe", "exited")
SOURCES = ("ftrace", "audit", "snapshot")
FULL_REPORT = "the full report is in the report file and in the host's sigsleuth fact"


def _text(value):
    """A text cut to MAX_TEXT characters, saying it was cut; other values as they are."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT - 1] + "…"
    return value


def _process(entry):
    if not isinstance(entry, dict):
        return None
    return {key: _text(entry.get(key)) for key in PROCESS_FACTS if key in entry}


def _kill(kill):
    ancestry = kill.get("ancestry") or []
    gaps = kill.get("gaps") or []
    signal = kill.get("signal") or {}
    summary = {
        "time": kill.get("time"),
        "signal": signal.get("name") if isinstance(signal, dict) else signal,
        "victim": _process(kill.get("victim")),
        "sender": _process(kill.get("sender")),
        "mechanism": _text(kill.get("mechanism")),
        "origin": kill.get("origin"),
        "count": kill.get("count", 1),
        "ancestry": [_process(ancestor) for ancestor in ancestry[:MAX_ANCESTRY]],
        "gaps": [_text(gap) for gap in gaps[:MAX_GAPS]],
    }
    if len(ancestry) > MAX_ANCESTRY:
        summary["ancestry_omitted"] = len(ancestry) - MAX_ANCESTRY
    if len(gaps) > MAX_GAPS:
        summary["gaps_omitted"] = len(gaps) - MAX_GAPS
    return summary


def _loss(sources):
    """{source: {armed, loss}} for the evidence sources the report names."""
    found = {}
    for name in SOURCES:
        source = (sources or {}).get(name)
        if isinstance(source, dict):
            found[name] = {"armed": source.get("armed"), "loss": _text(source.get("loss") or source.get("reason"))}
    return found


def sigsleuth_stats(outcome, report_path=None):
    """The bounded summary of ``{"report": dict|None, "error": str|None}``."""
    outcome = outcome if isinstance(outcome, dict) else {}
    report = outcome.get("report")
    summary = {"error": _text(outcome.get("error")), "report_path": report_path, "note": FULL_REPORT}
    if not isinstance(report, dict):
        summary["kills_total"] = None
        return summary
    kills = [kill for kill in report.get("kills") or [] if isinstance(kill, dict)]
    kept = [_kill(kill) for kill in kills[-MAX_KILLS:]]
    summary.update({
        "schema_version": report.get("schema_version"),
        "producer": report.get("producer"),
        "armed_at": report.get("armed_at"),
        "collected_at": report.get("collected_at"),
        "sources": _loss(report.get("sources")),
        "kills_total": len(kills),
        "kills_omitted": len(kills) - len(kept),
        "kills": kept,
    })
    # The byte bound holds whatever the kills hold: the oldest kept kills go first.
    while len(json.dumps(summary)) > MAX_BYTES and summary["kills"]:
        summary["kills"].pop(0)
        summary["kills_omitted"] += 1
    summary["truncated"] = bool(summary["kills_omitted"] or any(
        "ancestry_omitted" in kill or "gaps_omitted" in kill for kill in summary["kills"]))
    return summary


class FilterModule:
    def filters(self):
        return {"sigsleuth_stats": sigsleuth_stats}
