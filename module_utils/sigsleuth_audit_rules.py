# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth's audit rules: build them, and compare them with what is loaded. Standard library only; Python 3.9+.
"""Audit rules for the kill family, exec and fork, under sigsleuth's own keys.

``build_rules()`` returns our rules in the exact text ``auditctl -l`` prints for them, so "which of ours are
loaded" is a plain comparison with ``our_rules(list_rules())``. Only rules whose key is one of ``OUR_KEYS``
are ever touched. Also here: audit's syscall numbering per architecture, which the log reader uses to name
the syscall of a record.
"""

from __future__ import annotations

import os

from ansible.module_utils.sigsleuth_command import run_checked, run_command
from ansible.module_utils.sigsleuth_vocabulary import (
    EXEC_SYSCALLS, FORK_SYSCALLS, KILL_SYSCALLS, KILL_SYSCALLS_SIGNAL_IN_A1, KILL_SYSCALLS_SIGNAL_IN_A2, PROC,
    UNSHARE_SYSCALL,
)

KEY_KILL = "sigsleuth_kill"
KEY_EXEC = "sigsleuth_exec"
KEY_FORK = "sigsleuth_fork"
OUR_KEYS = (KEY_KILL, KEY_EXEC, KEY_FORK)
# The fork rules also watch unshare: unshare(CLONE_NEWPID) makes the caller's later forks return
# namespace-local pids, which the audit-only lineage must not take for global ones.
FORK_RULE_SYSCALLS = FORK_SYSCALLS + (UNSHARE_SYSCALL,)
OUR_SYSCALLS = frozenset(KILL_SYSCALLS + EXEC_SYSCALLS + FORK_RULE_SYSCALLS)

# AUDIT_ARCH_* values as printed in SYSCALL records, and the syscall numbers we name without ausyscall.
ARCHES = {
    0xC000003E: "x86_64",
    0x40000003: "i386",
    0xC00000B7: "aarch64",
    0x40000028: "arm",
}
_BUILTIN_TABLES = {
    "x86_64": {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
               "pidfd_send_signal": 424, "execve": 59, "execveat": 322, "clone": 56, "fork": 57,
               "vfork": 58, "clone3": 435, "unshare": 272},
    "i386": {"kill": 37, "tkill": 238, "tgkill": 270, "rt_sigqueueinfo": 178, "rt_tgsigqueueinfo": 335,
             "pidfd_send_signal": 424, "execve": 11, "execveat": 358, "clone": 120, "fork": 2,
             "vfork": 190, "clone3": 435, "unshare": 310},
    "aarch64": {"kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
                "pidfd_send_signal": 424, "execve": 221, "execveat": 281, "clone": 220, "clone3": 435,
                "unshare": 97},
    "arm": {"kill": 37, "tkill": 238, "tgkill": 268, "rt_sigqueueinfo": 178, "rt_tgsigqueueinfo": 363,
            "pidfd_send_signal": 424, "execve": 11, "execveat": 387, "clone": 120, "fork": 2, "vfork": 190,
            "clone3": 435, "unshare": 337},
}
# machine -> (its 64-bit audit arch, its 32-bit compat arch)
_MACHINE_ABIS = {"x86_64": ("x86_64", "i386"), "aarch64": ("aarch64", "arm")}
_SYSCALL_NAMES = {arch: {nr: name for name, nr in table.items()} for arch, table in _BUILTIN_TABLES.items()}


def syscall_name(arch, number):
    """The name of one of our syscalls by audit arch name and number, or None."""
    return _SYSCALL_NAMES.get(arch, {}).get(number)


def supported_abis(machine=None, proc=PROC):
    """The audit ABIs (``b64``/``b32``) whose syscalls can run here, e.g. ["b64", "b32"] on x86_64."""
    machine = machine or os.uname().machine
    if machine in _MACHINE_ABIS:
        return ["b64", "b32"] if _compat_enabled(machine, proc) else ["b64"]
    if machine.endswith("64") or machine == "s390x":
        return ["b64"]
    return ["b32"]


def _compat_enabled(machine, proc):
    if machine == "x86_64":
        # CONFIG_IA32_EMULATION registers abi/vsyscall32; ia32_emulation=0 on the command line turns it off.
        if not os.path.exists(os.path.join(proc, "sys/abi/vsyscall32")):
            return False
        try:
            with open(os.path.join(proc, "cmdline")) as handle:
                words = handle.read().split()
        except OSError:
            words = []
        return not any(word in ("ia32_emulation=0", "ia32_emulation=false", "ia32_emulation=off",
                                "ia32_emulation=n", "ia32_emulation=no") for word in words)
    try:  # arm64 and others: a compat syscall table in kallsyms
        with open(os.path.join(proc, "kallsyms"), "rb") as handle:
            for line in handle:
                if line.endswith(b" compat_sys_call_table\n"):
                    return True
    except OSError:
        pass
    return False


def syscall_table(abi, run=run_command, machine=None):
    """{name: number} of the syscalls we use for an ABI, as ausyscall knows them (our built-in table
    when ausyscall is missing, e.g. in check mode before auditd is installed)."""
    rc, out, _err = run(["ausyscall", abi, "--dump"])
    if rc == 0 and out:
        table = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1] in OUR_SYSCALLS:
                table[parts[1]] = int(parts[0])
        if table:
            return table
    machine = machine or os.uname().machine
    arches = _MACHINE_ABIS.get(machine)
    if arches:
        return dict(_BUILTIN_TABLES[arches[0] if abi == "b64" else arches[1]])
    return {}


# ---------------------------------------------------------------- rules

def _syscall_list(names, table):
    present = sorted((table[name], name) for name in names if name in table)
    return ",".join(name for _number, name in present)


def build_rules(signals, abis, tables, exec_rules=True, fork_rules=False):
    """Our rules, in load order, each in the exact form ``auditctl -l`` prints it.

    signals: signal numbers; abis: ["b64", "b32"]; tables: {abi: syscall_table(abi)}. One rule per
    (ABI, signal, argument position), so each rule filters on one signal number; syscalls an ABI lacks
    are left out. Exec and fork rules only log successful calls (a failed one changes no lineage).
    Fork rules cost one event per process or thread created: several times the volume of the exec rules
    on a busy host; enable them only when audit is the only source of lineage.
    """
    rules = []
    for signal in signals:
        for abi in abis:
            table = tables.get(abi) or {}
            for names, arg in ((KILL_SYSCALLS_SIGNAL_IN_A1, "a1"), (KILL_SYSCALLS_SIGNAL_IN_A2, "a2")):
                syscalls = _syscall_list(names, table)
                if syscalls:
                    rules.append("-a always,exit -F arch=%s -S %s -F %s=0x%X -F key=%s"
                                 % (abi, syscalls, arg, int(signal), KEY_KILL))
    for wanted, names, key in ((exec_rules, EXEC_SYSCALLS, KEY_EXEC), (fork_rules, FORK_RULE_SYSCALLS, KEY_FORK)):
        if not wanted:
            continue
        for abi in abis:
            syscalls = _syscall_list(names, tables.get(abi) or {})
            if syscalls:
                rules.append("-a always,exit -F arch=%s -S %s -F success=1 -F key=%s" % (abi, syscalls, key))
    return rules


def rule_key(rule):
    """The key of a rule line as ``auditctl -l`` prints it (``-F key=K`` or ``-k K``), or None."""
    words = rule.split()
    for index, word in enumerate(words):
        if word == "-F" and index + 1 < len(words) and words[index + 1].startswith("key="):
            return words[index + 1][4:]
        if word == "-k" and index + 1 < len(words):
            return words[index + 1]
    return None


def rule_identity(rule):
    """A comparison key for a rule line that does not depend on the order of its -S list."""
    words = rule.split()
    for index, word in enumerate(words[:-1]):
        if word == "-S":
            words[index + 1] = ",".join(sorted(words[index + 1].split(",")))
    return tuple(words)


def our_rules(lines):
    """The lines that carry one of our keys, in their loaded order."""
    return [line for line in lines if rule_key(line) in OUR_KEYS]


def list_rules(run=run_command):
    """The loaded rules, one ``auditctl -l`` line each ([] for "No rules")."""
    out = run_checked(run, ["auditctl", "-l"])
    return [line.rstrip() for line in out.splitlines() if line.strip() and line.strip() != "No rules"]


def rule_argv(rule, delete=False):
    """auditctl argv that adds (or deletes) a rule given in ``auditctl -l`` form."""
    words = rule.split()
    if delete and words and words[0] == "-a":
        words[0] = "-d"
    elif delete and words and words[0] == "-w":
        words[0] = "-W"
    return ["auditctl"] + words


def rules_file_text(rules):
    """The content of our persistent rules file (read by augenrules at the next auditd start)."""
    head = ("## sigsleuth: kill-family, exec and fork rules. Written by sigsleuth_audit; removed at disarm.\n"
            "## Do not edit: disarm deletes exactly this file.\n")
    return head + "".join(rule + "\n" for rule in rules)
