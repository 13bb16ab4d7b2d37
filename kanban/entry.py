"""One task entry: its raw lines, and edits that touch only those lines.

An entry is a level-2 ATX heading, the `key: value` lines right under it, and
its body up to the next level-1 or level-2 heading. It is kept as the exact
lines the person wrote; every edit rewrites only the lines it must.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kanban.ids import is_valid_id
from kanban.mdblocks import split_lines, top_headings

# `## ` heading: up to 3 spaces, two #s, then whitespace or end of line.
_H2_RE = re.compile(r"^( {0,3}##)(?:([ \t]+)(.*?))?([\r\n]*)$", re.S)
_MARKER_RE = re.compile(r"\[([A-Z][A-Z_-]*)\][ \t]*")
_META_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(?:[ \t]+(.*?))?[ \t]*[\r\n]*$", re.S)
_NOTES_RE = re.compile(r"^ {0,3}###[ \t]+Notes[ \t#]*$")
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ENDING_RE = re.compile(r"(\r\n|\r|\n)$")  # what line_ending finds, by definition (not run: see there)
_UNDERLINE_RE = re.compile(r"^ {0,3}[=-]+[ \t]*$")  # as mistune 3.4 matches a setext underline


def line_ending(line: str) -> str:
    """`_ENDING_RE.search(line).group(1)`, or "" (its `$` matches before a final "\\n" too), without
    the regex: a file's newline is counted line by line (tests/test_board_roundtrip.py compares)."""
    last = line[-1:]
    if last == "\n":
        return "\r\n" if line.endswith(("\r\n", "\r\n\n")) else "\n"
    return "\r" if last == "\r" else ""


def strip_ending(line: str) -> str:
    return line[: len(line) - len(line_ending(line))]


@dataclass(eq=False)
class HeadingParts:
    """`{prefix}{space}{markers}{id}:{rest}{ending}` for an ID'd heading."""

    prefix: str  # indentation and "##"
    space: str  # whitespace after "##"
    markers: list[str]  # a tuple in a SharedHeading
    task_id: str | None
    rest: str  # raw text after "ID:" (or the whole title when there is no ID)
    ending: str

    def fields(self) -> tuple[str, str, tuple[str, ...], str | None, str, str]:
        return self.prefix, self.space, tuple(self.markers), self.task_id, self.rest, self.ending

    def __eq__(self, other: object) -> bool:  # a SharedHeading equals the HeadingParts it copies into
        if not isinstance(other, HeadingParts):
            return NotImplemented
        return self.fields() == other.fields()

    @property
    def title(self) -> str:
        text = self.rest.strip()
        # An ATX closing sequence (`## Title ##`) is not part of the title.
        text = re.sub(r"[ \t]+#+$", "", text) if text.endswith("#") else text
        return text.strip()

    def render(self) -> str:
        markers = "".join(f"[{m}] " for m in self.markers)
        space = self.space or " "
        if self.task_id is None:
            return f"{self.prefix}{space}{markers}{self.rest}{self.ending}"
        return f"{self.prefix}{space}{markers}{self.task_id}:{self.rest}{self.ending}"


class SharedHeading(HeadingParts):
    """A parsed heading that many entries share (those of every load of a cached parse, see
    Entry.restored): its markers are a tuple and setting any part raises TypeError. An entry
    edits its own copy (`owned`), made by Entry._own before its first edit."""

    @classmethod
    def of(cls, prefix: str, space: str, markers: tuple[str, ...], task_id: str | None, rest: str,
           ending: str) -> SharedHeading:
        heading = object.__new__(cls)
        heading.__dict__.update(prefix=prefix, space=space, markers=tuple(markers), task_id=task_id,
                                rest=rest, ending=ending)
        return heading

    def __setattr__(self, name: str, value: object) -> None:
        raise TypeError(f"a shared heading cannot be changed (set {name}): edit the entry, which copies it first")

    def __delattr__(self, name: str) -> None:
        raise TypeError(f"a shared heading cannot be changed (delete {name})")

    def owned(self) -> HeadingParts:
        return HeadingParts(self.prefix, self.space, list(self.markers), self.task_id, self.rest, self.ending)


def parse_heading(line: str) -> HeadingParts | None:
    """Split a `## ` line into its parts, or None if it is not a level-2 ATX heading."""
    m = _H2_RE.match(line)
    if not m:
        return None
    prefix, space, content, ending = m.group(1), m.group(2) or "", m.group(3) or "", m.group(4)
    markers = []
    pos = 0
    while (mm := _MARKER_RE.match(content, pos)) is not None:
        markers.append(mm.group(1))
        pos = mm.end()
    body = content[pos:]
    head, colon, rest = body.partition(":")
    candidate = head.strip()
    if is_valid_id(candidate) and (colon or not rest):
        return HeadingParts(prefix, space, markers, candidate, rest, ending)
    return HeadingParts(prefix, space, markers, None, body, ending)


@dataclass(eq=False, slots=True)  # slots: a load makes one per entry of the board
class Entry:
    """A task entry as the exact lines of its file, with parsed views of them.

    Copy on write: an entry of a load (`restored`) shares its lines (a tuple) and heading (a
    SharedHeading) with the cached parse of its file, and so with every other load of the same
    bytes, until its first edit, when every edit method first takes copies of its own (`_own`).
    A change that skips the edit methods fails loudly rather than reaching the shared lines or
    heading: a tuple takes no item assignment and has no append, a SharedHeading refuses any
    assignment. (Assigning a new `lines` or `heading` to the entry is seen too: board.py trusts
    what it kept for the entry only while these are the very objects it restored it with.)"""

    lines: list[str]  # a tuple while shared
    line_no: int  # 1-based line of the heading in its file when it was read
    heading: HeadingParts = field(init=False)
    # While shared: the cached parse's record of this entry, where board.py keeps what it derives
    # from the lines and heading (validation facts, the Task). None once the entry has its own.
    origin: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        parts = parse_heading(self.lines[0])
        if parts is None:
            raise ValueError(f"not a level-2 heading: {self.lines[0]!r}")
        self.heading = parts

    @classmethod
    def restored(cls, lines: tuple[str, ...], line_no: int, heading: SharedHeading, origin: object) -> Entry:
        """An entry from parts already parsed (a cached parse of its file), sharing LINES and
        HEADING with it until its first edit (see the class doc)."""
        entry = cls.__new__(cls)
        entry.lines, entry.line_no, entry.heading, entry.origin = lines, line_no, heading, origin  # type: ignore[assignment]
        return entry

    def _own(self) -> None:
        """Before an edit: lines and a heading of the entry's own, no longer the shared ones."""
        if self.origin is not None or type(self.lines) is not list or isinstance(self.heading, SharedHeading):
            self.lines = list(self.lines)
            if isinstance(self.heading, SharedHeading):
                self.heading = self.heading.owned()
            self.origin = None

    def __eq__(self, other: object) -> bool:  # a shared entry equals its owned copy
        if not isinstance(other, Entry):
            return NotImplemented
        return (self.line_no == other.line_no and self.heading == other.heading
                and tuple(self.lines) == tuple(other.lines))

    # -- views -------------------------------------------------------------

    @property
    def task_id(self) -> str | None:
        return self.heading.task_id

    @property
    def title(self) -> str:
        return self.heading.title

    @property
    def markers(self) -> list[str]:
        return list(self.heading.markers)

    def meta_lines(self) -> list[tuple[int, str, str]]:
        """(index in lines, key, value) for the `key: value` lines under the heading."""
        found = []
        for i in range(1, len(self.lines)):
            m = _META_RE.match(self.lines[i])
            if not m:
                break
            found.append((i, m.group(1), (m.group(2) or "").strip()))
        return found

    def meta(self) -> dict[str, str]:
        """Key to value; for a key written twice the first line counts, the one set_meta edits."""
        found: dict[str, str] = {}
        for _, key, value in self.meta_lines():
            found.setdefault(key, value)
        return found

    def meta_line_no(self, key: str) -> int:
        for i, k, _ in self.meta_lines():
            if k == key:
                return self.line_no + i
        return self.line_no

    def text(self) -> str:
        return "".join(self.lines)

    def body(self) -> str:
        """The description: the lines after the metadata, without the Notes section."""
        meta = self.meta_lines()
        start = (meta[-1][0] + 1) if meta else 1
        notes_at = self._notes_heading_index()
        end = notes_at if notes_at is not None else len(self.lines)
        return "".join(self.lines[start:end]).strip()

    def notes(self) -> str:
        """The items of the `### Notes` section, as written."""
        notes_at = self._notes_heading_index()
        if notes_at is None:
            return ""
        return "".join(self.lines[notes_at + 1:self._section_end(notes_at)]).strip()

    @property
    def newline(self) -> str:
        for line in self.lines:
            if ending := line_ending(line):
                return ending
        return "\n"

    # -- edits: each rewrites only the lines it must -------------------------

    def convert_newlines(self, nl: str) -> None:
        """Give every line the ending `nl` (the last line too), for a move to another file."""
        self._own()
        self.lines = [strip_ending(line) + nl for line in self.lines]
        self.heading = parse_heading(self.lines[0])  # type: ignore[assignment]

    def _set_heading(self) -> None:
        self._own()
        self.lines[0] = self.heading.render()

    def set_id(self, task_id: str) -> None:
        self._own()
        h = self.heading
        rest = h.rest
        if h.task_id is None:
            rest = " " + rest.lstrip() if rest.strip() else ""
        self.heading = HeadingParts(h.prefix, h.space, h.markers, task_id, rest, h.ending)
        self._set_heading()

    def set_markers(self, markers: list[str]) -> None:
        if list(markers) != list(self.heading.markers):
            self._own()
            self.heading.markers = list(markers)
            self._set_heading()

    def add_marker(self, marker: str) -> None:
        if marker not in self.heading.markers:
            self.set_markers([*self.heading.markers, marker])

    def remove_marker(self, marker: str) -> None:
        self.set_markers([m for m in self.heading.markers if m != marker])

    def set_meta(self, key: str, value: str | None) -> None:
        """Set, replace or (value None) delete one `key: value` line."""
        self._own()
        metas = self.meta_lines()
        if value is None:
            for i, k, _ in reversed(metas):
                if k == key:
                    del self.lines[i]  # every copy, or an older one would show through
            return
        for i, k, _ in metas:
            if k == key:
                self.lines[i] = f"{key}: {value}{line_ending(self.lines[i]) or self.newline}"
                return
        at = (metas[-1][0] + 1) if metas else 1
        self._ensure_ending(at - 1)
        self.lines.insert(at, f"{key}: {value}{self.newline}")
        if at + 1 < len(self.lines) and _UNDERLINE_RE.match(strip_ending(self.lines[at + 1])):
            # `---` or `===` right under the heading: a line of text above it would
            # make the two a setext heading, ending the entry there.
            self.lines.insert(at + 1, self.newline)

    def add_note(self, note: str) -> None:
        """Append one item to the entry's `### Notes` list, creating it if needed."""
        self._own()
        nl = self.newline
        item = _note_item(note, nl)
        notes_at = self._notes_heading_index()
        if notes_at is None:
            end = self._content_end()
            self._ensure_ending(end - 1)
            block = [nl] if strip_ending(self.lines[end - 1]).strip() else []
            block += [f"### Notes{nl}", nl] + item
            self.lines[end:end] = block
            return
        end = self._section_end(notes_at)
        self._ensure_ending(end - 1)
        self.lines[end:end] = item

    # -- helpers -------------------------------------------------------------

    def _ensure_ending(self, index: int) -> None:
        self._own()
        if index >= 0 and not line_ending(self.lines[index]):
            self.lines[index] += self.newline
            if index == 0:  # keep the parsed heading in step, or its next render drops the ending
                self.heading.ending = line_ending(self.lines[0])

    def _content_end(self) -> int:
        """Index just past the last non-blank line (trailing blank lines excluded)."""
        end = len(self.lines)
        while end > 1 and not self.lines[end - 1].strip():
            end -= 1
        return end

    def _outside_fences(self) -> list[bool]:
        outside, fence = [], None
        for line in self.lines:
            m = _FENCE_RE.match(line)
            if fence is None:
                outside.append(True)
                if m:
                    fence = m.group(1)
            else:
                outside.append(False)
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                    fence = None
        return outside

    def _notes_heading_index(self) -> int | None:
        outside = self._outside_fences()
        for i in range(1, len(self.lines)):
            if outside[i] and _NOTES_RE.match(strip_ending(self.lines[i])):
                return i
        return None

    def _section_end(self, notes_at: int) -> int:
        """Index just past the last non-blank line of the Notes section."""
        outside = self._outside_fences()
        end = len(self.lines)
        for i in range(notes_at + 1, len(self.lines)):
            if outside[i] and re.match(r"^ {0,3}#{1,6}([ \t]|$)", self.lines[i]):
                end = i
                break
        while end > notes_at + 1 and not self.lines[end - 1].strip():
            end -= 1
        return end


NOTE_MAX_BYTES = 16 * 1024  # one note; its lines at most NOTE_MAX_LINE characters
NOTE_MAX_LINE = 1000


def _note_item(note: str, nl: str) -> list[str]:
    """A list item for a note, safe to splice into a board file.

    Notes carry text from agents and logs. Continuation lines are indented
    under the item, and anything that could open a block that swallows the
    rest of the file (a code fence, an HTML block) or start a heading is
    defused, so the file's entries stay where they are.
    """
    from kanban.untrusted import clean

    # No control byte (a NUL makes the file unloadable), no terminal escape, bounded size.
    note = clean(note, max_bytes=NOTE_MAX_BYTES, max_line=NOTE_MAX_LINE)
    raw = [ln.rstrip() for ln in note.split("\n")]
    while raw and not raw[-1]:
        raw.pop()
    while raw and not raw[0].strip():  # a note that began with a \r or an escape starts at its text
        raw.pop(0)
    if raw:
        raw[0] = raw[0].lstrip()  # "-     x" would open a code block in the item
    if not raw:
        raw = ["(empty)"]
    out = [f"- {_defuse(raw[0])}{nl}"]
    out += [f"  {_defuse(ln)}{nl}" if ln else nl for ln in raw[1:]]
    return out if _stays_contained(out) else [f"- {_flatten(note)}{nl}"]


def _defuse(line: str) -> str:
    stripped = line.lstrip()
    if stripped[:1] and stripped[0] in "`~<#=-*+>|":
        return line[: len(line) - len(stripped)] + "\\" + stripped
    return line


def _flatten(note: str) -> str:
    text = " ".join(note.split())
    return re.sub(r"[`<>~#]", "'", text)


def _stays_contained(item_lines: list[str]) -> bool:
    """True if a heading right after the note is still seen as a heading."""
    probe = "".join(item_lines) + "\n## X-1: probe\n"
    lines = split_lines(probe)
    return any(h.line == len(lines) - 1 and h.level == 2 for h in top_headings(probe))


def new_entry_lines(task_id: str, title: str, meta: dict[str, str], body: str, nl: str = "\n") -> list[str]:
    lines = [f"## {task_id}: {title}{nl}"]
    lines += [f"{k}: {v}{nl}" for k, v in meta.items() if v]
    if body.strip():
        lines.append(nl)
        lines += [ln + nl for ln in body.strip("\n").split("\n")]
    return lines
