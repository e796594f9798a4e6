# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: write every host's report and the fleet summaries on the control node, in one step.
"""Action ``sigsleuth_report_files`` (documented in library/sigsleuth_report_files.py): runs on the control node only.

A host name is data: it becomes one directory name by ``host_dir_name`` (percent-encoding), and every file is
opened relative to the report directory's descriptor without following symlinks, so no inventory name can
write outside the report directory. A host whose report cannot be written gets its reason; the others are
written all the same. ``write_reports`` is also what ``sigsleuth analyze`` (cli/) writes with.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import json
import os
import secrets

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

REPORT = "report.json"
SUMMARY_MD = "summary.md"
SUMMARY_HTML = "summary.html"
# Kept as they are in a directory name; everything else is percent-encoded (so is "%" itself, which keeps
# the mapping one-to-one).
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+,=@:")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class ReportWriteError(Exception):
    """A report file cannot be written; the message says which and why."""


def host_dir_name(host):
    """The directory name of a host's report: its name, with every byte outside [A-Za-z0-9._-+,=@:] and a
    leading "." or "-" percent-encoded ("../x" -> "%2E.%2Fx", "a/b" -> "a%2Fb")."""
    encoded = []
    for index, byte in enumerate(str(host).encode("utf-8")):
        char = chr(byte)
        if char in _PLAIN and not (index == 0 and char in ".-"):
            encoded.append(char)
        else:
            encoded.append("%%%02X" % byte)
    return "".join(encoded) or "%00"


class ReportDir:
    """The report directory, opened once; every file below it is reached through its descriptor."""

    def __init__(self, path, create=True):
        self.path = path
        if not os.path.isabs(path):
            raise ReportWriteError("the report directory must be an absolute path, got %s" % path)
        try:
            if create and not os.path.isdir(path):
                os.makedirs(path, mode=0o700)
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ReportWriteError("cannot use %s as the report directory: %s" % (path, exc.strerror or exc))
        if not os.access(path, os.W_OK | os.X_OK):
            os.close(self.fd)
            raise ReportWriteError("cannot write to the report directory %s: permission denied" % path)

    def close(self):
        os.close(self.fd)

    def host_dir(self, host):
        """(descriptor, path) of the host's directory (0700), made if missing; a symlink is never followed."""
        name = host_dir_name(host)
        path = os.path.join(self.path, name)
        try:
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
            except FileExistsError:
                pass
            fd = os.open(name, _OPEN_DIR, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ReportWriteError("%s is not a directory of ours (a symlink or a file): not followed, "
                                       "not replaced" % path)
            raise ReportWriteError("cannot make %s: %s" % (path, exc.strerror or exc))
        try:
            os.fchmod(fd, 0o700)
        except OSError as exc:
            os.close(fd)
            raise ReportWriteError("cannot make %s private (0700): %s" % (path, exc.strerror or exc))
        return fd, path

    def write_host_report(self, host, report):
        fd, path = self.host_dir(host)
        try:
            return write_file(fd, path, REPORT, json.dumps(report, indent=4) + "\n")
        finally:
            os.close(fd)

    def write_summary(self, name, text):
        return write_file(self.fd, self.path, name, text)


def write_file(dir_fd, dir_path, name, text):
    """Write `name` in the directory atomically (a temporary file, 0600, renamed over it); returns its path.

    The rename replaces whatever `name` was - a symlink included - and never writes through it."""
    path = os.path.join(dir_path, name)
    temporary = ".%s.%s.tmp" % (name, secrets.token_hex(6))
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise ReportWriteError("cannot write %s: %s" % (path, exc.strerror or exc))
    return path


def summary_renderer():
    """The summary filters' module: the collection's own filter plugin, or the role's filter_plugins/."""
    if __name__.startswith("ansible_collections."):
        return importlib.import_module(__name__.split(".plugins.", 1)[0] + ".plugins.filter.sigsleuth_summary")
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "filter_plugins",
                        "sigsleuth_summary.py")
    spec = importlib.util.spec_from_file_location("sigsleuth_summary_for_reports", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_reports(report_dir, outcomes, title=None, write=True):
    """Each host's report.json, then summary.md and summary.html (which name the hosts not written).

    `outcomes`: {host: {"report": dict|None, "error": str|None}} (empty: the host dropped out). Returns
    {"report_paths": {host: path|None}, "write_errors": {host: reason}, "summary_md": path,
    "summary_html": path}. Raises ReportWriteError when the directory or a summary cannot be written."""
    directory = ReportDir(report_dir) if write else None
    try:
        paths, errors, fleet = {}, {}, {}
        for host in sorted(outcomes):
            outcome = dict(outcomes[host] or {})
            paths[host] = None
            if isinstance(outcome.get("report"), dict):
                try:
                    paths[host] = (directory.write_host_report(host, outcome["report"]) if directory
                                   else os.path.join(report_dir, host_dir_name(host), REPORT))
                except ReportWriteError as exc:
                    errors[host] = outcome["write_error"] = str(exc)
            fleet[host] = outcome
        renderer = summary_renderer()
        title = title or renderer.TITLE
        result = {"report_paths": paths, "write_errors": errors}
        for key, name, render in (("summary_md", SUMMARY_MD, renderer.sigsleuth_summary),
                                  ("summary_html", SUMMARY_HTML, renderer.sigsleuth_summary_html)):
            text = render(fleet, title=title)
            result[key] = directory.write_summary(name, text) if directory else os.path.join(report_dir, name)
        return result
    finally:
        if directory:
            directory.close()


class ActionModule(ActionBase):
    """Check the report directory, or write every host's report and the summaries; never runs a module."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dir", "outcomes", "check_only", "title"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        report_dir = args.get("dir")
        if not report_dir or not isinstance(report_dir, str):
            raise AnsibleActionFail("dir must be the report directory's path")
        report_dir = os.path.abspath(os.path.expanduser(to_text(report_dir)))
        outcomes = args.get("outcomes") or {}
        if not isinstance(outcomes, dict):
            raise AnsibleActionFail("outcomes must be a mapping of host name to {report, error}")
        try:
            if args.get("check_only"):
                if not self._task.check_mode or os.path.exists(report_dir):
                    ReportDir(report_dir, create=not self._task.check_mode).close()
                result.update(changed=False, dir=report_dir)
                return result
            written = write_reports(report_dir, dict(outcomes), title=args.get("title"),
                                    write=not self._task.check_mode)
        except ReportWriteError as exc:
            raise AnsibleActionFail("cannot write sigsleuth reports to %s (%s); set sigsleuth_report_dir to a "
                                    "directory the control node user can write" % (report_dir, exc))
        result.update(written, dir=report_dir, changed=not self._task.check_mode)
        return result
