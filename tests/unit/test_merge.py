"""Audit as a lineage source (sigsleuth_merge.feed_audit_lineage) on hand-made audit events."""

from ansible.module_utils.sigsleuth_audit_lineage import feed_audit_lineage
from ansible.module_utils.sigsleuth_audit_records import EVENT_FIELDS, AuditEvent
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_vocabulary import SOURCE_AUDIT

MS = 1_000_000
OFFSET = 1_700_000_000 * 1_000_000_000  # wall clock minus boot clock


def event(serial, ms, syscall, pid, ppid, **fields):
    values = dict.fromkeys(EVENT_FIELDS)
    values.update(serial=serial, time_ns=OFFSET + ms * MS, syscall=syscall, success=True, pid=pid, ppid=ppid,
                  uid=0, euid=0, auid=1000, ses=3, comm=fields.pop("comm", None), exe=fields.pop("exe", None),
                  cwd="/srv", args=(0, 0, 0, 0), obj_pids=[], key="sigsleuth_" + (
                      "kill" if syscall == "kill" else "fork" if syscall.startswith(("clone", "fork", "vfork"))
                      else "exec"))
    values.update(fields)
    return AuditEvent(**values)


def snapshot(pid, ppid, comm):
    return {"pid": pid, "ppid": ppid, "comm": comm, "exe": "/usr/bin/" + comm, "start_boot_ns": 1, "argv": [comm],
            "uid": 0, "threads": [pid]}


def lineage_of(events):
    lineage = Lineage([9], snapshot_time_ns=0)
    lineage.add_snapshot([snapshot(1, 0, "init"), snapshot(100, 1, "daemon"), snapshot(200, 1, "agent")])
    feed_audit_lineage(lineage, iter(events), OFFSET)
    return lineage


def test_posix_spawn_child_logged_before_its_parents_clone_keeps_no_unseen_notes():
    # posix_spawn: the parent's clone3 returns (and is logged) only after the child's execve.
    events = [
        event(1, 10, "execve", 300, 100, comm="bash", exe="/usr/bin/bash", argv=["bash", "-c", "kill -9 200"]),
        event(2, 9, "clone3", 100, 1, exit=300, child_pid=300),
        event(3, 12, "kill", 300, 100, comm="bash", exe="/usr/bin/bash", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    (kill,) = lineage_of(events).kills
    assert kill.sender.pid == 300 and kill.sender.source == SOURCE_AUDIT
    assert kill.sender.start_ns == 9 * MS
    assert [proc.pid for proc, _, _, _ in kill.ancestry] == [100, 1]
    assert kill.sender.notes == []


def test_a_process_whose_fork_never_comes_keeps_saying_so():
    events = [
        event(1, 10, "execve", 300, 100, comm="bash", exe="/usr/bin/bash", argv=["bash"]),
        event(3, 12, "kill", 300, 100, comm="bash", exe="/usr/bin/bash", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    (kill,) = lineage_of(events).kills
    assert [proc.pid for proc, _, _, _ in kill.ancestry] == [100, 1]
    assert any("its fork was not audited" in note for note in kill.sender.notes), kill.sender.notes
    assert any("neither its fork" in note for note in kill.sender.notes), kill.sender.notes


def test_a_zombie_sender_is_reported_exited(tmp_path):
    """Audit has no exit events: /proc settles who is still alive, and a zombie there is not."""
    from ansible.module_utils.sigsleuth_procfs import settle_liveness
    from ansible.module_utils.sigsleuth_procfs import NS_PER_TICK
    from sigsleuth_fakes import make_fake_proc

    events = [
        event(1, 9, "clone", 100, 1, exit=300, child_pid=300),
        event(2, 10, "execve", 300, 100, comm="kill", exe="/usr/bin/kill", argv=["kill", "-9", "200"]),
        event(3, 12, "kill", 300, 1, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    lineage = lineage_of(events)
    start_ticks = 9 * MS // NS_PER_TICK
    make_fake_proc(str(tmp_path), [
        dict(pid=300, ppid=1, comm="kill", start_ticks=start_ticks, exe="/usr/bin/kill", argv=[], uid=0, state="Z"),
        dict(pid=100, ppid=1, comm="daemon", start_ticks=0, exe="/usr/bin/daemon", argv=["daemon"], uid=0),
    ])
    settle_liveness([member for kill in lineage.kills for member in kill.members()], str(tmp_path))
    (kill,) = lineage.kills
    assert kill.sender.exited is True and kill.sender.alive_confirmed is False
    assert any("zombie" in note for note in kill.sender.notes), kill.sender.notes
    assert kill.ancestry[0][0].exited is False  # the daemon, alive: same start time as in the snapshot


def test_an_audit_only_kill_leaves_out_what_audit_does_not_record():
    """No siginfo code and no delivery result in audit: the report leaves them out rather than say null."""
    from ansible.module_utils.sigsleuth_clock import Clock
    from ansible.module_utils.sigsleuth_loss import Losses
    from ansible.module_utils.sigsleuth_report import kill_dict

    events = [
        event(1, 9, "clone", 100, 1, exit=300, child_pid=300),
        event(2, 10, "execve", 300, 100, comm="kill", exe="/usr/bin/kill", argv=["kill", "-9", "200"]),
        event(3, 12, "kill", 300, 100, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    (kill,) = lineage_of(events).kills
    record = kill_dict(kill, Clock(OFFSET), Losses())
    assert "si_code" not in record and "result" not in record, record
    assert record["sender"]["auid"] == 1000 and record["sender"]["facts_from"]["auid"] == "audit"
    assert record["audit"]["syscall"] == "kill" and record["audit"]["key"] == "sigsleuth_kill"


def test_newcomer_exec_logged_before_its_vfork_never_renames_the_old_owner_of_the_pid():
    # pid 150 (forked by the daemon, exec'd as "worker") forks the killer 160 and exits unseen; a spawner 170
    # vforks a newcomer into pid 150, whose execve is logged before the vfork.
    events = [
        event(1, 5, "clone", 100, 1, exit=150, child_pid=150),
        event(2, 6, "execve", 150, 100, comm="worker", exe="/usr/bin/worker", argv=["worker"]),
        event(3, 7, "clone", 150, 100, exit=160, child_pid=160),
        event(4, 8, "clone", 1, 0, exit=170, child_pid=170),
        event(5, 20, "execve", 150, 170, comm="newcomer", exe="/usr/bin/newcomer", argv=["newcomer"]),
        event(6, 19, "vfork", 170, 1, exit=150, child_pid=150),
        event(7, 30, "kill", 160, 1, comm="killer", exe="/usr/bin/killer", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    lineage = lineage_of(events)
    (kill,) = lineage.kills
    parent, comm, exe, argv = kill.ancestry[0]
    assert (parent.pid, comm, exe, argv) == (150, "worker", "/usr/bin/worker", ["worker"])
    assert parent.exited and kill.ancestry[1][0].pid == 100
    assert lineage.by_pid[150].comm == "newcomer" and lineage.by_pid[150].parent.pid == 170


def test_newcomer_from_the_same_parent_logged_before_its_vfork_is_still_a_new_process():
    events = [
        event(1, 5, "clone", 100, 1, exit=150, child_pid=150),
        event(2, 6, "execve", 150, 100, comm="worker", exe="/usr/bin/worker", argv=["worker"]),
        event(3, 7, "clone", 150, 100, exit=160, child_pid=160),
        event(5, 20, "execve", 150, 100, comm="newcomer", exe="/usr/bin/newcomer", argv=["newcomer"]),
        event(6, 19, "vfork", 100, 1, exit=150, child_pid=150),
        event(7, 30, "kill", 160, 1, comm="killer", exe="/usr/bin/killer", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    lineage = lineage_of(events)
    (kill,) = lineage.kills
    parent, comm, exe, argv = kill.ancestry[0]
    assert (parent.pid, comm, exe) == (150, "worker", "/usr/bin/worker")
    assert lineage.by_pid[150] is not parent and lineage.by_pid[150].comm == "newcomer"


def test_a_second_exec_of_the_sender_is_applied_before_its_kill():
    events = [
        event(1, 5, "clone", 100, 1, exit=150, child_pid=150),
        event(2, 6, "execve", 150, 100, comm="sh", exe="/usr/bin/dash", argv=["sh", "-c", "exec kill -9 200"]),
        event(3, 7, "execve", 150, 100, comm="kill", exe="/usr/bin/kill", argv=["kill", "-9", "200"]),
        event(4, 8, "kill", 150, 100, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    (kill,) = lineage_of(events).kills
    assert tuple(kill.sender_at_kill[1:]) == ("kill", "/usr/bin/kill", ["kill", "-9", "200"])


def test_an_orphan_adopted_by_a_subreaper_keeps_its_fork_parent():
    # The seed: the job shell 150 forks the killer 160 and exits; a subreaper 120 adopts the killer, which
    # then execs kill: audit's ppid is the subreaper, the fork says the job shell.
    events = [
        event(1, 5, "clone", 100, 1, exit=150, child_pid=150),
        event(2, 6, "execve", 150, 100, comm="sh", exe="/usr/bin/dash", argv=["sh", "-c", "..."]),
        event(3, 7, "clone", 150, 100, exit=160, child_pid=160),
        event(4, 300, "execve", 160, 120, comm="kill", exe="/usr/bin/kill", argv=["kill", "-9", "200"]),
        event(5, 301, "kill", 160, 120, comm="kill", exe="/usr/bin/kill", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    (kill,) = lineage_of(events).kills
    assert kill.sender.source == SOURCE_AUDIT and kill.sender.start_ns == 7 * MS
    assert tuple(kill.sender_at_kill[1:]) == ("kill", "/usr/bin/kill", ["kill", "-9", "200"])
    assert [(proc.pid, comm) for proc, comm, _, _ in kill.ancestry] == [(150, "sh"), (100, "daemon"), (1, "init")]


def test_children_forked_after_an_exec_read_late_take_its_image():
    # Logged out of order: the daemon's forks are read before its exec, which came first by serial. 310 was
    # forked before that exec; 320 after, and 320's child 330 inherits through it; 340 exec'd of its own;
    # 350 was forked after the daemon's next exec.
    events = [
        event(4, 13, "clone", 100, 1, exit=310, child_pid=310, comm="daemon"),
        event(6, 15, "clone", 100, 1, exit=320, child_pid=320, comm="job"),
        event(7, 16, "clone", 320, 100, exit=330, child_pid=330, comm="job"),
        event(8, 17, "clone", 100, 1, exit=340, child_pid=340, comm="job"),
        event(9, 18, "execve", 340, 100, comm="kill", exe="/usr/bin/kill", argv=["kill"]),
        event(10, 19, "execve", 100, 1, comm="next", exe="/usr/bin/next", argv=["next"]),
        event(11, 20, "clone", 100, 1, exit=350, child_pid=350, comm="next"),
        event(5, 14, "execve", 100, 1, comm="job", exe="/usr/bin/job", argv=["job", "--run"], uid=7),
    ]
    lineage = lineage_of(events)
    assert [lineage.by_pid[pid].exe for pid in (310, 320, 330, 340, 350)] == [
        "/usr/bin/daemon", "/usr/bin/job", "/usr/bin/job", "/usr/bin/kill", "/usr/bin/next"]
    assert lineage.by_pid[330].argv == ["job", "--run"] and lineage.by_pid[330].uid == 7
    assert lineage.by_pid[340].argv == ["kill"] and lineage.by_pid[310].argv == ["daemon"]


def test_a_victim_whose_fork_is_read_after_the_kill_keeps_no_unseen_note():
    events = [
        event(3, 12, "kill", 200, 1, comm="agent", exe="/usr/bin/agent", signal=9, target_pid=300,
              args=(300, 9, 0, 0), obj_pids=[{"pid": 300, "comm": "spawned"}]),
        event(2, 11, "clone3", 100, 1, exit=300, child_pid=300),
    ]
    (kill,) = lineage_of(events).kills
    assert kill.victim.source == SOURCE_AUDIT and kill.victim.parent.pid == 100
    assert kill.victim.notes == []
    assert (kill.victim.comm, kill.victim.exe, kill.victim.argv) == ("spawned", "/usr/bin/daemon", ["daemon"])


def test_a_kill_read_before_the_senders_fork_takes_the_image_and_ancestry_the_fork_gave():
    # A non-main thread of 150 forks the killer 300, which kills before that clone returns: audit logs the
    # kill first (a syscall is logged when it returns), stamped in the same tick.
    events = [
        event(1, 5, "clone", 100, 1, exit=150, child_pid=150),
        event(2, 6, "execve", 150, 100, comm="python3", exe="/usr/bin/python3", argv=["python3", "parent.py"]),
        event(4, 9, "kill", 300, 150, comm="killer", exe="/usr/bin/python3", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
        event(5, 9, "clone", 150, 100, exit=300, child_pid=300, comm="python3"),
    ]
    (kill,) = lineage_of(events).kills
    _proc, comm, exe, argv = kill.sender_at_kill
    assert (comm, exe, argv) == ("killer", "/usr/bin/python3", ["python3", "parent.py"])
    assert kill.sender.source == SOURCE_AUDIT and kill.sender.notes == []
    assert [proc.pid for proc, _, _, _ in kill.ancestry] == [150, 100, 1]


def test_a_sender_whose_fork_never_comes_has_the_exe_its_kill_record_names():
    from ansible.module_utils.sigsleuth_clock import Clock
    from ansible.module_utils.sigsleuth_loss import Losses
    from ansible.module_utils.sigsleuth_report import kill_dict

    events = [
        event(3, 12, "kill", 300, 100, comm="killer", exe="/usr/bin/killer", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
    ]
    (kill,) = lineage_of(events).kills
    sender = kill_dict(kill, Clock(OFFSET), Losses(), resolve_exe=False)["sender"]
    assert sender["exe"] == "/usr/bin/killer" and sender["facts_from"]["exe"] == "audit"
    assert sender["argv"] is None  # not guessed


def test_a_later_exec_of_a_sender_read_before_its_fork_is_not_the_kills():
    events = [
        event(1, 5, "clone", 100, 1, exit=150, child_pid=150),
        event(2, 6, "execve", 150, 100, comm="python3", exe="/usr/bin/python3", argv=["python3", "parent.py"]),
        event(4, 9, "kill", 300, 150, comm="killer", exe="/usr/bin/python3", signal=9, target_pid=200,
              args=(200, 9, 0, 0), obj_pids=[{"pid": 200}]),
        event(5, 9, "execve", 300, 150, comm="true", exe="/usr/bin/true", argv=["true"]),
        event(6, 9, "clone", 150, 100, exit=300, child_pid=300, comm="python3"),
    ]
    (kill,) = lineage_of(events).kills
    _proc, comm, exe, argv = kill.sender_at_kill
    assert (comm, exe, argv) == ("killer", "/usr/bin/python3", ["python3", "parent.py"])
    assert kill.sender.exe == "/usr/bin/true"


def test_a_real_kill_event_completed_before_its_senders_clone_keeps_the_image_the_clone_gave():
    """tests/fixtures/audit/edge/kill_before_its_fork.log: the kill's records end before the clone's."""
    import os

    from ansible.module_utils.sigsleuth_audit_log import iter_audit_events

    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "audit", "edge", "kill_before_its_fork.log")
    offset = 1_796_316_000 * 1_000_000_000
    lineage = Lineage([9], snapshot_time_ns=0)
    lineage.add_snapshot([snapshot(1, 0, "init"), snapshot(3602, 1, "pytest"), snapshot(16399, 3602, "victim")])
    events = list(iter_audit_events([path]))
    assert [e.serial for e in events].index(393313) < [e.serial for e in events].index(393312)  # the race
    feed_audit_lineage(lineage, iter(events), offset)
    (kill,) = lineage.kills
    python = "/root/.pyenv/versions/3.11.7/bin/python3.11"
    assert (kill.sender.pid, kill.sender_at_kill.comm, kill.sender_at_kill.exe) == (16402, "fx-tf-killer", python)
    assert kill.sender_at_kill.argv is not None and kill.sender_at_kill.argv[2].endswith("forensics_stage.py")
    assert [(a.process.pid, a.comm) for a in kill.ancestry][:2] == [(16400, "fx-tf-parent"), (3602, "pytest")]
    assert kill.sender.notes == []
