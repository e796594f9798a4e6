"""The lineage engine, fed one event at a time."""

import io
import os

from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_vocabulary import CLONE_THREAD

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace")
S = 1_000_000_000


def fork(ts, parent, child, tgid=None, flags=0x1200000):
    return [("task_newtask", ts, 0, parent, tgid or parent, (child, "x", flags)),
            ("sched_process_fork", ts, 0, parent, tgid or parent, (parent, child))]


def exec_(ts, pid, filename):
    return [("sched_process_exec", ts, 0, pid, pid, (filename, pid, pid))]


def exit_(ts, tid, tgid=None, group_dead=True):
    return [("sched_process_exit", ts, 0, tid, tgid or tid, ("x", tid, group_dead))]


def kill(ts, sender, victim, sig=9, tgid=None, code=0, res=0):
    return [("sys_enter_kill", ts, 0, sender, tgid or sender, {"pid": victim, "sig": sig}),
            ("signal_generate", ts, 0, sender, tgid or sender, (sig, 0, code, "v", victim, 1, res)),
            ("sys_exit_kill", ts, 0, sender, tgid or sender, 0)]


def run(events, snapshot=(), signals=(9,), precision="syscall", opens_traced=False):
    """The lineage of events; syscall precision unless asked otherwise (the light default ignores syscall events)."""
    lineage = Lineage(signals, snapshot_time_ns=0, precision=precision, opens_traced=opens_traced)
    lineage.add_snapshot(snapshot)
    for event in events:
        lineage.feed(event)
    return lineage


def snap(pid, ppid, comm, start=1, exe=None):
    return {"pid": pid, "ppid": ppid, "comm": comm, "exe": exe, "start_boot_ns": start, "argv": [comm],
            "uid": 0, "threads": [pid]}


def chain_names(k):
    return [(p.pid, comm) for p, comm, _, _ in k.ancestry]


def test_seed_case_reaped_job_shell_is_named():
    snapshot = [snap(1, 0, "init"), snap(100, 1, "agentd"), snap(200, 1, "agent")]
    events = (fork(10 * S, 100, 300) + exec_(10 * S + 1, 300, "/usr/bin/sh")
              + fork(11 * S, 300, 301) + exit_(11 * S + 5, 300)          # job shell exits at once
              + exec_(12 * S, 301, "/usr/bin/kill") + kill(13 * S, 301, 200))
    (k,) = run(events, snapshot).kills
    assert (k.sender.pid, (k.sender_at_kill.comm, k.sender_at_kill.exe)) == (301, ("kill", "/usr/bin/kill"))
    assert chain_names(k) == [(300, "sh"), (100, "agentd"), (1, "init")]
    assert k.ancestry[0][0].exited and k.ancestry[0][0].exit_ns == 11 * S + 5
    assert not k.ancestry[1][0].exited
    assert k.victim.comm == "agent" and k.mechanism == "kill" and k.origin == "user"


def test_pid_reuse_never_confuses_incarnations():
    events = (fork(1 * S, 1, 50) + exec_(1 * S + 1, 50, "/usr/bin/old") + fork(2 * S, 50, 60) + exit_(3 * S, 50)
              + fork(4 * S, 1, 50) + exec_(4 * S + 1, 50, "/usr/bin/newcomer")   # pid 50 reused
              + kill(5 * S, 60, 1))
    lineage = run(events, [snap(1, 0, "init")])
    (k,) = lineage.kills
    parent = k.ancestry[0][0]
    assert (parent.pid, k.ancestry[0][1], parent.exited) == (50, "old", True)
    assert lineage.by_pid[50] is not parent and lineage.by_pid[50].comm == "newcomer"


def test_exec_renames_and_identity_at_kill_time():
    events = (fork(1 * S, 1, 10) + exec_(2 * S, 10, "/usr/bin/python3") + fork(3 * S, 10, 11)
              + kill(4 * S, 11, 1) + exec_(5 * S, 10, "/usr/bin/later"))
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.ancestry[0].comm, k.ancestry[0].exe) == ("python3", "/usr/bin/python3")   # as it was when the kill happened


def test_long_exec_name_is_cut_like_the_kernel():
    lineage = run(fork(1 * S, 1, 10) + exec_(2 * S, 10, "/opt/a-very-long-program-name"), [snap(1, 0, "init")])
    assert lineage.by_pid[10].comm == "a-very-long-pro"


def test_thread_sender_and_thread_fork_parent():
    events = (fork(1 * S, 1, 10) + fork(2 * S, 10, 11, flags=0x3d0f00 | CLONE_THREAD)   # thread 11 of 10
              + fork(3 * S, 11, 12, tgid=10)                                               # the thread forks
              + kill(4 * S, 11, 12, tgid=10))
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.sender.pid, k.sender_tid) == (10, 11)
    assert k.victim.parent.pid == 10


def test_kill_aimed_at_a_thread_is_a_kill_of_its_process():
    events = fork(1 * S, 1, 10) + fork(2 * S, 10, 11, flags=CLONE_THREAD) + fork(3 * S, 1, 20) + kill(4 * S, 20, 11)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.victim.pid, k.victim_tid) == (10, 11)


def test_exited_and_childless_processes_are_pruned():
    events = []
    for i in range(1000):
        events += fork(i * S, 1, 1000 + i) + exec_(i * S + 1, 1000 + i, "/bin/true") + exit_(i * S + 2, 1000 + i)
    lineage = run(events, [snap(1, 0, "init")])
    assert set(lineage.by_pid) == {1}
    assert lineage.by_pid[1].live_children == 0


def test_snapshot_process_forked_between_enable_and_snapshot_is_merged():
    events = fork(5 * S, 1, 10) + kill(6 * S, 10, 1)
    (k,) = run(events, [snap(1, 0, "init"), snap(10, 1, "late", start=5 * S + 3_000_000)]).kills
    assert k.sender.start_ns == 5 * S and k.sender.source == "ftrace"


def test_unseen_parent_is_a_placeholder_with_a_note():
    (k,) = run(kill(1 * S, 77, 1), [snap(1, 0, "init")]).kills
    assert k.sender.source == "unseen" and k.sender.notes


def test_repeated_send_to_dying_victim_folds():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20) + kill(2 * S, 20, 10) + kill(3 * S, 20, 10, res=1)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert k.count == 2


def test_group_kill_gives_one_record_per_victim():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 11) + fork(1 * S, 1, 20)
    events += [("sys_enter_kill", 2 * S, 0, 20, 20, {"pid": -10 & 0xffffffff, "sig": 9})]
    events += [("signal_generate", 2 * S, 0, 20, 20, (9, 0, 0, "v", victim, 1, 0)) for victim in (10, 11)]
    kills = run(events, [snap(1, 0, "init")]).kills
    assert [k.victim.pid for k in kills] == [10, 11]
    assert all(k.mechanism == "kill" for k in kills)


def test_unarmed_signal_is_ignored_and_kernel_origin_has_no_sender():
    events = fork(1 * S, 1, 10) + kill(2 * S, 1, 10, sig=2)
    events += [("signal_generate", 3 * S, 0, 10, 10, (9, 0, 128, "v", 10, 1, 0))]
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert k.origin == "kernel" and k.sender is None


def test_signal_without_syscall_is_not_called_kill():
    events = fork(1 * S, 1, 10) + [("signal_generate", 2 * S, 0, 1, 1, (9, 0, 0, "v", 10, 1, 0))]
    (k,) = run(events, [snap(1, 0, "init")], opens_traced=True).kills
    assert k.mechanism == "unknown"
    (light,) = run(events, [snap(1, 0, "init")], precision="light").kills
    assert light.mechanism == "user_signal" and "kill" in light.mechanism_candidates


def test_captured_fixture_end_to_end():
    with open(os.path.join(FIXTURES, "seed_small.trace"), "rb") as handle:
        lineage = Lineage([9, 15])
        for event in iter_events(handle, TraceStats()):
            lineage.feed(event)
    truth = dict(item.split("=") for item in open(os.path.join(FIXTURES, "seed_small.truth")).read().split())
    first, term, threaded = lineage.kills
    assert first.victim.pid == int(truth["agent"])
    assert (first.sender_at_kill.comm, first.sender_at_kill.exe) == ("kill", "/usr/bin/kill")
    assert first.ancestry[0][1] == "sh" and first.ancestry[0][0].exited
    assert term.signal == 15 and term.sender_at_kill.comm == "bash"
    assert threaded.sender_tid != threaded.sender.pid        # a python thread sent it
    assert threaded.sender_at_kill.comm == "a pid=7 grp=0 r"  # a hostile name stays data
    assert threaded.victim.pid == int(truth["victim3"])


def signal(ts, current, victim, code=0, sig=9, tgid=None):
    return [("signal_generate", ts, 0, current, tgid or current, (sig, 0, code, "v", victim, 1, 0))]


def test_mechanism_is_the_syscall_seen_around_the_send():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20)
    events += [("sys_enter_tgkill", 2 * S, 0, 20, 20, {"tgid": 10, "pid": 10, "sig": 9})]
    events += signal(2 * S, 20, 10, code=-6)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.mechanism, k.origin, k.sender.pid) == ("tgkill", "user", 20)
    assert k.syscall_args["syscall"] == "tgkill"


def test_parent_death_signal_is_sent_by_the_exiting_parent():
    events = fork(1 * S, 1, 10) + fork(2 * S, 10, 11) + exit_(3 * S, 10) + signal(3 * S + 1, 10, 11)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.mechanism, k.origin, k.sender.pid) == ("pdeath_signal", "kernel", 10)


def test_reused_tid_is_not_a_parent_death():
    events = fork(1 * S, 1, 10) + exit_(2 * S, 10) + fork(3 * S, 1, 10) + fork(3 * S, 1, 11) + signal(4 * S, 10, 11)
    (k,) = run(events, [snap(1, 0, "init")], opens_traced=True).kills
    assert k.mechanism == "unknown"


def test_cgroup_kill_is_a_send_from_a_process_that_opened_cgroup_kill():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20)
    events += [("sys_enter_openat", 2 * S, 0, 20, 20, {"dfd": 0, "filename": 1, "flags": 1, "mode": 0})]
    events += signal(2 * S + 5, 20, 10)
    (k,) = run(events, [snap(1, 0, "init")], opens_traced=True).kills
    assert (k.mechanism, k.origin, k.sender.pid) == ("cgroup_kill", "user", 20)
    assert "ftrace:sys_enter_openat(cgroup.kill)" in k.evidence


def test_without_an_open_of_cgroup_kill_an_si_user_send_is_not_called_cgroup_kill():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20) + signal(2 * S + 5, 20, 10)
    (k,) = run(events, [snap(1, 0, "init")], opens_traced=True).kills
    assert (k.mechanism, k.origin, k.sender.pid) == ("unknown", "user", 20)
    assert "opened no cgroup.kill" in k.attribution_note


def test_where_opens_cannot_be_filtered_cgroup_kill_is_what_no_kill_syscall_leaves():
    """Syscall precision on a kernel without user-string filters: every kill-family syscall is traced, so an
    SI_USER send to another process outside them, from a live thread, is cgroup.kill."""
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20) + signal(2 * S + 5, 20, 10)
    (k,) = run(events, [snap(1, 0, "init")], opens_traced=False).kills
    assert (k.mechanism, k.sender.pid, k.evidence[-1]) == ("cgroup_kill", 20, "ftrace:no_kill_syscall")
    (self_sent,) = run(fork(1 * S, 1, 10) + signal(2 * S, 10, 10), [snap(1, 0, "init")]).kills
    assert self_sent.mechanism == "unknown"  # SIGPIPE and SIGXFSZ come so: never called cgroup.kill
    (term,) = run(fork(1 * S, 1, 10) + fork(1 * S, 1, 20) + signal(2 * S, 20, 10, sig=15), [snap(1, 0, "init")],
                  signals=(15,)).kills
    assert term.mechanism == "unknown"  # cgroup.kill sends SIGKILL only


def test_oom_kill_names_the_trigger_never_a_sender():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20) + signal(2 * S, 20, 10, code=128)
    events += [("mark_victim", 2 * S + 10, 0, 20, 20, (10, "hog", 100, 90, 5, 0, 0))]
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.mechanism, k.origin, k.sender) == ("oom_kill", "kernel", None)
    assert k.trigger[0].pid == 20 and k.oom["anon_rss_kb"] == 90


def test_cpu_rlimit_inherited_through_fork():
    events = fork(1 * S, 1, 10) + [("sys_enter_prlimit64", 2 * S, 0, 10, 10, {"pid": 0, "resource": 0, "new_rlim": 1})]
    events += fork(3 * S, 10, 11) + signal(4 * S, 11, 11, code=128)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.mechanism, k.origin, k.sender) == ("rlimit_cpu", "kernel", None)


def test_kernel_send_without_evidence_stays_generic():
    events = fork(1 * S, 1, 10) + signal(2 * S, 10, 10, code=128)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.mechanism, k.origin) == ("kernel", "kernel")


def test_ambiguous_rename_is_settled_by_the_known_old_name():
    rename = ("task_rename", 2 * S, 0, 10, 10, (10, ((b"x", b"y newcomm=z"), (b"x newcomm=y", b"z"))))
    lineage = run(fork(1 * S, 1, 10) + exec_(1 * S + 1, 10, "/bin/x") + [rename], [snap(1, 0, "init")])
    assert lineage.by_pid[10].comm == "y newcomm=z"
    unknown = run(fork(1 * S, 1, 10) + exec_(1 * S + 1, 10, "/bin/q") + [rename], [snap(1, 0, "init")])
    assert unknown.by_pid[10].comm == "q" and unknown.by_pid[10].notes


def test_light_knows_a_cpu_limit_from_the_arm_time_snapshot():
    """Light precision traces no prlimit: a limit the snapshot saw, inherited through fork, still names it."""
    limited = dict(snap(10, 1, "batch"), rlimits=[0])
    events = fork(3 * S, 10, 11) + signal(4 * S, 11, 11, code=128)
    (k,) = run(events, [snap(1, 0, "init"), limited], precision="light").kills
    assert (k.mechanism, k.origin, k.sender, k.evidence[-1]) == ("rlimit_cpu", "kernel", None, "snapshot:rlimits")
    (unlimited,) = run(fork(3 * S, 1, 11) + signal(4 * S, 11, 11, code=128), [snap(1, 0, "init")],
                       precision="light").kills
    assert unlimited.mechanism == "kernel" and "rlimit_cpu" in unlimited.mechanism_candidates


def test_light_ignores_syscall_events_and_names_families():
    events = fork(1 * S, 1, 10) + fork(1 * S, 1, 20) + kill(2 * S, 20, 10)
    (k,) = run(events, [snap(1, 0, "init")], precision="light").kills
    assert (k.mechanism, k.sender.pid, k.origin) == ("user_signal", 20, "user")
    assert k.syscall_args is None and not any("sys_enter" in e for e in k.evidence)


def rename(ts, pid, old, new):
    return [("task_rename", ts, 0, pid, pid, (pid, ((old, new),)))]


def test_a_newcomer_whose_fork_was_lost_never_rewrites_the_exited_ancestor_on_its_pid():
    """Pid 50 exits with its child 60 alive (so it stays indexed); a newcomer whose fork the trace lost takes
    pid 50, renames itself, execs and forks: that is a new, unseen incarnation, and 60's kill still names the
    ancestor as it was."""
    events = (fork(1 * S, 1, 50) + exec_(1 * S + 1, 50, "/usr/bin/old") + fork(2 * S, 50, 60) + exit_(3 * S, 50)
              + rename(4 * S, 50, b"spawner", b"sh") + exec_(4 * S + 1, 50, "/bin/sh") + fork(4 * S + 2, 50, 70)
              + exit_(4 * S + 3, 50) + kill(5 * S, 60, 1))
    lineage = run(events, [snap(1, 0, "init")])
    (k,) = lineage.kills
    ancestor = k.ancestry[0][0]
    assert (ancestor.pid, ancestor.comm, ancestor.exe, ancestor.exited, ancestor.exit_ns) == \
        (50, "old", "/usr/bin/old", True, 3 * S)
    assert chain_names(k) == [(50, "old"), (1, "init")]
    newcomer = lineage.by_pid[70].parent
    assert newcomer is not ancestor and (newcomer.pid, newcomer.comm, newcomer.exe) == (50, "sh", "/bin/sh")
    assert newcomer.source == "unseen" and newcomer.parent is None and newcomer.exited


def test_a_thread_exec_after_its_leader_exited_is_the_same_process():
    """A non-leader thread exec'd and took over the leader's pid (old_pid differs): the leader's exit seen
    before it leaves the process the same incarnation, never a newcomer."""
    events = (fork(1 * S, 1, 10) + fork(2 * S, 10, 11, flags=CLONE_THREAD) + fork(2 * S + 1, 10, 12)
              + exit_(3 * S, 10, group_dead=False)
              + [("sched_process_exec", 3 * S + 1, 0, 10, 10, ("/usr/bin/next", 10, 11))])
    lineage = run(events, [snap(1, 0, "init")])
    assert lineage.by_pid[10] is lineage.by_pid[12].parent and lineage.by_pid[10].exe == "/usr/bin/next"


# A send from the pid of an exited process: only its parent-death signals to its own children are its own.

def exited_with_a_live_child():
    """50 forks 60 (alive, so 50 stays indexed), then exits at 3 s; 70 is another process."""
    return fork(1 * S, 1, 50) + exec_(1 * S + 1, 50, "/usr/bin/old") + fork(1 * S + 2, 1, 70) \
        + fork(2 * S, 50, 60) + exit_(3 * S, 50)


def test_a_user_send_from_an_exited_pid_to_another_process_is_a_later_process_not_the_dead_one():
    events = exited_with_a_live_child() + signal(3 * S + 1000, 50, 70)
    lineage = run(events, [snap(1, 0, "init")], precision="light")
    (k,) = lineage.kills
    assert k.sender is not None and k.sender.pid == 50 and k.sender.comm != "old"
    assert k.sender.source == "unseen" and not k.sender.exited
    assert k.mechanism != "pdeath_signal"
    assert any("previous process (old) exited at boot+3.000000s" in note for note in k.sender.notes)
    assert lineage.by_pid[60].parent.comm == "old"  # the dead one's child still names it


def test_a_parent_death_signal_comes_within_its_window_of_the_exit():
    on_time = run(exited_with_a_live_child() + signal(3 * S + 1000, 50, 60), [snap(1, 0, "init")],
                  precision="light")
    (k,) = on_time.kills
    assert (k.mechanism, k.sender.comm, k.sender.exited) == ("pdeath_signal", "old", True)
    late = run(exited_with_a_live_child() + signal(5 * S, 50, 60), [snap(1, 0, "init")], precision="light")
    (k,) = late.kills
    assert k.mechanism != "pdeath_signal" and k.sender.source == "unseen"


def test_a_thread_signal_from_an_exited_pid_is_never_the_dead_one():
    events = exited_with_a_live_child() + signal(3 * S + 1000, 50, 60, code=-6)  # SI_TKILL: a syscall
    (k,) = run(events, [snap(1, 0, "init")], precision="light").kills
    assert k.sender.source == "unseen" and k.sender.comm != "old"


def test_a_send_from_the_reused_pid_of_an_unindexed_exit_is_no_parent_death():
    """50 exits childless (unindexed); its pid sends again: a later process, not a thread exiting."""
    events = fork(1 * S, 1, 50) + fork(1 * S + 1, 1, 70) + exit_(2 * S, 50) + signal(2 * S + 1000, 50, 70)
    (k,) = run(events, [snap(1, 0, "init")], precision="light").kills
    assert k.mechanism == "user_signal" and k.sender.source == "unseen"


def test_a_kill_syscall_from_an_exited_pid_is_a_later_process_s():
    events = exited_with_a_live_child() + kill(3 * S + 1000, 50, 60)
    (k,) = run(events, [snap(1, 0, "init")]).kills
    assert (k.mechanism, k.sender.source) == ("kill", "unseen") and k.sender.comm != "old"
