# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: what playbooks/investigate.yml decides on the control node. Runs on the control node.
"""Filters ``sigsleuth_investigate_settings`` (its variables, checked) and ``sigsleuth_latch`` (any host saw it).

``sigsleuth_victim`` names one victim: a pid (an integer, or a string of digits) or a comm (the kernel's
name of the process, as ``ps -o comm=`` shows it: at most 15 bytes, compared exactly). A mapping with exactly
one of ``pid`` and ``comm`` says which it is when a name looks like a number. Refused, before any host is
touched: nothing, a value that holds both a pid and a name (``123 agent``, ``agent[123]``), a name longer than
the kernel keeps, leading or trailing white space, and a timeout or poll interval that is not a positive
number of seconds.
"""

from __future__ import annotations

import math
import os
import re

DOCUMENTATION = r"""
name: sigsleuth_investigate_settings
short_description: Check investigate's victim, timeout and poll interval
version_added: "1.1.0"
description:
  - Returns C({victim, timeout, poll, errors}); C(victim) is C({pid, comm, label}) with one of pid and comm
    set; C(errors) lists every problem, in words, and is empty when all is well.
positional: _input
options:
  _input:
    description: The victim, a pid or a comm, or a mapping with one of C(pid) and C(comm).
    type: raw
    required: true
  timeout:
    description: Seconds to wait for the kill.
    type: raw
    required: true
  poll:
    description: Seconds between two looks.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Check the variables
  ansible.builtin.assert:
    that: (sigsleuth_victim | sigsleuth.sigsleuth.sigsleuth_investigate_settings(3600, 5)).errors == []
"""

RETURN = r"""
_value:
  description: The settings, checked.
  type: dict
"""

# The kernel keeps a process name in 16 bytes with its terminating NUL (TASK_COMM_LEN).
COMM_MAX_BYTES = 15
PID_MAX = 4194304  # PID_MAX_LIMIT
# What separates the parts of "123 agent", "agent[123]", "agent (123)": a pid and a name given together.
_PARTS = re.compile(r"[\s\[\]()]+")
SEEN = "seen"


def _victim(value):
    """({pid, comm, label}, error or None)."""
    hint = "set sigsleuth_victim to the victim's pid (e.g. 4242) or its comm (e.g. collector-agent)"
    if isinstance(value, dict):
        keys = sorted(value)
        if keys == ["pid"]:
            return _pid(value["pid"], hint)
        if keys == ["comm"]:
            return _comm(value["comm"], hint, as_given=True)
        return None, "sigsleuth_victim as a mapping takes exactly one of pid and comm, got %s" % (
            ", ".join(map(str, keys)) or "none")
    if value is None or isinstance(value, (bool, list, tuple, float)):
        return None, "sigsleuth_victim is %s: %s" % ("empty" if value in (None, "") else "not a pid or a name", hint)
    if isinstance(value, int):
        return _pid(value, hint)
    text = str(value)
    if text.strip() == "":
        return None, "sigsleuth_victim is empty: %s" % hint
    if text.isdigit():
        return _pid(text, hint)
    parts = [part for part in _PARTS.split(text) if part]
    if len(parts) > 1 and any(part.isdigit() for part in parts):
        return None, ("sigsleuth_victim %r holds both a pid and a name: give one of them (a comm that really "
                      "looks like this: sigsleuth_victim: {comm: ...})" % text)
    return _comm(text, hint)


def _pid(value, hint):
    try:
        pid = int(value)
    except (TypeError, ValueError):
        return None, "sigsleuth_victim's pid %r is not a number: %s" % (value, hint)
    if isinstance(value, bool) or not 0 < pid <= PID_MAX:
        return None, "sigsleuth_victim's pid %r is not a process id (1 to %d)" % (value, PID_MAX)
    return {"pid": pid, "comm": None, "label": "pid %d" % pid}, None


def _comm(value, hint, as_given=False):
    if not isinstance(value, str) or value == "":
        return None, "sigsleuth_victim's comm is empty: %s" % hint
    if value != value.strip() and not as_given:
        return None, ("sigsleuth_victim %r starts or ends with white space (a comm that really does: "
                      "sigsleuth_victim: {comm: ...})" % value)
    size = len(value.encode("utf-8", "surrogateescape"))
    if size > COMM_MAX_BYTES:
        kept = value.encode("utf-8", "surrogateescape")[:COMM_MAX_BYTES].decode("utf-8", "ignore")
        return None, ("sigsleuth_victim %r is %d bytes, and the kernel keeps at most %d of a process name: "
                      "the process is named %r there (see ps -o comm=)" % (value, size, COMM_MAX_BYTES, kept))
    return {"pid": None, "comm": value, "label": value}, None


def _seconds(name, value):
    """(seconds, error or None)."""
    if isinstance(value, bool) or value is None:
        return None, "%s must be a positive number of seconds, got %r" % (name, value)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None, "%s must be a positive number of seconds, got %r" % (name, value)
    if not math.isfinite(seconds) or seconds <= 0:
        return None, "%s must be a positive number of seconds, got %r" % (name, value)
    return (int(seconds) if seconds.is_integer() else seconds), None


def sigsleuth_investigate_settings(victim, timeout, poll):
    victim, victim_error = _victim(victim)
    timeout, timeout_error = _seconds("sigsleuth_timeout", timeout)
    poll, poll_error = _seconds("sigsleuth_poll", poll)
    errors = [error for error in (victim_error, timeout_error, poll_error) if error]
    return {"victim": victim, "timeout": timeout, "poll": poll, "errors": errors}


def sigsleuth_latch(kills, directory):
    """True once any host saw the kill: a host that sees it (``kills`` not empty) sets the latch, a file in
    ``directory`` on the control node, which every host's wait reads at its next look."""
    path = os.path.join(str(directory), SEEN)
    if kills:
        with open(path, "a"):
            pass
        return True
    return os.path.exists(path)


class FilterModule:
    def filters(self):
        return {
            "sigsleuth_investigate_settings": sigsleuth_investigate_settings,
            "sigsleuth_latch": sigsleuth_latch,
        }
