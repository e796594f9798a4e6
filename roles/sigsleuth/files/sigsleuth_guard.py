# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: the interrupt guard of playbooks/investigate.yml. Runs on the control node; standard library only.
"""Disarm the hosts of an investigate run that ended before it disarmed them (Ctrl-C, SIGTERM, SIGKILL).

An ``always`` section does not run when ansible-playbook is interrupted, so investigate starts this guard
first: a process of its own session (a terminal's Ctrl-C does not reach it) that watches the ansible-playbook
process by its identity (pid and start time). When that process ends before the playbook marked the run
``done``, the guard waits for the run's own processes to end, then runs the same command again (same
executable, arguments, working directory and environment, so the same inventory, limit, connection options
and variables) with ``__sigsleuth_investigate_cleanup`` set: that run only collects (unless the interrupted
run had collected already) and disarms. Its output goes to the interrupted run's stderr and to the guard's
log. The guard is started just before arming: from then on, any early end is cleaned up after.

    python sigsleuth_guard.py start --dir DIR --worker PID   # PID: the ansible worker running this task
    python sigsleuth_guard.py mark --dir DIR collected|done
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

TICK_S = 0.25
READY_TIMEOUT_S = 20.0
# How long the run's own processes (workers, modules, ssh) may take to end before the cleanup starts anyway.
DRAIN_TIMEOUT_S = 120.0
DONE_TIMEOUT_S = 10.0
MARKS = ("collected", "done")
CLEANUP_VAR = "__sigsleuth_investigate_cleanup"
# Options that would make the cleanup run stop and ask, or skip what it must do.
DROPPED_OPTIONS = ("--step",)


class GuardError(Exception):
    pass


# ---------------------------------------------------------------- processes

def read_stat(pid):
    """(state, ppid, start ticks) from /proc/PID/stat, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rpartition(b")")[2].split()
    except (OSError, ValueError):
        return None
    return fields[0].decode(), int(fields[1]), int(fields[19])


def is_alive(pid, start_ticks):
    stat = read_stat(pid)
    return stat is not None and stat[2] == start_ticks and stat[0] not in ("Z", "X")


def children(pid):
    found = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as handle:
                found += [int(word) for word in handle.read().split()]
    except (OSError, ValueError):
        pass
    return found


def descendants(pid):
    """{pid: start ticks} of every process below pid (ansible's workers, their modules and ssh)."""
    found, todo = {}, children(pid)
    while todo:
        child = todo.pop()
        stat = read_stat(child)
        if stat is not None and child not in found:
            found[child] = stat[2]
            todo += children(child)
    return found


def read_proc(pid, name):
    with open("/proc/%d/%s" % (pid, name), "rb") as handle:
        return handle.read()


def playbook_process(worker):
    """The ansible-playbook process: the worker's parent, which forked it (same executable, same argv)."""
    worker_stat = read_stat(worker)
    if worker_stat is None:
        raise GuardError("no process %d (the ansible worker)" % worker)
    main = worker_stat[1]
    main_stat = read_stat(main)
    try:
        same = (main_stat is not None and os.readlink("/proc/%d/exe" % main) == os.readlink("/proc/%d/exe" % worker)
                and read_proc(main, "cmdline") == read_proc(worker, "cmdline"))
    except OSError:
        same = False
    if not same:
        raise GuardError("the parent (%d) of the ansible worker %d is not the ansible-playbook process it was "
                         "forked from" % (main, worker))
    argv = [arg.decode("utf-8", "surrogateescape") for arg in read_proc(main, "cmdline").split(b"\0")[:-1]]
    environ = dict(item.decode("utf-8", "surrogateescape").partition("=")[::2]
                   for item in read_proc(main, "environ").split(b"\0") if b"=" in item)
    return {"pid": main, "start_ticks": main_stat[2], "argv": argv, "cwd": os.readlink("/proc/%d/cwd" % main),
            "environ": environ}


# ---------------------------------------------------------------- the guard

class Guard:
    def __init__(self, directory, main, notify_fd):
        self.dir = directory
        self.main = main
        self.notify_fd = notify_fd
        self.log_path = os.path.join(directory, "guard.log")

    def marked(self, mark):
        return os.path.exists(os.path.join(self.dir, mark))

    def say(self, text):
        line = ("sigsleuth investigate guard: %s\n" % text).encode("utf-8", "replace")
        self.write(line)

    def write(self, data):
        with open(self.log_path, "ab") as log:
            log.write(data)
        if self.notify_fd is not None:
            try:
                os.write(self.notify_fd, data)
            except OSError:
                self.notify_fd = None

    def watch(self):
        """Until the run is done (exit quietly) or its ansible-playbook ends first (clean up after it)."""
        seen = {}
        while not self.marked("done"):
            if not is_alive(self.main["pid"], self.main["start_ticks"]):
                if self.marked("done"):
                    break
                self.clean_up(seen)
                return
            seen = descendants(self.main["pid"])
            time.sleep(TICK_S)
        shutil.rmtree(self.dir, ignore_errors=True)

    def clean_up(self, seen):
        phase = "disarm" if self.marked("collected") else "collect"
        self.say("ansible-playbook (pid %d) ended before disarming; %s the same hosts now (log: %s)"
                 % (self.main["pid"], "disarming" if phase == "disarm" else "collecting and disarming",
                    self.log_path))
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while any(is_alive(pid, start) for pid, start in seen.items()) and time.monotonic() < deadline:
            time.sleep(TICK_S)
        argv = [arg for arg in self.main["argv"] if arg not in DROPPED_OPTIONS]
        argv += ["-e", json.dumps({CLEANUP_VAR: phase})]
        env = dict(self.main["environ"], ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        try:
            proc = subprocess.Popen(argv, cwd=self.main["cwd"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as exc:
            self.say("could not run %s: %s; disarm the hosts with playbooks/disarm.yml" % (argv[0], exc))
            return
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            self.write(chunk)
        rc = proc.wait()
        if rc == 0:
            self.say("the cleanup run finished (rc 0): the hosts are disarmed")
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            self.say("the cleanup run failed (rc %d): see %s; disarm what is left with playbooks/disarm.yml"
                     % (rc, self.log_path))


def daemonize(directory, main):
    """Fork the guard into its own session; return once it runs (its pid) or say why it could not start."""
    try:
        notify_fd = os.open("/proc/%d/fd/2" % main["pid"], os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
    except OSError:
        notify_fd = None
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(read_fd)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _run_guard(directory, main, notify_fd, write_fd)
    os.close(write_fd)
    os.waitpid(first, 0)
    if notify_fd is not None:
        os.close(notify_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read().decode("utf-8", "replace")
    if not answer.startswith("ready "):
        raise GuardError("the guard did not start: %s" % (answer or "no answer"))
    return int(answer.split()[1])


def _run_guard(directory, main, notify_fd, write_fd):
    status = 0
    try:
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = {fd for fd in (notify_fd, write_fd) if fd is not None}
        for fd in range(3, 1024):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        stat = read_stat(os.getpid())
        record = {"pid": os.getpid(), "start_ticks": stat[2], "watches": {"pid": main["pid"],
                                                                          "start_ticks": main["start_ticks"]}}
        path = os.path.join(directory, "guard.json")
        with open(path + ".tmp", "w") as handle:
            json.dump(record, handle)
        os.rename(path + ".tmp", path)  # whole, for whoever reads it
        os.write(write_fd, b"ready %d" % os.getpid())
        os.close(write_fd)
        Guard(directory, main, notify_fd).watch()
    except Exception as exc:  # the starter is told why; the guard process must end either way
        try:
            os.write(write_fd, ("error: %s" % exc).encode("utf-8", "replace"))
        except OSError:
            pass
        status = 1
    os._exit(status)


# ---------------------------------------------------------------- commands

def start(args):
    if not os.path.isdir(args.dir):
        raise GuardError("%s is not a directory" % args.dir)
    main = playbook_process(args.worker)
    pid = daemonize(args.dir, main)
    return {"changed": True, "pid": pid, "watches": main["pid"], "dir": args.dir}


def mark(args):
    """Record how far the run got; ``done`` also waits until the guard has gone."""
    if not os.path.isdir(args.dir):
        return {"changed": False, "msg": "no guard directory %s" % args.dir}
    with open(os.path.join(args.dir, args.mark), "w"):
        pass
    if args.mark == "done":
        try:
            with open(os.path.join(args.dir, "guard.json")) as handle:
                guard = json.load(handle)
        except (OSError, ValueError):
            guard = None
        deadline = time.monotonic() + DONE_TIMEOUT_S
        while guard and is_alive(guard["pid"], guard["start_ticks"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(args.dir, ignore_errors=True)
    return {"changed": True, "mark": args.mark}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start_parser = sub.add_parser("start")
    start_parser.add_argument("--dir", required=True)
    start_parser.add_argument("--worker", type=int, required=True)
    mark_parser = sub.add_parser("mark")
    mark_parser.add_argument("--dir", required=True)
    mark_parser.add_argument("mark", choices=MARKS)
    args = parser.parse_args(argv)
    try:
        result = start(args) if args.command == "start" else mark(args)
    except GuardError as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
