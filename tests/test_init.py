"""`kanban init` fits the repository it is run in: its main branch, its worktree_dir, its changelog.

Outside a git repository, or with a broken config, it refuses with one line and writes nothing.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import git, run_cli, snapshot

from kanban.changelog import insert_entry
from kanban.config import Config, dump_default_config, load_config


def _repo(tmp_path, branch: str, *, others: tuple[str, ...] = ()):
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", branch)
    (root / "README.md").write_text("# proj\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "initial")
    for name in others:
        git(root, "branch", name)
    return root


def _ignored(root, path: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", path], cwd=root, check=False).returncode == 0


# --- outside a git repository, or with a broken config: nothing written ------------------------


def test_init_outside_a_git_repository_refuses_and_writes_nothing(tmp_path):
    where = tmp_path / "plain"
    where.mkdir()
    (where / "notes.txt").write_text("mine\n")
    proc = run_cli(where, "init")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {where} is not a git repository") and "git init" in lines[0]
    assert proc.stdout == ""
    assert sorted(os.listdir(where)) == ["notes.txt"]


def test_init_with_a_broken_kanban_toml_writes_nothing(repo):
    (repo / "kanban.toml").write_text("pool_size = 0\n")
    before = snapshot(repo)
    exclude = (repo / ".git" / "info" / "exclude").read_bytes()
    proc = run_cli(repo, "init")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: kanban.toml:1: pool_size must be between") and proc.stdout == ""
    assert snapshot(repo) == before
    assert (repo / ".git" / "info" / "exclude").read_bytes() == exclude


# --- the main branch ------------------------------------------------------------------------------


def test_init_takes_the_current_branch_when_it_is_master(tmp_path):
    root = _repo(tmp_path, "master", others=("main",))  # current wins over another main-like name
    proc = run_cli(root, "init", check_code=0)
    assert load_config(root).main_branch == "master"
    assert "main branch: master (the current branch)" in proc.stdout


def test_init_finds_trunk_from_a_feature_branch(tmp_path):
    root = _repo(tmp_path, "trunk")
    git(root, "switch", "-q", "-c", "feature/login")
    proc = run_cli(root, "init", check_code=0)
    assert load_config(root).main_branch == "trunk"
    assert "main branch: trunk" in proc.stdout


def test_init_asks_origin_head_when_no_main_like_branch_exists(tmp_path):
    root = _repo(tmp_path, "develop")
    git(root, "update-ref", "refs/remotes/origin/stable", "HEAD")
    git(root, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/stable")
    git(root, "switch", "-q", "-c", "work")
    proc = run_cli(root, "init", check_code=0)
    assert load_config(root).main_branch == "stable"
    assert "main branch: stable (origin's default branch)" in proc.stdout


def test_init_falls_back_to_the_current_branch(tmp_path):
    root = _repo(tmp_path, "develop")
    run_cli(root, "init", check_code=0)
    assert load_config(root).main_branch == "develop"
    run_cli(root, "status", check_code=0)


def test_init_in_a_repository_without_commits(tmp_path):
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "master")
    run_cli(root, "init", check_code=0)
    assert load_config(root).main_branch == "master"


@pytest.mark.parametrize("branch", ["master", "release/2.x", 'we"ird', "très"])
def test_default_config_with_a_main_branch_loads_back(tmp_path, branch):
    text = dump_default_config(main_branch=branch)
    (tmp_path / "kanban.toml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path)
    assert config.main_branch == branch
    assert config == Config(main_branch=branch, source=config.source)
    changed = [a for a, b in zip(text.splitlines(), dump_default_config().splitlines()) if a != b]
    assert len(changed) == 1 and changed[0].startswith("main_branch = ") and "# the branch" in changed[0]


# --- worktree_dir in .git/info/exclude ----------------------------------------------------------


@pytest.mark.parametrize("worktree_dir, pattern", [
    (".worktrees", ".worktrees/"),
    ("trees", "trees/"),
    ("build/trees", "/build/trees/"),
])
def test_init_excludes_the_configured_worktree_dir(repo, worktree_dir, pattern):
    (repo / "kanban.toml").write_text(f'worktree_dir = "{worktree_dir}"\n')
    proc = run_cli(repo, "init", check_code=0)
    lines = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert pattern in lines and ".kanban/" in lines
    assert (worktree_dir == ".worktrees") == (".worktrees/" in lines)
    assert f"added {pattern} to .git/info/exclude" in proc.stdout
    assert _ignored(repo, f"{worktree_dir}/TASK-1/file.py")
    if "/" in worktree_dir:
        assert not _ignored(repo, f"src/{worktree_dir}/x.py")  # anchored at the top, not anywhere


def test_init_in_a_subdirectory_project_anchors_the_worktree_dir(repo):
    sub = repo / "services" / "api"
    sub.mkdir(parents=True)
    (sub / "kanban.toml").write_text('worktree_dir = "wt/x"\n')
    run_cli(sub, "init", check_code=0)
    assert "/services/api/wt/x/" in (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert _ignored(repo, "services/api/wt/x/TASK-1/a.py") and not _ignored(repo, "wt/x/a.py")


# --- a changelog under another name ------------------------------------------------------------------


def test_init_tells_how_to_keep_one_markdown_changelog(repo):
    history = "# History\n\n## 1.2.0 (2025-06-01)\n\n- Faster startup.\n"
    (repo / "HISTORY.md").write_text(history)
    git(repo, "add", "HISTORY.md")
    git(repo, "commit", "-q", "-m", "history")
    proc = run_cli(repo, "init", check_code=0)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("found ")]
    assert found == [("found HISTORY.md: kanban records merged tasks in CHANGELOG.md (just created); to keep one "
                      "changelog, run 'git mv -f HISTORY.md CHANGELOG.md' (kanban adds a '## [Unreleased]' "
                      "section above your releases)")]
    git(repo, "mv", "-f", "HISTORY.md", "CHANGELOG.md")  # what it says works, and so does what it promises
    merged = insert_entry((repo / "CHANGELOG.md").read_bytes(), "TASK-1: Add a flag", "Added").decode()
    assert merged == "# History\n\n## [Unreleased]\n\n### Added\n\n- TASK-1: Add a flag\n\n" + history[11:]
    assert "found " not in run_cli(repo, "init", check_code=0).stdout  # said once, at the creation


def test_init_suggests_mv_for_an_untracked_changelog(repo):
    (repo / "CHANGES.md").write_text("# Changes\n")
    proc = run_cli(repo, "init", check_code=0)
    assert "run 'mv -f CHANGES.md CHANGELOG.md'" in proc.stdout


def test_init_keeps_an_rst_changelog_for_releases(repo):
    (repo / "CHANGES.rst").write_text("Changes\n=======\n\n1.0\n---\n\n* First.\n")
    proc = run_cli(repo, "init", check_code=0)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("found ")]
    assert len(found) == 1
    assert found[0].startswith("found CHANGES.rst: kanban records merged tasks in CHANGELOG.md, in markdown; "
                               "keep CHANGES.rst for releases and copy the entries")
    assert (repo / "CHANGES.rst").read_text().startswith("Changes\n")


def test_init_says_nothing_about_changelogs_without_one(repo):
    (repo / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n")
    (repo / "NEWS.md").write_text("# News\n")  # CHANGELOG.md was already there: kanban uses it
    assert "found " not in run_cli(repo, "init", check_code=0).stdout


# --- what to run next ------------------------------------------------------------------------------


def test_init_ends_with_what_to_run_next(repo):
    proc = run_cli(repo, "init", check_code=0)
    last = proc.stdout.strip().splitlines()[-1]
    commit = "git add CHANGELOG.md kanban.toml prompts && git commit -m 'kanban'   then: "
    assert last.startswith(f"next: {commit}kanban add ") and last.index("kanban add") < last.index("kanban preflight")
    run_cli(repo, "add", "First task", check_code=0)
    last = run_cli(repo, "init", check_code=0).stdout.strip().splitlines()[-1]
    assert last == f"next: {commit}kanban preflight   then: kanban run"
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "kanban")
    last = run_cli(repo, "init", check_code=0).stdout.strip().splitlines()[-1]
    assert last == "next: kanban preflight   then: kanban run"


def test_init_keeps_the_working_board_out_of_git_and_changelog_in(repo):
    proc = run_cli(repo, "init", check_code=0)
    assert ("kept TODO.md, IN_PROGRESS.md, REVIEW.md, TESTING.md out of git (.git/info/exclude): they are your "
            "working board") in proc.stdout
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "kanban")
    tracked = git(repo, "ls-files").split()
    assert "CHANGELOG.md" in tracked and "kanban.toml" in tracked
    assert not {"TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md"} & set(tracked)
    run_cli(repo, "add", "A task", check_code=0)
    assert git(repo, "status", "--porcelain") == "", "the working board never dirties git status"


def test_init_leaves_a_board_file_that_is_already_tracked_alone(repo):
    (repo / "TODO.md").write_text("# TODO\n")
    git(repo, "add", "TODO.md")
    git(repo, "commit", "-q", "-m", "our board is shared")
    proc = run_cli(repo, "init", check_code=0)
    assert "kept IN_PROGRESS.md, REVIEW.md, TESTING.md out of git" in proc.stdout
    assert "/TODO.md" not in (repo / ".git" / "info" / "exclude").read_text()
