"""`kanban init`: fit kanban to a git repository, creating what is missing, never overwriting."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

from kanban.errors import KanbanError
from kanban.output import say
from kanban.paths import STATE_DIR
from kanban.prompts import packaged_prompts_dir

BOARD_TEMPLATES = {
    "TODO.md": "# TODO\n\nTasks waiting for an agent. Add one as a `## ` heading; kanban gives it an ID.\n"
    "Metadata lines under the heading: `priority: 1` (most urgent), `depends: TASK-3`,\n"
    "`files: src/cache.py, tests/*.py`.\n",
    "IN_PROGRESS.md": "# In progress\n\nTasks a task agent is working on.\n",
    "REVIEW.md": "# Review\n\nTasks waiting for or under review.\n",
    "TESTING.md": "# Testing\n\nTasks being tested, and tested tasks waiting for the merge queue.\n",
    "CHANGELOG.md": "# Changelog\n\nAll notable changes to this project are documented in this file.\n\n"
    "The format is based on [Keep a Changelog](https://keepachangelog.com/en/1.1.0/).\n\n"
    "## [Unreleased]\n",
}
# State dir, and the caches aider writes into a worktree; the worktree dir comes from the config.
EXCLUDES = [f"{STATE_DIR}/", ".aider*"]
MAIN_NAMES = ("main", "master", "trunk")
# The working board: the person's files, never committed by kanban. Those init creates are kept out
# of git, so `git status` stays clean while tasks move; CHANGELOG.md is meant to be committed (each
# merge commit then carries its line).
WORKING_BOARD = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md")
# Changelogs under other names (compared case-insensitively), found next to where CHANGELOG.md goes.
OTHER_CHANGELOGS = (
    "CHANGES.md", "HISTORY.md", "NEWS.md", "CHANGELOG.markdown", "CHANGES.markdown",
    "CHANGES.rst", "HISTORY.rst", "CHANGELOG.rst", "NEWS.rst",
    "CHANGES.txt", "HISTORY.txt", "CHANGELOG.txt", "NEWS.txt",
    "CHANGES", "HISTORY", "CHANGELOG", "NEWS",
)


def init(root: Path, *, quiet: bool = False) -> int:
    """Create the board files, kanban.toml (with the repository's main branch) and prompts/.

    Refuses (exit 2, nothing written) outside a git repository or with a broken config.
    `quiet` says nothing, for callers that build a repository themselves (the demo).
    """
    from kanban.config import dump_default_config, load_config

    root = Path(root)
    top = _toplevel(root)
    config = load_config(root)  # an existing kanban.toml or [tool.kanban] must be valid: before any write
    lines: list[str] = []
    created = []
    for name, text in BOARD_TEMPLATES.items():
        created += _create(root / name, text)
    if not (root / "kanban.toml").exists() and not _has_tool_section(root / "pyproject.toml"):
        branch, how = detect_main_branch(root)
        created += _create(root / "kanban.toml", dump_default_config(main_branch=branch))
        lines.append(f"main branch: {branch} ({how}); change main_branch in kanban.toml if that is wrong")
    prompts = root / "prompts"
    for template in sorted(packaged_prompts_dir().glob("*.md")):
        created += _create(prompts / template.name, template.read_text(encoding="utf-8"))
    lines[:0] = [f"created {name}" for name in created]
    lines += [f"added {p} to .git/info/exclude" for p in _exclude_state_dirs(root, top, config.worktree_dir)]
    local = [name for name in WORKING_BOARD if name in created]
    if local and _keep_out_of_git(root, top, local):
        lines.append(f"kept {', '.join(local)} out of git (.git/info/exclude): they are your working board; "
                     f"kanban never commits them (to keep them in history anyway: git add -f)")
    if "CHANGELOG.md" in created:
        lines += _other_changelog(root)
    if not created:
        lines.append("nothing to do: every file already exists")
    lines.append(_next_steps(root))
    if not quiet:
        for line in lines:
            say(line)
    return 0


def _toplevel(root: Path) -> Path:
    from kanban import git

    top = git.toplevel(root)
    if top is None:
        raise KanbanError(f"{root} is not a git repository",
                          hint="run 'git init' there first (kanban works on a git repository), then 'kanban init'")
    return top


def detect_main_branch(root: Path) -> tuple[str, str]:
    """The branch finished work goes into, and how it was found.

    The current branch if it is called main, master or trunk; else whichever of those exists;
    else what origin's HEAD points at; else the current branch; else "main".
    """
    from kanban import git

    current = git.current_branch(root)
    if current in MAIN_NAMES:
        return current, "the current branch"
    for name in MAIN_NAMES:
        if git.branch_exists(root, name):
            return name, f"the repository has a '{name}' branch"
    status, out, _ = git.run_status(root, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD")
    remote = out.strip().removeprefix("origin/") if status == 0 else ""
    if remote and remote != "HEAD":
        return remote, "origin's default branch"
    if current:
        return current, "the current branch"
    return "main", "no branch found: the default"


def _create(path: Path, text: str) -> list[str]:
    if path.exists() or path.is_symlink():
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8", newline="") as out:
        out.write(text)
    return [str(path.relative_to(path.parent.parent)) if path.parent.name == "prompts" else path.name]


def _has_tool_section(pyproject: Path) -> bool:
    # Read as load_config reads it: never blocks on a FIFO, bounded.
    from kanban.config import PYPROJECT_FILE, _present, _read

    return _present(pyproject) and "[tool.kanban]" in _read(pyproject, PYPROJECT_FILE)


def worktree_pattern(root: Path, top: Path, worktree_dir: str) -> str:
    """The .git/info/exclude line for the configured worktree_dir (relative to root)."""
    rel = PurePosixPath(worktree_dir.replace("\\", "/"))
    try:
        inside = PurePosixPath(root.resolve().relative_to(top.resolve()).as_posix())
    except ValueError:
        inside = PurePosixPath(".")
    if inside == PurePosixPath(".") and len(rel.parts) == 1:
        return f"{rel.as_posix()}/"  # one name at the top: as git users write it
    return f"/{(inside / rel).as_posix()}/"  # anchored: a path with a slash is relative to the top


def _exclude_state_dirs(root: Path, top: Path, worktree_dir: str) -> list[str]:
    from kanban import git

    return git.add_exclude(root, [worktree_pattern(root, top, worktree_dir), *EXCLUDES])


def _keep_out_of_git(root: Path, top: Path, names: list[str]) -> list[str]:
    from kanban import git

    try:
        inside = PurePosixPath(root.resolve().relative_to(top.resolve()).as_posix())
    except ValueError:
        inside = PurePosixPath(".")
    return git.add_exclude(root, [f"/{(inside / name).as_posix()}" for name in names])


def _other_changelog(root: Path) -> list[str]:
    """What to do about a changelog kept under another name: kanban writes CHANGELOG.md."""
    from kanban import git

    wanted = {name.lower(): name for name in OTHER_CHANGELOGS}
    wanted["changelog.md"] = "CHANGELOG.md"  # a differently cased changelog.md
    found = sorted(p.name for p in root.iterdir()
                   if p.name.lower() in wanted and p.name != "CHANGELOG.md" and p.is_file())
    lines = []
    for name in found:
        if name.lower().endswith((".md", ".markdown")):
            tracked = git.run_status(root, "ls-files", "--error-unmatch", "--", name)[0] == 0
            move = f"{'git mv' if tracked else 'mv'} -f {shlex.quote(name)} CHANGELOG.md"
            lines.append(f"found {name}: kanban records merged tasks in CHANGELOG.md (just created); to keep one "
                         f"changelog, run '{move}' (kanban adds a '## [Unreleased]' section above your releases)")
        else:
            lines.append(f"found {name}: kanban records merged tasks in CHANGELOG.md, in markdown; keep {name} for "
                         f"releases and copy the entries under '## [Unreleased]' from CHANGELOG.md when you release")
    return lines


def _next_steps(root: Path) -> str:
    from kanban.store import load_board

    try:
        board = load_board(root, check=False)
        empty = not any(t.column.value == "TODO" for t in board.tasks()) and not list(board.new_entries())
    except KanbanError:
        empty = False  # a TODO.md preflight will explain
    commit = ""
    from kanban import git

    untracked = [name for name in ("CHANGELOG.md", "kanban.toml", "prompts")
                 if (root / name).exists() and git.run_status(root, "ls-files", "--error-unmatch", "--", name)[0]]
    if untracked:
        commit = f"git add {' '.join(untracked)} && git commit -m 'kanban'   then: "
    if empty:
        return f"next: {commit}kanban add \"Describe the first task\"   then: kanban preflight   then: kanban run"
    return f"next: {commit}kanban preflight   then: kanban run"
