"""Short lives: a lineage fed read passes (feed_all, short lives in one step) ends exactly where the same events
fed one at a time end - every process, link, recent exit and kill, as the checkpoint writes them."""

import glob
import os
import random

import pytest

from ansible.module_utils import sigsleuth_attribution, sigsleuth_checkpoint
from ansible.module_utils.sigsleuth_checkpoint import lineage_to_dict
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_short_lives import is_short_life
from ansible.module_utils.sigsleuth_trace_parser import (
    EXEC, EXIT, FORK, NEWTASK, RENAME, SIGNAL_GENERATE, TraceStats, iter_events,
)
from ansible.module_utils.sigsleuth_vocabulary import CLONE_THREAD

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace")
TRACES = sorted(glob.glob(os.path.join(FIXTURES, "*.trace")))
SNAPSHOT = [{"pid": 1, "start_boot_ns": 0, "comm": "init", "exe": "/sbin/init", "argv": ["/sbin/init"], "uid": 0,
             "ppid": 0, "cgroup": "/"},
            {"pid": 2, "start_boot_ns": 10, "comm": "sshd", "exe": "/usr/sbin/sshd", "argv": ["sshd"], "uid": 0,
             "ppid": 1, "cgroup": "/system.slice/ssh.service", "rlimits": [0]}]


def lineage(precision="light"):
    built = Lineage([9, 15], snapshot_time_ns=5, precision=precision)
    built.add_snapshot(SNAPSHOT)
    return built


def everything(built):
    """The lineage as the checkpoint writes it, with every recent exit (not only the newest few)."""
    saved = sigsleuth_checkpoint.RECENT_KEPT
    sigsleuth_checkpoint.RECENT_KEPT = 1 << 30
    try:
        data = lineage_to_dict(built)
    finally:
        sigsleuth_checkpoint.RECENT_KEPT = saved
    data["next_serial_of_lineage"] = next(built.serials)
    # The pid index's order is not the lineage's (only the checkpoint walks it): a short life made its Process
    # while it runs is indexed then, not at its fork. Everything else stays in order - the recent exits' too.
    data["by_pid"] = sorted(data["by_pid"])
    data["processes"] = sorted(data["processes"], key=lambda entry: entry["key"][2])
    return data


def one_at_a_time(events, precision="light"):
    built = lineage(precision)
    for event in events:
        built.feed(event)
    return built


def in_passes(events, cuts, precision="light"):
    built = lineage(precision)
    start = 0
    for cut in list(cuts) + [len(events)]:
        built.feed_all(events[start:cut])
        start = cut
    return built


class Host:
    """A toy kernel that writes what the binary reader gives (no thread group ids): forks, threads, execs,
    renames, exits in any order (orphans too), pid reuse from a small pid space, forks the trace lost, and
    SIGKILLs - also to zombies and from processes about to exit."""

    def __init__(self, seed, pids=40):
        self.random = random.Random(seed)
        self.free = list(range(100, 100 + pids))
        self.groups = {1: [1], 2: [2]}  # leader -> its live tids
        self.comm = {1: b"init", 2: b"sshd"}
        self.zombies = []
        self.ts = 1000
        self.events = []

    def emit(self, name, tid, fields):
        self.ts += self.random.choice((1, 1, 2, 500))
        self.events.append((name, self.ts, self.random.randrange(2), tid, None, fields))

    def short_life(self, leader, tid):
        """A /bin/true of the leader's: fork, rename and exec, exit, amid the rest."""
        child = self.free.pop(self.random.randrange(len(self.free)))
        self.emit(FORK, tid, (tid, child))
        self.emit(RENAME, child, (child, ((self.comm[leader], b"true"),)))
        self.emit(EXEC, child, ("/bin/true", child, child))
        if self.random.random() < 0.3:
            self.step()
        self.emit(EXIT, child, (b"true", child, True))
        self.zombies.append(child)
        if len(self.zombies) > 3:
            self.free.append(self.zombies.pop(0))

    def step(self):
        choice = self.random.random()
        leaders = sorted(self.groups)
        leader = self.random.choice(leaders)
        tid = self.random.choice(self.groups[leader])
        if choice < 0.2 and self.free:
            self.short_life(leader, tid)
        elif choice < 0.35 and self.free:
            child = self.free.pop(self.random.randrange(len(self.free)))
            if self.random.random() < 0.15:
                self.emit(NEWTASK, tid, (child, self.comm[leader], CLONE_THREAD | 0x100))
                self.emit(FORK, tid, (tid, child))
                self.groups[leader].append(child)
            else:
                chance = self.random.random()
                if chance < 0.05:
                    self.emit(NEWTASK, tid, (child, self.comm[leader], 0x11))  # a process with its flags known
                if chance < 0.85:
                    self.emit(FORK, tid, (tid, child))
                # else the trace lost its fork: a newcomer acts on the pid, maybe an exited one's kept indexed
                self.groups[child] = [child]
                self.comm[child] = self.comm[leader]
        elif choice < 0.6:
            if leader > 2 and tid == leader:
                name = self.random.choice((b"true", b"sh", b"agent\\x", b"a-very-long-program-name"))
                self.emit(RENAME, tid, (tid, ((self.comm[leader], name[:15]),)))
                self.emit(EXEC, tid, ("/usr/bin/" + name.decode(), tid, tid))
                self.comm[leader] = name[:15]
        elif choice < 0.66:
            self.emit(RENAME, tid, (tid, ((self.comm[leader], b"renamed"),)))
            if tid == leader:
                self.comm[leader] = b"renamed"
        elif choice < 0.98:
            if leader <= 2:
                return
            if tid != leader and self.random.random() < 0.5:
                self.emit(EXIT, tid, (self.comm[leader], tid, False))
                self.groups[leader].remove(tid)
                self.free.append(tid)
                return
            for thread in self.groups.pop(leader):
                self.emit(EXIT, thread, (self.comm[leader], thread, thread == leader))
                if thread != leader:
                    self.free.append(thread)
            self.zombies.append(leader)
            if len(self.zombies) > 3:
                self.free.append(self.zombies.pop(0))  # reaped: its pid may come again
        else:
            targets = sorted(self.groups) + self.zombies
            self.emit(SIGNAL_GENERATE, tid, (self.random.choice((9, 15, 17)), 0, 0, self.comm[leader],
                                             self.random.choice(targets), 1, self.random.choice((0, 0, 2))))

    def run(self, steps):
        for _ in range(steps):
            self.step()
        return self.events


def random_cuts(rng, count):
    return sorted(rng.sample(range(1, count), min(count - 1, rng.randrange(1, 40))))


@pytest.mark.parametrize("seed", range(60))
def test_passes_end_where_one_event_at_a_time_ends(seed, monkeypatch):
    if seed % 3 == 0:  # a short memory of exits: the records must be evicted in the full replay's order
        monkeypatch.setattr(sigsleuth_attribution, "RECENT_LIMIT", 8)
        monkeypatch.setattr(sigsleuth_attribution, "RECENT_SLACK", 2)
    events = Host(seed).run(600)
    rng = random.Random(seed)
    precision = "syscall" if seed % 4 == 1 else "light"
    expected = everything(one_at_a_time(events, precision))
    folded = in_passes(events, random_cuts(rng, len(events)), precision)
    FOLDED[seed] = sum(1 for entry in folded.recently_exited.values() if is_short_life(entry))
    assert everything(folded) == expected


FOLDED = {}


def test_the_passes_above_folded_short_lives():
    """The property above would prove little if nothing ever folded (run after it, in file order)."""
    assert len(FOLDED) == 60 and sum(FOLDED.values()) > 200 and sum(1 for n in FOLDED.values() if n) > 30


def test_the_toy_host_folds_most_of_its_short_lives():
    """Lifecycle-only passes fold; the property test above would prove little if nothing ever folded."""
    host = Host(7)
    host.random.random = lambda _r=random.Random(7): min(_r.random(), 0.97)  # no signals: lifecycle only
    events = host.run(400)
    folded = in_passes(events, range(50, len(events), 50))
    records = sum(1 for entry in folded.recently_exited.values() if is_short_life(entry))
    assert records > 20
    assert everything(folded) == everything(one_at_a_time(events))


def test_a_kill_of_a_zombie_names_the_record_made_a_process():
    events = [
        (FORK, 100, 0, 2, None, (2, 300)),
        (RENAME, 101, 1, 300, None, (300, ((b"sshd", b"cleanup.sh"),))),
        (EXEC, 102, 1, 300, None, ("/opt/agent/cleanup.sh", 300, 300)),
        (EXIT, 103, 1, 300, None, (b"cleanup.sh", 300, True)),
    ]
    folded = in_passes(events, [])
    assert is_short_life(folded.recently_exited[300]) and 300 not in folded.by_pid
    kill = (SIGNAL_GENERATE, 200, 0, 2, None, (9, 0, 0, b"sshd", 300, 1, 2))
    folded.feed_all([kill])
    victim = folded.kills[0].victim
    assert (victim.pid, victim.comm, victim.exe, victim.start_ns, victim.exit_ns, victim.parent.pid) == \
        (300, "cleanup.sh", "/opt/agent/cleanup.sh", 100, 103, 2)
    assert victim.uid == 0 and victim.cgroup == "/system.slice/ssh.service" and victim.rlimits == {0}
    assert folded.recently_exited[300] is victim  # made once, in place
    assert everything(folded) == everything(one_at_a_time(events + [kill]))


def folded_as_record(events, pid=300, thread_group=None):
    """Whether pid's life ends in the pass as a short life's record, and whether the pass, fed in one step, ends
    exactly where one event at a time ends."""
    built, alone = lineage(), lineage()
    for each in (built, alone):
        each.thread_group.update(thread_group or {})
    built.feed_all(events)
    for event in events:
        alone.feed(event)
    return is_short_life(built.recently_exited.get(pid)), everything(built) == everything(alone)


@pytest.mark.parametrize("events, reason", [
    ([(FORK, 1, 0, 2, None, (2, 300)), (FORK, 2, 0, 300, None, (300, 301)), (EXIT, 3, 0, 300, None, (b"x", 300, True))],
     "a parent"),
    ([(FORK, 1, 0, 2, None, (2, 300)), (EXIT, 2, 0, 300, None, (b"x", 300, False))], "a thread's exit"),
    ([(FORK, 1, 0, 2, None, (2, 300)), (EXEC, 2, 0, 301, None, ("/x", 300, 301)),
      (EXIT, 3, 0, 300, None, (b"x", 300, True))], "a thread's exec"),
    ([(NEWTASK, 1, 0, 2, None, (300, b"x", CLONE_THREAD)), (FORK, 1, 0, 2, None, (2, 300)),
      (EXIT, 2, 0, 300, None, (b"x", 300, True))], "a thread"),
    ([(FORK, 1, 0, 2, None, (2, 300)), (SIGNAL_GENERATE, 2, 0, 2, None, (9, 0, 0, b"x", 300, 1, 0)),
      (EXIT, 3, 0, 300, None, (b"x", 300, True))], "a send while it runs"),
    ([(FORK, 1, 0, 2, None, (2, 300)), (EXIT, 2, 0, 300, 300, (b"x", 300, True))], "a thread group id"),
    ([(FORK, 1, 0, 2, None, (2, 300)), (RENAME, 2, 0, 400, None, (400, ((None, b"y"),))),
      (EXIT, 3, 0, 300, None, (b"x", 300, True))], "a thread the lineage counts in its group renames"),
    ([(FORK, 1, 0, 2, None, (2, 300)), (FORK, 2, 0, 2, None, (2, 300)),
      (EXIT, 3, 0, 300, None, (b"x", 300, True))], "forked again before its exit"),
])
def test_what_is_made_a_process_while_it_runs(events, reason):
    record, same = folded_as_record(events, thread_group={400: 300})
    assert not record and same, reason


def test_alive_at_the_end_of_the_pass_it_is_its_process_and_its_exec_is_followed():
    built = lineage()
    built.execs_seen = []
    built.feed_all([(FORK, 1, 0, 2, None, (2, 300)), (RENAME, 2, 0, 300, None, (300, ((None, b"true"),))),
                    (EXEC, 3, 0, 300, None, ("/bin/true", 300, 300))])
    proc = built.by_pid[300]
    assert (proc.comm, proc.exe, proc.parent.pid, proc.start_ns) == ("true", "/bin/true", 2, 1)
    assert built.execs_seen == [proc] and built.execs_folded == 0  # one exec, seen once
    assert everything(built) == everything(one_at_a_time(
        [(FORK, 1, 0, 2, None, (2, 300)), (RENAME, 2, 0, 300, None, (300, ((None, b"true"),))),
         (EXEC, 3, 0, 300, None, ("/bin/true", 300, 300))]))


def test_lives_around_a_send_or_a_thread_group_id_still_fold():
    life = [(FORK, 1, 0, 2, None, (2, 300)), (EXIT, 2, 0, 300, None, (b"x", 300, True))]
    assert folded_as_record(life) == (True, True)
    assert folded_as_record(life + [(SIGNAL_GENERATE, 3, 0, 2, None, (9, 0, 0, b"x", 2, 1, 0))]) == (True, True)
    assert folded_as_record(life + [(EXIT, 3, 0, 2, 2, (b"x", 2, False))]) == (True, True)
    # a thread still counted in its group, exiting after the life: it was not the life's
    assert folded_as_record(life + [(EXIT, 3, 0, 400, None, (b"x", 400, False))], thread_group={400: 300}) == \
        (True, True)


@pytest.mark.parametrize("path", TRACES, ids=os.path.basename)
def test_every_fixture_trace_ends_the_same_in_passes(path):
    """The saved traces (thread group ids taken off, as the binary reader gives them), cut into passes."""
    with open(path, "rb") as stream:
        events = [event[:4] + (None,) + event[5:] for event in iter_events(stream, TraceStats())]
    for cuts in ([], range(3, len(events), 7), range(1, len(events))):
        assert everything(in_passes(events, cuts, "syscall")) == everything(one_at_a_time(events, "syscall"))


def test_a_short_life_on_the_pid_of_an_exited_parent_still_indexed_for_its_children():
    """Pid 300 exited with a child alive, so the lineage keeps it indexed; a short life then takes pid 300."""
    before = [(FORK, 1, 0, 2, None, (2, 300)), (FORK, 2, 0, 300, None, (300, 301)),
              (EXIT, 3, 0, 300, None, (b"sshd", 300, True))]
    life = [(FORK, 10, 0, 2, None, (2, 300)), (RENAME, 11, 1, 300, None, (300, ((b"sshd", b"true"),))),
            (EXEC, 12, 1, 300, None, ("/bin/true", 300, 300)), (EXIT, 13, 1, 300, None, (b"true", 300, True))]
    folded = in_passes(before + life, [len(before)])
    assert is_short_life(folded.recently_exited[300]) and 300 not in folded.by_pid
    assert folded.by_pid[301].parent.exited and folded.by_pid[301].parent.pid == 300
    assert everything(folded) == everything(one_at_a_time(before + life))
