"""The seam through which agents are started: submit, poll, log, cancel, list.

`LocalRunner` starts one detached `kanban.supervisor` per run; everything it
knows lives in the run directory, so a later `kanban` process (or another
machine's engine behind the same `Runner` protocol) can pick the run up:

    spec.json      what to run (written here)
    agent.json     who runs it: agent and supervisor pid + start time
    cancel         "term" or "kill", written by cancel()
    result.json    how it ended; its presence means nothing of the run is left
    supervisor.log the supervisor's own stderr, for post-mortems
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
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import kanban
from kanban import procs
from kanban.errors import WORK_FAILED, KanbanError
from kanban.supervisor import (
    AGENT,
    CANCEL,
    RESULT,
    SPEC,
    SUPERVISOR_LOG,
    now_iso,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

LAUNCHER = "launcher.json"  # the supervisor's pid, written by the launcher
START_LIMIT = 5.0  # seconds the supervisor gets to start the agent
WAIT_STEP = 0.01  # wait_any's polling interval: a few stat() calls, cheap
LIVENESS_EVERY = 50  # wait_any checks for dead supervisors every N steps


class LaunchError(KanbanError):
    """The agent could not be started."""

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(message, file=run_dir, code=WORK_FAILED)


class RunHandle(NamedTuple):
    run_dir: Path
    agent_pid: int
    agent_start_time: int
    supervisor_pid: int
    log: Path


class RunState(NamedTuple):
    running: bool
    result: dict | None  # result.json; None while running, or if the run was lost
    agent_pid: int | None
    supervisor_alive: bool


class Runner(Protocol):
    def submit(
        self,
        run_dir: Path,
        argv: Sequence[str | os.PathLike],
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        timeout: float,
        stall: float | None = None,
        grace: float = 5.0,
        wait: bool = True,
        idle_lines: Sequence[str] = (),
        retry_limit: float | None = None,
    ) -> RunHandle: ...

    def poll(self, run_dir: Path) -> RunState: ...

    def cancel(self, run_dir: Path, force: bool = False) -> None: ...

    def log_path(self, run_dir: Path) -> Path: ...

    def read_log(self, run_dir: Path, tail: int | None = None) -> str: ...

    def active(self, runs_root: Path) -> list[Path]: ...

    def wait_any(self, run_dirs: Iterable[Path], timeout: float | None) -> list[Path]: ...


class LocalRunner:
    """Runs agents on this machine under `python -m kanban.supervisor`."""

    def __init__(self) -> None:
        self._children: dict[Path, subprocess.Popen | _Forked] = {}  # reaped in poll()

    def submit(
        self,
        run_dir: Path,
        argv: Sequence[str | os.PathLike],
        cwd: Path,
        env: Mapping[str, str],
        log: Path,
        timeout: float,
        stall: float | None = None,
        grace: float = 5.0,
        wait: bool = True,
        idle_lines: Sequence[str] = (),
        retry_limit: float | None = None,
    ) -> RunHandle:
        """Start ARGV under a detached supervisor; return once the agent runs.

        ENV is the agent's complete environment. Raises LaunchError if the
        agent could not be started (e.g. its program does not exist). With
        wait=False it returns as soon as the supervisor is started (the agent's
        pid is then None; poll() and agent.json tell the rest, and a failed
        start shows up as a result with an "error").
        """
        run_dir = Path(run_dir).resolve()
        _prepare(run_dir, argv, timeout)
        spec = {
            "argv": [os.fspath(a) for a in argv],
            "cwd": os.fspath(Path(cwd).resolve()),
            "env": dict(env),
            "log": os.fspath(Path(log).resolve()),
            "timeout": float(timeout),
            "stall": None if stall is None else float(stall),
            "grace": float(grace),
            # Regexes of log lines that are not progress (a CLI's retry and reconnect lines).
            "idle_lines": list(idle_lines),
            # Stopped after this long with nothing but those lines (None: never for that).
            "retry_limit": None if retry_limit is None or not idle_lines else float(retry_limit),
        }
        write_json_atomic(run_dir / SPEC, spec, mode=0o600)  # env may hold API keys
        child = _spawn_supervisor(run_dir)
        self._children[run_dir] = child
        write_json_atomic(run_dir / LAUNCHER, {"supervisor_pid": child.pid,
                                                "supervisor_start_time": procs.process_start_time(child.pid)})
        if not wait:
            return RunHandle(run_dir, None, None, child.pid, Path(spec["log"]))
        return _await_start(run_dir, child, Path(spec["log"]))

    def poll(self, run_dir: Path) -> RunState:
        self._reap()
        run_dir = Path(run_dir)
        # Before the supervisor writes agent.json, the launcher's record says who it is.
        info = read_json(run_dir / AGENT) or {}
        sup = info or read_json(run_dir / LAUNCHER) or {}
        sup_alive = procs.alive(sup.get("supervisor_pid"), sup.get("supervisor_start_time"))
        result = read_json(run_dir / RESULT)
        if result is None and not sup_alive:
            running = bool(info) and bool(procs.owned_group(info["pgid"], info["start_time"]))
            # The supervisor may have written its result just before it exited.
            result = None if running else read_json(run_dir / RESULT)
        else:
            running = result is None
        return RunState(running, result, info.get("pid"), sup_alive)

    def cancel(self, run_dir: Path, force: bool = False) -> None:
        """Ask the supervisor to stop the run; do its job if it is gone.

        Returns at once while a supervisor lives (wait_any() tells when it is
        done); without one, kills the agent group itself and writes result.json.
        """
        run_dir = Path(run_dir)
        if (run_dir / RESULT).exists():
            return
        write_text_atomic(run_dir / CANCEL, "kill" if force else "term")
        state = self.poll(run_dir)
        info = read_json(run_dir / AGENT)
        if state.result is not None or state.supervisor_alive or info is None:
            return
        spec = read_json(run_dir / SPEC) or {}
        _kill_group(info["pgid"], info["start_time"], 0.0 if force else spec.get("grace", 5.0))
        if not (run_dir / RESULT).exists():
            write_json_atomic(run_dir / RESULT, _orphan_result(info))

    def log_path(self, run_dir: Path) -> Path:
        spec = read_json(Path(run_dir) / SPEC)
        if spec is None:
            raise KanbanError("not a run directory (no spec.json)", file=run_dir)
        return Path(spec["log"])

    def read_log(self, run_dir: Path, tail: int | None = None) -> str:
        """The agent's output so far; only the last TAIL bytes if given."""
        try:
            with open(self.log_path(run_dir), "rb") as f:
                if tail is not None:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def active(self, runs_root: Path) -> list[Path]:
        """Run directories under RUNS_ROOT (any depth) that are still running."""
        if not Path(runs_root).is_dir():
            return []
        dirs = sorted(spec.parent for spec in Path(runs_root).rglob(SPEC))
        return [d for d in dirs if not (d / RESULT).exists() and self.poll(d).running]

    def wait_any(self, run_dirs: Iterable[Path], timeout: float | None) -> list[Path]:
        """Wait until at least one run is over; return all that are (maybe []).

        Over means result.json exists, or the run was lost (supervisor and
        agent dead without one; poll() then shows result None).
        """
        dirs = [Path(d) for d in run_dirs]
        if not dirs and timeout is None:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        step = 0
        with self._exit_watch(dirs) as pidfds:
            while True:
                done = [d for d in dirs if (d / RESULT).exists()]
                if not done and step % LIVENESS_EVERY == 0:
                    done = [d for d in dirs if not self.poll(d).running]
                left = None if deadline is None else deadline - time.monotonic()
                if done or (left is not None and left <= 0):
                    return done
                pause = WAIT_STEP if left is None else min(WAIT_STEP, left)
                if pidfds:  # a supervisor exits right after writing its result: wake then
                    select.select(pidfds, [], [], pause)
                else:
                    time.sleep(pause)
                step += 1

    @contextlib.contextmanager
    def _exit_watch(self, dirs: list[Path]):
        """pidfds of the supervisors this runner started for `dirs` (Linux 5.3+; else none)."""
        fds = []
        try:
            for d in dirs:
                child = self._children.get(Path(d).resolve())
                if child is not None and child.poll() is None and hasattr(os, "pidfd_open"):
                    with contextlib.suppress(OSError):
                        fds.append(os.pidfd_open(child.pid))
            yield fds
        finally:
            for fd in fds:
                os.close(fd)

    def _reap(self) -> None:
        """Collect supervisors that ended, so a long-lived caller keeps no zombies."""
        for run_dir, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[run_dir]


def _prepare(run_dir: Path, argv: Sequence, timeout: float) -> None:
    if not argv:
        raise KanbanError("empty agent command", file=run_dir)
    if timeout <= 0:
        raise KanbanError(f"timeout must be positive, got {timeout}", file=run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / SPEC).exists():
        raise KanbanError("run directory already used", file=run_dir, hint="use a new attempt")


class _Forked:
    """The part of Popen's interface the runner uses, for a forked supervisor."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


def _spawn_supervisor(run_dir: Path):
    # Forking skips a Python start-up (~30 ms) on every handover; only safe with one thread.
    if threading.active_count() == 1 and hasattr(os, "fork"):
        return _fork_supervisor(run_dir)
    return _exec_supervisor(run_dir)


def _fork_supervisor(run_dir: Path) -> _Forked:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 70
    try:
        os.setsid()  # out of our terminal's reach: no SIGHUP/SIGINT
        null = os.open(os.devnull, os.O_RDWR)
        log = os.open(run_dir / SUPERVISOR_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for target, source in ((0, null), (1, log), (2, log)):
            os.dup2(source, target)
        # The parent's locks, database and pipes are not the supervisor's to hold.
        for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
            if fd > 2:
                with contextlib.suppress(OSError):
                    os.close(fd)
        # Python-level streams may be someone else's (a test runner's capture): use fds 1 and 2.
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(run_dir)
        from kanban.supervisor import main as supervise

        code = supervise([os.fspath(run_dir)])
    except BaseException:  # noqa: BLE001 - a forked child must never return into the caller
        with contextlib.suppress(BaseException):
            import traceback

            os.write(2, traceback.format_exc().encode())  # fd 2 is the supervisor log
    finally:
        os._exit(code)


def _exec_supervisor(run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ)
    # The supervisor must import this very kanban, wherever it came from.
    root = os.fspath(Path(kanban.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with open(run_dir / SUPERVISOR_LOG, "ab") as log:
        return subprocess.Popen(
            # -S: no site-packages scan (the supervisor needs only the stdlib and this
            # kanban, on PYTHONPATH): it starts in half the time.
            [sys.executable, "-S", "-m", "kanban.supervisor", os.fspath(run_dir)],
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # out of our terminal's reach: no SIGHUP/SIGINT
        )


def _await_start(run_dir: Path, child, log: Path) -> RunHandle:
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        info = read_json(run_dir / AGENT)
        if info is not None:
            return RunHandle(run_dir, info["pid"], info["start_time"], info["supervisor_pid"], log)
        result = read_json(run_dir / RESULT)
        if result is not None:
            raise LaunchError(result.get("error", "agent did not start"), run_dir)
        if child.poll() is not None:
            why = f"supervisor exited with {child.returncode}: {_sup_log_tail(run_dir)}"
            raise LaunchError(why, run_dir)
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)  # it stops the agent if it got that far
    raise LaunchError(f"supervisor did not start the agent within {START_LIMIT:g} s", run_dir)


def _sup_log_tail(run_dir: Path) -> str:
    try:
        text = (run_dir / SUPERVISOR_LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "no supervisor.log"
    return text.strip().splitlines()[-1] if text.strip() else "supervisor.log is empty"


def _kill_group(pgid: int, leader_start: int, grace: float) -> None:
    """SIGTERM, GRACE, SIGKILL for a group whose supervisor is gone."""
    if grace > 0 and procs.signal_group(pgid, leader_start, signal.SIGTERM):
        end = time.monotonic() + grace
        while time.monotonic() < end and procs.owned_group(pgid, leader_start):
            time.sleep(WAIT_STEP)
    end = time.monotonic() + 2.0
    while procs.signal_group(pgid, leader_start, signal.SIGKILL) and time.monotonic() < end:
        time.sleep(0.01)


def _orphan_result(info: dict) -> dict:
    started = info.get("started") or now_iso()
    ended = now_iso()
    duration = datetime.fromisoformat(ended) - datetime.fromisoformat(started)
    return {
        "exit_code": None,
        "signal": None,
        "timed_out": False,
        "stalled": False,
        "cancelled": True,
        "started": started,
        "ended": ended,
        "duration": round(duration.total_seconds(), 3),
        "error": "supervisor was gone; the runner killed the agent group",
    }
