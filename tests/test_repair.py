"""Repair on real repositories: each inconsistency a crash or a person leaves, made by hand, then fixed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, git, run_cli

from kanban.commands.init import init
from kanban.config import load_config
from kanban.history import History
from kanban.repair import find_problems, repair
from kanban.store import load_board

CONFIG = """\
main_branch = "main"

[agent]
preset = "demo"
timeout = "20s"

[merge]
verify = ["python3", "-c", "pass"]
"""


@pytest.fixture
def board_repo(repo: Path) -> Path:
    (repo / "kanban.toml").write_text(CONFIG)
    init(repo)
    git(repo, "add", "-A")
    # init keeps the working board out of git; these tests track it, as a team sharing its board does
    git(repo, "add", "-f", "TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md")
    git(repo, "commit", "-q", "-m", "kanban")
    return repo


def entry(task_id: str, title: str = "a task") -> str:
    return f"\n## {task_id}: {title}\nfiles: src/{task_id}.py\n\nBody of {task_id}.\n"


def write_board(root: Path, **files: str) -> None:
    for name, body in files.items():
        (root / f"{name}.md").write_text(f"# {name}\n" + body)


def do_repair(root: Path, scope: str = "full") -> list[str]:
    with History(root) as h:
        return repair(root, load_config(root), h, scope=scope)


def column_of(root: Path, task_id: str) -> list[str]:
    board = load_board(root, check=False)
    return [f.column.value for f, e in board.located() if e.task_id == task_id]


def make_branch(root: Path, task_id: str, *, commit: bool, worktree: bool = True) -> Path:
    path = root / ".worktrees" / task_id
    git(root, "worktree", "add", "-q", "-b", f"kanban/{task_id}", str(path), "main")
    if commit:
        (path / f"{task_id}.txt").write_text("work\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"{task_id} work")
    if not worktree:
        git(root, "worktree", "remove", "--force", str(path))
    return path


# -- (a) an entry in two files ------------------------------------------------------------


def test_duplicate_later_stage_wins_without_history(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-1", commit=True, worktree=False)
    write_board(board_repo, TODO=entry("TASK-1"), IN_PROGRESS=entry("TASK-1"))
    lines = do_repair(board_repo)
    assert lines == ["found TASK-1 in both TODO.md and IN_PROGRESS.md; kept the copy in IN_PROGRESS.md, "
                     "removed the stale one from TODO.md"]
    assert column_of(board_repo, "TASK-1") == ["IN_PROGRESS"]
    load_board(board_repo)  # valid again
    assert do_repair(board_repo) == []


def _in_review_and_testing(root: Path, *logged: str) -> None:
    """TASK-2 in both REVIEW.md and TESTING.md, with its pick and the LOGGED transitions in the history."""
    steps = {"task_ok": ("IN_PROGRESS", "REVIEW"), "review_ok": ("REVIEW", "TESTING")}
    make_branch(root, "TASK-2", commit=True, worktree=False)
    write_board(root, REVIEW=entry("TASK-2"), TESTING=entry("TASK-2"))
    with History(root) as h:
        h.event("TASK-2", "picked", "TODO", "IN_PROGRESS")
        for kind in logged:
            h.event("TASK-2", kind, *steps[kind])


def test_duplicate_after_a_send_back_follows_the_history(board_repo: Path) -> None:
    # a send-back TESTING -> REVIEW crashed between its two writes (its event is logged after them):
    # the last logged transition brought the task into TESTING, so the REVIEW copy is the current one
    _in_review_and_testing(board_repo, "task_ok", "review_ok")
    lines = do_repair(board_repo)
    assert lines == ["found TASK-2 in both REVIEW.md and TESTING.md; kept the copy in REVIEW.md, "
                     "removed the stale one from TESTING.md"]
    assert column_of(board_repo, "TASK-2") == ["REVIEW"]
    with History(board_repo) as h:
        assert [e[5] for e in h.events("TASK-2") if e[2] == "repair"] == lines


def test_duplicate_of_a_forward_move_keeps_the_target(board_repo: Path) -> None:
    _in_review_and_testing(board_repo, "task_ok")
    assert do_repair(board_repo) == ["found TASK-2 in both REVIEW.md and TESTING.md; kept the copy in TESTING.md, "
                                     "removed the stale one from REVIEW.md"]


def test_tick_scope_leaves_finished_tasks_to_the_merge_queue(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-3", commit=True)
    git(board_repo, "merge", "-q", "--no-ff", "-m", "Merge TASK-3", "kanban/TASK-3")
    (board_repo / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n### Added\n\n- TASK-3: a task\n")
    assert do_repair(board_repo, scope="tick") == []
    assert len(do_repair(board_repo, scope="merge")) == 2


def test_duplicate_board_runs_tick_and_is_repaired_there(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-1", commit=True, worktree=False)
    write_board(board_repo, TODO=entry("TASK-1"), IN_PROGRESS=entry("TASK-1"))
    # not exit 2: an entry left in two files by a crash is not bad input, the tick repairs it first
    proc = run_cli(board_repo, "tick", "--json", check_code=0)
    out = json.loads(proc.stdout)
    assert out["repaired"] == ["found TASK-1 in both TODO.md and IN_PROGRESS.md; kept the copy in "
                               "IN_PROGRESS.md, removed the stale one from TODO.md"]
    assert column_of(board_repo, "TASK-1") == ["IN_PROGRESS"]
    run_cli(board_repo, "stop", "TASK-1", "--force")


def test_merged_task_still_in_testing_is_removed(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-3", commit=True)
    git(board_repo, "merge", "-q", "--no-ff", "-m", "Merge TASK-3", "kanban/TASK-3")
    write_board(board_repo, TESTING=entry("TASK-3").replace("files:", "status: ready\nfiles:"))
    (board_repo / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n### Added\n\n- TASK-3: a task\n")
    lines = do_repair(board_repo)
    assert lines == [
        "found TASK-3 in CHANGELOG.md and TESTING.md with its branch merged into main; removed it from TESTING.md",
        # the fix reveals the next: the worktree and merged branch of a finished task go in the same repair
        "found worktree .worktrees/TASK-3 of a task in CHANGELOG.md; removed the worktree",
        "found branch kanban/TASK-3 of a task in CHANGELOG.md; deleted it (fully merged into main)"]
    assert column_of(board_repo, "TASK-3") == []
    assert git(board_repo, "branch", "--list", "kanban/*") == ""


# -- (b) a task whose worktree and branch are gone ------------------------------------------


def test_task_without_worktree_or_branch_is_noted_and_left(board_repo: Path) -> None:
    write_board(board_repo, REVIEW=entry("TASK-4"))
    before = (board_repo / "REVIEW.md").read_bytes()
    assert do_repair(board_repo) == ["found TASK-4 in REVIEW.md with neither worktree nor branch; left it: "
                                     "the next agent starts from main on a fresh branch"]
    assert (board_repo / "REVIEW.md").read_bytes() == before


def test_task_with_branch_but_no_worktree_is_fine(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-5", commit=True, worktree=False)
    write_board(board_repo, IN_PROGRESS=entry("TASK-5"))
    assert do_repair(board_repo) == []


# -- (c) worktrees and branches of no task -------------------------------------------------------


def test_orphan_merged_branch_and_worktree_are_removed(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-6", commit=False)
    lines = do_repair(board_repo)
    assert lines == ["found worktree .worktrees/TASK-6 of a task on no board file; removed the worktree",
                     "found branch kanban/TASK-6 of a task on no board file; deleted it (fully merged into main)"]
    assert not (board_repo / ".worktrees" / "TASK-6").exists()
    assert git(board_repo, "branch", "--list", "kanban/*") == ""


def test_merged_branch_whose_worktree_files_went_before_the_prune(board_repo: Path) -> None:
    """Found by the batch crash soak: the queue's cleanup was killed after deleting a finished task's
    worktree files and before `git worktree prune`; git still counts the branch as checked out."""
    import shutil

    path = make_branch(board_repo, "TASK-19", commit=False)
    shutil.rmtree(path)
    lines = do_repair(board_repo, scope="merge")
    assert lines == ["found branch kanban/TASK-19 of a task on no board file; deleted it (fully merged into main)",
                     "found worktree records whose directory is gone; pruned them (git worktree prune)"]
    assert git(board_repo, "branch", "--list", "kanban/*") == ""
    assert str(path) not in git(board_repo, "worktree", "list")


def test_orphan_branch_with_unmerged_work_is_kept_under_a_new_name(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-7", commit=True)
    sha = git(board_repo, "rev-parse", "kanban/TASK-7").strip()
    lines = do_repair(board_repo)
    assert lines == ["found worktree .worktrees/TASK-7 of a task on no board file; removed the worktree",
                     "found branch kanban/TASK-7 of a task on no board file with commits not in main; "
                     "kept its work as branch kanban-orphan/TASK-7"]
    assert git(board_repo, "rev-parse", "kanban-orphan/TASK-7").strip() == sha
    assert do_repair(board_repo) == []


def test_orphan_worktree_with_uncommitted_changes_is_kept(board_repo: Path) -> None:
    path = make_branch(board_repo, "TASK-8", commit=False)
    (path / "README.md").write_text("changed by hand\n")
    lines = do_repair(board_repo)
    assert lines[0] == ("found worktree .worktrees/TASK-8 of a task on no board file; kept it: it has uncommitted "
                        "changes in README.md; remove it by hand once they are saved")
    assert lines[1] == "found branch kanban/TASK-8 of a task on no board file; kept it: a worktree still has it " \
                       "checked out"
    assert (path / "README.md").read_text() == "changed by hand\n"


def test_deleted_worktree_directory_is_pruned(board_repo: Path) -> None:
    import shutil

    path = make_branch(board_repo, "TASK-9", commit=True)
    write_board(board_repo, IN_PROGRESS=entry("TASK-9"))
    shutil.rmtree(path)
    lines = do_repair(board_repo)
    assert lines == ["found worktree records whose directory is gone; pruned them (git worktree prune)"]
    assert str(path) not in git(board_repo, "worktree", "list")


# -- (d) runs whose supervisor or agent is gone -------------------------------------------------------


def _record_run(root: Path, task: str) -> tuple[int, Path]:
    rdir = root / ".kanban" / "runs" / task / "task-1"
    rdir.mkdir(parents=True)
    with History(root) as h:
        run_id = h.start_run(task=task, role="task", attempt=1, run_dir=str(rdir), log=str(rdir / "agent.log"),
                             timeout=60, head_before=None)
    return run_id, rdir


def _dead_pid() -> tuple[int, int]:
    from kanban.procs import process_start_time

    p = subprocess.Popen(["true"])
    start = process_start_time(p.pid)
    p.wait()
    return p.pid, start or 1


def _agent_without_supervisor(root: Path, task: str) -> tuple[Path, subprocess.Popen, int]:
    """A recorded run of TASK in IN_PROGRESS whose agent (`sleep 60`) runs on with its supervisor dead."""
    from kanban.procs import process_start_time

    write_board(root, IN_PROGRESS=entry(task))
    make_branch(root, task, commit=False)
    _, rdir = _record_run(root, task)
    agent = subprocess.Popen(["sleep", "60"], start_new_session=True)
    start = process_start_time(agent.pid)
    sup, sup_start = _dead_pid()
    (rdir / "agent.json").write_text(json.dumps({
        "pid": agent.pid, "pgid": agent.pid, "start_time": start, "supervisor_pid": sup,
        "supervisor_start_time": sup_start, "started": "2026-01-01T00:00:00+00:00"}))
    return rdir, agent, start


def test_lost_run_is_recorded_as_failed_and_the_next_tick_applies_it(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-10", commit=False)
    write_board(board_repo, IN_PROGRESS=entry("TASK-10"))
    _, rdir = _record_run(board_repo, "TASK-10")
    pid, start = _dead_pid()
    (rdir / "launcher.json").write_text(json.dumps({"supervisor_pid": pid, "supervisor_start_time": start}))
    lines = do_repair(board_repo)
    assert lines == ["found TASK-10 task attempt 1 recorded as running with neither supervisor nor agent left; "
                     "recorded it as failed (lost), the next tick applies the failure"]
    assert "lost" in json.loads((rdir / "result.json").read_text())["error"]
    from kanban.engine import Engine

    with History(board_repo) as h:
        engine = Engine(board_repo, load_config(board_repo), h)
        engine.repaired_scopes.add("tick")
        engine._reap(report := __import__("kanban.engine", fromlist=["TickReport"]).TickReport())
        assert report.reaped == ["TASK-10 failed: lost: its supervisor and agent were gone (found by repair); retrying"]
        assert [(e.kind, e.task) for e in report.events] == [("retrying", "TASK-10")]
        assert h.live_runs() == []


def test_agent_whose_supervisor_died_is_stopped(board_repo: Path) -> None:
    from kanban.procs import alive

    rdir, agent, start = _agent_without_supervisor(board_repo, "TASK-11")
    try:
        lines = do_repair(board_repo)
        assert lines == ["found TASK-11 task attempt 1 running with its supervisor dead; stopped the agent's "
                         "process group and recorded the run as failed"]
        agent.wait(timeout=5)
        assert not alive(agent.pid, start)
        assert json.loads((rdir / "result.json").read_text())["signal"] == signal.SIGKILL
    finally:
        if agent.poll() is None:
            agent.kill()


# -- (e) temp files, verify leftovers --------------------------------------------------------------


def test_half_written_temp_files_are_deleted(board_repo: Path) -> None:
    tmp = board_repo / ".TODO.md.x1y2.kanban-tmp"
    tmp.write_text("## TASK-1: half")
    run_tmp = board_repo / ".kanban" / "runs" / "T" / ".agent.json.999999999.tmp"
    run_tmp.parent.mkdir(parents=True)
    run_tmp.write_text("{")
    lines = do_repair(board_repo)
    assert sorted(lines) == sorted(["found half-written temp file .TODO.md.x1y2.kanban-tmp; deleted it",
                                    "found half-written temp file .kanban/runs/T/.agent.json.999999999.tmp; "
                                    "deleted it"])
    assert not tmp.exists() and not run_tmp.exists()


def test_half_created_verify_worktree_and_leftover_verify_process(board_repo: Path) -> None:
    from kanban.procs import alive, process_start_time

    verify = board_repo / ".kanban" / "verify"
    verify.mkdir(parents=True)
    (verify / "junk").write_text("x")
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        start = process_start_time(proc.pid)
        (board_repo / ".kanban" / "verify.pid").write_text(f"{proc.pid} {start}\n")
        lines = do_repair(board_repo, scope="merge")
        assert lines == ["found a verify process left by a killed merge queue; stopped it and removed the record",
                         "found .kanban/verify half-created; removed it (the next verification recreates it)"]
        proc.wait(timeout=5)
        assert not alive(proc.pid, start) and not verify.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_tick_scope_leaves_runs_and_verify_alone(board_repo: Path) -> None:
    verify = board_repo / ".kanban" / "verify"
    verify.mkdir(parents=True)
    _, rdir = _record_run(board_repo, "TASK-12")
    write_board(board_repo, TODO=entry("TASK-12"))
    assert do_repair(board_repo, scope="tick") == []
    assert verify.exists() and not (rdir / "result.json").exists()


# -- the command -------------------------------------------------------------------------------------


def test_preflight_repair_prints_each_fix_then_the_checks(board_repo: Path) -> None:
    write_board(board_repo, TODO=entry("TASK-1"), TESTING=entry("TASK-1"))
    make_branch(board_repo, "TASK-1", commit=True, worktree=False)
    make_branch(board_repo, "TASK-13", commit=False)
    proc = run_cli(board_repo, "preflight", "--repair")
    out = proc.stdout
    assert "repair: found TASK-1 in both TODO.md and TESTING.md; kept the copy in TESTING.md" in out
    assert "repair: found worktree .worktrees/TASK-13 of a task on no board file; removed the worktree" in out
    assert "repair: 3 fix(es)" in out
    assert "pass  stale worktrees" in out
    assert "repair: nothing to fix" in run_cli(board_repo, "preflight", "--repair").stdout
    proc = run_cli(board_repo, "preflight", "--repair", "--json")
    assert json.loads(proc.stdout)["repaired"] == []


def test_preflight_without_repair_changes_nothing(board_repo: Path) -> None:
    make_branch(board_repo, "TASK-14", commit=False)
    proc = run_cli(board_repo, "preflight")
    assert proc.returncode == 1 and "FAIL  stale worktrees" in proc.stdout
    assert (board_repo / ".worktrees" / "TASK-14").exists()


# -- a small sample of the crash soak -----------------------------------------------------------------


@pytest.mark.heavy
def test_crash_soak_sample(tmp_path: Path) -> None:
    """SIGKILL tick / run / merge-queue at random instants; after repair and a run, nothing lost or orphaned."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "crash_soak.py"), "--trials", "8", "--seed", "7",
                           "--json", "--time-limit", "40", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=110, env=os.environ.copy())
    start = proc.stdout.index("{")
    summary = json.loads(proc.stdout[start:proc.stdout.rindex("}") + 1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert summary["trials"] >= 4
    for key in ("inconsistencies_after_repair", "tasks_lost", "tasks_duplicated", "orphan_worktrees_or_branches",
                "agents_without_record", "processes_left_after_run", "unverified_commits_on_main", "tasks_stuck",
                "tasks_unfinished", "kanban_run_failures"):
        assert summary[key] == 0, (key, summary)


def test_half_created_worktree_is_removed_and_its_branch_kept(board_repo: Path) -> None:
    # `git worktree add` killed midway: the registration stays, locked as "initializing"
    path = make_branch(board_repo, "TASK-15", commit=True)
    git(board_repo, "worktree", "lock", "--reason", "initializing", str(path))
    write_board(board_repo, IN_PROGRESS=entry("TASK-15"))
    lines = do_repair(board_repo, scope="tick")
    assert lines == ["found worktree TASK-15 left half-created by a killed 'git worktree add'; removed it "
                     "(its branch stays; the next agent recreates the worktree)"]
    assert not path.exists()
    assert git(board_repo, "branch", "--list", "kanban/TASK-15").strip() == "kanban/TASK-15"


def test_worktree_without_head_is_removed(board_repo: Path) -> None:
    # killed before git wrote the new worktree's HEAD: `git worktree remove` refuses it, ensure_worktree fails on it
    import shutil

    path = make_branch(board_repo, "TASK-16", commit=True)
    for child in path.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    (board_repo / ".git" / "worktrees" / "TASK-16" / "HEAD").unlink()
    write_board(board_repo, IN_PROGRESS=entry("TASK-16"))
    lines = do_repair(board_repo, scope="tick")
    assert lines == ["found worktree TASK-16 left half-created by a killed 'git worktree add'; removed it "
                     "(its branch stays; the next agent recreates the worktree)"]
    assert "TASK-16" not in git(board_repo, "worktree", "list")
    assert do_repair(board_repo) == []


def test_stale_git_locks_are_deleted_only_while_no_git_process_runs(board_repo: Path) -> None:
    from kanban.git import worktree_gitdir

    write_board(board_repo, IN_PROGRESS=entry("TASK-15"), TODO=entry("TASK-16"))
    wt = make_branch(board_repo, "TASK-15", commit=True)
    index_lock = worktree_gitdir(wt) / "index.lock"
    ref_lock = board_repo / ".git" / "refs" / "heads" / "kanban" / "TASK-16.lock"  # a killed `worktree add -b`
    main_lock = board_repo / ".git" / "refs" / "heads" / "main.lock"
    for lock in (index_lock, ref_lock, main_lock):
        lock.write_text("")
    # a git process at work in the repository may hold any of them: nothing is touched
    holder = subprocess.Popen(["git", "cat-file", "--batch"], cwd=wt, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    try:
        assert do_repair(board_repo, scope="tick") == []
        assert index_lock.exists() and ref_lock.exists()
    finally:
        holder.communicate(b"")
    lines = do_repair(board_repo, scope="tick")
    assert sorted(lines) == sorted([
        f"found a stale git lock .git/worktrees/{worktree_gitdir(wt).name}/index.lock (no git process holds it); "
        "deleted it",
        "found a stale git lock .git/refs/heads/kanban/TASK-16.lock (no git process holds it); deleted it"])
    assert main_lock.exists(), "main is the merge queue's: a tick leaves its lock alone"
    git(wt, "commit", "-q", "--allow-empty", "-m", "git works there again")
    assert do_repair(board_repo, scope="merge") == [
        "found a stale git lock .git/refs/heads/main.lock (no git process holds it); deleted it"]


def test_tick_after_a_kill_during_worktree_add_starts_the_task(board_repo: Path) -> None:
    """Found by the crash soak: a `git worktree add -b` killed while it held the new branch's ref lock
    made every later start of that task fail, until it was escalated again and again."""
    (board_repo / "TODO.md").write_text("# TODO\n" + entry("TASK-18"))
    git(board_repo, "commit", "-q", "-am", "a task")
    (board_repo / ".git" / "refs" / "heads" / "kanban").mkdir(parents=True)
    (board_repo / ".git" / "refs" / "heads" / "kanban" / "TASK-18.lock").write_text("")
    proc = run_cli(board_repo, "tick")
    assert proc.returncode == 0, proc.stderr
    assert "repair: found a stale git lock .git/refs/heads/kanban/TASK-18.lock" in proc.stdout
    assert "TASK-18" in proc.stdout and "could not start" not in proc.stdout + proc.stderr
    assert (board_repo / ".worktrees" / "TASK-18").is_dir()
    run_cli(board_repo, "stop", "TASK-18", "--force")


def test_tick_stops_an_agent_whose_supervisor_died_and_retries_the_task(board_repo: Path) -> None:
    """The same case met by a tick's reaping (not repair): the agent is killed and the task retried,
    not escalated as if a person had stopped it."""
    from kanban.engine import Engine, TickReport
    from kanban.procs import alive

    _, agent, start = _agent_without_supervisor(board_repo, "TASK-17")
    try:
        with History(board_repo) as h:
            engine = Engine(board_repo, load_config(board_repo), h)
            engine.repaired_scopes.add("tick")
            engine._reap(report := TickReport())
            assert report.problems == ["TASK-17 task agent lost its supervisor; the agent was stopped"]
            assert report.reaped[0].startswith("TASK-17 failed: ") and report.reaped[0].endswith("; retrying")
            assert [e.kind for e in report.events] == ["problem", "retrying"]
            assert h.live_runs() == []
        agent.wait(timeout=5)
        assert not alive(agent.pid, start)
        assert "[ESCALATED]" not in (board_repo / "IN_PROGRESS.md").read_text()
    finally:
        if agent.poll() is None:
            agent.kill()


def _half_fast_forward(root: Path) -> tuple[str, str]:
    """main's checkout as a `git merge --ff-only` killed between writing files and moving the ref leaves it."""
    old = git(root, "rev-parse", "main").strip()
    git(root, "checkout", "-q", "-b", "side")
    (root / "src").mkdir(exist_ok=True)
    (root / "src" / "new.py").write_text("NEW = 1\n")
    (root / "TODO.md").write_text("# TODO\n\nchanged on the way in\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "incoming")
    new = git(root, "rev-parse", "HEAD").strip()
    git(root, "checkout", "-q", "main")
    git(root, "branch", "-q", "-D", "side")
    git(root, "read-tree", "-m", "-u", "HEAD", new)  # files and index at new, the ref still at old
    (root / ".kanban").mkdir(exist_ok=True)
    (root / ".kanban" / "advance.json").write_text(json.dumps({"checkout": str(root), "old": old, "new": new}))
    return old, new


def test_interrupted_fast_forward_of_main_checkout_is_put_back(board_repo: Path) -> None:
    """Found by the crash soak: the half-done checkout looked like a person's staged work touching the
    incoming files, and blocked the merge queue for good."""
    old, _ = _half_fast_forward(board_repo)
    (board_repo / "notes.txt").write_text("my own work\n")  # a person's untracked file: never touched
    assert git(board_repo, "status", "--porcelain").split("\n")[:2] == ["M  TODO.md", "A  src/new.py"]
    lines = do_repair(board_repo, scope="merge")
    assert lines == ["found an interrupted fast-forward of the checkout of main (a merge queue killed during "
                     "'git merge --ff-only'); put 2 file(s) back as they are at main; the queue merges again"]
    assert git(board_repo, "status", "--porcelain") == "?? notes.txt\n"
    assert git(board_repo, "rev-parse", "main").strip() == old
    assert not (board_repo / "src" / "new.py").exists()
    assert not (board_repo / ".kanban" / "advance.json").exists()


def test_interrupted_fast_forward_with_a_later_edit_is_kept_and_named(board_repo: Path) -> None:
    _half_fast_forward(board_repo)
    (board_repo / "src" / "new.py").write_text("NEW = 2  # edited by hand since\n")
    lines = do_repair(board_repo, scope="merge")
    assert lines == ["found an interrupted fast-forward of the checkout of main (a merge queue killed during "
                     "'git merge --ff-only'); kept it: src/new.py changed since; make each as you want it, then "
                     "delete .kanban/advance.json and run 'kanban merge-queue' again"]
    assert (board_repo / "src" / "new.py").read_text() == "NEW = 2  # edited by hand since\n"
    assert (board_repo / "TODO.md").read_text() == "# TODO\n\nchanged on the way in\n"
    assert (board_repo / ".kanban" / "advance.json").exists()


def test_stale_packed_refs_lock_is_cleared_before_branches_are_deleted(board_repo: Path) -> None:
    """Found by the batch crash soak: a killed `git branch -D` left packed-refs.lock, and the orphan
    branch fix ran into it before the lock was cleared."""
    make_branch(board_repo, "TASK-20", commit=False)
    git(board_repo, "pack-refs", "--all")  # deleting a packed branch takes packed-refs.lock
    git(board_repo, "worktree", "remove", "--force", str(board_repo / ".worktrees" / "TASK-20"))
    (board_repo / ".git" / "packed-refs.lock").write_text("")
    lines = do_repair(board_repo, scope="merge")
    assert lines == ["found a stale git lock .git/packed-refs.lock (no git process holds it); deleted it",
                     "found branch kanban/TASK-20 of a task on no board file; deleted it (fully merged into main)"]
    assert git(board_repo, "branch", "--list", "kanban/*") == ""


def test_empty_worktree_directory_left_by_a_killed_add_is_removed(board_repo: Path) -> None:
    """Found by the crash soak: `git worktree add` killed before its checkout left an empty directory
    that git does not list; every start of the task then failed on it."""
    write_board(board_repo, IN_PROGRESS=entry("TASK-21"))
    git(board_repo, "branch", "kanban/TASK-21", "main")
    empty = board_repo / ".worktrees" / "TASK-21"
    empty.mkdir(parents=True)
    lines = do_repair(board_repo, scope="tick")
    assert lines == ["found TASK-21 in the worktree directory left empty by a killed 'git worktree add'; "
                     "removed it (its branch stays; the next agent recreates the worktree)"]
    assert not empty.exists()
    empty.mkdir()  # and a tick meeting it outside repair starts the task all the same
    from kanban.agents import ensure_worktree

    assert ensure_worktree(board_repo, load_config(board_repo), "TASK-21") == empty
    assert git(empty, "rev-parse", "--abbrev-ref", "HEAD").strip() == "kanban/TASK-21"


# -- the registry ---------------------------------------------------------------------------------------


def test_every_kind_of_damage_has_one_fix_that_says_what_it_finds_and_does() -> None:
    import kanban.repair as r

    kinds = {v for k, v in vars(r).items() if k.startswith("KIND_")}
    registered = [f.kind for f in r.FIXES]
    assert sorted(registered) == sorted(kinds) and len(set(registered)) == len(registered)
    for f in r.FIXES:
        assert f.finds and f.does and "\n" not in f.finds + f.does and "|" not in f.finds + f.does, f.kind
        assert f.scopes and f.scopes <= set(r.SCOPES), f.kind
    assert r.NOTE_ONLY == {r.KIND_NO_WORKTREE}


def test_the_registry_keeps_the_scan_order_the_fix_order_and_the_scopes() -> None:
    import kanban.repair as r

    assert [f.kind for f in r.FIXES] == [
        r.KIND_TEMP_FILE, r.KIND_DUPLICATE, r.KIND_MERGED_ON_BOARD, r.KIND_HALF_WORKTREE, r.KIND_ORPHAN_WORKTREE,
        r.KIND_ORPHAN_BRANCH, r.KIND_NO_WORKTREE, r.KIND_SUPERVISOR_DIED, r.KIND_LOST_RUN, r.KIND_VERIFY_PROCESS,
        r.KIND_VERIFY, r.KIND_HALF_ADVANCE, r.KIND_STALE_LOCK, r.KIND_PRUNABLE]
    # the board first (the other fixes read it), then the locks (they would fail the git fixes), then scan order
    assert [f.kind for f in r.FIX_ORDER] == [r.KIND_DUPLICATE, r.KIND_STALE_LOCK] + [
        f.kind for f in r.FIXES if f.kind not in (r.KIND_DUPLICATE, r.KIND_STALE_LOCK)]
    only = {f.kind: set(f.scopes) for f in r.FIXES if f.scopes != set(r.SCOPES)}
    assert only == {r.KIND_MERGED_ON_BOARD: {"merge", "full"}, r.KIND_HALF_WORKTREE: {"tick", "full"},
                    r.KIND_SUPERVISOR_DIED: {"full"}, r.KIND_LOST_RUN: {"full"},
                    r.KIND_VERIFY_PROCESS: {"merge", "full"}, r.KIND_VERIFY: {"merge", "full"},
                    r.KIND_HALF_ADVANCE: {"merge", "full"}}
    assert [f.kind for f in r.fixes_for("tick")] == [f.kind for f in r.FIXES if "tick" in f.scopes]
    with pytest.raises(ValueError):
        r.find_problems(REPO, None, scope="everything")


class _NoPolls:
    """A runner that must not be asked about runs."""

    def poll(self, run_dir):
        raise AssertionError(f"polled {run_dir}")

    def resolve(self, ref):
        raise AssertionError(f"resolved {ref}")


def test_scans_run_only_where_they_can_find_something(board_repo: Path, monkeypatch) -> None:
    import kanban.git as kgit

    asked: list[tuple[str, ...]] = []
    real = kgit.run
    monkeypatch.setattr(kgit, "run", lambda cwd, *args, **kw: (asked.append(args), real(cwd, *args, **kw))[1])
    config = load_config(board_repo)
    with History(board_repo) as h:  # no run is live: the run scans ask the runner nothing
        assert find_problems(board_repo, config, h, _NoPolls(), scope="full") == []
    assert ("worktree", "list", "--porcelain", "-z") not in asked, "no worktree: no worktree list"
    asked.clear()
    make_branch(board_repo, "TASK-22", commit=False)
    assert [p.kind for p in find_problems(board_repo, config, scope="tick")] == ["orphan worktree", "orphan branch"]
    assert ("worktree", "list", "--porcelain", "-z") in asked


def test_a_merged_task_leaves_the_board_by_the_state_machine(board_repo: Path) -> None:
    """The fix is the table's MERGED move, as for the merge queue's own finished tasks: an entry
    changed by hand meanwhile (its ready line gone) leaves all the same, and the history says so."""
    make_branch(board_repo, "TASK-3", commit=True)
    git(board_repo, "merge", "-q", "--no-ff", "-m", "Merge TASK-3", "kanban/TASK-3")
    write_board(board_repo, TESTING=entry("TASK-3"))  # no `status: ready`: no row of the table
    (board_repo / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n### Added\n\n- TASK-3: a task\n")
    sha = git(board_repo, "rev-parse", "kanban/TASK-3").strip()
    config = load_config(board_repo)
    assert repair(board_repo, config, scope="merge")[0].endswith("; removed it from TESTING.md")  # no history given
    assert column_of(board_repo, "TASK-3") == []
    with History(board_repo) as h:
        kinds = [(kind, source, target) for _, _, kind, source, target, _ in h.events("TASK-3")]
        assert ("overruled", "TESTING", "DONE") in kinds and ("merged", "TESTING", "DONE") in kinds
        assert [d for *_, kind, _, _, d in h.events("TASK-3") if kind == "merged"] == [sha]
