"""A scripted fake agent and a project around it, for the engine's acceptance tests.

The agent is a real program (a small Python script run as argv by the real
supervisor, in a real git worktree). What it does is decided by a rules file
read at each start, so a test can change the script between runs:

    rules = [
        {"task": "TASK-1", "role": "task", "attempt": 1, "steps": [["print", "hi"], ["exit", 1]]},
        {"role": "reviewer", "steps": [["report", "LGTM"]]},
    ]

The first rule whose given keys (task, role, attempt) all match wins; with no
match, a task agent commits a file and exits 0, reviewers and testers exit 0.
Every agent appends JSON lines to a shared event log (one O_APPEND write per
line): a "start" with its KANBAN_* environment, an "end" with its exit code.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kanban import procs
from kanban.commands.tick import open_engine
from kanban.history import History, Run
from kanban.store import load_board

AGENT_SOURCE = r'''
import json, os, signal, subprocess, sys, time
from pathlib import Path

RULES, PROMPT_FILE, MARKER = sys.argv[1], sys.argv[2], sys.argv[3]
spec = json.loads(Path(RULES).read_text())
env = os.environ
task, role, attempt = env["KANBAN_TASK_ID"], env["KANBAN_ROLE"], int(env["KANBAN_ATTEMPT"])


def log(event, **data):
    line = json.dumps({"event": event, "t": time.time(), "task": task, "role": role,
                       "attempt": attempt, "pid": os.getpid(), **data}) + "\n"
    fd = os.open(spec["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def git(*args):
    subprocess.run(["git", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)


def started_at():
    """This process's start (exec), as wall-clock time: /proc/self/stat counts clock ticks since boot."""
    with open("/proc/self/stat", "rb") as f:
        data = f.read()
    ticks = int(data[data.rindex(b")") + 1:].split()[19])
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


def say(text):
    print(text, flush=True)


def step(op, *args):
    if op == "print":
        say(args[0])
    elif op == "sleep":
        time.sleep(args[0])
    elif op == "last":  # sleep until ARGS[0] s after this process began (its own start-up counted in)
        time.sleep(max(0.0, started_at() + args[0] - time.time()))
    elif op == "commit":  # append a line to a file (default: one per run) and commit it
        path = Path(args[0] if args else f"work/{task}-{role}-{attempt}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(f"{task} {role} attempt {attempt}\n")
        git("add", str(path))
        git("commit", "-q", "-m", f"{task}: {role} attempt {attempt}")
        say(f"committed {path}")
    elif op == "write":
        Path(args[0]).write_text(args[1])
    elif op == "git":  # any git command in the agent's checkout (a planner that misbehaves)
        git(*args)
    elif op == "report":
        Path(env["KANBAN_REPORT_FILE"]).write_text(args[0] + "\n")
    elif op == "spawn":  # grandchildren in our process group, one deaf to SIGTERM
        mark = args[0] if args else MARKER
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", mark])
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
                          mark, "deaf"])
        say("spawned grandchildren")
    elif op == "wait_for":  # until a file exists (bounded)
        end = time.time() + 120
        while not Path(args[0]).exists() and time.time() < end:
            time.sleep(0.02)
    elif op == "barrier":  # arrive, then wait (bounded) until N agents have arrived at DIR
        Path(args[0]).mkdir(parents=True, exist_ok=True)
        Path(args[0], f"{task}-{role}-{attempt}").touch()
        end = time.time() + args[2] if len(args) > 2 else time.time() + 8
        while len(os.listdir(args[0])) < args[1] and time.time() < end:
            time.sleep(0.02)
    elif op == "hang":
        while True:
            time.sleep(600)
    elif op == "chatter":  # keep printing for N seconds
        end = time.time() + args[0]
        while time.time() < end:
            say("still working...")
            time.sleep(0.1)
    elif op == "exit":
        log("end", code=args[0])
        sys.exit(args[0])
    elif op == "crash":
        raise RuntimeError("the fake agent crashed on purpose")
    else:
        raise SystemExit(f"unknown step {op}")


def steps_for():
    for rule in spec.get("rules", []):
        if all(rule.get(k) in (None, v) for k, v in (("task", task), ("role", role), ("attempt", attempt))):
            return rule["steps"]
    return [["commit"]] if role == "task" else []


extra = {}
for name in spec.get("read_files", []):
    p = Path(name)
    extra[name] = p.read_text() if p.is_file() else None
log("start", port=env.get("KANBAN_PORT"), worktree=env.get("KANBAN_WORKTREE"), cwd=os.getcwd(),
    prompt_file=PROMPT_FILE, report_file=env.get("KANBAN_REPORT_FILE"), pgid=os.getpgid(0),
    env={k: v for k, v in env.items() if k.startswith("KANBAN_")}, files=extra)
say(f"fake agent: {role} for {task}, attempt {attempt}")
for s in steps_for():
    step(*s)
log("end", code=0)
'''

BOARD_FILES = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")
COLUMN_FILE = {"TODO": "TODO.md", "IN_PROGRESS": "IN_PROGRESS.md", "REVIEW": "REVIEW.md", "TESTING": "TESTING.md"}


def task_md(task_id: str, title: str = "", *, files: str = "", depends: str = "", priority: int | None = None,
            body: str = "") -> str:
    lines = [f"## {task_id}: {title or 'Work on ' + task_id}"]
    if priority is not None:
        lines.append(f"priority: {priority}")
    if depends:
        lines.append(f"depends: {depends}")
    if files:
        lines.append(f"files: {files}")
    lines += ["", body or f"Do the work of {task_id}.", ""]
    return "\n".join(lines) + "\n"


@dataclass
class Project:
    root: Path
    kit: Path  # outside the repository: agent script, rules, event log
    marker: str

    @property
    def command(self) -> list[str]:
        """The configured agent command (argv template)."""
        return [sys.executable, str(self.kit / "agent.py"), str(self.rules_file), "{prompt_file}", self.marker]

    @property
    def rules_file(self) -> Path:
        return self.kit / "rules.json"

    @property
    def log_file(self) -> Path:
        return self.kit / "events.jsonl"

    def set_rules(self, rules: list[dict], read_files: tuple[str, ...] = ()) -> None:
        data = {"log": str(self.log_file), "rules": rules, "read_files": list(read_files)}
        tmp = self.rules_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.rules_file)

    def flag(self, name: str) -> Path:
        """A file path agents can wait for (["wait_for", str(flag)]); touch it to release them."""
        return self.kit / f"flag-{name}"

    # -- reading state -------------------------------------------------------------

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        found = [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]
        return [e for e in found if kind is None or e["event"] == kind]

    def where(self, task_id: str) -> tuple[str, frozenset[str], str | None] | None:
        """(column, markers, status) of a task on the board, or None when it is not on it."""
        for t in load_board(self.root, check=False).tasks():
            if t.id == task_id:
                return t.column.value, t.markers, t.status
        return None

    def column(self, task_id: str) -> str | None:
        found = self.where(task_id)
        return found[0] if found else None

    def entry_text(self, task_id: str) -> str:
        board = load_board(self.root, check=False)
        found = board.find(task_id)
        assert found is not None, f"{task_id} is not on the board"
        return found[1].text()

    def board_bytes(self) -> dict[str, bytes | None]:
        return {name: (self.root / name).read_bytes() if (self.root / name).exists() else None
                for name in BOARD_FILES}

    def runs(self, task: str | None = None) -> list[Run]:
        with History(self.root) as h:
            return h.runs(task)

    def agent_pid(self, run) -> int | None:
        """RUN's agent pid, as the local executor knows it (the history keeps no pids)."""
        from kanban.runner import LocalRunner

        runner = LocalRunner(self.root)
        return runner.pid(run.run_path(runner))

    def history_events(self, task: str | None = None) -> list[tuple]:
        with History(self.root) as h:
            return h.events(task)

    def prompt(self, task_id: str, role: str, attempt: int) -> str:
        return (self.root / ".kanban" / "runs" / task_id / f"{role}-{attempt}" / "prompt.md").read_text()

    # -- driving -------------------------------------------------------------------

    def drive(self, until: Callable[[], bool], *, timeout: float = 30.0, step: float = 0.05,
              what: str = "the expected state") -> list[str]:
        """Tick in-process until `until()` holds; returns every reaped/started/problem line."""
        lines: list[str] = []
        engine = open_engine(self.root)
        try:
            deadline = time.monotonic() + timeout
            while True:
                report = engine.tick()
                lines += report.reaped + report.started + [f"problem: {p}" for p in report.problems]
                if until():
                    return lines
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {what} after {timeout}s; ticks said:\n" + "\n".join(lines)
                                         + "\n" + self.describe())
                time.sleep(step)
        finally:
            engine.close()

    def tick(self):
        engine = open_engine(self.root)
        try:
            return engine.tick()
        finally:
            engine.close()

    def describe(self) -> str:
        out = []
        for name in BOARD_FILES[:4]:
            path = self.root / name
            out.append(f"--- {name}\n{path.read_text() if path.exists() else '(missing)'}")
        return "\n".join(out)

    # -- cleanup -------------------------------------------------------------------

    def kill_everything(self) -> None:
        """Every process group a run of this project started, then anything bearing our marker."""
        runs = self.root / ".kanban" / "runs"
        if runs.is_dir():
            for info_file in runs.rglob("agent.json"):
                try:
                    info = json.loads(info_file.read_text())
                except (OSError, ValueError):
                    continue
                procs.signal_group(info["pgid"], info["start_time"], signal.SIGKILL)
                procs.terminate(info["supervisor_pid"], info["supervisor_start_time"], signal.SIGKILL)
        for needle in (self.marker, str(self.kit), str(self.root / ".kanban")):
            for pid in live_pids(needle):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def live_pids(needle: str) -> list[int]:
    """Non-zombie processes whose command line contains NEEDLE."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            state = Path(entry.path, "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def make_project(repo: Path, kit: Path, tasks: str, *, rules: list[dict] | None = None, pool_size: int = 6,
                 timeout: str = "10s", stall: str = "30s", kill_grace: str = "0.3s", extra_toml: str = "",
                 other_files: dict[str, str] | None = None, read_files: tuple[str, ...] = ()) -> Project:
    """The `repo` fixture made a kanban project: config, board, prompts, all committed on main."""
    from kanban.commands.init import init

    kit.mkdir(parents=True, exist_ok=True)
    marker = f"kanban-engine-test-{uuid.uuid4().hex}"
    agent = kit / "agent.py"
    agent.write_text(textwrap.dedent(AGENT_SOURCE))
    project = Project(repo, kit, marker)
    project.set_rules(rules or [], read_files)
    command = project.command
    (repo / "kanban.toml").write_text(textwrap.dedent(f"""\
        main_branch = "main"
        pool_size = {pool_size}

        [agent]
        command = {json.dumps(command)}
        timeout = "{timeout}"
        stall = "{stall}"
        kill_grace = "{kill_grace}"
        """) + textwrap.dedent(extra_toml))
    (repo / "TODO.md").write_text("# TODO\n\nTasks for the fake agents.\n\n" + tasks)
    for name, text in (other_files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    init(repo)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "kanban project")
    return project


def _git(cwd: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t comes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = now = 0
    for _, delta in points:
        now += delta
        best = max(best, now)
    return best
