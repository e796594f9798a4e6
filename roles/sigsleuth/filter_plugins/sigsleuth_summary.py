# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: render collected reports as a Markdown fleet summary. Runs on the control node.
"""Filters ``sigsleuth_summary`` (fleet outcomes -> Markdown) and ``sigsleuth_md_escape``.

Every process name, path and message in a report is data chosen by whoever ran the process: it is escaped
so it can neither change the Markdown structure nor hide as control characters.
"""

from __future__ import annotations

import re
import unicodedata

DOCUMENTATION = r"""
name: sigsleuth_summary
short_description: Render sigsleuth reports as a Markdown summary, one tree per kill
description:
  - Takes a mapping of inventory host name to outcome, where an outcome is C({report, error}) (either may be
    null) or empty when the host dropped out before collection, and returns Markdown text.
  - Each kill becomes a heading (time, signal, mechanism, origin) and a tree victim <- sender <- parent <- ...
    with exited/alive marks and times, followed by the kill's gaps.
positional: _input
options:
  _input:
    description: Host name to outcome mapping.
    type: dict
    required: true
"""

# Characters that are Markdown syntax somewhere (CommonMark lets any ASCII punctuation be backslash-escaped).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~&!{}])")
TREE_INDENT = "  "


def _visible(char):
    """Control, format (bidi overrides, zero-width) and line/paragraph separators shown as escapes."""
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
        code = ord(char)
        return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code
    return char


def md_escape(value):
    """Text safe to place anywhere in a Markdown line; None becomes '?'."""
    if value is None:
        return "?"
    text = "".join(_visible(char) for char in str(value))
    # Data never starts a line here (every line opens with our own marker), so line-start syntax such as
    # "-" or "1." needs no escaping.
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _process(entry, role=None):
    """``sender kill[1250] /usr/bin/kill (exited 2026-…Z, started 2026-…Z)``."""
    entry = entry or {}
    pid = entry.get("pid")
    tid = entry.get("tid")
    ident = "%s" % ("?" if pid is None else pid)
    if tid is not None and tid != pid:
        ident += " tid %s" % tid
    parts = []
    if role:
        parts.append(role)
    parts.append("%s\\[%s\\]" % (md_escape(entry.get("comm")), md_escape(ident)))
    if entry.get("exe"):
        parts.append(md_escape(entry["exe"]))
    marks = []
    exited = entry.get("exited")
    if exited:
        marks.append("exited %s" % md_escape(entry["exited_at"]) if entry.get("exited_at") else "exited")
    elif exited is False:
        marks.append("alive")
    if entry.get("started"):
        marks.append("started %s" % md_escape(entry["started"]))
    if marks:
        parts.append("(%s)" % ", ".join(marks))
    return " ".join(parts)


def _kill_lines(kill):
    signal = kill.get("signal") or {}
    heading = "%s  %s  mechanism=%s origin=%s" % (
        md_escape(kill.get("time")),
        md_escape(signal.get("name") or "signal %s" % signal.get("number")),
        md_escape(kill.get("mechanism")),
        md_escape(kill.get("origin")),
    )
    if (kill.get("count") or 1) > 1:
        heading += " count=%s" % md_escape(kill["count"])
    lines = ["### " + heading, ""]

    depth = 0
    lines.append("- " + _process(kill.get("victim"), "victim"))
    depth += 1
    sender = kill.get("sender")
    if sender:
        lines.append(TREE_INDENT * depth + "- ← " + _process(sender, "sender"))
        depth += 1
        for ancestor in kill.get("ancestry") or []:
            lines.append(TREE_INDENT * depth + "- ← " + _process(ancestor))
            depth += 1
    else:
        lines.append(TREE_INDENT * depth + "- ← no sending process (origin %s)" % md_escape(kill.get("origin")))
        if kill.get("trigger"):
            lines.append(TREE_INDENT * (depth + 1) + "- running when the kernel sent it (not the sender): "
                         + _process(kill["trigger"]))
    if kill.get("evidence"):
        lines.append("")
        lines.append("Evidence: " + ", ".join(md_escape(item) for item in kill["evidence"]))
    gaps = kill.get("gaps") or []
    if gaps:
        lines.append("")
        lines.append("Gaps:")
        lines.append("")
        lines.extend("- " + md_escape(gap) for gap in gaps)
    lines.append("")
    return lines


# What a reader needs from each source at a glance; the report has the rest.
SOURCE_FACTS = ("armed", "events_read", "lines_skipped", "oldest_event_time", "loss", "reason", "error")


def _sources_lines(sources):
    if not isinstance(sources, dict) or not sources:
        return []
    described = []
    for name, source in sources.items():
        if not isinstance(source, dict) or "armed" not in source:
            continue
        facts = ["%s %s" % (key.replace("_", " "), md_escape(source[key])) for key in SOURCE_FACTS
                 if source.get(key) is not None]
        described.append("%s (%s)" % (md_escape(name), ", ".join(facts)))
    lines = ["Sources: " + "; ".join(described) + "."] if described else []
    step = (sources.get("clock") or {}).get("step") if isinstance(sources.get("clock"), dict) else None
    if step:
        lines.append("Clock: " + md_escape(step))
    return lines


def _host_lines(host, outcome):
    lines = ["## " + md_escape(host), ""]
    outcome = outcome or {}
    report = outcome.get("report")
    error = outcome.get("error")
    if error:
        lines += ["**Collection failed:** " + md_escape(error), ""]
    if not isinstance(report, dict):
        if not error:
            lines += ["No result: the host failed or was unreachable before collection.", ""]
        return lines

    signals = report.get("signals") or []
    lines.append("Armed %s, collected %s; signal numbers %s." % (
        md_escape(report.get("armed_at")), md_escape(report.get("collected_at")),
        ", ".join(md_escape(number) for number in signals) or "none"))
    lines += _sources_lines(report.get("sources"))
    lines.append("")
    kills = report.get("kills") or []
    if not kills:
        lines += ["No kill with an armed signal was recorded.", ""]
    for kill in kills:
        lines += _kill_lines(kill)
    return lines


def sigsleuth_summary(outcomes, title="sigsleuth summary"):
    """Markdown for a fleet: ``{host: {"report": dict|None, "error": str|None}}`` (empty: no result)."""
    outcomes = outcomes or {}
    kills = sum(len((o or {}).get("report", {}).get("kills") or []) for o in outcomes.values()
                if isinstance((o or {}).get("report"), dict))
    failed = [host for host, o in outcomes.items() if not isinstance((o or {}).get("report"), dict)]
    lines = ["# " + md_escape(title), ""]
    summary = "%d host%s, %d kill%s" % (len(outcomes), "" if len(outcomes) == 1 else "s",
                                        kills, "" if kills == 1 else "s")
    if failed:
        summary += "; no report from %s" % ", ".join(md_escape(host) for host in failed)
    lines += [summary + ".", ""]
    for host in sorted(outcomes):
        lines += _host_lines(host, outcomes[host])
    return "\n".join(lines).rstrip("\n") + "\n"


class FilterModule:
    def filters(self):
        return {
            "sigsleuth_summary": sigsleuth_summary,
            "sigsleuth_md_escape": md_escape,
        }
