#!/usr/bin/env python3
"""Audit log parse benchmark: sigsleuth's parser against ``ausearch -if FILE --raw`` on one generated file.

Generates an ENRICHED audit.log (default ~220 MB) of realistic events in a temp dir -- exec events
(SYSCALL, BPRM_FCAPS, EXECVE, CWD, two PATH, PROCTITLE), fork events, kill events with OBJ_PID, a user's
own file-watch events with another key, user-space records from other tools -- then runs each parser in
its own child process and prints throughput (MB/s), the ratio, and each child's peak RSS
(``resource.getrusage(RUSAGE_CHILDREN)``, measured in a fresh intermediate process per run).

    python3 bench/bench_audit.py [--size-mb 220] [--no-eoe] [--keep FILE]

auditd writes no EOE records to its log (the kernel emits them; auditd drops them), so by default the
file has none and events are closed by the parser's serial/time window; ``--eoe`` adds them.
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE_UTILS = os.path.join(HERE, "..", "module_utils")

GS = "\x1d"
IDS = 'AUID="alice" UID="root" GID="root" EUID="root" SUID="root" FSUID="root" EGID="root" SGID="root" FSGID="root"'
PROGRAMS = [
    ("/usr/bin/bash", "bash", ["bash", "-c", "for i in 1 2 3; do /bin/true; done"]),
    ("/usr/bin/sleep", "sleep", ["sleep", "300"]),
    ("/usr/bin/python3.11", "python3", ["/usr/bin/python3", "-m", "http.server", "8080"]),
    ("/usr/bin/curl", "curl", ["curl", "-fsS", "http://127.0.0.1:8080/health"]),
    ("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "cc1", ["cc1", "-quiet", "-imultiarch", "x86_64-linux-gnu",
                                                     "main.c", "-dumpbase", "main.c", "-O2", "-o", "/tmp/cc.s"]),
    ("/usr/bin/kill", "kill", ["/usr/bin/kill", "-9", "4242"]),
    ("/opt/my agent/bin/agent", "agent worker", ["/opt/my agent/bin/agent", "--config=/etc/agent.yml"]),
]


def hexed(text):
    return text.encode().hex().upper()


def value(text):
    if any(c in text for c in ' "') or any(ord(c) < 0x21 or ord(c) > 0x7E for c in text):
        return hexed(text)
    return '"%s"' % text


class Generator:
    def __init__(self, eoe):
        self.serial = 1000
        self.time = 1795600000.0
        self.pid = 3000
        self.eoe = eoe
        self.rng = random.Random(7)

    def stamp(self):
        self.serial += 1
        self.time += 0.0007
        return "%.3f:%d" % (self.time, self.serial)

    def syscall(self, stamp, nr, name, pid, ppid, exe, comm, key, a=("0", "0", "0", "0"), exit_="0", items=0):
        return ("type=SYSCALL msg=audit(%s): arch=c000003e syscall=%d success=yes exit=%s a0=%s a1=%s a2=%s a3=%s "
                "items=%d ppid=%d pid=%d auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 "
                "tty=pts0 ses=3 comm=%s exe=%s key=%s%sARCH=x86_64 SYSCALL=%s %s\n"
                % (stamp, nr, exit_, a[0], a[1], a[2], a[3], items, ppid, pid, value(comm), value(exe),
                   '"%s"' % key if key else "(null)", GS, name, IDS))

    def tail(self, stamp, argv):
        title = "\0".join(argv)[:128]
        out = "type=PROCTITLE msg=audit(%s): proctitle=%s\n" % (stamp, hexed(title) if "\0" in title else value(title))
        if self.eoe:
            out += "type=EOE msg=audit(%s): \n" % stamp
        return out

    def exec_event(self):
        exe, comm, argv = self.rng.choice(PROGRAMS)
        self.pid += 1
        s = self.stamp()
        out = self.syscall(s, 59, "execve", self.pid, self.pid - 7, exe, comm, "sigsleuth_exec",
                           ("55dcf88538a0", "55dcf88538f8", "55dd2ab6fb98", "8"), items=2)
        out += ("type=BPRM_FCAPS msg=audit(%s): fver=0 fp=0 fi=0 fe=0 old_pp=000001fffeffffff old_pi=0 "
                "old_pe=000001fffeffffff old_pa=0 pp=000001fffeffffff pi=0 pe=000001fffeffffff pa=0 frootid=0\n" % s)
        out += "type=EXECVE msg=audit(%s): argc=%d %s\n" % (
            s, len(argv), " ".join("a%d=%s" % (i, value(arg)) for i, arg in enumerate(argv)))
        out += "type=CWD msg=audit(%s): cwd=%s\n" % (s, value("/home/alice/src/project"))
        for item, name in enumerate((exe, "/lib64/ld-linux-x86-64.so.2")):
            out += ("type=PATH msg=audit(%s): item=%d name=%s inode=%d dev=fe:00 mode=0100755 ouid=0 ogid=0 "
                    "rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0%s"
                    'OUID="root" OGID="root"\n' % (s, item, value(name), 260000 + item, GS))
        return out + self.tail(s, argv)

    def fork_event(self):
        s = self.stamp()
        parent = self.pid
        out = self.syscall(s, 56, "clone", parent, parent - 7, "/usr/bin/bash", "bash", "sigsleuth_fork",
                           ("1200011", "0", "0", "7f5abc605a10"), exit_=str(parent + 1))
        return out + self.tail(s, ["bash", "-c", "make -j2"])

    def kill_event(self):
        s = self.stamp()
        out = self.syscall(s, 62, "kill", self.pid, self.pid - 1, "/usr/bin/kill", "kill", "sigsleuth_kill",
                           ("%x" % (self.pid - 50), "9", "0", "7fb613dcdac0"))
        out += 'type=OBJ_PID msg=audit(%s): opid=%d oauid=-1 ouid=0 oses=-1 ocomm="sleep"%sOAUID="unset" OUID="root"\n' % (
            s, self.pid - 50, GS)
        return out + self.tail(s, ["/usr/bin/kill", "-9", str(self.pid - 50)])

    def watch_event(self):
        s = self.stamp()
        out = self.syscall(s, 257, "openat", self.pid, 1, "/usr/bin/vim.basic", "vim", "userwatch",
                           ("ffffff9c", "55d0c1a2b3c0", "241", "1b6"), exit_="3", items=2)
        out += 'type=CWD msg=audit(%s): cwd="/root"\n' % s
        out += ('type=PATH msg=audit(%s): item=0 name="/etc/" inode=2 dev=fe:00 mode=040755 ouid=0 ogid=0 rdev=00:00 '
                'nametype=PARENT cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0%sOUID="root" OGID="root"\n' % (s, GS))
        return out + self.tail(s, ["vim", "/etc/hosts"])

    def user_record(self):
        s = self.stamp()
        return ("type=USER_ACCT msg=audit(%s): pid=812 uid=0 auid=4294967295 ses=4294967295 subj=unconfined "
                "msg='op=PAM:accounting grantors=pam_permit acct=\"root\" exe=\"/usr/sbin/cron\" hostname=? addr=? "
                "terminal=cron res=success'%sUID=\"root\" AUID=\"unset\"\n" % (s, GS))

    def write(self, path, size):
        weighted = [self.exec_event] * 6 + [self.fork_event] * 2 + [self.kill_event, self.watch_event,
                                                                      self.user_record]
        written = 0
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("type=DAEMON_START msg=audit(%.3f:1): op=start ver=3.0.9 format=enriched "
                         "kernel=6.1.0 auid=4294967295 pid=700 uid=0 ses=4294967295 res=success%s"
                         'AUID="unset" UID="root"\n' % (self.time, GS))
            while written < size:
                block = "".join(self.rng.choice(weighted)() for _ in range(500))
                handle.write(block)
                written += len(block)
        return os.path.getsize(path)


CHILD_OURS = """
import sys, time
import ansible.module_utils
ansible.module_utils.__path__.append(%(module_utils)r)
from ansible.module_utils.sigsleuth_audit_log import AuditStats, iter_audit_events
stats = AuditStats()
count = kills = 0
for event in iter_audit_events([%(path)r], stats=stats):
    count += 1
    if event.signal is not None:
        kills += 1
print(count, kills, stats.events, stats.records, stats.malformed_lines, file=sys.stderr)
"""


def run_measured(argv):
    """Run argv in a fresh intermediate process; return (wall s, cpu s, peak RSS of argv in KiB, rc)."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter()\n"
             "rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
             "dt = time.perf_counter() - t\n"
             "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
             "print(dt, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, rc)\n")
    out = subprocess.run([sys.executable, "-c", probe] + argv, stdout=subprocess.PIPE, check=True,
                         universal_newlines=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), int(out[3])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=220)
    parser.add_argument("--eoe", action="store_true", help="write EOE records (auditd itself does not)")
    parser.add_argument("--keep", help="copy the generated file here")
    parser.add_argument("--python", default=sys.executable, help="interpreter for our parser")
    args = parser.parse_args()
    ausearch = shutil.which("ausearch") or "/usr/sbin/ausearch"
    work = tempfile.mkdtemp(prefix="sigsleuth-bench-")
    try:
        path = os.path.join(work, "audit.log")
        started = time.perf_counter()
        size = Generator(args.eoe).write(path, args.size_mb * 1_000_000)
        print("generated %s: %.1f MB in %.1f s (%s EOE records)" % (
            path, size / 1e6, time.perf_counter() - started, "with" if args.eoe else "no"))
        results = {}
        child = os.path.join(work, "ours.py")
        with open(child, "w") as handle:
            handle.write(CHILD_OURS % {"module_utils": os.path.abspath(MODULE_UTILS), "path": path})
        results["sigsleuth"] = run_measured([args.python, child])
        if os.path.exists(ausearch):
            results["ausearch"] = run_measured([ausearch, "-if", path, "--raw"])
        else:
            print("ausearch not installed (apt-get install auditd): only our parser measured")
        for name, (seconds, cpu, rss_kb, rc) in results.items():
            print("%-10s %7.1f MB/s wall (%6.2f s)  %7.1f MB/s cpu (%6.2f s)  peak RSS %7.1f MB  rc=%d" % (
                name, size / 1e6 / seconds, seconds, size / 1e6 / cpu, cpu, rss_kb / 1024, rc))
        if "ausearch" in results:
            ours, theirs = results["sigsleuth"], results["ausearch"]
            print("speed ratio sigsleuth/ausearch: %.2f wall, %.2f cpu  (peak RSS %.1f MB vs %.1f MB; file %.1f MB)" % (
                theirs[0] / ours[0], theirs[1] / ours[1], ours[2] / 1024, theirs[2] / 1024, size / 1e6))
        if args.keep:
            shutil.copy(path, args.keep)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
