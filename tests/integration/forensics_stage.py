#!/usr/bin/env python3
# -*- coding: utf-8 -*-
"""Stage issue 4's kill mechanisms for real, record their ground truth, and check a report against it.

Standard library only (the actors run under ``python -I``). Three parts:

* Actors: ``python forensics_stage.py actor SPEC_JSON`` runs one small role — a victim that idles, a sender
  that uses one particular syscall, a subreaper, a pid-namespace init, a memory hog, a CPU spinner ... Each
  writes ``<dir>/<id>.ready`` (JSON) once it is set up, waits for ``<dir>/<id>.go`` before it acts and writes
  ``<dir>/<id>.done`` afterwards. Every actor carries ``SIGSLEUTH_FORENSICS=<token>`` in its environment, so
  strays can be found and killed.
* The conductor: ``Stage`` spawns actors, runs each case (``CASES``; some have a part that must happen before
  arming), returns each case's ground truth and cleans up every process, cgroup and sysctl it touched.
* The checker: ``check_case(report_kills, truth, mode)`` compares report kill records (the report's JSON
  shape) with a case's truth; used by the integration test and by the unit replays of captured traces.

A truth is JSON: {"case", "window": {"boot_ns": [t0, t1], "real_ns": [t0, t1]}, "kills": [expected ...],
"error"}. An expected kill holds the victim, the sender (or null), mechanism, origin, the sender's ancestry
parent first (a prefix, ending at this test process), whether audit can see it, and case-specific facts
(count, trigger, syscall arguments, namespace pids, cgroup, oom).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

TOKEN_VAR = "SIGSLEUTH_FORENSICS"
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
# x86_64 syscall numbers (the machine these tests run on).
SYS_TKILL = 200
SYS_TGKILL = 234
SYS_RT_SIGQUEUEINFO = 129
SYS_RT_TGSIGQUEUEINFO = 297
SI_QUEUE = -1
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.005
ACTOR_LIFETIME = 300.0  # an actor nobody killed ends itself after this long
CGROUP2 = "/sys/fs/cgroup/unified"
MEMORY_V1 = "/sys/fs/cgroup/memory"
NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
THIS = os.path.abspath(__file__)

# Names chosen to break naive trace parsing (a name is up to 15 bytes; the kernel cuts longer ones).
HOSTILE_NAMES = [b"kworker-2 [001]", b"a pid=7 grp=0 res=0", b"b-3 (3)", b"nl\nname x", b"\xff\xfe-bad\x80name"]


# ================================================================ small helpers (both halves)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(ret, what):
    if ret < 0 or ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return ret


def prctl(option, arg=0):
    if isinstance(arg, bytes):
        buf = ctypes.create_string_buffer(arg)
        arg = ctypes.cast(buf, ctypes.c_void_p).value
    return _check(_libc.prctl(option, arg, 0, 0, 0), "prctl(%d)" % option)


def set_name(raw):
    """PR_SET_NAME for the calling thread (the process's comm when called from the main thread)."""
    prctl(PR_SET_NAME, raw[:15])


def syscall(number, *args):
    return _check(_libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args]), "syscall(%d)" % number)


def tkill(tid, sig):
    return syscall(SYS_TKILL, tid, sig)


def tgkill(tgid, tid, sig):
    return syscall(SYS_TGKILL, tgid, tid, sig)


def _queue_info(sig):
    # siginfo_t on x86_64: si_signo, si_errno, si_code, 4 bytes of padding, then _rt {si_pid, si_uid, sigval}.
    raw = struct.pack("iii4xiiq", sig, 0, SI_QUEUE, os.getpid(), os.getuid(), 7)
    return ctypes.create_string_buffer(raw.ljust(128, b"\0"), 128)


def rt_sigqueueinfo(tgid, sig):
    info = _queue_info(sig)
    return _check(_libc.syscall(ctypes.c_long(SYS_RT_SIGQUEUEINFO), ctypes.c_long(tgid), ctypes.c_long(sig),
                                info), "rt_sigqueueinfo")


def rt_tgsigqueueinfo(tgid, tid, sig):
    info = _queue_info(sig)
    return _check(_libc.syscall(ctypes.c_long(SYS_RT_TGSIGQUEUEINFO), ctypes.c_long(tgid), ctypes.c_long(tid),
                                ctypes.c_long(sig), info), "rt_tgsigqueueinfo")


def boot_ns():
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def read_file(path, mode="rb"):
    try:
        with open(path, mode) as handle:
            return handle.read()
    except OSError:
        return None


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data if isinstance(data, bytes) else data.encode())
    finally:
        os.close(fd)


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.rename(tmp, path)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(POLL)


def stat_of(pid):
    """{comm (bytes), state, ppid, start_ticks} of a pid, None when it is gone."""
    raw = read_file("/proc/%d/stat" % pid)
    if not raw:
        return None
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    return {"comm": head.partition(b"(")[2], "state": fields[0].decode(), "ppid": int(fields[1]),
            "start_ticks": int(fields[19])}


def ns_pids(pid="self"):
    """The NSpid line: [global pid, ..., pid in the innermost namespace]."""
    for line in (read_file("/proc/%s/status" % pid) or b"").splitlines():
        if line.startswith(b"NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return None


def comm_text(raw):
    """A kernel name as the report shows it: UTF-8, undecodable bytes as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def identity(pid, tid=None):
    """What the report should say about a live process: pid, tid, comm, exe (real path), start."""
    stat = stat_of(pid)
    if stat is None:
        raise RuntimeError("pid %d is gone before its identity was recorded" % pid)
    try:
        exe = os.path.realpath(os.readlink("/proc/%d/exe" % pid))
    except OSError:
        exe = None
    return {"pid": pid, "tid": tid if tid is not None else pid, "comm": comm_text(stat["comm"]), "exe": exe,
            "start_ticks": stat["start_ticks"], "exited": False}


def token_holders(token):
    needle = ("%s=%s" % (TOKEN_VAR, token)).encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            environ = read_file("/proc/%s/environ" % name)
            if environ and needle in environ.split(b"\0"):
                found.append(int(name))
    return found


# ================================================================ actors (run as separate processes)

class ActorContext:
    def __init__(self, spec):
        self.spec = spec
        self.dir = spec["dir"]
        self.id = spec["id"]
        self.born = time.monotonic()

    def path(self, suffix):
        return os.path.join(self.dir, "%s.%s" % (self.id, suffix))

    def ready(self, **info):
        write_json(self.path("ready"), dict(info, pid=os.getpid(), tid=threading.get_native_id()))

    def wait_go(self, suffix="go"):
        wait_for(lambda: os.path.exists(self.path(suffix)), suffix, timeout=ACTOR_LIFETIME)

    def done(self, suffix="done", **info):
        write_json(self.path(suffix), info)

    def linger(self):
        """Idle until killed; end after ACTOR_LIFETIME so nothing outlives a broken run for long."""
        while time.monotonic() - self.born < ACTOR_LIFETIME:
            time.sleep(0.5)
        os._exit(3)


def _apply_common(spec):
    if spec.get("oom_score_adj") is not None:
        write_file("/proc/self/oom_score_adj", str(spec["oom_score_adj"]))
    if spec.get("cgroup_procs"):
        write_file(spec["cgroup_procs"], str(os.getpid()))
    if spec.get("name_hex"):
        set_name(bytes.fromhex(spec["name_hex"]))


def actor_idle(ctx):
    """A victim: optional name, extra threads, cgroup, memory held; idles until killed."""
    spec = ctx.spec
    _apply_common(spec)
    hold = b"\x01" * (spec.get("alloc_mb", 0) << 20)  # touched: counts as rss
    tids = []
    started = threading.Event()
    for _ in range(spec.get("threads", 0)):
        def park():
            tids.append(threading.get_native_id())
            started.set()
            threading.Event().wait()
        started.clear()
        threading.Thread(target=park, daemon=True).start()
        started.wait()
    ctx.ready(threads=tids, held=len(hold), ns_pids=ns_pids())
    ctx.linger()


SENDERS = {
    "kill": lambda s: os.kill(s["pid"], s["sig"]),
    "tkill": lambda s: tkill(s["tid"], s["sig"]),
    "tgkill": lambda s: tgkill(s["pid"], s["tid"], s["sig"]),
    "pidfd_send_signal": lambda s: _pidfd_send(s["pid"], s["sig"]),
    "rt_sigqueueinfo": lambda s: rt_sigqueueinfo(s["pid"], s["sig"]),
    "rt_tgsigqueueinfo": lambda s: rt_tgsigqueueinfo(s["pid"], s["tid"], s["sig"]),
}


def _pidfd_send(pid, sig):
    fd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)


def actor_send(ctx):
    """A sender: one kill-family syscall (repeated `times`), from the main thread or from a new thread."""
    spec = ctx.spec
    _apply_common(spec)
    ctx.ready()
    ctx.wait_go()
    outcome = {}

    def send():
        outcome["tid"] = threading.get_native_id()
        results = []
        for n in range(spec.get("times", 1)):
            if n and spec.get("between") == "zombie":
                # the victim has exited but is not reaped: a send to it now is a send to a dying process
                wait_for(lambda: (stat_of(spec["pid"]) or {}).get("state") == "Z", "the victim to be a zombie")
            try:
                SENDERS[spec["how"]](spec)
                results.append(0)
            except OSError as exc:
                results.append(exc.errno)
        outcome["results"] = results

    if spec.get("in_thread"):
        thread = threading.Thread(target=send)
        thread.start()
        thread.join()
    else:
        send()
    ctx.done(**outcome)


def actor_thread_fork_kill(ctx):
    """A thread (not the main one) forks a child; the child kills the target and exits."""
    spec = ctx.spec
    _apply_common(spec)
    ctx.ready()
    ctx.wait_go()
    outcome = {}

    def fork_and_kill():
        outcome["thread_tid"] = threading.get_native_id()
        child = os.fork()
        if child == 0:
            try:
                set_name(bytes.fromhex(spec["child_name_hex"]))
                os.kill(spec["pid"], spec["sig"])
            finally:
                os._exit(0)
        outcome["child"] = child
        outcome["child_status"] = os.waitpid(child, 0)[1]

    thread = threading.Thread(target=fork_and_kill)
    thread.start()
    thread.join()
    ctx.done(**outcome)


def _pdeath_child(ctx, parent_pid, name_hex):
    """In the forked child: ask for SIGKILL when the parent thread exits; idle."""
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:
            os._exit(4)  # the parent died before the request: it would never come
        set_name(bytes.fromhex(name_hex))
        write_json(ctx.path("child.ready"), {"pid": os.getpid(), "comm": comm_text(stat_of(os.getpid())["comm"])})
        ctx.linger()
    finally:
        os._exit(5)


def actor_pdeath_process(ctx):
    """The parent forks a child with PR_SET_PDEATHSIG=SIGKILL, then exits on go: the kernel kills the child."""
    spec = ctx.spec
    _apply_common(spec)
    me = os.getpid()
    child = os.fork()
    if child == 0:
        _pdeath_child(ctx, me, spec["child_name_hex"])
    wait_for(lambda: os.path.exists(ctx.path("child.ready")), "the pdeath child")
    ctx.ready(child=child)
    ctx.wait_go()
    os._exit(0)


def actor_pdeath_thread(ctx):
    """A non-main thread forks the child and then ends, while the process lives on and reaps the child."""
    spec = ctx.spec
    _apply_common(spec)
    me = os.getpid()
    info = {}
    forked = threading.Event()

    def parent_thread():
        info["thread_tid"] = threading.get_native_id()
        child = os.fork()
        if child == 0:
            _pdeath_child(ctx, me, spec["child_name_hex"])
        info["child"] = child
        forked.set()
        ctx.wait_go()
        # returning ends this thread: the kernel sends the child its parent-death signal

    thread = threading.Thread(target=parent_thread)
    thread.start()
    forked.wait()
    wait_for(lambda: os.path.exists(ctx.path("child.ready")), "the pdeath child")
    ctx.ready(thread_tid=info["thread_tid"], child=info["child"])
    thread.join()
    info["thread_exit_ns"] = boot_ns()
    _, status = os.waitpid(info["child"], 0)
    ctx.done(child_status=status, **info)


def actor_subreaper(ctx):
    """A subreaper forks a middle process that forks the killer and exits; the killer, adopted by the
    subreaper, kills on go."""
    spec = ctx.spec
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    _apply_common(spec)
    me = os.getpid()
    middle = os.fork()
    if middle == 0:
        try:
            set_name(bytes.fromhex(spec["middle_name_hex"]))
            killer = os.fork()
            if killer == 0:
                try:
                    set_name(bytes.fromhex(spec["killer_name_hex"]))
                    write_json(ctx.path("killer.ready"), {"pid": os.getpid()})
                    wait_for(lambda: os.getppid() == me, "adoption by the subreaper")
                    ctx.wait_go()
                    os.kill(spec["pid"], spec["sig"])
                finally:
                    os._exit(0)
            write_json(ctx.path("middle"), {"middle": os.getpid(), "killer": killer})
        finally:
            os._exit(0)
    _, middle_status = os.waitpid(middle, 0)
    pids = wait_for(lambda: read_json(ctx.path("middle")), "the middle's report")
    killer = pids["killer"]
    wait_for(lambda: os.path.exists(ctx.path("killer.ready")), "the killer to name itself")
    wait_for(lambda: (stat_of(killer) or {}).get("ppid") == me, "the killer's adoption")
    ctx.ready(middle=middle, killer=killer, killer_comm=comm_text(stat_of(killer)["comm"]))
    _, status = os.waitpid(killer, 0)
    ctx.done(killer_status=status, middle_status=middle_status)


def actor_nsinit(ctx):
    """pid 1 of a new pid namespace: forks a victim (pid 2 there) and kills it by its namespace pid on go."""
    spec = ctx.spec
    _apply_common(spec)
    victim = os.fork()
    if victim == 0:
        try:
            set_name(bytes.fromhex(spec["victim_name_hex"]))
            write_json(ctx.path("victim.ready"), {"ns_pids": ns_pids()})
            ctx.linger()
        finally:
            os._exit(5)
    victim_ns = wait_for(lambda: read_json(ctx.path("victim.ready")), "the namespace victim")["ns_pids"]
    collider = None
    if spec.get("collide_with"):
        # Fork a child whose pid *in this namespace* equals a live process's global pid: a witness that
        # records the pid fork returns (audit's clone exit=) must not take it for that other process.
        write_file(NS_LAST_PID, str(spec["collide_with"] - 1))  # this namespace's counter (the writer's)
        collider = os.fork()
        if collider == 0:
            try:
                ctx.wait_go()
            finally:
                os._exit(0)
    ctx.ready(ns_pids=ns_pids(), victim_ns_pids=victim_ns, victim_local=victim, collider=collider)
    ctx.wait_go()
    os.kill(victim, signal.SIGKILL)  # `victim` is the pid as this namespace numbers it
    _, status = os.waitpid(victim, 0)
    collider_status = os.waitpid(collider, 0)[1] if collider else None
    ctx.done(victim_status=status, collider_status=collider_status)


def actor_ancestor(ctx):
    """Forks the killer and exits on go (so its pid can be reused); the killer kills on go2."""
    spec = ctx.spec
    _apply_common(spec)
    killer = os.fork()
    if killer == 0:
        try:
            set_name(bytes.fromhex(spec["killer_name_hex"]))
            write_json(ctx.path("killer.ready"), {"pid": os.getpid()})
            ctx.wait_go("go2")
            os.kill(spec["pid"], spec["sig"])
            ctx.done("done2", ppid=os.getppid())
        finally:
            os._exit(0)
    wait_for(lambda: os.path.exists(ctx.path("killer.ready")), "the killer")
    ctx.ready(killer=killer)
    ctx.wait_go()
    os._exit(0)


def actor_spawner(ctx):
    """Spawns the newcomer that takes a given pid, the way it makes audit log the newcomer's execve before
    the vfork that created it: pinned to one CPU at SCHED_IDLE (the child is reset to normal on fork), this
    parent, released by the child's exec, cannot run again before the child's execve has returned."""
    spec = ctx.spec
    _apply_common(spec)
    os.sched_setaffinity(0, {spec["cpu"]})
    os.sched_setscheduler(0, os.SCHED_IDLE | os.SCHED_RESET_ON_FORK, os.sched_param(0))
    ctx.ready()
    ctx.wait_go()
    saved = int(read_file(NS_LAST_PID, "r"))
    newcomer = None
    for _ in range(50):
        write_file(NS_LAST_PID, str(spec["target"] - 1))
        try:
            popen = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd="/")
        finally:
            if int(read_file(NS_LAST_PID, "r")) < saved:
                write_file(NS_LAST_PID, str(saved))
        if popen.pid == spec["target"]:
            newcomer = popen
            break
        popen.kill()
        popen.wait()
    ctx.done(newcomer=newcomer.pid if newcomer else None)
    if newcomer is not None:
        newcomer.wait()  # its parent until the cleanup ends it


def actor_spin(ctx):
    """Burns CPU until a CPU-time limit ends it; optionally counts SIGXCPU instead of dying of it."""
    spec = ctx.spec
    _apply_common(spec)
    if spec.get("handle_xcpu"):
        signal.signal(signal.SIGXCPU, lambda *_: None)
    ctx.ready()
    if spec.get("wait_go"):
        ctx.wait_go()
    deadline = time.monotonic() + 30
    n = 0
    while True:
        n += 1
        if n % 100000 == 0 and time.monotonic() > deadline:
            os._exit(6)


def actor_oom_trigger(ctx):
    """Joins the memory cgroup and, on go, allocates in 1 MiB steps until `alloc_mb` (the OOM comes first)."""
    spec = ctx.spec
    _apply_common(spec)
    ctx.ready()
    ctx.wait_go()
    chunks = []
    for _ in range(spec["alloc_mb"]):
        chunks.append(b"\x02" * (1 << 20))
    ctx.done(allocated_mb=len(chunks))


ACTORS = {
    "idle": actor_idle,
    "send": actor_send,
    "thread-fork-kill": actor_thread_fork_kill,
    "pdeath-process": actor_pdeath_process,
    "pdeath-thread": actor_pdeath_thread,
    "subreaper": actor_subreaper,
    "nsinit": actor_nsinit,
    "ancestor": actor_ancestor,
    "spin": actor_spin,
    "spawner": actor_spawner,
    "oom-trigger": actor_oom_trigger,
}


def actor_main(spec_json):
    spec = json.loads(spec_json)
    ctx = ActorContext(spec)
    try:
        ACTORS[spec["kind"]](ctx)
    except Exception as exc:  # told to the conductor through the error file
        write_json(ctx.path("error"), {"error": "%s: %s" % (type(exc).__name__, exc)})
        raise
    return 0


# ================================================================ the conductor (runs in the test process)

class StageError(Exception):
    pass


class Actor:
    def __init__(self, stage, kind, actor_id, popen, spec):
        self.stage = stage
        self.kind = kind
        self.id = actor_id
        self.popen = popen
        self.spec = spec
        self.pid = popen.pid
        self.info = None

    def path(self, suffix):
        return os.path.join(self.stage.workdir, "%s.%s" % (self.id, suffix))

    def _wait_file(self, suffix, timeout):
        deadline = time.monotonic() + timeout
        while True:
            data = read_json(self.path(suffix))
            if data is not None:
                return data
            error = read_json(self.path("error"))
            if error:
                raise StageError("actor %s (%s) failed: %s" % (self.id, self.kind, error["error"]))
            if self.popen.poll() is not None and suffix in ("ready",):
                raise StageError("actor %s (%s) exited with %s before it was ready"
                                 % (self.id, self.kind, self.popen.returncode))
            if time.monotonic() > deadline:
                raise StageError("actor %s (%s): no %s within %ss" % (self.id, self.kind, suffix, timeout))
            time.sleep(POLL)

    def ready(self, timeout=30):
        self.info = self._wait_file("ready", timeout)
        return self.info

    def go(self, suffix="go"):
        with open(self.path(suffix), "w"):
            pass

    def done(self, suffix="done", timeout=30):
        return self._wait_file(suffix, timeout)

    def wait_exit(self, timeout=30):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StageError("actor %s (%s) did not exit within %ss" % (self.id, self.kind, timeout))

    def expect_killed(self, sig=signal.SIGKILL, timeout=30):
        rc = self.wait_exit(timeout)
        if rc != -sig:
            raise StageError("actor %s (%s) ended with %s, expected death by %s"
                             % (self.id, self.kind, rc, signal.Signals(sig).name))


def me_entry():
    """This test process as an ancestor: alive, the top of every staged chain below pid 1."""
    entry = identity(os.getpid())
    entry.pop("tid")
    return entry


def ancestor_entry(ident, exited):
    entry = {key: ident[key] for key in ("pid", "comm", "exe", "start_ticks")}
    entry["exited"] = exited
    return entry


def expect(victim, sender, mechanism, origin, ancestry, sig=signal.SIGKILL, count=1, audit_visible=True, **extra):
    """One expected kill record."""
    record = {
        "signal": int(sig),
        "victim": {key: victim[key] for key in ("pid", "tid", "comm", "exe")},
        "sender": None if sender is None else {key: sender[key] for key in ("pid", "tid", "comm", "exe", "exited")},
        "mechanism": mechanism,
        "origin": origin,
        "ancestry": ancestry,
        "count": count,
        "audit_visible": audit_visible,
    }
    record.update(extra)
    return record


class Stage:
    """Spawns the actors of every case, keeps the truth, and undoes everything it did."""

    def __init__(self, workdir, python=None):
        self.workdir = workdir
        self.python = python or sys.executable
        self.token = uuid.uuid4().hex[:12]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.env.update({TOKEN_VAR: self.token, "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        self.actors = []
        self.popens = []
        self.lingering = set()   # pids meant to live until cleanup (a pid's newcomer must outlast collect)
        self.adopted = set()     # pids that end up as (zombie) children of this test process
        self.cgroups = []        # directories to rmdir, innermost last
        self.ns_last_pid = None  # the value found before forcing a pid
        self.me = me_entry()
        self.counter = 0
        self.pending = {}        # case -> state carried from prepare to run

    # -------------------------------------------------- processes

    def actor(self, kind, role, wrapper=(), popen_kwargs=None, **spec):
        self.counter += 1
        actor_id = "%02d-%s" % (self.counter, role)
        spec = dict(spec, kind=kind, id=actor_id, dir=self.workdir)
        for key in ("name", "child_name", "middle_name", "killer_name", "victim_name"):
            if key in spec:
                raw = spec.pop(key)
                spec[key + "_hex"] = raw.hex()
        argv = list(wrapper) + [self.python, "-I", THIS, "actor", json.dumps(spec)]
        with open(os.path.join(self.workdir, actor_id + ".log"), "wb") as log:
            popen = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=log, cwd="/", **(popen_kwargs or {}))
        self.popens.append(popen)
        actor = Actor(self, kind, actor_id, popen, spec)
        self.actors.append(actor)
        return actor

    def popen(self, argv, **kwargs):
        popen = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, cwd="/", **kwargs)
        self.popens.append(popen)
        return popen

    def victim(self, role, name=None, **spec):
        actor = self.actor("idle", role, name=name, **spec) if name is not None else self.actor("idle", role, **spec)
        actor.ready()
        return actor

    def reap_adopted(self, pid, timeout=30.0):
        """Reap a process that was orphaned below this test process (a child subreaper) once it exits."""
        self.adopted.add(pid)
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self.adopted.discard(pid)
                return None
            if done:
                self.adopted.discard(pid)
                return status
            if time.monotonic() > deadline:
                raise StageError("adopted pid %d did not exit within %ss" % (pid, timeout))
            time.sleep(POLL)

    def sleeper_link(self, name):
        """A symlink to sleep named `name`: a process exec'd through it is called `name` (comm)."""
        link = os.path.join(self.workdir, name)
        if not os.path.exists(link):
            os.symlink("/usr/bin/sleep", link)
        return link

    # -------------------------------------------------- cgroups and sysctls

    def make_cgroup(self, root, **settings):
        path = os.path.join(root, "sigsleuth-forensics-%s-%d" % (self.token, len(self.cgroups)))
        os.mkdir(path)
        self.cgroups.append(path)
        for name, value in settings.items():
            write_file(os.path.join(path, name), str(value))
        return path

    def force_next_pid(self, pid):
        """Make the next fork in the root pid namespace get `pid` (write ns_last_pid = pid - 1); call
        restore_next_pid() right after that fork."""
        if self.ns_last_pid is None:
            self.ns_last_pid = int(read_file(NS_LAST_PID, "r"))
        write_file(NS_LAST_PID, str(pid - 1))

    def restore_next_pid(self):
        """Let pids go on from where they were before the forced one, so later forks do not recycle the pids
        of processes that just exited (each case keeps its own pids)."""
        if self.ns_last_pid is not None:
            if int(read_file(NS_LAST_PID, "r")) < self.ns_last_pid:
                write_file(NS_LAST_PID, str(self.ns_last_pid))
            self.ns_last_pid = None

    # -------------------------------------------------- cleanup

    def cleanup(self):
        """Kill and reap every process, remove every cgroup, restore ns_last_pid; returns problems found."""
        problems = []
        for attempt in range(200):
            strays = token_holders(self.token)
            for popen in self.popens:
                if popen.poll() is None:
                    strays.append(popen.pid)
            for pid in set(strays):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for popen in self.popens:
                if popen.poll() is None:
                    try:
                        popen.wait(timeout=0.05)
                    except subprocess.TimeoutExpired:
                        pass
            for pid in list(self.adopted):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.adopted.discard(pid)
            if not strays and not self.adopted:
                break
            unexpected = set(strays) - self.lingering
            if attempt == 0 and unexpected:
                problems.append("processes still running at cleanup (killed): %s" % sorted(unexpected))
            time.sleep(0.05)
        else:
            problems.append("could not end %s" % sorted(set(token_holders(self.token)) | self.adopted))
        for path in reversed(self.cgroups):
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        problems.append("cannot remove cgroup %s: %s" % (path, exc))
                        break
                    time.sleep(0.05)
            else:
                problems.append("cgroup %s is still busy" % path)
        self.cgroups = []
        self.restore_next_pid()
        return problems


# ================================================================ the cases

class Case:
    """One staged mechanism. prepare() runs before arming (optional); run() after, returning expected kills."""

    name = ""
    pre_arm = False
    signals = (signal.SIGKILL,)

    def __init__(self, stage):
        self.stage = stage

    def prepare(self):
        pass

    def run(self):
        raise NotImplementedError

    # helpers
    @property
    def me(self):
        return self.stage.me

    def chain(self, *entries):
        """Ancestry prefix, parent first, ending with this test process."""
        return list(entries) + [self.me]


def sender_ident(actor, tid=None, exited=True):
    """An actor as the expected sender: the identity recorded while it lived, the sending thread, its fate."""
    ident = dict(actor.ident, exited=exited)
    if tid is not None:
        ident["tid"] = tid
    return ident


def _record_ident(actor, tid=None):
    """Remember an actor's live identity now (before it acts and perhaps exits)."""
    actor.ident = identity(actor.pid, tid)
    return actor.ident


class KillSyscalls(Case):
    """kill(2) to a process group (negative pid), tkill, tgkill, pidfd_send_signal, rt_sigqueueinfo,
    rt_tgsigqueueinfo: each sent by its own process to its own victim."""

    name = "kill_family"

    def run(self):
        stage = self.stage
        kills = []
        # kill(-pgid): two victims in their own process group
        leader = stage.actor("idle", "pg-leader", name=b"fx-pg-lead", popen_kwargs={"process_group": 0})
        leader.ready()
        member = stage.actor("idle", "pg-member", name=b"fx-pg-memb", popen_kwargs={"process_group": leader.pid})
        member.ready()
        sender = stage.actor("send", "pg-sender", name=b"fx-pg-kill", how="kill", pid=-leader.pid,
                             sig=int(signal.SIGKILL))
        sender.ready()
        targets = [_record_ident(leader), _record_ident(member)]
        _record_ident(sender)
        sender.go()
        sender.done()
        sender.wait_exit()
        for victim in (leader, member):
            victim.expect_killed()
        for ident in targets:
            kills.append(expect(ident, sender_ident(sender), "kill", "user", self.chain(),
                                syscall={"pid": -leader.pid}))
        for how, role in (("tkill", "tkill"), ("tgkill", "tgkill"), ("pidfd_send_signal", "pidfd"),
                          ("rt_sigqueueinfo", "sigqueue"), ("rt_tgsigqueueinfo", "tgsigqueue")):
            victim = stage.victim("%s-victim" % role, name=("fx-v-%s" % role).encode())
            ident = _record_ident(victim)
            sender = stage.actor("send", "%s-sender" % role, name=("fx-s-%s" % role).encode(), how=how,
                                 pid=victim.pid, tid=victim.pid, sig=int(signal.SIGKILL))
            sender.ready()
            _record_ident(sender)
            sender.go()
            result = sender.done()
            sender.wait_exit()
            if result.get("results") != [0]:
                raise StageError("%s failed: %s" % (how, result))
            victim.expect_killed()
            kills.append(expect(ident, sender_ident(sender), how, "user", self.chain()))
        return kills


class ThreadSender(Case):
    """A Python thread sends: sender.pid is the process (tgid), sender.tid the thread's native id."""

    name = "thread_sender"

    def run(self):
        stage = self.stage
        victim = stage.victim("thr-victim", name=b"fx-thr-victim")
        ident = _record_ident(victim)
        sender = stage.actor("send", "thr-sender", name=b"fx-thr-sender", how="kill", pid=victim.pid,
                             sig=int(signal.SIGKILL), in_thread=True)
        sender.ready()
        _record_ident(sender)
        sender.go()
        result = sender.done()
        sender.wait_exit()
        victim.expect_killed()
        if result["tid"] == sender.pid:
            raise StageError("the sending thread is the main thread")
        return [expect(ident, sender_ident(sender, tid=result["tid"]), "kill", "user", self.chain())]


class ThreadForks(Case):
    """A non-main thread forks the killer: the killer's parent is the process (tgid), not the thread."""

    name = "thread_forks"

    def run(self):
        stage = self.stage
        victim = stage.victim("tf-victim", name=b"fx-tf-victim")
        ident = _record_ident(victim)
        parent = stage.actor("thread-fork-kill", "tf-parent", name=b"fx-tf-parent", child_name=b"fx-tf-killer",
                             pid=victim.pid, sig=int(signal.SIGKILL))
        parent.ready()
        parent_ident = _record_ident(parent)
        parent.go()
        result = parent.done()
        parent.wait_exit()
        victim.expect_killed()
        if result["thread_tid"] == parent.pid:
            raise StageError("the forking thread is the main thread")
        killer = {"pid": result["child"], "tid": result["child"], "comm": "fx-tf-killer",
                  "exe": parent_ident["exe"], "exited": True}
        return [expect(ident, killer, "kill", "user", self.chain(ancestor_entry(parent_ident, True)),
                       forking_thread=result["thread_tid"])]


class ThreadVictim(Case):
    """tgkill aimed at one non-leader thread is a kill of its process: victim.pid = tgid, victim.tid = the
    thread. One victim predates arming (its threads come from the snapshot), one does not."""

    name = "thread_victim"
    pre_arm = True

    def prepare(self):
        self.early = self.stage.victim("tv-early", name=b"fx-tv-early", threads=2)

    def run(self):
        stage = self.stage
        kills = []
        late = stage.victim("tv-late", name=b"fx-tv-late", threads=2)
        for victim in (self.early, late):
            thread = victim.info["threads"][-1]
            ident = _record_ident(victim, tid=thread)
            sender = stage.actor("send", victim.id + "-sender", name=b"fx-tv-sender", how="tgkill",
                                 pid=victim.pid, tid=thread, sig=int(signal.SIGKILL))
            sender.ready()
            _record_ident(sender)
            sender.go()
            sender.done()
            sender.wait_exit()
            victim.expect_killed()
            kills.append(expect(ident, sender_ident(sender), "tgkill", "user", self.chain()))
        return kills


class CgroupKill(Case):
    """A write of "1" to a cgroup v2 cgroup.kill by a shell: cgroup_kill, origin user, sender the shell."""

    name = "cgroup_kill"

    def run(self):
        stage = self.stage
        cgroup = stage.make_cgroup(CGROUP2)
        victims = [stage.victim("cg-victim%d" % i, name=("fx-cg-victim%d" % i).encode(),
                                cgroup_procs=os.path.join(cgroup, "cgroup.procs")) for i in (1, 2)]
        idents = [_record_ident(v) for v in victims]
        # The writer must be a known, live process before it writes: sh waits on a pipe, then writes.
        read_end, write_end = os.pipe()
        popen = subprocess.Popen(["/bin/sh", "-c", 'read go; echo 1 > "$0/cgroup.kill"', cgroup],
                                 env=stage.env, stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 cwd="/")
        stage.popens.append(popen)
        os.close(read_end)
        wait_for(lambda: (stat_of(popen.pid) or {}).get("comm") == b"sh", "the writer to exec sh")
        writer = identity(popen.pid)
        writer["exited"] = True
        os.write(write_end, b"go\n")
        os.close(write_end)
        _, err = popen.communicate(timeout=30)
        if popen.returncode != 0:
            raise StageError("the cgroup.kill write failed: %r" % err)
        for victim in victims:
            victim.expect_killed()
        return [expect(ident, writer, "cgroup_kill", "user", self.chain(), audit_visible=False, cgroup=cgroup[len(CGROUP2):])
                for ident in idents]


class OomKill(Case):
    """The memory cgroup OOM killer: a hog holds most of a 32 MiB limit, a second process allocates and
    triggers the OOM; the hog dies. oom_kill, origin kernel, sender null, trigger the allocator."""

    name = "oom_kill"

    def run(self):
        stage = self.stage
        cgroup = stage.make_cgroup(MEMORY_V1, **{"memory.limit_in_bytes": 32 << 20})
        procs = os.path.join(cgroup, "cgroup.procs")
        hog = stage.victim("oom-hog", name=b"fx-oom-hog", cgroup_procs=procs, alloc_mb=24, oom_score_adj=1000)
        hog_ident = _record_ident(hog)
        trigger = stage.actor("oom-trigger", "oom-trigger", name=b"fx-oom-trigger", cgroup_procs=procs,
                              alloc_mb=16, oom_score_adj=0)
        trigger.ready()
        trigger_ident = _record_ident(trigger)
        trigger.go()
        hog.expect_killed()
        trigger.done()
        if trigger.wait_exit() != 0:
            raise StageError("the OOM trigger itself died (%s)" % trigger.popen.returncode)
        return [expect(hog_ident, None, "oom_kill", "kernel", [], audit_visible=False, trigger_pid=trigger_ident["pid"],
                       oom_min_anon_rss_kb=20 << 10, oom_cgroup=cgroup[len(MEMORY_V1):])]


class ParentDeath(Case):
    """PR_SET_PDEATHSIG=SIGKILL: the child is killed when its parent exits (a process) or when the parent
    thread exits (a thread of a process that lives on). pdeath_signal, origin kernel, sender the parent."""

    name = "pdeath_signal"

    def run(self):
        stage = self.stage
        kills = []
        parent = stage.actor("pdeath-process", "pd-parent", name=b"fx-pd-parent", child_name=b"fx-pd-child")
        parent.ready()
        parent_ident = _record_ident(parent)
        child = parent.info["child"]
        child_ident = identity(child)
        stage.adopted.add(child)
        parent.go()
        if parent.wait_exit() != 0:
            raise StageError("the pdeath parent failed: %s" % parent.popen.returncode)
        status = stage.reap_adopted(child)
        if status is None or not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise StageError("the pdeath child ended with status %r" % status)
        parent_ident["exited"] = True
        kills.append(expect(child_ident, parent_ident, "pdeath_signal", "kernel", self.chain(),
                            audit_visible=False))

        owner = stage.actor("pdeath-thread", "pdt-parent", name=b"fx-pdt-parent", child_name=b"fx-pdt-child")
        owner.ready()
        owner_ident = _record_ident(owner)
        child_ident = identity(owner.info["child"])
        owner.go()
        result = owner.done()
        owner.wait_exit()
        status = result["child_status"]
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise StageError("the thread's pdeath child ended with status %r" % status)
        sender = dict(owner_ident, tid=owner.info["thread_tid"], exited=True)
        kills.append(expect(child_ident, sender, "pdeath_signal", "kernel", self.chain(), audit_visible=False))
        return kills


class RlimitCpu(Case):
    """RLIMIT_CPU: `prlimit --cpu=1 CMD` (soft = hard: SIGKILL at 1 s of CPU) and `prlimit --pid P --cpu=1:2`
    on a running spinner that handles SIGXCPU (SIGXCPU at 1 s, SIGKILL at 2 s). rlimit_cpu, origin kernel,
    sender null."""

    name = "rlimit_cpu"
    signals = (signal.SIGKILL, signal.SIGXCPU)

    def run(self):
        stage = self.stage
        kills = []
        spinner = stage.actor("spin", "rl-exec", wrapper=("/usr/bin/prlimit", "--cpu=1", "--"), name=b"fx-rl-exec")
        spinner.ready()
        ident = _record_ident(spinner)
        spinner.expect_killed(timeout=30)
        kills.append(expect(ident, None, "rlimit_cpu", "kernel", [], audit_visible=False))

        spinner = stage.actor("spin", "rl-pid", name=b"fx-rl-pid", handle_xcpu=True, wait_go=True)
        spinner.ready()
        ident = _record_ident(spinner)
        limiter = stage.popen(["/usr/bin/prlimit", "--pid", str(spinner.pid), "--cpu=1:2"])
        if limiter.wait(timeout=30) != 0:
            raise StageError("prlimit --pid failed")
        spinner.go()
        spinner.expect_killed(timeout=30)
        kills.append(expect(ident, None, "rlimit_cpu", "kernel", [], sig=signal.SIGXCPU, audit_visible=False))
        kills.append(expect(ident, None, "rlimit_cpu", "kernel", [], audit_visible=False))
        return kills


class PidNamespace(Case):
    """unshare --pid --fork: an init inside a new pid namespace kills its child by the namespace pid (2).
    Report pids are global; ns_pid is known for processes in the arm-time snapshot (one namespace predates
    arming) and must never be confused with the global pid. A second namespace is created after arming. In a
    third, a child is forked whose namespace pid equals the global pid of a live process outside, which then
    kills: that process must keep its own identity and ancestry."""

    name = "pid_namespace"
    pre_arm = True

    def _start(self, tag, **spec):
        stage = self.stage
        init = stage.actor("nsinit", "ns-init-" + tag, wrapper=("/usr/bin/unshare", "--pid", "--fork"),
                           name=("fx-ns-kill-" + tag).encode(), victim_name=("fx-ns-vict-" + tag).encode(), **spec)
        info = init.ready()
        return init, info

    def prepare(self):
        self.early = self._start("a")
        self.early_idents = self._idents(*self.early)

    def _idents(self, init, info):
        unshare = identity(init.pid)
        killer = identity(info["ns_pids"][0])
        victim = identity(info["victim_ns_pids"][0])
        return unshare, killer, victim

    def run(self):
        stage = self.stage
        kills = []
        late = self._start("b")
        # Round c: a process outside kills while a namespace child holds its pid as its namespace pid.
        decoy_victim = stage.victim("ns-decoy-victim", name=b"fx-nsd-victim")
        decoy = stage.actor("send", "ns-decoy", name=b"fx-nsd-killer", how="kill", pid=decoy_victim.pid,
                            sig=int(signal.SIGKILL))
        decoy.ready()
        _record_ident(decoy)
        colliding = self._start("c", collide_with=decoy.pid)
        if colliding[1]["collider"] != decoy.pid:
            raise StageError("the namespace child got pid %s, not %d" % (colliding[1]["collider"], decoy.pid))
        decoy_victim_ident = _record_ident(decoy_victim)
        decoy.go()
        decoy.done()
        decoy.wait_exit()
        decoy_victim.expect_killed()
        kills.append(expect(decoy_victim_ident, sender_ident(decoy), "kill", "user", self.chain(),
                            colliding_ns_pid=decoy.pid))
        for (init, info), (unshare, killer, victim), known in (
                (self.early, self.early_idents, True), (late, self._idents(*late), False),
                (colliding, self._idents(*colliding), False)):
            if info["ns_pids"][1:] != [1] or info["victim_ns_pids"][1:] != [2]:
                raise StageError("unexpected namespace pids: %s" % info)
            init.go()
            result = init.done()
            rc = init.wait_exit()
            status = result["victim_status"]
            if rc != 0 or not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                raise StageError("the namespace kill failed: unshare rc %s, victim status %s" % (rc, status))
            killer["exited"] = True
            kills.append(expect(victim, killer, "kill", "user", self.chain(ancestor_entry(unshare, True)),
                                sender_ns_pid=1, victim_ns_pid=2, ns_known=known, syscall={"pid": 2}))
        return kills


class Subreaper(Case):
    """A subreaper's grandchild kills after its real parent exited and it was adopted: the ancestry holds the
    real fork parent (exited), then the subreaper."""

    name = "subreaper"

    def run(self):
        stage = self.stage
        victim = stage.victim("sr-victim", name=b"fx-sr-victim")
        ident = _record_ident(victim)
        reaper = stage.actor("subreaper", "sr-reaper", name=b"fx-subreaper", middle_name=b"fx-sr-middle",
                             killer_name=b"fx-sr-killer", pid=victim.pid, sig=int(signal.SIGKILL))
        info = reaper.ready()
        reaper_ident = _record_ident(reaper)
        killer = identity(info["killer"])
        reaper.go()
        result = reaper.done()
        reaper.wait_exit()
        victim.expect_killed()
        if result["killer_status"] != 0:
            raise StageError("the adopted killer failed: %s" % result)
        killer["exited"] = True
        middle = {"pid": info["middle"], "comm": "fx-sr-middle", "exe": reaper_ident["exe"], "exited": True}
        return [expect(ident, killer, "kill", "user",
                       self.chain(middle, ancestor_entry(reaper_ident, True)))]


class PidReuse(Case):
    """An ancestor exits and its pid is taken by a newcomer (forced through ns_last_pid) before its child
    kills: the ancestry names the earlier process (its comm/exe, exited), never the newcomer. Four rounds: the
    ancestor predates arming (snapshot) or not (traced fork); the newcomer is spawned by the ancestor's own
    parent (this test process) a millisecond after the ancestor's exit, or by a spawner that makes audit log
    the newcomer's execve before the vfork that created it."""

    name = "pid_reuse"
    pre_arm = True

    def _start(self, tag, spawner):
        stage = self.stage
        victim = stage.victim("pr-victim-" + tag, name=("fx-pr-victim-" + tag).encode())
        ancestor = stage.actor("ancestor", "pr-ancestor-" + tag, name=("fx-ancestor-" + tag).encode(),
                               killer_name=("fx-pr-kill-" + tag).encode(), pid=victim.pid, sig=int(signal.SIGKILL))
        info = ancestor.ready()
        helper = None
        if spawner:
            helper = stage.actor("spawner", "pr-spawner-" + tag, name=("fx-spawner-" + tag).encode(),
                                 target=ancestor.pid, cpu=max(os.sched_getaffinity(0)),
                                 argv=[stage.sleeper_link("fx-newcomer"), "300"])
            helper.ready()
            stage.lingering.add(helper.pid)
        return victim, ancestor, helper, _record_ident(victim), _record_ident(ancestor), identity(info["killer"])

    def prepare(self):
        self.early = [self._start("a", spawner=False), self._start("c", spawner=True)]

    def _newcomer(self, ancestor, helper):
        stage = self.stage
        if helper is not None:
            helper.go()
            return helper.done()["newcomer"]
        for attempt in range(50):
            stage.force_next_pid(ancestor.pid)
            try:
                popen = stage.popen([stage.sleeper_link("fx-newcomer"), "300"])
            finally:
                stage.restore_next_pid()
            if popen.pid == ancestor.pid:
                return popen.pid
            popen.kill()
            popen.wait()
        return None

    def run(self):
        stage = self.stage
        kills = []
        rounds = self.early + [self._start("b", spawner=False), self._start("d", spawner=True)]
        for victim, ancestor, helper, victim_ident, ancestor_ident, killer in rounds:
            stage.adopted.add(killer["pid"])
            ancestor.go()
            # A blocking wait (no polling delay), so the newcomer follows the ancestor's exit within about a
            # millisecond, as a busy service manager's next worker would: closer than audit's coarse clock.
            if ancestor.popen.wait() != 0:
                raise StageError("the ancestor failed")
            newcomer = self._newcomer(ancestor, helper)
            if newcomer != ancestor.pid:
                raise StageError("could not make a newcomer take pid %d" % ancestor.pid)
            stage.lingering.add(newcomer)
            wait_for(lambda: (stat_of(newcomer) or {}).get("comm") == b"fx-newcomer", "the newcomer to exec")
            ancestor.go("go2")
            ancestor.done("done2")
            status = stage.reap_adopted(killer["pid"])
            if status != 0:
                raise StageError("the killer failed: %r" % status)
            victim.expect_killed()
            killer["exited"] = True
            kills.append(expect(victim_ident, killer, "kill", "user",
                                self.chain(ancestor_entry(ancestor_ident, True)),
                                reused_by={"pid": newcomer, "comm": "fx-newcomer"}))
        return kills


class HostileNames(Case):
    """Senders and victims named to look like trace fields (`kworker-2 [001]`, `a pid=7 grp=0 res=0`,
    `b-3 (3)`, a newline, non-UTF-8 bytes, another process's pid): pids must be exact and names kept as data.
    Victims predate arming (names from the snapshot); senders rename themselves after (task_rename)."""

    name = "hostile_names"
    pre_arm = True

    def _names(self):
        decoy = os.getpid()
        return HOSTILE_NAMES + [("x-%d (%d)" % (decoy, decoy)).encode()[:15]]

    def prepare(self):
        self.victims = [self.stage.victim("hn-victim%d" % i, name=name) for i, name in enumerate(self._names())]

    def run(self):
        stage = self.stage
        names = self._names()
        kills = []
        for i, victim in enumerate(self.victims):
            ident = _record_ident(victim)
            sender = stage.actor("send", "hn-sender%d" % i, name=names[(i + 1) % len(names)], how="kill",
                                 pid=victim.pid, sig=int(signal.SIGKILL))
            sender.ready()
            _record_ident(sender)
            sender.go()
            sender.done()
            sender.wait_exit()
            victim.expect_killed()
            kills.append(expect(ident, sender_ident(sender), "kill", "user", self.chain()))
        return kills


class RepeatedSend(Case):
    """A repeated send to a victim already dying folds into one record: two quick kill()s (count 2), a kill
    and another once the victim is a zombie (count 2), and `timeout -s KILL`, which kills the command and
    then its own process group (itself included)."""

    name = "repeated_send"

    def run(self):
        stage = self.stage
        kills = []
        victim = stage.victim("rp-victim", name=b"fx-rp-victim")
        ident = _record_ident(victim)
        sender = stage.actor("send", "rp-sender", name=b"fx-rp-sender", how="kill", pid=victim.pid,
                             sig=int(signal.SIGKILL), times=2)
        sender.ready()
        _record_ident(sender)
        sender.go()
        result = sender.done()
        sender.wait_exit()
        victim.expect_killed()
        if result["results"] != [0, 0]:
            raise StageError("the two kills returned %s" % result["results"])
        kills.append(expect(ident, sender_ident(sender), "kill", "user", self.chain(), count=2))

        # the same, deterministically late: the second kill reaches the victim once it is a zombie
        victim = stage.victim("rpz-victim", name=b"fx-rpz-victim")
        ident = _record_ident(victim)
        sender = stage.actor("send", "rpz-sender", name=b"fx-rpz-sender", how="kill", pid=victim.pid,
                             sig=int(signal.SIGKILL), times=2, between="zombie")
        sender.ready()
        _record_ident(sender)
        sender.go()
        result = sender.done()
        sender.wait_exit()
        victim.expect_killed()
        if result["results"] != [0, 0]:
            raise StageError("the kill and the kill of the zombie returned %s" % result["results"])
        kills.append(expect(ident, sender_ident(sender), "kill", "user", self.chain(), count=2))

        link = stage.sleeper_link("fx-tmo-victim")
        timeout = stage.popen(["/usr/bin/timeout", "-s", "KILL", "1", link, "300"])
        command = wait_for(lambda: _child_named(timeout.pid, b"fx-tmo-victim"), "timeout's command")
        timeout_ident = identity(timeout.pid)
        command_ident = identity(command)
        stage.adopted.add(command)
        rc = timeout.wait(timeout=30)
        status = stage.reap_adopted(command)
        if rc != -signal.SIGKILL or status is None or os.WTERMSIG(status) != signal.SIGKILL:
            raise StageError("timeout rc %s, command status %r" % (rc, status))
        timeout_ident["exited"] = True
        kills.append(expect(command_ident, timeout_ident, "kill", "user", self.chain(), count=2))
        kills.append(expect(dict(timeout_ident), timeout_ident, "kill", "user", self.chain(),
                            syscall={"pid": 0}))
        return kills


def _child_named(parent, comm):
    raw = read_file("/proc/%d/task/%d/children" % (parent, parent)) or b""
    for pid in raw.split():
        if (stat_of(int(pid)) or {}).get("comm") == comm:
            return int(pid)
    return None


CASES = [KillSyscalls, ThreadSender, ThreadForks, ThreadVictim, CgroupKill, OomKill, ParentDeath, RlimitCpu,
         PidNamespace, Subreaper, PidReuse, HostileNames, RepeatedSend]
CASE_NAMES = [case.name for case in CASES]
ARMED_SIGNALS = sorted({int(sig) for case in CASES for sig in case.signals})


def _window():
    return boot_ns(), time.time_ns()


def run_cases(stage, prepared):
    """Run every case after arming; returns {case name: truth}. A failing case records its error and the
    others still run."""
    truths = {}
    for case in prepared:
        boot0, real0 = _window()
        truth = {"case": case.name, "kills": [], "error": getattr(case, "prepare_error", None)}
        if truth["error"] is None:
            try:
                truth["kills"] = case.run()
            except Exception as exc:  # recorded; the test for this case fails with it
                truth["error"] = "%s: %s" % (type(exc).__name__, exc)
        boot1, real1 = _window()
        truth["window"] = {"boot_ns": [boot0, boot1], "real_ns": [real0, real1]}
        truths[case.name] = truth
    return truths


def prepare_cases(stage):
    prepared = []
    for cls in CASES:
        case = cls(stage)
        if case.pre_arm:
            try:
                case.prepare()
            except Exception as exc:
                case.prepare_error = "before arming: %s: %s" % (type(exc).__name__, exc)
        prepared.append(case)
    return prepared


# ================================================================ the checker

MECHANISM_EVIDENCE = {
    "kill": "ftrace:sys_enter_kill",
    "tkill": "ftrace:sys_enter_tkill",
    "tgkill": "ftrace:sys_enter_tgkill",
    "pidfd_send_signal": "ftrace:sys_enter_pidfd_send_signal",
    "rt_sigqueueinfo": "ftrace:sys_enter_rt_sigqueueinfo",
    "rt_tgsigqueueinfo": "ftrace:sys_enter_rt_tgsigqueueinfo",
    "cgroup_kill": ("ftrace:sys_enter_openat(cgroup.kill)", "ftrace:no_kill_syscall"),
    "pdeath_signal": "ftrace:sched_process_exit",
    "oom_kill": "ftrace:mark_victim",
}


def _same_exe(reported, expected):
    if reported is None or expected is None:
        return reported == expected
    return os.path.realpath(reported) == os.path.realpath(expected)


def _short(record):
    if record is None:
        return "null"
    return "%s[%s/%s] exe=%s exited=%s" % (record.get("comm"), record.get("pid"), record.get("tid"),
                                          record.get("exe"), record.get("exited"))


def describe_kill(kill):
    chain = " <- ".join("%s[%s]%s" % (a.get("comm"), a.get("pid"), "(exited)" if a.get("exited") else "")
                        for a in kill.get("ancestry") or [])
    return ("%s %s victim=%s sender=%s mechanism=%s origin=%s count=%s evidence=%s syscall=%s trigger=%s "
            "oom=%s ancestry=%s gaps=%s" % (
                kill.get("time"), (kill.get("signal") or {}).get("name"), _short(kill.get("victim")),
                _short(kill.get("sender")), kill.get("mechanism"), kill.get("origin"), kill.get("count"),
                kill.get("evidence"), kill.get("syscall"), _short(kill.get("trigger")) if kill.get("trigger") else None,
                kill.get("oom"), chain, kill.get("gaps")))


# Light precision names these families where the signal alone cannot tell the mechanisms apart.
FAMILIES = ("user_signal", "thread_signal", "queued_signal")


def _mechanism_problem(kill, want, precise):
    """Syscall precision names the exact mechanism; light names it, or an honest family that includes it."""
    got = kill["mechanism"]
    if got == want["mechanism"]:
        return None
    candidates = kill.get("mechanism_candidates") or []
    if not precise and (got in FAMILIES or got == "kernel") and want["mechanism"] in candidates:
        return None
    return "mechanism %r (candidates %r), expected %r%s" % (got, candidates, want["mechanism"],
                                                            "" if precise else " or a family that includes it")


def _evidence_problems(kill, want, precise):
    evidence = kill.get("evidence") or []
    bad = []
    if "ftrace:signal_generate" not in evidence:
        bad.append("evidence %r lacks ftrace:signal_generate" % evidence)
    needed = MECHANISM_EVIDENCE.get(want["mechanism"]) if kill["mechanism"] == want["mechanism"] else None
    if needed and not (precise or want["mechanism"] in ("pdeath_signal", "oom_kill")):
        needed = None  # light: only what the signal itself tells has an event of its own
    if needed and not set((needed,) if isinstance(needed, str) else needed) & set(evidence):
        bad.append("evidence %r lacks %s" % (evidence, needed))
    if want["mechanism"].startswith("rlimit") and not any("rlimit" in e for e in evidence):
        bad.append("evidence %r names no CPU-time limit" % evidence)
    return bad


def check_case(kills, truth, mode=("ftrace",), clock_window=None, precision="syscall"):
    """Problems (strings) in `kills` (report kill dicts) against one case's truth. Empty when right.

    mode: the armed sources; precision: the trace's ("light" or "syscall"). clock_window: (earliest, latest)
    ISO strings the kill times must fall in.
    """
    precise = precision == "syscall"
    problems = []
    if truth.get("error"):
        return ["staging failed: %s" % truth["error"]]
    with_ftrace = "ftrace" in mode
    for want in truth["kills"]:
        label = "%s: SIG%s to %s[%d/%d]" % (truth["case"], signal.Signals(want["signal"]).name[3:],
                                            want["victim"]["comm"], want["victim"]["pid"], want["victim"]["tid"])
        found = [k for k in kills if k["victim"]["pid"] == want["victim"]["pid"]
                 and k["signal"]["number"] == want["signal"]]
        if not with_ftrace and not want["audit_visible"]:
            # Audit cannot see this mechanism: no record, or an honest "unknown" with a reason.
            for kill in found:
                if kill["mechanism"] != "unknown" or not kill["gaps"]:
                    problems.append("%s: audit alone cannot see this, yet the report says: %s"
                                    % (label, describe_kill(kill)))
                if kill.get("sender") is not None and want["sender"] is not None \
                        and kill["sender"]["pid"] != want["sender"]["pid"]:
                    problems.append("%s: wrong sender %s" % (label, _short(kill["sender"])))
            continue
        if len(found) != 1:
            problems.append("%s: expected one record, found %d%s" % (
                label, len(found), "".join("\n    " + describe_kill(k) for k in found)))
            if not found:
                continue
        kill = found[0]
        bad = []
        got_victim = kill["victim"]
        if got_victim.get("tid") != want["victim"]["tid"]:
            bad.append("victim.tid %r, expected %r" % (got_victim.get("tid"), want["victim"]["tid"]))
        if got_victim.get("comm") != want["victim"]["comm"]:
            bad.append("victim.comm %r, expected %r" % (got_victim.get("comm"), want["victim"]["comm"]))
        if got_victim.get("exited") is not True:
            bad.append("victim.exited %r" % got_victim.get("exited"))
        if kill["origin"] != want["origin"]:
            bad.append("origin %r, expected %r" % (kill["origin"], want["origin"]))
        wrong = _mechanism_problem(kill, want, precise or "audit" in mode and want["audit_visible"])
        if wrong:
            bad.append(wrong)
        count = kill.get("count")
        if want["count"] == 1 and count != 1 or want["count"] > 1 and (count or 0) < want["count"]:
            bad.append("count %r, expected %s%d" % (count, "" if want["count"] == 1 else ">=", want["count"]))
        evidence = kill.get("evidence") or []
        if with_ftrace:
            bad.extend(_evidence_problems(kill, want, precise))
        if "audit" in mode and want["audit_visible"] and not any(e.startswith("audit:") for e in evidence):
            bad.append("evidence %r has no audit event" % evidence)
        # sender
        sender = kill.get("sender")
        if want["sender"] is None:
            if sender is not None:
                bad.append("sender %s, expected null (the kernel sent it)" % _short(sender))
        elif sender is None:
            bad.append("sender null, expected %s" % _short(want["sender"]))
        else:
            for key in ("pid", "comm", "exited"):
                if sender.get(key) != want["sender"][key]:
                    bad.append("sender.%s %r, expected %r" % (key, sender.get(key), want["sender"][key]))
            want_tid = want["sender"]["tid"] if with_ftrace else None
            if sender.get("tid") != want_tid:
                bad.append("sender.tid %r, expected %r" % (sender.get("tid"), want_tid))
            if not _same_exe(sender.get("exe"), want["sender"]["exe"]):
                bad.append("sender.exe %r, expected %r" % (sender.get("exe"), want["sender"]["exe"]))
            # ancestry, parent first: the expected prefix, ending at this test process
            ancestry = kill.get("ancestry") or []
            for depth, anc in enumerate(want["ancestry"]):
                if depth >= len(ancestry):
                    bad.append("ancestry has %d entries, expected at least %d" % (len(ancestry), len(want["ancestry"])))
                    break
                got = ancestry[depth]
                for key in ("pid", "comm", "exited"):
                    if got.get(key) != anc[key]:
                        bad.append("ancestor %d: %s %r, expected %r" % (depth + 1, key, got.get(key), anc[key]))
                if not _same_exe(got.get("exe"), anc["exe"]):
                    bad.append("ancestor %d: exe %r, expected %r" % (depth + 1, got.get("exe"), anc["exe"]))
            if want["ancestry"] and ancestry and ancestry[-1].get("pid") != 1:
                bad.append("the chain stops at %s[%s], not pid 1" % (ancestry[-1].get("comm"), ancestry[-1].get("pid")))
        if want["sender"] is None and kill.get("ancestry"):
            bad.append("a kernel send has an ancestry: %s" % kill["ancestry"])
        # case-specific facts
        if "trigger_pid" in want:
            trigger = kill.get("trigger")
            if not trigger or trigger.get("pid") != want["trigger_pid"]:
                bad.append("trigger %s, expected pid %d" % (_short(trigger), want["trigger_pid"]))
        if "oom_min_anon_rss_kb" in want:
            oom = kill.get("oom") or {}
            if (oom.get("anon_rss_kb") or 0) < want["oom_min_anon_rss_kb"]:
                bad.append("oom %r: expected anon_rss_kb >= %d" % (oom, want["oom_min_anon_rss_kb"]))
            if oom.get("cgroup") != want["oom_cgroup"]:
                bad.append("oom.cgroup %r, expected the memory cgroup %r" % (oom.get("cgroup"), want["oom_cgroup"]))
        if "cgroup" in want:
            # the move into the cgroup was traced: the path is known; audit alone cannot know it
            allowed = (want["cgroup"],) if with_ftrace else (None, want["cgroup"])
            if got_victim.get("cgroup") not in allowed:
                bad.append("victim.cgroup %r, but it was in %r when killed" % (got_victim.get("cgroup"),
                                                                              want["cgroup"]))
        if "syscall" in want and with_ftrace and precise:
            syscall = kill.get("syscall") or {}
            for key, value in want["syscall"].items():
                if syscall.get(key) != value:
                    bad.append("syscall.%s %r, expected %r" % (key, syscall.get(key), value))
        if "sender_ns_pid" in want and sender is not None:
            for who, got, expected in (("sender", sender, want["sender_ns_pid"]),
                                       ("victim", got_victim, want["victim_ns_pid"])):
                if got.get("ns_pid") not in ((expected,) if want["ns_known"] else (None, expected)):
                    bad.append("%s.ns_pid %r, expected %s" % (who, got.get("ns_pid"), expected if want["ns_known"]
                                                               else "%d or unknown" % expected))
        if "reused_by" in want:
            text = json.dumps(kill)
            if want["reused_by"]["comm"] in text:
                bad.append("the newcomer %r that reused pid %d appears in the record"
                           % (want["reused_by"]["comm"], want["reused_by"]["pid"]))
        if clock_window is not None and kill.get("time") is not None:
            if not clock_window[0] <= kill["time"] <= clock_window[1]:
                bad.append("time %s is outside the case's window %s .. %s" % (kill["time"], *clock_window))
        if bad:
            problems.append("%s:\n    - %s\n    report: %s" % (label, "\n    - ".join(bad), describe_kill(kill)))
    return problems


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "actor":
        sys.exit(actor_main(sys.argv[2]))
    sys.exit("usage: forensics_stage.py actor SPEC_JSON (the conductor is imported by test_forensics.py)")
