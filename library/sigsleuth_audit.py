#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, sigsleuth developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
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
    module then fails with a message saying so and RV(reason=audit_locked). The role treats that as "audit
    part failed" and keeps ftrace.
  - What was changed is recorded in the C(audit) section of C(<state_dir>/state.json), which O(state=absent)
    and M(sigsleuth.sigsleuth.sigsleuth_facts) read.
version_added: "1.0.0"
author:
  - sigsleuth developers (@sigsleuth)
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
  installed_now:
    description:
      - The caller has just installed the auditd package (the role does, with M(ansible.builtin.package)). An
        auditd running now was then started by that install (a systemd host starts it), and is stopped again
        at disarm; audit counts as having been off before arming.
      - Without C(auditctl) the module fails with RV(reason=auditd_missing); in check mode with
        O(installed_now=true) it reports what it would do once auditd is installed.
    type: bool
    default: false
  join_running:
    description:
      - Arm only where auditd already runs with audit enabled, and then only add and later remove sigsleuth's
        rules; never install, start or enable audit, nor change its backlog limit. Where audit is off (which
        keeps the host fast, as with audit enabled every syscall of every new task goes through audit), or
        auditd is not installed or not running, or the configuration is locked, nothing is armed, the reason
        is recorded for M(sigsleuth.sigsleuth.sigsleuth_facts) and returned in RV(not_armed_reason), and the
        module does not fail.
      - The role's default (audit not in C(sigsleuth_sources)) arms audit this way.
    type: bool
    default: false
  backlog_limit:
    description:
      - Raise the kernel audit backlog limit to at least this many records while armed (restored at disarm).
        V(0) leaves it alone.
    type: int
    default: 8192
  state_dir:
    description:
      - Where the C(audit) section of C(state.json) records what arm changed (auditd started, audit enabled,
        the backlog limit), so that disarm undoes exactly that. Created 0700; removed at disarm when sigsleuth
        created it and no other section is left.
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
    description:
      - Can run in check_mode and return changed status prediction without modifying target.
      - With O(installed_now=true) and auditd not installed yet, check mode predicts starting auditd and loading
        every rule.
  diff_mode:
    support: full
    description: Returns sigsleuth's loaded audit rules before and after, one a line as C(auditctl -l) prints them.
  platform:
    platforms: linux
    support: full
    description: Linux with the audit subsystem (C(auditctl), C(auditd)) only.
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
  - module: sigsleuth.sigsleuth.sigsleuth_trace
  - module: sigsleuth.sigsleuth.sigsleuth_snapshot
  - module: sigsleuth.sigsleuth.sigsleuth_facts
  - module: sigsleuth.sigsleuth.sigsleuth_watch
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

- name: Install auditd where it is missing
  ansible.builtin.package:
    name: auditd  # audit on the EL family
  register: auditd_package

- name: Arm, saying whether that install just happened (then disarm stops the auditd it started)
  sigsleuth_audit:
    signals: [KILL]
    installed_now: "{{ auditd_package is changed }}"

- name: Add sigsleuth's rules only where auditd already runs with audit enabled
  sigsleuth_audit:
    signals: [KILL]
    join_running: true

- name: Disarm
  sigsleuth_audit:
    state: absent
"""

RETURN = r"""
armed:
  description: Whether sigsleuth's audit rules are armed (false only with O(join_running), where audit cannot be joined).
  returned: when state=present
  type: bool
not_armed_reason:
  description: With O(join_running), why audit was not armed on this host.
  returned: when state=present and audit was not armed
  type: str
  sample: "audit is off on this host (auditctl -s: enabled 0) ..."
rules:
  description:
    - sigsleuth's rules after the run (in check mode, what they would be), as C(auditctl -l) prints them.
    - On failure with RV(reason=audit_locked) at O(state=absent), the rules that cannot be removed.
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
  description: The signal numbers the kill-family rules filter on, sorted (one rule per signal, ABI and argument).
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
  description:
    - Whether sigsleuth started auditd (and so stops it at disarm), or the install that O(installed_now) reports
      did; at disarm, whether it was stopped. In check mode, whether it would be.
  returned: always
  type: bool
installed_auditd:
  description:
    - Whether the auditd package was installed for sigsleuth on this boot (O(installed_now) now or at an
      earlier arm). Always false at O(state=absent); the package is never removed.
  returned: always
  type: bool
reason:
  description:
    - On failure, a machine-readable cause the caller can react to - V(auditd_missing) (no C(auditctl)),
      V(audit_locked) (C(auditctl -s) shows C(enabled 2)), V(not_root).
  returned: on failure, when the cause is one of these
  type: str
  sample: audit_locked
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
  description:
    - At arm, the persistent rules file (written or kept) when O(persist=true), else null.
    - At disarm, the persistent rules file that was (or in check mode would be) removed, else null.
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
  sample: "2026-11-26T07:01:02.123456Z"
status:
  description:
    - C(auditctl -s) after the run (enabled, pid, backlog_limit, lost, backlog, ...), numbers as integers, with
      C(locked) (enabled is 2) and C(running) (an audit daemon is registered).
    - On failure with RV(reason=audit_locked), as it was read.
  returned: when auditctl is installed
  type: dict
  sample: {enabled: 1, failure: 1, pid: 812, rate_limit: 0, backlog_limit: 8192, lost: 0, backlog: 0,
           locked: false, running: true}
msg:
  description: What was done, or would be done in check mode.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_audit_arming import (
    join_refusal, observe_audit, plan_arm, plan_disarm, plan_not_armed,
)
from ansible.module_utils.sigsleuth_audit_rules import build_rules, supported_abis, syscall_table
from ansible.module_utils.sigsleuth_command import (
    REASON_AUDITD_MISSING, REASON_NOT_ROOT, ModuleRunner, SigsleuthError, fail_from,
)
from ansible.module_utils.sigsleuth_state import SECTION_AUDIT, StateStore
from ansible.module_utils.sigsleuth_transaction import Transaction
from ansible.module_utils.sigsleuth_vocabulary import (
    AUDIT_RULES_FILE, AUDITD_CONF, BOOT_ID_PATH, STATE_DIR, parse_signals, signal_name,
)

# Module-level so unit tests can point them elsewhere.
PATHS = {"rules_file": AUDIT_RULES_FILE, "boot_id": BOOT_ID_PATH, "root": "/"}


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            signals=dict(type="list", elements="str", default=["KILL"]),
            exec=dict(type="bool", default=True),
            fork=dict(type="bool", default=False),
            persist=dict(type="bool", default=False),
            installed_now=dict(type="bool", default=False),
            join_running=dict(type="bool", default=False),
            backlog_limit=dict(type="int", default=8192),
            state_dir=dict(type="path", default=STATE_DIR),
            auditd_conf=dict(type="path", default=AUDITD_CONF),
        ),
        supports_check_mode=True,
    )


def auditctl_installed(module):
    return module.get_bin_path("auditctl", opt_dirs=["/sbin", "/usr/sbin"]) is not None


def wanted_rules(module, run):
    """(signals, abis, rules) that the arguments ask for on this machine."""
    params = module.params
    try:
        signals = parse_signals(params["signals"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if params["backlog_limit"] < 0:
        module.fail_json(msg="backlog_limit must be 0 (leave alone) or a positive number, got %d"
                             % params["backlog_limit"])
    abis = supported_abis()
    tables = {abi: syscall_table(abi, run) for abi in abis}
    rules = build_rules(signals, abis, tables, exec_rules=params["exec"], fork_rules=params["fork"])
    if not rules:
        module.fail_json(msg="no audit rule can be built for this machine (%s): its syscall table is unknown"
                             % os.uname().machine)
    return signals, abis, rules


def arm(module, store, section):
    params = module.params
    run = ModuleRunner(module)
    signals, abis, rules = wanted_rules(module, run)
    persist_file = PATHS["rules_file"] if params["persist"] else None
    txn = Transaction(module, signals=signals, abis=abis, persist_file=persist_file, armed=True,
                      installed_auditd=bool((section or {}).get("installed_auditd") or params["installed_now"]))
    armed_before = bool(section) and section.get("armed", True)
    if params["join_running"] and not armed_before:
        join(module, txn, store, section, run)
    if not auditctl_installed(module):
        if not (module.check_mode and params["installed_now"]):
            module.fail_json(msg="auditd is not installed (no auditctl): install the audit package (the role does, "
                                 "with sigsleuth_audit_install: true)", reason=REASON_AUDITD_MISSING)
        txn.result.update(rules=rules, rules_added=rules, rules_removed=[], started_auditd=True, log_file=None,
                          audit_was_enabled=False, armed_at_ns=None, armed_at=None,
                          diff=dict(before="", after="".join(rule + "\n" for rule in rules)))
        module.exit_json(changed=True, msg="would start auditd and load %d rules" % len(rules), **txn.result)
    try:
        observed = observe_audit(run, PATHS["rules_file"], params["auditd_conf"])
    except SigsleuthError as exc:
        fail_from(module, exc)
    record = dict(signals=signals, exec=params["exec"], fork=params["fork"], abis=abis, rules=rules,
                  persist_file=persist_file, log_file=observed.log_file, log_format=observed.log_format)
    txn.result["log_file"] = observed.log_file
    plan_arm(txn, store, run, observed, rules, record, params, section, PATHS, params["installed_now"])
    txn.run(lambda done: "armed audit for %s: %d rules loaded (%d added, %d removed)%s" % (
        ", ".join(signal_name(number) for number in signals), len(rules), len(done.result["rules_added"]),
        len(done.result["rules_removed"]), "; started auditd" if "start auditd" in done.descriptions() else ""))


def observe_if_installed(module, run):
    """What is loaded and running, or None where auditctl is not installed."""
    if not auditctl_installed(module):
        return None
    try:
        return observe_audit(run, PATHS["rules_file"])
    except SigsleuthError as exc:
        fail_from(module, exc)


def join(module, txn, store, section, run):
    """Join mode: arm only where auditd already runs with audit enabled; else record why not, and exit."""
    why = join_refusal(observe_if_installed(module, run))
    if why:
        plan_not_armed(txn, store, section, why)


def disarm(module, store, data, section):
    run = ModuleRunner(module)
    observed = observe_if_installed(module, run)
    txn = Transaction(module, installed_auditd=False)
    plan_disarm(txn, store, run, observed, data, section, PATHS["rules_file"])
    if not txn.steps:
        txn.exit_unchanged("not armed: no sigsleuth audit rule, file or state")
    txn.run(lambda done: "disarmed audit: " + ", ".join(done.descriptions()) if done.descriptions() != [
        "drop the audit state"] else "dropped the stale audit state", rules_removed=txn.result["rules_removed"])


def main():
    module = build_module()
    if os.geteuid() != 0:
        module.fail_json(msg="sigsleuth_audit must run as root; connect as root or set become: true",
                         reason=REASON_NOT_ROOT)
    store = StateStore(module.params["state_dir"], boot_id_path=PATHS["boot_id"])
    try:
        data = store.load()
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    section = store.section(SECTION_AUDIT, data)
    if module.params["state"] == "absent":
        disarm(module, store, data, section)
    arm(module, store, section)


if __name__ == "__main__":
    main()
