#!/usr/bin/env python3
"""How much history a trace buffer holds: events and bytes per fork+exec, and seconds per MiB.

    .venv/bin/python bench/bench_retention.py [--forks 3000] [--precisions light,syscall]

For each precision it arms this machine through playbooks/arm.yml with a buffer large enough that nothing is
overwritten, runs N fork+exec of /bin/true, and reads the instance's per-CPU ring-buffer statistics before
and after: the growth in entries and bytes, divided by N, is what one fork+exec costs the buffer. From it, the
seconds of history one MiB of per-CPU buffer holds at 100, 1,000 and 3,000 fork+exec per second, on a host
with this machine's CPU count (events spread over the CPUs; a host with more CPUs holds proportionally more).

It arms this machine: run it as root, alone (it holds /run/sigsleuth-test.lock, as the tests do).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.lock import armed_lock  # noqa: E402

PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
STATE = "/var/lib/sigsleuth/state.json"
RATES = (100, 1000, 3000)
MIB = 1 << 20


def playbook(name, extra):
    proc = subprocess.run([PLAYBOOK, os.path.join("playbooks", name), "-e", json.dumps(extra)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (name, proc.stdout[-3000:]))


def buffer_totals(instance):
    """(entries, bytes) summed over the instance's CPUs."""
    entries = used = 0
    per_cpu = os.path.join(instance, "per_cpu")
    for cpu in os.listdir(per_cpu):
        with open(os.path.join(per_cpu, cpu, "stats")) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key == "entries":
                    entries += int(value)
                elif key == "bytes":
                    used += int(value)
    return entries, used


def measure(precision, forks):
    playbook("arm.yml", {"sigsleuth_precision": precision, "sigsleuth_buffer_size_kb": 65536})
    try:
        with open(STATE) as handle:
            ftrace = json.load(handle)["ftrace"]
        instance = os.path.join(ftrace["tracefs"], "instances", ftrace["instance"])
        before = buffer_totals(instance)
        subprocess.run(["sh", "-c", 'i=0; while [ "$i" -lt %d ]; do /bin/true; i=$((i+1)); done' % forks],
                       check=True)
        after = buffer_totals(instance)
    finally:
        playbook("disarm.yml", {})
    return (after[0] - before[0]) / forks, (after[1] - before[1]) / forks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forks", type=int, default=3000)
    parser.add_argument("--precisions", default="light,syscall")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_retention arms this machine: run it as root")
    cpus = os.cpu_count() or 1
    rows = []
    with armed_lock():
        for precision in args.precisions.split(","):
            events, used = measure(precision, args.forks)
            rows.append((precision, events, used, [cpus * MIB / (used * rate) for rate in RATES]))
    print("Per fork+exec of /bin/true (%d runs), and seconds of history per MiB of per-CPU buffer on a %d-CPU "
          "host:\n" % (args.forks, cpus))
    print("| precision | events per fork+exec | bytes per fork+exec | %s |" % " | ".join(
        "s/MiB at %d/s" % rate for rate in RATES))
    print("|---|---|---|%s|" % "|".join("---" for _ in RATES))
    for precision, events, used, seconds in rows:
        print("| %s | %.1f | %.0f | %s |" % (precision, events, used, " | ".join("%.1f" % s for s in seconds)))


if __name__ == "__main__":
    main()
