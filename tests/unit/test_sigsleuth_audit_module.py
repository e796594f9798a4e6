"""sigsleuth_audit with a fake auditctl/auditd: arm, idempotence, check mode, diff, locked audit, foreign rules."""

import os
from unittest import mock

import pytest

import sigsleuth_audit
from ansible.module_utils import basic
from ansible.module_utils import sigsleuth_audit_rules as audit_rules
from ansible.module_utils import sigsleuth_auditd as auditd
from sigsleuth_fakes import load_state, run_module

TABLES = {"b64": dict(audit_rules._BUILTIN_TABLES["x86_64"]), "b32": dict(audit_rules._BUILTIN_TABLES["i386"])}
USER_WATCH = "-w /etc/hosts -p wa -k userwatch"
USER_RULE = "-a always,exit -F arch=b64 -S openat -F key=other"
MUTATING = ("-a", "-d", "-e", "-b", "-D", "-R", "--signal")


class FakeAudit:
    """The kernel's audit state and the auditctl/auditd/ausyscall/apt-get commands that change it."""

    def __init__(self, rules=(), running=False, enabled=0, locked=False, installed=True):
        self.rules = list(rules)
        self.pid = 4321 if running else 0
        self.enabled = 2 if locked else enabled
        self.backlog_limit = 64
        self.lost = 0
        self.installed = installed
        self.calls = []
        self.fail_on = None  # argv prefix that fails once seen

    def status_text(self):
        return ("enabled %d\nfailure 1\npid %d\nrate_limit 0\nbacklog_limit %d\nlost %d\nbacklog 0\n"
                "backlog_wait_time 60000\nloginuid_immutable 0 unlocked\n"
                % (self.enabled, self.pid, self.backlog_limit, self.lost))

    def mutations(self):
        return [argv for argv in self.calls
                if argv[0] in ("auditd", "/usr/sbin/auditd", "apt-get")
                or (argv[0] == "auditctl" and argv[1] in MUTATING)]

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if self.fail_on and argv[:len(self.fail_on)] == self.fail_on:
            return 255, "", "Error sending add rule data request (Invalid argument)"
        tool = argv[0]
        if tool == "ausyscall":
            table = TABLES[argv[1]]
            return 0, "".join("%d\t%s\n" % (nr, name) for name, nr in sorted(table.items(), key=lambda i: i[1])), ""
        if tool in ("auditd", "/usr/sbin/auditd"):
            self.pid = 5555
            if self.enabled == 0:
                self.enabled = 1
            return 0, "", ""
        if tool == "apt-get":
            self.installed = True
            return 0, "installed", ""
        assert tool == "auditctl", argv
        option = argv[1]
        locked = self.enabled == 2
        if option == "-s":
            return 0, self.status_text(), ""
        if option == "-l":
            return 0, "".join(rule + "\n" for rule in self.rules) or "No rules\n", ""
        if locked and option in ("-a", "-d", "-e", "-b", "-w", "-W"):
            return 255, "", "Error sending add rule data request (Operation not permitted)"
        if option == "-a":
            rule = " ".join(argv[1:])
            if rule in self.rules:
                return 255, "", "Error sending add rule data request (Rule exists)"
            self.rules.append(rule)
            return 0, "", ""
        if option == "-d":
            rule = " ".join(["-a"] + argv[2:])
            if rule not in self.rules:
                return 255, "", "Error sending delete rule data request (No such file or directory)"
            self.rules.remove(rule)
            return 0, "", ""
        if option == "-e":
            self.enabled = int(argv[2])
            return 0, self.status_text(), ""
        if option == "-b":
            self.backlog_limit = int(argv[2])
            return 0, self.status_text(), ""
        if option == "--signal":
            self.pid = 0
            return 0, "", ""
        raise AssertionError("unexpected command %r" % argv)


@pytest.fixture
def env(tmp_path, monkeypatch):
    fake = FakeAudit()
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    boot_id = tmp_path / "boot_id"
    boot_id.write_text("boot-1\n")
    conf = tmp_path / "auditd.conf"
    conf.write_text("log_file = /var/log/audit/audit.log\nlog_format = ENRICHED\n")
    warnings = []
    monkeypatch.setitem(sigsleuth_audit.PATHS, "rules_file", str(rules_dir / "sigsleuth.rules"))
    monkeypatch.setitem(sigsleuth_audit.PATHS, "boot_id", str(boot_id))
    monkeypatch.setitem(sigsleuth_audit.PATHS, "root", str(tmp_path))
    monkeypatch.setattr(sigsleuth_audit, "supported_abis", lambda: ["b64", "b32"])
    monkeypatch.setattr(auditd.time, "sleep", lambda seconds: None)

    def run_command(self, args, **kwargs):
        environ = kwargs.get("environ_update") or {}
        assert environ.get("LC_ALL") == "C", "every command runs with LC_ALL=C"
        return fake(args)

    def get_bin_path(self, name, required=False, opt_dirs=None):
        if name in ("auditctl", "ausyscall", "auditd"):
            return "/usr/sbin/" + name if fake.installed else None
        if name == "apt-get":
            return "/usr/bin/apt-get"
        return None

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", get_bin_path)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    fake.tmp = tmp_path
    fake.warnings = warnings
    fake.args = dict(state_dir=str(tmp_path / "state"), auditd_conf=str(conf))
    fake.rules_file = str(rules_dir / "sigsleuth.rules")
    return fake


def arm(env, check_mode=False, **args):
    return run_module(sigsleuth_audit, dict(env.args, **args), check_mode=check_mode)


def disarm(env, check_mode=False, **args):
    return run_module(sigsleuth_audit, dict(env.args, state="absent", **args), check_mode=check_mode)


def expected_rules(signals=(9,), fork=False, exec_rules=True):
    return audit_rules.build_rules(list(signals), ["b64", "b32"], TABLES, exec_rules=exec_rules, fork_rules=fork)


def test_rules_have_the_signal_in_the_right_argument():
    rules = expected_rules(signals=(9, 15), fork=True)
    assert rules == [
        "-a always,exit -F arch=b64 -S kill,rt_sigqueueinfo,tkill,pidfd_send_signal -F a1=0x9 -F key=sigsleuth_kill",
        "-a always,exit -F arch=b64 -S tgkill,rt_tgsigqueueinfo -F a2=0x9 -F key=sigsleuth_kill",
        "-a always,exit -F arch=b32 -S kill,rt_sigqueueinfo,tkill,pidfd_send_signal -F a1=0x9 -F key=sigsleuth_kill",
        "-a always,exit -F arch=b32 -S tgkill,rt_tgsigqueueinfo -F a2=0x9 -F key=sigsleuth_kill",
        "-a always,exit -F arch=b64 -S kill,rt_sigqueueinfo,tkill,pidfd_send_signal -F a1=0xF -F key=sigsleuth_kill",
        "-a always,exit -F arch=b64 -S tgkill,rt_tgsigqueueinfo -F a2=0xF -F key=sigsleuth_kill",
        "-a always,exit -F arch=b32 -S kill,rt_sigqueueinfo,tkill,pidfd_send_signal -F a1=0xF -F key=sigsleuth_kill",
        "-a always,exit -F arch=b32 -S tgkill,rt_tgsigqueueinfo -F a2=0xF -F key=sigsleuth_kill",
        "-a always,exit -F arch=b64 -S execve,execveat -F success=1 -F key=sigsleuth_exec",
        "-a always,exit -F arch=b32 -S execve,execveat -F success=1 -F key=sigsleuth_exec",
        "-a always,exit -F arch=b64 -S clone,fork,vfork,unshare,clone3 -F success=1 -F key=sigsleuth_fork",
        "-a always,exit -F arch=b32 -S fork,clone,vfork,unshare,clone3 -F success=1 -F key=sigsleuth_fork",
    ]


def test_syscalls_an_abi_lacks_are_left_out():
    old_b32 = {name: nr for name, nr in TABLES["b32"].items() if name not in ("clone3", "pidfd_send_signal")}
    rules = audit_rules.build_rules([9], ["b32"], {"b32": old_b32}, fork_rules=True)
    assert rules[0] == "-a always,exit -F arch=b32 -S kill,rt_sigqueueinfo,tkill -F a1=0x9 -F key=sigsleuth_kill"
    assert rules[-1] == "-a always,exit -F arch=b32 -S fork,clone,vfork,unshare -F success=1 -F key=sigsleuth_fork"


def test_arm_starts_auditd_and_loads_the_rules(env):
    result, failed = arm(env, signals=["KILL", "term"])
    assert not failed, result
    rules = expected_rules(signals=(9, 15))
    assert result["changed"] and result["rules"] == rules and result["rules_added"] == rules
    assert env.rules == rules
    assert result["started_auditd"] and env.pid == 5555 and env.enabled == 1 and env.backlog_limit == 8192
    assert result["audit_was_enabled"] is False and any("audit was off" in w for w in env.warnings)
    assert result["diff"] == {"before": "", "after": "".join(rule + "\n" for rule in rules)}
    assert result["signals"] == [9, 15] and result["abis"] == ["b64", "b32"]
    assert result["log_file"] == "/var/log/audit/audit.log" and result["armed_at_ns"] > 0
    section = load_state(env.args["state_dir"])["audit"]
    assert section["rules"] == rules and section["started_auditd"] is True and section["auditd_pid"] == 5555
    assert section["enabled_before"] == 0 and section["backlog_limit_before"] == 64
    assert section["backlog_limit_set"] == 8192 and section["persist_file"] is None
    assert section["armed_at_ns"] == result["armed_at_ns"] and section["lost_at_arm"] == 0
    assert section["backlog_at_arm"] == 0 and section["log_file"] == "/var/log/audit/audit.log"
    assert section["log_format"] == "ENRICHED" and section["installed_auditd"] is False
    assert not os.path.exists(env.rules_file)


def test_second_run_changes_nothing(env):
    first, _ = arm(env, signals=["KILL"])
    before = len(env.calls)
    result, failed = arm(env, signals=["KILL"])
    assert not failed and result["changed"] is False
    assert result["armed_at_ns"] == first["armed_at_ns"] and result["rules_added"] == []
    assert [argv for argv in env.mutations() if env.calls.index(argv) >= before] == []
    assert result["diff"]["before"] == result["diff"]["after"]


def test_check_mode_changes_nothing(env):
    result, failed = arm(env, check_mode=True, signals=["KILL"])
    assert not failed and result["changed"] is True
    assert env.mutations() == [] and env.rules == [] and env.pid == 0
    assert not os.path.exists(os.path.join(env.args["state_dir"], "state.json"))
    assert result["rules_added"] == expected_rules() and result["armed_at_ns"] is None
    assert "would start auditd" in result["msg"] and "add 6 rules" in result["msg"]
    # armed: check mode agrees nothing would change
    arm(env, signals=["KILL"])
    result, _ = arm(env, check_mode=True, signals=["KILL"])
    assert result["changed"] is False


def test_changing_signals_replaces_only_our_changed_rules_with_a_diff(env):
    arm(env, signals=["KILL"])
    result, failed = arm(env, signals=["TERM"])
    assert not failed and result["changed"]
    assert all("a1=0x9" not in rule and "a2=0x9" not in rule for rule in env.rules)
    assert result["rules_removed"] == [rule for rule in expected_rules() if "0x9" in rule]
    assert "a1=0x9" in result["diff"]["before"] and "a1=0xF" in result["diff"]["after"]
    # the exec rules stay where they were; the new kill rules are appended after them
    assert sorted(env.rules) == sorted(expected_rules(signals=(15,)))


def test_foreign_rules_are_never_touched(env):
    env.rules = [USER_WATCH, USER_RULE]
    env.pid, env.enabled = 812, 1
    arm(env, signals=["KILL"], fork=True)
    assert env.rules[:2] == [USER_WATCH, USER_RULE]  # ours are appended after
    assert env.rules[2:] == expected_rules(fork=True)
    result, failed = disarm(env)
    assert not failed and env.rules == [USER_WATCH, USER_RULE]
    touched = [argv for argv in env.mutations() if "userwatch" in argv or "key=other" in argv]
    assert touched == []
    assert env.pid == 812 and env.enabled == 1  # a running auditd stays running, audit stays on


def test_locked_audit_fails_clearly_and_changes_nothing(env):
    env.enabled, env.pid = 2, 812
    result, failed = arm(env, signals=["KILL"])
    assert failed and "locked" in result["msg"] and "enabled 2" in result["msg"]
    assert env.mutations() == [] and not os.path.exists(os.path.join(env.args["state_dir"], "state.json"))


def test_locked_audit_with_our_rules_fails_at_disarm(env):
    arm(env, signals=["KILL"])
    env.enabled = 2
    result, failed = disarm(env)
    assert failed and "locked" in result["msg"] and result["rules"] == expected_rules()


def test_disarm_restores_everything_it_changed(env):
    arm(env, signals=["KILL"], persist=True)
    assert os.path.exists(env.rules_file)
    result, failed = disarm(env)
    assert not failed and result["changed"]
    assert env.rules == [] and env.pid == 0 and env.enabled == 0 and env.backlog_limit == 64
    assert result["started_auditd"] is True and result["rules_removed"] == expected_rules()
    assert result["diff"]["after"] == "" and not os.path.exists(env.rules_file)
    assert not os.path.exists(env.args["state_dir"])
    result, failed = disarm(env)
    assert not failed and result["changed"] is False


def test_disarm_check_mode_changes_nothing(env):
    arm(env, signals=["KILL"])
    before = list(env.mutations())
    result, failed = disarm(env, check_mode=True)
    assert not failed and result["changed"] and "would delete 6 rules" in result["msg"]
    assert "stop auditd" in result["msg"] and env.mutations() == before and env.rules == expected_rules()


def test_auditd_restarted_by_someone_else_is_left_running(env):
    arm(env, signals=["KILL"])
    env.pid = 6666
    result, failed = disarm(env)
    assert not failed and env.pid == 6666 and result["started_auditd"] is False
    assert any("left running" in w for w in env.warnings)


def test_running_auditd_with_audit_off_is_enabled_and_turned_off_again(env):
    env.pid, env.enabled = 812, 0
    result, _ = arm(env, signals=["KILL"])
    assert env.enabled == 1 and result["started_auditd"] is False
    disarm(env)
    assert env.enabled == 0 and env.pid == 812


def test_persist_writes_exactly_one_file_and_toggling_off_removes_it(env):
    result, _ = arm(env, signals=["KILL"], persist=True)
    assert result["persist_file"] == env.rules_file
    with open(env.rules_file) as handle:
        lines = [line.strip() for line in handle if not line.startswith("#")]
    assert lines == expected_rules()
    assert oct(os.stat(env.rules_file).st_mode & 0o777) == "0o640"
    assert os.listdir(os.path.dirname(env.rules_file)) == ["sigsleuth.rules"]
    result, _ = arm(env, signals=["KILL"], persist=True)
    assert result["changed"] is False
    result, _ = arm(env, signals=["KILL"], persist=False)
    assert result["changed"] and not os.path.exists(env.rules_file)
    assert not any(argv[:2] == ["auditctl", "-R"] or argv[:1] == ["augenrules"] for argv in env.calls)


def test_not_installed(env):
    """Installing is the role's (ansible.builtin.package): the module says why it cannot go on."""
    env.installed = False
    result, failed = arm(env)
    assert failed and "not installed" in result["msg"] and result["reason"] == "auditd_missing"
    result, failed = arm(env, check_mode=True)
    assert failed and result["reason"] == "auditd_missing"
    # The role's package task reports "would install" in check mode; the module then says what would follow.
    result, failed = arm(env, check_mode=True, installed_now=True)
    assert not failed and result["changed"] and result["installed_auditd"] and env.mutations() == []
    assert result["rules_added"] == expected_rules() and "would start auditd" in result["msg"]
    env.installed = True  # the role installed it
    result, failed = arm(env, installed_now=True)
    assert not failed and result["installed_auditd"] and env.rules == expected_rules()
    assert not any(argv[0] in ("apt-get", "dnf", "yum") for argv in env.calls)
    assert load_state(env.args["state_dir"])["audit"]["installed_auditd"] is True


def test_bad_input_fails_clearly(env, tmp_path):
    result, failed = arm(env, signals=["KILL", "NOPE"])
    assert failed and "NOPE" in result["msg"] and "valid names" in result["msg"]
    conf = tmp_path / "bad.conf"
    conf.write_text("log_file = /tmp/audit.log\n")
    result, failed = arm(env, auditd_conf=str(conf))
    assert failed and "outside /var/log" in result["msg"]
    assert env.mutations() == []


def test_failure_midway_takes_back_what_this_run_did(env):
    rules = expected_rules()
    env.fail_on = ["auditctl"] + rules[2].split()
    result, failed = arm(env, signals=["KILL"])
    assert failed and result["rc"] == 255 and "Invalid argument" in result["stderr"]
    assert env.rules == [] and env.pid == 0 and env.enabled == 0 and env.backlog_limit == 64
    assert not os.path.exists(os.path.join(env.args["state_dir"], "state.json"))


def test_auditd_that_will_not_start_is_reported(env, monkeypatch):
    original = env.__call__

    def no_start(argv):
        if argv[0] in ("auditd", "/usr/sbin/auditd"):
            env.calls.append(list(argv))
            return 1, "", "Cannot open /var/log/audit/audit.log"
        return original(argv)

    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, args, **kw: no_start(args))
    result, failed = arm(env, signals=["KILL"])
    assert failed and "cannot start auditd" in result["msg"] and env.rules == []


def test_a_never_rule_is_warned_about(env):
    env.rules = ["-a never,exit -F arch=b64 -S all -F auid=1000"]
    env.pid, env.enabled = 812, 1
    arm(env, signals=["KILL"])
    assert any("never,exit" in w for w in env.warnings)
    assert env.rules[0] == "-a never,exit -F arch=b64 -S all -F auid=1000"


def test_stale_state_after_reboot(env):
    arm(env, signals=["KILL"], persist=True)
    with open(env.args["state_dir"] + "/../boot_id", "w") as handle:
        handle.write("boot-2\n")
    env.rules, env.pid, env.enabled = [], 900, 1  # rebooted: runtime rules gone, auditd runs from boot
    result, failed = disarm(env)
    assert not failed and result["changed"] and not os.path.exists(env.rules_file)
    assert env.pid == 900 and not os.path.exists(os.path.join(env.args["state_dir"], "state.json"))


def test_build_module_factory():
    with mock.patch.object(basic, "_ANSIBLE_ARGS", None):
        from ansible.module_utils.testing import patch_module_args
        with patch_module_args({"signals": ["KILL"]}):
            module = sigsleuth_audit.build_module()
    assert module.params["exec"] is True and module.params["fork"] is False and module.params["persist"] is False
    assert module.params["installed_now"] is False and module.params["state_dir"] == "/var/lib/sigsleuth"


def test_join_leaves_audit_off_where_it_is_off(env):
    """The light default never turns audit on: that alone costs up to 2x on syscall-heavy work."""
    result, failed = arm(env, join_running=True)
    assert not failed, result
    assert result["armed"] is False and "audit is off" in result["not_armed_reason"]
    assert env.mutations() == [] and env.pid == 0 and env.enabled == 0
    section = load_state(env.args["state_dir"])["audit"]
    assert section == {"armed": False, "join_running": True, "reason": result["not_armed_reason"]}
    again, _ = arm(env, join_running=True)
    assert again["changed"] is False
    result, failed = disarm(env)
    assert not failed and not os.path.exists(env.args["state_dir"]) and env.mutations() == []


def test_join_adds_only_our_rules_where_auditd_runs(env):
    env.rules = [USER_WATCH, USER_RULE]
    env.pid, env.enabled, env.backlog_limit = 812, 1, 64
    result, failed = arm(env, join_running=True)
    assert not failed and result["armed"] is True and result["changed"] is True
    assert env.rules == [USER_WATCH, USER_RULE] + expected_rules()
    assert (env.pid, env.enabled, env.backlog_limit) == (812, 1, 64)  # the host's own settings, untouched
    assert not any(argv[:2] in (["auditctl", "-b"], ["auditctl", "-e"]) for argv in env.mutations())
    assert arm(env, join_running=True)[0]["changed"] is False
    result, failed = disarm(env)
    assert not failed and env.rules == [USER_WATCH, USER_RULE] and (env.pid, env.enabled) == (812, 1)


@pytest.mark.parametrize("setup, words", [
    (dict(installed=False), "not installed"),
    (dict(enabled=2, pid=812), "locked"),
    (dict(enabled=1, pid=0), "not running"),
])
def test_join_says_why_it_cannot_join(env, setup, words):
    for name, value in setup.items():
        setattr(env, name, value)
    result, failed = arm(env, join_running=True)
    assert not failed and result["armed"] is False and words in result["not_armed_reason"], result
    assert env.mutations() == []
