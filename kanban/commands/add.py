"""`kanban add`: append a task entry to TODO.md."""

from __future__ import annotations

from pathlib import Path

from kanban.board import Board, parse_id_list, split_list
from kanban.entrytext import check_body, check_title
from kanban.errors import KanbanError
from kanban.output import emit_json, say
from kanban.store import update


def add(root: Path, title: str, *, priority: int | None, depends: str, files: str, track: str, body: str,
        as_json: bool) -> int:
    title = check_title(title)
    body = _check_body(body)
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


def _check_body(body: str) -> str:
    return check_body(body, lambda index: f"line {index + 1} of --body")
