"""The audit.log parser: captured RAW and ENRICHED logs, rotated sets, and hostile input."""

import gzip
import os
import shutil

import pytest

from ansible.module_utils import sigsleuth_audit_log as audit_log
from ansible.module_utils import sigsleuth_auditd as auditd
from ansible.module_utils import sigsleuth_command as command
from ansible.module_utils import sigsleuth_loss as loss
from ansible.module_utils import sigsleuth_audit_records as records
from ansible.module_utils import sigsleuth_audit_rules as rules
from ansible.module_utils import sigsleuth_vocabulary as vocabulary
from ansible.module_utils.sigsleuth_audit_log import AuditStats, iter_audit_events

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "audit")
GS = "\x1d"


def events(source, **kwargs):
    stats = AuditStats()
    found = list(iter_audit_events(source, stats=stats, **kwargs))
    return found, stats


def kills(found):
    return [event for event in found if event.key == rules.KEY_KILL]


def syscall_line(serial, syscall=62, name="kill", pid=100, ppid=1, comm='"sh"', exe='"/bin/sh"', key='"sigsleuth_kill"',
                 a0="64", a1="9", a2="0", seconds=1795676000, millis=0, success="yes", exit_=0, arch="c000003e",
                 enriched=True):
    line = ("type=SYSCALL msg=audit(%d.%03d:%d): arch=%s syscall=%d success=%s exit=%d a0=%s a1=%s a2=%s a3=0 "
            "items=0 ppid=%d pid=%d auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 "
            "ses=2 comm=%s exe=%s key=%s" % (seconds, millis, serial, arch, syscall, success, exit_, a0, a1, a2,
                                             ppid, pid, comm, exe, key))
    if enriched:
        line += GS + 'ARCH=x86_64 SYSCALL=%s AUID="alice" UID="root"' % name
    return line + "\n"


def record(rtype, serial, body, seconds=1795676000, millis=0):
    return "type=%s msg=audit(%d.%03d:%d): %s\n" % (rtype, seconds, millis, serial, body)


def write(tmp_path, text, name="audit.log"):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if isinstance(text, str) else text)
    return str(path)


def hexed(data):
    return (data if isinstance(data, bytes) else data.encode()).hex().upper()


# ---------------------------------------------------------------- captured logs

@pytest.mark.parametrize("fmt", ["raw", "enriched"])
def test_captured_kill_family(fmt):
    found, stats = events(os.path.join(FIXTURES, fmt, "audit.log"))
    assert stats.errors == []
    assert stats.malformed_lines == 0 and stats.truncated_lines == 0
    assert [info["path"].rsplit("/", 1)[1] for info in stats.files] == ["audit.log.1", "audit.log"]
    by_syscall = {}
    for event in kills(found):
        by_syscall.setdefault(event.syscall, []).append(event)
    assert set(by_syscall) == {"kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"}
    for name in ("tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal"):
        (event,) = by_syscall[name]
        assert event.signal == 9 and event.success and event.exit == 0
        # the victim's comm as it was at the kill: "sleep", or still "python3" when it had not exec'd yet
        assert len(event.obj_pids) == 1 and event.obj_pids[0]["comm"] in ("sleep", "python3")
        victim = event.obj_pids[0]["pid"]
        if name in ("tgkill", "rt_tgsigqueueinfo"):
            assert (event.target_pid, event.target_tid) == (victim, victim)
        elif name == "tkill":
            assert event.target_tid == victim
        else:
            assert event.target_pid == victim
    # bash's builtin kill from a short-lived subshell: sender, its argv, the victim
    builtin = [e for e in by_syscall["kill"] if e.comm == "bash" and e.argv[:2] == ["bash", "-c"]
               and e.argv[2].startswith("( kill -9")]
    assert len(builtin) == 1
    event = builtin[0]
    assert event.exe == "/usr/bin/bash" and event.argv_source == "proctitle" and event.cwd is None
    assert event.target_pid == event.obj_pids[0]["pid"] and event.auid is None and event.ses is None
    assert event.arch == "x86_64" and event.abi == "b64" and event.syscall_nr == 62


@pytest.mark.parametrize("fmt", ["raw", "enriched"])
def test_captured_hostile_names_and_special_kills(fmt):
    found, _ = events(os.path.join(FIXTURES, fmt, "audit.log"))
    found_kills = kills(found)
    comms = {event.comm for event in found_kills}
    assert "a pid=7 res=0 x" in comms  # hex-encoded comm with spaces and key=value look-alikes
    (evil,) = [e for e in found_kills if e.comm == 'k"ill key=1']
    assert evil.exe.endswith('/dir with space/k"ill key=1') and evil.argv[0] == evil.exe
    (group,) = [e for e in found_kills if e.target_pid is not None and e.target_pid < 0]
    assert group.argv[:4] == ["/usr/bin/kill", "-9", "--", str(group.target_pid)]
    assert len(group.obj_pids) == 3 and -group.target_pid in {o["pid"] for o in group.obj_pids}
    (failed,) = [e for e in found_kills if not e.success]
    assert failed.exit == -3 and failed.obj_pids == [] and failed.target_pid == 999999
    (compat,) = [e for e in found_kills if e.abi == "b32"]
    assert compat.arch == "i386" and compat.syscall == "kill" and compat.syscall_nr == 37 and compat.signal == 9
    terms = [e for e in found_kills if e.signal == 15]
    assert any(e.argv[:2] == ["bash", "-c"] for e in terms)
    threaded = [e for e in found_kills if "threading" in " ".join(e.argv)]
    assert len(threaded) == 1 and threaded[0].pid != threaded[0].obj_pids[0]["pid"]


@pytest.mark.parametrize("fmt", ["raw", "enriched"])
def test_captured_exec_and_fork(fmt):
    found, _ = events(os.path.join(FIXTURES, fmt, "audit.log"))
    execs = [e for e in found if e.key == rules.KEY_EXEC]
    assert execs and all(e.success and e.argv_source == "execve" and e.argv_complete for e in execs)
    assert all(e.cwd for e in execs)
    (long_arg,) = [e for e in execs if e.argv and e.argv[0] == "/bin/true" and len(e.argv) == 3]
    assert long_arg.argv[1] == "L" * 20000 and long_arg.argv[2] == "tail"
    (echo,) = [e for e in execs if e.argv and e.argv[0] == "/bin/echo"]
    assert echo.argv == ["/bin/echo", "plain", "with space", 'q"uote', 'a1=0x9 key="x"', "\u00ff\u00fe"]
    (fexec,) = [e for e in execs if e.syscall == "execveat"]
    assert fexec.argv == ["true", "via-fd"] and fexec.exe == "/usr/bin/true"
    forks = [e for e in found if e.key == rules.KEY_FORK]
    assert forks and all(e.child_pid and e.child_pid == e.exit for e in forks)
    assert {e.syscall for e in forks} <= {"clone", "clone3", "vfork", "fork"}
    # every exec'd child was created by an audited fork of its parent
    children = {e.child_pid for e in forks}
    assert any(e.pid in children for e in execs)


def test_raw_and_enriched_agree(tmp_path):
    """The same log in both formats gives the same events (the enrichment only adds names)."""
    base = syscall_line(10, enriched=False) + record("OBJ_PID", 10, 'opid=64 oauid=-1 ouid=0 oses=-1 ocomm="sleep"')
    rich = syscall_line(10) + record("OBJ_PID", 10, 'opid=64 oauid=-1 ouid=0 oses=-1 ocomm="sleep"' + GS +
                                     'OAUID="unset" OUID="root"')
    raw_events, _ = events([write(tmp_path, base, "raw.log")])
    rich_events, _ = events([write(tmp_path, rich, "rich.log")])
    assert [e._replace(source=None) for e in raw_events] == [e._replace(source=None) for e in rich_events]


# ---------------------------------------------------------------- rotations and time

def test_rotated_set_read_oldest_first(tmp_path):
    directory = tmp_path / "log"
    directory.mkdir()
    for index, serial in ((3, 1), (2, 2), (1, 3), (0, 4)):
        name = "audit.log" + (".%d" % index if index else "")
        (directory / name).write_text(syscall_line(serial, seconds=1795676000 + serial, pid=serial))
    (directory / "audit.log.old").write_text(syscall_line(99))  # not a rotation name: ignored
    found, stats = events(str(directory / "audit.log"))
    assert [e.serial for e in found] == [1, 2, 3, 4]
    assert stats.earliest_ns == 1795676001 * 10**9 and stats.latest_ns == 1795676004 * 10**9


def test_compressed_rotation_is_read(tmp_path):
    with gzip.open(str(tmp_path / "audit.log.1.gz"), "wb") as handle:
        handle.write(syscall_line(1).encode())
    (tmp_path / "audit.log").write_text(syscall_line(2, seconds=1795676001))
    found, stats = events(str(tmp_path / "audit.log"))
    assert [e.serial for e in found] == [1, 2] and stats.errors == []


def test_since_ns_skips_old_records_and_reports_coverage(tmp_path):
    text = "".join(syscall_line(serial, seconds=1795676000 + serial) for serial in range(1, 6))
    path = write(tmp_path, text)
    found, stats = events(path, since_ns=(1795676003 * 10**9))
    assert [e.serial for e in found] == [3, 4, 5]
    assert stats.before_since == 2 and stats.covers_since is True
    found, stats = events(path, since_ns=(1795675000 * 10**9))
    assert len(found) == 5 and stats.covers_since is False  # the oldest record is newer: rotated away


def test_since_ns_allows_for_the_coarse_audit_clock(tmp_path):
    path = write(tmp_path, syscall_line(1, seconds=1795676000, millis=996))
    found, _ = events(path, since_ns=1795676000 * 10**9 + 999_000_000)
    assert len(found) == 1  # 3 ms before the arm time is within one tick of the coarse clock


def test_rotated_files_older_than_since_are_not_opened_for_reading(tmp_path):
    (tmp_path / "audit.log.1").write_text(syscall_line(1, seconds=1795676000))
    (tmp_path / "audit.log").write_text(syscall_line(2, seconds=1795676100))
    os.utime(str(tmp_path / "audit.log.1"), (1795676000, 1795676000))
    found, stats = events(str(tmp_path / "audit.log"), since_ns=1795676050 * 10**9)
    assert [e.serial for e in found] == [2]
    assert stats.files[0]["read"] is False and stats.covers_since is True


def test_rotation_during_the_read_is_followed(tmp_path):
    log = tmp_path / "audit.log"
    # the second record is more than TIME_WINDOW_NS later: the first event is complete before the file ends
    log.write_text(syscall_line(1, seconds=1795676001) + syscall_line(5000, seconds=1795676004))
    stats = AuditStats()
    reader = iter_audit_events(str(log), stats=stats)
    first = next(reader)
    assert first.serial == 1
    # auditd rotates: audit.log -> audit.log.1, and writes a new audit.log
    os.rename(str(log), str(tmp_path / "audit.log.1"))
    log.write_text(syscall_line(9000, seconds=1795676005))
    rest = list(reader)
    assert [e.serial for e in rest] == [5000, 9000]
    assert stats.rotations_during_read == 1


def test_missing_log_is_reported_not_raised(tmp_path):
    found, stats = events(str(tmp_path / "nowhere" / "audit.log"))
    assert found == [] and "does not exist" in stats.errors[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_log_is_reported(tmp_path):
    path = write(tmp_path, syscall_line(1))
    os.chmod(path, 0)
    found, stats = events(str(path))
    assert found == [] and "cannot read" in stats.errors[0]


def test_unreadable_log_is_reported_as_root(tmp_path, monkeypatch):
    path = write(tmp_path, syscall_line(1))

    def refuse(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audit_log, "_open", refuse)
    found, stats = events([path])
    assert found == [] and "cannot read audit log" in stats.errors[0] and "Permission denied" in stats.errors[0]


# ---------------------------------------------------------------- hostile input

def test_garbage_truncation_and_malformed_lines_never_crash(tmp_path):
    garbage = bytes(range(256)) * 3
    text = (b"\x00\xff\xfe not an audit line\n" + garbage + b"\n"
            + b"type=SYSCALL msg=audit(garbage): arch=c000003e\n"
            + b"type=SYSCALL msg=audit(1795676000.12:5): short millis\n"
            + b"type=SYSCALL msg=audit(1795676000.000:7 no close paren\n"
            + b"type=SYSCALL\n\n"
            + syscall_line(8).encode()
            + syscall_line(9).encode()[:60])  # being written: no newline yet
    found, stats = events([write(tmp_path, text)])
    assert [e.serial for e in found] == [8]
    assert stats.truncated_lines == 1
    # 1 + the garbage (3 newlines in it: 4 lines) + 4 broken headers + 1 empty line
    assert stats.malformed_lines == 10


def test_overlong_line_is_dropped_with_bounded_memory(tmp_path):
    text = b"type=SYSCALL " + b"x" * (audit_log.MAX_LINE * 3) + b"\n" + syscall_line(8).encode()
    found, stats = events([write(tmp_path, text)])
    assert [e.serial for e in found] == [8] and stats.malformed_lines == 1


def test_damaged_numbers_do_not_shift_other_fields(tmp_path):
    line = syscall_line(3).replace("pid=100 ", "pid=1x0 ").replace("a1=9 ", "a1=zz ")
    (event,) = events([write(tmp_path, line)])[0]
    assert event.pid is None and event.ppid == 1 and event.signal is None and event.comm == "sh"


def test_hex_value_that_looks_like_key_value_pairs(tmp_path):
    hostile_comm = hexed('x key="sigsleuth_kill" pid=1')
    hostile_exe = hexed('/tmp/a b/pid=7 key=x')
    text = (syscall_line(4, comm=hostile_comm, exe=hostile_exe, key='"userkey"', name="openat", syscall=257)
            + syscall_line(5, comm=hostile_comm, exe=hostile_exe, pid=4242))
    found, stats = events([write(tmp_path, text)])
    assert [e.serial for e in found] == [5] and stats.foreign_events == 1
    (event,) = found
    assert event.comm == 'x key="sigsleuth_kill" pid=1' and event.exe == "/tmp/a b/pid=7 key=x"
    assert event.pid == 4242 and event.key == "sigsleuth_kill"


def test_proctitle_and_argv_values(tmp_path):
    argv = [b"/usr/bin/python3", b"-c", b"print('a=b key=c')", b"\xff\xfe"]
    title = b"\0".join(argv)
    text = (syscall_line(6)
            + record("PROCTITLE", 6, "proctitle=" + hexed(title)))
    (event,) = events([write(tmp_path, text)])[0]
    assert event.argv == ["/usr/bin/python3", "-c", "print('a=b key=c')", "\\xff\\xfe"]
    assert event.argv_source == "proctitle" and event.proctitle == event.argv and not event.argv_complete


def test_plain_proctitle_and_cwd_with_spaces(tmp_path):
    text = (syscall_line(6, syscall=59, name="execve", key='"sigsleuth_exec"')
            + record("CWD", 6, "cwd=" + hexed("/srv/my app"))
            + record("PROCTITLE", 6, 'proctitle="/usr/sbin/agent"'))
    (event,) = events([write(tmp_path, text)])[0]
    assert event.cwd == "/srv/my app" and event.argv == ["/usr/sbin/agent"] and event.argv_source == "proctitle"


def test_execve_split_over_records_with_pieces(tmp_path):
    long_arg = "x" * 9000
    text = (syscall_line(7, syscall=59, name="execve", key='"sigsleuth_exec"')
            + record("EXECVE", 7, 'argc=4 a0="/bin/tool" a1_len=18000 a1[0]=' + hexed(long_arg[:4000]))
            + record("EXECVE", 7, " a1[1]=" + hexed(long_arg[4000:]))
            + record("EXECVE", 7, ' a2=' + hexed("two words") + ' a3="last"')
            + record("PROCTITLE", 7, "proctitle=" + hexed("/bin/tool\0xxxx")))
    (event,) = events([write(tmp_path, text)])[0]
    assert event.argv == ["/bin/tool", long_arg, "two words", "last"]
    assert event.argc == 4 and event.argv_complete and event.argv_source == "execve" and event.proctitle is None


def test_execve_with_a_missing_piece_is_marked_incomplete(tmp_path):
    text = (syscall_line(7, syscall=59, name="execve", key='"sigsleuth_exec"')
            + record("EXECVE", 7, 'argc=3 a0="/bin/tool" a1_len=8 a1[1]="abcd"'))
    (event,) = events([write(tmp_path, text)])[0]
    assert event.argv == ["/bin/tool", "abcd"] and not event.argv_complete and event.argc == 3


def test_hostile_argc_does_not_allocate(tmp_path):
    text = (syscall_line(7, syscall=59, name="execve", key='"sigsleuth_exec"')
            + record("EXECVE", 7, 'argc=999999999 a0="/bin/tool"'))
    (event,) = events([write(tmp_path, text)])[0]
    assert event.argv == ["/bin/tool"] and not event.argv_complete


def test_interleaved_events_are_grouped_by_stamp(tmp_path):
    text = (syscall_line(20, pid=20)
            + syscall_line(21, syscall=59, name="execve", key='"sigsleuth_exec"', pid=21)
            + record("OBJ_PID", 20, 'opid=64 oauid=-1 ouid=0 oses=-1 ocomm="victim"')
            + record("EXECVE", 21, 'argc=1 a0="/bin/new"')
            + record("PROCTITLE", 21, 'proctitle="/bin/new"')
            + record("PROCTITLE", 20, "proctitle=" + hexed("kill\0-9\0" + "64")))
    found, _ = events([write(tmp_path, text)])
    by_serial = {e.serial: e for e in found}
    assert by_serial[20].obj_pids[0]["comm"] == "victim" and by_serial[20].argv == ["kill", "-9", "64"]
    assert by_serial[21].argv == ["/bin/new"] and by_serial[21].obj_pids == []


def test_eoe_closes_an_event_and_late_records_do_not_reopen_it(tmp_path):
    text = (syscall_line(30) + record("EOE", 30, "")
            + record("PROCTITLE", 30, 'proctitle="late"'))  # after EOE: an orphan, not part of the event
    found, stats = events([write(tmp_path, text)])
    assert len(found) == 1 and found[0].argv is None and stats.incomplete_events == 1


def test_pending_events_stay_bounded_without_eoe(tmp_path):
    """auditd writes no EOE: events close at their PROCTITLE, so memory does not grow with the file."""
    lines = []
    for serial in range(1, 5001):
        lines.append(syscall_line(serial, seconds=1795676000 + serial // 1000, millis=serial % 1000))
        lines.append(record("PROCTITLE", serial, 'proctitle="x"', seconds=1795676000 + serial // 1000,
                            millis=serial % 1000))
    path = write(tmp_path, "".join(lines))
    stats = AuditStats()
    state_sizes = []
    reader = iter_audit_events([path], stats=stats)
    for count, event in enumerate(reader):
        assert event.argv == ["x"]  # complete: its PROCTITLE was grouped in before it was yielded
        if count % 500 == 0:
            state_sizes.append(stats.max_pending)
    assert count == 4999 and stats.max_pending <= 2


def test_node_prefix_and_foreign_tools(tmp_path):
    text = ("node=web-1 " + syscall_line(40)
            + "type=USER_ACCT msg=audit(1795676000.000:41): pid=812 uid=0 auid=4294967295 ses=4294967295 "
              "msg='op=PAM:accounting acct=\"root\" exe=\"/usr/sbin/cron\" res=success'\n"
            + "type=AVC msg=audit(1795676000.000:42): avc:  denied  { read } for pid=1 comm=\"x\"\n"
            + syscall_line(43, syscall=257, name="openat", key='"userwatch"'))
    found, stats = events([write(tmp_path, text)])
    assert [e.serial for e in found] == [40]
    assert stats.ignored_records == 2 and stats.foreign_events == 1 and stats.malformed_lines == 0


def test_our_syscall_under_a_foreign_key_is_kept(tmp_path):
    """A user's kill rule listed before ours matches first: the event carries the user's key."""
    found, stats = events([write(tmp_path, syscall_line(50, key='"userkill"'))])
    assert len(found) == 1 and found[0].key == "userkill" and found[0].syscall == "kill"
    found, stats = events([write(tmp_path, syscall_line(50, key='"userkill"'))], syscalls=())
    assert found == [] and stats.foreign_events == 1


def test_several_keys_on_one_rule(tmp_path):
    key = hexed(b"userkill\x01sigsleuth_kill")
    (event,) = events([write(tmp_path, syscall_line(51, key=key))])[0]
    assert event.key == "sigsleuth_kill" and event.keys == ["userkill", "sigsleuth_kill"]


def test_unknown_arch_uses_the_enriched_syscall_name(tmp_path):
    line = syscall_line(52, arch="c00000f3", syscall=129, name="kill")
    (event,) = events([write(tmp_path, line)])[0]
    assert event.arch == "c00000f3" and event.abi == "b64" and event.syscall == "kill" and event.signal == 9
    (event,) = events([write(tmp_path, syscall_line(52, arch="c00000f3", syscall=129, enriched=False))])[0]
    assert event.syscall is None and event.signal is None and event.key == "sigsleuth_kill"


def test_rule_changes_and_daemon_records_are_noted(tmp_path):
    text = ("type=DAEMON_START msg=audit(1795676000.000:1): op=start ver=3.0.9 format=enriched res=success\n"
            + record("CONFIG_CHANGE", 2, 'auid=1000 ses=2 op=add_rule key="sigsleuth_kill" list=4 res=1')
            + record("CONFIG_CHANGE", 3, 'auid=1000 ses=2 op=remove_rule key="sigsleuth_kill" list=4 res=1',
                     seconds=1795676009)
            + record("CONFIG_CHANGE", 4, 'auid=1000 ses=2 op=add_rule key="other" list=4 res=1')
            + "type=DAEMON_END msg=audit(1795676010.000:5): op=terminate auid=0 res=success\n")
    _, stats = events([write(tmp_path, text)])
    assert [(c["op"], c["auid"]) for c in stats.rule_changes] == [("add_rule", 1000), ("remove_rule", 1000)]
    assert [d["type"] for d in stats.daemon_records] == ["DAEMON_START", "DAEMON_END"]


def test_stats_are_json_ready(tmp_path):
    import json
    _, stats = events(os.path.join(FIXTURES, "enriched", "audit.log"))
    json.dumps(stats.as_dict())
    event = events(os.path.join(FIXTURES, "enriched", "audit.log"))[0][0]
    assert set(event.to_dict()) == set(records.EVENT_FIELDS)
    json.dumps(event.to_dict())


# ---------------------------------------------------------------- configuration

def test_log_file_setting(tmp_path):
    conf = tmp_path / "auditd.conf"
    conf.write_text("# comment\nlog_file = /var/log/audit/audit.log\nlog_format = ENRICHED\n")
    assert auditd.read_log_file_setting(str(conf)) == "/var/log/audit/audit.log"
    conf.write_text("log_format = RAW\n")
    assert auditd.read_log_file_setting(str(conf)) == vocabulary.DEFAULT_AUDIT_LOG
    assert auditd.read_log_file_setting(str(tmp_path / "missing.conf")) == vocabulary.DEFAULT_AUDIT_LOG
    for bad in ("/tmp/audit.log", "/var/log/../../etc/shadow", "relative/audit.log", "/var/logx/audit.log"):
        conf.write_text("log_file = %s\n" % bad)
        with pytest.raises(command.SigsleuthError) as caught:
            auditd.read_log_file_setting(str(conf))
        assert "log_file" in caught.value.msg


def test_audit_status_parses_both_formats():
    new = ("enabled 1\nfailure 1\npid 812\nrate_limit 0\nbacklog_limit 8192\nlost 3\nbacklog 0\n"
           "backlog_wait_time 60000\nloginuid_immutable 0 unlocked\n")
    status = auditd.audit_status(lambda argv: (0, new, ""))
    assert status["enabled"] == 1 and status["pid"] == 812 and status["lost"] == 3 and status["running"]
    assert status["loginuid_immutable"] == "0 unlocked" and not status["locked"]
    old = "AUDIT_STATUS: enabled=2 flag=1 pid=0 rate_limit=0 backlog_limit=320 lost=0 backlog=0\n"
    status = auditd.audit_status(lambda argv: (0, old, ""))
    assert status["locked"] and not status["running"] and status["backlog_limit"] == 320
    with pytest.raises(command.SigsleuthError):
        auditd.audit_status(lambda argv: (1, "", "Error opening audit netlink socket"))
    with pytest.raises(command.SigsleuthError):
        auditd.audit_status(lambda argv: (0, "nonsense\n", ""))


def test_file_reader_copes_with_a_fixture_copy(tmp_path):
    shutil.copytree(os.path.join(FIXTURES, "raw"), str(tmp_path / "raw"))
    found, stats = events(str(tmp_path / "raw" / "audit.log"))
    assert kills(found) and stats.errors == []


def test_loss_reasons_name_each_gap(tmp_path):
    text = ("type=DAEMON_START msg=audit(1795676000.000:1): op=start ver=3.0.9 res=success\n"
            + record("CONFIG_CHANGE", 2, 'auid=1000 ses=2 op=add_rule key="sigsleuth_kill" list=4 res=1')
            + syscall_line(3, seconds=1795676001)
            + record("CONFIG_CHANGE", 4, 'auid=1000 ses=2 op=remove_rule key="sigsleuth_kill" list=4 res=1',
                     seconds=1795676002)
            + "type=DAEMON_END msg=audit(1795676003.000:5): op=terminate auid=0 res=success\n")
    section = {"armed_at_ns": 1795676000 * 10**9, "lost_at_arm": 2}
    _, stats = events([write(tmp_path, text)], since_ns=section["armed_at_ns"])
    reasons = loss.audit_loss_reasons(stats, section, {"lost": 5, "enabled": 1})
    assert len(reasons) == 3
    assert "lost 3 audit records" in reasons[0]
    assert "rules were removed while armed" in reasons[1] and "auid 1000" in reasons[1]
    assert "auditd stopped while armed (DAEMON_END" in reasons[2]
    _, clean = events([write(tmp_path, syscall_line(3, seconds=1795676001), "clean.log")],
                      since_ns=1795676001 * 10**9)
    assert loss.audit_loss_reasons(clean, section, {"lost": 2, "enabled": 1}) == []
    _, rotated = events([write(tmp_path, syscall_line(3, seconds=1795676001), "rotated.log")],
                        since_ns=1795675000 * 10**9)
    assert "rotation discarded" in loss.audit_loss_reasons(rotated, section, {"lost": 2, "enabled": 0})[0]


def test_default_log_file_outside_var_log_is_an_error_not_an_exception(tmp_path, monkeypatch):
    conf = tmp_path / "auditd.conf"
    conf.write_text("log_file = /tmp/elsewhere.log\n")
    monkeypatch.setattr(vocabulary, "AUDITD_CONF", str(conf))
    monkeypatch.setattr(auditd.read_log_file_setting, "__defaults__", (str(conf),))
    found, stats = events(None)
    assert found == [] and "outside /var/log" in stats.errors[0]
