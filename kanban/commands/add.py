"""`kanban add`: append a task entry to TODO.md."""

from __future__ import annotations

from pathlib import Path

from kanban.board import Board, parse_id_list, split_list
from kanban.errors import KanbanError
from kanban.output import emit_json, say
from kanban.store import update


def add(root: Path, title: str, *, priority: int | None, depends: str, files: str, track: str, body: str,
        as_json: bool) -> int:
    title = _check_title(title)
    if priority is not None and priority < 1:
        raise KanbanError(f"--priority must be 1 or more, got {priority}", hint="1 is the most urgent")
    deps = parse_id_list(depends, what="--depends value")
    meta = {
        "priority": str(priority) if priority is not None else "",
        "depends": ", ".join(deps),
        "files": ", ".join(split_list(files)),
        "track": track.strip(),
    }

    def change(board: Board) -> str:
        missing = [d for d in deps if d not in board.all_ids()]
        if missing:
            raise KanbanError(f"--depends names {missing[0]}, which is not on the board",
                              hint="run 'kanban status' to see the task IDs")
        return board.add(title, meta, body)

    task_id = update(root, change)
    if as_json:
        emit_json({"id": task_id, "title": title})
    else:
        say(f"added {task_id}: {title}")
    return 0


def _check_title(title: str) -> str:
    text = title.strip()
    if not text:
        raise KanbanError("the title is empty", hint="give the task a short title")
    if "\n" in text or "\r" in text:
        raise KanbanError("the title spans several lines", hint="put details in --body")
    if text.startswith("#"):
        raise KanbanError("the title starts with '#'", hint="write the title without markdown heading marks")
    return text
