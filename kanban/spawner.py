"""A warm parent for supervisors: one small process that forks a supervisor per run.

A supervisor started as a new Python program pays the interpreter's start and its
imports, 30-40 ms of CPU, on every run; on two cores and three roles per task that was a
third of a short-task run's CPU, and it sat between one agent's end and the next one's
start. The spawner pays it once: `LocalRunner` starts it at its first run, asks it for
supervisors one line at a time, and it forks each from its warm interpreter.

    request:  the run directory, absolute, one line
    reply:    "<pid> <start time>" of the supervisor, or "! <why>"

What a fresh program gave and a fork of kanban would not, a fork of the spawner still
gives. Its environment is empty (it is started with none), so an agent that reads its
supervisor's /proc/<pid>/environ finds nothing, as it found nothing but its own before.
Each supervisor is a session of its own, with /dev/null for stdin, supervisor.log for
its output and no other descriptor of the spawner's: it outlives the spawner and kanban
alike. The spawner holds no secret. It reads no spec, and the supervisor reads its spec
after the fork.

The spawner ends when kanban closes its end of the pipe, or dies. It reaps the
supervisors that end before it does; those still running then are reparented like
any orphan, as supervisors always were when kanban exited before them.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SUPERVISOR_LOG = "supervisor.log"  # as in kanban.supervisor, whose imports wait until the loop

_live: set[int] = set()  # the supervisors forked and not yet reaped


def serve(idle_exit: float = 60.0) -> int:
    """The spawner's loop: read run directories on stdin, fork a supervisor for each. With no
    request and no live supervisor for IDLE_EXIT seconds it ends (a kanban that forgot to close
    it, a test's runner say, does not keep it)."""
    # Everything a supervisor imports, imported once here: the point of the spawner.
    import json  # noqa: F401
    import re  # noqa: F401 - the supervisor's idle-line patterns
    import subprocess  # noqa: F401
    import traceback  # noqa: F401

    from kanban import atomic, procs, supervisor  # noqa: F401

    procs.set_name("kanban-spawner")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's ^C is for kanban, which closes us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, _reap)
    os.chdir("/")  # no working directory of ours pins a worktree
    buf = b""
    while True:
        # PEP 475: a SIGCHLD meanwhile is handled and the wait resumed.
        if not select.select([0], [], [], idle_exit)[0]:
            if not _live:
                return 0
            continue
        chunk = os.read(0, 4096)
        if not chunk:
            return 0
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            _write_all(1, _answer(os.fsdecode(line)).encode() + b"\n")


def _answer(run_dir: str) -> str:
    from kanban import procs

    if not os.path.isabs(run_dir) or not os.path.isdir(run_dir):
        return f"! not a run directory: {run_dir!r}"
    # SIGCHLD held until the child is in _live and its start time read: one that ended at once
    # would otherwise be reaped first (gone from /proc, and kept in _live for ever).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        try:
            pid = os.fork()
        except OSError as exc:
            return f"! fork failed: {exc}"
        if pid == 0:
            _become_supervisor(run_dir, held)  # never returns
        _live.add(pid)
        return f"{pid} {procs.process_start_time(pid)}"
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _become_supervisor(run_dir: str, mask: set) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the spawner's own: agents inherit it
        os.setsid()
        log = os.open(os.path.join(run_dir, SUPERVISOR_LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                      0o644)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, _max_fd())  # nothing of the spawner's pipes to kanban stays open
        os.chdir(run_dir)
        from kanban import procs, supervisor

        procs.set_name("kanban-superv")  # what `ps -o comm` and top show: its command line is the spawner's

        code = supervisor.main([run_dir])
    except BaseException:  # noqa: BLE001 - a child of the fork never returns into the spawner's loop
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001, S110 - exiting regardless
                pass
        os._exit(code)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reap(*_: object) -> None:
    """Collect every supervisor that ended (SIGCHLD), so none stays a zombie."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _live.discard(pid)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (OSError, ValueError):
        return 1024


# -- kanban's side ------------------------------------------------------------------------------

# As the supervisor's own start (kanban.runner): -I and -S, this kanban found through argv.
_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from kanban.spawner import serve; "
         "sys.exit(serve(float(sys.argv[1])))")
REPLY_LIMIT = 5.0  # seconds for a fork's answer; a spawner slower than that is replaced


class Spawner:
    """kanban's end of the pipe: started at the first spawn, closed by close() or with kanban."""

    def __init__(self, idle_exit: float = 60.0) -> None:
        self.idle_exit = idle_exit
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()  # launch threads (the Ray runner's) may spawn at once
        self.usable = True  # False once it failed (or KANBAN_SPAWNER=off): supervisors are programs again

    def spawn(self, run_dir: Path) -> tuple[int, int] | None:
        """(pid, start time) of a new supervisor for RUN_DIR; None when the spawner cannot."""
        path = os.fspath(Path(run_dir).resolve())
        if not self.usable or "\n" in path:
            return None
        with self._lock:
            for _ in range(2):  # a spawner that ended while idle is started afresh once
                try:
                    proc = self._started()
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write(os.fsencode(path) + b"\n")
                    proc.stdin.flush()
                    reply = _read_line(proc.stdout.fileno(), REPLY_LIMIT)
                except (OSError, ValueError):
                    reply = None
                words = (reply or "!").split()
                if len(words) == 2 and all(w.isdigit() for w in words):
                    return int(words[0]), int(words[1])
                self._stop()
                if reply is not None:  # it answered, with a refusal: no second try helps
                    break
            self.usable = False
            return None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _started(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            root = os.fspath(Path(__file__).resolve().parent.parent)
            self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, root, repr(self.idle_exit)],
                                          env={},
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, start_new_session=True, cwd="/")
        return self._proc

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:  # EOF on its stdin ends it; the supervisors it forked run on
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_line(fd: int, limit: float) -> str | None:
    """One reply line from FD within LIMIT seconds; None on EOF or timeout."""
    deadline = time.monotonic() + limit
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 256)
        if not chunk:
            return None
        data += chunk
    return data.decode("ascii", errors="replace").strip()


if __name__ == "__main__":
    sys.exit(serve(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0))
