#!/usr/bin/env python3
"""What arming costs the host: paired armed/unarmed runs of syscall- and fork-heavy workloads.

    .venv/bin/python bench/bench_overhead.py [--pairs 5] [--configs light,syscall,...] [--workloads ...]

For each configuration (a set of arm.yml extra vars), each pair runs every workload once unarmed and once
armed, arming and disarming through the real playbooks between the two halves; the order of the halves
alternates from pair to pair so that a drifting machine does not favour either. The table gives each
workload's median unarmed and armed wall time and the median of the per-pair ratios armed/unarmed.

It arms this machine: run it as root, alone (it holds /run/sigsleuth-test.lock, as the tests do). It is a
benchmark, not a test: nothing asserts a ratio.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tests.lock import armed_lock  # noqa: E402

PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")

# name -> (what it is, argv)
WORKLOADS = {
    "fork_exec": ("1,500 fork+exec of /bin/true",
                  ["sh", "-c", "i=0; while [ $i -lt 1500 ]; do /bin/true; i=$((i+1)); done"]),
    "dd_1byte": ("dd if=/dev/zero of=/dev/null bs=1 count=400000",
                 ["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=400000", "status=none"]),
    "pipe_1byte": ("150,000 x (1-byte pipe write + read), Python",
                   [sys.executable, "-c", "import os\nr, w = os.pipe()\nfor _ in range(150000):\n"
                    "    os.write(w, b'x'); os.read(r, 1)\n"]),
    "open_close": ("100,000 x open+close of /dev/null, Python",
                   [sys.executable, "-c", "import os\nfor _ in range(100000):\n"
                    "    os.close(os.open('/dev/null', os.O_RDONLY))\n"]),
}

# name -> (what it is, extra vars for arm.yml)
CONFIGS = {
    "light": ("light default (ftrace, audit only where it already runs)", {}),
    "light+audit": ("light, audit armed", {"sigsleuth_sources": ["ftrace", "audit"]}),
    "syscall": ("syscall precision", {"sigsleuth_precision": "syscall"}),
    "syscall+audit": ("syscall precision, audit armed",
                      {"sigsleuth_precision": "syscall", "sigsleuth_sources": ["ftrace", "audit"]}),
    "join": ("light default on a host whose auditd already runs a rule set: the marginal cost of "
             "sigsleuth's kill-family and exec rules", {}),
    "today-ftrace": ("pre-issue-8 arm, ftrace only", {"sigsleuth_sources": ["ftrace"]}),
    "today-default": ("pre-issue-8 default arm (ftrace + audit)", {}),
}
# The "join" configuration measures against a host that already audits: auditd running, audit enabled and a
# small rule set of the kind hosts carry (watches on credentials, failed opens, module loading).
EXISTING_RULES = [
    ["-w", "/etc/passwd", "-p", "wa", "-k", "bench-identity"],
    ["-w", "/etc/shadow", "-p", "wa", "-k", "bench-identity"],
    ["-a", "always,exit", "-F", "arch=b64", "-S", "openat", "-F", "exit=-EACCES", "-k", "bench-access"],
    ["-a", "always,exit", "-F", "arch=b64", "-S", "init_module,finit_module", "-k", "bench-modules"],
]


def playbook(name, extra):
    argv = [PLAYBOOK, os.path.join("playbooks", name), "-e", json.dumps(extra)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s\n%s" % (" ".join(argv), proc.stdout[-4000:], proc.stderr[-2000:]))


def timed(argv):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def auditctl(*args):
    subprocess.run(["auditctl"] + list(args), check=True, stdout=subprocess.DEVNULL)


def audit_running():
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
    return "pid 0" not in status


class ExistingAudit:
    """auditd running with EXISTING_RULES for the length of one configuration, then as it was found."""

    def __enter__(self):
        self.started = not audit_running()
        if self.started:
            subprocess.run(["auditd"], check=True)
            time.sleep(1)
        for rule in EXISTING_RULES:
            auditctl(*rule)
        return self

    def __exit__(self, *exc):
        for rule in EXISTING_RULES:
            auditctl(*(["-W"] + rule[1:] if rule[0] == "-w" else ["-d"] + rule[1:]))
        if self.started:
            auditctl("--signal", "TERM")
            time.sleep(1)
            auditctl("-e", "0")


def run_config(config, workloads, pairs):
    if config == "join":
        with ExistingAudit():
            return run_pairs(config, workloads, pairs)
    return run_pairs(config, workloads, pairs)


def run_pairs(config, workloads, pairs):
    extra = CONFIGS[config][1]
    samples = {name: {"unarmed": [], "armed": []} for name in workloads}
    for pair in range(pairs):
        halves = ("unarmed", "armed") if pair % 2 == 0 else ("armed", "unarmed")
        for half in halves:
            if half == "armed":
                playbook("arm.yml", extra)
            for name in workloads:
                samples[name][half].append(timed(WORKLOADS[name][1]))
            if half == "armed":
                playbook("disarm.yml", {})
        print("  %s: pair %d/%d done" % (config, pair + 1, pairs), file=sys.stderr)
    return samples


def table(results, workloads):
    lines = ["| workload | %s |" % " | ".join("%s (ms, ratio)" % config for config in results),
             "|---|%s|" % "|".join("---" for _ in results)]
    unarmed_row = {}
    for name in workloads:
        cells = []
        for config, samples in results.items():
            armed = samples[name]["armed"]
            unarmed = samples[name]["unarmed"]
            ratios = [a / u for a, u in zip(armed, unarmed)]
            unarmed_row.setdefault(name, []).extend(unarmed)
            cells.append("%.0f vs %.0f (%.2fx)" % (statistics.median(armed), statistics.median(unarmed),
                                                    statistics.median(ratios)))
        lines.append("| %s | %s |" % (WORKLOADS[name][0], " | ".join(cells)))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="armed/unarmed pairs per configuration (>= 5)")
    parser.add_argument("--configs", default="light,syscall,light+audit,syscall+audit",
                        help="comma-separated, from: " + ", ".join(CONFIGS))
    parser.add_argument("--workloads", default="fork_exec,dd_1byte,pipe_1byte,open_close",
                        help="comma-separated, from: " + ", ".join(WORKLOADS))
    parser.add_argument("--json", help="also write the raw samples here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_overhead arms this machine: run it as root")
    configs = [c for c in args.configs.split(",") if c]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [c for c in configs if c not in CONFIGS] + [w for w in workloads if w not in WORKLOADS]
    if unknown:
        sys.exit("unknown configuration or workload: %s" % ", ".join(unknown))
    results = {}
    with armed_lock():
        for config in configs:
            print("%s: %s" % (config, CONFIGS[config][0]), file=sys.stderr)
            results[config] = run_config(config, workloads, args.pairs)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    print("Armed vs unarmed wall time, medians of %d pairs (ratio = median of per-pair armed/unarmed):\n"
          % args.pairs)
    print(table(results, workloads))


if __name__ == "__main__":
    main()
