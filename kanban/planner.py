"""Planning: what a planner proposes, read as task entries, checked, numbered, rendered. Pure.

The planner (`kanban plan`) answers with task entries in the board's own format,
written to its report:

    ## NEW-1: Add the OAuth callback route
    priority: 2
    files: src/auth/*.py

    What to do, where, how to test it.

    ## NEW-2: Log in with OAuth from the login page
    depends: NEW-1, TASK-7

Its answer is never trusted. `read_plan` parses it with the board's parser (so a
heading is a heading exactly where TODO.md would have one); each entry keeps the
planner's own name for it (its label: an ID such as NEW-1, or a placeholder such
as TASK-A), which `depends` may use. `check_plan` applies the board's rules and
words (kanban.board.meta_problems, depends_problems, find_cycle) and the rules
of `kanban add` for a title and a body (kanban.entrytext), one KanbanError per
problem; `keep_valid` drops the entries with a problem, and those that depend
on them, for `--partial`. `number` gives the entries fresh IDs after the highest
on the board and in CHANGELOG.md and rewrites the labels in `depends` to them;
a label wins over an existing task of the same ID. `section` renders them under
a level-1 heading, as TODO.md will hold them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from kanban.board import (
    CYCLE_HINT,
    CYCLE_WORDS,
    depends_problems,
    find_cycle,
    meta_problems,
    parse_blocks,
    split_list,
)
from kanban.entry import new_entry_lines
from kanban.entrytext import CONTROL_RE, HIDDEN_RE, check_body, check_title
from kanban.errors import KanbanError
from kanban.ids import next_ids
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column, Task
from kanban.untrusted import clean

MAX_TASKS = 50  # a plan longer than this is a planner gone astray, not a plan to read
MAX_TITLE = 200  # characters
MAX_FEATURE = 200  # characters of FEATURE, the name the heading gives the plan
BODY_LIMIT = 8000  # bytes of an entry's body kept (as agent output is bounded)
META_LIMIT = 1000  # bytes of a metadata value kept
# The planner's own names for its tasks besides real IDs: a placeholder such as TASK-A or NEW-B2.
LABEL_RE = re.compile(r"[A-Z][A-Z0-9_]*-[A-Z0-9_]+")
ORDER = ("priority", "depends", "files", "track")  # the known keys, in the order they are written
OWN_KEYS = ("status",)  # kanban's own metadata: never the planner's to set


class Proposed(NamedTuple):
    """One entry of the planner's answer, as written (metadata values cleaned)."""

    label: str | None  # the planner's own name for it (NEW-1, TASK-A), which depends may use
    title: str
    meta: dict[str, str]
    body: str
    line: int  # of its heading, in the answer
    meta_lines: dict[str, int]  # key -> line, in the answer
    markers: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How a message names it: its label, else its title in quotes."""
        return self.label or repr(self.title if len(self.title) <= 60 else self.title[:57] + "...")

    def depends(self) -> list[str]:
        return split_list(self.meta.get("depends", ""))


class Planned(NamedTuple):
    """An entry numbered for TODO.md: its new ID, depends rewritten to new IDs."""

    task_id: str
    label: str | None
    title: str
    meta: dict[str, str]
    body: str
    line: int


# --- reading -----------------------------------------------------------------------------


def read_plan(text: str, source: str) -> list[Proposed]:
    """The task entries of the planner's answer TEXT (SOURCE names it in messages), parsed
    as TODO.md would be; the prose around them is not part of the plan. A KanbanError when
    TEXT cannot be read as a board file at all (a NUL byte, over the size limit)."""
    try:
        parsed = parse_blocks(Path(source), Column.TODO, text.encode("utf-8", "surrogateescape"))
    except KanbanError as exc:  # its messages name the file by its name alone
        raise KanbanError(f"the plan cannot be read: {exc.message}", file=source, line=exc.line) from None
    found = []
    for entry in parsed.board_file(Path(source), Column.TODO).entries():
        label, title = entry.task_id, entry.title
        if label is None:  # a placeholder the board does not take for an ID: `## TASK-A: ...`
            head, colon, rest = title.partition(":")
            if colon and LABEL_RE.fullmatch(head.strip()):
                label, title = head.strip(), rest.strip()
        meta: dict[str, str] = {}
        lines: dict[str, int] = {}
        for index, key, value in entry.meta_lines():
            if key not in meta:
                meta[key] = _one_line(clean(value, max_bytes=META_LIMIT))
                lines[key] = entry.line_no + index
        body = clean(entry.body(), max_bytes=BODY_LIMIT)
        found.append(Proposed(label, title, meta, body, entry.line_no, lines, tuple(entry.markers)))
    return found


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- checking ----------------------------------------------------------------------------


def check_plan(proposed: Sequence[Proposed], known: Iterable[str], source: str) -> dict[int, list[KanbanError]]:
    """Every problem of the plan, by the index of the entry it belongs to (-1: the plan as a
    whole). KNOWN: the IDs on the board and in CHANGELOG.md, which depends may name besides
    the plan's own labels. Each problem names SOURCE and the line, in the board's words."""
    problems: dict[int, list[KanbanError]] = {}

    def add(index: int, message: str, line: int | None, hint: str | None = None) -> None:
        problems.setdefault(index, []).append(KanbanError(message, file=source, line=line, hint=hint))

    if not proposed:
        add(-1, "the plan holds no task entry", None,
            "a task is a '## ' heading with its title, as in TODO.md; see prompts/planner.md for the format")
        return problems
    if len(proposed) > MAX_TASKS:
        add(-1, f"the plan has {len(proposed)} tasks, over the limit of {MAX_TASKS}", proposed[MAX_TASKS].line,
            "ask for a smaller feature, or plan it in parts")
        return problems
    labels: dict[str, int] = {}
    for i, p in enumerate(proposed):
        if p.label is not None and p.label in labels:
            first = proposed[labels[p.label]]
            add(i, f"task ID {p.label} is used twice (also at {source}:{first.line})", p.line,
                "give one of them a new ID, or delete the stale copy")
        elif p.label is not None:
            labels[p.label] = i
    known = set(known)
    for i, p in enumerate(proposed):
        for message, hint, line in _entry_problems(p, known, labels):
            add(i, message, line, hint)
    # Depending on itself is named above, as the board names it: not a cycle as well.
    graph = {p.label: [d for d in p.depends() if d in labels and d != p.label] for p in proposed
             if p.label is not None}
    for cycle in _cycles(graph):
        first = proposed[labels[cycle[0]]]
        add(labels[cycle[0]], CYCLE_WORDS + " -> ".join(cycle), first.meta_lines.get("depends", first.line),
            CYCLE_HINT)
    return problems


def _entry_problems(p: Proposed, known: set[str], labels: Mapping[str, int]) -> list[tuple[str, str | None, int]]:
    found: list[tuple[str, str | None, int]] = []
    try:
        check_title(p.title, details="keep the title to one line")
        if HIDDEN_RE.search(p.title):
            raise KanbanError("the title holds a character that reorders or hides text (a bidi control)",
                              hint="write it as plain text")
        if len(p.title) > MAX_TITLE:
            raise KanbanError(f"the title is {len(p.title)} characters long, over {MAX_TITLE}",
                              hint="put the details in the body")
    except KanbanError as exc:
        found.append((f"{p.name}: {exc.message}", exc.hint, p.line))
    if p.markers:
        found.append((f"{p.name} carries the marker{'s' if len(p.markers) > 1 else ''} "
                      + ", ".join(f"[{m}]" for m in p.markers) + ", which only kanban sets",
                      "write the heading without it: a planned task starts fresh", p.line))
    for key in OWN_KEYS:
        if key in p.meta:
            found.append((f"{p.name} sets '{key}:', which is kanban's own line", f"remove the {key} line",
                          p.meta_lines[key]))
    for key, message, hint in meta_problems(p.name, p.meta):
        found.append((message, hint, p.meta_lines.get(key, p.line)))
    deps = p.depends()
    depends_at = p.meta_lines.get("depends", p.line)
    if p.label is not None and p.label in deps:
        found.append((f"{p.label} depends on itself", "remove it from its own depends line", depends_at))
    for message, hint in depends_problems(None, [d for d in deps if d not in labels], known):
        found.append((message, hint, depends_at))
    try:
        check_body(p.body, lambda index: f"line {index + 1} of its body")
    except KanbanError as exc:
        found.append((f"{p.name}: {exc.message}", exc.hint, p.line))
    return found


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Every dependency cycle, one per group: a cycle found, its members taken out, again."""
    left = {k: list(v) for k, v in graph.items()}
    found = []
    while (cycle := find_cycle(left)) is not None:
        found.append(cycle)
        for node in cycle:
            left.pop(node, None)
        left = {k: [d for d in v if d in left] for k, v in left.items()}
    return found


def keep_valid(proposed: Sequence[Proposed], problems: Mapping[int, list[KanbanError]],
               source: str) -> tuple[list[int], list[KanbanError]]:
    """For --partial: the indexes of the entries kept (no problem of their own, and no task of
    the plan they depend on left out), and a line for each entry left out for a task it
    depends on (those with problems of their own are named by their problems)."""
    if problems.get(-1):
        return [], []
    out = {i for i in problems if i >= 0}
    labels = {p.label: i for i, p in enumerate(proposed) if p.label is not None}
    said = []
    changed = True
    while changed:
        changed = False
        for i, p in enumerate(proposed):
            gone = [d for d in p.depends() if d in labels and labels[d] in out]
            if i not in out and gone:
                out.add(i)
                said.append(KanbanError(f"{p.name} is left out: it depends on {gone[0]}, which is left out",
                                        file=source, line=p.meta_lines.get("depends", p.line)))
                changed = True
    return [i for i in range(len(proposed)) if i not in out], said


# --- numbering and rendering ----------------------------------------------------------------


def number(proposed: Sequence[Proposed], taken: Iterable[str]) -> list[Planned]:
    """Fresh IDs for the entries, after the highest TASK-N TAKEN, and depends rewritten: a label
    of the plan becomes its new ID (a label wins over an existing task of the same ID), any other
    ID stays as it is (keep_valid leaves out what depends on an entry left out)."""
    given = next_ids(set(taken), len(proposed))
    ids = {p.label: task_id for p, task_id in zip(proposed, given) if p.label is not None}
    out = []
    for p, task_id in zip(proposed, given):
        meta = {key: p.meta.get(key, "") for key in ORDER}
        meta["depends"] = ", ".join(dict.fromkeys(ids.get(d, d) for d in p.depends()))
        meta.update((key, value) for key, value in p.meta.items() if key not in ORDER)
        out.append(Planned(task_id, p.label, p.title, {k: v for k, v in meta.items() if v}, p.body, p.line))
    return out


def heading(feature: str, day: str) -> str:
    """The level-1 heading the plan goes under: `Plan: FEATURE (2026-05-04)`."""
    return f"Plan: {feature} ({day})"


def section(title: str, planned: Sequence[Planned]) -> list[list[str]]:
    """The blocks TODO.md gets (lines ending in "\\n"): `# TITLE` and a blank line, then each
    entry as `kanban add` writes one, a blank line between two entries."""
    blocks = [[f"# {title}\n", "\n"]]
    for i, p in enumerate(planned):
        lines = new_entry_lines(p.task_id, p.title, p.meta, p.body)
        blocks.append(lines + (["\n"] if i < len(planned) - 1 else []))
    return blocks


def check_feature(feature: str) -> str:
    """FEATURE as the plan's heading names it, stripped; a KanbanError when it cannot be one."""
    text = feature.strip()
    if not text:
        raise KanbanError("the feature is empty", hint='name it: kanban plan "Log in with OAuth"')
    if "\n" in text or "\r" in text:
        raise KanbanError("the feature spans several lines",
                          hint="give it a one-line name; put the details in a file the planner can read and "
                               "name that file in it")
    if len(text) > MAX_FEATURE:
        raise KanbanError(f"the feature is {len(text)} characters long, over {MAX_FEATURE}",
                          hint="give it a short name; put the details in a file the planner can read")
    if CONTROL_RE.search(text) or HIDDEN_RE.search(text):
        raise KanbanError("the feature holds a control character, a terminal escape or a character that "
                          "reorders text", hint="write it as plain text")
    return text


# --- what the planner is told about the board -----------------------------------------------


def board_summary(tasks: Sequence[Task], done: int, *, limit: int = 200) -> str:
    """The board as it stands, for the planner's prompt: the tasks waiting in TODO.md, those
    in flight with the files they hold, and how many are merged; at most LIMIT lines of tasks."""
    waiting = [t for t in tasks if t.column is Column.TODO]
    flying = [t for t in tasks if t.column in BOARD_COLUMNS and t.column is not Column.TODO]
    out = [f"Waiting in TODO.md ({len(waiting)}):"]
    out += _task_lines(waiting, limit, column=False) or ["- (none)"]
    out += ["", f"In flight in IN_PROGRESS.md, REVIEW.md and TESTING.md ({len(flying)}):"]
    out += _task_lines(flying, max(limit - len(waiting), 20), column=True) or ["- (none)"]
    held = list(dict.fromkeys(f for t in flying if not t.escalated for f in t.files))
    out += ["", "Files in flight (held until their task is merged): " + (_clip(", ".join(held), 2000) or "none")]
    out += ["", f"Merged (in CHANGELOG.md): {done} task{'s' if done != 1 else ''}."]
    return "\n".join(out)


def _task_lines(tasks: Sequence[Task], limit: int, *, column: bool) -> list[str]:
    lines = []
    for t in tasks[:limit]:
        facts = [f"priority {t.priority}"]
        if t.depends:
            facts.append("depends: " + ", ".join(t.depends))
        if t.files:
            facts.append("files: " + _clip(", ".join(t.files), 300))
        where = f" [{COLUMN_FILES[t.column]}" + (", escalated" if t.escalated else "") + "]" if column else ""
        lines.append(f"- {t.id}: {_clip(_one_line(clean(t.title)), 200)}{where} ({'; '.join(facts)})")
    if len(tasks) > limit:
        lines.append(f"- ... and {len(tasks) - limit} more")
    return lines


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
