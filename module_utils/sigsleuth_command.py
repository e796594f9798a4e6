# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Running commands, and the one error type of sigsleuth's target code. Standard library only; Python 3.9+.
"""A runner is ``run(argv) -> (rc, stdout, stderr)`` with the C locale, so that parsed output never depends
on the target's language: ``run_command`` outside Ansible, ``ModuleRunner`` around AnsibleModule.run_command
inside a module. ``SigsleuthError`` carries what a module reports as-is, and a machine-readable ``reason``
for failures the role reacts to."""

from __future__ import annotations

import os
import subprocess

# Reasons the role reacts to (ansible_failed_result.reason).
REASON_TRACEFS_UNUSABLE = "tracefs_unusable"   # no tracefs, cannot be mounted, or a required event missing
REASON_AUDIT_LOCKED = "audit_locked"           # auditctl -s: enabled 2
REASON_AUDITD_MISSING = "auditd_missing"       # no auditctl on the host
REASON_NOT_ROOT = "not_root"


class SigsleuthError(Exception):
    """A failure to report as-is: a message, the output of the command that failed (if any), and a reason."""

    def __init__(self, msg, rc=None, stdout=None, stderr=None, reason=None):
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason

    def result(self):
        """The fail_json keyword arguments for this error."""
        fields = {"msg": self.msg}
        for name in ("rc", "stdout", "stderr", "reason"):
            if getattr(self, name) is not None:
                fields[name] = getattr(self, name)
        return fields


def run_command(argv):
    """(rc, stdout, stderr) of argv with LC_ALL=C; rc 127 when it cannot be started."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False)
    except OSError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def run_checked(run, argv, what=None):
    """stdout of argv; SigsleuthError with the command's output when it fails."""
    rc, out, err = run(argv)
    if rc != 0:
        raise SigsleuthError("%s (rc=%s): %s" % (what or "`%s` failed" % " ".join(argv), rc,
                                                 (err or out or "").strip()),
                             rc=rc, stdout=out, stderr=err)
    return out


class ModuleRunner:
    """AnsibleModule.run_command in the runner shape, with the C locale."""

    def __init__(self, module):
        self.module = module

    def __call__(self, argv):
        return self.module.run_command(argv, environ_update={"LC_ALL": "C", "LANG": "C"})


def fail_from(module, exc, **kwargs):
    """fail_json from a SigsleuthError: msg, rc, stdout, stderr and reason as it carries them."""
    fields = exc.result()
    fields.update(kwargs)
    module.fail_json(**fields)
