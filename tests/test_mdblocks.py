"""The heading scanner: mistune's block structure, with two local changes kept honest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kanban.mdblocks import _PARSER, _search_line_starts, top_headings

LINES = st.sampled_from([
    "", "## TASK-1: a", "# Title", "### sub", "text", "**bold** text", "* item", "- item", "1. item",
    "  ## nested", "> quote", "> ## quoted", "```", "~~~", "<!--", "-->", "<div>", "</div>", "---", "===",
    "    indented", "\tTab", "[ref]: http://x", "| a | b |", "    ## code",
])
DOCS = st.lists(LINES, max_size=40).map("\n".join)


def test_every_block_rule_is_anchored_at_a_line_start():
    # _search_line_starts relies on it; a mistune upgrade that breaks it must fail here.
    for name, pattern in _PARSER.SPECIFICATION.items():
        assert pattern.startswith(("^", "(^")), name


@settings(max_examples=300, deadline=None)
@given(DOCS, st.integers(0, 200))
def test_line_start_search_equals_regex_search(text, pos):
    src = text + "\n"
    pos = min(pos, len(src))
    sc = _PARSER.compile_sc()
    expected, got = sc.search(src, pos), _search_line_starts(sc, src, pos)
    assert (expected and (expected.start(), expected.end(), expected.lastgroup)) == \
           (got and (got.start(), got.end(), got.lastgroup))


def test_heading_after_block_quote_ends_the_quote():
    assert [h.line for h in top_headings("> note\n## TASK-2: b\n")] == [1]
    assert [h.line for h in top_headings("> note\nlazy\n# H\n")] == [2]


def test_hidden_headings_stay_hidden():
    text = "```\n## a\n```\n<!--\n## b\n-->\n- x\n  ## c\n    ## d\n## TASK-1: real\n"
    assert [(h.line, h.level) for h in top_headings(text)] == [(9, 2)]
