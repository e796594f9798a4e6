"""The one lock that serialises everything that arms tracing or audit on this machine.

Tests (and helpers) that load audit rules, start/stop auditd or create a tracefs instance hold it:

    from tests.lock import armed_lock   # or: from lock import armed_lock
    with armed_lock():
        ...

From a shell: ``flock /run/sigsleuth-test.lock CMD``.
"""

import contextlib
import fcntl
import os

LOCK_PATH = "/run/sigsleuth-test.lock"


@contextlib.contextmanager
def armed_lock(path=LOCK_PATH):
    """Hold an exclusive flock on ``path`` (blocking) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
