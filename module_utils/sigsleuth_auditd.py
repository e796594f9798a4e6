# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# auditd: its configuration, status and lifecycle. Standard library only; Python 3.9+.
"""Read auditd.conf and ``auditctl -s``; start and stop the daemon directly (never through a unit whose
``augenrules --load`` would flush other people's runtime rules)."""

from __future__ import annotations

import os
import time

from ansible.module_utils.sigsleuth_command import SigsleuthError, run_checked, run_command
from ansible.module_utils.sigsleuth_vocabulary import AUDIT_LOG_ROOT, AUDITD_CONF, DEFAULT_AUDIT_LOG


def read_auditd_conf(path=AUDITD_CONF):
    """auditd.conf as a dict of lower-case keys to string values ({} when the file is missing)."""
    settings = {}
    try:
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _equals, value = line.partition("=")
                settings[key.strip().lower()] = value.strip()
    except FileNotFoundError:
        return {}
    return settings


def read_log_file_setting(auditd_conf=AUDITD_CONF):
    """The audit log path auditd writes (``log_file``), refusing anything outside /var/log.

    Raises SigsleuthError with a clear message for a path outside /var/log (we read and report from it as
    root; an arbitrary path is not something to follow blindly) or a relative path.
    """
    value = read_auditd_conf(auditd_conf).get("log_file") or DEFAULT_AUDIT_LOG
    if not os.path.isabs(value):
        raise SigsleuthError("auditd.conf log_file %r (%s) is not an absolute path" % (value, auditd_conf))
    real = os.path.realpath(value)
    if os.path.commonpath([real, AUDIT_LOG_ROOT]) != AUDIT_LOG_ROOT or real == AUDIT_LOG_ROOT:
        raise SigsleuthError("auditd.conf log_file %r (%s) is outside %s; sigsleuth only reads audit logs "
                             "under %s" % (value, auditd_conf, AUDIT_LOG_ROOT, AUDIT_LOG_ROOT))
    return value


def audit_status(run=run_command):
    """``auditctl -s`` as a dict: enabled, failure, pid, rate_limit, backlog_limit, lost, backlog, ...

    Numbers are ints; ``locked`` is True when enabled is 2 (rules cannot change until reboot);
    ``running`` is True when the kernel has an audit daemon registered.
    """
    out = run_checked(run, ["auditctl", "-s"])
    status = {}
    text = out.strip()
    if text.startswith("AUDIT_STATUS:"):  # old auditctl: one line of key=value
        pairs = (item.partition("=") for item in text[len("AUDIT_STATUS:"):].split())
        items = [(key, value) for key, _equals, value in pairs]
    else:
        items = [(line.split(None, 1) + [""])[:2] for line in text.splitlines() if line.strip()]
    for key, value in items:
        value = value.strip()
        try:
            status[key] = int(value)
        except ValueError:
            status[key] = value
    if "enabled" not in status or "pid" not in status:
        raise SigsleuthError("cannot understand `auditctl -s` output: %r" % out[:200])
    status["locked"] = status["enabled"] == 2
    status["running"] = isinstance(status["pid"], int) and status["pid"] > 0
    return status


# ---------------------------------------------------------------- lifecycle

def has_systemd(root="/"):
    return os.path.isdir(os.path.join(root, "run/systemd/system"))


def start_auditd(run=run_command, timeout=10.0):
    """Start auditd and wait until the kernel has registered it.

    Returns the new status. Raises SigsleuthError when it does not come up.
    """
    # The daemon itself, with or without systemd: the unit's ExecStartPost runs `augenrules --load`, whose
    # -D would flush rules loaded at runtime by others and load the persistent set, changing rules that are
    # not ours to change. auditd daemonises; `auditctl --signal TERM` stops it again.
    argv = ["auditd"]
    rc, out, err = run(argv)
    if rc == 127 or (rc != 0 and "No such file" in (err or "")):
        argv = ["/usr/sbin/auditd"]
        rc, out, err = run(argv)
    if rc != 0:
        raise SigsleuthError("cannot start auditd with `%s` (rc=%s): %s" % (" ".join(argv), rc, (err or out or "").strip()),
                             rc=rc, stdout=out, stderr=err)
    status = _wait_status(run, lambda s: s["running"], timeout)
    if status is None:
        raise SigsleuthError("auditd was started but did not register with the kernel within %.0f s "
                             "(see its messages in syslog)" % timeout)
    return status


def stop_auditd(run=run_command, pid=None, timeout=10.0):
    """Stop auditd (``auditctl --signal TERM``, else SIGTERM to its pid) and wait until it is gone."""
    rc, _out, _err = run(["auditctl", "--signal", "TERM"])
    if rc != 0 and pid:
        try:
            os.kill(pid, 15)
        except OSError:
            pass
    status = _wait_status(run, lambda s: not s["running"], timeout)
    if status is None:
        raise SigsleuthError("auditd did not stop within %.0f s" % timeout)
    return status


def _wait_status(run, predicate, timeout):
    deadline = time.monotonic() + timeout
    while True:
        status = audit_status(run)
        if predicate(status):
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
