#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sigsleuth on the control node, without Ansible: ``sigsleuth analyze`` builds report.json, summary.md and
summary.html from saved inputs - a copy of an instance's ``trace``, audit.log files, the state file and the
snapshot - handed over after the fact (a sosreport, an incident ticket).

It runs the same engine as the sigsleuth_facts module (module_utils/, imported as ansible.module_utils.*) and
writes with the same code as collect (the role's sigsleuth_report_files action). ``make venv`` installs it as
``.venv/bin/sigsleuth``.

    sigsleuth analyze --trace trace.txt --state state.json --snapshot snapshot.jsonl \\
        --audit-log audit.log.1 --audit-log audit.log --host web1 --out reports/
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import json
import os
import re
import sys
import threading

# The engine is imported from this source tree: leave no __pycache__ in it (the collection is built from it).
sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLE = os.path.join(ROOT, "roles", "sigsleuth")

import ansible.module_utils  # noqa: E402  (the engine's package: module_utils/ joins it, as for the module)

if os.path.join(ROOT, "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(os.path.join(ROOT, "module_utils"))

from ansible.module_utils.sigsleuth_collect import analyze  # noqa: E402
from ansible.module_utils.sigsleuth_redact import Redactor  # noqa: E402
from ansible.module_utils.sigsleuth_state import (  # noqa: E402
    SECTION_AUDIT, SECTION_FTRACE, SECTION_SNAPSHOT, STATE_FORMAT,
)
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events  # noqa: E402
from ansible.module_utils.sigsleuth_vocabulary import parse_signals  # noqa: E402

PROG = "sigsleuth analyze"
# Inputs larger than this get progress lines on stderr while they are read.
PROGRESS_MIN_BYTES = 4 * 1024 * 1024
PROGRESS_EVERY_S = 1.0
SNIFF_BYTES = 64 * 1024
AUDIT_LINE = re.compile(rb"^(?:node=\S+ )?type=[A-Z0-9_]+ msg=audit\(\d+\.\d+:\d+\)")
TITLE = "sigsleuth summary (offline analysis)"


class InputError(Exception):
    """A saved input cannot be used; the message says which and why (one line)."""


def load_writer():
    """The role's sigsleuth_report_files action module: host directory names and the report writer."""
    path = os.path.join(ROLE, "action_plugins", "sigsleuth_report_files.py")
    spec = importlib.util.spec_from_file_location("sigsleuth_report_files", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- checking the inputs before anything is read

def head_of(path, what):
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise InputError("cannot read the %s %s: %s" % (what, path, exc.strerror or exc))
    if os.path.isdir(path):
        raise InputError("the %s %s is a directory" % (what, path))
    if b"\0" in head:
        raise InputError("the %s %s is not text (it holds binary data): not a %s" % (what, path, what))
    return head


def check_trace(path):
    head = head_of(path, "trace")
    if head.lstrip().startswith(b"# tracer:"):
        return
    stats = TraceStats()
    if not any(True for _event in iter_events(io.BytesIO(head), stats)):
        raise InputError("the trace %s is not the text of a tracefs trace (no '# tracer:' header and no event "
                         "sigsleuth reads in its first %d KiB)" % (path, SNIFF_BYTES // 1024))


def check_audit_log(path):
    head = head_of(path, "audit log")
    first = next((line for line in head.splitlines() if line.strip()), None)
    if first is not None and not AUDIT_LINE.match(first):
        raise InputError("the audit log %s is not a raw audit log (its first line is not "
                         "'type=... msg=audit(...)')" % path)


def load_state(path):
    head_of(path, "state file")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, ValueError) as exc:
        raise InputError("the state file %s is not sigsleuth's state.json: %s" % (path, exc))
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError("the state file %s is not sigsleuth's state.json (format %s expected)"
                         % (path, STATE_FORMAT))
    return state


def check_snapshot(path):
    head = head_of(path, "snapshot")
    first = next((line for line in head.splitlines() if line.strip()), b"")
    try:
        entry = json.loads(first)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "pid" not in entry:
        raise InputError("the snapshot %s is not sigsleuth's snapshot.jsonl (one process per JSON line)" % path)


def wall_clock_ns(text):
    """--boot-time: seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError("--boot-time %s is neither seconds since the epoch nor an ISO 8601 time" % text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1e9)


def sections_of(args):
    """The state sections the analysis runs on: the saved state file's, or made from the options."""
    if args.state:
        return load_state(args.state)
    if args.trace and args.boot_time is None:
        raise InputError("without --state, give --boot-time (the host's boot time: `uptime -s`, or btime in "
                         "/proc/stat) so that the trace's boot-clock times can be placed on the wall clock")
    offset = wall_clock_ns(args.boot_time) if args.boot_time is not None else 0
    try:
        signals = parse_signals(args.signals.split(","))
    except ValueError as exc:
        raise InputError("--signals %s: %s" % (args.signals, exc))
    sections = {}
    if args.trace:
        sections[SECTION_FTRACE] = {"instance": "saved trace", "tracefs": "", "signals": signals,
                                    "armed_at_ns": None, "clock": "boot", "clock_offset_ns": offset,
                                    "precision": args.precision}
    if args.audit_log:
        sections[SECTION_AUDIT] = {"armed": True, "armed_at_ns": None, "signals": signals, "log_file": None,
                                   "rules": [], "clock_offset_ns": offset}
    if args.snapshot:
        sections[SECTION_SNAPSHOT] = {}
    return sections


# ---------------------------------------------------------------- progress

class Progress(threading.Thread):
    """Every second, how far the reads of the large inputs have got (from /proc/self/fdinfo; Linux)."""

    def __init__(self, paths, stream=None):
        super().__init__(daemon=True)
        self.sizes = {}
        for path in paths:
            size = os.path.getsize(path)
            if size >= PROGRESS_MIN_BYTES:
                self.sizes[os.path.realpath(path)] = size
        self.stream = stream or sys.stderr
        self.done = threading.Event()

    def positions(self):
        found = {}
        try:
            descriptors = os.listdir("/proc/self/fd")
        except OSError:
            return found
        for fd in descriptors:
            try:
                target = os.readlink("/proc/self/fd/%s" % fd)
                if target in self.sizes:
                    with open("/proc/self/fdinfo/%s" % fd) as info:
                        pos = int(next(line for line in info if line.startswith("pos:")).split()[1])
                    found[target] = max(found.get(target, 0), pos)
            except (OSError, StopIteration, ValueError):
                continue
        return found

    def run(self):
        while not self.done.wait(PROGRESS_EVERY_S):
            for path, pos in sorted(self.positions().items()):
                size = self.sizes[path]
                print("%s: reading %s: %.1f of %.1f MB (%d%%)" % (PROG, path, pos / 1e6, size / 1e6,
                                                                   pos * 100 // size), file=self.stream)

    def __enter__(self):
        if self.sizes:
            self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        if self.is_alive():
            self.join()


# ---------------------------------------------------------------- the command

def analyze_command(args):
    if not (args.trace or args.audit_log):
        raise InputError("give --trace, --audit-log, or both")
    if args.trace:
        check_trace(args.trace)
    for path in args.audit_log:
        check_audit_log(path)
    if args.snapshot:
        check_snapshot(args.snapshot)
    try:
        if args.no_redact:
            redactor = Redactor([])
        else:
            redactor = Redactor(args.redact) if args.redact else Redactor()
    except ValueError as exc:
        raise InputError(str(exc))
    sections = sections_of(args)
    inputs = [path for path in [args.trace, args.snapshot] + list(args.audit_log) if path]
    with Progress(inputs):
        report = analyze(sections, args.host, trace_file=args.trace, audit_logs=args.audit_log,
                         snapshot_file=args.snapshot, redactor=redactor)
    writer = load_writer()
    try:
        written = writer.write_reports(os.path.abspath(args.out), {args.host: {"report": report, "error": None}},
                                       title=TITLE)
    except writer.ReportWriteError as exc:
        raise InputError(str(exc))
    if written["write_errors"]:
        raise InputError(written["write_errors"][args.host])
    for path in (written["report_paths"][args.host], written["summary_md"], written["summary_html"]):
        print(path)
    kills = len(report["kills"])
    print("%s: %d kill%s on %s" % (PROG, kills, "" if kills == 1 else "s", args.host), file=sys.stderr)
    return 0


def parser():
    top = argparse.ArgumentParser(prog="sigsleuth", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)
    command = commands.add_parser("analyze", help="build the reports from saved inputs",
                                  description="Build report.json, summary.md and summary.html from saved inputs.")
    command.add_argument("--trace", help="a saved copy of <tracefs>/instances/<instance>/trace")
    command.add_argument("--audit-log", action="append", default=[], metavar="FILE",
                         help="a saved audit.log (raw format); repeat, oldest first")
    command.add_argument("--state", help="a copy of the host's state.json (arm time, clock offset, signals, "
                                         "precision)")
    command.add_argument("--snapshot", help="a copy of the host's snapshot.jsonl (processes at arm time)")
    command.add_argument("--host", default="offline", help="the host's name in the report (default: offline)")
    command.add_argument("--boot-time", help="without --state: the host's boot time (epoch seconds or ISO 8601)")
    command.add_argument("--signals", default="KILL", help="without --state: the armed signals (default: KILL)")
    command.add_argument("--precision", choices=("light", "syscall"), default="light",
                         help="without --state: the arm's precision (default: light)")
    command.add_argument("--redact", action="append", default=[], metavar="PATTERN",
                         help="a redaction pattern (repeatable; replaces the default set, as sigsleuth_redact does)")
    command.add_argument("--no-redact", action="store_true", help="keep argv, proctitle and cwd as logged")
    command.add_argument("--out", required=True, help="the report directory to write")
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return analyze_command(args)
    except InputError as exc:
        print("%s: error: %s" % (PROG, " ".join(str(exc).split())), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
