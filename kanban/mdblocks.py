"""Find the top-level level-1 and level-2 headings of a markdown text, by line.

mistune decides the block structure (fenced code, HTML blocks, lists, block
quotes all hide `## ` lines from us), but its tokens carry no positions. A
small BlockState subclass records the cursor when each top-level token is
created, which is the block's start offset in mistune's normalised copy of
the text. Normalisation (CRLF and CR to LF, a final newline added) keeps the
line count, so offsets map back to the original lines one to one.

This leans on mistune's parser internals: the version is pinned in
pyproject.toml and tests/test_corpus.py runs real files through it.
"""

from __future__ import annotations

import bisect
import functools
import re
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

    def append_token(self, token: dict[str, Any]) -> None:
        if self.parent is None:
            self.starts[id(token)] = self.cursor
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
        if state.cursor < state.cursor_max:
            state.add_paragraph(state.src[state.cursor:])
            state.cursor = state.cursor_max


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


def split_lines(text: str) -> list[str]:
    """Split keeping each line's own ending; only \\r\\n, \\r and \\n break lines."""
    return _LINE_RE.findall(text)


def top_headings(text: str, max_level: int = 2) -> list[Heading]:
    """Top-level headings up to `max_level`, in order, by 0-based line index."""
    return list(_top_headings(text, max_level))


@functools.lru_cache(maxsize=32)
def _top_headings(text: str, max_level: int) -> tuple[Heading, ...]:
    # Cached by text: a running board re-reads the same files many times a second.
    src = text.replace("\r\n", "\n").replace("\r", "\n")
    if not src.endswith("\n"):
        src += "\n"
    state = _PositionState()
    state.process(src)
    _PARSER.parse(state)

    line_starts = [0]
    find = src.find
    pos = find("\n")
    while pos != -1:
        line_starts.append(pos + 1)
        pos = find("\n", pos + 1)

    found = []
    for token in state.tokens:
        if token["type"] != "heading":
            continue
        level = token["attrs"]["level"]
        if level > max_level:
            continue
        offset = state.starts.get(id(token))
        if offset is None:  # not created at top level: cannot happen, but never guess
            continue
        line = bisect.bisect_right(line_starts, offset) - 1
        found.append(Heading(line, level, token.get("style") == "atx"))
    return tuple(found)
