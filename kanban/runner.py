"""The seam through which agents are started: submit, poll, log, cancel, list.

`LocalRunner` starts one detached `kanban.supervisor` per run; everything it
knows lives in the run directory, so a later `kanban` process (or another
machine's engine behind the same `Runner` protocol) can pick the run up:

    spec.json      what to run (written here)
    agent.json     who runs it: agent and supervisor pid + start time
    cancel         "term" or "kill", written by cancel()
    result.json    how it ended; its presence means nothing of the run is left
    supervisor.log the supervisor's own stderr, for post-mortems

The supervisor is always a fresh program (never a fork of kanban) whose
environment is exactly the agent's: an agent that reads /proc/<ppid>/environ
finds only what it was given. kanban itself is made undumpable
(procs.set_undumpable), so a non-root agent of the same user cannot read
kanban's /proc/<pid>/environ either; under the sandbox (kanban.sandbox) the
agent has a /proc of its own and sees neither.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol

import kanban
from kanban import procs
from kanban.errors import WORK_FAILED, KanbanError
from kanban.sandbox import Plan
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
        sandbox: Plan | None = None,
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
        self._children: dict[Path, subprocess.Popen] = {}  # reaped in poll()
        self._pidfds: dict[Path, int] = {}  # wait_any's watch on supervisors, by run directory
        # Our /proc/<pid>/environ holds the whole environment the agents' is filtered from.
        procs.set_undumpable()

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
        sandbox: Plan | None = None,
    ) -> RunHandle:
        """Start ARGV under a detached supervisor; return once the agent runs.

        ENV is the agent's complete environment. Raises LaunchError if the
        agent could not be started (e.g. its program does not exist). With
        wait=False it returns as soon as the supervisor is started (the agent's
        pid is then None; poll() and agent.json tell the rest, and a failed
        start shows up as a result with an "error"). With SANDBOX (a
        kanban.sandbox.Plan) the agent runs inside bubblewrap, as that plan says.
        """
        run_dir = Path(run_dir).resolve()
        _prepare(run_dir, argv, timeout)
        argv = [os.fspath(a) for a in argv]
        env = dict(env)
        if sandbox is not None:
            argv = sandbox.wrap(argv, Path(cwd).resolve())
            env.update(sandbox.env)
        spec = {
            "argv": argv,
            "cwd": os.fspath(Path(cwd).resolve()),
            "env": env,
            "log": os.fspath(Path(log).resolve()),
            "timeout": float(timeout),
            "stall": None if stall is None else float(stall),
            "grace": float(grace),
            # Regexes of log lines that are not progress (a CLI's retry and reconnect lines).
            "idle_lines": list(idle_lines),
            # Stopped after this long with nothing but those lines (None: never for that).
            "retry_limit": None if retry_limit is None or not idle_lines else float(retry_limit),
            # What the supervisor settles after a sandboxed run (kanban.sandbox.settle); None: no sandbox.
            "sandbox": None if sandbox is None else sandbox.settle_spec(run_dir),
        }
        write_json_atomic(run_dir / SPEC, spec, mode=0o600)  # env may hold API keys
        child = _spawn_supervisor(run_dir, env)
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
        """The agent's output so far (the last TAIL bytes if given, else at most 64 MiB); read
        without blocking or following a link, since the agent may have replaced its log."""
        from kanban.untrusted import read_capped

        return read_capped(self.log_path(run_dir), tail if tail is not None else 64 << 20, tail=tail is not None)

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
                if len(pidfds) == len(dirs):
                    # Every supervisor watched: it exits right after writing its result, so sleep
                    # until one does (the periodic liveness check above still runs now and then).
                    pause = LIVENESS_EVERY * WAIT_STEP if left is None else min(LIVENESS_EVERY * WAIT_STEP, left)
                    select.select(pidfds, [], [], pause)
                    step = 0
                else:
                    pause = WAIT_STEP if left is None else min(WAIT_STEP, left)
                    if pidfds:
                        select.select(pidfds, [], [], pause)
                    else:
                        time.sleep(pause)
                    step += 1

    @contextlib.contextmanager
    def _exit_watch(self, dirs: list[Path]):
        """pidfds of the supervisors of `dirs` (Linux 5.3+; else none): those this runner started,
        and those an earlier kanban started, known by pid and start time from their run files."""
        fds = []
        wanted = {Path(d) for d in dirs}
        for d in list(self._pidfds):  # kept between calls: a loop waits on the same runs again and again
            if d not in wanted or (d / RESULT).exists():
                os.close(self._pidfds.pop(d))
        for d in wanted if hasattr(os, "pidfd_open") else ():
            if d not in self._pidfds:
                fd = self._supervisor_pidfd(d)
                if fd is None:
                    continue
                self._pidfds[d] = fd
            fds.append(self._pidfds[d])
        yield fds

    def _supervisor_pidfd(self, run_dir: Path) -> int | None:
        child = self._children.get(run_dir.resolve())
        if child is not None:
            if child.poll() is not None:
                return None
            with contextlib.suppress(OSError):
                return os.pidfd_open(child.pid)
            return None
        sup = read_json(run_dir / AGENT) or read_json(run_dir / LAUNCHER) or {}
        pid, start = sup.get("supervisor_pid"), sup.get("supervisor_start_time")
        if not isinstance(pid, int) or not isinstance(start, int):
            return None
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return None
        if procs.process_start_time(pid) != start:  # the pid was reused: not our supervisor
            os.close(fd)
            return None
        return fd

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


# The supervisor needs only the standard library and this kanban: -I (no PYTHON* variables, no
# user site, no current directory on sys.path) and -S (no site-packages scan: half the start-up)
# so that the agent's environment, which is the supervisor's, cannot change what it imports.
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from kanban.supervisor import main; sys.exit(main())"


def _spawn_supervisor(run_dir: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """A new program, never a fork of kanban: a fork's /proc/<pid>/environ would be kanban's whole
    environment (the one the agent's was filtered from), readable by the agent as its parent's.
    Its environment is exactly the agent's; it finds this kanban through its argv."""
    root = os.fspath(Path(kanban.__file__).resolve().parent.parent)
    with open(run_dir / SUPERVISOR_LOG, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _BOOT, root, os.fspath(run_dir)],
            cwd=run_dir,
            env=dict(env),
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
