"""Repository states through the real CLI: a clear message or the right action, never a traceback.

Task branches are made by hand (as in test_merge_queue.py): `kanban/TASK-N` from
main with one commit, a worktree at `.worktrees/TASK-N`, a ready TESTING entry.
The agent command is a Python one-liner that exits at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import git, run_cli

from kanban import git as kgit
from kanban.errors import KanbanError

AGENT = json.dumps([sys.executable, "-c", "pass"])


def _init_repo(root: Path, branch: str = "main") -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", branch)
    (root / "README.md").write_text("# project\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "initial")
    return root


def _kanban(root: Path, *, main: str | None = "main", todo: str = "## TASK-1: first\n") -> None:
    head = f'main_branch = "{main}"\n' if main else ""
    (root / "kanban.toml").write_text(head + f"[agent]\ncommand = {AGENT}\ntimeout = \"20s\"\n")
    (root / "TODO.md").write_text("# TODO\n\n" + todo)
    (root / "TESTING.md").write_text("# Testing\n")
    (root / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n")
    (root / ".gitignore").write_text(".kanban/\n.worktrees/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "kanban project")


def _ready_task(root: Path, n: int, *, base: str = "main", title: str = "ready work") -> str:
    tid = f"TASK-{n}"
    wt = root / ".worktrees" / tid
    git(root, "worktree", "add", "-q", "--no-track", "-b", f"kanban/{tid}", str(wt), base)
    (wt / f"task{n}.txt").write_text(f"work of {tid}\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", f"{tid}: {title}")
    with (root / "TESTING.md").open("a") as out:
        out.write(f"\n## {tid}: {title}\nstatus: ready to merge\n")
    return tid


def _clean(proc) -> str:
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc.stdout + proc.stderr


def _merged(root: Path, tid: str, branch: str = "main") -> bool:
    return f"Merge {tid}:" in git(root, "log", branch, "--format=%s") and tid in (root / "CHANGELOG.md").read_text()


def _wait_runs_end(root: Path, timeout: float = 20.0) -> None:
    """Let the one-liner agents finish so nothing outlives the test."""
    end = time.monotonic() + timeout
    runs = root / ".kanban" / "runs"
    while time.monotonic() < end:
        pending = [p for p in runs.rglob("agent.json")] if runs.is_dir() else []
        if all((p.parent / "result.json").exists() for p in pending):
            return
        time.sleep(0.1)


@pytest.fixture
def project(tmp_path) -> Path:
    root = _init_repo(tmp_path / "repo")
    _kanban(root)
    return root


# --- detached HEAD ---------------------------------------------------------------------

def test_detached_head_tick_and_merge_queue(project):
    tid = _ready_task(project, 2)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ready task")
    git(project, "checkout", "-q", "--detach")
    _clean(run_cli(project, "tick", check_code=0))
    assert "## TASK-1" in (project / "IN_PROGRESS.md").read_text()
    _clean(run_cli(project, "merge-queue", check_code=0))
    assert _merged(project, tid)
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD").strip() == "HEAD"  # still detached
    _clean(run_cli(project, "preflight"))
    _wait_runs_end(project)


# --- main named otherwise -----------------------------------------------------------------

def test_main_named_master_without_setting_is_a_clear_error(tmp_path):
    root = _init_repo(tmp_path / "repo", branch="master")
    _kanban(root, main=None)
    for command in ("tick", "merge-queue"):
        proc = run_cli(root, command)
        out = _clean(proc)
        assert proc.returncode == 2, out
        assert "main_branch" in out and "'main'" in out
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (root / "IN_PROGRESS.md").exists()


@pytest.mark.parametrize("name", ["master", "trunk"])
def test_main_named_otherwise_with_setting_works(tmp_path, name):
    root = _init_repo(tmp_path / "repo", branch=name)
    _kanban(root, main=name)
    tid = _ready_task(root, 2, base=name)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ready")
    _clean(run_cli(root, "tick", check_code=0))
    assert "## TASK-1" in (root / "IN_PROGRESS.md").read_text()
    _clean(run_cli(root, "merge-queue", check_code=0))
    assert _merged(root, tid, name)
    _wait_runs_end(root)


# --- no commits ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["tick", "merge-queue", "preflight"])
def test_repository_with_no_commits(tmp_path, command):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "kanban.toml").write_text(f'[agent]\ncommand = {AGENT}\n')
    (root / "TODO.md").write_text("## TASK-1: first\n")
    proc = run_cli(root, command)
    out = _clean(proc)
    assert proc.returncode in (1, 2), out
    assert "commit" in out.lower(), out
    assert not (root / "IN_PROGRESS.md").exists()
    assert not (root / ".worktrees").exists()


# --- rebase or merge in progress in the main checkout -------------------------------------

def _conflict_on_main(root: Path) -> None:
    git(root, "checkout", "-q", "-b", "side")
    (root / "README.md").write_text("# side\n")
    git(root, "commit", "-q", "-am", "side")
    git(root, "checkout", "-q", "main")
    (root / "README.md").write_text("# main\n")
    git(root, "commit", "-q", "-am", "main edit")


@pytest.mark.parametrize("operation", ["merge", "rebase"])
def test_merge_or_rebase_in_progress_in_main_checkout_blocks_the_merge_queue(project, operation):
    tid = _ready_task(project, 2)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ready")
    _conflict_on_main(project)
    assert subprocess.run(["git", operation, "side"], cwd=project, capture_output=True).returncode != 0
    before = git(project, "rev-parse", "main")
    proc = run_cli(project, "merge-queue")
    out = _clean(proc)
    assert proc.returncode == 1, out
    assert f"a git {operation} is in progress" in out.lower(), out
    assert git(project, "rev-parse", "main") == before
    if operation == "merge":
        assert (project / ".git" / "MERGE_HEAD").exists()  # the person's merge is left as it was
    else:
        assert (project / ".git" / "rebase-merge").is_dir()
    assert "## " + tid in (project / "TESTING.md").read_text()


# --- shallow clone --------------------------------------------------------------------------

def test_shallow_clone(tmp_path):
    origin = _init_repo(tmp_path / "origin")
    for i in range(3):
        (origin / f"f{i}.txt").write_text(f"{i}\n")
        git(origin, "add", "-A")
        git(origin, "commit", "-q", "-m", f"c{i}")
    root = tmp_path / "repo"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(root))
    assert (root / ".git" / "shallow").exists()
    _kanban(root)
    tid = _ready_task(root, 2)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ready")
    proc = run_cli(root, "tick")
    out = _clean(proc)
    assert proc.returncode == 0, out
    assert "## TASK-1" in (root / "IN_PROGRESS.md").read_text()
    proc = run_cli(root, "merge-queue")
    out = _clean(proc)
    assert proc.returncode == 0, out
    assert _merged(root, tid)
    _wait_runs_end(root)


# --- submodules -----------------------------------------------------------------------------

def test_repository_with_a_submodule(tmp_path):
    sub = _init_repo(tmp_path / "sub")
    root = _init_repo(tmp_path / "repo")
    git(root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{sub}", "vendor/sub")
    git(root, "commit", "-q", "-m", "add submodule")
    _kanban(root)
    tid = _ready_task(root, 2)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ready")
    out = _clean(run_cli(root, "tick", check_code=0))
    assert "## TASK-1" in (root / "IN_PROGRESS.md").read_text(), out
    assert (root / ".worktrees" / "TASK-1").is_dir()
    _clean(run_cli(root, "merge-queue", check_code=0))
    assert _merged(root, tid)
    assert (root / "vendor" / "sub" / "README.md").exists()  # the person's submodule checkout untouched
    _wait_runs_end(root)


# --- things deleted by hand -----------------------------------------------------------------

def test_task_worktree_deleted_by_hand_is_recreated_from_its_branch(project):
    import shutil

    tid = "TASK-1"
    wt = project / ".worktrees" / tid
    git(project, "worktree", "add", "-q", "--no-track", "-b", f"kanban/{tid}", str(wt), "main")
    (wt / "half.txt").write_text("half done\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "half")
    tip = git(wt, "rev-parse", "HEAD").strip()
    (project / "TODO.md").write_text("# TODO\n")
    (project / "IN_PROGRESS.md").write_text("# In progress\n\n## TASK-1: first\n")
    shutil.rmtree(wt)
    proc = run_cli(project, "tick")
    out = _clean(proc)
    assert proc.returncode == 0, out
    assert wt.is_dir() and (wt / "half.txt").read_text() == "half done\n", out
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD").strip() == f"kanban/{tid}"
    assert git(project, "merge-base", "--is-ancestor", tip, f"kanban/{tid}") == ""
    _wait_runs_end(project)


def test_task_branch_deleted_by_hand_while_ready_goes_back_with_a_note(project):
    tid = _ready_task(project, 2)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ready")
    git(project, "worktree", "remove", "--force", str(project / ".worktrees" / tid))
    git(project, "branch", "-D", f"kanban/{tid}")
    before = git(project, "rev-parse", "main")
    out = _clean(run_cli(project, "merge-queue"))
    assert git(project, "rev-parse", "main") == before
    text = (project / "TESTING.md").read_text() + (project / "IN_PROGRESS.md").read_text() \
        if (project / "IN_PROGRESS.md").exists() else (project / "TESTING.md").read_text()
    assert tid in text, out
    assert "ready to merge" not in text.split(tid, 1)[1].split("\n## ")[0], text
    assert "branch" in text.split(tid, 1)[1].lower(), text  # a note says what happened


# --- index.lock -----------------------------------------------------------------------------

def test_transient_index_lock_is_retried(repo):
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    (repo / "new.txt").write_text("x\n")
    remover = threading.Timer(0.3, lock.unlink)
    remover.start()
    try:
        start = time.monotonic()
        kgit.run(repo, "add", "new.txt")
        assert time.monotonic() - start >= 0.25
    finally:
        remover.join()
    assert "new.txt" in git(repo, "diff", "--cached", "--name-only")


def test_index_lock_held_for_good_is_a_clear_error(repo):
    (repo / ".git" / "index.lock").write_text("")
    (repo / "new.txt").write_text("x\n")
    with pytest.raises(KanbanError) as info:
        kgit.run(repo, "add", "new.txt")
    assert "index.lock" in str(info.value) and "\n" not in str(info.value)
    assert info.value.code == 1


def test_index_lock_held_for_good_through_the_merge_queue(project):
    tid = _ready_task(project, 2)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "ready")
    (project / ".git" / "index.lock").write_text("")
    before = git(project, "rev-parse", "main")
    proc = run_cli(project, "merge-queue")
    out = _clean(proc)
    assert proc.returncode == 1, out
    assert "index.lock" in out or "lock" in out.lower(), out
    main_after = git(project, "rev-parse", "main")
    (project / ".git" / "index.lock").unlink()
    if main_after != before:  # main may only move together with the checkout
        assert git(project, "status", "--porcelain", "--untracked-files=no") == ""
    assert "## " + tid in (project / "TESTING.md").read_text() or _merged(project, tid)
