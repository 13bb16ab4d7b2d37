"""The title and body of a new task entry, checked before they reach TODO.md. Pure.

`kanban add` takes them from the command line, `kanban plan` from the planner's
report: the same rules keep either from breaking the board (a heading that ends
the entry early, a code fence or HTML block left open that hides every task
below it, a control character or terminal escape in a title).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from kanban.errors import KanbanError
from kanban.mdblocks import top_headings

# C0 controls but tab and newline (CR is a line break, kept out so lines stay as typed), DEL, C1.
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# And the Unicode controls that reorder or hide text: bidi embeddings, overrides and isolates, BOM.
HIDDEN_RE = re.compile("[\u202a-\u202e\u2066-\u2069\ufeff]")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HTML_OPEN_RE = re.compile(r"^ {0,3}<(?:!--|\?|![A-Za-z]|!\[CDATA\[|(?:script|pre|style|textarea)(?:[\s>]|$))",
                           re.IGNORECASE)
_PROBE = "## PROBE-1: probe"


def check_title(title: str, *, details: str = "put details in --body") -> str:
    """TITLE stripped, or a KanbanError saying what keeps it from being one heading line."""
    text = title.strip()
    if not text:
        raise KanbanError("the title is empty", hint="give the task a short title")
    if "\n" in text or "\r" in text:
        raise KanbanError("the title spans several lines", hint=details)
    if text.startswith("#"):
        raise KanbanError("the title starts with '#'", hint="write the title without markdown heading marks")
    if CONTROL_RE.search(text):
        raise KanbanError("the title holds a control character or terminal escape",
                          hint="write it as plain text")
    return text


def check_body(body: str, where: Callable[[int], str]) -> str:
    """BODY, refused when it would break the board: a heading that ends the entry inside it,
    or a code fence or HTML block left open that hides every task below it. WHERE(i) names
    its line i (0-based, after leading blank lines) in the error: "line 3 of --body"."""
    if not body.strip():
        return body
    lead = len(body) - len(body.lstrip("\n"))  # new_entry_lines drops leading blank lines
    text = body.strip("\n")
    lines = text.split("\n")

    def at(index: int) -> str:
        return where(index + lead)

    for i, line in enumerate(lines):
        if CONTROL_RE.search(line.replace("\r", "")):
            raise KanbanError(f"the body holds a control character or terminal escape ({at(i)})",
                              hint="write it as plain text")
        if "\r" in line:
            raise KanbanError(f"the body holds a carriage return ({at(i)})", hint="end lines with \\n only")
    for heading in top_headings(text):
        shown = lines[heading.line].strip()
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        if heading.atx:
            raise KanbanError(
                f"the body holds a markdown heading ({at(heading.line)}: {shown!r}), which would end"
                " the task's entry there",
                hint="indent that line by four spaces, or drop the '#' (### and deeper headings are fine)",
            )
        raise KanbanError(
            f"the body holds a markdown heading ({at(heading.line)}: {shown!r}, underlined by a"
            " --- or === line below it), which would end the task's entry there",
            hint="put a blank line between the text and the --- or === line, or drop that line",
        )
    probe = text + "\n\n" + _PROBE + "\n"
    if not any(h.line == len(lines) + 1 and h.level == 2 for h in top_headings(probe)):
        raise _unclosed(lines, at)
    return body


def _unclosed(lines: list[str], at: Callable[[int], str]) -> KanbanError:
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
            f"the body opens a code fence ({at(fence_at)}: {fence}) that it does not close, which would hide"
            " every task added below it",
            hint=f"add a closing {fence} line at the end of the code",
        )
    opened = [i for i, line in enumerate(lines) if _HTML_OPEN_RE.match(line)]
    shown = f" ({at(opened[-1])})" if opened else ""
    return KanbanError(
        f"the body opens an HTML block or comment{shown} that it does not close, which would hide every task"
        " added below it",
        hint="close it (<!-- ... -->, </pre>, </script>), or indent it by four spaces to show it as code",
    )
