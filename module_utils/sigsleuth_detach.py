# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# A process detached from the Ansible connection, and its identity. Standard library only; Python 3.9+.
"""Start a function as a daemon (as ansible's async_wrapper does), and stop it only by its identity.

The module forks, the child starts a new session and forks again, and the grandchild closes every inherited
file descriptor (stdin, stdout and stderr go to /dev/null), so the SSH session - or the local connection's
pipes - can end while it runs. Everything it will ever need must be imported before the fork: AnsiballZ
removes its temporary files when the module exits. The grandchild tells the module through a pipe when it
is ready (``ready``) or why it could not start (``error: ...``).

Identity is (pid, start time in clock ticks since boot, from /proc/PID/stat): a pid alone may belong to
somebody else by now. A process is signalled only after its start time was read again and matched.
"""

from __future__ import annotations

import os
import select
import signal
import time
import traceback

from ansible.module_utils.sigsleuth_procfs import is_zombie, read_stat
from ansible.module_utils.sigsleuth_vocabulary import PROC

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
_MAX_FD = 65536


class DetachError(Exception):
    """The detached process could not be started or stopped; the message says why."""


def identity(pid, proc=PROC):
    """(pid, start ticks) of a live, non-zombie process, or None."""
    stat = read_stat(pid, proc)
    if stat is None or is_zombie(pid, proc):
        return None
    return pid, stat[2]


def is_alive(pid, start_ticks, proc=PROC):
    """True when pid is still the very process that started at start_ticks (and not a zombie)."""
    if not isinstance(pid, int) or pid <= 1 or start_ticks is None:
        return False
    return identity(pid, proc) == (pid, start_ticks)


def _child(target, write_fd):
    """In the grandchild: detach from everything inherited, run target(ready), never return."""
    status = 0
    try:
        os.chdir("/")
        os.umask(0o077)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2 and null != write_fd:
            os.close(null)
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, _MAX_FD)

        def ready():
            os.write(write_fd, b"ready")
            os.close(write_fd)
        target(ready)
    except BaseException as exc:  # the module must hear why; there is nobody else to tell
        status = 1
        try:
            text = str(exc) or traceback.format_exc()
            message = ("error: %s" % text).encode("utf-8", "backslashreplace")
            os.write(write_fd, message[:4000])
        except OSError:
            pass
    finally:
        os._exit(status)


def start_detached(target, timeout=READY_TIMEOUT_S):
    """Run target(ready) in a detached grandchild; returns (pid, start ticks) once it called ready().

    Raises DetachError with the grandchild's own message when it failed before being ready."""
    read_fd, write_fd = os.pipe()
    pid_read, pid_write = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_fd)
            os.close(pid_read)
            os.setsid()
            grandchild = os.fork()
            if grandchild:
                os.write(pid_write, b"%d" % grandchild)
                os._exit(0)
            os.close(pid_write)
            _child(target, write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    os.close(pid_write)
    os.waitpid(child, 0)
    try:
        grandchild = int(os.read(pid_read, 64) or b"0")
        message = _read_until_closed(read_fd, timeout)
    finally:
        os.close(pid_read)
        os.close(read_fd)
    if message != b"ready":
        if grandchild and message == b"":
            raise DetachError("the drain (pid %d) did not get ready within %.0f s" % (grandchild, timeout))
        raise DetachError(message.decode("utf-8", "replace").replace("error: ", "", 1) or "the drain exited")
    found = identity(grandchild)
    if found is None:
        raise DetachError("the drain (pid %d) exited right after it was ready" % grandchild)
    return found


def _read_until_closed(fd, timeout):
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        ready, _w, _x = select.select([fd], [], [], left)
        if not ready:
            return b""
        data = os.read(fd, 4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def stop(pid, start_ticks, timeout=STOP_TIMEOUT_S, proc=PROC):
    """SIGTERM the process of that identity and wait for it to go; True when it was running.

    SIGKILL (identity checked again) only when SIGTERM did not end it within timeout; raises DetachError then,
    as its last state may not have been flushed."""
    if not is_alive(pid, start_ticks, proc):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid, start_ticks, proc):
            return True
        time.sleep(0.02)
    if is_alive(pid, start_ticks, proc):
        os.kill(pid, signal.SIGKILL)
        raise DetachError("pid %d did not stop within %.0f s of SIGTERM and was killed: its last state may not "
                          "have been flushed" % (pid, timeout))
    return True


def request(pid, start_ticks, signum, proc=PROC):
    """Send signum to the process of that identity only; True when it was sent."""
    if not is_alive(pid, start_ticks, proc):
        return False
    os.kill(pid, signum)
    return True
