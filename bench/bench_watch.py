#!/usr/bin/env python3
"""The watch drain under sustained fork+exec: its CPU and memory, loss, ancestry, and collect time.

    .venv/bin/python bench/bench_watch.py sources [--rate 3000] [--seconds 10]
    .venv/bin/python bench/bench_watch.py load    [--rate 3000] [--seconds 60] [--runs 1]
    .venv/bin/python bench/bench_watch.py ceiling [--rate 3000] [--seconds 20] [--runs 5]
    .venv/bin/python bench/bench_watch.py collect [--rate 1000] [--seconds 180] [--pairs 5]
    .venv/bin/python bench/bench_watch.py argv    [--runs 200] [--load 3000]
    .venv/bin/python bench/bench_watch.py readers [--rate 3000] [--seconds 15] [--pairs 5]
    .venv/bin/python bench/bench_watch.py versions --baseline DIR [--rate 3000] [--seconds 12] [--pairs 5]
    (every mode: [--python PATH], the interpreter the drain runs under, as a target's ansible_python_interpreter)

sources: arms a plain instance (no drain), runs the load, then reads the buffer through trace_pipe (text,
  parsed by sigsleuth_trace_parser) and, after the same load again, through the per-CPU trace_pipe_raw (binary
  pages decoded by sigsleuth_trace_raw), each with and without feeding the lineage: CPU seconds (user and
  system: the kernel formats the text in the reader's read calls) per MiB and microseconds per event.
load: arms with sigsleuth_watch: true, starts an ancestor (a shell that sleeps through the load, then forks a
  child that SIGKILLs a victim), runs the load at --rate fork+exec/s for --seconds, samples the drain's CPU %
  (of one core) and RSS every second, then collects and checks that the kill's ancestry names the ancestor.
  With --runs N, N such loads one after another, and a table of them: the drain's mean CPU per fork+exec
  made, and what that is at --rate (the VM may not reach it).
ceiling: nothing armed, the same load --runs times: the fork+exec rate this VM sustains at all.
collect: arms two instances at once, one watched and one not, runs the load once, then times collect (the
  sigsleuth_collect.collect() call itself, in this process) on each, alternately, --pairs times: medians.
readers: the drain with each reader (trace_pipe text, trace_pipe_raw binary) under the same load, paired and
  alternated --pairs times: its CPU % of one core and microseconds per event, medians and ratios.
versions: this checkout's binary drain against another checkout's (--baseline DIR, e.g. a git worktree of an
  older commit), alternated under the same load on one armed instance, --pairs times: medians and new/old.
argv: how often the drain catches the argv of a shell living 50 ms and 500 ms (sh -c 'sleep 0.05'), with
  --load fork+exec/s of load meanwhile (where the drain passes every 50 ms instead of 20).

The load is os.posix_spawn of /bin/true (a vfork+exec) from two paced spawner processes; with --exec tiny,
of a 129-byte static x86-64 program that only exits (this VM cannot make 3,000/s of /bin/true: its dynamic
loading is most of the load's own CPU). It arms this machine:
run as root; it holds /run/sigsleuth-test.lock, as the tests do, and disarms at the end.
"""

import argparse
import atexit
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ansible.module_utils  # noqa: E402

ansible.module_utils.__path__.append(os.path.join(ROOT, "module_utils"))
from ansible.module_utils.sigsleuth_collect import collect  # noqa: E402
from ansible.module_utils.sigsleuth_lineage import Lineage  # noqa: E402
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events  # noqa: E402
from ansible.module_utils.sigsleuth_trace_raw import RawReader  # noqa: E402
from tests.lock import armed_lock  # noqa: E402

PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
MIB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def playbook(name, extra):
    proc = subprocess.run([PLAYBOOK, os.path.join("playbooks", name), "-e", json.dumps(extra)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (name, proc.stdout[-3000:]))


# --python: the interpreter the drain runs under, as a target's ansible_python_interpreter (default: this
# checkout's .venv one, as inventory.local has it; a fleet's hosts run their own, e.g. /usr/bin/python3).
DRAIN_PYTHON = None


def setup(name, watch, buffer_kb=8192):
    config = {"sigsleuth_instance": "bench_" + name, "sigsleuth_state_dir": "/var/lib/sigsleuth-bench-" + name,
              "sigsleuth_watch": watch, "sigsleuth_buffer_size_kb": buffer_kb}
    if DRAIN_PYTHON:
        config["ansible_python_interpreter"] = DRAIN_PYTHON
    return config


def state(config):
    with open(os.path.join(config["sigsleuth_state_dir"], "state.json")) as handle:
        return json.load(handle)


def instance_dir(config):
    ftrace = state(config)["ftrace"]
    return os.path.join(ftrace["tracefs"], "instances", ftrace["instance"])


# ---------------------------------------------------------------- load

def tiny_exit_elf():
    """A 129-byte static x86-64 ELF whose one instruction run is exit(0): a fork+exec whose exec costs the VM
    almost nothing (no dynamic loader, no libc), so the load reaches rates /bin/true cannot here. The drain
    sees the same four events per process (fork, rename, exec, exit) either way."""
    code = b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05"  # mov eax, 60 (exit); xor edi, edi; syscall
    base, ehdr_size, phdr_size = 0x400000, 64, 56
    size = ehdr_size + phdr_size + len(code)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8 + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, base + ehdr_size + phdr_size, ehdr_size, 0, 0, ehdr_size, phdr_size, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X, the whole file
    return ehdr + phdr + code


def load_program(choice):
    """The file the load execs: /bin/true, or (choice "tiny", x86-64 only) tiny_exit_elf() in a private
    temporary directory, removed at exit."""
    if choice != "tiny":
        return choice
    if os.uname().machine != "x86_64":
        sys.exit("--exec tiny is an x86-64 program: this machine is %s" % os.uname().machine)
    folder = tempfile.mkdtemp(prefix="sigsleuth-bench-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "exit0")
    with open(path, "wb") as handle:
        handle.write(tiny_exit_elf())
    os.chmod(path, 0o755)
    if subprocess.run([path]).returncode != 0:
        sys.exit("the tiny program does not run here")
    return path


LOAD_PROGRAM = "/bin/true"


def spawner(rate, seconds, program="/bin/true"):
    """One paced spawner: rate posix_spawns of program per second for seconds; prints how many it made."""
    start = time.monotonic()
    made = 0
    children = 0
    while True:
        now = time.monotonic() - start
        if now >= seconds:
            break
        due = int(now * rate)
        while made < due:
            try:
                os.posix_spawn(program, [os.path.basename(program)], {})
            except BlockingIOError:  # the pid limit: reap, then go on
                os.waitpid(-1, 0)
                children -= 1
                continue
            made += 1
            children += 1
        while children:
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children -= 1
        time.sleep(0.001)
    while children:
        os.waitpid(-1, 0)
        children -= 1
    print(made)


def start_load(rate, seconds, workers=2):
    return [subprocess.Popen([sys.executable, __file__, "_spawner", str(rate / workers), str(seconds), LOAD_PROGRAM],
                             stdout=subprocess.PIPE, text=True) for _ in range(workers)]


def finish_load(procs):
    return sum(int(proc.communicate()[0].strip() or 0) for proc in procs)


def run_load(rate, seconds):
    return finish_load(start_load(rate, seconds))


# ---------------------------------------------------------------- sources

def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_text_only(instance):
    return read_text(instance, feed=False)


def read_text(instance, feed=True):
    """trace_pipe until it is empty, parsed (and fed to a lineage): (bytes, events, cpu s)."""
    fd = os.open(os.path.join(instance, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)

    class Pipe:
        def read(self, _n):
            try:
                return os.read(fd, 1 << 16)
            except BlockingIOError:
                return b""
    stats, lineage = TraceStats(), Lineage([9], precision="light")
    before = cpu_seconds()
    for event in iter_events(Pipe(), stats, chunk_size=1 << 16):
        if feed:
            lineage.feed(event)
    spent = cpu_seconds() - before
    os.close(fd)
    return stats.bytes, stats.events, spent


def read_raw(instance, feed=True):
    """Every CPU's trace_pipe_raw until empty, decoded by sigsleuth_trace_raw (and fed to a lineage), as the
    drain does: (bytes, events, cpu s)."""
    stats, lineage = TraceStats(), Lineage([9], precision="light")
    before = cpu_seconds()
    reader = RawReader(instance, os.path.dirname(os.path.dirname(instance)), stats)
    while True:
        events, pages = reader.read_pass(everything=True)
        if feed:
            for event in events:
                lineage.feed(event)
        if not pages:
            break
    reader.close()
    return stats.bytes, stats.events, cpu_seconds() - before


def read_raw_only(instance):
    return read_raw(instance, feed=False)


def bench_sources(args):
    config = setup("src", False, 65536)
    playbook("arm.yml", config)
    try:
        instance = instance_dir(config)
        read_text(instance)  # empty it
        rows = []
        for name, reader in (("trace_pipe (text, parsed + lineage)", read_text),
                             ("trace_pipe (text, parsed only)", read_text_only),
                             ("trace_pipe_raw (binary, decoded + lineage)", read_raw),
                             ("trace_pipe_raw (binary, decoded only)", read_raw_only)):
            spawned = run_load(args.rate, args.seconds)
            size, events, spent = reader(instance)
            rows.append((name, spawned, size / MIB, events, spent / max(size / MIB, 1e-9), spent / max(events, 1) * 1e6))
        print("| reader | fork+exec | MiB read | events | CPU s per MiB | us per event |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in rows:
            print("| %s | %d | %.1f | %d | %.3f | %.2f |" % row)
    finally:
        playbook("disarm.yml", config)


# ---------------------------------------------------------------- the drain under load

def steal_ticks():
    """The host's stolen and total CPU ticks so far (/proc/stat): on a VM, the time its CPUs waited for the
    hypervisor - a load whose CPUs are stolen from makes fewer forks, and every event costs more."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def steal_percent(before, after):
    return 100.0 * (after[0] - before[0]) / max(after[1] - before[1], 1)


def proc_sample(pid):
    with open("/proc/%d/stat" % pid, "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    user, system = int(fields[11]), int(fields[12])
    with open("/proc/%d/status" % pid) as handle:
        rss = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return user + system, rss, user, system


def bench_load(args):
    runs = [load_run(args) for _ in range(max(1, args.runs))]
    if len(runs) > 1:
        print("\n| run | fork+exec/s | drain CPU %% mean | us of drain CPU per fork+exec | at %d/s: %% of one core "
              "| CPU stolen %% | lost |" % args.rate)
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for number, run in enumerate(runs, 1):
            print("| %d | %.0f | %.2f | %.1f | %.2f | %.1f | %d |" % ((number,) + run))
        print("| median | %.0f | %.2f | %.1f | %.2f | %.1f | |"
              % tuple(statistics.median(run[i] for run in runs) for i in range(5)))


def bench_ceiling(args):
    """The load alone, nothing armed: how many fork+exec per second this VM makes at all."""
    rates = []
    for number in range(1, max(1, args.runs) + 1):
        stolen = steal_ticks()
        made = run_load(args.rate, args.seconds)
        rates.append(made / args.seconds)
        print("run %d: %d fork+exec in %d s (%.0f/s asked %d/s), CPU stolen %.1f %%"
              % (number, made, args.seconds, rates[-1], args.rate, steal_percent(stolen, steal_ticks())))
    print("median: %.0f fork+exec/s with nothing armed" % statistics.median(rates))


def load_run(args):
    """One load with watch on, printed; returns (rate reached, mean CPU %, us per fork+exec, % at --rate,
    stolen %, events lost)."""
    config = setup("load", True)
    playbook("arm.yml", config)
    victim = ancestor = None
    try:
        drain = state(config)["watch"]["pid"]
        victim = subprocess.Popen(["sleep", "100000"])
        ancestor = subprocess.Popen(["sh", "-c", "sleep %d; sh -c 'kill -9 %d'" % (args.seconds + 2, victim.pid)])
        load = start_load(args.rate, args.seconds)
        stolen = steal_ticks()
        samples, last, t0 = [], proc_sample(drain), time.monotonic()
        first = last
        while any(proc.poll() is None for proc in load):
            time.sleep(1.0)
            now = proc_sample(drain)
            elapsed = time.monotonic() - t0
            samples.append((elapsed, (now[0] - last[0]) / TICK * 100.0, now[1]))
            last, t0 = now, time.monotonic()
        spawned = finish_load(load)
        stolen = steal_percent(stolen, steal_ticks())
        ancestor.wait()
        victim.wait()
        time.sleep(1.0)
        report = collect(config["sigsleuth_state_dir"])
    finally:
        for proc in (victim, ancestor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        playbook("disarm.yml", config)
    watch = report["sources"]["ftrace"]["watch"]
    kills = [kill for kill in report["kills"] if kill["victim"]["pid"] == victim.pid]
    named = bool(kills) and any(entry["pid"] == ancestor.pid for entry in kills[0]["ancestry"])
    cpu = [sample[1] for sample in samples[1:]] or [0.0]
    user, system = last[2] - first[2], last[3] - first[3]
    load_s = sum(s[0] for s in samples)
    mean = 100.0 * (user + system) / TICK / load_s
    per_fork_us = (user + system) / TICK / max(spawned, 1) * 1e6
    at_rate = per_fork_us * args.rate / 1e4  # % of one core at --rate, at the cost per fork+exec measured
    print("rate %d/s for %d s: %d fork+exec (%.0f/s)" % (args.rate, args.seconds, spawned, spawned / args.seconds))
    print("drain CPU %% of one core: median %.1f, max %.1f (1 s samples), mean %.2f over the load; RSS MB: first "
          "%.1f, last %.1f, max %.1f"
          % (statistics.median(cpu), max(cpu), mean,
             samples[0][2] / 1024, samples[-1][2] / 1024, max(s[2] for s in samples) / 1024))
    print("drain CPU per fork+exec made: %.1f us; at %d/s that is %.2f %% of one core (samples over %.1f s)"
          % (per_fork_us, args.rate, at_rate, load_s))
    print("CPU time stolen by the hypervisor during the load: %.1f %% of the host's" % stolen)
    print("drain CPU split over the load: user %.0f %%, system %.0f %%"
          % (100.0 * user / max(user + system, 1), 100.0 * system / max(user + system, 1)))
    print("RSS over time (MB, every 10 s): %s" % " ".join("%.1f" % (s[2] / 1024) for s in samples[::10]))
    print("drain reader: %s%s" % (watch.get("reader"), " (%s)" % watch["reader_fallback"]
                                   if watch.get("reader_fallback") else ""))
    print("events consumed %d, lost %d, overrun %d, argv caught %d / missed %d"
          % (watch["events_consumed"], watch["lost_events"], watch["overrun"], watch["argv_caught"],
             watch["argv_missed"]))
    print("kill staged at the end names the ancestor forked at the start: %s" % ("yes" if named else "NO"))
    return spawned / args.seconds, mean, per_fork_us, at_rate, stolen, watch["lost_events"]


# ---------------------------------------------------------------- the two readers, paired

def drain_run(config, mode, rate, seconds):
    """One drain of the given reader ("raw" or "text") on the armed instance, under the load: (cpu %, us per
    event, events, fork+exec made). The drain is the product's (sigsleuth_watch_control.start), started here."""
    from ansible.module_utils import sigsleuth_watch_control as control
    state_dir = config["sigsleuth_state_dir"]
    sections = state(config)
    original = control.open_raw_reader
    if mode == "text":
        control.open_raw_reader = lambda ftrace, stats, status: status.update(reader="trace_pipe") and None
    try:
        section = control.start(state_dir, sections, 0, 2.0)
    finally:
        control.open_raw_reader = original
    try:
        time.sleep(1.0)
        before, stolen = proc_sample(section["pid"]), steal_ticks()
        made = run_load(rate, seconds)
        time.sleep(2 * 0.02 + 0.1)  # the last batch
        after, stolen = proc_sample(section["pid"]), steal_percent(stolen, steal_ticks())
    finally:
        control.stop_drain(section)
    status = control.read_json(control.WatchFiles(state_dir).status) or {}
    control.remove_files(state_dir)
    assert status.get("reader") == ("trace_pipe_raw" if mode == "raw" else "trace_pipe"), status
    cpu_s = (after[0] - before[0]) / TICK
    events = status.get("events", 0)
    return 100.0 * cpu_s / seconds, 1e6 * cpu_s / max(events, 1), events, made, stolen


def bench_readers(args):
    config = setup("readers", False)
    playbook("arm.yml", config)
    rows = []
    try:
        for _ in range(args.pairs):
            pair = {}
            for mode in ("text", "raw"):
                pair[mode] = drain_run(config, mode, args.rate, args.seconds)
            rows.append(pair)
    finally:
        playbook("disarm.yml", config)
    print("| pair | text CPU % | raw CPU % | raw/text | text us/event | raw us/event | raw/text per event |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for number, pair in enumerate(rows, 1):
        text, binary = pair["text"], pair["raw"]
        print("| %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f |" % (
            number, text[0], binary[0], binary[0] / max(text[0], 1e-9), text[1], binary[1],
            binary[1] / max(text[1], 1e-9)))
    median = statistics.median
    print("| median | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f |" % (
        median(p["text"][0] for p in rows), median(p["raw"][0] for p in rows),
        median(p["raw"][0] / max(p["text"][0], 1e-9) for p in rows), median(p["text"][1] for p in rows),
        median(p["raw"][1] for p in rows), median(p["raw"][1] / max(p["text"][1], 1e-9) for p in rows)))
    print("fork+exec per run: %s (rate asked %d/s for %d s)" % (
        ", ".join("%d/%d" % (p["text"][3], p["raw"][3]) for p in rows), args.rate, args.seconds))


# ---------------------------------------------------------------- two versions of the drain, paired

_DRAIN_ONCE = """
import json, sys
config, rate, seconds = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.argv = ["bench_watch"]
sys.path.insert(0, "bench")
import bench_watch
print(json.dumps(bench_watch.drain_run(config, "raw", rate, seconds)))
"""


def drain_of(checkout, config, rate, seconds):
    """drain_run() of another checkout (its own modules, in a process of its own) on the armed instance."""
    env = dict(os.environ)
    if DRAIN_PYTHON:  # ansible (module_utils' package) from the .venv, the rest from that interpreter
        env["PYTHONPATH"] = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c",
                                            "import site; print(site.getsitepackages()[0])"],
                                           capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.run([DRAIN_PYTHON or os.path.join(ROOT, ".venv", "bin", "python"), "-c", _DRAIN_ONCE,
                           json.dumps(config), str(rate), str(seconds)], cwd=checkout, capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        sys.exit("the drain of %s failed:\n%s" % (checkout, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])[:4]


def drain_of_measured(checkout, config, rate, seconds):
    """drain_of(), and the share of the host's CPU time stolen by the hypervisor meanwhile."""
    before = steal_ticks()
    run = drain_of(checkout, config, rate, seconds)
    return run + [steal_percent(before, steal_ticks())]


def bench_versions(args):
    """This checkout's binary drain against --baseline's (another checkout, e.g. a git worktree of an older
    commit), alternately under the same load on one armed instance: CPU %, us per event, new/old."""
    if not args.baseline or not os.path.isfile(os.path.join(args.baseline, "bench", "bench_watch.py")):
        sys.exit("versions needs --baseline DIR: a checkout with bench/bench_watch.py (git worktree add DIR REV)")
    config = setup("versions", False)
    playbook("arm.yml", config)
    rows = []
    try:
        for number in range(args.pairs):
            order = (("new", ROOT), ("old", args.baseline)) if number % 2 == 0 else \
                (("old", args.baseline), ("new", ROOT))
            rows.append({name: drain_of_measured(checkout, config, args.rate, args.seconds)
                         for name, checkout in order})
    finally:
        playbook("disarm.yml", config)
    print("| pair | old CPU % | new CPU % | new/old | old us/event | new us/event | new/old per event "
          "| fork+exec old/new | CPU stolen % old/new |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for number, pair in enumerate(rows, 1):
        old, new = pair["old"], pair["new"]
        print("| %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %d/%d | %.0f/%.0f |" % (
            number, old[0], new[0], new[0] / max(old[0], 1e-9), old[1], new[1], new[1] / max(old[1], 1e-9),
            old[3], new[3], old[4], new[4]))
    median = statistics.median
    print("| median | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | | |" % (
        median(p["old"][0] for p in rows), median(p["new"][0] for p in rows),
        median(p["new"][0] / max(p["old"][0], 1e-9) for p in rows), median(p["old"][1] for p in rows),
        median(p["new"][1] for p in rows), median(p["new"][1] / max(p["old"][1], 1e-9) for p in rows)))
    print("rate asked %d/s for %d s; baseline %s" % (args.rate, args.seconds, args.baseline))


# ---------------------------------------------------------------- collect time

def timed_collect(state_dir):
    start = time.perf_counter()
    report = collect(state_dir)
    return time.perf_counter() - start, report


def bench_collect(args):
    watched, plain = setup("cw", True), setup("cp", False)
    playbook("arm.yml", watched)
    try:
        playbook("arm.yml", plain)
        try:
            spawned = run_load(args.rate, args.seconds)
            times = {"watch": [], "plain": []}
            for _ in range(args.pairs):
                for name, config in (("watch", watched), ("plain", plain)):
                    spent, report = timed_collect(config["sigsleuth_state_dir"])
                    times[name].append(spent)
            events = report["sources"]["ftrace"].get("events_read")
        finally:
            playbook("disarm.yml", plain)
    finally:
        playbook("disarm.yml", watched)
    print("load: %d fork+exec in %d s (%.0f/s); plain collect read %s events" % (
        spawned, args.seconds, spawned / args.seconds, events))
    print("| collect | median s | min s | max s |")
    print("| --- | --- | --- | --- |")
    for name in ("plain", "watch"):
        print("| %s | %.3f | %.3f | %.3f |" % (name, statistics.median(times[name]), min(times[name]),
                                             max(times[name])))


# ---------------------------------------------------------------- argv of short-lived shells

def bench_argv(args):
    """Each shell SIGKILLs a child of its own just before it exits, so its kill record shows whether the drain
    kept its argv (the record's sender is the shell, with argv_from proc_after_exec)."""
    config = setup("argv", True)
    playbook("arm.yml", config)
    load = start_load(args.load, 3600) if args.load else []
    try:
        shells = {}
        for life in (0.05, 0.5):
            shells[life] = []
            for batch in range(0, args.runs, 10):
                procs = [subprocess.Popen(["sh", "-c", "sleep 1000 & sleep %s; kill -9 $!; : %d" % (life, number)])
                         for number in range(batch, min(batch + 10, args.runs))]
                for proc in procs:
                    proc.wait()
                shells[life].extend(proc.pid for proc in procs)
        time.sleep(1.0)
        for proc in load:
            proc.terminate()
        finish_load(load)
        report = collect(config["sigsleuth_state_dir"])
    finally:
        for proc in load:
            proc.kill()
        playbook("disarm.yml", config)
    if args.load:
        print("under a load of %d fork+exec/s" % args.load)
    senders = {kill["sender"]["pid"]: kill["sender"] for kill in report["kills"] if kill.get("sender")}
    print("| shell lives | shells | argv caught (proc_after_exec) | rate |")
    print("| --- | --- | --- | --- |")
    for life, pids in shells.items():
        caught = sum(1 for pid in pids if (senders.get(pid) or {}).get("argv_from") == "proc_after_exec")
        print("| %d ms | %d | %d | %.1f %% |" % (life * 1000, len(pids), caught, 100.0 * caught / len(pids)))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_spawner":
        spawner(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["sources", "load", "collect", "argv", "readers", "versions", "ceiling"])
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--runs", type=int, help="argv: shells per length (default 200); load: loads (default "
                                                  "1); ceiling: loads (default 5)")
    parser.add_argument("--load", type=int, default=0, help="argv: fork+exec/s of load meanwhile (default none)")
    parser.add_argument("--baseline", help="versions: the other checkout whose drain is paired with this one")
    parser.add_argument("--exec", dest="program", default="/bin/true",
                        help="what the load execs: a path (default /bin/true) or 'tiny', a 129-byte static "
                             "exit(0) (x86-64) that lets this VM reach rates /bin/true cannot")
    parser.add_argument("--python", help="the interpreter the drain runs under (a target's "
                                         "ansible_python_interpreter; default this checkout's .venv one)")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = {"argv": 200, "load": 1, "ceiling": 5}.get(args.mode, 1)
    global DRAIN_PYTHON, LOAD_PROGRAM
    DRAIN_PYTHON = args.python
    LOAD_PROGRAM = load_program(args.program)
    print("the load execs %s" % ("a 129-byte static exit(0)" if args.program == "tiny" else LOAD_PROGRAM))
    if os.geteuid() != 0:
        sys.exit("bench_watch arms this machine: run it as root")
    with armed_lock():
        {"sources": bench_sources, "load": bench_load, "collect": bench_collect, "argv": bench_argv,
         "readers": bench_readers, "versions": bench_versions,
         "ceiling": bench_ceiling}[args.mode](args)


if __name__ == "__main__":
    main()
