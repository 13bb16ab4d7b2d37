"""Task IDs. They reach git refs and filesystem paths, so they are validated strictly."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

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


def next_ids(taken: Iterable[str], count: int = 1, *, prefix: str = DEFAULT_PREFIX,
             locate: Callable[[str], tuple[str | None, int | None]] | None = None) -> list[str]:
    """The next COUNT free `PREFIX-N` IDs, counting up from the highest one TAKEN.

    Never an ID over MAX_ID_LEN: it would not be read back as an ID, so the entry
    would get a new one at every write. Reusing a lower free number instead is no
    way out, as a number's runs, strikes, port and branch outlive its entry (a
    deleted task's history would pass to the new one), so past the highest
    number that fits, this refuses, naming the task with the highest number
    (LOCATE gives its file and line).
    """
    highest, highest_id = 0, None
    for task_id in taken:
        head, number = id_number(task_id)
        if head == prefix and number >= highest:
            highest, highest_id = number, task_id
    given = [f"{prefix}-{highest + i}" for i in range(1, count + 1)]
    if given and len(given[-1]) > MAX_ID_LEN:
        file, line = locate(highest_id) if locate and highest_id else (None, None)
        shown = highest_id if highest_id and len(highest_id) <= 30 else f"{prefix}-{str(highest)[:8]}..."
        raise KanbanError(
            f"cannot number a new task: after {shown} the next ID would be {len(given[-1])} characters,"
            f" over the {MAX_ID_LEN}-character limit for IDs",
            file=file,
            line=line,
            hint=f"give {shown} a smaller number (new IDs count up from the highest {prefix}-N)",
        )
    return given
