"""`kanban add`: append a task entry to TODO.md."""

from __future__ import annotations

import re
from pathlib import Path

from kanban.board import Board, parse_id_list, split_list
from kanban.errors import KanbanError
from kanban.mdblocks import top_headings
from kanban.output import emit_json, say
from kanban.store import update


def add(root: Path, title: str, *, priority: int | None, depends: str, files: str, track: str, body: str,
        as_json: bool) -> int:
    title = _check_title(title)
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


def _check_title(title: str) -> str:
    text = title.strip()
    if not text:
        raise KanbanError("the title is empty", hint="give the task a short title")
    if "\n" in text or "\r" in text:
        raise KanbanError("the title spans several lines", hint="put details in --body")
    if text.startswith("#"):
        raise KanbanError("the title starts with '#'", hint="write the title without markdown heading marks")
    if _CONTROL_RE.search(text):
        raise KanbanError("the title holds a control character or terminal escape",
                          hint="write it as plain text")
    return text


# C0 controls but tab and newline (CR is a line break, kept out so lines stay as typed), DEL, C1.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HTML_OPEN_RE = re.compile(r"^ {0,3}<(?:!--|\?|![A-Za-z]|!\[CDATA\[|(?:script|pre|style|textarea)(?:[\s>]|$))",
                           re.IGNORECASE)
_PROBE = "## PROBE-1: probe"


def _check_body(body: str) -> str:
    """The --body text, refused when it would break the board: a heading that ends the entry
    inside it, or a code fence or HTML block left open that hides every task below it."""
    if not body.strip():
        return body
    lead = len(body) - len(body.lstrip("\n"))  # new_entry_lines drops leading blank lines
    text = body.strip("\n")
    lines = text.split("\n")

    def where(index: int) -> str:
        return f"line {index + 1 + lead} of --body"

    for i, line in enumerate(lines):
        if _CONTROL_RE.search(line.replace("\r", "")):
            raise KanbanError(f"the body holds a control character or terminal escape ({where(i)})",
                              hint="write it as plain text")
        if "\r" in line:
            raise KanbanError(f"the body holds a carriage return ({where(i)})", hint="end lines with \\n only")
    for heading in top_headings(text):
        shown = lines[heading.line].strip()
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        if heading.atx:
            raise KanbanError(
                f"the body holds a markdown heading ({where(heading.line)}: {shown!r}), which would end"
                " the task's entry there",
                hint="indent that line by four spaces, or drop the '#' (### and deeper headings are fine)",
            )
        raise KanbanError(
            f"the body holds a markdown heading ({where(heading.line)}: {shown!r}, underlined by a"
            " --- or === line below it), which would end the task's entry there",
            hint="put a blank line between the text and the --- or === line, or drop that line",
        )
    probe = text + "\n\n" + _PROBE + "\n"
    if not any(h.line == len(lines) + 1 and h.level == 2 for h in top_headings(probe)):
        raise _unclosed(lines, where)
    return body


def _unclosed(lines: list[str], where) -> KanbanError:
    """The error for a body that hides what follows it: which block it leaves open, and where."""
    fence_at, fence = None, ""
    for i, line in enumerate(lines):
        m = _FENCE_RE.match(line)
        if not m:
            continue
        mark = m.group(1)
        if fence_at is None:
            if not (mark[0] == "`" and "`" in m.group(2)):  # ``` with a backtick in its info is no fence
                fence_at, fence = i, mark
        elif mark[0] == fence[0] and len(mark) >= len(fence) and not m.group(2).strip():
            fence_at = None
    if fence_at is not None:
        return KanbanError(
            f"the body opens a code fence ({where(fence_at)}: {fence}) that it does not close, which would hide"
            " every task added below it",
            hint=f"add a closing {fence} line at the end of the code",
        )
    opened = [i for i, line in enumerate(lines) if _HTML_OPEN_RE.match(line)]
    at = f" ({where(opened[-1])})" if opened else ""
    return KanbanError(
        f"the body opens an HTML block or comment{at} that it does not close, which would hide every task"
        " added below it",
        hint="close it (<!-- ... -->, </pre>, </script>), or indent it by four spaces to show it as code",
    )
