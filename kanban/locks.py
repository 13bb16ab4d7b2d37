"""flock(2) locks on files: the one place kanban takes them.

A lock goes with its process (a crash, a kill -9 frees it), so a lock file left behind never
blocks anyone. Standard library only: git.py and the supervisor use it without GitPython.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def open_lock_file(path: Path, mode: int = 0o644) -> int:
    """PATH opened for locking, created if missing (never through a symbolic link)."""
    return os.open(path, OPEN_FLAGS, mode)


def acquire(fd: int, *, shared: bool = False, timeout: float | None = None) -> bool:
    """flock FD, shared or exclusive. TIMEOUT None waits as long as it takes, 0 tries once,
    otherwise polls until that many seconds have passed; False if it timed out.
    OSError where flock fails otherwise (a filesystem without flock)."""
    how = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if timeout is None:
        fcntl.flock(fd, how)  # Python retries it after a signal (PEP 475)
        return True
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            if exc.errno not in _BUSY:
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


@contextlib.contextmanager
def hold(path: Path, *, shared: bool = False, timeout: float | None = None, mode: int = 0o644) -> Iterator[bool]:
    """The lock on PATH while inside; yields False (holding nothing) if TIMEOUT passed first."""
    fd = open_lock_file(path, mode)
    try:
        yield acquire(fd, shared=shared, timeout=timeout)
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def is_held(path: Path) -> bool:
    """Whether some process holds an exclusive lock on PATH. Asked without writing: the file
    is opened read-only, never created (no file: nobody holds it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
