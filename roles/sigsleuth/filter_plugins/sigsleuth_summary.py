# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: render collected reports as the fleet summaries (Markdown and HTML). Runs on the control node.
"""Filters ``sigsleuth_summary`` (fleet outcomes -> Markdown), ``sigsleuth_summary_html`` (-> one
self-contained HTML page) and ``sigsleuth_md_escape``.

Both are Jinja2 templates (the role's ``templates/summary.md.j2`` and ``summary.html.j2``) filled from one
view of the fleet built here. Every process name, path and message in a report is data chosen by whoever ran
the process, so no template can emit it unescaped: each expression goes through the environment's escaping
(Markdown escapes for summary.md; HTML autoescape, with control characters made visible, for summary.html).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import unicodedata

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

DOCUMENTATION = r"""
name: sigsleuth_summary
short_description: Render sigsleuth reports as a Markdown summary, one tree per kill
version_added: "1.0.0"
description:
  - Takes a mapping of inventory host name to outcome, where an outcome is C({report, error}) (either may be
    null; C(write_error) says why its report file could not be written) or empty when the host dropped out
    before collection, and returns Markdown text.
  - Each kill becomes a heading (time, signal, mechanism, origin) and a tree victim <- sender <- parent <- ...
    with exited/alive marks and times, followed by the kill's gaps.
  - C(sigsleuth_summary_html) returns the same fleet as one self-contained HTML page.
positional: _input
options:
  _input:
    description: Host name to outcome mapping.
    type: dict
    required: true
  title:
    description: The summary's title.
    type: str
    default: sigsleuth summary
"""

# Characters that are Markdown syntax somewhere (CommonMark lets any ASCII punctuation be backslash-escaped).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~&!{}])")
TREE_INDENT = "  "
TITLE = "sigsleuth summary"
_HERE = os.path.dirname(os.path.abspath(__file__))
# The role's templates: beside filter_plugins/ in this repository, under roles/ in the built collection
# (where this file is plugins/filter/).
TEMPLATE_DIRS = (
    os.path.normpath(os.path.join(_HERE, os.pardir, "templates")),
    os.path.normpath(os.path.join(_HERE, os.pardir, os.pardir, "roles", "sigsleuth", "templates")),
)
# What a reader needs from each source at a glance; the report has the rest.
SOURCE_FACTS = ("armed", "events_read", "lines_skipped", "oldest_event_time", "loss", "reason", "error")
EVIDENCE_SOURCES = ("ftrace", "audit", "snapshot")
# Set by offline analysis on processes whose liveness it could not check.
OFFLINE_LIVENESS_NOTE = "offline analysis"


def _visible(char):
    """Control, format (bidi overrides, zero-width) and line/paragraph separators shown as escapes."""
    if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
        code = ord(char)
        return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code
    return char


def visible(value):
    """The text of a value with every invisible or layout-changing character shown as an escape."""
    return "".join(_visible(char) for char in str(value))


def md_escape(value):
    """Text safe to place anywhere in a Markdown line; None becomes '?'."""
    if value is None:
        return "?"
    # Data never starts a line here (every line opens with our own marker), so line-start syntax such as
    # "-" or "1." needs no escaping.
    return _MARKDOWN_SPECIAL.sub(r"\\\1", visible(value))


# ---------------------------------------------------------------- the view both templates are filled from

def cgroup_label(cgroup, container=None):
    """What a cgroup path says of where a process ran: a container, a systemd unit, or just the path."""
    if not cgroup:
        return None
    if container:
        return "container %s" % container[:12]
    leaf = cgroup.rstrip("/").rsplit("/", 1)[-1]
    if leaf.endswith((".service", ".scope", ".socket", ".mount", ".timer", ".swap")):
        return "systemd unit %s" % leaf
    if leaf.endswith(".slice"):
        return "systemd slice %s" % leaf
    return "cgroup %s" % cgroup


def process_view(entry, role=None):
    """One process line: identity, marks (exited/alive, times) and the facts known of it."""
    entry = entry or {}
    pid = entry.get("pid")
    tid = entry.get("tid")
    ident = "?" if pid is None else str(pid)
    if tid is not None and tid != pid:
        ident += " tid %s" % tid
    marks = []
    exited = entry.get("exited")
    if exited:
        marks.append(("exited", entry.get("exited_at")))
    elif exited is False:
        offline = any(OFFLINE_LIVENESS_NOTE in note for note in entry.get("notes") or ())
        marks.append(("exit not seen" if offline else "alive", None))
    if entry.get("started"):
        marks.append(("started", entry["started"]))
    argv = entry.get("argv")
    return {
        "role": role, "comm": entry.get("comm"), "ident": ident, "exe": entry.get("exe"), "marks": marks,
        "argv": " ".join(str(arg) for arg in argv) if isinstance(argv, list) and argv else None,
        "ids": [(key, entry[key]) for key in ("uid", "auid", "euid", "ses", "tty") if entry.get(key) is not None],
        "cwd": entry.get("cwd"),
        "cgroup": cgroup_label(entry.get("cgroup"), entry.get("container_id")),
        "cgroup_path": entry.get("cgroup"),
    }


def kill_view(kill, host):
    signal = kill.get("signal") or {}
    victim = process_view(kill.get("victim"), "victim")
    sender = kill.get("sender")
    return {
        "host": host, "time": kill.get("time"),
        "signal": signal.get("name") or "signal %s" % signal.get("number"),
        "mechanism": kill.get("mechanism"), "origin": kill.get("origin"),
        "candidates": kill.get("mechanism_candidates") or [],
        "count": kill["count"] if (kill.get("count") or 1) > 1 else None,
        "victim": victim,
        "sender": process_view(sender, "sender") if sender else None,
        "ancestry": [process_view(ancestor) for ancestor in kill.get("ancestry") or []] if sender else [],
        "trigger": process_view(kill["trigger"]) if not sender and kill.get("trigger") else None,
        "evidence": list(kill.get("evidence") or []),
        "gaps": list(kill.get("gaps") or []),
    }


def sources_view(sources):
    """[(name, [(fact, value)])] for each evidence source, and the clock step if there was one."""
    if not isinstance(sources, dict):
        return [], None
    described = []
    for name, source in sources.items():
        if isinstance(source, dict) and "armed" in source:
            described.append((name, [(key.replace("_", " "), source[key]) for key in SOURCE_FACTS
                                     if source.get(key) is not None]))
    clock = sources.get("clock")
    return described, (clock.get("step") if isinstance(clock, dict) else None)


def host_view(host, outcome):
    outcome = outcome or {}
    report = outcome.get("report")
    view = {"name": host, "error": outcome.get("error"), "write_error": outcome.get("write_error"),
            "report": isinstance(report, dict), "kills": [], "sources": [], "clock_step": None,
            "armed": [], "losses": [], "first": None, "last": None}
    if not isinstance(report, dict):
        return view
    sources = report.get("sources") or {}
    view["sources"], view["clock_step"] = sources_view(sources)
    view["armed"] = [name for name in EVIDENCE_SOURCES if (sources.get(name) or {}).get("armed") is True]
    view["losses"] = [(name, sources[name]["loss"]) for name in EVIDENCE_SOURCES
                      if isinstance(sources.get(name), dict) and sources[name].get("loss")]
    view.update(armed_at=report.get("armed_at"), collected_at=report.get("collected_at"),
                signals=[str(number) for number in report.get("signals") or []])
    view["kills"] = [kill_view(kill, host) for kill in report.get("kills") or []]
    times = sorted(kill["time"] for kill in view["kills"] if kill["time"])
    if times:
        view["first"], view["last"] = times[0], times[-1]
    return view


def _epoch(text):
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def timeline_view(hosts):
    """Every kill of the fleet in time order, each placed at its share (0-100) of the fleet's kill span."""
    kills = sorted((kill for host in hosts for kill in host["kills"] if _epoch(kill["time"]) is not None),
                   key=lambda kill: (kill["time"], kill["host"]))
    if not kills:
        return []
    start, end = _epoch(kills[0]["time"]), _epoch(kills[-1]["time"])
    span = end - start
    return [dict(kill=kill, at="%.2f" % ((_epoch(kill["time"]) - start) * 100.0 / span if span > 0 else 50.0))
            for kill in kills]


def fleet_view(outcomes, title):
    outcomes = outcomes or {}
    hosts = [host_view(host, outcomes[host]) for host in sorted(outcomes)]
    kills = sum(len(host["kills"]) for host in hosts)
    return {
        "title": title, "hosts": hosts, "kills": kills,
        "failed": [host["name"] for host in hosts if not host["report"]],
        "unwritten": [host["name"] for host in hosts if host["write_error"]],
        "timeline": timeline_view(hosts),
    }


# ---------------------------------------------------------------- the two environments

def _finalize_markdown(value):
    # Our own macros' output (Markup) is already Markdown; everything else is data.
    if hasattr(value, "__html__"):
        return value
    return Markup(md_escape(value))


def _finalize_html(value):
    # Autoescape HTML-escapes what this returns; data first gets its invisible characters shown.
    if hasattr(value, "__html__"):
        return value
    return "?" if value is None else visible(value)


_ENVIRONMENTS = {}


def environment(kind):
    """The Jinja2 environment for "md" or "html" (autoescape on in both, with its own escaping)."""
    if kind not in _ENVIRONMENTS:
        _ENVIRONMENTS[kind] = Environment(
            loader=FileSystemLoader(list(TEMPLATE_DIRS)), autoescape=True, undefined=StrictUndefined,
            trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
            finalize=_finalize_markdown if kind == "md" else _finalize_html)
    return _ENVIRONMENTS[kind]


def sigsleuth_summary(outcomes, title=TITLE):
    """Markdown for a fleet: ``{host: {"report": dict|None, "error": str|None}}`` (empty: no result)."""
    text = environment("md").get_template("summary.md.j2").render(fleet=fleet_view(outcomes, title),
                                                                  indent=TREE_INDENT)
    return text.rstrip("\n") + "\n"


def _script():
    """The page's one inline script, and its hash for the Content-Security-Policy that allows only it."""
    for directory in TEMPLATE_DIRS:
        path = os.path.join(directory, "summary.js")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                script = handle.read()
            digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
            return Markup(script), "sha256-" + digest
    raise FileNotFoundError("summary.js is in none of %s" % ", ".join(TEMPLATE_DIRS))


def sigsleuth_summary_html(outcomes, title=TITLE):
    """One self-contained HTML page for a fleet (no external assets; opens from disk)."""
    script, script_hash = _script()
    return environment("html").get_template("summary.html.j2").render(
        fleet=fleet_view(outcomes, title), script=script, script_hash=script_hash)


class FilterModule:
    def filters(self):
        return {
            "sigsleuth_summary": sigsleuth_summary,
            "sigsleuth_summary_html": sigsleuth_summary_html,
            "sigsleuth_md_escape": md_escape,
        }
