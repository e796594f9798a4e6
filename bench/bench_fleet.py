#!/usr/bin/env python3
"""What a fleet run costs: arm, collect and disarm over SSH for 1, 2, 4 and 8 hosts.

    .venv/bin/python bench/bench_fleet.py [--hosts 1,2,4,8] [--runs 5] [--forks 8] [--tasks]

The hosts are the SSH test fleet of tests/integration/fleet_support.py: one sshd per host on its own loopback
address, reached as root with pipelining (ansible.cfg), each with its own tracefs instance and state dir, all
on this machine (its CPUs are shared by the control node and every "host", so wall time cannot stay flat
as hosts are added). Each run is arm, collect and disarm of a quiet fleet (nothing killed), ftrace only; every
playbook starts from fresh SSH connections (the control masters are closed after each, which is also when
their bytes and the hosts' CPU time can be counted). Per playbook and fleet size, the medians over the runs:

* wall: ansible-playbook's wall time;
* control CPU: user+system seconds of ansible-playbook and everything it waited for (rusage of children:
  its workers, local module runs, ssh clients) plus the ssh control masters (not its children: read from
  /proc before they exit), in total and per host;
* target CPU per host: user+system seconds of each host's sshd and all it ran (its sessions, sudo, the
  modules), from the sshd's own and its reaped children's times;
* bytes per host over SSH (sent to the host / received from it, from the ssh clients' VERBOSE "Transferred"
  line), and for collect the size of the host's report.json.

--tasks also prints where one host's collect spends its wall time, task by task (bench/callback_plugins).
It arms this machine: run it as root; it holds /run/sigsleuth-test.lock per fleet size, as the tests do. A
benchmark, not a test: nothing asserts a time.
"""

import argparse
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "integration")]
from tests.lock import armed_lock  # noqa: E402
from fleet_support import FleetHost, SSHFleet  # noqa: E402

PLAYBOOKS = ("arm.yml", "collect.yml", "disarm.yml")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")
TIMING_PLUGINS = os.path.join(ROOT, "bench", "callback_plugins")


def proc_cpu_s(pid, children=True):
    """utime+stime (and, with children, the times of the children it reaped) of pid, in seconds."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / CLK_TCK


def ssh_masters(fleet):
    """pids of the ssh control masters of this fleet (their command line names its control path dir)."""
    found = []
    marker = fleet.path("cp").encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as handle:
                    if marker in handle.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


def transferred(fleet, host):
    """(sent, received) bytes summed over every finished connection in the host's client log."""
    try:
        with open(fleet.client_log(host)) as handle:
            pairs = [tuple(map(int, m.groups())) for m in TRANSFERRED.finditer(handle.read())]
    except OSError:
        return 0, 0
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def run_once(fleet, playbook, forks, report_dir, env=None):
    """One playbook run over the fleet, from fresh connections; returns its measurements."""
    targets = [(host, transferred(fleet, host), proc_cpu_s(host.sshd.pid)) for host in fleet.hosts]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    run = fleet.run(playbook, "-e", "sigsleuth_report_dir=%s" % report_dir, forks=forks, env=env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if run.rc != 0:
        sys.exit("%s failed (rc %d):\n%s" % (playbook, run.rc, run.output()))
    masters_cpu = sum(proc_cpu_s(pid, children=False) for pid in ssh_masters(fleet))
    fleet.close_masters()
    time.sleep(0.2)  # the per-connection sshd exits and is reaped by its listener; the client log is flushed
    control = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + masters_cpu
    sent = received = target = 0.0
    for host, (sent0, received0), cpu0 in targets:
        sent1, received1 = transferred(fleet, host)
        sent += sent1 - sent0
        received += received1 - received0
        target += proc_cpu_s(host.sshd.pid) - cpu0
    count = len(fleet.hosts)
    measured = {"wall": wall, "control": control, "control_per_host": control / count,
                "target_per_host": target / count, "sent_per_host": sent / count,
                "received_per_host": received / count}
    if playbook == "collect.yml":
        sizes = [os.path.getsize(os.path.join(report_dir, host.name, "report.json")) for host in fleet.hosts]
        measured["report_per_host"] = sum(sizes) / count
    return measured


def bench_size(count, runs, forks, scratch):
    hosts = [FleetHost("bench-h%d" % index, "127.0.0.%d" % (2 + index)) for index in range(count)]
    fleet = SSHFleet(hosts, prefix="bench", client_logs=True)
    results = {playbook: [] for playbook in PLAYBOOKS}
    with armed_lock():
        try:
            fleet.start()
            for run in range(runs):
                for playbook in PLAYBOOKS:
                    report_dir = os.path.join(scratch, "reports-%d-%d" % (count, run))
                    results[playbook].append(run_once(fleet, playbook, forks, report_dir))
        finally:
            if fleet.base:
                fleet.run("disarm.yml")
            problems = fleet.stop()
            if problems:
                print("WARNING: the bench fleet left things behind: %s" % problems, file=sys.stderr)
    return {playbook: {key: statistics.median(run[key] for run in runs_) for key in runs_[0]}
            for playbook, runs_ in results.items()}


def task_breakdown(forks, scratch):
    """Where one quiet host's collect spends its wall time, task by task (median of 5 runs per task)."""
    fleet = SSHFleet([FleetHost("bench-h0", "127.0.0.2")], prefix="bench")
    timing = os.path.join(scratch, "timing.json")
    env = {"ANSIBLE_CALLBACK_PLUGINS": TIMING_PLUGINS, "ANSIBLE_CALLBACKS_ENABLED": "sigsleuth_timing",
           "SIGSLEUTH_TIMING_FILE": timing}
    spans, walls = {}, []
    with armed_lock():
        try:
            fleet.start()
            fleet.run("arm.yml")
            for _ in range(5):
                walls.append(run_once(fleet, "collect.yml", forks, os.path.join(scratch, "tasks"), env)["wall"])
                with open(timing) as handle:
                    for index, task in enumerate(json.load(handle)["tasks"]):
                        spans.setdefault((index, task["name"], task["action"]), []).append(task["seconds"])
        finally:
            fleet.run("disarm.yml")
            fleet.stop()
    print("\nOne quiet host's collect, task by task (median of 5; wall median %.2f s, tasks %.2f s, the rest is "
          "ansible-playbook's start-up and the SSH connection):\n" % (
              statistics.median(walls), sum(statistics.median(v) for v in spans.values())))
    print("| s | task | action |\n|---:|---|---|")
    for (_, name, action), seconds in sorted(spans.items()):
        print("| %.2f | %s | %s |" % (statistics.median(seconds), name.replace("|", "/"), action))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", default="1,2,4,8", help="fleet sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="runs per fleet size (medians are reported)")
    parser.add_argument("--forks", type=int, default=8)
    parser.add_argument("--tasks", action="store_true", help="also break one host's collect down by task")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_fleet.py runs sshd hosts and arms this machine: run it as root")
    sizes = [int(size) for size in args.hosts.split(",")]
    with tempfile.TemporaryDirectory(prefix="sigsleuth-bench-fleet-") as scratch:
        table = {size: bench_size(size, args.runs, args.forks, scratch) for size in sizes}
        print("Medians of %d runs, forks %d, ftrace only, quiet hosts, %d CPUs shared by control node and hosts:\n"
              % (args.runs, args.forks, os.cpu_count()))
        print("| playbook | hosts | wall s | control CPU s | control CPU s/host | target CPU s/host "
              "| KB sent/host | KB received/host | report KB/host |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for playbook in PLAYBOOKS:
            for size in sizes:
                cell = table[size][playbook]
                report = "%.1f" % (cell["report_per_host"] / 1024) if "report_per_host" in cell else ""
                print("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.1f | %.1f | %s |" % (
                    playbook.replace(".yml", ""), size, cell["wall"], cell["control"], cell["control_per_host"],
                    cell["target_per_host"], cell["sent_per_host"] / 1024, cell["received_per_host"] / 1024,
                    report))
        if args.tasks:
            task_breakdown(args.forks, scratch)


if __name__ == "__main__":
    main()
