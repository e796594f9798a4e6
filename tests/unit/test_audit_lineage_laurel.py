"""Audit-only lineage on real audit logs from laurel (tests/fixtures/audit/laurel), checked against the
pid/ppid pairs the logs' SYSCALL records state."""

import os
import re

from ansible.module_utils.sigsleuth_audit_lineage import feed_audit_lineage
from ansible.module_utils.sigsleuth_audit_log import iter_audit_events
from ansible.module_utils.sigsleuth_audit_rules import OUR_SYSCALLS
from ansible.module_utils.sigsleuth_lineage import Lineage

LAUREL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "audit", "laurel")
# Every event counts by its syscall: these logs carry laurel's keys ("fork", "test-script") or none.
NO_KEYS = ()


def path_of(name):
    return os.path.join(LAUREL, name)


def events_of(name):
    return list(iter_audit_events([path_of(name)], keys=NO_KEYS, syscalls=OUR_SYSCALLS))


def lineage_of(name):
    lineage = Lineage([9], snapshot_time_ns=0)
    lineage.add_snapshot([])
    feed_audit_lineage(lineage, iter(events_of(name)), 0)
    return lineage


def recorded_ppids(name):
    """pid -> ppid, straight from the SYSCALL records: the ppid of the pid's lowest-serial record (the
    earliest, before any reparenting; serials, not file order, so a reordered log gives the same map)."""
    first = {}
    with open(path_of(name)) as handle:
        for line in handle:
            if not line.startswith("type=SYSCALL "):
                continue
            serial = int(re.search(r"msg=audit\([0-9.]+:(\d+)\)", line).group(1))
            pid = int(re.search(r" pid=(\d+)", line).group(1))
            ppid = int(re.search(r" ppid=(\d+)", line).group(1))
            if pid not in first or serial < first[pid][0]:
                first[pid] = (serial, ppid)
    return {pid: ppid for pid, (_, ppid) in first.items()}


def agreements(lineage, recorded):
    """(pids whose parent agrees with the records, [(pid, lineage's parent, recorded ppid)] that disagree)."""
    agree, disagree = [], []
    for pid, proc in sorted(lineage.by_pid.items()):
        if proc.parent is None or pid not in recorded:
            continue
        (agree if proc.parent.pid == recorded[pid] else disagree).append((pid, proc.parent.pid, recorded[pid]))
    return [pid for pid, _, _ in agree], disagree


def chain(proc):
    pids = []
    while proc is not None:
        pids.append(proc.pid)
        proc = proc.parent
    return pids


def test_the_logs_are_read_with_their_own_keys_and_architectures():
    assert [(e.serial, e.arch, e.syscall) for e in events_of("fork-sleep-exec.txt")] == [
        (6104005, "aarch64", "execve"), (6104007, "aarch64", "clone"), (6104008, "aarch64", "execve")]
    for name in ("shell-proc-trace.txt", "shell-proc-trace-reordered.txt"):
        events = events_of(name)
        assert sorted(e.serial for e in events) == list(range(29237, 29246)), name
        assert {e.key for e in events} == {"fork", "test-script", None}, name


def test_an_unseen_forker_is_linked_to_the_ppid_its_clone_recorded():
    # 1578539 execs; its child 1578540 (fork not audited) clones 1578541 with ppid=1578539, then 1578539
    # exits and 1578540 execs /bin/true with ppid=1.
    lineage = lineage_of("fork-sleep-exec.txt")
    forker = lineage.by_pid[1578540]
    assert chain(lineage.by_pid[1578541]) == [1578541, 1578540, 1578539]
    assert forker.exe == "/usr/bin/true" and forker.source == "unseen"
    assert any("its fork was not audited; its parent is the ppid 1578539 audit recorded at clone" in note
               for note in forker.notes), forker.notes
    assert any("neither its fork" in note for note in forker.notes), forker.notes  # it never came


def test_every_parent_agrees_with_the_recorded_ppids():
    expected = {
        "fork-sleep-exec.txt": [1578540],
        "shell-proc-trace.txt": [71505, 71506, 71507, 71508, 71509],
        "shell-proc-trace-reordered.txt": [71505, 71506, 71507, 71508, 71509],
    }
    for name, pids in expected.items():
        agree, disagree = agreements(lineage_of(name), recorded_ppids(name))
        assert disagree == [], (name, disagree)
        assert agree == pids, (name, agree)


def test_a_fork_read_before_the_exec_it_followed_still_passes_the_exec_on():
    # Reordered: 71505's forks of 71506 and 71507 are read before its exec of the script, and 71506 is first
    # seen forking before its own fork is read.
    lineage = lineage_of("shell-proc-trace-reordered.txt")
    proc = lineage.by_pid[71506]
    assert proc.exe == "/usr/bin/dash"
    assert proc.argv == ["/bin/sh", "./src/testdata/double-fork/test-script.sh"]
    assert proc.facts_from["exe"] == proc.facts_from["argv"] == "inherited"
    assert proc.source == "audit" and proc.parent.pid == 71505
    assert not any("neither its fork" in note for note in proc.notes), proc.notes
    assert lineage.by_pid[71505].notes == [] and proc.notes == []
    assert lineage.by_pid[71507].exe == "/usr/bin/grep"  # its own exec, read before its fork, stays


def test_in_order_and_reordered_logs_give_the_same_lineage():
    def facts(lineage):
        return {pid: (proc.parent.pid if proc.parent else None, proc.source, proc.comm, proc.exe, proc.argv,
                      proc.uid, sorted(proc.notes))
                for pid, proc in lineage.by_pid.items()}

    in_order = facts(lineage_of("shell-proc-trace.txt"))
    assert in_order == facts(lineage_of("shell-proc-trace-reordered.txt"))
    assert sorted(in_order) == [71432, 71505, 71506, 71507, 71508, 71509]
    assert in_order[71506][3:5] == ("/usr/bin/dash", ["/bin/sh", "./src/testdata/double-fork/test-script.sh"])
