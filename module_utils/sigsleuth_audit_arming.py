# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Arming and disarming audit: from what is observed to what is wanted, as transaction steps. Stdlib only.
"""What sigsleuth_audit changes on a host, planned as steps of a sigsleuth_transaction.Transaction.

`observe_audit()` reads what is there (auditd's status and log settings, the loaded rules, our persistent
rules file); `plan_arm()` and `plan_disarm()` compare it with what is wanted and the state section of an
earlier arm, add the steps that close the difference (each with its undo) and fill the module's result.
Only rules with sigsleuth's keys are ever added or deleted; everything else arm changed is recorded in the
state section so that disarm undoes exactly that.
"""

from __future__ import annotations

import collections
import os
import time

from ansible.module_utils.sigsleuth_audit_rules import (
    OUR_KEYS, list_rules, our_rules, rule_argv, rule_identity, rule_key, rules_file_text,
)
from ansible.module_utils.sigsleuth_auditd import (
    audit_status, has_systemd, read_auditd_conf, read_log_file_setting, start_auditd, stop_auditd,
)
from ansible.module_utils.sigsleuth_clock import clock_offset_ns, iso_utc
from ansible.module_utils.sigsleuth_command import REASON_AUDIT_LOCKED, run_checked
from ansible.module_utils.sigsleuth_state import SECTION_AUDIT, atomic_write

AuditObserved = collections.namedtuple("AuditObserved", "status loaded ours rules_file_text log_file log_format")
AUDIT_OFF_WARNING = (
    "audit was off when sigsleuth armed it: unless it had been on earlier in this boot, processes that already "
    "existed are never audited (the kernel gives a process its audit context at fork, and only once audit has "
    "been enabled); their own kills are then seen by ftrace only")


def observe_audit(run, rules_file, auditd_conf=None):
    """What is there now; SigsleuthError when auditctl or auditd.conf cannot be read."""
    log_file = log_format = None
    if auditd_conf is not None:
        log_file = read_log_file_setting(auditd_conf)
        log_format = read_auditd_conf(auditd_conf).get("log_format", "RAW").upper()
    status = audit_status(run)
    loaded = list_rules(run)
    return AuditObserved(status, loaded, our_rules(loaded), _read_text(rules_file), log_file, log_format)


def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def diff_text(rules):
    return "".join(rule + "\n" for rule in rules)


def locked_message(what):
    return ("the audit configuration is locked (auditctl -s: enabled 2, set by `-e 2`): %s until the next reboot"
            % what)


def foreign_never_rules(loaded):
    return [line for line in loaded
            if rule_key(line) not in OUR_KEYS and line.startswith("-a ") and "never" in line.split()[1].split(",")]


# ---------------------------------------------------------------- arm

class ArmPlan:
    """The difference between what arm wants and what is there, before any step is planned."""

    def __init__(self, observed, rules, params, section, installed_now):
        status = observed.status
        join = params.get("join_running")
        wanted = {rule_identity(rule) for rule in rules}
        present = {rule_identity(rule) for rule in observed.ours}
        self.rules = rules
        self.to_remove = [rule for rule in observed.ours if rule_identity(rule) not in wanted]
        self.to_add = [rule for rule in rules if rule_identity(rule) not in present]
        self.section = dict(section or {})
        if installed_now and status["running"]:
            # A fresh install on a systemd host starts auditd by itself: then the install started it.
            self.section.update(started_auditd=True, auditd_pid=status["pid"], enabled_before=0)
        # Joining an auditd that runs already: its daemon, enabled state and backlog are the host's own.
        self.start = not join and not status["running"]
        self.enabled_before = self.section.get("enabled_before", status["enabled"])
        self.enable = not join and not self.start and status["enabled"] == 0
        before = status.get("backlog_limit")
        self.backlog_before = before if isinstance(before, int) else None
        self.raise_backlog = not join and bool(params["backlog_limit"]) and self.backlog_before is not None \
            and self.backlog_before < params["backlog_limit"]
        self.persist_text = rules_file_text(rules) if params["persist"] else None
        self.write_file = params["persist"] and observed.rules_file_text != self.persist_text
        self.unlink_file = not params["persist"] and observed.rules_file_text is not None
        if "audit_was_enabled" in self.section:
            self.audit_was_enabled = self.section["audit_was_enabled"]
        else:
            self.audit_was_enabled = status["enabled"] != 0 and not installed_now
        self.installed_now = installed_now


def plan_arm(txn, store, run, observed, rules, record, params, section, paths, installed_now=False):
    """Plan arming audit into txn (a Transaction), and fill its result.

    record: what the state keeps of the wanted setup (signals, exec, fork, abis, rules, persist_file,
    log_file, log_format); paths: {"rules_file": ..., "root": ...} (the root where /run/systemd is looked for).
    """
    rules_file = paths["rules_file"]
    if observed.status["locked"]:
        txn.fail(msg=locked_message("no rule can be added or removed") + ", so the audit source cannot be armed "
                 "on this host", status=observed.status, reason=REASON_AUDIT_LOCKED)
    plan = ArmPlan(observed, rules, params, section, installed_now)
    for line in foreign_never_rules(observed.loaded):
        txn.module.warn("a rule that is not sigsleuth's may keep audit events from being logged: %s" % line)
    if not plan.audit_was_enabled:
        txn.module.warn(AUDIT_OFF_WARNING)
    txn.result.update(rules=rules, rules_added=plan.to_add, rules_removed=plan.to_remove, status=observed.status,
                      started_auditd=bool(plan.section.get("started_auditd")) or plan.start,
                      audit_was_enabled=plan.audit_was_enabled,
                      diff=dict(before=diff_text(observed.ours), after=diff_text(rules)),
                      armed_at_ns=plan.section.get("armed_at_ns"), armed_at=iso_utc(plan.section.get("armed_at_ns")))
    recorded = bool(section) and section.get("armed_at_ns") is not None and all(
        section.get(key) == value for key, value in record.items())
    if not (plan.to_add or plan.to_remove or plan.start or plan.enable or plan.raise_backlog or plan.write_file
            or plan.unlink_file or not recorded):
        txn.result["started_auditd"] = bool(plan.section.get("started_auditd"))
        txn.exit_unchanged("already armed: %d audit rules loaded" % len(rules))
    if params["persist"] and not os.path.isdir(os.path.dirname(rules_file)):
        txn.fail(msg="persist=true needs %s, which does not exist (no augenrules on this host?)"
                     % os.path.dirname(rules_file))
    _plan_arm_steps(txn, store, run, observed, plan, record, params, section, paths)


def _plan_arm_steps(txn, store, run, observed, plan, record, params, previous, paths):
    section = plan.section
    section.setdefault("installed_auditd", plan.installed_now)
    section.update(record, enabled_before=plan.enabled_before, audit_was_enabled=plan.audit_was_enabled,
                   systemd=has_systemd(paths["root"]))
    for key in ("auditd_pid", "backlog_limit_before", "backlog_limit_set", "armed_at_ns"):
        section.setdefault(key, None)
    section.setdefault("started_auditd", False)
    section.setdefault("enabled_set_by_us", False)
    status = {"now": observed.status}

    def save():  # the same bookkeeping after each step
        store.put(SECTION_AUDIT, section)
    # Record ownership before changing anything, so an interrupted arm is still ours to disarm.
    txn.add("record the audit state", save, lambda: _restore(store, previous), quiet=True)
    if plan.start:
        def start():
            status["now"] = start_auditd(run)
            section.update(started_auditd=True, auditd_pid=status["now"]["pid"])
            save()
        txn.add("start auditd", start, lambda: (stop_auditd(run, pid=section["auditd_pid"]),
                                                run(["auditctl", "-e", "0"])))

    def enable():
        if status["now"]["enabled"] != 0:
            return False
        run_checked(run, ["auditctl", "-e", "1"])
        section["enabled_set_by_us"] = True
        save()
        return None
    if plan.start or plan.enable:
        txn.add("enable audit", enable, lambda: run(["auditctl", "-e", "0"]), quiet=not plan.enable)
    if plan.raise_backlog:
        limit = params["backlog_limit"]

        def raise_backlog():
            run_checked(run, ["auditctl", "-b", str(limit)])
            section.update(backlog_limit_before=plan.backlog_before, backlog_limit_set=limit)
            save()
        txn.add("raise backlog_limit to %d" % limit, raise_backlog,
                lambda: run(["auditctl", "-b", str(plan.backlog_before)]))
    _plan_rule_steps(txn, run, plan)
    _plan_file_steps(txn, plan, observed, paths["rules_file"])

    def record_arm():
        if section.get("armed_at_ns") is None or plan.to_add:
            section["armed_at_ns"] = section.get("armed_at_ns") or time.time_ns()
            section.setdefault("clock_offset_ns", clock_offset_ns())
        now = audit_status(run)
        section.setdefault("lost_at_arm", now.get("lost"))
        section.setdefault("backlog_at_arm", now.get("backlog"))
        if plan.to_add:
            section.update(lost_at_arm=now.get("lost"), backlog_at_arm=now.get("backlog"))
        save()
        txn.result.update(status=now, started_auditd=bool(section.get("started_auditd")),
                          armed_at_ns=section["armed_at_ns"], armed_at=iso_utc(section["armed_at_ns"]))
    txn.add("record the arm time", record_arm, quiet=True)
    if txn.module.check_mode:
        txn.result.update(armed_at_ns=section.get("armed_at_ns"), armed_at=iso_utc(section.get("armed_at_ns")))


def _plan_rule_steps(txn, run, plan):
    if plan.to_remove:
        deleted = []

        def delete():
            for rule in plan.to_remove:
                run_checked(run, rule_argv(rule, delete=True))
                deleted.append(rule)

        def put_back():
            for rule in deleted:
                run(rule_argv(rule))
        txn.add("delete %d rules" % len(plan.to_remove), delete, put_back)
    if plan.to_add:
        added = []

        def add():
            for rule in plan.to_add:
                run_checked(run, rule_argv(rule))
                added.append(rule)

        def take_out():
            for rule in reversed(added):
                run(rule_argv(rule, delete=True))
        txn.add("add %d rules" % len(plan.to_add), add, take_out)


def _plan_file_steps(txn, plan, observed, rules_file):
    if plan.write_file:
        txn.add("write %s" % rules_file, lambda: atomic_write(rules_file, plan.persist_text, mode=0o640),
                lambda: _restore_file(rules_file, observed.rules_file_text))
    if plan.unlink_file:
        txn.add("remove %s" % rules_file, lambda: os.unlink(rules_file),
                lambda: _restore_file(rules_file, observed.rules_file_text))


def _restore_file(path, text):
    if text is None:
        os.unlink(path)
    else:
        atomic_write(path, text, mode=0o640)


def _restore(store, previous):
    if previous:
        store.put(SECTION_AUDIT, previous)
    else:
        store.drop(SECTION_AUDIT)


def join_refusal(observed):
    """Why an auditd that already runs cannot simply be joined (observed None: not installed), else None."""
    if observed is None:
        return "auditd is not installed on this host"
    status = observed.status
    if status["locked"]:
        return locked_message("sigsleuth's rules cannot be added")
    if status["enabled"] == 0:
        return ("audit is off on this host (auditctl -s: enabled 0): turning it on costs up to 2x on syscall-heavy "
                "work, so it is left off; list audit in sigsleuth_sources to arm it anyway")
    if not status["running"]:
        return "auditd is not running on this host; list audit in sigsleuth_sources to start it"
    return None


def plan_not_armed(txn, store, section, why):
    """Join mode where audit cannot be joined: record why (collect reports it) and change nothing else."""
    record = {"armed": False, "join_running": True, "reason": why}
    txn.result.update(armed=False, not_armed_reason=why, rules=[], rules_added=[], rules_removed=[],
                      started_auditd=False, diff=dict(before="", after=""))
    if section == record:
        txn.exit_unchanged("audit not armed: %s" % why)
    txn.add("record why audit is not armed", lambda: store.put(SECTION_AUDIT, record), quiet=True)
    txn.run("audit not armed: %s" % why, "would record that audit is not armed: %s" % why)


# ---------------------------------------------------------------- disarm

def plan_disarm(txn, store, run, observed, data, section, rules_file):
    """Plan disarming audit into txn: our rules and file, and what the section says arm changed.

    observed is None where auditctl is not installed (nothing can be loaded then)."""
    ours = observed.ours if observed else []
    status = observed.status if observed else None
    if ours and status["locked"]:
        txn.fail(msg=locked_message("sigsleuth's %d audit rules cannot be removed" % len(ours)),
                 rules=ours, status=status, reason=REASON_AUDIT_LOCKED)
    file_present = os.path.exists(rules_file)
    stop = bool(section) and section.get("started_auditd") and status is not None and status["running"]
    if stop and section.get("auditd_pid") not in (None, status["pid"]):
        stop = False
        txn.module.warn("auditd was started by sigsleuth (pid %s) but pid %s runs it now: someone restarted it, "
                        "so it is left running" % (section.get("auditd_pid"), status["pid"]))
    restore_enabled = bool(section) and status is not None and status["enabled"] == 1 and bool(
        section.get("enabled_set_by_us") or (stop and section.get("enabled_before") == 0))
    restore_backlog = bool(section) and status is not None and section.get("backlog_limit_set") is not None \
        and section.get("backlog_limit_before") is not None \
        and status.get("backlog_limit") == section["backlog_limit_set"]
    txn.result.update(rules=[], rules_added=[], rules_removed=ours, started_auditd=bool(stop),
                      persist_file=rules_file if file_present else None, diff=dict(before=diff_text(ours), after=""))
    if status is not None:
        txn.result["status"] = status
    if ours:
        txn.add("delete %d rules" % len(ours), lambda: [run_checked(run, rule_argv(rule, delete=True)) for rule in ours])
    if file_present:
        txn.add("remove %s" % rules_file, lambda: os.unlink(rules_file))
    if restore_backlog:
        txn.add("restore backlog_limit %s" % section["backlog_limit_before"],
                lambda: run_checked(run, ["auditctl", "-b", str(section["backlog_limit_before"])]))
    if stop:
        txn.add("stop auditd", lambda: stop_auditd(run, pid=status["pid"]))
    if restore_enabled:
        txn.add("disable audit again", lambda: run_checked(run, ["auditctl", "-e", "0"]))
    if status is not None and txn.steps:
        txn.add("read the audit status", lambda: txn.result.update(status=audit_status(run)), quiet=True)
    if txn.steps or SECTION_AUDIT in data:
        txn.add("drop the audit state", lambda: store.drop(SECTION_AUDIT), quiet=bool(txn.steps))
    return txn
