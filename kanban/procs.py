"""Process identity on Linux: a pid counts only together with its start time.

PIDs are reused, so every check and every signal goes through the start
time recorded when the process was launched (field 22 of /proc/PID/stat).
A zombie has exited; it counts as dead everywhere here.
"""

from __future__ import annotations

import os
import signal
import time
from collections import namedtuple
from pathlib import Path

_DEAD_STATES = (b"Z", b"X", b"x")


def _stat(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat; the command name may hold spaces and ')'."""
    try:  # os.open, not pathlib: a supervisor's sweep reads every process's stat
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    end = data.rfind(b")")
    return data[end + 1 :].split() if end >= 0 else None


def process_start_time(pid: int) -> int | None:
    """Start time of PID in clock ticks since boot, or None if there is none."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int | None, start_time: int | None) -> bool:
    """True if PID runs and is the same process that started at START_TIME."""
    if pid is None or start_time is None:
        return False
    fields = _stat(pid)
    if not fields:
        return False
    return fields[0] not in _DEAD_STATES and int(fields[19]) == start_time


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is PGID."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] not in _DEAD_STATES:
            found.append(int(entry.name))
    return found


def owned_group(pgid: int, leader_start: int | None) -> list[int]:
    """Live members of the group we started (leader pid == PGID, started at LEADER_START).

    While any process is in group PGID the kernel keeps the pid PGID reserved,
    so if PGID now names a different process, our group is gone.
    """
    now = process_start_time(pgid)
    if now is not None and now != leader_start:
        return []
    return group_members(pgid)


def signal_group(pgid: int, leader_start: int | None, sig: int) -> bool:
    """Send SIG to the group we started, if it still has live members: the one place kanban
    signals a process group, so a reused pgid (another program's group) is never hit."""
    if not owned_group(pgid, leader_start):
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_group(pgid: int, leader_start: int | None, grace: float, kill_limit: float = 2.0) -> None:
    """SIGTERM, up to GRACE for the group to go, then SIGKILL until nothing of it is left (at
    most KILL_LIMIT seconds). A zombie leader counts as gone, and keeps the pgid reserved."""
    if grace > 0 and signal_group(pgid, leader_start, signal.SIGTERM):
        end = time.monotonic() + grace
        while time.monotonic() < end and owned_group(pgid, leader_start):
            time.sleep(_STOP_STEP)
    end = time.monotonic() + kill_limit
    while signal_group(pgid, leader_start, signal.SIGKILL) and time.monotonic() < end:
        time.sleep(_STOP_STEP)


_STOP_STEP = 0.01  # stop_group's polling interval


def terminate(pid: int, start_time: int, sig: int = signal.SIGTERM) -> bool:
    """Signal one process after checking it is still the one we mean."""
    if not alive(pid, start_time):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def working_in(path: Path, *, command: str | None = None) -> list[int]:
    """Live processes whose working directory is PATH or inside it; only those whose
    command name (/proc/PID/comm) is COMMAND or starts with COMMAND- when it is given."""
    target = str(Path(path).resolve())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if command is not None:
                comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
                if comm != command and not comm.startswith(command + "-"):
                    continue
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except (OSError, ValueError):
            continue
        if cwd == target or cwd.startswith(target + "/"):
            fields = _stat(int(entry.name))
            if fields and fields[0] not in _DEAD_STATES:
                found.append(int(entry.name))
    return found


# --- the whole tree of a run, and the kernel's help with it ------------------------------------


# pid, ppid, pgid, start_time (ints); dead: a zombie (or dying), it has exited, only its parent's
# wait is missing. collections, not typing.NamedTuple: every supervisor imports this module, and
# typing alone is a tenth of its start-up.
Proc = namedtuple("Proc", "pid ppid pgid start_time dead")


def table() -> list[Proc]:
    """Every process in /proc, read once."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields:
            found.append(Proc(int(entry.name), int(fields[1]), int(fields[2]), int(fields[19]),
                              fields[0] in _DEAD_STATES))
    return found


def descendants(pid: int, procs: list[Proc] | None = None) -> list[Proc]:
    """Every process whose chain of parents leads to PID (PID excluded), zombies included.

    A process whose parent exits is reparented at once (to the nearest child subreaper, see
    set_child_subreaper), so a live descendant never hangs below a dead one: the walk is exact.
    """
    children: dict[int, list[Proc]] = {}
    for p in table() if procs is None else procs:
        children.setdefault(p.ppid, []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.pid != pid:
                found.append(child)
                todo.append(child.pid)
    return found


_PR_SET_NAME = 15
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _prctl(option: int, arg: int = 0) -> int | None:
    """prctl(2) through libc; None where there is none (not Linux, no ctypes)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if option == _PR_GET_CHILD_SUBREAPER:
            out = ctypes.c_int(0)
            if libc.prctl(option, ctypes.byref(out), 0, 0, 0) != 0:
                return None
            return out.value
        result = libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        return None
    return None if result < 0 else result


def set_child_subreaper() -> bool:
    """Orphaned descendants (a double fork, a `setsid` daemon) become our children instead of
    init's, so they stay in the tree `descendants` walks."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0


def is_child_subreaper() -> bool:
    return _prctl(_PR_GET_CHILD_SUBREAPER) == 1


def set_name(name: str) -> bool:
    """The process's name as `ps -o comm` and top show it (15 bytes at most)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) == 0
    except (ImportError, OSError, AttributeError):
        return False


def set_undumpable() -> bool:
    """No core dumps, no ptrace by the same user, and /proc/<pid>/environ, mem, fd readable only by
    root: a non-root agent of the same user cannot read our environment. Reset by exec, so the
    programs we start are not affected."""
    return _prctl(_PR_SET_DUMPABLE, 0) == 0


def is_dumpable() -> bool | None:
    result = _prctl(_PR_GET_DUMPABLE)
    return None if result is None else bool(result)
