"""`kanban run --watch` and one run per repository: a real `kanban run` subprocess, real agents
(the scripted fake of agents_kit.py), hand edits to TODO.md while it runs, SIGINT to end it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agents_kit import live_pids, task_md
from conftest import run_cli

from kanban.commands.run import run as run_loop

pytestmark = pytest.mark.timeout(60)

ESCALATED = frozenset({"ESCALATED"})


def wait_for(condition, timeout: float = 40.0, what: str = "the condition", proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"kanban run ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


class Watch:
    """`python -m kanban -C ROOT run --watch` as a user starts it, its output in files."""

    def __init__(self, root: Path, out_dir: Path, *args: str) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = out_dir / "stdout", out_dir / "stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(root), "run", *args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=os.environ.copy())

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def interrupt(self, timeout: float = 30.0) -> int:  # a bound on a loaded machine, not a speed check
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def watches():
    started: list[Watch] = []

    def start(root: Path, out_dir: Path, *args: str) -> Watch:
        w = Watch(root, out_dir, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.kill()


def holds(pid: int, path: Path) -> bool:
    """Whether process PID has PATH open."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def in_changelog(p, task: str) -> bool:
    return f"{task}:" in (p.root / "CHANGELOG.md").read_text()


def test_watch_picks_up_a_hand_added_task_one_run_per_repo_and_sigint_ends_it_with_130(kit, watches, tmp_path):
    p = kit(task_md("TASK-1", "First"))
    go = p.flag("go")
    p.set_rules([{"task": "TASK-1", "role": "task", "steps": [["wait_for", str(go)], ["commit"]]}])
    w = watches(p.root, tmp_path / "w", "--watch")
    wait_for(lambda: p.events("start"), what="TASK-1 started", proc=w.proc)
    # the run lock is the run's alone: no agent or supervisor inherited its descriptor
    lock = (p.root / ".kanban" / "run.lock").resolve()
    assert str(w.proc.pid) in lock.read_text()
    for pid in set(live_pids(p.marker) + live_pids(str(p.root / ".kanban"))):
        assert not holds(pid, lock), f"process {pid} holds the run lock"
    assert holds(w.proc.pid, lock)
    go.touch()
    wait_for(lambda: in_changelog(p, "TASK-1"), what="TASK-1 merged", proc=w.proc)
    wait_for(lambda: "watching the board" in w.out, what="the idle line", proc=w.proc)

    # idle: no busy loop (a stat of six files per wake), and it keeps running
    before, at = w.cpu_seconds(), time.monotonic()
    # one run per repository: a second one, with or without --watch, names the first and exits 2
    for args in (("run",), ("run", "--watch", "--no-merge")):
        second = run_cli(p.root, *args)
        assert second.returncode == 2, (second.stdout, second.stderr)
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(f"error: another 'kanban run' (pid {w.proc.pid}, started "), lines[0]
        assert "drives this repository" in lines[0] and f"kill {w.proc.pid}" in lines[0]
    time.sleep(max(0.0, 2.0 - (time.monotonic() - at)))
    assert w.proc.poll() is None
    assert w.cpu_seconds() - before < 0.25 * (time.monotonic() - at), "the idle watch is spinning"

    # a person appends a task by hand (no ID yet) long after the board drained
    with (p.root / "TODO.md").open("a") as f:
        f.write("\n## Added by hand later\n\nDo the later work.\n")
    added = time.time()
    wait_for(lambda: any(e["task"] == "TASK-2" for e in p.events("start")), timeout=8, what="TASK-2 started",
             proc=w.proc)
    first = min(e["t"] for e in p.events("start") if e["task"] == "TASK-2")
    assert first - added < 3.0, "the hand edit was noticed by the periodic pass, not by the board's stat"
    wait_for(lambda: in_changelog(p, "TASK-2"), what="TASK-2 merged", proc=w.proc)
    wait_for(lambda: w.out.count("watching the board") >= 2, what="idle again", proc=w.proc)

    assert w.interrupt() == 130
    assert "interrupted: no agent is running; the board is consistent" in w.out
    assert live_pids(p.marker) == [] and live_pids(str(p.kit)) == []
    assert "nothing left to do" not in w.out  # --watch does not end on its own


def test_watch_resumes_an_escalated_task_a_person_frees(kit, watches, tmp_path):
    p = kit(task_md("TASK-1", "Flaky"))
    p.set_rules([{"task": "TASK-1", "role": "task", "attempt": 1, "steps": [["exit", 1]]},
                 {"task": "TASK-1", "role": "task", "attempt": 2, "steps": [["exit", 1]]}])
    w = watches(p.root, tmp_path / "w", "--watch", "--no-merge")
    wait_for(lambda: p.where("TASK-1") and p.where("TASK-1")[1] == ESCALATED, what="TASK-1 escalated",
             proc=w.proc)
    time.sleep(0.6)  # left alone while escalated: no third attempt
    assert [r.attempt for r in p.runs("TASK-1")] == [1, 2]

    # a person's edit in progress that makes the board invalid does not end the watch
    todo = p.root / "TODO.md"
    kept = todo.read_text()
    todo.write_text(kept + "\n## TASK-1: a copy of it, pasted\n")
    wait_for(lambda: "this pass stopped" in w.out, what="the bad board said", proc=w.proc)
    assert "TASK-1" in w.out.split("this pass stopped")[1].splitlines()[0]
    todo.write_text(kept)

    board = p.root / "IN_PROGRESS.md"  # the person frees it by hand (what `kanban retry` does too)
    text = board.read_text()
    assert "## [ESCALATED] TASK-1:" in text
    board.write_text(text.replace("## [ESCALATED] TASK-1:", "## TASK-1:"))
    wait_for(lambda: p.where("TASK-1") == ("TESTING", frozenset(), "ready to merge"), what="TASK-1 ready",
             proc=w.proc)
    assert [r.attempt for r in p.runs("TASK-1") if r.role == "task"] == [1, 2, 3]
    assert w.out.count("this pass stopped") == 1 and "the board reads again" in w.out
    w.proc.send_signal(signal.SIGTERM)  # `kill PID`, as the second run's hint says: ends it as Ctrl-C does
    assert w.proc.wait(timeout=30) == 130 and "interrupted: " in w.out, (w.out, w.err)


def test_a_lock_file_left_behind_does_not_block(kit):
    p = kit("")
    lock = p.root / ".kanban" / "run.lock"
    lock.parent.mkdir(exist_ok=True)
    # the file left behind names a dead pid and nobody holds the lock: no obstacle
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "started": time.time() - 3600}))
    assert run_loop(p.root, no_merge=False, live=False) == 0
    assert lock.read_text() == ""  # cleared by its holder on the way out
    lock.write_text("garbage from an old crash, not json\n")
    assert run_loop(p.root, no_merge=False, live=False) == 0


@pytest.mark.heavy
def test_watch_picks_up_a_task_added_by_hand_30_s_after_it_started(kit, watches, tmp_path):
    """The acceptance as written: nothing on the board, a task typed in 30 s later runs to CHANGELOG.md."""
    p = kit("")
    w = watches(p.root, tmp_path / "w", "--watch")
    started = time.monotonic()
    wait_for(lambda: "watching the board" in w.out, what="the idle line", proc=w.proc)
    time.sleep(max(0.0, 30.0 - (time.monotonic() - started)))
    assert w.proc.poll() is None, (w.out, w.err)
    with (p.root / "TODO.md").open("a") as f:
        f.write("\n## Typed in half a minute later\n\nDo it.\n")
    added = time.time()
    wait_for(lambda: any(e["task"] == "TASK-1" for e in p.events("start")), timeout=8, what="TASK-1 started",
             proc=w.proc)
    assert min(e["t"] for e in p.events("start") if e["task"] == "TASK-1") - added < 3.0
    wait_for(lambda: in_changelog(p, "TASK-1"), what="TASK-1 merged", proc=w.proc)
    assert w.interrupt() == 130
