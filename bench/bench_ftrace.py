#!/usr/bin/env python3
"""Trace parser benchmark: throughput and peak memory on a generated trace.

    python3 bench/bench_ftrace.py [--mb 200] [--keep FILE]

Generates a fork+exec storm in the instance's text format (task_newtask, sched_process_fork, task_rename,
sched_process_exec, sched_process_exit per child, with a kill every 10,000 children), then, each in a fresh
subprocess so peak RSS is its own: a naive one-regex-per-line parse (the baseline), our parser alone, and the
full pipeline (parser + lineage engine), on the whole file and on a quarter of it, to show that memory does not
grow with the input.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(path, megabytes):
    target = megabytes * 1_000_000
    names = ["bash", "sh", "python3", "<...>", "a pid=7 grp=0 r", "kworker-2 [001]"]
    written = 0
    ts = 1000.0
    pid = 1000
    with open(path, "w") as out:
        out.write("# tracer: nop\n#\n# entries-in-buffer/entries-written: 0/0   #P:2\n#\n")
        daemon = 500
        n = 0
        while written < target:
            pid = pid + 1 if pid < 4_000_000 else 1000
            task = names[n % len(names)]
            cpu = n % 2
            lines = [
                "%16s-%-7d (%7d) [%03d] ..... %12.6f: task_newtask: pid=%d comm=%s clone_flags=1200000 oom_score_adj=0\n"
                % (task, daemon, daemon, cpu, ts, pid, task),
                "%16s-%-7d (%7d) [%03d] ..... %12.6f: sched_process_fork: comm=%s pid=%d child_comm=%s child_pid=%d\n"
                % (task, daemon, daemon, cpu, ts + 0.000002, task, daemon, task, pid),
                "%16s-%-7d (%7d) [%03d] ..... %12.6f: task_rename: pid=%d oldcomm=%s newcomm=true oom_score_adj=0\n"
                % ("true", pid, pid, cpu, ts + 0.000100, pid, task),
                "%16s-%-7d (%7d) [%03d] ..... %12.6f: sched_process_exec: filename=/usr/bin/true pid=%d old_pid=%d\n"
                % ("true", pid, pid, cpu, ts + 0.000110, pid, pid),
                "%16s-%-7d (%7d) [%03d] ..... %12.6f: sched_process_exit: comm=true pid=%d prio=120 group_dead=true\n"
                % ("true", pid, pid, cpu, ts + 0.000500, pid),
            ]
            if n % 10_000 == 9_999:
                lines.insert(4, "%16s-%-7d (%7d) [%03d] d..1. %12.6f: signal_generate: sig=9 errno=0 code=0 "
                                "comm=victim pid=%d grp=1 res=0\n" % ("true", pid, pid, cpu, ts + 0.0004, 400))
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk)
            ts += 0.001
            n += 1
    return written


MEASURE = r"""
import resource, sys, time
import ansible.module_utils
ansible.module_utils.__path__.append(sys.argv[1] + "/module_utils")
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events
from ansible.module_utils.sigsleuth_lineage import Lineage
path, mode, limit = sys.argv[2], sys.argv[3], int(sys.argv[4])
class Limited:
    def __init__(self, handle, limit):
        self.handle, self.left = handle, limit
    def read(self, size):
        data = self.handle.read(min(size, self.left))
        self.left -= len(data)
        stats.bytes += len(data) if mode == "naive" else 0
        return data
    def __iter__(self):
        for line in self.handle:
            if self.left <= 0:
                return
            self.left -= len(line)
            stats.bytes += len(line)
            yield line
stats = TraceStats()
start = time.perf_counter()
with open(path, "rb") as handle:
    events = iter_events(Limited(handle, limit), stats)
    if mode == "naive":
        # The baseline the issue quotes: one regex per line, fields left as text.
        import re
        line_re = re.compile(rb"^\s*(.+)-(\d+)\s+\(\s*(\S+)\)\s+\[(\d+)\]\s+(\S+)\s+([\d.]+): (\w+): (.*)$")
        handle.close()
        n = 0
        with open(path, "rb") as lines:
            for line in Limited(lines, limit).__iter__():
                if line_re.match(line):
                    n += 1
        stats.events = n
    elif mode == "pipeline":
        lineage = Lineage([9])
        feed = lineage.feed
        for event in events:
            feed(event)
    else:
        for event in events:
            pass
elapsed = time.perf_counter() - start
print(stats.bytes, stats.events, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def measure(path, mode, limit):
    out = subprocess.run([sys.executable, "-c", MEASURE, ROOT, path, mode, str(limit)],
                         check=True, capture_output=True, text=True).stdout.split()
    nbytes, events, elapsed, maxrss_kb = int(out[0]), int(out[1]), float(out[2]), int(out[3])
    return nbytes, events, elapsed, maxrss_kb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the generated trace in MB")
    parser.add_argument("--keep", help="write the trace here and keep it")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sigsleuth-bench-")
    path = args.keep or os.path.join(workdir, "trace.txt")
    started = time.perf_counter()
    size = generate(path, args.mb)
    print("generated %.1f MB in %.1f s: %s" % (size / 1e6, time.perf_counter() - started, path))
    try:
        for mode in ("naive", "parser", "pipeline"):
            for fraction in (4, 1):
                limit = os.path.getsize(path) // fraction
                nbytes, events, elapsed, rss = measure(path, mode, limit)
                print("%-8s %6.1f MB  %9d events  %6.2f s  %6.1f MB/s  peak RSS %6.1f MB"
                      % (mode, nbytes / 1e6, events, elapsed, nbytes / 1e6 / elapsed, rss / 1024))
    finally:
        if not args.keep:
            os.unlink(path)
            os.rmdir(workdir)


if __name__ == "__main__":
    main()
