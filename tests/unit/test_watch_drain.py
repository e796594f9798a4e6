"""The watch drain off-line: checkpoint round trip, the kill index, the drain loop on a saved trace."""

import glob
import json
import os

import pytest

from ansible.module_utils.sigsleuth_checkpoint import lineage_from_dict, lineage_to_dict, load, save
from ansible.module_utils.sigsleuth_clock import Clock
from ansible.module_utils.sigsleuth_drain import Drain, KILL_INDEX_LIMIT, WatchFiles, kill_summary, read_after_exec
from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_loss import Losses
from ansible.module_utils.sigsleuth_report import kill_dict
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace")
TRACES = sorted(glob.glob(os.path.join(FIXTURES, "forensics_*.trace")))
CLOCK = Clock(1_700_000_000_000_000_000)


def replay(path, precision="syscall", upto=None):
    lineage, stats = Lineage([9, 15, 2], precision=precision, opens_traced=True), TraceStats()
    with open(path, "rb") as stream:
        for number, event in enumerate(iter_events(stream, stats)):
            if upto is not None and number >= upto:
                break
            lineage.feed(event)
    return lineage, stats


def reported(lineage):
    return [kill_dict(kill, CLOCK, Losses()) for kill in lineage.kills]


@pytest.mark.parametrize("path", TRACES, ids=os.path.basename)
def test_checkpoint_round_trip_keeps_every_kill_and_live_process(path):
    lineage, stats = replay(path)
    data = json.loads(json.dumps(lineage_to_dict(lineage, stats)))
    restored, restored_stats, _extra = lineage_from_dict(data)
    assert reported(restored) == reported(lineage)
    assert {pid: (p.key, p.comm, p.exe, p.argv) for pid, p in restored.by_pid.items()} == \
        {pid: (p.key, p.comm, p.exe, p.argv) for pid, p in lineage.by_pid.items()}
    assert restored_stats.events == stats.events and restored_stats.lost_markers == stats.lost_markers


@pytest.mark.parametrize("path", TRACES, ids=os.path.basename)
def test_a_restart_from_a_checkpoint_ends_where_one_pass_ends(path, tmp_path):
    """Half the trace, a checkpoint, a new lineage from it fed the other half: the same kills."""
    whole, _stats = replay(path)
    with open(path, "rb") as stream:
        events = list(iter_events(stream, TraceStats()))
    half = len(events) // 2
    first = Lineage([9, 15, 2], precision="syscall", opens_traced=True)
    for event in events[:half]:
        first.feed(event)
    save(str(tmp_path / "cp.json"), first)
    second, _stats, _extra = load(str(tmp_path / "cp.json"))
    for event in events[half:]:
        second.feed(event)
    assert reported(second) == reported(whole) or _only_restart_evidence_differs(second, whole)


def _only_restart_evidence_differs(second, whole):
    """The evidence window (syscalls in flight) is not kept: only a send right at the cut may differ, and
    then only in how it came about, never in who sent it to whom."""
    assert len(reported(second)) == len(reported(whole))
    for mine, theirs in zip(reported(second), reported(whole)):
        for key in ("victim", "sender", "ancestry", "time", "signal"):
            assert mine[key] == theirs[key], key
    return True

def test_a_corrupt_checkpoint_is_refused_with_its_path(tmp_path):
    path = tmp_path / "cp.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=str(path)):
        load(str(path))
    with pytest.raises(ValueError, match="not a sigsleuth watch checkpoint"):
        lineage_from_dict({"format": 99})
    assert load(str(tmp_path / "missing.json")) is None


def test_kill_index_entry_names_victim_sender_signal_and_time():
    lineage, _stats = replay(os.path.join(FIXTURES, "forensics_kill_family.trace"))
    entry = kill_summary(lineage.kills[0], CLOCK)
    assert set(entry) >= {"time", "signal", "victim", "sender"}
    assert entry["time"].endswith("Z") and entry["signal"].startswith("SIG")
    assert set(entry["victim"]) == {"pid", "comm"}
    assert entry["victim"]["pid"] == lineage.kills[0].victim.pid
    assert entry["sender"] is None or entry["sender"]["pid"] == lineage.kills[0].sender.pid


def run_drain(tmp_path, trace, status=None):
    files = WatchFiles(str(tmp_path))
    drain = Drain(Lineage([9, 15, 2], precision="syscall"), TraceStats(), files, str(tmp_path / "no-instance"),
                  0, dict(status or {}, pid=1234, restarts=0), proc_root=str(tmp_path / "no-proc"), batch_s=0)
    wake_read, wake_write = os.pipe()
    fd = os.open(trace, os.O_RDONLY | os.O_NONBLOCK)
    try:
        drain.run(fd, wake_read)
    finally:
        for each in (fd, wake_read, wake_write):
            os.close(each)
    return drain, files


def test_drain_loop_on_a_saved_trace_persists_kills_index_and_status(tmp_path):
    trace = os.path.join(FIXTURES, "forensics_kill_family.trace")
    drain, files = run_drain(tmp_path, trace)
    expected, stats = replay(trace, precision="syscall")
    with open(files.kills) as handle:
        index = json.load(handle)
    assert index["count"] == len(expected.kills) and len(index["kills"]) == min(len(expected.kills),
                                                                                 KILL_INDEX_LIMIT)
    with open(files.status) as handle:
        status = json.load(handle)
    assert status["state"] == "stopped" and status["events"] == stats.events and status["kills"] == index["count"]
    for path in files.all():
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    restored, _stats, _extra = load(files.checkpoint)
    assert [k["victim"]["pid"] for k in reported(restored)] == [k["victim"]["pid"] for k in reported(expected)]


def test_argv_after_exec_only_from_the_same_incarnation(tmp_path):
    """/proc/PID/stat must show the start time and the comm the exec gave: a reused pid gives nothing."""
    lineage = Lineage([9])
    proc = lineage.new_process(300, 5_000_000_000, None, "job", "/bin/job", "ftrace", 0)
    base = tmp_path / "300"
    base.mkdir()
    (base / "cmdline").write_bytes(b"sh\0/opt/agent/cleanup.sh\0")
    (base / "cgroup").write_bytes(b"0::/system.slice/cron.service\n")
    ticks = 5_000_000_000 // 10_000_000
    (base / "stat").write_bytes(b"300 (job) S 1 300 300 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n" % ticks)
    assert read_after_exec(proc, str(tmp_path)) is True
    assert proc.argv == ["sh", "/opt/agent/cleanup.sh"] and proc.facts_from["argv"] == "proc_after_exec"
    assert proc.cgroup == "/system.slice/cron.service"
    other = lineage.new_process(300, 9_000_000_000, None, "job", "/bin/job", "ftrace", 0)
    assert read_after_exec(other, str(tmp_path)) is False and other.argv is None
    renamed = lineage.new_process(300, 5_000_000_000, None, "other", "/bin/other", "ftrace", 0)
    assert read_after_exec(renamed, str(tmp_path)) is False


# ---------------------------------------------------------------- the binary reader's loop

def raw_drain(tmp_path, trace):
    """A drain on a fake instance whose per-CPU trace_pipe_raw files hold the fixture trace as binary pages."""
    from test_trace_raw import binary_instance, encodable, text_events
    from ansible.module_utils.sigsleuth_trace_raw import RawReader
    root = tmp_path / "tracefs"
    root.mkdir()
    instance = binary_instance(root, encodable(text_events(trace)))
    files = WatchFiles(str(tmp_path))
    drain = Drain(Lineage([9, 15, 2], precision="syscall", opens_traced=True), TraceStats(), files, instance,
                  0, {"pid": 1234, "restarts": 0, "reader": "trace_pipe_raw"}, proc_root=str(tmp_path / "no-proc"),
                  batch_s=0)
    reader = RawReader(instance, str(root), drain.stats, clock_ns=lambda: 1 << 62)
    return drain, reader, files


def test_the_binary_loop_persists_the_kills_of_the_text_replay(tmp_path):
    trace = os.path.join(FIXTURES, "forensics_kill_family.trace")
    drain, reader, files = raw_drain(tmp_path, trace)
    drain.housekeeping = lambda idle: setattr(drain, "stopping", True)  # one pass, then stop as on SIGTERM
    pipe_read, pipe_write = os.pipe()
    wake_read, wake_write = os.pipe()
    try:
        drain.run_raw(reader, pipe_read, wake_read)
    finally:
        reader.close()
        for each in (pipe_read, pipe_write, wake_read, wake_write):
            os.close(each)
    expected, stats = replay(trace, precision="syscall")
    with open(files.status) as handle:
        status = json.load(handle)
    assert status["state"] == "stopped" and status["reader"] == "trace_pipe_raw"
    assert status["events"] == stats.events and status["kills"] == len(expected.kills) > 0
    restored, _stats, _extra = load(files.checkpoint)
    assert [(k["victim"]["pid"], (k["sender"] or {}).get("pid"), k["mechanism"]) for k in reported(restored)] == \
        [(k["victim"]["pid"], (k["sender"] or {}).get("pid"), k["mechanism"]) for k in reported(expected)]


class ScriptedReader:
    """read_pass() hands out scripted batches and holds back what is younger than its clock, as RawReader."""

    def __init__(self, batches, now):
        self.batches = list(batches)
        self.held = []
        self.now = now

    def clock_ns(self):
        return self.now

    def read_pass(self, everything=False):
        events = self.held + (self.batches.pop(0) if self.batches else [])
        cutoff = self.now - 2_000_000
        self.held = [] if everything else [event for event in events if event[1] > cutoff]
        ready = events if everything else [event for event in events if event[1] <= cutoff]
        return ready, int(bool(ready or self.held))


def fork_exec_exit(pid, ts, exit_too=True):
    events = [("sched_process_fork", ts, 0, 1, None, (1, pid)),
              ("sched_process_exec", ts + 10, 0, pid, None, ("/bin/true", pid, pid))]
    if exit_too:
        events.append(("sched_process_exit", ts + 20, 0, pid, None, (b"true", pid, True)))
    return events


def test_a_pass_follows_only_the_execs_still_there_and_counts_every_exec(tmp_path, monkeypatch):
    files = WatchFiles(str(tmp_path))
    lineage = Lineage([9])
    drain = Drain(lineage, TraceStats(), files, str(tmp_path), 0, {}, proc_root=str(tmp_path / "no-proc"))
    followed = []
    monkeypatch.setattr("ansible.module_utils.sigsleuth_drain.read_after_exec",
                        lambda proc, _root: followed.append((proc.pid, proc.exe)) or True)
    earlier = [("sched_process_fork", 500, 0, 1, None, (1, 12))]
    batch = fork_exec_exit(10, 1_000) + fork_exec_exit(11, 2_000, exit_too=False) \
        + [("sched_process_exec", 3_000, 0, 11, None, ("/bin/sh", 11, 11)),
           ("sched_process_exec", 4_000, 0, 12, None, ("/bin/true", 12, 12)),
           ("sched_process_exit", 5_000, 0, 12, None, (b"true", 12, True))]
    reader = ScriptedReader([earlier, batch], now=10 ** 12)
    drain.feed_pass(reader)
    drain.feed_pass(reader)
    # 10 is a short life of the pass, 12 (forked in the pass before) exited in it too, 11's first exec is not
    # its last: one look-up, for what 11 runs now; all four execs are counted.
    assert followed == [(11, "/bin/sh")]
    assert drain.argv_caught == 1 and drain.argv_missed == 3


def test_a_flush_request_feeds_everything_written_before_it(tmp_path, monkeypatch):
    files = WatchFiles(str(tmp_path))
    drain = Drain(Lineage([9]), TraceStats(), files, str(tmp_path), 0, {}, proc_root=str(tmp_path / "no-proc"))
    now = 5_000_000_000
    reader = ScriptedReader([fork_exec_exit(20, now - 1_000_000, exit_too=False)], now=now)

    def later(_seconds):
        reader.now += 3_000_000
    monkeypatch.setattr("ansible.module_utils.sigsleuth_drain.time.sleep", later)
    drain.catch_up(reader)
    assert 20 in drain.lineage.by_pid and not reader.held


def test_the_drain_falls_back_to_text_and_says_why(tmp_path):
    from test_trace_raw import fake_instance
    from ansible.module_utils.sigsleuth_watch_control import open_raw_reader
    root = tmp_path / "tracefs"
    root.mkdir()
    fake_instance(root, {0: []}, clock="[local] boot")
    status = {}
    ftrace = {"tracefs": str(root), "instance": "fake"}
    assert open_raw_reader(ftrace, TraceStats(), status) is None
    assert status["reader"] == "trace_pipe" and "trace clock" in status["reader_fallback"]
    (root / "instances" / "fake" / "trace_clock").write_text("local [boot]\n")
    status = {}
    reader = open_raw_reader(ftrace, TraceStats(), status)
    assert reader is not None and status == {"reader": "trace_pipe_raw"}
    reader.close()


def test_the_drain_runs_its_collector_after_a_flush_once_a_minute(tmp_path, monkeypatch):
    from ansible.module_utils.sigsleuth_drain import COLLECT_INTERVAL_S
    clock = [100.0]
    monkeypatch.setattr("ansible.module_utils.sigsleuth_drain.time.monotonic", lambda: clock[0])
    files = WatchFiles(str(tmp_path))
    drain = Drain(Lineage([9]), TraceStats(), files, str(tmp_path), 0, {"pid": os.getpid()}, flush_interval=2.0)
    runs = []
    drain.collect_garbage = lambda: runs.append(clock[0])
    for _ in range(int(2 * COLLECT_INTERVAL_S / 2.0) + 1):
        drain.flush()
        clock[0] += 2.0
    assert runs == [100.0 + COLLECT_INTERVAL_S, 100.0 + 2 * COLLECT_INTERVAL_S]


def test_passes_come_less_often_on_a_busy_host():
    drain = Drain(Lineage([9]), TraceStats(), None, "", 0, {})
    drain.pass_events = 40  # 2,000 events/s at one pass every 20 ms
    assert drain.pass_pause() == 0.02
    drain.pass_events = 240  # 3,000 fork+exec/s
    assert drain.pass_pause() == 0.05
    drain.batch_s = 0  # the tests' drains never wait
    assert drain.pass_pause() == 0
