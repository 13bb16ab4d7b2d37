"""The seam through which agents are started: submit, poll, log, cancel, reclaim, list.

`LocalRunner` starts one detached `kanban.supervisor` per run; everything it
knows lives in the run directory, so a later `kanban` process (or another
machine's engine behind the same `Runner` protocol) can pick the run up:

    spec.json      what to run (written here)
    agent.json     who runs it: agent and supervisor pid + start time
    cancel         "term" or "kill", written by cancel()
    result.json    how it ended; its presence means nothing of the run is left
    supervisor.log the supervisor's own stderr, for post-mortems

The supervisor is never a fork of kanban: a fork's /proc/<pid>/environ would be kanban's
whole environment, readable by the agent as its parent's. It is a fork of the spawner
(kanban.spawner), a warm interpreter started with an empty environment, so a run does
not pay Python's start and imports; where the spawner cannot serve, a fresh program
whose environment is exactly the agent's. kanban itself is made undumpable
(procs.set_undumpable), so a non-root agent of the same user cannot read kanban's
/proc/<pid>/environ either; under the sandbox (kanban.sandbox) the agent has a /proc of
its own and sees neither.

The short commands kanban runs itself and waits for (worktree set-up,
`[notify]` hooks, preflight probes, the sandbox probe) go through
`run_bounded`: a session of their own, bounded output, and their whole process
group stopped at the timeout. Nothing else in kanban starts a process but git
(kanban.git), and nothing else reads a run directory's files.

What the history keeps of a run is its reference, an opaque string this runner
gives out (`ref`) and turns back into the run (`resolve`): `local:` and the run
directory relative to the repository's root (absolute where it lies outside the
root, and for rows an older kanban wrote with a run directory). A second executor
gives out references of its own; no caller looks inside one.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import kanban
from kanban import atomic, procs
from kanban.errors import WORK_FAILED, KanbanError
from kanban.sandbox import Plan
from kanban.spawner import Spawner
from kanban.supervisor import (
    AGENT,
    CANCEL,
    RELEASE,
    RELEASE_FIFO,
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
SPEC_LIMIT = 16 << 20  # bytes of spec.json read back (its env is most of it)
LIVENESS_EVERY = 50  # wait_any checks for dead supervisors every N steps
REAP_EVERY = 0.25  # seconds between two looks for ended supervisors to collect
LOCAL_REF = "local:"  # the prefix of this runner's run references


class LaunchError(KanbanError):
    """The agent could not be started."""

    def __init__(self, message: str, run_dir: Path) -> None:
        super().__init__(message, file=run_dir, code=WORK_FAILED)


class RunHandle(NamedTuple):
    run_dir: Path
    agent_pid: int | None  # None from submit(wait=False) or an armed run: not started yet
    agent_start_time: int | None
    supervisor_pid: int
    log: Path


class RunState(NamedTuple):
    running: bool
    result: dict | None  # result.json; None while running, or if the run was lost
    agent_pid: int | None
    supervisor_alive: bool


class RunSpec(NamedTuple):
    """What a run was submitted with, as its callers may see it: never its environment."""

    command: list[str]  # the argv as submitted, before a sandbox wrapped it
    cwd: Path | None
    log: Path | None
    timeout: float | None
    stall: float | None
    grace: float


class Completed(NamedTuple):
    """How a `run_bounded` command ended."""

    returncode: int  # negative: the signal that ended it
    output: bytes  # its stdout (with stderr when merged), at most OUTPUT_LIMIT bytes
    errors: bytes  # its stderr when not merged, as bounded
    timed_out: bool  # it was still running at the timeout: its whole group was stopped


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
        armed: bool = False,
    ) -> RunHandle: ...

    def release(self, run_dir: Path) -> None: ...

    def poll(self, run_dir: Path) -> RunState: ...

    def spec(self, run_dir: Path) -> RunSpec | None: ...

    def cancel(self, run_dir: Path, force: bool = False) -> None: ...

    def reclaim(self, run_dir: Path, by: str) -> RunState: ...

    def log_path(self, run_dir: Path) -> Path: ...

    def read_log(self, run_dir: Path, tail: int | None = None) -> str: ...

    def active(self, runs_root: Path) -> list[Path]: ...

    def wait_any(self, run_dirs: Iterable[Path], timeout: float | None) -> list[Path]: ...

    def ref(self, run_dir: Path) -> str: ...

    def resolve(self, ref: str) -> Path: ...

    def where(self, run_dir: Path) -> str | None: ...

    def pid(self, run_dir: Path) -> int | None: ...

    def capacity(self) -> str | None: ...

    def close(self) -> None: ...


class LocalRunner:
    """Runs agents on this machine under `python -m kanban.supervisor`.

    ROOT, the repository's root, makes its run references relative to it (the repository may
    move); without it they hold absolute paths. WATCH_CALLER: every run ends when this process
    does (the Ray job wrapper's runs: a job that Ray killed or lost leaves no agent behind)."""

    def __init__(self, root: Path | None = None, *, watch_caller: bool = False) -> None:
        self.root = root
        self.watch_caller = watch_caller
        self._children: dict[Path, subprocess.Popen | _Forked] = {}  # reaped in poll()
        self._pidfds: dict[Path, int] = {}  # wait_any's watch on supervisors, by run directory
        self._reaped_at = float("-inf")  # see _reap
        self._spawner = Spawner()  # forks supervisors from a warm interpreter (kanban.spawner)
        # KANBAN_SPAWNER=off: every supervisor a program of its own, as where fork is refused.
        self._spawner.usable = os.environ.get("KANBAN_SPAWNER", "").lower() not in ("off", "0", "no")
        weakref.finalize(self, self._spawner.close)
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
        armed: bool = False,
    ) -> RunHandle:
        """Start ARGV under a detached supervisor; return once the agent runs.

        ARMED: the supervisor starts and waits, the agent not yet started, until release()
        (its timeout counts from then): a run made ready ahead of its turn starts in a few
        milliseconds when its turn comes. Implies wait=False.

        ENV is the agent's complete environment. Raises LaunchError if the
        agent could not be started (e.g. its program does not exist). With
        wait=False it returns as soon as the supervisor is started (the agent's
        pid is then None; poll() and agent.json tell the rest, and a failed
        start shows up as a result with an "error"). With SANDBOX (a
        kanban.sandbox.Plan) the agent runs inside bubblewrap, as that plan says.
        """
        run_dir = Path(run_dir).resolve()
        _prepare(run_dir, argv, timeout)
        words = [os.fspath(a) for a in argv]
        env = dict(env)
        command = list(words)
        if sandbox is not None:
            words = sandbox.wrap(words, Path(cwd).resolve())
            env.update(sandbox.env)
        spec: dict[str, Any] = {
            "argv": words,
            "command": command,
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
            "armed": bool(armed),
        }
        if self.watch_caller:
            spec["watch"] = {"pid": os.getpid(), "start_time": procs.process_start_time(os.getpid())}
        # Whole or not at all, but not synced (four fsyncs per start were most of a handover's
        # disk time): both describe processes a power cut ends. Afterwards a lost or empty spec
        # reads as none (spec()), a lost or empty launcher's record as a supervisor gone.
        if armed:
            os.mkfifo(run_dir / RELEASE_FIFO, 0o600)  # what wakes the supervisor at release()
        atomic.write_json_atomic(run_dir / SPEC, spec, mode=0o600)  # env may hold API keys
        forked = self._spawner.spawn(run_dir)
        child = _Forked(*forked) if forked else _spawn_supervisor(run_dir, env)
        self._children[run_dir] = child
        start = child.start_time if isinstance(child, _Forked) else procs.process_start_time(child.pid)
        atomic.write_json_atomic(run_dir / LAUNCHER, {"supervisor_pid": child.pid, "supervisor_start_time": start})
        if not wait or armed:
            return RunHandle(run_dir, None, None, child.pid, Path(spec["log"]))
        return _await_start(run_dir, child, Path(spec["log"]))

    def close(self) -> None:
        """Let the spawner go (the supervisors it started run on). The runner still works: a
        later submit starts a spawner again."""
        self._spawner.close()

    def release(self, run_dir: Path) -> None:
        """Let an armed run's agent start (see submit)."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():  # never submitted (a kill in between): poll() shows it lost
            return
        atomic.write_text_atomic(run_dir / RELEASE, "go")  # not synced: a power cut ends the armed run too
        _poke(run_dir)

    def poll(self, run_dir: Path) -> RunState:
        self._reap()
        run_dir = Path(run_dir)
        # Before the supervisor writes agent.json, the launcher's record says who it is.
        info = read_json(run_dir / AGENT) or {}
        sup = info or _launcher(run_dir)
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
        if (run_dir / RESULT).exists() or not run_dir.is_dir():  # over, or never started (a kill before submit)
            return
        write_text_atomic(run_dir / CANCEL, "kill" if force else "term")
        _poke(run_dir)  # an armed run's supervisor waits on its fifo
        state = self.poll(run_dir)
        info = read_json(run_dir / AGENT)
        if state.result is not None or state.supervisor_alive or info is None:
            return
        spec = self.spec(run_dir)
        procs.stop_group(info["pgid"], info["start_time"], 0.0 if force or spec is None else spec.grace)
        if not (run_dir / RESULT).exists():
            write_json_atomic(run_dir / RESULT, _orphan_result(info))

    def reclaim(self, run_dir: Path, by: str) -> RunState:
        """Settle a run whose supervisor died; BY (who does it) goes into the result's error.

        Nothing enforces its timeout any more, so what is left of its agent's group is killed
        at once, and the run is recorded as failed, not cancelled (no person stopped it): its
        task is retried. A run with nothing left is recorded as lost. A run that has a result
        or a live supervisor is left alone. Returns its state afterwards.
        """
        run_dir = Path(run_dir)
        state = self.poll(run_dir)
        if state.result is not None or state.supervisor_alive:
            return state
        info = read_json(run_dir / AGENT) or {}
        if state.running:
            procs.stop_group(info["pgid"], info["start_time"], 0.0)
            result = _failed_result(info.get("started"), int(signal.SIGKILL),
                                    f"its supervisor died; the agent was stopped by {by}")
        else:
            result = _failed_result(None, None, f"lost: its supervisor and agent were gone (found by {by})")
        if not (run_dir / RESULT).exists():
            write_json_atomic(run_dir / RESULT, result)
        return self.poll(run_dir)

    def spec(self, run_dir: Path) -> RunSpec | None:
        """What the run in RUN_DIR was submitted with; None if there is no readable record.
        Read without blocking or following a link: an agent may reach the run directories."""
        from kanban.untrusted import read_capped

        try:
            data = json.loads(read_capped(Path(run_dir) / SPEC, SPEC_LIMIT) or "null")
            command = data.get("command") or data.get("argv") or []
            return RunSpec([str(a) for a in command], _path(data.get("cwd")), _path(data.get("log")),
                           _seconds(data.get("timeout")), _seconds(data.get("stall")),
                           float(data.get("grace")) if data.get("grace") is not None else 5.0)
        except (ValueError, TypeError, AttributeError):
            return None

    def log_path(self, run_dir: Path) -> Path:
        spec = self.spec(run_dir)
        if spec is None or spec.log is None:
            raise KanbanError("not a run directory (no spec.json)", file=run_dir)
        return spec.log

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
        with self._exit_watch(dirs) as watched:
            # A watched supervisor's pidfd turns readable when it exits (right after writing its
            # result, or dying without one): until then its run is running, and nothing but a
            # stat of result.json is needed. Unwatched runs are polled every LIVENESS_EVERY steps.
            unwatched = [d for d in dirs if d not in watched]
            while True:
                done = [d for d in dirs if (d / RESULT).exists()]
                if not done and unwatched and step % LIVENESS_EVERY == 0:
                    done = [d for d in unwatched if not self.poll(d).running]
                left = None if deadline is None else deadline - time.monotonic()
                if done or (left is not None and left <= 0):
                    return done
                fds = list(watched.values())
                pause = (LIVENESS_EVERY if fds and not unwatched else 1) * WAIT_STEP
                pause = pause if left is None else min(pause, left)
                if fds:
                    ready, _, _ = select.select(fds, [], [], pause)
                    ended = [d for d, fd in watched.items() if fd in ready]
                    done = [d for d in ended if not self.poll(d).running]
                    if done:
                        return done
                    for d in ended:  # its supervisor is gone but its agent lives on: poll it instead
                        del watched[d]
                        unwatched.append(d)
                else:
                    time.sleep(pause)
                step += 1

    def ref(self, run_dir: Path) -> str:
        """The reference the history keeps for the run in RUN_DIR."""
        return local_ref(self.root, run_dir)

    def resolve(self, ref: str) -> Path:
        """The run directory of REF, as `ref` gave it out (or an older kanban's run directory)."""
        return local_path(self.root, ref)

    def where(self, run_dir: Path) -> str | None:
        """Where the run runs, for `kanban status`: this machine (None: nothing to say)."""
        return None

    def pid(self, run_dir: Path) -> int | None:
        """The agent's pid on this machine, once its supervisor started it (for people: `kanban
        status`, the live view; the history keeps the run's reference, not its pids)."""
        pid = (read_json(Path(run_dir) / AGENT) or {}).get("pid")
        return pid if isinstance(pid, int) and not isinstance(pid, bool) else None

    def capacity(self) -> str | None:
        """The executor's free capacity in words, for `kanban status`; None: only the pool counts."""
        return None

    @contextlib.contextmanager
    def _exit_watch(self, dirs: list[Path]):
        """{run directory: pidfd of its supervisor} for `dirs` (Linux 5.3+; else none): those this
        runner started, and those an earlier kanban started, known by pid and start time from
        their run files. Kept between calls: a loop waits on the same runs again and again."""
        wanted = {Path(d) for d in dirs}
        for d in list(self._pidfds):
            if d not in wanted or (d / RESULT).exists():
                os.close(self._pidfds.pop(d))
        for d in wanted if hasattr(os, "pidfd_open") else ():
            if d not in self._pidfds:
                fd = self._supervisor_pidfd(d)
                if fd is not None:
                    self._pidfds[d] = fd
        yield {d: self._pidfds[d] for d in dirs if d in self._pidfds}

    def _supervisor_pidfd(self, run_dir: Path) -> int | None:
        child = self._children.get(run_dir.resolve())
        if isinstance(child, subprocess.Popen):
            if child.poll() is not None:
                return None
            with contextlib.suppress(OSError):
                return os.pidfd_open(child.pid)
            return None
        sup = read_json(run_dir / AGENT) or _launcher(run_dir)
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
        """Collect supervisors that ended, so a long-lived caller keeps no zombies. At most every
        REAP_EVERY: poll() calls it for each run, and each look is a /proc read per supervisor."""
        now = time.monotonic()
        if now - self._reaped_at < REAP_EVERY:
            return
        self._reaped_at = now
        for run_dir, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[run_dir]


def local_ref(root: Path | None, run_dir: Path | str) -> str:
    """`local:` and RUN_DIR relative to ROOT; absolute where it is outside ROOT or ROOT is None."""
    path = Path(run_dir)
    if root is not None:
        for base, inner in ((Path(root), path), (Path(root).resolve(), path.resolve())):
            with contextlib.suppress(ValueError):
                return LOCAL_REF + inner.relative_to(base).as_posix()
    return LOCAL_REF + os.path.abspath(path)


def local_path(root: Path | None, ref: str) -> Path:
    """The run directory a `local:` reference names (relative ones under ROOT)."""
    if not isinstance(ref, str) or not ref.startswith(LOCAL_REF) or len(ref) == len(LOCAL_REF):
        raise KanbanError(f"not a run of this machine's runner: {ref!r}")
    path = Path(ref[len(LOCAL_REF):])
    if path.is_absolute():
        return path
    if root is None:
        raise KanbanError(f"the run {ref} is named relative to its repository, and the runner was given none")
    return Path(root) / path


def _launcher(run_dir: Path) -> dict:
    """The launcher's record of the supervisor ({} if none, or one a power cut left empty)."""
    try:
        found = read_json(run_dir / LAUNCHER)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _poke(run_dir: Path) -> None:
    """Wake an armed run's supervisor (a byte down its fifo), if it is there to read it."""
    try:
        fd = os.open(run_dir / RELEASE_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # no fifo (not armed), or no reader (the supervisor is gone, or not waiting yet)
        return
    try:
        os.write(fd, b"!")
    except OSError:
        pass
    finally:
        os.close(fd)


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


class _Forked:
    """A supervisor the spawner forked: not our child, known by its pid and start time."""

    def __init__(self, pid: int, start_time: int) -> None:
        self.pid, self.start_time = pid, start_time
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return None if procs.alive(self.pid, self.start_time) else 0

    def send_signal(self, sig: int) -> None:
        procs.terminate(self.pid, self.start_time, sig)


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
            code = "" if child.returncode is None else f" with {child.returncode}"
            why = f"supervisor exited{code}: {_sup_log_tail(run_dir)}"
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


# -- short commands kanban waits for ------------------------------------------------------------

BOUNDED_OUTPUT = 64 << 10  # bytes of a bounded command's output kept, unless told
BOUNDED_GRACE = 0.5  # seconds from SIGTERM to SIGKILL when a bounded command is stopped


def run_bounded(argv: Sequence[str | os.PathLike], cwd: Path | str | None, env: Mapping[str, str] | None = None,
                *, timeout: float, output_limit: int = BOUNDED_OUTPUT, keep_tail: bool = False,
                merge_stderr: bool = False, grace: float = BOUNDED_GRACE, on_start=None) -> Completed:
    """Run ARGV (ENV None: ours) until it exits or TIMEOUT passes, then stop its whole group.

    It gets its own session (out of our terminal's reach, and a group of its own), stdin
    /dev/null, and its output is kept up to OUTPUT_LIMIT bytes per stream: the first, or the
    last with KEEP_TAIL. Once it exited, output a child of it still holds open is not waited
    for. ON_START(stop) is given a function that stops it (from another thread, say).
    Raises OSError (FileNotFoundError: no such program) or ValueError if it cannot start.
    """
    proc = subprocess.Popen([os.fspath(a) for a in argv], cwd=cwd, env=None if env is None else dict(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, start_new_session=True)
    leader_start = procs.process_start_time(proc.pid)  # not reaped yet: the pid is still its own

    def stop() -> None:
        procs.stop_group(proc.pid, leader_start, grace)

    try:
        if on_start is not None:
            on_start(stop)
        out, err, timed_out = _read_bounded(proc, time.monotonic() + timeout, output_limit, keep_tail)
    except BaseException:
        stop()
        raise
    if timed_out:
        stop()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=None if not timed_out else grace + 2.0)
    code = proc.returncode if proc.returncode is not None else -int(signal.SIGKILL)
    return Completed(code, out, err, timed_out)


def _read_bounded(proc: subprocess.Popen, deadline: float, limit: int, tail: bool) -> tuple[bytes, bytes, bool]:
    """(stdout, stderr, True if it still ran at DEADLINE), reading both pipes as they fill."""
    pipes = [p for p in (proc.stdout, proc.stderr) if p is not None]
    bufs = [bytearray() for _ in pipes]
    kept = {p.fileno(): buf for p, buf in zip(pipes, bufs)}
    reading, exited = list(kept), False
    try:
        while reading and time.monotonic() < deadline:
            # Once it exited, only what is already in the pipes is read.
            pause = 0.0 if exited else min(deadline - time.monotonic(), 0.1)
            ready, _, _ = select.select(reading, [], [], max(pause, 0.0))
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    reading.remove(fd)
                else:
                    _keep(kept[fd], chunk, limit, tail)
            if not ready:
                if exited:
                    break
                exited = proc.poll() is not None
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        for p in pipes:
            p.close()
    return bytes(bufs[0]), bytes(bufs[1]) if len(bufs) > 1 else b"", timed_out


def _keep(buf: bytearray, chunk: bytes, limit: int, tail: bool) -> None:
    if tail:
        buf += chunk
        if len(buf) > limit:
            del buf[: len(buf) - limit]
    elif len(buf) < limit:
        buf += chunk[: limit - len(buf)]


def _path(value) -> Path | None:
    return None if value is None else Path(value)


def _seconds(value) -> float | None:
    return None if value is None else float(value)


def _failed_result(started: str | None, sig: int | None, error: str) -> dict:
    """The result of a run that ended without its supervisor: failed, not cancelled."""
    return {"exit_code": None, "signal": sig, "timed_out": False, "stalled": False, "cancelled": False,
            "started": started, "ended": now_iso(), "duration": None, "error": error}


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
