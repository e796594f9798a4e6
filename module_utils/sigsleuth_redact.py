# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Redaction: secrets in argv, proctitle and cwd replaced before the report leaves the host. Stdlib; Python 3.9+.
"""Replace the secret part of process-chosen text (argv, proctitle, cwd) with ``<redacted>``.

Pattern semantics (the contract of ``sigsleuth_redact`` and of sigsleuth_facts' ``redact`` option):

* A pattern is a Python regular expression (module ``re``), compiled once, searched (``finditer``) in
  - an argv (and a proctitle, which is an argv) as one line: its elements joined by single spaces, the way
    ``ps`` shows a command line, so that a flag and its value in separate elements (``--password secret``)
    read as they do in a shell;
  - a cwd as it is.
  The text is the report's: UTF-8, a byte that is not UTF-8 as ``\\xNN``, a backslash as ``\\\\``
  (vocabulary.decode_name), so a pattern sees exactly what the report would show.
* The part replaced is the named group ``secret`` when the pattern has one, else group 1 when it has groups,
  else the whole match; an empty or unmatched part replaces nothing. Everything else of the match (the flag
  name, ``=``, the user name of a URL) stays visible: ``--password=<redacted>``.
* Every pattern is searched in the original text, and the parts they mark are merged, so one pattern never
  sees another's ``<redacted>``. A part that spans several argv elements is replaced in each of them: argv
  keeps its length, and each element that held a piece of a secret holds ``<redacted>`` instead.
* Inline flags go at the start of a pattern (``(?i)...``).

An empty list turns redaction off. The report says what was done in its ``redaction`` field.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
# The report's fields that hold process-chosen command lines and directories, wherever they appear.
ARGV_FIELDS = ("argv", "proctitle")
TEXT_FIELDS = ("cwd",)

# A key ends in one of these words: DB_PASSWORD, --api-key, AWS_SECRET_ACCESS_KEY (not AWS_ACCESS_KEY_ID,
# not --password-file, not --token-path, whose values are not the secret).
_SECRET_KEY = (r"[\w.-]*?(?:passw(?:or)?d|passphrase|(?<![a-z])pass|secret|token|api[_-]?key|apikey"
               r"|access[_-]?key|secret[_-]?key|private[_-]?key|credentials?|mysql_pwd)")
# Clients that take a password as -pSECRET or -p SECRET (mysql and its tools, MariaDB's, sshpass).
_PASSWORD_P_COMMANDS = r"(?:mysql\w*|mariadb[\w-]*|sshpass)"
# A command's name at the start of a command (of argv, or of a shell command line inside one element),
# then up to 64 of its own arguments before the next shell separator. Bounded, like every quantifier here
# that could meet another: a hostile argv ("mysql mysql mysql ...") must not make a search quadratic.
_COMMAND = r"(?<![^\s/;&|(])%s(?:\s+[^\s;&|]+){0,64}?"

DEFAULT_PATTERNS = (
    # key=value in argv, the environment given to env(1) or a shell: --password=…, token=…, AWS_SECRET_…=…
    r"(?i)(?<![\w.?&-])(?=[\w.-]*=)" + _SECRET_KEY + r"=(?P<secret>\S+)",
    # AWS_SECRET_…=… whatever follows SECRET (its own pattern: a \w* inside the key above would backtrack)
    r"(?i)(?<![\w.?&-])aws_secret\w*=(?P<secret>\S+)",
    # the same in a URL's query, up to the next parameter: ?token=…&page=2
    r"(?i)[?&](?=[\w.-]*=)" + _SECRET_KEY + r"=(?P<secret>[^\s&#]+)",
    # a flag and its value as the next argument: --password …, --token …, -pass … (not a value that is a flag)
    r"(?i)(?<![^\s])--?" + _SECRET_KEY + r"\s+(?P<secret>[^\s-]\S*)",
    # -pSECRET and -p SECRET after mysql-like commands (mysql, mysqldump, mariadb, …) and sshpass
    _COMMAND % _PASSWORD_P_COMMANDS + r"\s+-p(?P<secret>\S+)",
    _COMMAND % _PASSWORD_P_COMMANDS + r"\s+-p\s+(?P<secret>[^\s-]\S*)",
    # redis-cli -a SECRET
    _COMMAND % r"redis-cli" + r"\s+-a\s+(?P<secret>\S+)",
    # curl -u user:SECRET, --user user:SECRET, --proxy-user user:SECRET
    _COMMAND % r"curl" + r"\s+(?:-u\s*|-U\s*|--(?:proxy-)?user[=\s]\s*)[^\s:]*:(?P<secret>\S+)",
    # HTTP headers: Authorization: Bearer …, Authorization: Basic …, Proxy-Authorization: …
    r"(?i)(?<![\w-])(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|digest|negotiate|token|bot)\s+)?"
    r"(?P<secret>[^\s'\"]+)",
    # ... and token headers: X-Api-Key: …, X-Auth-Token: …, Private-Token: …
    r"(?i)(?<![\w-])(?:[\w-]+-)?(?:api-?key|token)\s*:\s*(?P<secret>[^\s'\"]+)",
    # a URL's userinfo password: scheme://user:SECRET@host
    r"(?i)(?<![\w+.-])[a-z][a-z0-9+.-]*://[^\s/?#@:]*:(?P<secret>[^\s/?#@]+)@",
)


def pattern_errors(patterns):
    """What is wrong with a list of patterns, one sentence each ([] when every one compiles)."""
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


class Redactor:
    """The patterns, compiled once; ValueError naming every bad pattern."""

    def __init__(self, patterns=DEFAULT_PATTERNS):
        errors = pattern_errors(patterns)
        if errors:
            raise ValueError("redact: " + "; ".join(errors))
        self.patterns = [re.compile(pattern) for pattern in patterns]
        self.redacted = 0  # values (argv, proctitle, cwd) changed so far

    def secret_spans(self, text):
        """The merged (start, end) spans of text that patterns mark as secret."""
        spans = []
        for regex in self.patterns:
            group = "secret" if "secret" in regex.groupindex else (1 if regex.groups else 0)
            for match in regex.finditer(text):
                start, end = match.span(group)
                if start < end:
                    spans.append((start, end))
        merged = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    def text(self, value):
        """A cwd (any one text) with its secret parts replaced."""
        if not self.patterns or not isinstance(value, str):
            return value
        spans = self.secret_spans(value)
        if not spans:
            return value
        self.redacted += 1
        return _replace(value, spans, 0)

    def argv(self, argv):
        """An argv (or proctitle) with its secret parts replaced, element by element; the same length."""
        if not self.patterns or not isinstance(argv, list) or not all(isinstance(arg, str) for arg in argv):
            return argv
        line = " ".join(argv)
        spans = self.secret_spans(line)
        if not spans:
            return argv
        self.redacted += 1
        redacted, offset = [], 0
        for arg in argv:
            end = offset + len(arg)
            inside = [(max(start, offset), min(stop, end)) for start, stop in spans if start < end and stop > offset]
            redacted.append(_replace(arg, inside, offset) if inside else arg)
            offset = end + 1  # the joining space
        return redacted

    def summary(self):
        """The report's ``redaction`` field."""
        return {"applied": bool(self.patterns), "patterns": len(self.patterns), "redacted": self.redacted,
                "fields": sorted(ARGV_FIELDS + TEXT_FIELDS)}


def _replace(text, spans, offset):
    """text with each (start, end) span (positions counted from `offset`) replaced by REDACTED."""
    pieces, position = [], 0
    for start, end in spans:
        if end - offset <= position:
            continue
        pieces.append(text[position:max(start - offset, position)])
        pieces.append(REDACTED)
        position = end - offset
    pieces.append(text[position:])
    return "".join(pieces)


def redact_report(report, redactor):
    """Redact every argv, proctitle and cwd in the report, wherever it is, and say so in
    ``report["redaction"]``. Walks the whole report, so a field added later is covered too."""
    redactor.redacted = 0
    _walk(report, redactor)
    report["redaction"] = redactor.summary()
    return report


def _walk(node, redactor):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ARGV_FIELDS and isinstance(value, list):
                node[key] = redactor.argv(value)
            elif key in TEXT_FIELDS and isinstance(value, str):
                node[key] = redactor.text(value)
            elif isinstance(value, (dict, list)):
                _walk(value, redactor)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _walk(item, redactor)
