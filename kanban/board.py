"""The tracking files as a board: lossless reading, validated views, safe edits.

Each file is a list of blocks: the person's own text (kept as raw lines) and
task entries (kept as raw lines too, see entry.py). Saving joins the lines
again, so a file that was not edited is written back byte for byte; an edit
touches only the lines of the entries it changes.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import operator
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from kanban.entry import (
    Entry,
    SharedHeading,
    line_ending,
    new_entry_lines,
    parse_heading,
    strip_ending,
)
from kanban.errors import KanbanError
from kanban.ids import ID_RE, is_valid_id, next_ids
from kanban.mdblocks import common_prefix, common_suffix, split_lines, top_headings
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, DEFAULT_PRIORITY, Column, Task

BOM = "\ufeff"
_DIRTY_SEQ = itertools.count(1)
# Board files larger than this are refused rather than parsed slowly.
MAX_FILE_BYTES = 16 * 1024 * 1024
# Merged tasks appear in CHANGELOG.md as list items `- TASK-12: title`.
_CHANGELOG_ID_RE = re.compile(r"^[ \t]*[-*+][ \t]+(?:\*\*|`)?([A-Za-z][A-Za-z0-9_]*-[0-9]+)(?:\*\*|`)?:", re.M)


@dataclass
class BoardFile:
    """One tracking file: blocks of prose (lists of lines) and entries."""

    path: Path
    column: Column
    raw: bytes  # exactly what was read; compared before writing
    bom: bool
    blocks: list[list[str] | Entry]
    exists: bool = True
    dirty_since: int = 0  # order in which files became dirty; 0 = clean

    @property
    def dirty(self) -> bool:
        return self.dirty_since > 0

    def mark_dirty(self) -> None:
        if not self.dirty_since:
            self.dirty_since = next(_DIRTY_SEQ)

    def mark_clean(self) -> None:
        self.dirty_since = 0

    @property
    def name(self) -> str:
        return self.path.name

    def entries(self) -> Iterator[Entry]:
        return (b for b in self.blocks if isinstance(b, Entry))

    def lines(self) -> Iterator[str]:
        return itertools.chain.from_iterable(_block_seqs(self.blocks))

    def text(self) -> str:
        return "".join(map("".join, _block_seqs(self.blocks)))  # block by block: faster than line by line

    def render(self, text: str | None = None) -> bytes:
        """The bytes to write: TEXT (the file's text(), as settle returns it) with the file's BOM."""
        return ((BOM if self.bom else "") + (self.text() if text is None else text)).encode("utf-8")

    @property
    def newline(self) -> str:
        """The file's dominant line ending ("\\n" for a file with none)."""
        return self.own_newline() or "\n"

    def own_newline(self) -> str | None:
        counts: dict[str, int] = {}
        for line in self.lines():
            if ending := line_ending(line):
                counts[ending] = counts.get(ending, 0) + 1
        return max(counts, key=counts.__getitem__) if counts else None

    def remove(self, entry: Entry) -> None:
        self.blocks = [b for b in self.blocks if b is not entry]
        self.mark_dirty()

    def settle(self) -> str:
        """Before a write: make sure the file reloads with the entries it has in memory.

        Edits work line by line, and markdown can join what they leave side by side
        (a paragraph or a note's list item, then the setext `Title` + `===` heading
        of the next section). Around the changed text, every block is parsed alone
        and all of them together; where a heading would be lost, a blank line goes
        between the two blocks, and if that does not help a KanbanError is raised
        rather than writing a file that loses or splits an entry. Returns the text settled.
        """
        old = self.raw.decode("utf-8", errors="replace")
        old = old[1:] if old.startswith(BOM) else old
        texts = list(map("".join, _block_seqs(self.blocks)))  # each block's text, as text() joins them
        new = "".join(texts)
        if new == old:
            return new
        lo, hi = _changed_blocks(self.blocks, old, new, texts)
        if _independent(self.blocks[lo:hi + 1]):
            return new
        k = lo
        while k <= hi:
            if not _independent(self.blocks[lo:k + 1]):
                above = _block_lines(self.blocks[k - 1:k]) if k > lo else []
                if above and line_ending(above[-1]) and above[-1].strip():
                    self.blocks.insert(k, [line_ending(above[-1])])  # a blank line between
                    hi += 1
                    k += 1
                if not _independent(self.blocks[lo:k + 1]):
                    line = len(split_lines("".join(_block_lines(self.blocks[:k])))) + 1
                    raise KanbanError(
                        "this change would hide or split a task heading here",
                        file=self.name,
                        line=line,
                        hint="check the lines around it (an indented heading, an unclosed code fence or HTML block)",
                    )
            k += 1
        return self.text()

    def append(self, entry: Entry) -> None:
        """Insert an entry after the last entry (or at the end), as a pure insertion.

        The text above can hide what follows it (an unclosed code fence or `<!--`
        swallows the rest of the file), and so can the entry; each place is checked
        with the parser, and the entry goes to the first that keeps every heading
        (its own included) a heading: after the last entry, at the end of the file,
        before each earlier entry, at the top.
        """
        nl = self.own_newline() or entry.newline
        body = [strip_ending(line) + nl for line in entry.lines]
        entry_at = [i for i, b in enumerate(self.blocks) if isinstance(b, Entry)]
        places = [entry_at[-1] + 1] if entry_at else []
        for at in dict.fromkeys([*places, len(self.blocks), *reversed(entry_at), 0]):
            found = _insert_lines(self.blocks, at, body, nl)
            if found is not None:
                lead, lines = found
                entry.convert_newlines(nl)
                entry.lines = lines
                self.blocks[at:at] = [lead, entry] if lead else [entry]
                self.mark_dirty()
                return
        raise KanbanError(
            f"cannot add {entry.task_id or 'the entry'} here: an unclosed code fence or HTML block would hide it",
            file=self.name,
            hint="close the code fence (```) or HTML comment (<!-- ... -->) in this file",
        )

    def append_section(self, blocks: Sequence[Sequence[str]]) -> list[Entry]:
        """Add BLOCKS (lines ending in "\\n": prose, such as a level-1 heading, then one block per
        entry, each starting with its `## ` line) at the very end of the file, in the file's own
        newline style: the file's text is then its old text followed by theirs (a line ending
        for a last line that had none, and a blank line, go between). Returns their entries.
        A KanbanError when the text above would hide them (an unclosed code fence or HTML block)."""
        nl = self.own_newline() or "\n"
        new: list[list[str] | Entry] = []
        entries = []
        for block in blocks:
            lines = [strip_ending(line) + nl for line in block]
            if parse_heading(lines[0]) is not None:
                entries.append(Entry(lines, 0))
                new.append(entries[-1])
            else:
                new.append(lines)
        prev = list(self.lines())
        lead: list[str] = []
        if prev and not line_ending(prev[-1]):
            lead.append(nl)  # the file had no final newline: end its last line first
        if prev and (lead or prev[-1].strip()):
            lead.append(line_ending(prev[-1]) if line_ending(prev[-1]) == "\r" else nl)
        before = len(split_lines("".join(prev + lead)))
        old = _heading_spots(self.blocks)
        offset = before
        want = list(old)
        for b in new:
            want += [(line + offset, level, atx) for line, level, atx in _heading_spots([b])]
            offset += len(b.lines if isinstance(b, Entry) else b)
        candidate = [*self.blocks, *([lead] if lead else []), *new]
        if _heading_spots(candidate) != want:
            raise KanbanError(
                "cannot add the tasks at the end of the file: an unclosed code fence or HTML block above would"
                " hide them",
                file=self.name,
                hint="close the code fence (```) or HTML comment (<!-- ... -->) in this file",
            )
        self.blocks = candidate
        self.mark_dirty()
        return entries


def _block_seqs(blocks: list[list[str] | Entry]) -> list[Sequence[str]]:
    """Each block's lines (an entry's may be a tuple, see Entry)."""
    return [b.lines if isinstance(b, Entry) else b for b in blocks]


def _block_lines(blocks: list[list[str] | Entry]) -> list[str]:
    return list(itertools.chain.from_iterable(_block_seqs(blocks)))


def _heading_spots(blocks: list[list[str] | Entry]) -> list[tuple[int, int, bool]]:
    """(line, level, atx) of the top-level headings of some consecutive blocks.

    Blocks start where a top-level heading (or the file) starts, so parsing a few
    of them alone gives the structure they have in the whole file."""
    return [(h.line, h.level, h.atx) for h in top_headings("".join(_block_lines(blocks)))]


def _independent(blocks: list[list[str] | Entry]) -> bool:
    """True if these consecutive blocks parse together as each does alone (and
    each entry alone is exactly one heading and its body)."""
    want: list[tuple[int, int, bool]] = []
    count, open_line = 0, False  # lines so far; whether the last one has no ending yet
    for b in blocks:
        spots = _heading_spots([b])
        if isinstance(b, Entry) and spots != [(0, 2, True)]:
            return False
        # A block right after a line with no ending (a separator that ends the
        # file's last line) starts on that line.
        offset = count - open_line
        want += [(line + offset, level, atx) for line, level, atx in spots]
        text = "".join(_block_lines([b]))
        if text:
            count += len(split_lines(text)) - open_line
            open_line = not line_ending(text)
    return _heading_spots(blocks) == want


def _changed_blocks(blocks: list[list[str] | Entry], old: str, new: str, texts: list[str]) -> tuple[int, int]:
    """Indexes of the first and last block to check after an edit changed `old` into `new`
    (TEXTS: each block's text; joined, they are NEW).

    From the last entry whose heading line comes before the first changed character
    (the text up to there is unchanged, so it still starts a top-level block) to the
    first entry after the last changed character (if its heading survives, all the
    unchanged text after it parses as before)."""
    limit = min(len(old), len(new))
    p = common_prefix(old, new)  # doubling steps, then halving: a few slices, not log(n) copies of all
    s = common_suffix(old, new, limit - p)
    changed_end = len(new) - s
    # Where each block starts in NEW; the heading lines end in the order the entries come in.
    starts = list(itertools.accumulate(map(len, texts), initial=0))
    lo = 0
    for i in range(bisect.bisect_left(starts, p, 0, len(blocks)) - 1, -1, -1):  # from the last block starting before P
        b = blocks[i]
        if isinstance(b, Entry) and starts[i] + len(b.lines[0]) < p:
            lo = i
            break
    hi = len(blocks) - 1
    for i in range(max(bisect.bisect_left(starts, changed_end, 0, len(blocks)), lo + 1), len(blocks)):
        if isinstance(blocks[i], Entry):
            hi = i
            break
    return lo, hi


def _insert_lines(blocks: list[list[str] | Entry], at: int, body: list[str], nl: str):
    """(separator lines, entry lines) to insert at block index `at`, or None if that
    would change which lines are headings around it."""
    lines = list(body)
    before, after = blocks[max(at - 1, 0):at], blocks[at:at + 1]
    prev = _block_lines(before)
    lead: list[str] = []
    if prev and not line_ending(prev[-1]):
        lead.append(nl)  # the file had no final newline: end its last line first
    if prev and (lead or prev[-1].strip()):
        # A blank line between the text above and the new entry (ended like the line
        # above it when that ends in a lone CR, which a LF would join).
        lead.append(line_ending(prev[-1]) if line_ending(prev[-1]) == "\r" else nl)
    if after and lines[-1].strip():
        lines.append(nl)  # and one before whatever follows
    old = _heading_spots([*before, *after])
    new = [*before, lead, lines, *after]
    n_prev = len(split_lines("".join(prev)))
    n_head = len(split_lines("".join(prev + lead)))
    shift = len(split_lines("".join(_block_lines(new)))) - len(split_lines("".join(_block_lines([*before, *after]))))
    want = [h for h in old if h[0] < n_prev] + [(n_head, 2, True)]
    want += [(h[0] + shift, *h[1:]) for h in old if h[0] >= n_prev]
    return (lead, lines) if _heading_spots(new) == want else None


def decode_text(path: Path, data: bytes) -> str:
    """A board file's text; a clear error for invalid UTF-8 or a NUL byte (binary garbage)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise KanbanError(
            f"not valid UTF-8 (byte {exc.start})", file=path.name, line=line, hint="save the file as UTF-8 text"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise KanbanError("contains a NUL byte: this is not a text file", file=path.name, line=line,
                          hint="restore the file from git or delete it")
    return text


def parse_file(path: Path, column: Column, data: bytes) -> BoardFile:
    """Split a file's bytes into prose blocks and entries. Raises KanbanError if unreadable."""
    return parse_blocks(path, column, data).board_file(path, column)


class _Memo:
    """A bounded memo: two generations of a dict, the older dropped when the newer fills up."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.new: dict[Any, Any] = {}
        self.old: dict[Any, Any] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        try:
            return self.new[key]
        except KeyError:
            pass
        value = self.old[key] if key in self.old else compute()
        if len(self.new) >= self.limit:
            self.old, self.new = self.new, {}
        self.new[key] = value
        return value

    def cache_clear(self) -> None:
        self.new, self.old = {}, {}


class _EntrySpec:
    """An entry as a cached parse keeps it: its lines (a tuple) and parsed heading, which every
    load's Entry shares until that entry's first edit (Entry._own), and, filled in on first use,
    what validation and to_task derive from them alone (FACTS; TASK, with the column it was built
    for), so that a load of a cached parse neither hashes nor parses an entry it has seen. Not
    where it is (ParsedFile.line_nos): a new version of the file keeps it wherever it moved."""

    __slots__ = ("facts", "heading", "lines", "task")

    def __init__(self, lines: tuple[str, ...], heading: SharedHeading) -> None:
        self.lines, self.heading = lines, heading
        self.facts: _Facts | None = None
        self.task: tuple[Column, Task] | None = None


@dataclass(frozen=True, eq=False)
class ParsedFile:
    """What a board file's bytes parse into, immutable, so that one parse serves every load of
    the same bytes: prose blocks as tuples of lines, entries as _EntrySpecs. `board_file` gives
    each load its own BoardFile to change (equality is identity: a new parse is a new object):
    its own list of blocks, its own lists of prose lines, and entries of its own that share the
    parse's lines and headings until edited (copy on write, see Entry)."""

    raw: bytes
    bom: bool
    blocks: tuple[tuple[str, ...] | _EntrySpec, ...]
    line_nos: tuple[int, ...]  # per block: the 1-based line of an entry's heading (0 for prose)
    ids: frozenset[str]  # the task IDs of the entries

    @functools.cached_property
    def kept(self) -> tuple[dict[str, _EntrySpec], dict[tuple[str, ...], tuple[str, ...]]]:
        """Its entries by heading line (the last of those with the same line) and its prose blocks,
        for parse_blocks to keep in a newer version of the file: made once, when there is one."""
        return ({b.lines[0]: b for b in self.blocks if type(b) is _EntrySpec},  # type: ignore[union-attr]
                {b: b for b in self.blocks if type(b) is tuple})  # type: ignore[misc]

    def board_file(self, path: Path, column: Column, exists: bool = True) -> BoardFile:
        new, entry_type, spec_type = Entry.__new__, Entry, _EntrySpec
        blocks: list[list[str] | Entry] = []
        append = blocks.append
        for b, line_no in zip(self.blocks, self.line_nos):
            if type(b) is spec_type:  # Entry.restored(b.lines, line_no, b.heading, b), inlined: a third faster
                entry = new(entry_type)
                entry.lines, entry.line_no, entry.heading, entry.origin = b.lines, line_no, b.heading, b  # type: ignore[union-attr, assignment]
                append(entry)
            else:  # a prose block: mypy does not narrow by the `spec_type` alias above
                append(list(b))  # type: ignore[arg-type]
        return BoardFile(path, column, self.raw, self.bom, blocks, exists)


# Parsed `## ` lines, by line: most headings of a file are the same from one version to the next.
# A SharedHeading refuses changes, so one serves every entry (of every parse) with that line.
_HEADINGS = _Memo(32768)


def _shared_heading(line: str) -> SharedHeading:
    found = _HEADINGS.new.get(line)
    if found is not None:
        return found

    def compute():
        parts = parse_heading(line)
        return None if parts is None else SharedHeading.of(*parts.fields())

    found = _HEADINGS.get(line, compute)
    if found is None:
        raise ValueError(f"not a level-2 heading: {line!r}")  # as Entry() says it
    return found


def parse_blocks(path: Path, column: Column, data: bytes, earlier: ParsedFile | None = None) -> ParsedFile:
    """`parse_file`, as an immutable ParsedFile. Raises KanbanError if unreadable.

    EARLIER: a parse of an earlier version of the same file. Where an entry of the new text
    has exactly the lines of one of its entries, that entry is kept (moved to its new line if
    need be), with what validation and to_task derived from it: after a small edit, the
    entries of a large file are found again rather than parsed and hashed again."""
    if len(data) > MAX_FILE_BYTES:
        raise KanbanError(
            f"file is {len(data) // (1024 * 1024)} MiB, over the {MAX_FILE_BYTES // (1024 * 1024)} MiB "
            "limit for board files",
            file=path.name,
            hint="move finished or old entries out of it",
        )
    text = decode_text(path, data)
    bom = text.startswith(BOM)
    if bom:
        text = text[1:]
    lines = tuple(split_lines(text))  # slices of a tuple are the tuples the blocks keep
    # Prose runs from the file's start or an entry's end to the next entry (or the file's end):
    # never two prose blocks side by side.
    blocks: list[tuple[str, ...] | _EntrySpec] = []
    line_nos: list[int] = []
    ids: list[str | None] = []
    starts = top_headings(text)
    old_entries, old_prose = earlier.kept if earlier is not None else ({}, {})
    prev = 0  # the first line not in a block yet
    for i, h in enumerate(starts):
        start = h.line
        end = starts[i + 1].line if i + 1 < len(starts) else len(lines)
        entry = _entry_at(lines, start, end, h, column, old_entries)
        if entry is None:
            continue
        if start > prev:
            prose = lines[prev:start]
            blocks.append(old_prose.get(prose, prose))
            line_nos.append(0)
        blocks.append(entry)
        line_nos.append(start + 1)
        ids.append(entry.heading.task_id)
        prev = end
    if prev < len(lines):
        prose = lines[prev:]
        blocks.append(old_prose.get(prose, prose))
        line_nos.append(0)
    return ParsedFile(data, bom, tuple(blocks), tuple(line_nos), frozenset(ids) - {None})  # type: ignore[arg-type]


def _entry_at(lines: tuple[str, ...], start: int, end: int, h, column: Column,
              earlier: Mapping[str, _EntrySpec]) -> _EntrySpec | None:
    if h.level != 2 or not h.atx or column is Column.DONE:
        return None
    old = earlier.get(lines[start])  # an entry of an earlier parse of the file, with the same heading line
    if old is not None and len(old.lines) == end - start and old.lines == lines[start:end]:
        return old  # the same lines: the same entry, with what was derived from it
    heading = _shared_heading(lines[start])
    if heading.task_id is None and column is not Column.TODO:
        return None  # outside TODO.md a heading with no ID is the person's own text
    return _EntrySpec(lines[start:end], heading)


@dataclass
class Board:
    """The four board files of a repository, plus the IDs already merged."""

    root: Path
    files: dict[Column, BoardFile]
    done_ids: set[str] = field(default_factory=set)
    # A board shared by its readers (store.read_board) answers tasks() once: it never changes.
    _tasks: list[Task] | None = field(default=None, repr=False, compare=False)
    frozen: bool = field(default=False, repr=False, compare=False)
    # The board as loaded, known valid (set by mark_valid): validate then checks only what changed.
    valid_base: ValidBase | None = field(default=None, repr=False, compare=False)

    def freeze(self) -> None:
        self.frozen = True

    def mark_valid(self, parses: Sequence[ParsedFile], done_ids: frozenset[str]) -> None:
        """This board, as just built from PARSES (one per column of BOARD_COLUMNS, by `board_file`)
        and DONE_IDS, passed validation: remember it as it is now."""
        self.valid_base = ValidBase({c: (p, tuple(self.files[c].blocks)) for c, p in zip(BOARD_COLUMNS, parses)},
                                    done_ids)

    def _writable(self) -> None:
        if self.frozen:  # a board other readers share: a change would show in theirs
            raise RuntimeError("a board from read_board is for reading; change the board through update()")

    # -- lookups ---------------------------------------------------------------

    def located(self) -> Iterator[tuple[BoardFile, Entry]]:
        for column in BOARD_COLUMNS:
            f = self.files[column]
            for entry in f.entries():
                yield f, entry

    def find(self, task_id: str) -> tuple[BoardFile, Entry] | None:
        for column in BOARD_COLUMNS:  # located(), without its generators: a pick looks up 3 times
            f = self.files[column]
            for entry in f.blocks:
                if isinstance(entry, Entry) and entry.heading.task_id == task_id:
                    return f, entry
        return None

    def tasks(self) -> list[Task]:
        """Every entry with an ID, as plain Task records (new TODO headings excluded)."""
        if self._tasks is not None:
            return list(self._tasks)
        out = []
        for order, (f, entry) in enumerate(self.located()):
            if entry.task_id is not None:
                out.append(to_task(f, entry, order))
        if self.frozen:
            self._tasks = out
            return list(out)
        return out

    def new_entries(self) -> list[Entry]:
        return [e for e in self.files[Column.TODO].blocks if isinstance(e, Entry) and e.heading.task_id is None]

    def all_ids(self) -> set[str]:
        return {e.task_id for _, e in self.located() if e.task_id} | self.done_ids

    # -- edits -----------------------------------------------------------------

    def assign_ids(self) -> list[str]:
        """Give each new TODO heading the next free TASK-N. Returns the new IDs."""
        self._writable()
        new = self.new_entries()
        if not new:
            return []
        given = next_ids(self.all_ids(), len(new), locate=self._locate)  # never one over the length limit
        for entry, task_id in zip(new, given):
            entry.set_id(task_id)
        self.files[Column.TODO].mark_dirty()
        return given

    def _locate(self, task_id: str) -> tuple[str | None, int | None]:
        found = self.find(task_id)
        return (found[0].name, found[1].line_no) if found else (COLUMN_FILES[Column.DONE], None)

    def move(self, task_id: str, to: Column) -> Entry:
        """Move an entry to another file.

        The source is marked dirty after the target, so save() writes the
        target first: a crash in between leaves the entry in two files (which
        repair resolves), never in none. Keep to one move per save.
        """
        self._writable()
        src, entry = self.require(task_id)
        if src.column is to:
            return entry
        self.files[to].append(entry)
        src.remove(entry)
        src.dirty_since = next(_DIRTY_SEQ)
        return entry

    def require(self, task_id: str) -> tuple[BoardFile, Entry]:
        found = self.find(task_id)
        if found is None:
            raise KanbanError(f"no task {task_id} on the board", hint="run 'kanban status' to see the task IDs")
        return found

    def touch(self, task_id: str) -> Entry:
        """The entry for an in-place edit; marks its file to be written."""
        self._writable()
        f, entry = self.require(task_id)
        f.mark_dirty()
        return entry

    def add(self, title: str, meta: dict[str, str], body: str = "") -> str:
        self._writable()
        self.assign_ids()
        task_id = next_ids(self.all_ids(), locate=self._locate)[0]
        todo = self.files[Column.TODO]
        todo.append(Entry(new_entry_lines(task_id, title, meta, body, todo.newline), 0))
        return task_id

    def dirty_files(self) -> list[BoardFile]:
        """Files to write, in the order they became dirty (a move's target first)."""
        return sorted((f for f in self.files.values() if f.dirty), key=lambda f: f.dirty_since)


def to_task(f: BoardFile, entry: Entry, order: int) -> Task:
    """The entry as a Task. Tasks are immutable: one is built per distinct entry (its lines and
    parsed heading) and column, and copied for another order, as an idle `kanban run` plans every
    pass from the same board. An entry that shares a cached parse's lines (Entry.origin) finds
    its Task there."""
    spec = entry.origin
    if spec is not None and (entry.lines is not spec.lines or entry.heading is not spec.heading):  # type: ignore[attr-defined]
        spec = None
    found = spec.task if spec is not None else None  # type: ignore[attr-defined]
    if found is not None and found[0] is f.column:
        task = found[1]
    else:
        h = entry.heading
        key = (tuple(entry.lines), f.column, h.task_id, tuple(h.markers), h.rest)
        task = _TASKS.new.get(key)
        if task is None:
            task = _TASKS.get(key, lambda: _build_task(f, entry, order))
        if spec is not None:
            spec.task = (f.column, task)  # type: ignore[attr-defined]
    if task.order == order:
        return task
    if hasattr(task, "__dict__"):  # dataclasses.replace, without running __init__ again
        copy = object.__new__(Task)
        copy.__dict__.update(task.__dict__)
        copy.__dict__["order"] = order
        return copy
    return dataclasses.replace(task, order=order)


def _build_task(f: BoardFile, entry: Entry, order: int) -> Task:
    facts = _facts(entry)
    return Task(
        id=entry.task_id or "",
        title=entry.title,
        column=f.column,
        priority=facts.priority,
        depends=facts.deps or (),
        files=facts.files,
        markers=frozenset(entry.markers),
        status=facts.meta.get("status"),
        track=facts.meta.get("track"),
        order=order,
    )


class _Facts(NamedTuple):
    """What validation and `to_task` read from an entry's lines, parsed once per distinct lines."""

    meta: Mapping[str, str]  # read-only
    meta_ok: bool  # _validate_meta finds nothing
    deps: tuple[str, ...] | None  # the depends line split, None without one
    deps_ok: bool  # every one of them is a task ID
    priority: int
    files: tuple[str, ...]


# Entries by their lines: most entries of a board are the same from one load (and update) to the next.
_FACTS = _Memo(32768)
_TASKS = _Memo(32768)


def _facts(entry: Entry) -> _Facts:
    spec = entry.origin  # shared lines: what was found for them is kept with the cached parse
    if spec is None or entry.lines is not spec.lines:  # type: ignore[attr-defined]
        return _facts_of(entry)
    found = spec.facts  # type: ignore[attr-defined]
    if found is None:
        found = spec.facts = _facts_of(entry)  # type: ignore[attr-defined]
    return found


def _facts_of(entry: Entry) -> _Facts:
    lines = tuple(entry.lines)
    found = _FACTS.new.get(lines)
    if found is not None:
        return found

    def compute() -> _Facts:
        meta = entry.meta()  # a view of the lines alone
        deps = tuple(split_list(meta["depends"])) if "depends" in meta else None
        return _Facts(types.MappingProxyType(meta), _meta_ok(meta), deps,
                      deps is None or all(is_valid_id(d) for d in deps),
                      _int_or(meta.get("priority"), DEFAULT_PRIORITY), tuple(split_list(meta.get("files", ""))))

    return _FACTS.get(lines, compute)


def split_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _int_or(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class _LastChangelog:
    """The IDs of the last CHANGELOG.md text scanned: merging reads them again and again."""

    def __init__(self) -> None:
        self.last: tuple[str, frozenset[str]] | None = None

    def ids(self, text: str) -> frozenset[str]:
        last = self.last
        if last is not None and last[0] == text:
            return last[1]
        ids = frozenset(m.group(1) for m in _CHANGELOG_ID_RE.finditer(text) if is_valid_id(m.group(1)))
        self.last = (text, ids)
        return ids

    def cache_clear(self) -> None:
        self.last = None


_LAST_CHANGELOG = _LastChangelog()


def changelog_ids(text: str) -> set[str]:
    """The task IDs merged, as listed in CHANGELOG.md (a new set, the caller's to change)."""
    return set(_LAST_CHANGELOG.ids(text))


def changelog_ids_frozen(text: str) -> frozenset[str]:
    return _LAST_CHANGELOG.ids(text)


# -- validation ------------------------------------------------------------------


def validate(board: Board) -> None:
    """Raise a KanbanError for the first problem found, naming file and line.

    Each entry's metadata is parsed and checked once per distinct lines (_facts, kept with a
    cached parse for the entries that share it). Whether there is a problem at all is found
    by passes over lists (every ID once, all metadata good, every depends a known ID and not the
    entry's own); if there may be one, _validate_in_order looks for it entry by entry and names
    the first, the same problem, in the same words, as ever.

    A board loaded valid (Board.valid_base) and changed a little since, as by an update, is
    checked only where it changed (_valid_after_change), when that is enough to tell."""
    if board.valid_base is not None and _valid_after_change(board, board.valid_base):
        return
    files = [board.files[column] for column in BOARD_COLUMNS]
    entries = [b for f in files for b in f.blocks if isinstance(b, Entry)]
    facts = [o.facts if (o := e.origin) is not None and o.facts is not None and e.lines is o.lines  # type: ignore[attr-defined]
             else _facts(e) for e in entries]
    tids = [e.heading.task_id for e in entries]
    ids = [tid for tid in tids if tid is not None]
    known = set(ids)
    deps = [x.deps for x in facts if x.deps]
    if (len(known) != len(ids) or not all(x.meta_ok and x.deps_ok for x in facts)
            or not (known | board.done_ids).issuperset(itertools.chain.from_iterable(deps))
            or deps and any(tid in x.deps for tid, x in zip(tids, facts) if tid and x.deps)):
        _validate_in_order(board)  # a problem, or the lists cannot tell: the full check names it
        return
    known |= board.done_ids
    graph = {tid: x.deps for tid, x in zip(tids, facts) if tid}
    if graph != _LAST_ACYCLIC.graph:  # as _validate_in_order ends
        located = [(f, b) for f in files for b in f.blocks if isinstance(b, Entry)]
        _check_cycles([(f, entry, x.meta) for (f, entry), x in zip(located, facts)], known)
        _LAST_ACYCLIC.graph = graph


@dataclass(frozen=True, eq=False)
class ValidBase:
    """A board as it was when it passed validation: per column, the parse its file was built
    from and the blocks it was built with (`ParsedFile.board_file`: one block per parse block,
    in order), and the done IDs."""

    files: Mapping[Column, tuple[ParsedFile, tuple[list[str] | Entry, ...]]]
    done_ids: frozenset[str]


# A change of more entries than this is validated in full: as fast, and no cleverness needed.
_MAX_CHANGED = 64


def _window(was: Sequence[object], now: Sequence[object]) -> tuple[int, int, int]:
    """(start, end in NOW, end in WAS): outside now[start:end] and was[start:end] the two hold the
    same objects in the same order (compared by identity, at C speed)."""
    n = min(len(was), len(now))
    start = next(itertools.compress(itertools.count(), map(operator.is_not, was, now)), n)
    tail = next(itertools.compress(itertools.count(), map(operator.is_not, reversed(was), reversed(now))), n)
    tail = min(tail, n - start)
    return start, len(now) - tail, len(was) - tail


def _valid_after_change(board: Board, base: ValidBase) -> bool:
    """True if BOARD, which was BASE (a valid board) and has changed since, is valid; False if
    it may not be (validate then checks it in full, and names the problem).

    What changed: per file, the blocks between the first and last that are not the same
    objects as in BASE, and the entries edited in place (an entry edited is no longer the one
    its parse restored, see Entry). The entries that left (as BASE had them) and the entries that
    came are checked against BASE's IDs. The board is valid if every entry that came has good
    metadata and depends on known IDs, and if it has an ID, it is the ID of one that left (an
    entry moved or edited), once, depending on no more than it did then (so no ID twice, none
    its own dependency, no new edge in BASE's acyclic graph); and every ID that left the board
    or CHANGELOG.md is known still (the entries BASE had as they are may depend on it). Anything
    else (a task added, a depends line grown) goes to the full check."""
    left: list[_EntrySpec] = []  # entries of BASE no longer on the board as they were
    came: list[Entry] = []  # entries on the board that BASE did not have as they are
    for column in BOARD_COLUMNS:
        parsed, was = base.files[column]
        now = board.files[column].blocks
        start, end_now, end_was = _window(was, now)
        left += [s for s in parsed.blocks[start:end_was] if type(s) is _EntrySpec]
        came += [b for b in now[start:end_now] if isinstance(b, Entry)]
        # Outside the window, BASE's entries at their places: edited in place if their lines or
        # heading are no longer those of the spec they were restored from.
        edited = [i for i, b in enumerate(now) if type(b) is Entry and (
            (o := b.origin) is None or b.lines is not o.lines or b.heading is not o.heading)]  # type: ignore[attr-defined]
        for i in edited:
            if not start <= i < end_now:
                came.append(now[i])  # type: ignore[arg-type]
                left.append(parsed.blocks[i if i < start else i - end_now + end_was])  # type: ignore[arg-type]
        if len(left) + len(came) > _MAX_CHANGED:
            return False
    return _valid_swap([parsed.ids for parsed, _ in base.files.values()], base.done_ids, left,
                       [(e.heading.task_id, _facts(e)) for e in came], board.done_ids)


def parses_valid_after(before: Sequence[ParsedFile], before_done: frozenset[str],
                       now: Sequence[ParsedFile], now_done: frozenset[str]) -> bool:
    """True if the board of the parses NOW (one per column of BOARD_COLUMNS) and the done IDs
    NOW_DONE is valid, given that the board of BEFORE and BEFORE_DONE was: the check of
    _valid_after_change, between a new version of the board files and the last one found valid
    (parse_blocks keeps the entries and prose blocks a new version has unchanged, the very same
    objects, so the two differ only between the first and last block that are not). False if
    it may not be valid: validate then checks the board in full."""
    left: list[_EntrySpec] = []
    came: list[_EntrySpec] = []
    for was, parsed in zip(before, now):
        start, end_now, end_was = _window(was.blocks, parsed.blocks)
        left += [s for s in was.blocks[start:end_was] if type(s) is _EntrySpec]
        came += [s for s in parsed.blocks[start:end_now] if type(s) is _EntrySpec]
        if len(left) + len(came) > _MAX_CHANGED:
            return False
    return _valid_swap([p.ids for p in before], before_done, left,
                       [(s.heading.task_id, _spec_facts(s)) for s in came], now_done)


def _valid_swap(base_ids: list[frozenset[str]], base_done: frozenset[str], left: list[_EntrySpec],
                came: list[tuple[str | None, _Facts]], done: AbstractSet[str]) -> bool:
    """True if a valid board (its files' IDs BASE_IDS, its done IDs BASE_DONE) is valid still
    with the entries LEFT taken away and CAME (ID, facts) put in, and DONE for done IDs."""
    gone = {s.heading.task_id: _spec_facts(s).deps for s in left if s.heading.task_id is not None}
    added: set[str] = set()
    for tid, facts in came:
        if not facts.meta_ok:
            return False
        if tid is not None:
            # One that left (moved or edited), once, depending on no more than it did: then it is on
            # no other entry, does not depend on itself, and adds no edge to BASE's acyclic graph.
            if tid in added or tid not in gone or not set(facts.deps or ()) <= set(gone[tid] or ()):
                return False
            added.add(tid)

    def known(task_id: str) -> bool:
        return (task_id in added or task_id in done
                or task_id not in gone and any(task_id in ids for ids in base_ids))

    if not all(known(d) for _, facts in came for d in facts.deps or ()):
        return False
    # An entry BASE had as it was may depend on an ID that left the board or CHANGELOG.md.
    return all(known(task_id) for task_id in itertools.chain(gone, base_done - done))


def _spec_facts(spec: _EntrySpec) -> _Facts:
    return spec.facts if spec.facts is not None else _facts(Entry.restored(spec.lines, 0, spec.heading, spec))


def _validate_in_order(board: Board) -> None:
    """validate, entry by entry: the first problem, by file and line, as a KanbanError."""
    seen: dict[str, tuple[BoardFile, Entry]] = {}
    located: list[tuple[BoardFile, Entry, _Facts, str | None]] = []
    for column in BOARD_COLUMNS:  # board.located(), without a generator per file
        f = board.files[column]
        for entry in f.blocks:
            if isinstance(entry, Entry):
                located.append((f, entry, _facts(entry), entry.heading.task_id))
    for f, entry, facts, tid in located:
        if tid is None:
            continue
        if tid in seen:
            first_f, first = seen[tid]
            raise KanbanError(
                f"task ID {tid} is used twice (also at {first_f.name}:{first.line_no})",
                file=f.name,
                line=entry.line_no,
                hint="give one of them a new ID, or delete the stale copy",
            )
        seen[tid] = (f, entry)
        if not facts.meta_ok:
            _validate_meta(f, entry, facts.meta)
    known = seen.keys() | board.done_ids  # board.all_ids(), once: a set per entry made validation quadratic
    for f, entry, facts, tid in located:
        deps = facts.deps
        if deps is None or tid is None and f.column is not Column.TODO:
            continue
        if not facts.deps_ok or tid in deps or not known.issuperset(deps):
            _validate_depends(known, f, entry, facts.meta)
    # Every depends of an entry with an ID names a known ID now: the graph _check_cycles walks
    # is each ID's depends as written.
    graph = {tid: facts.deps for _, _, facts, tid in located if tid}
    if graph != _LAST_ACYCLIC.graph:
        _check_cycles([(f, entry, facts.meta) for f, entry, facts, _ in located], known)
        _LAST_ACYCLIC.graph = graph


def _bad_priority(value: str) -> bool:
    return not re.fullmatch(r"[0-9]{1,4}", value) or int(value) < 1


def _bad_path(path: str) -> bool:
    return path.startswith("/") or ".." in path.split("/") or "\\" in path


def _meta_ok(meta: Mapping[str, str]) -> bool:
    if "priority" in meta and _bad_priority(meta["priority"]):
        return False
    return not ("files" in meta and any(_bad_path(path) for path in split_list(meta["files"])))


def _validate_meta(f: BoardFile, entry: Entry, meta: Mapping[str, str]) -> None:
    for key, message, hint in meta_problems(str(entry.task_id), meta):
        raise KanbanError(message, file=f.name, line=entry.meta_line_no(key), hint=hint)


def meta_problems(name: str, meta: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(key, what is wrong, how to fix it) for each bad `priority` or `files` value of the task
    NAME: the board's rules, which `kanban plan` applies to the planner's entries too."""
    found = []
    if "priority" in meta:
        value = meta["priority"]
        if _bad_priority(value):
            found.append(("priority", f"priority of {name} must be a whole number from 1 (most urgent), got {value!r}",
                          "write e.g. 'priority: 2'"))
    if "files" in meta:
        for path in split_list(meta["files"]):
            if _bad_path(path):
                found.append(("files", f"files of {name} names {path!r}, which is not a path inside the repository",
                              "use repository-relative paths or globs such as src/cache.py or src/**/*.py"))
    return found


def _validate_depends(known: set[str], f: BoardFile, entry: Entry, meta: Mapping[str, str]) -> None:
    if "depends" not in meta or entry.task_id is None and f.column is not Column.TODO:
        return
    for message, hint in depends_problems(entry.task_id, split_list(meta["depends"]), known):
        raise KanbanError(message, file=f.name, line=entry.meta_line_no("depends"), hint=hint)


def depends_problems(task_id: str | None, deps: Sequence[str], known: AbstractSet[str]) -> list[tuple[str, str]]:
    """(what is wrong, how to fix it) for each entry of a depends line of TASK_ID (None: a new
    heading) that is not an ID, not KNOWN, or the task itself."""
    found = []
    for dep in deps:
        if not is_valid_id(dep):
            shown = dep if len(dep) <= 60 else dep[:57] + "..."
            found.append((f"depends names {shown!r}, which is not a task ID",
                          "list IDs such as TASK-3, separated by commas"))
        elif dep not in known:
            found.append((f"depends names {dep}, which is on no board file and not in CHANGELOG.md",
                          "fix the ID or remove it from depends"))
        elif dep == task_id:
            found.append((f"{dep} depends on itself", "remove it from its own depends line"))
    return found


class _LastAcyclic:
    """The last dependency graph found to have no cycle: most validations see it again. Whether
    a graph has a cycle does not depend on the order it is walked in (which cycle is named does,
    so a graph not seen before is always walked by _check_cycles)."""

    def __init__(self) -> None:
        self.graph: dict[str, tuple[str, ...] | None] | None = None

    def cache_clear(self) -> None:
        self.graph = None


_LAST_ACYCLIC = _LastAcyclic()


def _check_cycles(located: list[tuple[BoardFile, Entry, Mapping[str, str]]], known: set[str]) -> None:
    graph: dict[str, list[str]] = {}
    where: dict[str, tuple[BoardFile, Entry]] = {}
    for f, entry, meta in located:
        if entry.task_id:
            graph[entry.task_id] = [d for d in split_list(meta.get("depends", "")) if d in known]
            where[entry.task_id] = (f, entry)
    cycle = find_cycle(graph)
    if cycle is not None:
        f, entry = where[cycle[0]]
        raise KanbanError(CYCLE_WORDS + " -> ".join(cycle), file=f.name, line=entry.meta_line_no("depends"),
                          hint=CYCLE_HINT)


CYCLE_WORDS = "dependency cycle "
CYCLE_HINT = "remove one of these depends so the chain has an end"


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The first dependency cycle of GRAPH (ID -> the IDs it depends on), walked in its order,
    as [A, B, ..., A]; None when every chain has an end. IDs not in GRAPH are ends."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in graph:
        if state.get(root):
            continue
        stack = [(root, iter(graph[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif child in graph and not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph[child])))
    return None


def parse_id_list(text: str, *, what: str) -> list[str]:
    """IDs given on the command line, validated before they reach git or the filesystem."""
    ids = split_list(text)
    for tid in ids:
        if not ID_RE.fullmatch(tid) or not is_valid_id(tid):
            raise KanbanError(f"{what} {tid!r} is not a task ID", hint="use IDs such as TASK-3, separated by commas")
    return ids
