#!/usr/bin/python
# -*- coding: utf-8 -*-
# sigsleuth: arm and disarm the audit rules that name who sent a signal and where the sender came from.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sigsleuth_audit
short_description: Arm or disarm sigsleuth's audit rules for the kill family, exec and fork
description:
  - Loads audit rules, under sigsleuth's own keys, for every ABI the kernel runs (C(b64) and, where 32-bit
    programs can run, C(b32)).
  - "Kill family (key C(sigsleuth_kill)): one rule per ABI and signal with the signal in the right argument:
    C(kill), C(tkill), C(pidfd_send_signal) and C(rt_sigqueueinfo) carry it in C(a1); C(tgkill) and
    C(rt_tgsigqueueinfo) in C(a2) (C(a1) is their thread id). Syscalls an ABI lacks are left out."
  - Exec (key C(sigsleuth_exec)) - successful C(execve) and C(execveat); fork (key C(sigsleuth_fork), only with
    O(fork=true)) - successful C(clone), C(fork), C(vfork) and C(clone3).
  - Rules are given in the exact form C(auditctl -l) prints, appended after any rules already loaded. Only rules
    that carry sigsleuth's keys are ever added or deleted; other rules are never changed, reordered or deleted.
  - Starts auditd when it is not running and remembers that it did, so O(state=absent) stops it again; a
    running auditd is left running. The daemon is started directly (also under systemd, whose unit would run
    C(augenrules --load) and flush runtime rules that are not sigsleuth's).
  - Raises the kernel's audit backlog limit to O(backlog_limit) when it is lower (the kernel default of 64 loses
    events in a fork storm) and puts it back at disarm. Enables audit (C(auditctl -e 1)) when it is off, and
    turns it off again at disarm.
  - A locked audit configuration (C(auditctl -s) shows C(enabled 2)) cannot take new rules until reboot; the
    module then fails with a message saying so. The role treats that as "audit part failed" and keeps ftrace.
  - What was changed is recorded in the C(audit) section of C(<state_dir>/state.json), which O(state=absent)
    and the C(sigsleuth_facts) module read.
version_added: "0.1.0"
author:
  - sigsleuth developers
options:
  state:
    description:
      - V(present) loads the rules (and starts auditd when needed); V(absent) removes every rule with a
        sigsleuth key, the persistent rules file, and undoes what the state file records.
    type: str
    choices: [present, absent]
    default: present
  signals:
    description:
      - Signals to audit, by name (V(KILL), V(SIGKILL), case-insensitive) or number (1-64). One rule per signal
        and ABI and argument position.
    type: list
    elements: str
    default: [KILL]
  exec:
    description:
      - Audit successful C(execve)/C(execveat), which gives each process its argv, cwd and ids.
      - Costs about 20% wall time on a fork+exec storm (the kill rules alone about 5%); each exec event is about
        1.3 KB in the log.
    type: bool
    default: true
  fork:
    description:
      - Audit successful C(clone)/C(fork)/C(vfork)/C(clone3), which gives the fork parent of every process. Needed
        when audit is the only source of lineage (the role sets it for C(sigsleuth_sources=[audit])).
      - Costs one event per process and per thread created, on top of the exec events; on a busy host this is
        the largest share of the audit volume and of the rotation speed of the log.
    type: bool
    default: false
  persist:
    description:
      - Also write the rules to C(/etc/audit/rules.d/sigsleuth.rules) (atomically), so augenrules loads them when
        auditd next starts (e.g. after a reboot). O(state=absent) removes exactly that file.
      - The running rules are always loaded with C(auditctl) rule by rule, never with C(augenrules --load) or
        C(auditctl -R) of the whole set, whose C(-D) would delete rules that are not sigsleuth's.
    type: bool
    default: false
  install:
    description:
      - Install the auditd package (apt-get, dnf or yum) when C(auditctl) is missing. It is never uninstalled.
    type: bool
    default: true
  backlog_limit:
    description:
      - Raise the kernel audit backlog limit to at least this many records while armed (restored at disarm).
        V(0) leaves it alone.
    type: int
    default: 8192
  state_dir:
    description:
      - Directory of the sigsleuth state file (created 0700 when missing, removed at disarm when sigsleuth
        created it and nothing else is left in it).
    type: path
    default: /var/lib/sigsleuth
  auditd_conf:
    description:
      - auditd's configuration file, read for C(log_file) (which must be under C(/var/log)) and C(log_format).
    type: path
    default: /etc/audit/auditd.conf
requirements:
  - "Linux with audit support (CONFIG_AUDITSYSCALL); root on the target (C(become: true) otherwise)."
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - The kernel gives a process an audit context only when it is created after audit was first enabled on this
    boot. When audit was off before arming, processes that already existed are never audited (their own kill
    and exec calls are invisible to audit; the ftrace source still sees them). RV(audit_was_enabled) says so.
  - A rule listed before sigsleuth's that matches the same syscall takes the event (first match wins). The
    event then carries that rule's key (the parser still uses it), or is not logged at all for a C(never) rule;
    the module warns about C(never) rules.
  - Re-arming with the same settings changes nothing and keeps the recorded arm time.
  - After a reboot the state file is stale; O(state=present) arms afresh and O(state=absent) removes the stale
    state and any persistent rules file.
seealso:
  - module: sigsleuth_trace
  - module: sigsleuth_facts
"""

EXAMPLES = r"""
- name: Audit SIGKILL and SIGTERM senders and every exec
  sigsleuth_audit:
    signals: [KILL, TERM]

- name: Audit as the only source of lineage (also fork), kept across a reboot
  sigsleuth_audit:
    signals: [KILL]
    fork: true
    persist: true

- name: Disarm
  sigsleuth_audit:
    state: absent
"""

RETURN = r"""
rules:
  description: sigsleuth's rules after the run (in check mode, what they would be), as C(auditctl -l) prints them.
  returned: always
  type: list
  elements: str
  sample: ["-a always,exit -F arch=b64 -S kill,rt_sigqueueinfo,tkill,pidfd_send_signal -F a1=0x9 -F key=sigsleuth_kill"]
rules_added:
  description: Rules this run added (or would add).
  returned: always
  type: list
  elements: str
rules_removed:
  description: Rules with a sigsleuth key this run deleted (or would delete).
  returned: always
  type: list
  elements: str
signals:
  description: The armed signal numbers, sorted.
  returned: when state=present
  type: list
  elements: int
  sample: [9, 15]
abis:
  description: The ABIs rules were built for.
  returned: when state=present
  type: list
  elements: str
  sample: [b64, b32]
started_auditd:
  description: Whether sigsleuth started auditd (and so stops it at disarm); at disarm, whether it was stopped.
  returned: always
  type: bool
installed_auditd:
  description: Whether this run installed (or would install) the auditd package.
  returned: always
  type: bool
audit_was_enabled:
  description:
    - Whether audit was enabled (C(auditctl -s) C(enabled) not 0) when sigsleuth first armed it. When false,
      processes created before arming may be invisible to audit (see the notes).
  returned: when state=present
  type: bool
log_file:
  description: The audit log auditd writes (auditd.conf C(log_file)).
  returned: when state=present
  type: str
  sample: /var/log/audit/audit.log
persist_file:
  description: The persistent rules file written, or None.
  returned: always
  type: str
  sample: /etc/audit/rules.d/sigsleuth.rules
armed_at_ns:
  description: Wall clock (CLOCK_REALTIME, ns) when the rules were first loaded; None in check mode when arming.
  returned: when state=present
  type: int
armed_at:
  description: RV(armed_at_ns) as ISO 8601 UTC.
  returned: when state=present
  type: str
status:
  description: C(auditctl -s) after the run (enabled, pid, backlog_limit, lost, backlog, ...).
  returned: when auditctl is installed
  type: dict
msg:
  description: What was done, or would be done in check mode.
  returned: always
  type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_audit_rules import (
    OUR_KEYS, build_rules, list_rules, our_rules, rule_argv, rule_identity, rule_key, rules_file_text,
    supported_abis, syscall_table,
)
from ansible.module_utils.sigsleuth_auditd import (
    audit_status, has_systemd, read_auditd_conf, read_log_file_setting, start_auditd, stop_auditd,
)
from ansible.module_utils.sigsleuth_clock import iso_utc
from ansible.module_utils.sigsleuth_command import ModuleRunner, SigsleuthError, fail_from
from ansible.module_utils.sigsleuth_state import StateStore, atomic_write
from ansible.module_utils.sigsleuth_vocabulary import (
    AUDIT_RULES_FILE, AUDITD_CONF, BOOT_ID_PATH, STATE_DIR, parse_signals, signal_name,
)

SECTION = "audit"
# Module-level so unit tests can point them elsewhere.
PATHS = {"rules_file": AUDIT_RULES_FILE, "boot_id": BOOT_ID_PATH, "root": "/"}
PACKAGE_MANAGERS = (
    ("apt-get", ["apt-get", "install", "-y", "--no-install-recommends", "auditd"]),
    ("dnf", ["dnf", "install", "-y", "audit"]),
    ("yum", ["yum", "install", "-y", "audit"]),
)


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            signals=dict(type="list", elements="str", default=["KILL"]),
            exec=dict(type="bool", default=True),
            fork=dict(type="bool", default=False),
            persist=dict(type="bool", default=False),
            install=dict(type="bool", default=True),
            backlog_limit=dict(type="int", default=8192),
            state_dir=dict(type="path", default=STATE_DIR),
            auditd_conf=dict(type="path", default=AUDITD_CONF),
        ),
        supports_check_mode=True,
    )


def auditctl_installed(module):
    return module.get_bin_path("auditctl", opt_dirs=["/sbin", "/usr/sbin"]) is not None


def install_auditd(module, run):
    for tool, argv in PACKAGE_MANAGERS:
        if module.get_bin_path(tool):
            if tool == "apt-get":
                rc, out, err = module.run_command(argv, environ_update={
                    "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
                if rc != 0:  # a stale package list is the usual reason on a fresh host
                    module.run_command(["apt-get", "update"], environ_update={"LC_ALL": "C"})
                    rc, out, err = module.run_command(argv, environ_update={
                        "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
            else:
                rc, out, err = run(argv)
            if rc != 0:
                module.fail_json(msg="installing auditd with `%s` failed" % " ".join(argv), rc=rc, stdout=out,
                                 stderr=err)
            if not auditctl_installed(module):
                module.fail_json(msg="auditd was installed with `%s` but auditctl is still not found" % " ".join(argv))
            return
    module.fail_json(msg="auditd is not installed and no supported package manager (apt-get, dnf, yum) was found; "
                         "install auditd, or set sigsleuth_audit_install/install=false and install it yourself")


def desired_rules(module, params, run):
    try:
        signals = parse_signals(params["signals"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    abis = supported_abis()
    tables = {abi: syscall_table(abi, run) for abi in abis}
    rules = build_rules(signals, abis, tables, exec_rules=params["exec"], fork_rules=params["fork"])
    if not rules:
        module.fail_json(msg="no audit rule can be built for this machine (%s): its syscall table is unknown"
                             % os.uname().machine)
    return signals, abis, rules


def diff_text(rules):
    return "".join(rule + "\n" for rule in rules)


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def foreign_never_rules(loaded):
    return [line for line in loaded
            if rule_key(line) not in OUR_KEYS and line.startswith("-a ") and "never" in line.split()[1].split(",")]


# ---------------------------------------------------------------- present

def arm(module, store, section):
    params = module.params
    run = ModuleRunner(module)
    rules_file = PATHS["rules_file"]
    section = dict(section or {})
    result = dict(changed=False, rules_added=[], rules_removed=[], installed_auditd=False,
                  started_auditd=bool(section.get("started_auditd")), persist_file=None)

    if params["backlog_limit"] < 0:
        module.fail_json(msg="backlog_limit must be 0 (leave alone) or a positive number, got %d"
                             % params["backlog_limit"])
    if not auditctl_installed(module):
        if not params["install"]:
            module.fail_json(msg="auditd is not installed (no auditctl) and install=false; install the auditd "
                                 "package or let sigsleuth install it")
        if module.check_mode:
            signals, abis, rules = desired_rules(module, params, run)
            result.update(changed=True, installed_auditd=True, started_auditd=True, rules=rules, rules_added=rules,
                          signals=signals, abis=abis, audit_was_enabled=False, armed_at_ns=None, armed_at=None,
                          log_file=None, persist_file=rules_file if params["persist"] else None,
                          diff=dict(before="", after=diff_text(rules)),
                          msg="would install auditd, start it and load %d rules" % len(rules))
            module.exit_json(**result)
        install_auditd(module, run)
        result.update(changed=True, installed_auditd=True)
        section["installed_auditd"] = True

    try:
        log_file = read_log_file_setting(params["auditd_conf"])
        log_format = read_auditd_conf(params["auditd_conf"]).get("log_format", "RAW").upper()
        status = audit_status(run)
    except SigsleuthError as exc:
        fail_from(module, exc)
    if status["locked"]:
        module.fail_json(
            msg="the audit configuration is locked (auditctl -s: enabled 2, set by `-e 2`): no rule can be added "
                "or removed until the next reboot, so the audit source cannot be armed on this host",
            status=status)
    signals, abis, rules = desired_rules(module, params, run)
    try:
        loaded = list_rules(run)
    except SigsleuthError as exc:
        fail_from(module, exc)
    ours = our_rules(loaded)
    wanted = {rule_identity(rule) for rule in rules}
    present = {rule_identity(rule) for rule in ours}
    to_remove = [rule for rule in ours if rule_identity(rule) not in wanted]
    to_add = [rule for rule in rules if rule_identity(rule) not in present]

    # A fresh install on a systemd host starts auditd by itself: then the install started it.
    first_status = status
    if result["installed_auditd"] and status["running"]:
        section.update(started_auditd=True, auditd_pid=status["pid"], enabled_before=0)
    need_start = not status["running"]
    enabled_before = section.get("enabled_before", status["enabled"]) if section else status["enabled"]
    need_enable = not need_start and status["enabled"] == 0
    backlog_before = status.get("backlog_limit") if isinstance(status.get("backlog_limit"), int) else None
    need_backlog = bool(params["backlog_limit"]) and backlog_before is not None \
        and backlog_before < params["backlog_limit"]
    persist_text = rules_file_text(rules) if params["persist"] else None
    current_file = read_text(rules_file)
    need_write = params["persist"] and current_file != persist_text
    need_unlink = not params["persist"] and current_file is not None
    if params["persist"] and not os.path.isdir(os.path.dirname(rules_file)):
        module.fail_json(msg="persist=true needs %s, which does not exist (no augenrules on this host?)"
                             % os.path.dirname(rules_file))

    record = dict(signals=signals, exec=params["exec"], fork=params["fork"], abis=abis, rules=rules,
                  persist_file=rules_file if params["persist"] else None, log_file=log_file, log_format=log_format)
    recorded = bool(section) and section.get("armed_at_ns") is not None and all(
        section.get(key) == value for key, value in record.items())
    changed = bool(to_add or to_remove or need_start or need_enable or need_backlog or need_write or need_unlink
                   or not recorded or result["changed"])
    warnings = foreign_never_rules(loaded)
    for line in warnings:
        module.warn("a rule that is not sigsleuth's may keep audit events from being logged: %s" % line)
    if "audit_was_enabled" in section:
        audit_was_enabled = section["audit_was_enabled"]
    else:
        audit_was_enabled = first_status["enabled"] != 0 and not result["installed_auditd"]
    if not audit_was_enabled:
        module.warn("audit was off when sigsleuth armed it: unless it had been on earlier in this boot, processes "
                    "that already existed are never audited (the kernel gives a process its audit context at fork, "
                    "and only once audit has been enabled); their own kills are then seen by ftrace only")

    result.update(rules=rules, signals=signals, abis=abis, log_file=log_file, audit_was_enabled=audit_was_enabled,
                  rules_added=to_add, rules_removed=to_remove, persist_file=record["persist_file"],
                  diff=dict(before=diff_text(ours), after=diff_text(rules)))
    if not changed:
        result.update(armed_at_ns=section["armed_at_ns"], armed_at=iso_utc(section["armed_at_ns"]), status=status,
                      msg="already armed: %d audit rules loaded" % len(rules))
        module.exit_json(**result)
    if module.check_mode:
        actions = []
        if need_start:
            actions.append("start auditd")
        if need_enable:
            actions.append("enable audit")
        if need_backlog:
            actions.append("raise backlog_limit to %d" % params["backlog_limit"])
        if to_remove:
            actions.append("delete %d rules" % len(to_remove))
        if to_add:
            actions.append("add %d rules" % len(to_add))
        if need_write:
            actions.append("write %s" % rules_file)
        if need_unlink:
            actions.append("remove %s" % rules_file)
        result.update(changed=True, started_auditd=result["started_auditd"] or need_start,
                      armed_at_ns=section.get("armed_at_ns"), armed_at=iso_utc(section.get("armed_at_ns")),
                      status=status, msg="would " + (", ".join(actions) or "record the audit state"))
        module.exit_json(**result)

    undo = Undo(module, store, section or None, run)
    section.setdefault("installed_auditd", False)
    section.update(record, enabled_before=enabled_before, audit_was_enabled=audit_was_enabled,
                   systemd=has_systemd(PATHS["root"]))
    section.setdefault("started_auditd", False)
    section.setdefault("auditd_pid", None)
    section.setdefault("enabled_set_by_us", False)
    section.setdefault("backlog_limit_before", None)
    section.setdefault("backlog_limit_set", None)
    section.setdefault("armed_at_ns", None)
    try:
        # Record ownership before changing anything, so an interrupted arm is still ours to disarm.
        store.put(SECTION, section)
        if need_start:
            status = start_auditd(run)
            undo.started = status["pid"]
            section.update(started_auditd=True, auditd_pid=status["pid"])
            store.put(SECTION, section)
        if status["enabled"] == 0:
            _run(run, ["auditctl", "-e", "1"])
            undo.enabled = True
            section["enabled_set_by_us"] = True
        if need_backlog:
            _run(run, ["auditctl", "-b", str(params["backlog_limit"])])
            undo.backlog = backlog_before
            section.update(backlog_limit_before=backlog_before, backlog_limit_set=params["backlog_limit"])
        store.put(SECTION, section)
        for rule in to_remove:
            _run(run, rule_argv(rule, delete=True))
        for rule in to_add:
            _run(run, rule_argv(rule))
            undo.added.append(rule)
        if need_write:
            atomic_write(rules_file, persist_text, mode=0o640)
            undo.wrote = rules_file
        if need_unlink:
            os.unlink(rules_file)
        if section.get("armed_at_ns") is None or to_add:
            section["armed_at_ns"] = section.get("armed_at_ns") or time.time_ns()
        status = audit_status(run)
        section.setdefault("lost_at_arm", status.get("lost"))
        section.setdefault("backlog_at_arm", status.get("backlog"))
        if to_add:
            section.update(lost_at_arm=status.get("lost"), backlog_at_arm=status.get("backlog"))
        store.put(SECTION, section)
    except SigsleuthError as exc:
        undo.fail(msg=exc.msg, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)
    except (OSError, ValueError) as exc:
        undo.fail(msg="cannot arm audit: %s" % exc)
    result.update(changed=True, started_auditd=bool(section.get("started_auditd")), status=status,
                  armed_at_ns=section["armed_at_ns"], armed_at=iso_utc(section["armed_at_ns"]),
                  msg="armed audit for %s: %d rules loaded (%d added, %d removed)%s" % (
                      ", ".join(signal_name(number) for number in signals), len(rules), len(to_add), len(to_remove),
                      "; started auditd" if need_start else ""))
    module.exit_json(**result)


def _run(run, argv):
    rc, out, err = run(argv)
    if rc != 0:
        raise SigsleuthError("`%s` failed (rc=%s): %s" % (" ".join(argv), rc, (err or out or "").strip()),
                         rc=rc, stdout=out, stderr=err)
    return out


class Undo:
    """What a failing arm must take back so the host is left as it was found."""

    def __init__(self, module, store, previous_section, run):
        self.module = module
        self.store = store
        self.previous_section = previous_section
        self.run = run
        self.added = []
        self.started = None
        self.enabled = False
        self.backlog = None
        self.wrote = None

    def fail(self, **kwargs):
        problems = []
        for rule in reversed(self.added):
            rc, out, err = self.run(rule_argv(rule, delete=True))
            if rc != 0:
                problems.append("could not delete %s: %s" % (rule, (err or out).strip()))
        if self.wrote:
            try:
                os.unlink(self.wrote)
            except OSError as exc:
                problems.append("could not remove %s: %s" % (self.wrote, exc))
        if self.backlog is not None:
            self.run(["auditctl", "-b", str(self.backlog)])
        if self.started:
            try:
                stop_auditd(self.run, pid=self.started)
            except SigsleuthError as exc:
                problems.append(exc.msg)
        if self.enabled or self.started:
            self.run(["auditctl", "-e", "0"])
        try:
            if self.previous_section:
                self.store.put(SECTION, self.previous_section)
            else:
                self.store.drop(SECTION)
        except (OSError, ValueError) as exc:
            problems.append("could not restore %s: %s" % (self.store.path, exc))
        for problem in problems:
            self.module.warn(problem)
        self.module.fail_json(**kwargs)


# ---------------------------------------------------------------- absent

def disarm(module, store):
    run = ModuleRunner(module)
    rules_file = PATHS["rules_file"]
    try:
        data = store.load()
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    stale = store.is_stale(data)
    section = None if stale else data.get(SECTION)
    result = dict(changed=False, rules=[], rules_added=[], rules_removed=[], started_auditd=False,
                  installed_auditd=False, persist_file=None)
    actions = []
    ours = []
    status = None
    if auditctl_installed(module):
        try:
            status = audit_status(run)
            ours = our_rules(list_rules(run))
        except SigsleuthError as exc:
            fail_from(module, exc)
        if ours and status["locked"]:
            module.fail_json(
                msg="the audit configuration is locked (auditctl -s: enabled 2): sigsleuth's %d audit rules cannot "
                    "be removed until the next reboot" % len(ours), rules=ours, status=status)
    if ours:
        actions.append("delete %d rules" % len(ours))
    file_present = os.path.exists(rules_file)
    if file_present:
        actions.append("remove %s" % rules_file)
    stop = False
    if section and section.get("started_auditd") and status and status["running"]:
        if section.get("auditd_pid") in (None, status["pid"]):
            stop = True
            actions.append("stop auditd")
        else:
            module.warn("auditd was started by sigsleuth (pid %s) but pid %s runs it now: someone restarted it, "
                        "so it is left running" % (section.get("auditd_pid"), status["pid"]))
    restore_enabled = bool(section) and status is not None and status["enabled"] == 1 and (
        section.get("enabled_set_by_us") or (stop and section.get("enabled_before") == 0))
    if restore_enabled:
        actions.append("disable audit again")
    restore_backlog = bool(section) and status is not None and section.get("backlog_limit_set") is not None \
        and section.get("backlog_limit_before") is not None and status.get("backlog_limit") == section["backlog_limit_set"]
    if restore_backlog:
        actions.append("restore backlog_limit %s" % section["backlog_limit_before"])
    has_section = SECTION in data
    changed = bool(actions) or has_section
    result.update(changed=changed, rules_removed=ours, started_auditd=stop,
                  persist_file=rules_file if file_present else None,
                  diff=dict(before=diff_text(ours), after=""))
    if status is not None:
        result["status"] = status
    if not changed:
        result["msg"] = "not armed: no sigsleuth audit rule, file or state"
        module.exit_json(**result)
    if module.check_mode:
        result["msg"] = "would " + ", ".join(actions or ["drop the audit state"])
        module.exit_json(**result)
    try:
        for rule in ours:
            _run(run, rule_argv(rule, delete=True))
        if file_present:
            os.unlink(rules_file)
        if restore_backlog:
            _run(run, ["auditctl", "-b", str(section["backlog_limit_before"])])
        if stop:
            stop_auditd(run, pid=status["pid"])
        if restore_enabled:
            _run(run, ["auditctl", "-e", "0"])
        if status is not None:
            result["status"] = audit_status(run)
        store.drop(SECTION)
    except SigsleuthError as exc:
        fail_from(module, exc, rules_removed=ours)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot disarm audit: %s" % exc)
    result["msg"] = ("disarmed audit: " + ", ".join(actions)) if actions else "dropped the stale audit state"
    module.exit_json(**result)


def main():
    module = build_module()
    store = StateStore(module.params["state_dir"], boot_id_path=PATHS["boot_id"])
    if module.params["state"] == "absent":
        disarm(module, store)
    try:
        section = store.section(SECTION)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    arm(module, store, section)


if __name__ == "__main__":
    main()
