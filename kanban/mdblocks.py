"""Find the top-level level-1 and level-2 headings of a markdown text, by line.

mistune decides the block structure (fenced code, HTML blocks, lists, block
quotes all hide `## ` lines from us), but its tokens carry no positions. A
small BlockState subclass records the cursor when each top-level token is
created, which is the block's start offset in mistune's normalised copy of
the text. Normalisation (CRLF and CR to LF, a final newline added) keeps the
line count, so offsets map back to the original lines one to one.

This leans on mistune's parser internals: the version is pinned in
pyproject.toml and tests/test_corpus.py runs real files through it.

Re-parsing after a small edit. A running board re-reads files that kanban or a
person just changed a little, and a full parse of a 10,000-task file takes
seconds. A large text is therefore parsed from a recent parse of a similar one
(the file before the edit): the headings before the edit are kept, mistune runs
from the last top-level ATX heading before the edit until it meets, after the
edit, a top-level ATX heading the old parse also had in the unchanged tail, and
the headings after that are the old ones, shifted. The result is the one a full
parse gives, because mistune's block parser, at a top-level heading, holds no
state but its cursor (the token before it being a heading, not a paragraph), and
every block before a top-level heading is decided by the text up to that
heading's line, with one exception: a link reference definition's title may run
on to the next blank line, so the restart heading must have a blank line after
it, before the edit. tests/test_board_cache.py checks this against full parses
of random edits.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from typing import Any, NamedTuple

from mistune.block_parser import BlockParser
from mistune.core import BlockState

# Lines split exactly where mistune sees line breaks: \r\n, \r or \n.
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


class Heading(NamedTuple):
    line: int  # 0-based index of the heading's first line
    level: int
    atx: bool  # False for setext headings (text line + === or --- line)


class _PositionState(BlockState):
    """A BlockState that remembers where each top-level token starts."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.starts: dict[int, int] = {}
        # For a parse from a restart point: (start of the unchanged tail, offset shift, the old
        # parse's ATX heading offsets); `resync` is the heading where it stopped.
        self.resync_at: tuple[int, int, frozenset[int]] | None = None
        self.resync: dict[str, Any] | None = None

    def append_token(self, token: dict[str, Any]) -> None:
        if self.parent is None:
            self.starts[id(token)] = self.cursor
            if self.resync_at is not None and token["type"] == "heading" and token.get("style") == "atx":
                tail, shift, old = self.resync_at
                if self.cursor >= tail and self.cursor - shift in old:
                    self.resync = token
        super().append_token(token)

    def add_paragraph(self, text: str) -> None:
        last = self.last_token()
        if last and last["type"] == "paragraph":
            last["text"] += text
        else:
            self.append_token({"type": "paragraph", "text": text})


# The rules mistune checks to end a block quote's lazy continuation lines.
_LAZY_BREAK_RULES = ["blank_line", "thematic_break", "fenced_code", "list", "block_html"]


class _Parser(BlockParser):
    """mistune's block parser with one CommonMark fix.

    mistune 3.4 lets a block quote's lazy continuation swallow an ATX heading
    (`> note` then `## TASK-2: ...`); CommonMark ends the quote there, and a
    person would otherwise lose a task from the board.
    """

    def compile_sc(self, rules: list[str] | None = None):  # type: ignore[override]
        if rules == _LAZY_BREAK_RULES:
            rules = rules + ["atx_heading"]
        return super().compile_sc(rules)

    def parse(self, state: BlockState, rules: list[str] | None = None) -> None:  # type: ignore[override]
        """mistune's block loop, with its forward regex search done line by line.

        Every block rule is anchored with `^` (MULTILINE), so the first match at
        or after the cursor starts a line: trying `match` at each line start
        finds the same one as `search`, without scanning every character
        (2-3x faster on large boards). Otherwise identical to BlockParser.parse.
        """
        if rules is None:
            rules = self.rules
        sc = self.compile_sc(rules)
        while state.cursor < state.cursor_max:
            if "indent_code" in rules:
                end_pos = self._parse_indent_code_fast(state)
                if end_pos is not None:
                    state.cursor = end_pos
                    continue
            m = sc.match(state.src, state.cursor)
            if not m and self._parse_plain_paragraph(state, sc):
                continue
            if not m:
                m = _search_line_starts(sc, state.src, state.cursor)
            if not m:
                break
            end_pos = m.start()
            if end_pos > state.cursor:
                state.add_paragraph(state.get_text(end_pos))
                state.cursor = end_pos
            end_pos2 = self.parse_method(m, state)
            if end_pos2:
                state.cursor = end_pos2
            else:
                end_pos3 = state.find_line_end()
                state.add_paragraph(state.get_text(end_pos3))
                state.cursor = end_pos3
            if isinstance(state, _PositionState) and state.resync is not None:
                if _at_resync(state):
                    return
                state.resync = None
        if state.cursor < state.cursor_max:
            state.add_paragraph(state.src[state.cursor:])
            state.cursor = state.cursor_max


def _at_resync(state: _PositionState) -> bool:
    """True if the parse from a restart point has just read, in the unchanged tail, a top-level
    ATX heading the old parse had at the same place: from its line end on, the two agree."""
    token = state.resync
    if not state.tokens or state.tokens[-1] is not token:
        return False
    start = state.starts[id(token)]
    return state.cursor == state.find_line_end_at(start)


def _search_line_starts(sc, src: str, pos: int):
    """`sc.search(src, pos)` for a pattern whose every alternative starts with `^`."""
    if pos == 0 or src[pos - 1] == "\n":
        m = sc.match(src, pos)
        if m:
            return m
    find, match = src.find, sc.match
    while (nl := find("\n", pos)) != -1:
        pos = nl + 1
        m = match(src, pos)
        if m:
            return m
    return None


_PARSER = _Parser()
# Line breaks other than \r\n, \r and \n, where str.splitlines would split and mistune does not.
_OTHER_BREAKS = ("\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
# A blank line as mistune sees one (its BLANK_LINE rule), in normalised text.
_BLANK_LINE = re.compile(r"^[ \t\v\f]*\n", re.MULTILINE)
# Texts shorter than this are parsed in full; longer ones from a recent parse of a similar text.
INCREMENTAL_MIN = 16 * 1024
# Set by tests: every parse from a recent one is checked against a full parse.
_check_incremental = False


def split_lines(text: str) -> list[str]:
    """Split keeping each line's own ending; only \\r\\n, \\r and \\n break lines."""
    if not any(c in text for c in _OTHER_BREAKS):  # `in`: far faster than a regex over the text
        return text.splitlines(keepends=True)  # the same lines, several times faster
    return _LINE_RE.findall(text)


def top_headings(text: str, max_level: int = 2) -> list[Heading]:
    """Top-level headings up to `max_level`, in order, by 0-based line index."""
    return [h for h in _parsed(text).headings if h.level <= max_level]


class _Parse(NamedTuple):
    """A normalised text and its top-level headings (every level), with their offsets."""

    src: str
    headings: tuple[Heading, ...]
    offsets: tuple[int, ...]  # of each heading's first line in src
    lines: int  # "\n" in src


def _normalise(text: str) -> str:
    src = text.replace("\r\n", "\n").replace("\r", "\n")
    return src if src.endswith("\n") else src + "\n"


@functools.lru_cache(maxsize=32)
def _parsed(text: str) -> _Parse:
    # Cached by text: a running board re-reads the same files many times a second.
    src = _normalise(text)
    if len(src) < INCREMENTAL_MIN:
        return _full(src)
    base = _RECENT.best(src)
    result = _from(base, src) if base is not None else _full(src)
    if _check_incremental and base is not None:
        full = _full(src)
        assert result == full, "a parse from a recent one differs from a full parse"
    _RECENT.add(result)
    return result


def _full(src: str) -> _Parse:
    state = _PositionState()
    state.process(src)
    _PARSER.parse(state)
    headings, offsets = _collect(state, src, 0, 0)
    return _Parse(src, tuple(headings), tuple(offsets), src.count("\n"))


def _collect(state: _PositionState, src: str, base_offset: int, base_line: int) -> tuple[list[Heading], list[int]]:
    """The top-level headings of a parse (from BASE_OFFSET, which is on line BASE_LINE)."""
    headings, offsets = [], []
    at, line = base_offset, base_line
    for token in state.tokens:
        if token["type"] != "heading":
            continue
        offset = state.starts.get(id(token))
        if offset is None:  # not created at top level: cannot happen, but never guess
            continue
        line += src.count("\n", at, offset)
        at = offset
        headings.append(Heading(line, token["attrs"]["level"], token.get("style") == "atx"))
        offsets.append(offset)
    return headings, offsets


def common_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of A and B (slice comparisons, at C speed)."""
    limit = min(len(a), len(b))
    lo, step = 0, 4096
    while lo < limit and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
        step *= 2
    hi = min(lo + step, limit)  # a[:lo] == b[:lo]; they differ before hi (or hi is the limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: str, b: str, limit: int) -> int:
    """The length (at most LIMIT) of the longest common suffix of A and B."""
    la, lb = len(a), len(b)
    lo, step = 0, 4096
    while lo < limit and a[la - min(lo + step, limit):la - lo] == b[lb - min(lo + step, limit):lb - lo]:
        lo = min(lo + step, limit)
        step *= 2
    hi = min(lo + step, limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _from(old: _Parse, src: str) -> _Parse:
    """The parse of SRC, from OLD's (see the module doc)."""
    p = common_prefix(old.src, src)
    if p == len(src) == len(old.src):
        return old
    s = common_suffix(old.src, src, min(len(old.src), len(src)) - p)
    # The restart: the last top-level ATX heading whose line, and a blank line after it, are unchanged.
    k = bisect.bisect_left(old.offsets, p)
    restart = None
    for i in range(k - 1, max(k - 9, -1), -1):
        if not old.headings[i].atx:
            continue
        line_end = src.find("\n", old.offsets[i]) + 1
        blank = _BLANK_LINE.search(src, line_end, p)
        if line_end and blank is not None:
            restart = i
            break
    start, start_line = (old.offsets[restart], old.headings[restart].line) if restart is not None else (0, 0)
    kept = restart if restart is not None else 0
    shift = len(src) - len(old.src)
    state = _PositionState()
    state.process(src)
    state.cursor = start
    atx = frozenset(o for o, h in zip(old.offsets, old.headings) if h.atx and o >= p)
    state.resync_at = (len(src) - s, shift, atx)
    _PARSER.parse(state)
    headings, offsets = _collect(state, src, start, start_line)
    headings[:0], offsets[:0] = old.headings[:kept], old.offsets[:kept]
    lines = src.count("\n")
    if state.resync is not None and state.tokens and state.tokens[-1] is state.resync:
        old_at = state.starts[id(state.resync)] - shift
        j = bisect.bisect_right(old.offsets, old_at)
        line_shift = lines - old.lines
        headings += [Heading(h.line + line_shift, h.level, h.atx) for h in old.headings[j:]]
        offsets += [o + shift for o in old.offsets[j:]]
    return _Parse(src, tuple(headings), tuple(offsets), lines)


class _Recent:
    """The last few large parses, for parsing a text after a small edit from one of them."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.parses: list[_Parse] = []
        self.lock = threading.Lock()

    def best(self, src: str) -> _Parse | None:
        """The recent parse sharing the most text with SRC at its two ends (None if none shares any)."""
        with self.lock:
            parses = list(self.parses)
        best, best_shared = None, 0
        for old in parses:
            p = common_prefix(old.src, src)
            shared = p + common_suffix(old.src, src, min(len(old.src), len(src)) - p)
            if shared > best_shared:
                best, best_shared = old, shared
        return best

    def add(self, parse: _Parse) -> None:
        with self.lock:
            self.parses = [parse] + [p for p in self.parses if p.src is not parse.src][: self.size - 1]

    def cache_clear(self) -> None:
        with self.lock:
            self.parses = []


_RECENT = _Recent()
