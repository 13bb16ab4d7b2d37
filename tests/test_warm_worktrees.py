"""Warm worktrees: a merged task's worktree is parked, ignored files and all, and the next pick
reuses it (real git, real processes; kanban.agents' ensure_worktree / release_worktrees)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from agents_kit import task_md
from conftest import git

from kanban import agents
from kanban import git as kgit
from kanban.config import load_config

COUNTER = "import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"


def project(repo: Path, worktree_toml: str = "", *, pool_size: int = 6) -> Path:
    """REPO a kanban project: node_modules/ ignored, [worktree] as given, committed on main."""
    from kanban.commands.init import init

    (repo / "kanban.toml").write_text(f"main_branch = \"main\"\npool_size = {pool_size}\n\n[worktree]\n"
                                      + textwrap.dedent(worktree_toml))
    (repo / ".gitignore").write_text("node_modules/\n")
    (repo / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
    (repo / "src.txt").write_text("main 1\n")
    init(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")
    return repo


def counter_setup(tmp_path: Path) -> tuple[Path, str]:
    counter = tmp_path / "setup-count"
    return counter, f"setup = {json.dumps([sys.executable, '-c', COUNTER, str(counter)])}\n"


def runs(counter: Path) -> int:
    return len(counter.read_text()) if counter.exists() else 0


def commit_on_main(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"main: {name}")
    return git(repo, "rev-parse", "HEAD").strip()


def finish(repo: Path, config, *task_ids: str) -> None:
    """What the merge queue does once tasks are merged: their worktrees released, branches deleted."""
    agents.release_worktrees(repo, config, list(task_ids))
    git(repo, "branch", "-D", *(f"kanban/{t}" for t in task_ids))


def listed(repo: Path) -> list[str]:
    """The worktrees git knows, relative to the repository (the main checkout as '.')."""
    out = git(repo, "worktree", "list", "--porcelain")
    paths = [Path(line.removeprefix("worktree ")) for line in out.splitlines() if line.startswith("worktree ")]
    return sorted(str(p.relative_to(repo.resolve())) if p != repo.resolve() else "." for p in paths)


# --- configuration -------------------------------------------------------------------------------------


def test_worktree_reuse_settings_and_their_defaults(tmp_path):
    (tmp_path / "kanban.toml").write_text("pool_size = 3\n")
    config = load_config(tmp_path)
    assert (config.worktree.reuse, config.worktree.keep_idle, config.worktree.setup_inputs) == (True, None, ())
    assert agents.idle_limit(config) == 3  # keep_idle defaults to the pool size
    (tmp_path / "kanban.toml").write_text('[worktree]\nreuse = false\nkeep_idle = 0\n'
                                          'setup_inputs = ["package-lock.json", "**/go.sum"]\n')
    config = load_config(tmp_path)
    assert (config.worktree.reuse, config.worktree.keep_idle) == (False, 0)
    assert config.worktree.setup_inputs == ("package-lock.json", "**/go.sum")
    assert agents.idle_limit(config) == 0


@pytest.mark.parametrize("line, message", [
    ('reuse = "yes"', "true or false"),
    ("keep_idle = 65", "between 0 and 64"),
    ("keep_idle = -1", "between 0 and 64"),
    ('keep_idle = "2"', "an integer"),
    ('setup_inputs = "package-lock.json"', "a list of glob patterns"),
    ('setup_inputs = ["../outside.lock"]', "inside the repository"),
    ('setup_inputs = ["/abs.lock"]', "relative path"),
    ('setup_inputs = [":(exclude)x"]', "magic"),
])
def test_bad_worktree_reuse_settings_are_one_clear_error(tmp_path, line, message):
    from kanban.errors import KanbanError

    (tmp_path / "kanban.toml").write_text(f"[worktree]\n{line}\n")
    with pytest.raises(KanbanError) as err:
        load_config(tmp_path)
    assert message in str(err.value) and err.value.line == 2 and err.value.hint


# --- reuse ----------------------------------------------------------------------------------------------


def test_a_reused_worktree_is_the_new_tasks_branch_from_current_main_with_only_ignored_files_kept(repo):
    config = load_config(project(repo))
    first = agents.ensure_worktree(repo, config, "TASK-1")
    (first / "node_modules").mkdir()
    (first / "node_modules" / "x").write_text("installed\n")
    (first / "mine.txt").write_text("TASK-1's\n")
    git(first, "add", "mine.txt")
    git(first, "commit", "-q", "-m", "TASK-1 work")
    (first / "src.txt").write_text("changed, never committed\n")  # tracked, modified
    (first / "scratch.txt").write_text("untracked\n")
    (first / "build" / "deep").mkdir(parents=True)
    (first / "build" / "deep" / "out.o").write_text("untracked dir\n")
    git(first, "add", "scratch.txt")  # staged, never committed
    (first / "staged-only").write_text("x\n")
    finish(repo, config, "TASK-1")
    assert not first.exists()
    (slot,) = agents.idle_worktrees(repo, config)
    assert slot == (repo / ".worktrees" / ".idle" / "0").resolve()
    assert kgit.current_branch(slot) is None  # detached: its branch could be deleted

    main = commit_on_main(repo, "later.txt", "main moved on\n")
    second = agents.ensure_worktree(repo, config, "TASK-2")
    assert second == repo / ".worktrees" / "TASK-2"
    assert agents.idle_worktrees(repo, config) == []
    assert not (repo / ".worktrees" / ".idle").exists()
    assert kgit.current_branch(second) == "kanban/TASK-2"
    assert git(second, "rev-parse", "HEAD").strip() == main
    assert (second / "node_modules" / "x").read_text() == "installed\n"  # ignored: kept warm
    assert (second / "src.txt").read_text() == "main 1\n"
    assert (second / "later.txt").exists()
    for gone in ("mine.txt", "scratch.txt", "build", "staged-only"):
        assert not (second / gone).exists(), gone
    assert git(second, "status", "--porcelain", "--untracked-files=all") == ""
    assert listed(repo) == [".", ".worktrees/TASK-2"]
    # the reviewer and tester take the same worktree, as before
    assert agents.ensure_worktree(repo, config, "TASK-2") == second


def test_a_reused_worktree_leaves_a_merge_or_rebase_of_the_last_task_behind(repo):
    config = load_config(project(repo))
    first = agents.ensure_worktree(repo, config, "TASK-1")
    (first / "src.txt").write_text("TASK-1\n")
    git(first, "commit", "-q", "-am", "TASK-1")
    commit_on_main(repo, "src.txt", "main 2\n")
    merged = subprocess.run(["git", "merge", "main"], cwd=first, capture_output=True, text=True)
    assert merged.returncode != 0 and kgit.merge_in_progress(first)  # a conflict the tester left
    finish(repo, config, "TASK-1")
    second = agents.ensure_worktree(repo, config, "TASK-2")
    assert not kgit.merge_in_progress(second) and kgit.unmerged_files(second) == []
    assert (second / "src.txt").read_text() == "main 2\n"

    (second / "src.txt").write_text("TASK-2\n")
    git(second, "commit", "-q", "-am", "TASK-2")
    commit_on_main(repo, "src.txt", "main 3\n")
    rebased = subprocess.run(["git", "rebase", "main"], cwd=second, capture_output=True)
    assert rebased.returncode != 0  # stopped on a conflict: a rebase in progress
    finish(repo, config, "TASK-2")
    third = agents.ensure_worktree(repo, config, "TASK-3")
    assert kgit.operation_in_progress(third, "kanban/TASK-3") is None
    assert kgit.current_branch(third) == "kanban/TASK-3"
    assert git(third, "status", "--porcelain") == ""


def test_a_copied_file_is_refreshed_and_never_written_through_a_link_the_last_task_left(repo, tmp_path):
    (repo / ".env").write_text("KEY=1\n")
    config = load_config(project(repo, 'copy = [".env"]\n'))
    (repo / ".gitignore").write_text("node_modules/\n.env\n")
    git(repo, "commit", "-q", "-am", "ignore .env")
    first = agents.ensure_worktree(repo, config, "TASK-1")
    assert (first / ".env").read_text() == "KEY=1\n"
    outside = tmp_path / "outside.txt"
    outside.write_text("not kanban's\n")
    (first / ".env").unlink()
    (first / ".env").symlink_to(outside)
    finish(repo, config, "TASK-1")
    (repo / ".env").write_text("KEY=2\n")
    second = agents.ensure_worktree(repo, config, "TASK-2")
    assert outside.read_text() == "not kanban's\n"
    assert not (second / ".env").is_symlink() and (second / ".env").read_text() == "KEY=2\n"


# --- set-up ------------------------------------------------------------------------------------------------


def test_setup_runs_once_for_two_tasks_with_unchanged_inputs_and_again_when_the_lockfile_changes(repo, tmp_path):
    counter, setup = counter_setup(tmp_path)
    config = load_config(project(repo, setup + 'setup_inputs = ["package-lock.json", "requirements*.txt"]\n'))
    first = agents.ensure_worktree(repo, config, "TASK-1")
    assert runs(counter) == 1
    assert git(first, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""  # the record is in .git
    finish(repo, config, "TASK-1")
    commit_on_main(repo, "src.txt", "main 2\n")  # not an input
    second = agents.ensure_worktree(repo, config, "TASK-2")
    assert runs(counter) == 1
    finish(repo, config, "TASK-2")
    commit_on_main(repo, "package-lock.json", '{"lockfileVersion": 3, "packages": {}}\n')
    third = agents.ensure_worktree(repo, config, "TASK-3")
    assert runs(counter) == 2
    assert second == third.parent / "TASK-2"
    finish(repo, config, "TASK-3")
    commit_on_main(repo, "requirements-dev.txt", "pytest\n")  # a new file matching a glob
    agents.ensure_worktree(repo, config, "TASK-4")
    assert runs(counter) == 3


def test_with_ray_the_setup_runs_on_the_workers_not_in_the_local_worktree(repo, tmp_path):
    counter, setup = counter_setup(tmp_path)
    config = load_config(project(repo, setup + '[executor]\nkind = "ray"\nremote = "/r"\n'))
    agents.ensure_worktree(repo, config, "TASK-1")
    assert runs(counter) == 0  # kanban.executors.ray_job runs it in the node's worktree
    finish(repo, config, "TASK-1")
    toml = repo / "kanban.toml"
    toml.write_text(toml.read_text().split("[executor]")[0])
    local = load_config(repo)  # back on this machine: the idle worktree is set up at its next use
    agents.ensure_worktree(repo, local, "TASK-2")
    assert runs(counter) == 1


def test_without_setup_inputs_a_reused_worktree_runs_setup_again_once_any_tracked_file_changed(repo, tmp_path):
    counter, setup = counter_setup(tmp_path)
    config = load_config(project(repo, setup))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    agents.ensure_worktree(repo, config, "TASK-2")  # main has not moved: the same tree
    assert runs(counter) == 1
    finish(repo, config, "TASK-2")
    commit_on_main(repo, "src.txt", "main 2\n")
    agents.ensure_worktree(repo, config, "TASK-3")
    assert runs(counter) == 2


def test_a_failed_setup_in_a_reused_worktree_runs_again_at_its_next_use(repo, tmp_path):
    counter, _ = counter_setup(tmp_path)
    flag = tmp_path / "fail"
    script = f"import pathlib, sys; {COUNTER.replace('sys.argv[1]', repr(str(counter)))}; " \
             f"sys.exit(1 if pathlib.Path({str(flag)!r}).exists() else 0)"
    config = load_config(project(repo, f"setup = {json.dumps([sys.executable, '-c', script])}\n"
                                       'setup_inputs = ["package-lock.json"]\n'))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    commit_on_main(repo, "package-lock.json", "{}\n")
    flag.touch()
    with pytest.raises(Exception, match="set-up"):
        agents.ensure_worktree(repo, config, "TASK-2")
    assert runs(counter) == 2
    assert not (repo / ".worktrees" / "TASK-2").exists()
    assert len(agents.idle_worktrees(repo, config)) == 1  # back in the pool, its record cleared
    flag.unlink()
    agents.ensure_worktree(repo, config, "TASK-2")
    assert runs(counter) == 3
    assert kgit.current_branch(repo / ".worktrees" / "TASK-2") == "kanban/TASK-2"


# --- the pool ---------------------------------------------------------------------------------------------


def test_keep_idle_bounds_the_idle_pool(repo):
    config = load_config(project(repo, "keep_idle = 2\n"))
    for n in range(1, 5):
        agents.ensure_worktree(repo, config, f"TASK-{n}")
    finish(repo, config, "TASK-1", "TASK-2", "TASK-3")
    finish(repo, config, "TASK-4")
    agents.wait_background()
    assert len(agents.idle_worktrees(repo, config)) == 2
    assert listed(repo) == [".", ".worktrees/.idle/0", ".worktrees/.idle/1"]
    assert sorted(p.name for p in (repo / ".worktrees" / ".idle").iterdir()) == ["0", "1"]  # the rest removed
    assert git(repo, "branch", "--list", "kanban/*") == ""


def test_keep_idle_zero_and_a_sandbox_keep_none(repo):
    config = load_config(project(repo, "keep_idle = 0\n"))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    assert listed(repo) == ["."] and not (repo / ".worktrees" / ".idle").exists()
    sandboxed = replace(config, agent=replace(config.agent, sandbox="bwrap"), roles={})
    assert not agents.reuse_active(sandboxed) and agents.idle_limit(sandboxed) == 0


def test_switching_reuse_off_removes_the_idle_worktrees_at_the_next_release(repo):
    config = load_config(project(repo))
    for n in (1, 2):
        agents.ensure_worktree(repo, config, f"TASK-{n}")
    finish(repo, config, "TASK-1", "TASK-2")
    assert len(agents.idle_worktrees(repo, config)) == 2
    off = replace(config, worktree=replace(config.worktree, reuse=False))
    third = agents.ensure_worktree(repo, off, "TASK-3")
    assert len(agents.idle_worktrees(repo, config)) == 2  # not taken: a new checkout
    finish(repo, off, "TASK-3")
    agents.wait_background()
    assert not third.exists() and listed(repo) == ["."]


def test_reuse_false_behaves_as_before(repo):
    config = load_config(project(repo, "reuse = false\n"))
    first = agents.ensure_worktree(repo, config, "TASK-1")
    (first / "node_modules").mkdir()
    (first / "node_modules" / "x").write_text("installed\n")
    finish(repo, config, "TASK-1")
    assert not first.exists() and listed(repo) == ["."]
    assert not (repo / ".worktrees" / ".idle").exists()
    second = agents.ensure_worktree(repo, config, "TASK-2")
    assert not (second / "node_modules").exists()  # a fresh checkout
    assert listed(repo) == [".", ".worktrees/TASK-2"]


# --- crashes ---------------------------------------------------------------------------------------------


def test_a_reuse_killed_after_its_checkout_is_finished_by_the_tasks_next_pick(repo):
    config = load_config(project(repo))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    (slot,) = agents.idle_worktrees(repo, config)
    agents._switch(repo, slot, "kanban/TASK-2", "main")  # killed here, before the move
    (slot / "half.txt").write_text("untracked\n")
    path = agents.ensure_worktree(repo, config, "TASK-2")
    assert kgit.current_branch(path) == "kanban/TASK-2" and not (path / "half.txt").exists()
    assert listed(repo) == [".", ".worktrees/TASK-2"]


def test_an_idle_worktree_half_switched_for_another_task_is_cleaned_again_at_its_next_use(repo):
    config = load_config(project(repo))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    (slot,) = agents.idle_worktrees(repo, config)
    agents._switch(repo, slot, "kanban/TASK-2", "main")  # TASK-2's pick killed; TASK-2 since deleted
    (slot / "src.txt").write_text("dirty\n")
    path = agents.ensure_worktree(repo, config, "TASK-3")
    assert kgit.current_branch(path) == "kanban/TASK-3"
    assert (path / "src.txt").read_text() == "main 1\n"
    git(repo, "branch", "-D", "kanban/TASK-2")  # no longer checked out anywhere


def test_a_release_killed_after_its_detach_is_finished_by_the_next_release(repo):
    config = load_config(project(repo))
    first = agents.ensure_worktree(repo, config, "TASK-1")
    agents._detach(first)  # killed here, before the move; the merge queue finishes TASK-1 again
    finish(repo, config, "TASK-1")
    assert not first.exists() and len(agents.idle_worktrees(repo, config)) == 1


def test_a_move_killed_between_its_rename_and_gits_record_is_put_right(repo):
    """`git worktree move` renames the folder, then rewrites the record: killed in between, the
    record names a folder that is gone."""
    import os

    config = load_config(project(repo))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    (slot,) = agents.idle_worktrees(repo, config)
    agents._switch(repo, slot, "kanban/TASK-2", "main")
    os.rename(slot, repo / ".worktrees" / "TASK-2")  # the pick killed inside its move
    path = agents.ensure_worktree(repo, config, "TASK-2")
    assert kgit.worktree_branch(path) == "kanban/TASK-2"
    assert listed(repo) == [".", ".worktrees/TASK-2"]

    agents.ensure_worktree(repo, config, "TASK-3")
    agents._detach(path)
    os.rename(path, repo / ".worktrees" / ".idle" / "0")  # the release killed inside its move
    git(repo, "branch", "-D", "kanban/TASK-2")
    finish(repo, config, "TASK-3")  # the next release finds it
    assert listed(repo) == [".", ".worktrees/.idle/0", ".worktrees/.idle/1"]

    agents.ensure_worktree(repo, config, "TASK-4")
    agents.ensure_worktree(repo, config, "TASK-5")
    assert agents.idle_worktrees(repo, config) == []
    (repo / ".worktrees" / ".idle").mkdir()
    os.rename(repo / ".worktrees" / "TASK-5", repo / ".worktrees" / ".idle" / "7")
    git(repo, "worktree", "prune")  # and its record pruned since (repair does that)
    git(repo, "branch", "-D", "kanban/TASK-5")
    finish(repo, config, "TASK-4")
    assert not (repo / ".worktrees" / ".idle" / "7").exists()  # no record left to put right: removed
    assert listed(repo) == [".", ".worktrees/.idle/0"]


def test_a_move_killed_midway_whose_record_was_pruned_since_is_trashed_and_the_task_starts(repo):
    """Found by the crash soak: a pick killed inside its `git worktree move` (folder renamed, record
    not updated), then the record pruned (repair): the task's folder is a checkout nobody can use.
    Its next pick puts it in the trash and makes the task's worktree afresh, instead of failing
    every attempt with "exists but is not a git worktree"."""
    import os

    config = load_config(project(repo))
    agents.ensure_worktree(repo, config, "TASK-1")
    finish(repo, config, "TASK-1")
    (slot,) = agents.idle_worktrees(repo, config)
    agents._switch(repo, slot, "kanban/TASK-2", "main")
    os.rename(slot, repo / ".worktrees" / "TASK-2")  # the pick killed inside its move
    git(repo, "worktree", "prune")  # and its record pruned since
    (repo / ".worktrees" / "TASK-2" / "left-behind.txt").write_text("x\n")

    path = agents.ensure_worktree(repo, config, "TASK-2")

    assert kgit.worktree_branch(path) == "kanban/TASK-2" and not (path / "left-behind.txt").exists()
    assert listed(repo) == [".", ".worktrees/TASK-2"]
    trash = [c for c in (repo / ".worktrees" / ".idle").iterdir() if c.name.startswith(agents.TRASH_PREFIX)]
    assert len(trash) == 1 and (trash[0] / "left-behind.txt").exists()


def test_idle_worktrees_are_no_stale_task_worktrees_for_repair_or_preflight(kit):
    from kanban.commands.preflight import _stale
    from kanban.repair import find_problems, repair
    from kanban.store import load_board

    p = kit(task_md("TASK-1"))
    config = load_config(p.root)
    for n in (1, 2):
        agents.ensure_worktree(p.root, config, f"TASK-{n}")
    agents.release_worktrees(p.root, config, ["TASK-1", "TASK-2"])
    git(p.root, "branch", "-D", "kanban/TASK-1", "kanban/TASK-2")
    assert len(agents.idle_worktrees(p.root, config)) == 2
    assert find_problems(p.root, config, scope="full") == []
    assert find_problems(p.root, config, scope="tick") == []
    assert _stale(p.root, config, load_board(p.root)).ok

    # a reuse whose task is on no board (a pick killed, the entry deleted since): the usual cleanup
    orphan = agents.ensure_worktree(p.root, config, "TASK-9")
    assert {pr.kind for pr in find_problems(p.root, config, scope="full")} == {"orphan worktree", "orphan branch"}
    repair(p.root, config, scope="full")
    assert not orphan.exists() and git(p.root, "branch", "--list", "kanban/*") == ""
    assert len(agents.idle_worktrees(p.root, config)) == 1  # the other idle one untouched
    assert find_problems(p.root, config, scope="full") == []


# --- a whole run ------------------------------------------------------------------------------------------


@pytest.mark.heavy
def test_a_run_of_four_tasks_reuses_worktrees_and_leaves_only_idle_ones(kit, tmp_path):
    from kanban.commands.run import run as run_loop

    counter, setup = counter_setup(tmp_path)
    tasks = (task_md("TASK-1") + task_md("TASK-2") + task_md("TASK-3", depends="TASK-1")
             + task_md("TASK-4", depends="TASK-2"))
    p = kit(tasks, pool_size=2, extra_toml="[worktree]\n" + setup + 'setup_inputs = ["kanban.toml"]\n')
    assert run_loop(p.root, no_merge=False, live=False) == 0
    agents.wait_background()
    changelog = (p.root / "CHANGELOG.md").read_text()
    assert all(f"TASK-{n}" in changelog for n in range(1, 5))
    config = load_config(p.root)
    idle = agents.idle_worktrees(p.root, config)
    assert 1 <= len(idle) <= 2
    assert listed(p.root) == ["."] + [f".worktrees/.idle/{s.name}" for s in idle]
    assert sorted(c.name for c in (p.root / ".worktrees").iterdir()) == [".idle"]
    assert git(p.root, "branch", "--list", "kanban/*") == ""
    assert runs(counter) <= 2  # once per worktree, not per task


def test_a_worktree_taken_while_main_moves_holds_the_files_of_the_commit_its_branch_starts_from(repo):
    """`git checkout -b B main` and `git worktree add -b B path main` read main twice: for the files,
    then for the new branch. The merge queue lands beside the picks (a thread of `kanban run`, or
    another process): a landing in between left a branch on the new main over the old main's
    files, and the task agent's commit then undid the landed task. Found by bench/many_tasks.py."""
    import threading

    config = load_config(project(repo))
    moving = threading.Event()
    errors: list[BaseException] = []

    def land_on_main() -> None:  # what the queue does: a new commit, main moved to it by update-ref
        n = 0
        try:
            while not moving.is_set():
                n += 1
                blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input=f"{n}\n",
                                      capture_output=True, text=True, check=True).stdout.strip()
                tree = subprocess.run(["git", "mktree"], cwd=repo, input=f"100644 blob {blob}\tlanded.txt\n",
                                      capture_output=True, text=True, check=True).stdout.strip()
                main = git(repo, "rev-parse", "main").strip()
                commit = git(repo, "commit-tree", tree, "-p", main, "-m", f"landed {n}").strip()
                git(repo, "update-ref", "refs/heads/main", commit, main)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    lander = threading.Thread(target=land_on_main)
    lander.start()
    try:
        for n in range(1, 41):
            task = f"TASK-{n}"
            path = agents.ensure_worktree(repo, config, task)  # new, then reused (warm) worktrees
            status = git(path, "status", "--porcelain", "--untracked-files=no")
            assert status == "", f"{task}: the checkout is not its branch's commit:\n{status}"
            if n % 2 == 0:
                finish(repo, config, f"TASK-{n - 1}", task)
    finally:
        moving.set()
        lander.join()
    assert not errors, errors
