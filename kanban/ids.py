"""Task IDs. They reach git refs and filesystem paths, so they are validated strictly."""

from __future__ import annotations

import re

from kanban.errors import KanbanError

# A letter, then letters/digits/_ , a hyphen, a number. ASCII only: unicode
# look-alikes must never pass as IDs. At most 64 characters.
ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*-[0-9]+")
MAX_ID_LEN = 64
DEFAULT_PREFIX = "TASK"


def is_valid_id(text: str) -> bool:
    return len(text) <= MAX_ID_LEN and ID_RE.fullmatch(text) is not None


def check_id(text: str, *, file: str | None = None, line: int | None = None, what: str = "task ID") -> str:
    """Return `text` if it is a valid ID, else raise a clear KanbanError."""
    if not is_valid_id(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise KanbanError(
            f"{what} {shown!r} is not a valid ID",
            file=file,
            line=line,
            hint="IDs look like TASK-12: a letter, letters/digits/_, a hyphen and a number, at most 64 characters",
        )
    return text


def id_number(task_id: str) -> tuple[str, int]:
    prefix, _, num = task_id.rpartition("-")
    return prefix, int(num)


def branch_name(task_id: str) -> str:
    return f"kanban/{task_id}"
