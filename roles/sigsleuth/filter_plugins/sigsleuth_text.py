# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: collected reports as plain text for a terminal. Runs on the control node.
"""Filter ``sigsleuth_text``: fleet outcomes -> plain text, each kill a tree victim <- sender <- ancestors.

What a person reads at the end of collect (and of investigate and ``make demo``): no markup, booleans and
empty values as words ("armed: yes", "none"), and every process-derived string made visible but harmless
(control, format and separator characters as ``\\x1b`` / ``\\u202e``, so a name can neither move the cursor
nor recolour or hide anything). Short for a fleet: one line per host without kills, one line per failed host
with its reason.
"""

from __future__ import annotations

import re
import unicodedata

DOCUMENTATION = r"""
name: sigsleuth_text
short_description: Render sigsleuth reports as plain text for a terminal, one tree per kill
version_added: "1.0.0"
description:
  - Takes a mapping of inventory host name to outcome, where an outcome is C({report, error}) (either may be
    null) or empty when the host dropped out before collection, and returns plain text, one line per line.
  - Each kill is a tree victim <- sender <- parent <- ... with times, mechanism, argv, uid and cgroup where
    known, then its gaps. A host without kills is one line; a failed host is one line with its reason.
  - Control characters in names are shown escaped (C(\\x1b)); nothing is markup.
positional: _input
options:
  _input:
    description: Host name to outcome mapping.
    type: dict
    required: true
  victim:
    description:
      - Only kills of this victim, a pid (an integer or a string of digits), a comm (exact), or a mapping
        with C(pid) or C(comm) (and optionally C(label), how it is named in the text).
    type: raw
  max_kills:
    description: At most this many kills per host (the most recent); the rest are counted.
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Show who killed what
  ansible.builtin.debug:
    msg: "{{ (fleet | sigsleuth.sigsleuth.sigsleuth_text(victim='collector-agent')).split('\n') }}"
"""

RETURN = r"""
_value:
  description: The text, lines separated by newlines, ending with one.
  type: str
"""

MAX_KILLS = 10
# A value longer than this (an argv, an error) is cut with an ellipsis; the report has it whole.
MAX_VALUE = 240
INDENT = "  "
MAX_DEPTH = 12
_SPACES = re.compile(r"\s*[\r\n]+\s*")


def visible(value, limit=MAX_VALUE):
    """Text safe to print on a terminal: control, format and line-separator characters escaped; None: none."""
    if value is None:
        return "none"
    text = value if isinstance(value, str) else str(value)
    out = []
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append("\\x%02x" % code if code < 0x100 else "\\u%04x" % code)
        else:
            out.append(char)
    text = "".join(out)
    if limit and len(text) > limit:
        text = text[:limit - 1] + "…"
    return text


def message(value):
    """An error message on one line: its line breaks become spaces, the rest as visible()."""
    if value is None:
        return "none"
    return visible(_SPACES.sub(" ", str(value)).strip())


def yes_no(value):
    if value is None:
        return "unknown"
    return "yes" if value else "no"


def plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def _argv(argv):
    words = []
    for arg in argv:
        shown = visible(arg, limit=0)
        words.append(shown if shown and not re.search(r"[\s'\"]", shown) else "'%s'" % shown.replace("'", "'\\''"))
    return visible(" ".join(words))


def short_time(value, day=None):
    """A time of the kill's own day as its time of day (``07:01:02.123460Z``); others whole."""
    text = visible(value)
    if day and text.startswith(day + "T"):
        return text[len(day) + 1:]
    return text


def process_line(entry, day=None, cgroup_shown=None):
    """``kill[21978]  /usr/bin/kill  argv: kill -9 21437  uid: 0  exited 07:01:02.123460Z``.

    The cgroup is shown where it differs from ``cgroup_shown`` (the one on the line below), so a chain
    inside one service or container names it once."""
    entry = entry if isinstance(entry, dict) else {}
    pid = entry.get("pid")
    ident = "?" if pid is None else str(pid)
    if entry.get("tid") is not None and entry.get("tid") != pid:
        ident += " thread %s" % entry["tid"]
    parts = ["%s[%s]" % (visible(entry.get("comm") or "?"), visible(ident))]
    if entry.get("exe"):
        parts.append(visible(entry["exe"]))
    if entry.get("argv"):
        parts.append("argv: " + _argv(entry["argv"]))
    for key in ("uid", "euid", "auid"):
        if entry.get(key) is not None:
            parts.append("%s: %s" % (key, visible(entry[key])))
    if entry.get("container_id"):
        parts.append("container: " + visible(entry["container_id"][:12]))
    elif entry.get("cgroup") and entry.get("cgroup") != cgroup_shown:
        parts.append("cgroup: " + visible(entry["cgroup"]))
    if entry.get("exited"):
        parts.append("exited " + short_time(entry["exited_at"], day) if entry.get("exited_at") else "exited")
    elif entry.get("exited") is False:
        parts.append("alive")
    if entry.get("started"):
        parts.append("started " + short_time(entry["started"], day))
    return "  ".join(parts)


def _mechanism(kill):
    text = visible(kill.get("mechanism") or "unknown")
    candidates = kill.get("mechanism_candidates") or []
    if candidates:
        text += " (one of %s)" % ", ".join(visible(c) for c in candidates)
    return text


def kill_lines(kill, indent=INDENT):
    signal = kill.get("signal") or {}
    name = signal.get("name") or ("signal %s" % visible(signal.get("number")))
    time = visible(kill.get("time"))
    day = time[:10] if re.match(r"\d{4}-\d\d-\d\dT", time) else None
    head = "%s  %s  mechanism: %s  origin: %s" % (time, visible(name), _mechanism(kill), visible(kill.get("origin")))
    if (kill.get("count") or 1) > 1:
        head += "  sent %s times" % visible(kill["count"])
    victim = kill.get("victim") if isinstance(kill.get("victim"), dict) else {}
    lines = [indent + head, indent * 2 + "victim  " + process_line(victim, day)]
    shown = victim.get("cgroup")
    sender = kill.get("sender")
    if sender:
        lines.append(indent * 3 + "← sender  " + process_line(sender, day, shown))
        shown = sender.get("cgroup") or shown
        ancestry = kill.get("ancestry") or []
        for depth, ancestor in enumerate(ancestry, start=4):
            ancestor = ancestor if isinstance(ancestor, dict) else {}
            lines.append(indent * min(depth, MAX_DEPTH) + "← " + process_line(ancestor, day, shown))
            shown = ancestor.get("cgroup") or shown
        if not ancestry:
            lines.append(indent * 4 + "← parent unknown (see gaps)")
    else:
        lines.append(indent * 3 + "← no sending process: the kernel sent it")
        if kill.get("trigger"):
            lines.append(indent * 4 + "running when the kernel sent it (not the sender): "
                         + process_line(kill["trigger"], day))
    if kill.get("evidence"):
        lines.append(indent * 2 + "evidence: " + ", ".join(visible(item) for item in kill["evidence"]))
    gaps = kill.get("gaps") or []
    if not gaps:
        lines.append(indent * 2 + "gaps: none")
    for gap in gaps:
        lines.append(indent * 2 + "gap: " + message(gap))
    return lines


def _sources(sources):
    if not isinstance(sources, dict):
        return []
    return [(name, source) for name, source in sources.items() if isinstance(source, dict) and "armed" in source]


def sources_text(sources):
    """``ftrace armed: yes, loss: none; audit armed: no (auditd is not running)``."""
    described = []
    for name, source in _sources(sources):
        text = "%s armed: %s" % (visible(name), yes_no(source.get("armed")))
        if source.get("armed") is False and source.get("reason"):
            text += " (%s)" % message(source["reason"])
        if source.get("error"):
            text += ", error: " + message(source["error"])
        if source.get("armed") and name != "snapshot":
            text += ", loss: " + message(source.get("loss"))
        described.append(text)
    return "; ".join(described) or "none"


def loss_text(sources):
    """What a quiet host's one line needs: each armed source's loss (``ftrace loss: none``)."""
    described = ["%s loss: %s" % (visible(name), message(source.get("loss"))) for name, source in _sources(sources)
                 if source.get("armed") and name != "snapshot"]
    described += ["%s error: %s" % (visible(name), message(source["error"])) for name, source in _sources(sources)
                  if source.get("error")]
    return "; ".join(described) or "no source armed"


def victim_spec(victim):
    """(pid, comm, label) from a pid (int or digits), a comm, or a mapping {pid} / {comm}; None: any."""
    if victim is None or victim == "":
        return None
    if isinstance(victim, dict):
        pid, comm = victim.get("pid"), victim.get("comm")
        label = victim.get("label") or (comm if comm is not None else "pid %s" % pid)
        return (int(pid) if pid is not None else None), comm, visible(label)
    if isinstance(victim, int) and not isinstance(victim, bool):
        return victim, None, "pid %d" % victim
    text = str(victim)
    if text.isdigit():
        return int(text), None, "pid %s" % text
    return None, text, visible(text)


def matches(kill, victim):
    """Does the kill's victim match the pid or the comm (exact) of victim_spec()?"""
    if victim is None:
        return True
    pid, comm = victim[0], victim[1]
    target = kill.get("victim") or {}
    if pid is not None and target.get("pid") != pid:
        return False
    return comm is None or target.get("comm") == comm


def _kills(report, victim):
    return [kill for kill in (report.get("kills") or []) if isinstance(kill, dict) and matches(kill, victim)]


def sigsleuth_kills_of(fleet, victim=None):
    """{host: number of kills of the victim} for the hosts with a report."""
    spec = victim_spec(victim)
    fleet = fleet if isinstance(fleet, dict) else {}
    return {host: len(_kills(outcome["report"], spec)) for host, outcome in fleet.items()
            if isinstance(outcome, dict) and isinstance(outcome.get("report"), dict)}


def host_lines(host, outcome, victim=None, max_kills=MAX_KILLS):
    """The host's lines; ``victim`` as victim_spec() returns it."""
    outcome = outcome if isinstance(outcome, dict) else {}
    report, error = outcome.get("report"), outcome.get("error")
    name = visible(host)
    if not isinstance(report, dict):
        if error:
            return ["%s: collection failed: %s" % (name, message(error))]
        return ["%s: no result: the host failed or was unreachable before collection" % name]
    every = report.get("kills") or []
    kills = _kills(report, victim)
    of = " of %s" % victim[2] if victim is not None else ""
    failed = "; collection failed: %s" % message(error) if error else ""
    if not kills:
        others = " (%s of other victims)" % plural(len(every), "kill") if len(every) > len(kills) else ""
        return ["%s: no kills%s%s; %s%s" % (name, of, others, loss_text(report.get("sources")), failed)]
    lines = ["%s: %s%s; armed %s, collected %s%s" % (
        name, plural(len(kills), "kill"), of, visible(report.get("armed_at")), visible(report.get("collected_at")),
        failed),
        INDENT + "sources: " + sources_text(report.get("sources"))]
    shown = kills[-max_kills:] if max_kills and max_kills > 0 else kills
    if len(shown) < len(kills):
        lines.append(INDENT + "(%d earlier kills not shown: see the host's report.json)" % (len(kills) - len(shown)))
    for kill in shown:
        lines += kill_lines(kill)
    return lines


def sigsleuth_text(fleet, victim=None, max_kills=MAX_KILLS):
    """Plain text for ``{host: {"report": dict|None, "error": str|None}}``; ``victim`` restricts the kills."""
    fleet = fleet if isinstance(fleet, dict) else {}
    spec = victim_spec(victim)
    kills = sum(sigsleuth_kills_of(fleet, victim).values())
    failed = sorted((host for host, o in fleet.items() if not isinstance((o or {}).get("report"), dict)), key=str)
    of = " of %s" % spec[2] if spec is not None else ""
    head = "sigsleuth: %s, %s%s" % (plural(len(fleet), "host"), plural(kills, "kill"), of)
    if failed:
        head += "; no report from %s" % ", ".join(visible(host) for host in failed)
    lines = [head]
    for host in sorted(fleet, key=str):
        lines += host_lines(host, fleet[host], victim=spec, max_kills=max_kills)
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {
            "sigsleuth_text": sigsleuth_text,
            "sigsleuth_kills_of": sigsleuth_kills_of,
        }
