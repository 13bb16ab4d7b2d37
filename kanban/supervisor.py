"""The detached process that runs one agent under its timeout.

Run as `python -m kanban.supervisor RUN_DIR`. It reads RUN_DIR/spec.json,
starts the agent as the leader of its own process group, records who it
started in agent.json, and watches it: timeout, stall (the log stopped
growing) and RUN_DIR/cancel end it. It outlives the command that launched
it, so the timeout holds even when nobody is left to enforce it.

Whenever the agent ends, by itself or not, whatever is left of it gets
SIGTERM, a grace, then SIGKILL, before result.json is written: its process
group, and every other descendant of the supervisor. The supervisor is a child
subreaper (prctl PR_SET_CHILD_SUBREAPER), so a process that leaves the group
and daemonises (setsid, a double fork) is reparented to it, not to init, and
is found by walking the tree. So result.json means "nothing of this run is
still running", and the caller may remove the worktree. An agent that leaves a
server running in the background loses it: that is deliberate, since a
leftover would hold the worktree and the task's port.

The supervisor's environment is empty (forked from kanban.spawner) or the agent's own, so
reading /proc/<its pid>/environ tells an agent nothing it was not given.

Under the sandbox (spec "sandbox", kanban.sandbox) the agent is bwrap: its pid
namespace ends everything in it when the agent exits. Its SIGTERM goes to the
processes inside, not to bwrap (which would die at once and take them along
without their grace); then the sandbox's git work is settled (sandbox.settle)
before result.json is written.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from kanban import atomic, procs

SPEC = "spec.json"
AGENT = "agent.json"
RESULT = "result.json"
CANCEL = "cancel"
RELEASE = "release"  # an armed run may start its agent (runner.release)
RELEASE_FIFO = "release.fifo"  # written to at release and cancel: wakes an armed supervisor
SUPERVISOR_LOG = "supervisor.log"

POLL = 0.05  # seconds between checks; runs are judged with ~1 s timeouts in tests
ARMED_POLL = 0.5  # an armed run's check for a cancel without a poke (a SIGTERM)
ARMED_WAIT_TIMEOUTS = 8  # an armed run not released in this many of its timeouts (+ a minute) gives up
REAP_LIMIT = 2.0  # how long to wait for SIGKILLed members to vanish
IDLE_READ_LIMIT = 1 << 20  # more new log than this at once is progress, unread


def write_json_atomic(path: Path, data: dict, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one; synced (a run's records)."""
    atomic.write_json_atomic(path, data, mode=mode, durable=True)


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    atomic.write_text_atomic(path, text, mode=mode, durable=True)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def now_iso() -> str:
    """UTC, to the millisecond, as datetime's isoformat writes it (without importing datetime:
    every run's supervisor starts afresh)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}+00:00"


def cancel_mode(run_dir: Path) -> str | None:
    """'term' or 'kill' once `kanban stop` asked for it, else None."""
    try:
        text = (run_dir / CANCEL).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return "kill" if text == "kill" else "term"


class Supervisor:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.spec: dict = {}
        self.proc: subprocess.Popen | None = None
        self.agent_start: int | None = None  # the agent's start time: its group is checked by it
        self.reason: str | None = None  # "timeout" | "stall" | "cancel" once we stop it
        self.terminated = False  # we got SIGTERM
        self.started: str | None = None  # both set by start()
        self.t0: float | None = None
        self.log_size = -1
        self.last_growth = 0.0
        self.retrying_since: float | None = None  # the log has shown only retry lines since then

    def install_signals(self) -> None:
        # Handlers, not SIG_IGN: an ignored signal would be inherited by the agent
        # across exec, a handler is reset to the default there.
        signal.signal(signal.SIGHUP, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, *_: object) -> None:
        self.terminated = True

    def run(self) -> int:
        try:
            self.spec = read_json(self.run_dir / SPEC) or {}
            if self.spec.get("armed") and not self.wait_for_release():
                result = self.result(None, "stopped before its turn came")
            else:
                self.start()
                self.watch()
                result = self.finish()
        except BaseException as exc:  # noqa: BLE001 - anything: the caller still needs a result
            import traceback

            traceback.print_exc()
            result = self.fail(exc)
        write_json_atomic(self.run_dir / RESULT, result)
        return 0

    def wait_for_release(self) -> bool:
        """An armed run: wait, the agent not started, for release (True) or a cancel (False)."""
        fifo = self.run_dir / RELEASE_FIFO
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(fifo, flags)
        # Not released in several of its own timeouts (the runs ahead of it, tried again, take at most
        # about that): whoever armed it is gone (a queue killed and never run again).
        deadline = time.monotonic() + ARMED_WAIT_TIMEOUTS * float(self.spec.get("timeout") or 0) + 60.0
        try:
            while True:
                if (self.run_dir / RELEASE).exists():
                    return True
                if self.terminated or cancel_mode(self.run_dir) or time.monotonic() >= deadline:
                    self.reason = "cancel"
                    return False
                readable, _, _ = select.select([fd], [], [], ARMED_POLL)
                if readable:
                    try:
                        data = os.read(fd, 64)
                    except BlockingIOError:
                        data = b"!"
                    if not data:  # a writer came and went: opened afresh, it waits for the next
                        os.close(fd)
                        fd = os.open(fifo, flags)
        finally:
            os.close(fd)

    def start(self) -> None:
        log = Path(self.spec["log"])
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.started, self.t0 = now_iso(), time.monotonic()
            self.proc = subprocess.Popen(
                self.spec["argv"],
                cwd=self.spec["cwd"],
                env=self.spec["env"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Unreaped until the end, so its pid (our pgid) and start time stay its own.
        self.agent_start = procs.process_start_time(self.proc.pid)
        self.last_growth = self.t0
        try:  # wakes the watch loop the instant the agent exits (Linux 5.3+)
            self.pidfd: int | None = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.write_agent_json()

    def write_agent_json(self) -> None:
        assert self.proc is not None  # called by start(), once the agent runs
        pid = self.proc.pid
        me = os.getpid()
        info = {
            "pid": pid,
            "pgid": pid,  # start_new_session: the agent leads its own group
            "start_time": self.agent_start,
            "supervisor_pid": me,
            "supervisor_start_time": procs.process_start_time(me),
            "started": self.started,
        }
        # Not synced: it names processes a power cut ends (a lost one reads as a supervisor gone).
        atomic.write_json_atomic(self.run_dir / AGENT, info)

    def leader_exited(self) -> bool:
        """True once the leader exited; WNOWAIT leaves it a zombie, which keeps
        its pid (our pgid) reserved so the sweeps cannot hit a stranger."""
        assert self.proc is not None  # watch() runs after start()
        res = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return res is not None

    def watch(self) -> None:
        while not self.leader_exited():
            self.reason = self.why_stop()
            if self.reason:
                self.stop_run(self.grace())
                return
            self.wait_a_little()

    def wait_a_little(self) -> None:
        """Up to POLL seconds, less if the agent exits meanwhile."""
        if self.pidfd is None:
            time.sleep(POLL)
            return
        try:
            select.select([self.pidfd], [], [], POLL)
        except InterruptedError:
            pass

    def why_stop(self) -> str | None:
        if self.terminated or cancel_mode(self.run_dir) or self.caller_gone():
            return "cancel"
        now = time.monotonic()
        assert self.t0 is not None  # watch() runs after start()
        if now - self.t0 >= float(self.spec["timeout"]):
            return "timeout"
        stall = self.spec.get("stall")
        last_growth = self.last_growth_time(now)
        if stall is not None and now - last_growth >= float(stall):
            return "stall"
        limit = self.spec.get("retry_limit")
        if limit is not None and self.retrying_since is not None and now - self.retrying_since >= float(limit):
            return "retrying"
        return None

    def caller_gone(self) -> bool:
        """A run submitted with a watched caller (the Ray job wrapper, kanban.executors.ray_job) ends
        when that caller is gone: a job Ray killed or lost leaves no agent behind."""
        watch = self.spec.get("watch")
        return isinstance(watch, dict) and not procs.alive(watch.get("pid"), watch.get("start_time"))

    def last_growth_time(self, now: float) -> float:
        try:
            size = os.stat(self.spec["log"]).st_size
        except FileNotFoundError:
            size = 0
        if size != self.log_size:
            if self.log_size < 0 or size < self.log_size or self.progress(self.log_size, size):
                self.last_growth, self.retrying_since = now, None
            elif self.retrying_since is None:
                self.retrying_since = now
            self.log_size = size
        return self.last_growth

    def progress(self, start: int, end: int) -> bool:
        """Whether the log's new bytes hold a line that is not a retry or reconnect line."""
        patterns = self.idle_patterns()
        if not patterns or end - start > IDLE_READ_LIMIT:
            return True
        # The agent may have swapped its log for a FIFO or a link: never block the watchdog on it.
        try:
            fd = os.open(self.spec["log"], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return True
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return True
            new = os.pread(fd, end - start, start).decode("utf-8", errors="replace")
        except OSError:
            return True
        finally:
            os.close(fd)
        lines = [line.strip() for line in new.splitlines() if line.strip()]
        return not lines or any(not any(p.search(line) for p in patterns) for line in lines)

    def idle_patterns(self) -> list:
        if not hasattr(self, "_idle"):
            import re

            self._idle = []
            for text in self.spec.get("idle_lines") or ():
                try:
                    self._idle.append(re.compile(text))
                except re.error:
                    pass  # a bad pattern must not stop the watchdog
        return self._idle

    def grace(self) -> float:
        return 0.0 if cancel_mode(self.run_dir) == "kill" else float(self.spec.get("grace", 5))

    def members(self, table: list[procs.Proc] | None = None) -> list[procs.Proc]:
        """What is alive of the run: every descendant of ours (orphans included: we are their
        subreaper) and the agent's process group, should anything of it have got past us (no
        subreaper on this kernel). Zombies do not count (the leader's pins its pgid)."""
        table = procs.table() if table is None else table
        assert self.proc is not None  # only asked about a run that started
        me, pgid = os.getpid(), self.proc.pid
        found = {p.pid: p for p in procs.descendants(me, table)}
        found.update((p.pid, p) for p in table if p.pgid == pgid and p.pid != me)
        return [p for p in found.values() if not p.dead]

    def monitors(self) -> set[int]:
        """The sandbox's own processes, bwrap outside and inside its pid namespace: they get no
        SIGTERM, since a bwrap that dies takes the agent along at once, without its grace."""
        if not self.spec.get("sandbox"):
            return set()
        assert self.proc is not None  # only asked about a run that started
        leader = self.proc.pid
        return {leader} | {p.pid for p in procs.table() if p.ppid == leader}

    def signal_all(self, sig: int, spare: set[int] | frozenset[int] = frozenset()) -> bool:
        """SIG to the agent's group and to every member of the run; True if anyone got it."""
        sent = False
        if not spare:
            assert self.proc is not None  # only asked about a run that started
            sent = procs.signal_group(self.proc.pid, self.agent_start, sig)
        for p in self.members():
            if p.pid not in spare:
                sent = procs.terminate(p.pid, p.start_time, sig) or sent
        return sent

    def stop_run(self, grace: float) -> None:
        """SIGTERM to all of the run (its group and every descendant), up to GRACE for it to go, then SIGKILL."""
        spare = self.monitors()
        if grace > 0 and self.signal_all(signal.SIGTERM, spare):
            end = time.monotonic() + grace
            while time.monotonic() < end and [p for p in self.members() if p.pid not in spare]:
                if cancel_mode(self.run_dir) == "kill":  # `stop --force` during the grace
                    break
                time.sleep(POLL)
        self.signal_all(signal.SIGKILL)

    def finish(self) -> dict:
        assert self.proc is not None  # run() calls it after start()
        pgid = self.proc.pid
        os.waitid(os.P_PID, pgid, os.WEXITED | os.WNOWAIT)  # the leader is done or dying
        table: list[procs.Proc] | None = procs.table()
        if self.members(table):  # what the agent left behind, in its group or daemonised
            self.stop_run(self.grace())
            table = None
        # Final sweep, while the zombie leader pins the pgid. With nothing left a moment ago, the
        # same look at /proc serves it: nothing of the run was alive to start anything since.
        self.sweep(table)
        result = self.result(self.proc.wait())
        return self.settle(result)

    def sweep(self, table: list[procs.Proc] | None = None) -> None:
        """SIGKILL until nothing of the run is left (up to REAP_LIMIT), reaping orphans that
        died as our children; never the leader, whose status proc.wait() collects."""
        end = time.monotonic() + REAP_LIMIT
        assert self.proc is not None  # only asked about a run that started
        while True:
            procs.signal_group(self.proc.pid, self.agent_start, signal.SIGKILL)
            table = procs.table() if table is None else table
            left = self.members(table)
            for p in left:
                procs.terminate(p.pid, p.start_time, signal.SIGKILL)
            self.reap_orphans(table)
            if not left or time.monotonic() >= end:
                return
            table = None
            time.sleep(0.01)

    def reap_orphans(self, table: list[procs.Proc] | None = None) -> None:
        leader = self.proc.pid if self.proc is not None else None
        for p in procs.table() if table is None else table:
            if p.ppid == os.getpid() and p.dead and p.pid != leader:
                try:
                    os.waitpid(p.pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def settle(self, result: dict) -> dict:
        """Under the sandbox: bring the agent's commits and branch out of it (sandbox.settle).
        What it refuses (a branch made a link to another) fails the run."""
        plan = self.spec.get("sandbox")
        if not plan:
            return result
        from kanban import sandbox

        try:
            problems = sandbox.settle(plan, self.spec.get("env") or {})
        except Exception as exc:  # noqa: BLE001 - the result must still be written
            import traceback

            traceback.print_exc()
            problems = [f"could not settle the sandbox's git work: {type(exc).__name__}: {exc}"]
        if problems:
            result["sandbox_problems"] = problems
            result["exit_code"] = None  # the engine then fails the run, naming the error
            result["error"] = "; ".join(problems)
        return result

    def result(self, returncode: int | None, error: str | None = None) -> dict:
        ended = time.monotonic()
        data = {
            "exit_code": returncode if returncode is not None and returncode >= 0 else None,
            "signal": -returncode if returncode is not None and returncode < 0 else None,
            "timed_out": self.reason == "timeout",
            "stalled": self.reason in ("stall", "retrying"),
            "retrying": self.reason == "retrying",
            "cancelled": self.reason == "cancel",
            "started": self.started or now_iso(),
            "ended": now_iso(),
            "duration": round(ended - self.t0, 3) if self.t0 else 0.0,
        }
        if error:
            data["error"] = error
        return data

    def fail(self, exc: BaseException) -> dict:
        """Best effort after a bug or a failed start: kill the group, report."""
        returncode = None
        if self.proc is not None:
            try:
                self.sweep()
                returncode = self.proc.wait(timeout=REAP_LIMIT)
            except Exception:  # noqa: BLE001 - best effort: the failure being reported is exc, not this
                pass
        if self.terminated:
            self.reason = "cancel"
        what = "agent did not start" if self.proc is None else "supervisor failed"
        result = self.result(returncode, f"{what}: {type(exc).__name__}: {exc}")
        if self.proc is not None:
            error = result["error"]
            result = self.settle(result)
            result["error"] = "; ".join(filter(None, [error, *result.get("sandbox_problems", [])]))
        return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kanban.supervisor RUN_DIR", file=sys.stderr)
        return 2
    try:
        os.setsid()  # normally the launcher already made us a session leader
    except OSError:
        pass
    procs.set_child_subreaper()  # orphans of the agent become ours: see members()
    sup = Supervisor(Path(args[0]).resolve())
    sup.install_signals()
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
