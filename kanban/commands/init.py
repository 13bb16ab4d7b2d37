"""`kanban init`: create what is missing, never overwrite."""

from __future__ import annotations

from pathlib import Path

from kanban.output import say, warn
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
# State dirs, and the caches aider writes into a worktree.
EXCLUDES = [".worktrees/", ".kanban/", ".aider*"]


def init(root: Path) -> int:
    from kanban.config import dump_default_config

    created = []
    for name, text in BOARD_TEMPLATES.items():
        created += _create(root / name, text)
    if not (root / "kanban.toml").exists() and not _has_tool_section(root / "pyproject.toml"):
        created += _create(root / "kanban.toml", dump_default_config())
    prompts = root / "prompts"
    for template in sorted(packaged_prompts_dir().glob("*.md")):
        created += _create(prompts / template.name, template.read_text(encoding="utf-8"))
    for name in created:
        say(f"created {name}")
    _exclude_state_dirs(root)
    if not created:
        say("nothing to do: every file already exists")
    return 0


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


def _exclude_state_dirs(root: Path) -> None:
    if not (root / ".git").exists():
        warn("not a git repository: run 'git init' and commit before 'kanban tick'")
        return
    from kanban import git

    for pattern in git.add_exclude(root, EXCLUDES):
        say(f"added {pattern} to .git/info/exclude")
