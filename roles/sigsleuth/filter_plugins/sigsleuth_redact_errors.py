# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: what is wrong with the redaction patterns, checked on the control node. Runs on the control node.
"""Filter ``sigsleuth_redact_errors``: ``sigsleuth_redact`` -> one sentence per pattern that does not compile.

The role asserts on it before any module reaches a host, so a malformed pattern is refused before anything is
armed or read. The targets compile the same patterns again (module_utils/sigsleuth_redact.py, whose
``pattern_errors`` this mirrors sentence for sentence; tests/unit/test_redact.py keeps the two equal): a
pattern that only a newer Python accepts fails there, naming the pattern.
"""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: sigsleuth_redact_errors
short_description: Check sigsleuth's redaction patterns on the control node
version_added: "1.0.0"
description:
  - Takes the list of regular expressions of C(sigsleuth_redact) and compiles each with Python's C(re) module.
  - Returns one sentence per problem (not a list, an entry that is not a string, a pattern that does not
    compile), or an empty list when every pattern compiles.
positional: _input
options:
  _input:
    description: The patterns.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Refuse malformed redaction patterns before any host is touched
  ansible.builtin.assert:
    that: sigsleuth_redact | sigsleuth.sigsleuth.sigsleuth_redact_errors | length == 0
"""

RETURN = r"""
_value:
  description: One sentence per problem; empty when every pattern compiles.
  type: list
  elements: str
"""


def sigsleuth_redact_errors(patterns):
    if isinstance(patterns, (str, bytes)) or not isinstance(patterns, (list, tuple)):
        return ["the redaction patterns must be a list of regular expressions, got %s" % _kind(patterns)]
    errors = []
    for index, pattern in enumerate(patterns, 1):
        if not isinstance(pattern, str):
            errors.append("pattern %d is not a string: %r" % (index, pattern))
            continue
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as exc:
            errors.append("pattern %d %r is not a valid regular expression: %s" % (index, pattern, exc))
    return errors


def _kind(value):
    """A value's kind in words (not a class name: Ansible's strings are its own classes)."""
    for kind, name in ((str, "a string"), (bytes, "bytes"), (dict, "a mapping"), (bool, "a boolean"),
                       (int, "a number"), (float, "a number"), (type(None), "nothing (null)")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


class FilterModule:
    def filters(self):
        return {"sigsleuth_redact_errors": sigsleuth_redact_errors}
