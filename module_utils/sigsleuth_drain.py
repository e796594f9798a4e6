# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The watch drain: the instance's trace_pipe, read as it is written, into the lineage. Standard library only.
"""Consume the trace as it is written and keep only what can still matter.

The drain reads the instance's ``trace_pipe`` (text, consumed as read) with the same parser collect uses and
feeds the same lineage engine, which prunes exited processes nobody descends from: memory follows live
processes and the kills. Right after an exec it reads ``/proc/PID/cmdline`` and ``/proc/PID/cgroup`` of that
pid - only files under /proc/PID/, never a path a process chose - and keeps them only when /proc/PID/stat
proves the same incarnation (start time and the comm the exec gave it) before and after the read.

What it persists, atomically (temp file + rename, 0600), in the state dir (see `WatchFiles`):

* the checkpoint (sigsleuth_checkpoint): at most every `flush_interval` s, and within `kill_flush_interval` s
  of a new kill; also on SIGUSR1 (after consuming what the buffer holds at that moment) and before exit
  (SIGTERM);
* the kill index: the newest KILL_INDEX_LIMIT kills, small, written with the checkpoint;
* the status: running since, events consumed, lost, restarts, last flush (and its sequence number).
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import time

from ansible.module_utils.sigsleuth_checkpoint import save as save_checkpoint
from ansible.module_utils.sigsleuth_clock import Clock
from ansible.module_utils.sigsleuth_report import ARGV_FROM_PROC
from ansible.module_utils.sigsleuth_procfs import NS_PER_TICK, START_TOLERANCE_NS, read_cgroups
from ansible.module_utils.sigsleuth_state import atomic_write
from ansible.module_utils.sigsleuth_trace_parser import iter_events
from ansible.module_utils.sigsleuth_trace_raw import HOLD_BACK_NS
from ansible.module_utils.sigsleuth_tracefs import read_loss_counters
from ansible.module_utils.sigsleuth_vocabulary import PROC, decode_name, signal_name

KILL_INDEX_LIMIT = 1000
READ_SIZE = 1 << 16
FULL_READ = 3072  # trace_pipe returns at most a page of text per read
BATCH_S = 0.02    # the longest an event waits before it is read: also the delay before argv is read
# On a busy host (a pass of the binary reader fed more than BUSY_EVENTS_PER_S's worth) passes come every
# BUSY_BATCH_S instead: each pass first pays for the caches the load took since the last one (bench: a
# lineage fed 240 events every 20 ms costs 2.3x what it costs fed them without a pause, 1.7x every 50 ms).
BUSY_BATCH_S = 0.05
BUSY_EVENTS_PER_S = 5000
MAX_ARGV_BYTES = 1 << 16
# The cycle collector's pause, after a flush: the lineage makes no cycles (reference counting frees it), and a
# collection walks every recent exit (measured under load: 12 ms, when it ran every flush a tenth of the CPU).
COLLECT_INTERVAL_S = 60.0


class WatchFiles:
    """Where one drain keeps its files, all in the state dir."""

    def __init__(self, state_dir):
        self.checkpoint = os.path.join(state_dir, "watch-checkpoint.json")
        self.kills = os.path.join(state_dir, "watch-kills.json")
        self.status = os.path.join(state_dir, "watch-status.json")

    def all(self):
        return (self.checkpoint, self.kills, self.status)


def read_json(path):
    """A small JSON file, or None when it is missing or half-written (never, with atomic writes)."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def kill_summary(kill, clock):
    """The kill index entry: what a poll needs to tell whether the victim it waits for was killed."""
    def who(proc, comm=None):
        return None if proc is None else {"pid": proc.pid, "comm": comm if comm is not None else proc.comm}
    sender_comm = kill.sender_at_kill.comm if kill.sender_at_kill is not None else None
    return {"time": clock.iso(kill.ts_ns), "ts_ns": kill.ts_ns, "signal": signal_name(kill.signal),
            "number": kill.signal, "victim": who(kill.victim), "sender": who(kill.sender, sender_comm),
            "mechanism": kill.mechanism, "count": kill.count}


def _read_small(path, limit=MAX_ARGV_BYTES):
    """The start of a /proc file through the bare syscalls (open() with its buffered reader costs several
    times more, and most processes a drain looks at after an exec are gone already)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def same_incarnation(pid, proc_start_ns, comm, proc_root=PROC):
    """True when /proc/PID/stat shows the process started at proc_start_ns, named comm (as exec named it)."""
    raw = _read_small("%s/%d/stat" % (proc_root, pid), 4096) if proc_start_ns is not None else None
    if not raw:
        return False
    head, _paren, tail = raw.rpartition(b")")
    fields = tail.split()
    try:
        start_ticks = int(fields[19])
    except (IndexError, ValueError):
        return False
    return abs(start_ticks * NS_PER_TICK - proc_start_ns) <= START_TOLERANCE_NS \
        and decode_name(head.partition(b"(")[2]) == comm


def read_after_exec(proc, proc_root=PROC):
    """argv and cgroup of a process just seen exec'ing, if /proc still shows that very incarnation.

    Returns True when they were kept. Only /proc/PID/{stat,cmdline,cgroup} are opened."""
    if not same_incarnation(proc.pid, proc.start_ns, proc.comm, proc_root):
        return False
    base = "%s/%d" % (proc_root, proc.pid)
    raw = _read_small(base + "/cmdline")
    # The trace follows cgroup moves (cgroup_attach_task) and children inherit their parent's: read it only
    # where the lineage does not know it.
    cgroups = read_cgroups(base) if proc.cgroup is None else (None, None)
    if not raw or not same_incarnation(proc.pid, proc.start_ns, proc.comm, proc_root):
        return False
    proc.argv = [decode_name(part) for part in raw.rstrip(b"\0").split(b"\0")]
    proc.facts_from["argv"] = ARGV_FROM_PROC
    if cgroups[0] is not None:
        proc.cgroup = cgroups[0]
    if cgroups[1] is not None:
        proc.memory_cgroup = cgroups[1]
    return True


class PipeReader:
    """A file-like view of trace_pipe for the parser: read() returns what is there, waiting when nothing is,
    and does the drain's housekeeping at those moments (between reads every event read is fed)."""

    def __init__(self, drain, fd, wakeup):
        self.drain = drain
        self.fd = fd
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)
        self.poller.register(wakeup, select.POLLIN)
        self.wakeup = wakeup
        self.next_read = 0.0

    def read(self, _size=None):
        drain = self.drain
        if drain.pending_execs and self.next_read:
            # The buffer was emptied by the last read (a batch ends): its exits are all fed now.
            drain.follow_execs()
        while not drain.stopping:
            drain.housekeeping(idle=False)
            pause = self.next_read - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                data = os.read(self.fd, READ_SIZE)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                data = None
            if data is not None:
                self.next_read = 0.0
                if len(data) < FULL_READ:
                    # Little was there: let events gather before the next read. trace_pipe wakes its reader at
                    # every event, and one pass of this loop per event costs far more than the event itself.
                    self.next_read = time.monotonic() + drain.batch_s
                return data  # b"": the end of a file (tests, replays); trace_pipe itself never ends
            drain.housekeeping(idle=True)
            if drain.stopping:
                break
            self.poller.poll(drain.wait_ms())
            try:
                os.read(self.wakeup, 512)
            except OSError:
                pass
        return b""


class Drain:
    """One drain: a lineage, the parser's counters and the files it keeps them in."""

    def __init__(self, lineage, stats, files, instance_dir, clock_offset_ns, status, proc_root=PROC,
                 flush_interval=2.0, kill_flush_interval=0.2, batch_s=BATCH_S, busy_batch_s=BUSY_BATCH_S):
        self.lineage = lineage
        self.stats = stats
        self.files = files
        self.instance_dir = instance_dir
        self.clock = Clock(clock_offset_ns)
        self.status = status  # started_at_ns, restarts, pid, ... (what status() reports besides the counters)
        self.proc_root = proc_root
        self.flush_interval = flush_interval
        self.kill_flush_interval = kill_flush_interval
        self.batch_s = batch_s
        self.busy_batch_s = busy_batch_s
        self.pass_events = 0  # what the last binary pass fed
        self.stopping = False
        self.flush_requested = False
        self.flush_seq = status.get("flush_seq", 0)
        self.kills_flushed = len(lineage.kills)
        self.last_flush = 0.0
        self.argv_caught = status.get("argv_caught", 0)
        self.argv_missed = status.get("argv_missed", 0)
        self.pending_execs = lineage.execs_seen = []  # processes seen exec'ing, followed up once the read is fed
        self.collect_garbage = None  # the cycle collector, when the drain runs it itself (after a flush)
        self.last_collect = time.monotonic()

    # ------------------------------------------------------------ signals

    def on_signal(self, signum, _frame):
        if signum == signal.SIGTERM or signum == signal.SIGINT:
            self.stopping = True
        else:
            self.flush_requested = True

    def install_signals(self):
        """SIGTERM: flush and exit; SIGUSR1: consume what is there, flush, go on. Returns the wakeup fd."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(signum, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        return read_end

    # ------------------------------------------------------------ the loop

    def run(self, pipe_fd, wakeup_fd):
        """Feed everything trace_pipe yields until SIGTERM; then flush once more."""
        feed = self.lineage.feed
        reader = PipeReader(self, pipe_fd, wakeup_fd)
        for event in iter_events(reader, self.stats, chunk_size=READ_SIZE):
            feed(event)
        self.follow_execs()
        self.flush(final=True)

    def run_raw(self, reader, pipe_fd, wakeup_fd):
        """Feed the per-CPU binary pages (sigsleuth_trace_raw) until SIGTERM; then flush once more.

        trace_pipe is only polled, never read: unlike trace_pipe_raw (which wakes its poller when the buffer
        is half full) it wakes at the first event. A pass that read pages is followed by another after
        batch_s (busy_batch_s on a busy host), so events gather between passes."""
        poller = select.poll()
        poller.register(pipe_fd, select.POLLIN)
        poller.register(wakeup_fd, select.POLLIN)
        while not self.stopping:
            pages = self.feed_pass(reader)
            if self.flush_requested:
                self.flush_requested = False
                self.catch_up(reader)
                self.flush()
            else:
                self.housekeeping(idle=False)
            if self.stopping:
                break
            if pages or reader.held:
                time.sleep(self.pass_pause())
                continue
            if poller.poll(self.wait_ms()):
                try:
                    os.read(wakeup_fd, 512)
                except OSError:
                    pass
                if not self.stopping and not self.flush_requested:
                    time.sleep(self.batch_s)
        self.feed_pass(reader, everything=True)
        self.flush(final=True)

    def pass_pause(self):
        """How long to let events gather after a pass that read pages."""
        busy = self.pass_events > BUSY_EVENTS_PER_S * self.batch_s
        return self.busy_batch_s if busy and self.batch_s else self.batch_s

    def feed_pass(self, reader, everything=False):
        """One read pass fed to the lineage, then the argv look-ups of its execs; returns the pages read."""
        events, pages = reader.read_pass(everything)
        self.pass_events = len(events)
        if events:
            self.lineage.feed_all(events)  # its execs: in pending_execs, or counted in execs_folded
            self.follow_execs()
        return pages

    def catch_up(self, reader):
        """Passes until everything written before now is fed (a pass holds back its last moments)."""
        asked = reader.clock_ns()
        self.feed_pass(reader)
        while reader.held and reader.held[0][1] <= asked:
            time.sleep(HOLD_BACK_NS / 1e9)
            self.feed_pass(reader)

    def follow_execs(self):
        """argv (and cgroup) of the processes seen exec'ing since the last read, once that read is fed: one
        whose exit came in the same read is gone already, and is not looked for; one that exec'd twice is looked
        for once, for what it runs now. Every exec counts, caught or missed (a short life's too)."""
        pending = self.pending_execs
        caught = 0
        if pending:
            followed = set()
            for proc in pending:
                if not proc.exited and proc not in followed:
                    followed.add(proc)
                    if read_after_exec(proc, self.proc_root):
                        caught += 1
        lineage = self.lineage
        self.argv_caught += caught
        self.argv_missed += len(pending) - caught + lineage.execs_folded
        lineage.execs_folded = 0
        pending.clear()

    def wait_ms(self):
        """How long to wait for the trace before the next flush is due (sooner with a kill not yet saved)."""
        interval = self.kill_flush_interval if len(self.lineage.kills) != self.kills_flushed else self.flush_interval
        due = self.last_flush + interval - time.monotonic()
        return max(10, min(1000, int(due * 1000)))

    def housekeeping(self, idle):
        """Flush when asked (once the buffer is consumed), when a kill is new, or when the interval is up."""
        now = time.monotonic()
        if idle and self.flush_requested:
            self.flush_requested = False
            self.flush()
        elif len(self.lineage.kills) != self.kills_flushed and now - self.last_flush >= self.kill_flush_interval:
            self.flush()
        elif now - self.last_flush >= self.flush_interval:
            self.flush()

    # ------------------------------------------------------------ persisting

    def flush(self, final=False):
        """Checkpoint, kill index, status: in that order, so the status never claims more than is saved."""
        self.flush_seq += 1
        lineage = self.lineage
        save_checkpoint(self.files.checkpoint, lineage, self.stats,
                        {"flush_seq": self.flush_seq, "flushed_at_ns": time.time_ns()})
        if len(lineage.kills) != self.kills_flushed or not os.path.exists(self.files.kills) or final:
            self.write_kill_index()
        self.kills_flushed = len(lineage.kills)
        atomic_write(self.files.status, json.dumps(self.status_dict(final)))
        self.last_flush = time.monotonic()
        if self.collect_garbage is not None and self.last_flush - self.last_collect >= COLLECT_INTERVAL_S:
            self.collect_garbage()
            self.last_collect = self.last_flush

    def write_kill_index(self):
        kills = self.lineage.kills
        index = {"count": len(kills),
                 "kills": [kill_summary(kill, self.clock) for kill in kills[-KILL_INDEX_LIMIT:]]}
        atomic_write(self.files.kills, json.dumps(index))

    def status_dict(self, final=False):
        overrun = dropped = 0
        for counters in read_loss_counters(self.instance_dir).values():
            overrun += counters.get("overrun", 0) or 0
            dropped += (counters.get("dropped_events", 0) or 0) + (counters.get("commit_overrun", 0) or 0)
        status = dict(self.status)
        status.update(
            state="stopped" if final else "running",
            flush_seq=self.flush_seq, last_flush_ns=time.time_ns(), events=self.stats.events,
            bytes=self.stats.bytes, lost_events=self.stats.lost_events, overrun=overrun, dropped=dropped,
            kills=len(self.lineage.kills), live_processes=len(self.lineage.by_pid),
            argv_caught=self.argv_caught, argv_missed=self.argv_missed, last_event_ts_ns=self.stats.last_ts,
            rss_kb=_rss_kb(self.proc_root),
        )
        return status


def _rss_kb(proc_root):
    try:
        with open("%s/self/status" % proc_root, "rb") as handle:
            for line in handle:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
