"""An SSH test fleet on this machine: several sshd "hosts" on loopback addresses, for the fleet tests and bench.

Each host is its own `sshd -D` (our child) on its own loopback address (127.0.0.2, 127.0.0.3, ...) and a free
port, with its own host key, a test-owned AuthorizedKeysFile (never root's own ~/.ssh) holding one generated
client key, `UsePAM no` and its own PidFile. A host can be reached as root, or as an unprivileged test user
with sudo become (a NOPASSWD rule in a test-owned /etc/sudoers.d file), with any target Python; a host can also
be unreachable (an address with nothing listening). Everything lives under one directory in /run (0755, so
the test user's sshd can read its authorized keys) and is torn down by `SSHFleet.stop()`: the SSH control
masters, the sshd processes and their sessions, the user, the sudoers file, the keys and known_hosts.

The hosts share one kernel, so the inventory gives each its own `sigsleuth_instance` and `sigsleuth_state_dir`
and lets at most one of them join audit; the product's own defaults stay per host.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from sigsleuth_support import (
    PlaybookRun, ROOT, ansible_playbook_path, pids_matching, tracefs_instances, tracefs_mounts,
)

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
PRIVSEP_DIR = "/run/sshd"
SUDOERS_DIR = "/etc/sudoers.d"
TRACEFS = "/sys/kernel/tracing"
UNREACHABLE_PORT = 9  # discard: nothing listens there on a loopback test address
READY_TIMEOUT_S = 15.0
SESSION_GRACE_S = 5.0


class FleetError(Exception):
    """The fleet could not be set up; the message says what and why."""


def python39():
    """pyenv's Python 3.9 (the oldest target Python sigsleuth supports), or None."""
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9.*/bin/python")))
    return found[-1] if found else None


def free_port(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def run_checked(argv, what, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise FleetError("%s failed (rc %d): %s\n%s" % (what, proc.returncode, " ".join(argv),
                                                        (proc.stderr or proc.stdout).strip()))
    return proc


def descendants(pid):
    """Every live process below pid (sshd's per-connection children and their sessions)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, "rb") as handle:
                    parents[int(name)] = int(handle.read().rpartition(b")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


class FleetHost:
    """One test host: how Ansible reaches it and the sigsleuth variables of its own."""

    def __init__(self, name, address, user="root", become=False, python="/usr/bin/python3", reachable=True,
                 audit=False):
        self.name = name
        self.address = address
        self.user = user
        self.become = become
        self.python = python
        self.reachable = reachable
        self.audit = audit
        self.port = None
        self.instance = None
        self.state_dir = None
        self.sshd = None

    def inventory_vars(self, fleet):
        host = {
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_python_interpreter": self.python,
            "sigsleuth_instance": self.instance,
            "sigsleuth_state_dir": self.state_dir,
            "sigsleuth_audit_where_running": self.audit,
        }
        if self.become:
            host.update(ansible_become=True, ansible_become_method="sudo")
        if fleet.client_logs:
            host["ansible_ssh_extra_args"] = "-o LogLevel=VERBOSE -E %s" % fleet.client_log(self)
        return host


class SSHFleet:
    """Start with `SSHFleet(hosts).start()`; always `stop()` (idempotent, also after a failed start)."""

    def __init__(self, hosts, prefix="fleet", client_logs=False):
        """client_logs: each host's ssh client logs at VERBOSE to <base>/ssh_<host>.log, which holds the bytes
        each connection moved ("Transferred: sent N, received M bytes") once its control master exits."""
        self.hosts = list(hosts)
        self.client_logs = client_logs
        self.token = uuid.uuid4().hex[:6]
        self.prefix = prefix
        self.user = "sigsleuth-%s-%s" % (prefix, self.token)
        self.base = None
        self.sudoers = None
        self.user_created = False
        self.privsep_created = False
        self.tracefs_mounted = None
        self.known_hosts_before = self._root_ssh_state()
        self.stopped = False

    # ------------------------------------------------------------ set-up

    def start(self):
        for path in (SSHD, SSH_KEYGEN):
            if not os.access(path, os.X_OK):
                raise FleetError("%s not found: install openssh-server (.ci/run does)" % path)
        if os.geteuid() != 0:
            raise FleetError("the SSH test fleet runs sshd and creates a user: run as root")
        self._share_one_tracefs()
        self.base = tempfile.mkdtemp(prefix="sigsleuth-%s-" % self.prefix, dir="/run")
        os.chmod(self.base, 0o755)
        os.mkdir(self.path("cp"), 0o700)
        if not os.path.isdir(PRIVSEP_DIR):
            os.mkdir(PRIVSEP_DIR, 0o755)
            self.privsep_created = True
        self._keygen(self.path("client_key"))
        with open(self.path("client_key.pub")) as handle:
            client_public = handle.read()
        with open(self.path("authorized_keys"), "w") as handle:
            handle.write(client_public)
        os.chmod(self.path("authorized_keys"), 0o644)
        if any(host.user != "root" for host in self.hosts):
            self._create_user()
        known = []
        for host in self.hosts:
            host.instance = "sigsleuth-%s-%s-%s" % (self.prefix, self.token, host.name)
            host.state_dir = "/var/lib/sigsleuth-%s-%s-%s" % (self.prefix, self.token, host.name)
            if host.user != "root":
                host.user = self.user
            if not host.reachable:
                host.port = UNREACHABLE_PORT
                continue
            known.append(self._start_sshd(host))
        with open(self.path("known_hosts"), "w") as handle:
            handle.writelines(known)
        for host in self.hosts:
            if host.reachable:
                self._wait_ready(host)
        self._write_inventory()
        return self

    def _share_one_tracefs(self):
        """The hosts share this kernel, and each would mount tracefs if it found it unmounted: racing arms
        would stack mounts, and the host that mounted it would unmount it under the others' instances. So the
        fleet mounts it once for all of them (and unmounts it at stop), as each real host has its own."""
        if tracefs_mounts():
            return
        run_checked(["mount", "-t", "tracefs", "nodev", TRACEFS], "mounting tracefs for the fleet")
        self.tracefs_mounted = TRACEFS

    def path(self, *names):
        return os.path.join(self.base, *names)

    def _keygen(self, path):
        run_checked([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "sigsleuth-" + self.prefix, "-f", path],
                    "generating the key " + path)

    def _create_user(self):
        home = self.path("home")
        # '*' rather than useradd's locked '!': under UsePAM no, sshd refuses a locked account even by key.
        run_checked(["useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", "--password", "*",
                     "--user-group", self.user], "creating the test user " + self.user)
        self.user_created = True
        self.sudoers = os.path.join(SUDOERS_DIR, "sigsleuth-%s-%s" % (self.prefix, self.token))
        staged = self.path("sudoers")
        with open(staged, "w") as handle:
            handle.write("%s ALL=(ALL) NOPASSWD: ALL\n" % self.user)
        os.chmod(staged, 0o440)
        run_checked(["visudo", "-c", "-q", "-f", staged], "checking the test sudoers rule")
        shutil.copy(staged, self.sudoers)
        os.chmod(self.sudoers, 0o440)

    def _sshd_config(self, host):
        return "\n".join([
            "ListenAddress %s:%d" % (host.address, host.port),
            "HostKey %s" % self.path("host_key_" + host.name),
            "PidFile %s" % self.path("sshd_%s.pid" % host.name),
            "AuthorizedKeysFile %s" % self.path("authorized_keys"),
            "AllowUsers %s" % host.user,
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes yes",
            # forks >= 8 open their connections at once; ControlMaster multiplexes each host's tasks.
            "MaxStartups 64:30:128",
            "MaxSessions 64",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ])

    def _start_sshd(self, host):
        host_key = self.path("host_key_" + host.name)
        self._keygen(host_key)
        host.port = free_port(host.address)
        config = self.path("sshd_%s.conf" % host.name)
        with open(config, "w") as handle:
            handle.write(self._sshd_config(host))
        proc = subprocess.run([SSHD, "-t", "-f", config], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FleetError("sshd -t rejects the test config for %s (%s): %s" % (
                host.name, config, (proc.stderr or proc.stdout).strip()))
        log = open(self.path("sshd_%s.log" % host.name), "wb")
        try:
            host.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", config], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        finally:
            log.close()
        with open(host_key + ".pub") as handle:
            key_type, key = handle.read().split()[:2]
        return "[%s]:%d %s %s\n" % (host.address, host.port, key_type, key)

    def _wait_ready(self, host):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if host.sshd.poll() is not None:
                raise FleetError("sshd for %s exited with %s:\n%s" % (host.name, host.sshd.returncode,
                                                                      self.sshd_log(host)))
            try:
                with socket.create_connection((host.address, host.port), timeout=1.0) as conn:
                    if conn.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise FleetError("sshd for %s does not answer on %s:%d:\n%s" % (
                    host.name, host.address, host.port, self.sshd_log(host)))
            time.sleep(0.05)

    def sshd_log(self, host):
        try:
            with open(self.path("sshd_%s.log" % host.name)) as handle:
                return handle.read()[-3000:]
        except OSError:
            return ""

    def client_log(self, host):
        return self.path("ssh_%s.log" % host.name)

    def close_masters(self):
        """End every SSH control master now (each playbook run then starts from a fresh connection)."""
        self._close_masters()

    def ssh_args(self):
        return " ".join([
            "-o UserKnownHostsFile=%s" % self.path("known_hosts"),
            "-o GlobalKnownHostsFile=/dev/null",
            "-o IdentitiesOnly=yes",
            "-o ConnectTimeout=10",
        ])

    def _write_inventory(self):
        inventory = {"all": {
            "vars": {"ansible_ssh_private_key_file": self.path("client_key"),
                     "ansible_ssh_common_args": self.ssh_args()},
            "hosts": {host.name: host.inventory_vars(self) for host in self.hosts},
        }}
        with open(self.path("inventory.json"), "w") as handle:
            json.dump(inventory, handle, indent=1)

    @property
    def inventory(self):
        return self.path("inventory.json")

    def host(self, name):
        return next(host for host in self.hosts if host.name == name)

    # ------------------------------------------------------------ running playbooks

    def env(self):
        return {"ANSIBLE_SSH_CONTROL_PATH_DIR": self.path("cp"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}

    def playbook_argv(self, name, *args, forks=8):
        return [ansible_playbook_path(), os.path.join("playbooks", name), "-i", self.inventory,
                "--forks", str(forks)] + list(args)

    def run(self, name, *args, forks=8, timeout=900, env=None):
        """Run playbooks/<name> over the fleet; returns a PlaybookRun (the caller checks rc and the recap)."""
        argv = self.playbook_argv(name, *args, forks=forks)
        proc = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, **self.env(), **(env or {})),
                              capture_output=True, text=True, timeout=timeout)
        return PlaybookRun(argv, proc)

    # ------------------------------------------------------------ teardown

    def stop(self):
        """Tear everything down; returns the list of problems (empty when all went)."""
        if self.stopped:
            return []
        self.stopped = True
        problems = []
        if self.base:
            self._close_masters()
        for host in self.hosts:
            problems += self._stop_sshd(host)
        if self.sudoers and os.path.exists(self.sudoers):
            os.unlink(self.sudoers)
        if self.user_created:
            proc = subprocess.run(["userdel", self.user], capture_output=True, text=True)
            if proc.returncode != 0:
                problems.append("userdel %s: %s" % (self.user, proc.stderr.strip()))
        if self.privsep_created and not pids_matching(lambda pid, comm, args: comm == "sshd"):
            shutil.rmtree(PRIVSEP_DIR, ignore_errors=True)
        problems += self._remove_leftover_arming()
        if self.tracefs_mounted:
            proc = subprocess.run(["umount", self.tracefs_mounted], capture_output=True, text=True)
            if proc.returncode != 0:
                problems.append("umount %s: %s" % (self.tracefs_mounted, proc.stderr.strip()))
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
        if self._root_ssh_state() != self.known_hosts_before:
            problems.append("root's ~/.ssh changed during the fleet's run")
        return problems

    def _close_masters(self):
        for socket_path in glob.glob(self.path("cp", "*")):
            subprocess.run(["ssh", "-o", "ControlPath=" + socket_path, "-O", "exit", "fleet"],
                           capture_output=True, timeout=30)

    def _stop_sshd(self, host):
        if host.sshd is None:
            return []
        # The masters are gone; each connection's sshd needs a moment to notice and exit.
        deadline = time.monotonic() + SESSION_GRACE_S
        while descendants(host.sshd.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        sessions = descendants(host.sshd.pid)
        if host.sshd.poll() is None:
            host.sshd.terminate()
        try:
            host.sshd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            host.sshd.kill()
            host.sshd.wait()
        left = []
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
                left.append(pid)
            except ProcessLookupError:
                pass
        host.sshd = None
        return ["sshd sessions of %s outlived their masters: %s" % (host.name, left)] if left else []

    def _remove_leftover_arming(self):
        """Last resort after a failed disarm: our own instances and state dirs only (named by our token)."""
        problems = []
        mark = "sigsleuth-%s-%s-" % (self.prefix, self.token)
        for point, names in tracefs_instances().items():
            for name in names or ():
                if name.startswith(mark):
                    problems.append("tracefs instance %s left behind" % name)
                    try:
                        os.rmdir(os.path.join(point, "instances", name))
                    except OSError as exc:
                        problems.append("cannot remove it: %s" % exc)
        for path in glob.glob("/var/lib/" + mark + "*"):
            problems.append("state dir %s left behind" % path)
            shutil.rmtree(path, ignore_errors=True)
        return problems

    @staticmethod
    def _root_ssh_state():
        path = os.path.expanduser("~/.ssh")
        if not os.path.isdir(path):
            return None
        state = {}
        for name in sorted(os.listdir(path)):
            try:
                with open(os.path.join(path, name), "rb") as handle:
                    state[name] = handle.read()
            except OSError:
                state[name] = None
        return state
