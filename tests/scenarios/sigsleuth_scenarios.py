#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Stage real kill scenarios on this machine and record their ground truth.

Used by playbooks/demo.yml and tests/integration. Standard library only, Python 3.9+, Linux, root.

A scenario runs in stages that span separate commands, so that tracing can be armed in between:

    sigsleuth_scenarios.py start SCENARIO --state FILE [--reap now|late] [--storm N] [--foreground]
        daemonises a supervisor that starts the scenario's long-lived processes (the ones that must
        predate arming) and writes FILE (JSON) once they are ready; prints FILE. With --foreground this
        process becomes the supervisor (same pid): the caller stays its real parent, polls FILE for
        "status": "ready", and reaps it after stop.
    sigsleuth_scenarios.py trigger --state FILE     # the supervisor's processes start the kill
    sigsleuth_scenarios.py wait --state FILE        # until the kill happened and FILE holds the final truth
    sigsleuth_scenarios.py stop --state FILE        # kill and reap everything, remove FILE and the workdir
    sigsleuth_scenarios.py run SCENARIO             # all four in one (no arming in between): a quick look
    sigsleuth_scenarios.py reaper -- CMD [ARG...]   # run CMD as a child subreaper and reap what it orphans
    sigsleuth_scenarios.py list

The supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER), so processes orphaned inside a scenario are
adopted by it rather than by pid 1. `--reap now` reaps them at once, like a real init; `--reap late` keeps
them as zombies until stop, like a pid 1 that does not reap (this project's VMs). Its own children (the
victims and daemons it started) it always reaps at once, like any parent.

A supervisor that outlives `start` is adopted by the nearest subreaper above it, or pid 1. Where pid 1 does
not reap, run the caller under `reaper` (or make the caller a subreaper) so nothing stays a zombie.

Ground truth (FILE, "status": "done") lists each expected kill with its victim, its sender and the sender's
real fork ancestry up to the supervisor (and a readable "story" of it), plus signals that were sent but must
not be reported (e.g. a SIGINT when only KILL and TERM are armed). Scenarios: seed (a), bash-builtin (b),
pgroup (c), reaped-chain (d), term-int (e), storm (f); `list` describes them. Every staged
process carries SIGSLEUTH_SCENARIO=<token> in its environment, so stop can find strays.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

FORMAT = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
SUPERVISOR_COMM = b"sigsleuth-scen"
TOKEN_VAR = "SIGSLEUTH_SCENARIO"
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.01
STARTUP_TIMEOUT = 60.0
TEARDOWN_TIMEOUT = 30.0
# Signals a staged process must start with at their default action, whatever the caller ignored.
DEFAULT_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGPIPE,
                   signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD)

KILL_BIN = "/usr/bin/kill"
SH_BIN = "/bin/sh"
BASH_BIN = "/usr/bin/bash"
SLEEP_BIN = "/usr/bin/sleep"

# The stand-in for a long-lived daemon (cron-like). Written into the workdir under the daemon's name,
# so the kernel names the process after it (comm) while its exe is the Python interpreter.
DAEMON_SOURCE = r'''#!%(python)s -I
# A long-lived daemon in a sigsleuth scenario; written and driven by sigsleuth_scenarios.py.
import json, os, sys, time

DEFAULT_SIGNALS = %(signals)r


def spawn(argv):
    return os.posix_spawn(argv[0], argv, dict(os.environ), setsigdef=DEFAULT_SIGNALS)


def write(path, data):
    with open(path + ".tmp", "w") as handle:
        json.dump(data, handle)
    os.rename(path + ".tmp", path)


def wait_for_file(path, parent):
    while not os.path.exists(path):
        if os.getppid() != parent:
            sys.exit(3)  # the supervisor is gone: do nothing more
        time.sleep(0.01)


def main():
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    parent = os.getppid()
    children = {}
    for child in spec.get("children", []):
        children[child["role"]] = spawn(child["argv"])
        wait_for_file(child["ready"], parent)
    write(spec["ready"], {"pid": os.getpid(), "children": children})
    if spec["wait_for"] == "orphaned":
        # Act once the trigger came and the fork parent exited (this process was adopted).
        while not (os.path.exists(spec["trigger"]) and os.getppid() != parent):
            time.sleep(0.005)
    else:
        wait_for_file(spec["trigger"], parent)
    jobs = []
    for argv in spec.get("jobs", []):
        pid = spawn(argv)
        _, status = os.waitpid(pid, 0)  # reaped at once, like cron reaps its job shells
        jobs.append({"pid": pid, "status": status})
    write(spec["result"], {"jobs": jobs})
    if spec.get("then") == "exit":
        return 0
    adopter = os.getppid()
    while os.getppid() == adopter:
        time.sleep(0.2)
    return 0


sys.exit(main())
'''


# ---------------------------------------------------------------- small helpers

def libc_prctl(option, arg):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if isinstance(arg, bytes):
        buf = ctypes.create_string_buffer(arg)
        arg = ctypes.cast(buf, ctypes.c_void_p).value
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(%d): %s" % (option, os.strerror(err)))


def clock_offset_ns():
    """CLOCK_REALTIME - CLOCK_BOOTTIME in ns (what /proc start times and trace timestamps count on)."""
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    real = time.time_ns()
    after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return real - (before + after) // 2


def iso_utc(realtime_ns):
    """The report's time format, from the harness's own clock readings (ground truth: not the engine's code)."""
    if realtime_ns is None:
        return None
    seconds, nanos = divmod(int(realtime_ns), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%06dZ" % (nanos // 1000)


def read_stat(pid):
    """dict(comm, state, ppid, pgid, sid, start_ticks) for pid, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    try:
        return {
            "comm": head.partition(b"(")[2].decode("utf-8", "backslashreplace"),
            "state": fields[0].decode(),
            "ppid": int(fields[1]),
            "pgid": int(fields[2]),
            "sid": int(fields[3]),
            "start_ticks": int(fields[19]),
        }
    except (IndexError, ValueError):
        return None


def read_exe(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def read_environ(pid):
    try:
        with open("/proc/%d/environ" % pid, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def all_pids():
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def is_same(pid, start_ticks):
    """True when pid is still the process that started at start_ticks (alive or a zombie)."""
    stat = read_stat(pid)
    return stat is not None and stat["start_ticks"] == start_ticks


def gone_or_zombie(pid, start_ticks):
    stat = read_stat(pid)
    return stat is None or stat["start_ticks"] != start_ticks or stat["state"] in ("Z", "X")


def comm_of_path(path):
    """The comm the kernel gives a process that execs `path`: its base name, cut to 15 bytes."""
    return os.fsencode(os.path.basename(path))[:15].decode("utf-8", "backslashreplace")


def write_json(path, data):
    """Atomic JSON write: readers see the old file or the new one, never a part (a per-process temp name and
    os.replace; a writer that dies leaves at most its temp file, which stop removes with the workdir)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def describe_exit(status):
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        return "killed by " + signal.Signals(os.WTERMSIG(status)).name
    if os.WIFEXITED(status):
        return "exit %d" % os.WEXITSTATUS(status)
    return "status %d" % status


class ScenarioError(Exception):
    pass


# ---------------------------------------------------------------- the supervisor

class Supervisor:
    """Owns one scenario: its processes, their reaping, and the ground-truth file."""

    def __init__(self, args):
        self.state_path = os.path.abspath(args.state)
        self.workdir = args.workdir
        self.reap_mode = args.reap
        self.storm = args.storm
        self.lifetime = args.lifetime
        self.token = os.environ[TOKEN_VAR]
        self.pid = os.getpid()
        self.python = os.path.realpath(sys.executable)
        self.trigger_path = os.path.join(self.workdir, "trigger")
        self.stop_requested = False
        self.own_children = set()     # pids this supervisor spawned: always reaped at once
        self.statuses = {}            # pid -> wait status, for everything this supervisor reaped
        self.reaped_orphans = []      # adopted pids reaped (reap now, or at teardown)
        self.processes = {}           # role -> process record (the ground truth's cast)
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", TOKEN_VAR: self.token}
        self.state = {
            "format": FORMAT,
            "scenario": args.scenario,
            "reap": self.reap_mode,
            "status": "starting",
            "error": None,
            "token": self.token,
            "workdir": self.workdir,
            "state_file": self.state_path,
            "trigger_file": self.trigger_path,
            "log": os.path.join(self.workdir, "supervisor.log"),
        }
        self.scenario = SCENARIOS[args.scenario](self)

    # -------------------------------------------------- bookkeeping

    def save(self, **changes):
        self.state.update(changes)
        self.state["processes"] = self.processes
        write_json(self.state_path, self.state)

    def record(self, role, pid, **extra):
        """Record a live process as the kernel sees it now."""
        stat = read_stat(pid)
        if stat is None:
            raise ScenarioError("%s (pid %d) vanished while starting" % (role, pid))
        entry = {
            "role": role,
            "pid": pid,
            "tid": pid,
            "ppid": stat["ppid"],
            "pgid": stat["pgid"],
            "comm": stat["comm"],
            "exe": read_exe(pid),
            "start_ticks": stat["start_ticks"],
            "started": iso_utc(stat["start_ticks"] * (1_000_000_000 // CLK_TCK) + clock_offset_ns()),
            "before_trigger": True,
            "exited": False,
            "reaped": False,
            "exit": None,
        }
        entry.update(extra)
        self.processes[role] = entry
        return entry

    def record_later(self, role, pid, path, parent_role, **extra):
        """Record a process born after the trigger, from what the scenario made it exec."""
        entry = {
            "role": role,
            "pid": pid,
            "tid": pid,
            "parent_role": parent_role,
            "comm": comm_of_path(path),
            "exe": os.path.realpath(path),
            "before_trigger": False,
            "exited": None,
            "reaped": None,
            "exit": None,
        }
        entry.update(extra)
        self.processes[role] = entry
        return entry

    # -------------------------------------------------- processes

    def spawn(self, argv, setpgroup=None):
        kwargs = {"setsigdef": DEFAULT_SIGNALS}
        if setpgroup is not None:
            kwargs["setpgroup"] = setpgroup
        pid = os.posix_spawn(argv[0], argv, self.env, **kwargs)
        self.own_children.add(pid)
        return pid

    def victim(self, role, name, setpgroup=None):
        """A long-lived victim: sleep exec'd through a link named `name`, so its comm is `name`."""
        link = os.path.join(self.workdir, name)
        os.symlink(os.path.realpath(SLEEP_BIN), link)
        pid = self.spawn([link, "infinity"], setpgroup=setpgroup)
        self.wait_until(lambda: (read_stat(pid) or {}).get("comm") == comm_of_path(link),
                        "%s to exec" % role)
        return self.record(role, pid)

    def daemon_spec(self, name, jobs=(), wait_for="trigger", then="stay", children=()):
        """Write a daemon program named `name` and its spec; returns (argv, ready_path, result_path)."""
        program = os.path.join(self.workdir, name)
        with open(program, "w") as handle:
            handle.write(DAEMON_SOURCE % {"python": self.python, "signals": tuple(int(s) for s in DEFAULT_SIGNALS)})
        os.chmod(program, 0o755)
        ready = os.path.join(self.workdir, name + ".ready")
        result = os.path.join(self.workdir, name + ".result")
        spec = {
            "trigger": self.trigger_path,
            "wait_for": wait_for,
            "jobs": [list(job) for job in jobs],
            "then": then,
            "ready": ready,
            "result": result,
            "children": list(children),
        }
        spec_path = os.path.join(self.workdir, name + ".json")
        write_json(spec_path, spec)
        return [program, spec_path], ready, result

    def daemon(self, role, name, jobs=(), then="stay"):
        argv, ready, result = self.daemon_spec(name, jobs=jobs, then=then)
        pid = self.spawn(argv)
        self.wait_until(lambda: os.path.exists(ready), "%s to be ready" % role)
        entry = self.record(role, pid)
        entry["result_file"] = result
        return entry

    def wait_until(self, predicate, what, timeout=STARTUP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate():
            self.reap()
            if time.monotonic() > deadline:
                raise ScenarioError("timed out waiting for " + what)
            time.sleep(POLL)

    def reap(self):
        """Reap own children always; adopted orphans only in reap-now mode."""
        for pid in sorted(self.own_children):
            if pid in self.statuses:
                continue
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                self.statuses[pid] = status
        if self.reap_mode == "now":
            self.reap_all()

    def reap_all(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            self.statuses[pid] = status
            if pid not in self.own_children:
                self.reaped_orphans.append(pid)

    def exited(self, pid):
        """Has pid exited? (reaped by us, or a zombie waiting for us)."""
        if pid in self.statuses:
            return True
        stat = read_stat(pid)
        return stat is None or stat["state"] in ("Z", "X")

    def victim_status(self, role, expected_signal):
        """None while the victim lives; raises when it died of anything but expected_signal."""
        entry = self.processes[role]
        status = self.statuses.get(entry["pid"])
        if status is None:
            return None
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == expected_signal):
            raise ScenarioError("%s (pid %d) ended with %s, expected death by %s"
                                % (role, entry["pid"], describe_exit(status),
                                   signal.Signals(expected_signal).name))
        return status

    def result(self, role):
        return read_json(self.processes[role]["result_file"])

    # -------------------------------------------------- the run

    def finalize_processes(self):
        """Fill in exited/reaped/exit for every recorded process, as things stand now."""
        for entry in self.processes.values():
            pid = entry["pid"]
            if pid == self.pid:
                continue
            stat = read_stat(pid)
            if pid in self.statuses:
                entry.update(exited=True, reaped=True, exit=describe_exit(self.statuses[pid]))
            elif stat is not None and stat["state"] in ("Z", "X") and (
                    entry.get("start_ticks") in (None, stat["start_ticks"])):
                entry.update(exited=True, reaped=False, zombie_parent=stat["ppid"])
            elif stat is not None and entry.get("start_ticks") in (None, stat["start_ticks"]) \
                    and entry.get("before_trigger"):
                entry.update(exited=False, reaped=False)
            else:
                entry.update(exited=True, reaped=True)  # reaped by its own parent

    def chain(self, *roles):
        """Ancestry entries (parent first) for the given roles, from the recorded processes."""
        entries = []
        for role in roles:
            entry = self.processes[role]
            entries.append({key: entry.get(key) for key in (
                "role", "pid", "comm", "exe", "exited", "reaped", "before_trigger", "started")})
        return entries

    def run(self):
        libc_prctl(PR_SET_CHILD_SUBREAPER, 1)
        libc_prctl(PR_SET_NAME, SUPERVISOR_COMM)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._request_stop)
        self.record("supervisor", self.pid)
        self.state["supervisor"] = {"pid": self.pid, "start_ticks": self.processes["supervisor"]["start_ticks"],
                                    "sid": os.getsid(0)}
        born = time.monotonic()
        try:
            self.save()
            self.scenario.stage()
            self.save(status="ready", ready_at=iso_utc(time.time_ns()))
            triggered_at = None
            while not self.stop_requested:
                self.reap()
                if self.state["status"] == "ready" and os.path.exists(self.trigger_path):
                    trigger = read_json(self.trigger_path) or {}
                    triggered_at = time.monotonic()
                    self.save(status="triggered",
                              triggered_at=iso_utc(trigger.get("time_ns", time.time_ns())))
                elif self.state["status"] == "triggered":
                    if self.scenario.done():
                        self.finalize_processes()
                        truth = self.scenario.truth()
                        self.save(status="done", done_at=iso_utc(time.time_ns()),
                                  kills=truth["kills"], unreported=truth.get("unreported", []),
                                  notes=truth.get("notes", []),
                                  reaped_orphans=list(self.reaped_orphans))
                    elif time.monotonic() - triggered_at > self.lifetime:
                        raise ScenarioError("the kill did not happen within %ss of the trigger" % self.lifetime)
                if time.monotonic() - born > self.lifetime and self.state["status"] != "triggered":
                    self.save(notes=self.state.get("notes", []) + ["lifetime of %ss reached: stopped itself"
                                                                     % self.lifetime])
                    break
                time.sleep(POLL)
        except Exception as exc:  # recorded for the caller; the teardown below still runs
            self.save(status="error", error="%s: %s" % (type(exc).__name__, exc))
        finally:
            self.teardown()
        return 0

    def _request_stop(self, signum, frame):
        self.stop_requested = True

    def teardown(self):
        """SIGKILL every other process of this scenario and reap until none is left.

        Scenario processes carry the token; when the supervisor leads its own session (it always does
        when started by `start`), the session's members are taken too, token or not.
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sid = os.getsid(0)
        own_session = sid == self.pid
        deadline = time.monotonic() + TEARDOWN_TIMEOUT
        while True:
            targets = set(token_holders(self.token))
            if own_session:
                for pid in all_pids():
                    stat = read_stat(pid)
                    if pid != self.pid and stat is not None and stat["sid"] == sid and stat["state"] not in "ZX":
                        targets.add(pid)
            for pid in targets:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            has_children = self.reap_all()
            if not targets and not has_children:
                break
            if time.monotonic() > deadline:
                print("teardown: still present after %ss: %s" % (TEARDOWN_TIMEOUT, sorted(targets)), file=sys.stderr)
                break
            time.sleep(POLL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        try:
            state = read_json(self.state_path)
            if state is not None and state.get("token") == self.token:
                self.save(status="stopped" if self.state["status"] != "error" else "error",
                          stopped_at=iso_utc(time.time_ns()))
        except OSError:
            pass


# ---------------------------------------------------------------- scenarios

class Scenario:
    """One staged mystery: stage() runs before arming, done() says when the kill happened."""

    name = ""
    summary = ""

    def __init__(self, sup):
        self.sup = sup

    def stage(self):
        raise NotImplementedError

    def done(self):
        raise NotImplementedError

    def truth(self):
        raise NotImplementedError

    # helpers
    def proc(self, role):
        return self.sup.processes[role]

    def identity(self, role, keys=("pid", "tid", "comm", "exe")):
        entry = self.proc(role)
        return {key: entry.get(key) for key in keys}

    def kill(self, signum, victim, sender, ancestry, mechanism="kill"):
        record = {
            "signal": {"number": int(signum), "name": signal.Signals(signum).name},
            "victim": self.identity(victim),
            "sender": self.identity(sender),
            "origin": "user",
            "mechanism": mechanism,
            "ancestry": self.sup.chain(*ancestry),
        }
        record["story"] = story(record)
        return record


def story(kill):
    """The kill as lines a person reads at a glance: victim, sender, then each ancestor."""
    def fate(entry):
        if not entry["exited"]:
            return "alive"
        return "exited, reaped" if entry.get("reaped") else "exited, a zombie"

    victim, sender = kill["victim"], kill["sender"]
    lines = ["%s[%d] (%s) got %s" % (victim["comm"], victim["pid"], victim["exe"], kill["signal"]["name"]),
             "  from %s[%d] (%s)" % (sender["comm"], sender["pid"], sender["exe"])]
    lines += ["    <- %s[%d] (%s) %s" % (a["comm"], a["pid"], a["exe"], fate(a)) for a in kill["ancestry"]]
    return lines


class SeedScenario(Scenario):
    name = "seed"
    summary = ("(a) the seed's case: daemon agentd-cron, started before arming, forks a job shell that forks "
               "a killer and exits at once (reaped by the daemon); the killer sleeps, then execs "
               "/usr/bin/kill -9 on collector-agent")
    JOB = '( sleep 1; exec %s -9 "$1" ) & echo "$$ $!" > "$2"; exit 0' % KILL_BIN

    def stage(self):
        sup = self.sup
        agent = sup.victim("agent", "collector-agent")
        self.pids_file = os.path.join(sup.workdir, "job.pids")
        sup.daemon("daemon", "agentd-cron",
                   jobs=[[SH_BIN, "-c", self.JOB, "sh", str(agent["pid"]), self.pids_file]])

    def done(self):
        if self.sup.victim_status("agent", signal.SIGKILL) is None:
            return False
        result = self.sup.result("daemon")
        pids = read_json_words(self.pids_file)
        if result is None or pids is None:
            return False
        job, killer = pids
        if result["jobs"][0]["pid"] != job:
            raise ScenarioError("job shell pid %d != daemon's job pid %d" % (job, result["jobs"][0]["pid"]))
        if not self.sup.exited(killer):
            return False
        self.sup.record_later("job-shell", job, SH_BIN, "daemon")
        self.sup.record_later("killer", killer, KILL_BIN, "job-shell")
        return True

    def truth(self):
        return {"kills": [self.kill(signal.SIGKILL, "agent", "killer",
                                    ("job-shell", "daemon", "supervisor"))]}


def read_json_words(path):
    """Integers from a small text file written by a shell, or None while it is not complete."""
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    if not text.endswith("\n"):
        return None
    return [int(word) for word in text.split()]


class BashBuiltinScenario(Scenario):
    name = "bash-builtin"
    summary = "(b) bash's builtin kill: the daemon runs bash -c 'kill -9 PID'; the sender is bash itself"

    def stage(self):
        sup = self.sup
        agent = sup.victim("agent", "collector-agent")
        sup.daemon("daemon", "agentd-cron",
                   jobs=[[BASH_BIN, "-c", 'kill -9 "$1"', "bash", str(agent["pid"])]])

    def done(self):
        if self.sup.victim_status("agent", signal.SIGKILL) is None:
            return False
        result = self.sup.result("daemon")
        if result is None:
            return False
        self.sup.record_later("killer", result["jobs"][0]["pid"], BASH_BIN, "daemon")
        return True

    def truth(self):
        return {"kills": [self.kill(signal.SIGKILL, "agent", "killer", ("daemon", "supervisor"))]}


class ProcessGroupScenario(Scenario):
    name = "pgroup"
    summary = "(c) kill -9 -PGID: one kill reaches three victims in one process group"
    VICTIMS = (("agent", "collector-agent"), ("worker-1", "agent-worker-1"), ("worker-2", "agent-worker-2"))

    def stage(self):
        sup = self.sup
        leader = sup.victim(self.VICTIMS[0][0], self.VICTIMS[0][1], setpgroup=0)
        for role, name in self.VICTIMS[1:]:
            sup.victim(role, name, setpgroup=leader["pid"])
        sup.daemon("daemon", "agentd-cron", jobs=[[KILL_BIN, "-9", "--", "-%d" % leader["pid"]]])

    def done(self):
        if any(self.sup.victim_status(role, signal.SIGKILL) is None for role, _ in self.VICTIMS):
            return False
        result = self.sup.result("daemon")
        if result is None:
            return False
        self.sup.record_later("killer", result["jobs"][0]["pid"], KILL_BIN, "daemon")
        return True

    def truth(self):
        return {"kills": [self.kill(signal.SIGKILL, role, "killer", ("daemon", "supervisor"))
                          for role, _ in self.VICTIMS],
                "notes": ["all victims share process group %d" % self.proc("agent")["pid"]]}


class ReapedChainScenario(Scenario):
    name = "reaped-chain"
    summary = ("(d) agentd-top (before arming) has a child agentd-mid; on the trigger agentd-top exits and is "
               "reaped; the orphaned agentd-mid then runs /usr/bin/kill -9 and exits (an orphan: reaped now or "
               "left a zombie, per --reap)")

    def stage(self):
        sup = self.sup
        agent = sup.victim("agent", "collector-agent")
        mid_argv, mid_ready, mid_result = sup.daemon_spec(
            "agentd-mid", jobs=[[KILL_BIN, "-9", str(agent["pid"])]], wait_for="orphaned", then="exit")
        top_argv, top_ready, _ = sup.daemon_spec(
            "agentd-top", then="exit", children=[{"role": "mid", "argv": mid_argv, "ready": mid_ready}])
        top = sup.spawn(top_argv)
        sup.wait_until(lambda: os.path.exists(top_ready), "agentd-top to be ready")
        mid = read_json(top_ready)["children"]["mid"]
        sup.record("top", top)
        sup.record("mid", mid)["result_file"] = mid_result

    def done(self):
        sup = self.sup
        if sup.victim_status("agent", signal.SIGKILL) is None:
            return False
        result = sup.result("mid")
        if result is None or self.proc("top")["pid"] not in sup.statuses:
            return False
        if not sup.exited(self.proc("mid")["pid"]):
            return False
        sup.record_later("killer", result["jobs"][0]["pid"], KILL_BIN, "mid")
        return True

    def truth(self):
        return {"kills": [self.kill(signal.SIGKILL, "agent", "killer", ("mid", "top", "supervisor"))],
                "notes": ["agentd-mid was adopted by the supervisor (a subreaper) when agentd-top exited; "
                          "its fork parent stays agentd-top"]}


class TermIntScenario(Scenario):
    name = "term-int"
    summary = ("(e) for an arm with [KILL, TERM]: the daemon sends SIGTERM to collector-agent (reported) and "
               "SIGINT to agent-helper (not armed: must not be reported)")

    def stage(self):
        sup = self.sup
        term_victim = sup.victim("agent", "collector-agent")
        int_victim = sup.victim("helper", "agent-helper")
        sup.daemon("daemon", "agentd-cron", jobs=[[KILL_BIN, "-TERM", str(term_victim["pid"])],
                                                  [KILL_BIN, "-INT", str(int_victim["pid"])]])

    def done(self):
        sup = self.sup
        if sup.victim_status("agent", signal.SIGTERM) is None:
            return False
        if sup.victim_status("helper", signal.SIGINT) is None:
            return False
        result = sup.result("daemon")
        if result is None:
            return False
        sup.record_later("term-killer", result["jobs"][0]["pid"], KILL_BIN, "daemon")
        sup.record_later("int-killer", result["jobs"][1]["pid"], KILL_BIN, "daemon")
        return True

    def truth(self):
        unreported = self.kill(signal.SIGINT, "helper", "int-killer", ("daemon", "supervisor"))
        return {"kills": [self.kill(signal.SIGTERM, "agent", "term-killer", ("daemon", "supervisor"))],
                "unreported": [unreported],
                "notes": ["arm with sigsleuth_signals [KILL, TERM]: SIGINT is not armed"]}


class StormScenario(Scenario):
    name = "storm"
    summary = ("(f) the killer, born from agentd-cron, runs N fork+exec of /bin/true (--storm, default 5000) "
               "and then execs /usr/bin/kill -9")
    JOB = 'i=0; while [ "$i" -lt "$2" ]; do /bin/true; i=$((i+1)); done; exec %s -9 "$1"' % KILL_BIN

    def stage(self):
        sup = self.sup
        agent = sup.victim("agent", "collector-agent")
        sup.daemon("daemon", "agentd-cron",
                   jobs=[[SH_BIN, "-c", self.JOB, "sh", str(agent["pid"]), str(sup.storm)]])

    def done(self):
        if self.sup.victim_status("agent", signal.SIGKILL) is None:
            return False
        result = self.sup.result("daemon")
        if result is None:
            return False
        self.sup.record_later("killer", result["jobs"][0]["pid"], KILL_BIN, "daemon", storm=self.sup.storm)
        return True

    def truth(self):
        return {"kills": [self.kill(signal.SIGKILL, "agent", "killer", ("daemon", "supervisor"))],
                "notes": ["%d fork+exec of /bin/true ran between the killer's birth and its kill" % self.sup.storm]}


SCENARIOS = {cls.name: cls for cls in (SeedScenario, BashBuiltinScenario, ProcessGroupScenario,
                                        ReapedChainScenario, TermIntScenario, StormScenario)}
ALIASES = {"a": "seed", "b": "bash-builtin", "c": "pgroup", "d": "reaped-chain", "e": "term-int", "f": "storm"}


# ---------------------------------------------------------------- commands

QUIET = []  # set while `run` drives the other commands: only its final truth is printed


def emit(data):
    if QUIET:
        return
    json.dump(data, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


def supervisor_alive(state):
    sup = (state or {}).get("supervisor")
    return bool(sup) and not gone_or_zombie(sup["pid"], sup["start_ticks"])


def cmd_start(args):
    scenario = ALIASES.get(args.scenario, args.scenario)
    state_path = os.path.abspath(args.state)
    existing = read_json(state_path)
    if existing is not None:
        if supervisor_alive(existing):
            return fail("scenario %s is already running for %s: stop it first" % (existing.get("scenario"), state_path))
        return fail("%s exists from an earlier run: run `stop --state %s` first" % (state_path, state_path))
    if os.geteuid() != 0:
        return fail("run as root: the scenarios kill and reap processes and need a subreaper")
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="sigsleuth-scenario-", dir=args.workdir_base)
    token = uuid.uuid4().hex
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", TOKEN_VAR: token}
    argv = [os.path.realpath(sys.executable), os.path.realpath(__file__), "_supervise", "--state", state_path,
            "--workdir", workdir, "--scenario", scenario, "--reap", args.reap, "--storm", str(args.storm),
            "--lifetime", str(args.lifetime)]
    log_path = os.path.join(workdir, "supervisor.log")
    if args.foreground:
        # Become the supervisor in this very process (same pid), so the caller stays its parent: the caller
        # polls FILE for "ready" and reaps this process after stop.
        if os.getsid(0) != os.getpid():
            os.setsid()  # teardown may then take the whole session: it must be ours alone
        sys.stdout.flush()
        os.execve(argv[0], argv, env)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        child = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 cwd="/", start_new_session=True, close_fds=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        state = read_json(state_path)
        if state is not None and state.get("token") == token and state["status"] in ("ready", "error"):
            break
        if child.poll() is not None or time.monotonic() > deadline:
            state = state or {}
            break
        time.sleep(POLL)
    if state.get("status") == "ready":
        emit(state)
        return 0
    # Failed: take the supervisor down (it is still our child, so nothing is left a zombie).
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(TEARDOWN_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    log_text = ""
    try:
        with open(log_path) as handle:
            log_text = handle.read()[-4000:]
    except OSError:
        pass
    shutil.rmtree(workdir, ignore_errors=True)
    if os.path.exists(state_path) and (read_json(state_path) or {}).get("token") == token:
        os.unlink(state_path)
    return fail("scenario %s did not start: %s%s" % (scenario, state.get("error") or "supervisor exited",
                                                      ("\n" + log_text) if log_text else ""))


def cmd_trigger(args):
    state = read_json(os.path.abspath(args.state))
    if state is None:
        return fail("no scenario state at %s: run start first" % args.state)
    if state["status"] not in ("ready", "triggered", "done"):
        return fail("scenario is %s, cannot trigger: %s" % (state["status"], state.get("error") or ""))
    if not os.path.exists(state["trigger_file"]):
        write_json(state["trigger_file"], {"time_ns": time.time_ns()})
    emit({"triggered": True, "trigger_file": state["trigger_file"]})
    return 0


def cmd_wait(args):
    deadline = time.monotonic() + args.timeout
    while True:
        state = read_json(os.path.abspath(args.state))
        if state is None:
            return fail("no scenario state at %s" % args.state)
        if state["status"] == "done":
            emit(state)
            return 0
        if state["status"] in ("error", "stopped"):
            emit(state)
            return fail("scenario %s: %s" % (state["status"], state.get("error") or "stopped before the kill"))
        if not supervisor_alive(state):
            return fail("scenario supervisor died (status %s); see %s" % (state["status"], state.get("log")))
        if time.monotonic() > deadline:
            return fail("timed out after %ss waiting for the kill (status %s)" % (args.timeout, state["status"]))
        time.sleep(0.05)


def token_holders(token):
    """Live (non-zombie) processes carrying this scenario's token."""
    needle = ("%s=%s" % (TOKEN_VAR, token)).encode()
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        if needle in read_environ(pid).split(b"\0") and (read_stat(pid) or {}).get("state") not in ("Z", "X", None):
            found.append(pid)
    return found


def cmd_stop(args):
    state_path = os.path.abspath(args.state)
    state = read_json(state_path)
    if state is None:
        emit({"stopped": False, "reason": "no scenario state at %s" % state_path})
        return 0
    forced = []
    sup = state.get("supervisor")
    if sup and is_same(sup["pid"], sup["start_ticks"]) and not gone_or_zombie(sup["pid"], sup["start_ticks"]):
        os.kill(sup["pid"], signal.SIGTERM)
        deadline = time.monotonic() + TEARDOWN_TIMEOUT + 5
        while not gone_or_zombie(sup["pid"], sup["start_ticks"]) and time.monotonic() < deadline:
            time.sleep(POLL)
        if not gone_or_zombie(sup["pid"], sup["start_ticks"]):
            os.kill(sup["pid"], signal.SIGKILL)
            forced.append(sup["pid"])
    # Anything the supervisor could not take down (or a supervisor that died) is killed here.
    deadline = time.monotonic() + TEARDOWN_TIMEOUT
    while True:
        strays = token_holders(state["token"])
        if not strays or time.monotonic() > deadline:
            break
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if pid not in forced:
                forced.append(pid)
        time.sleep(POLL)
    shutil.rmtree(state.get("workdir") or "/nonexistent", ignore_errors=True)
    try:
        os.unlink(state_path)
    except FileNotFoundError:
        pass
    emit({"stopped": True, "scenario": state.get("scenario"), "forced": forced,
          "left": token_holders(state["token"])})
    if forced:
        print("stop: had to SIGKILL %s (the supervisor did not clean up)" % forced, file=sys.stderr)
        return 1
    return 0


def cmd_run(args):
    """start, trigger, wait, stop in one; the supervisor is our child, so it is reaped here too."""
    state_path = os.path.abspath(args.state or os.path.join(tempfile.gettempdir(),
                                                            "sigsleuth-run-%d.json" % os.getpid()))
    libc_prctl(PR_SET_CHILD_SUBREAPER, 1)  # the daemonised supervisor comes back to us to be reaped
    ns = argparse.Namespace(**vars(args))
    ns.state = state_path
    ns.foreground = False
    QUIET.append(True)
    truth = None
    try:
        rc = cmd_start(ns)
        if rc == 0:
            rc = cmd_trigger(ns) or cmd_wait(ns)
            truth = read_json(state_path)
    finally:
        rc = cmd_stop(ns) or rc
        QUIET.clear()
        reap_children(5.0)
    if rc == 0:
        emit(truth)
    return rc


def reap_children(grace):
    """Reap every child (ours or adopted) until none is left, waiting at most `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return []
        if pid:
            continue
        if time.monotonic() > deadline:
            return [p for p in all_pids() if (read_stat(p) or {}).get("ppid") == os.getpid()]
        time.sleep(POLL)


def cmd_reaper(args):
    """Run a command as a child subreaper: what it orphans comes back here and is reaped."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return fail("reaper: no command given")
    libc_prctl(PR_SET_CHILD_SUBREAPER, 1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the command gets them from the terminal; we outlive it
    try:
        child = subprocess.Popen(command, restore_signals=True,
                                 preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL)
                                                     for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)])
    except OSError as exc:
        return fail("reaper: cannot run %s: %s" % (command[0], exc))
    rc = None
    while rc is None:
        pid, status = os.waitpid(-1, 0)
        if pid == child.pid:
            rc = os.waitstatus_to_exitcode(status)
            child.returncode = rc
    left = reap_children(args.grace)
    if left:
        print("reaper: still running after %ss, left to pid 1: %s" % (args.grace, left), file=sys.stderr)
    return 128 - rc if rc < 0 else rc


def cmd_list(args):
    emit({name: cls.summary for name, cls in SCENARIOS.items()})
    return 0


def cmd_supervise(args):
    return Supervisor(args).run()


def fail(message):
    print(message, file=sys.stderr)
    return 1


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command_name", required=True)
    scenario_names = sorted(SCENARIOS) + sorted(ALIASES)

    def staging(p, state_required=True):
        p.add_argument("scenario", choices=scenario_names, metavar="SCENARIO",
                       help="one of: %s (or a-f)" % ", ".join(SCENARIOS))
        p.add_argument("--state", required=state_required, help="ground-truth JSON file to write")
        p.add_argument("--reap", choices=("now", "late"), default="now",
                       help="reap orphans at once (a real init) or keep them as zombies until stop")
        p.add_argument("--storm", type=int, default=5000, help="fork+exec count for the storm scenario")
        p.add_argument("--lifetime", type=float, default=1800.0,
                       help="seconds after which an untriggered or stuck scenario stops itself")
        p.add_argument("--workdir-base", default=None, help="where the scenario's temp dir goes")

    start = sub.add_parser("start", help="start a scenario's pre-arm processes (daemonised)")
    staging(start)
    start.add_argument("--foreground", action="store_true",
                       help="become the supervisor instead of daemonising one (the caller polls FILE for "
                            "status ready, and reaps this process after stop)")
    for name, text in (("trigger", "let the scenario kill"), ("wait", "wait for the kill; print the truth"),
                       ("stop", "kill and reap everything, remove files")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state", required=True)
        if name == "wait":
            p.add_argument("--timeout", type=float, default=300.0)
    run = sub.add_parser("run", help="start, trigger, wait and stop in one go")
    staging(run, state_required=False)
    run.add_argument("--timeout", type=float, default=300.0)
    reaper = sub.add_parser("reaper", help="run a command as a child subreaper")
    reaper.add_argument("--grace", type=float, default=10.0)
    reaper.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("list", help="list the scenarios")
    sup = sub.add_parser("_supervise")
    sup.add_argument("--state", required=True)
    sup.add_argument("--workdir", required=True)
    sup.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    sup.add_argument("--reap", choices=("now", "late"), required=True)
    sup.add_argument("--storm", type=int, required=True)
    sup.add_argument("--lifetime", type=float, required=True)
    return parser


COMMANDS = {"start": cmd_start, "trigger": cmd_trigger, "wait": cmd_wait, "stop": cmd_stop, "run": cmd_run,
            "reaper": cmd_reaper, "list": cmd_list, "_supervise": cmd_supervise}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command_name](args)


if __name__ == "__main__":
    sys.exit(main())
