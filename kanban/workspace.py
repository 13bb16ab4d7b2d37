"""Where the managed repository is (the paths kanban keeps inside it: kanban.paths)."""

from __future__ import annotations

from pathlib import Path

from kanban.errors import KanbanError

MARKERS = (".git", "kanban.toml")


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` holding .git or kanban.toml, else `start`."""
    here = (start or Path.cwd()).resolve()
    if not here.is_dir():
        raise KanbanError(f"{here} is not a directory", hint="pass an existing directory with -C")
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in MARKERS):
            return candidate
    return here
