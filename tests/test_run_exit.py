"""`kanban run`'s exit status and what it says about a dirty checkout and a blocked merge queue:
a real `python -m kanban run` subprocess, real agents (agents_kit's scripted fake), real git."""

from __future__ import annotations

import pytest
from agents_kit import task_md
from conftest import git, run_cli

pytestmark = pytest.mark.timeout(60)


def test_a_dirty_checkout_is_said_once_and_its_waiting_task_once_then_exit_1(kit):
    files = {f"src/f{n}.py": f"# {n}\n" for n in range(10)}
    p = kit(task_md("TASK-1", "Touches f0", files="src/f0.py") + task_md("TASK-2", "Slow, elsewhere", files="lib/x.py"),
            other_files=files)
    p.set_rules([{"task": "TASK-1", "role": "task", "steps": [["commit", "src/f0.py"]]},
                 # TASK-2 keeps the run going for many passes while TASK-1 waits to merge
                 {"task": "TASK-2", "role": "task", "steps": [["sleep", 2.0], ["commit", "lib/x.py"]]}])
    for name in files:  # the person's uncommitted work in ten files
        (p.root / name).write_text("# my local edit\n")
    proc = run_cli(p.root, "run")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    out = proc.stdout + proc.stderr

    note = [line for line in proc.stderr.splitlines() if "has uncommitted changes in" in line]
    assert len(note) == 1, proc.stderr
    assert "src/f0.py" in note[0] and "and 2 more" in note[0] and "wait to merge" in note[0]
    assert "TODO.md" not in note[0]  # the board files are kanban's and the person's working files

    waiting = [line for line in out.splitlines() if "waiting to merge" in line and "TASK-1" in line]
    assert len(waiting) == 2, out  # the queue's line once, and the summary's
    assert any(line.startswith("waiting to merge until you commit or stash") for line in waiting)
    assert p.where("TASK-2") is None and p.where("TASK-1")[2] == "ready to merge"
    assert git(p.root, "show", "main:src/f0.py") == "# 0\n"  # the person's file was not touched
    assert (p.root / "src/f0.py").read_text() == "# my local edit\n"


def test_a_blocked_merge_queue_is_said_once_and_an_escalation_is_named_both_exit_1(kit):
    p = kit(task_md("TASK-1", "Fails twice") + task_md("TASK-2"))
    # TASK-2 is ready early; TASK-1's two failures keep the run going for many passes meanwhile
    p.set_rules([{"task": "TASK-1", "role": "task", "attempt": 1, "steps": [["sleep", 0.8], ["exit", 1]]},
                 {"task": "TASK-1", "role": "task", "attempt": 2, "steps": [["sleep", 0.8], ["exit", 1]]}])
    rebase = p.root / ".git" / "rebase-merge"  # a person's rebase of main, under way
    rebase.mkdir()
    (rebase / "head-name").write_text("refs/heads/main\n")
    proc = run_cli(p.root, "run")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    stopped = [line for line in proc.stdout.splitlines() if "rebase is in progress" in line]
    assert len(stopped) == 2, proc.stdout  # when it first blocked, and in the summary
    assert any(line.startswith("merge queue blocked: ") for line in stopped)
    assert git(p.root, "log", "--oneline", "main").count("\n") == 2  # main did not move
    assert "escalated, waiting for a person: TASK-1" in proc.stdout
    assert "ready but not merged: TASK-2" in proc.stdout
