"""The board read once per pass: cached parses never hide an edit and never leak a change.

load_board reuses the parse of a file whose bytes are the bytes it parsed last
(kanban/store.py, "Reading cheaply"); a large text is parsed from a recent parse
of a similar one (kanban/mdblocks.py). Here: an edit that keeps the size and the
mtime is still seen, a change function that mutates what it loaded never reaches
the next load, errors are raised on every load with the same words, and parsing
from a recent parse gives what a full parse gives, on random edits of generated
and real files.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kanban import mdblocks
from kanban.board import parse_file
from kanban.changelog import insert_entry
from kanban.entry import Entry
from kanban.errors import KanbanError
from kanban.model import BOARD_COLUMNS, COLUMN_FILES, Column
from kanban.store import _CACHE, load_board, update


@pytest.fixture(autouse=True)
def _cold_caches():
    _CACHE.cache_clear()
    mdblocks._RECENT.cache_clear()
    mdblocks._parsed.cache_clear()
    yield


def _shape(board) -> dict:
    """Everything a load gives, as plain values."""
    files = {}
    for column in BOARD_COLUMNS:
        f = board.files[column]
        blocks = []
        for b in f.blocks:
            if isinstance(b, Entry):
                h = b.heading
                blocks.append(("entry", list(b.lines), b.line_no, (h.prefix, h.space, list(h.markers), h.task_id,
                                                                    h.rest, h.ending)))
            else:
                blocks.append(("prose", list(b)))
        files[column] = (f.path, f.raw, f.bom, f.exists, f.dirty, blocks)
    return {"files": files, "done": sorted(board.done_ids)}


def _fresh_shape(root: Path) -> dict:
    """What a load gives with every cache empty: a full parse of the files as they are."""
    _CACHE.cache_clear()
    mdblocks._RECENT.cache_clear()
    mdblocks._parsed.cache_clear()
    return _shape(load_board(root))


TODO = "# TODO\n\nNotes.\n\n## TASK-1: first\npriority: 2\n\nBody.\n\n## TASK-2: second\ndepends: TASK-1\n"


def _board(tmp_path: Path) -> Path:
    (tmp_path / "TODO.md").write_text(TODO)
    (tmp_path / "IN_PROGRESS.md").write_text("# In progress\n\n## TASK-3: third\n\n### Notes\n\n- one\n")
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## [Unreleased]\n\n- TASK-0: bootstrap\n")
    (tmp_path / ".kanban").mkdir()
    return tmp_path


# -- change detection ------------------------------------------------------------------------


def test_same_size_edit_within_the_same_mtime_is_seen(tmp_path):
    root = _board(tmp_path)
    todo = root / "TODO.md"
    assert load_board(root).find("TASK-1")[1].title == "first"
    before = os.stat(todo)
    edited = TODO.replace("first", "FIRST")
    assert len(edited) == len(TODO)
    with open(todo, "r+", encoding="utf-8") as f:  # in place: same inode, same size
        f.write(edited)
    os.utime(todo, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    after = os.stat(todo)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert load_board(root).find("TASK-1")[1].title == "FIRST"


def test_same_size_changelog_edit_changes_the_done_ids(tmp_path):
    root = _board(tmp_path)
    changelog = root / "CHANGELOG.md"
    assert "TASK-0" in load_board(root).done_ids
    before = os.stat(changelog)
    changelog.write_text(changelog.read_text().replace("TASK-0", "TASK-9"))
    os.utime(changelog, ns=(before.st_atime_ns, before.st_mtime_ns))
    done = load_board(root).done_ids
    assert "TASK-9" in done and "TASK-0" not in done


def test_a_file_created_or_deleted_is_seen(tmp_path):
    root = _board(tmp_path)
    assert not load_board(root).files[Column.REVIEW].exists
    (root / "REVIEW.md").write_text("")
    assert load_board(root).files[Column.REVIEW].exists  # empty, as before, but there now
    (root / "REVIEW.md").unlink()
    assert not load_board(root).files[Column.REVIEW].exists


# -- mutation never reaches the cache --------------------------------------------------------


def _mutate_everything(board) -> None:
    todo, in_progress = board.files[Column.TODO], board.files[Column.IN_PROGRESS]
    e1 = board.find("TASK-1")[1]
    e1.set_meta("priority", "1")
    e1.set_meta("status", "picked")
    e1.add_note("a note")
    e1.add_marker("RETRY")
    e1.heading.markers.append("ESCALATED")
    e1.lines.append("one more line\n")
    e1.lines[0] = "## TASK-1: renamed\n"
    e1.line_no = 99
    board.find("TASK-3")[1].convert_newlines("\r\n")
    todo.blocks[0].append("prose added\n")
    todo.blocks[0][0] = "# Changed\n"
    todo.blocks.append(["tail\n"])
    board.move("TASK-2", Column.REVIEW)
    in_progress.remove(board.find("TASK-3")[1])
    board.add("added", {"priority": "3"})
    board.done_ids.add("TASK-77")
    board.done_ids.discard("TASK-0")
    todo.raw = b"garbage"
    todo.bom = True


def test_mutating_a_loaded_board_never_corrupts_the_cache(tmp_path):
    root = _board(tmp_path)
    want = _fresh_shape(root)
    board = load_board(root)
    assert _shape(board) == want
    _mutate_everything(board)
    assert _shape(board) != want
    assert _shape(load_board(root)) == want  # warm: from the cache
    assert _shape(load_board(root)) == _fresh_shape(root)


def test_an_update_that_fails_leaves_nothing_behind(tmp_path):
    root = _board(tmp_path)
    want = _fresh_shape(root)
    load_board(root)

    def change(board):
        _mutate_everything(board)
        raise RuntimeError("the change gives up")

    with pytest.raises(RuntimeError):
        update(root, change)
    assert _shape(load_board(root)) == want


def test_an_update_retried_over_a_hand_edit_starts_from_the_file(tmp_path):
    root = _board(tmp_path)
    todo = root / "TODO.md"
    seen = []

    def change(board):
        entry = board.touch("TASK-1")
        seen.append(entry.meta().get("status"))
        entry.set_meta("status", f"attempt {len(seen)}")
        if len(seen) == 1:  # a person saves between kanban's read and its write
            todo.write_text(todo.read_text().replace("Notes.", "Notes by hand."))

    update(root, change)
    assert seen == [None, None]  # the second attempt saw the file, not the first attempt's change
    text = todo.read_text()
    assert "Notes by hand." in text and "status: attempt 2" in text
    assert _shape(load_board(root)) == _fresh_shape(root)


def test_loads_after_updates_equal_full_parses(tmp_path):
    root = _board(tmp_path)
    for i in range(4, 12):
        update(root, lambda b, i=i: b.add(f"task {i}", {"depends": "TASK-1"}))
        assert _shape(load_board(root)) == _fresh_shape(root)
    update(root, lambda b: b.move("TASK-5", Column.IN_PROGRESS))
    update(root, lambda b: b.touch("TASK-5").add_note("moved"))
    assert _shape(load_board(root)) == _fresh_shape(root)


# -- errors are never cached -----------------------------------------------------------------


def _error(root: Path) -> tuple:
    with pytest.raises(KanbanError) as info:
        load_board(root)
    return str(info.value), info.value.file, info.value.line


def test_parse_errors_are_raised_on_every_load(tmp_path):
    root = _board(tmp_path)
    load_board(root)
    (root / "TODO.md").write_bytes(b"## TASK-1: a\n\xff\n")
    first = _error(root)
    assert first[1:] == ("TODO.md", 2)
    assert _error(root) == first
    (root / "CHANGELOG.md").write_bytes(b"- TASK-0: x\n\x00\n")
    (root / "TODO.md").write_text(TODO)
    assert _error(root)[1:] == ("CHANGELOG.md", 2)


def test_validation_errors_are_raised_on_every_load_with_the_same_line(tmp_path):
    root = _board(tmp_path)
    load_board(root)
    todo = root / "TODO.md"
    todo.write_text(TODO + "\n## TASK-1: again\n")
    first = _error(root)
    assert "task ID TASK-1 is used twice (also at TODO.md:5)" in first[0] and first[1:] == ("TODO.md", 13)
    assert _error(root) == first
    todo.write_text(TODO)
    load_board(root)
    todo.write_text(TODO.replace("priority: 2", "priority: soon"))
    assert _error(root)[1:] == ("TODO.md", 6)
    todo.write_text(TODO)
    load_board(root)  # valid again


def test_validation_follows_the_changelog(tmp_path):
    root = _board(tmp_path)
    todo, changelog = root / "TODO.md", root / "CHANGELOG.md"
    todo.write_text(TODO + "\n## TASK-4: later\ndepends: TASK-9\n")
    message = _error(root)
    assert "depends names TASK-9, which is on no board file" in message[0] and message[1:] == ("TODO.md", 14)
    text = changelog.read_text()
    changelog.write_text(text + "- TASK-9: merged\n")
    assert "TASK-9" in load_board(root).done_ids
    changelog.write_text(text)  # a board that passed validation with TASK-9 merged does not pass without
    assert _error(root) == message


def test_a_cycle_is_named_every_time(tmp_path):
    root = _board(tmp_path)
    load_board(root)
    cyclic = TODO.replace("priority: 2", "priority: 2\ndepends: TASK-2")
    (root / "TODO.md").write_text(cyclic)
    first = _error(root)
    assert "dependency cycle TASK-1 -> TASK-2 -> TASK-1" in first[0]
    assert _error(root) == first
    (root / "TODO.md").write_text(TODO)
    load_board(root)
    with pytest.raises(KanbanError, match="dependency cycle"):
        update(root, lambda b: b.touch("TASK-1").set_meta("depends", "TASK-2"))
    assert (root / "TODO.md").read_text() == TODO


def test_an_invalid_change_is_refused_although_the_board_it_came_from_was_valid(tmp_path):
    root = _board(tmp_path)
    load_board(root)
    with pytest.raises(KanbanError, match="depends on itself"):
        update(root, lambda b: b.touch("TASK-2").set_meta("depends", "TASK-2"))
    with pytest.raises(KanbanError, match="priority of TASK-1 must be a whole number"):
        update(root, lambda b: b.touch("TASK-1").set_meta("priority", "0"))
    assert (root / "TODO.md").read_text() == TODO


# -- parsing from a recent parse equals a full parse -----------------------------------------

LINES = st.sampled_from([
    "", "", "## TASK-1: a", "## TASK-2: b", "# Title", "### sub", "text", "more text", "* item", "- item",
    "1. item", "2) item", "  ## nested", "> quote", "> ## quoted", "```", "~~~", "<!--", "-->", "<div>",
    "</div>", "---", "===", "    indented", "\tTab", "[ref]: http://x", '[ref]: /url "title', 'title"',
    "[r]:", "  /url", "| a | b |", "    ## code", "## [Unreleased]", "Setext", "<pre>", "</pre>",
])


def _check(old_text: str, new_text: str, old: mdblocks._Parse | None = None) -> None:
    old = old or mdblocks._full(mdblocks._normalise(old_text))
    src = mdblocks._normalise(new_text)
    assert mdblocks._from(old, src) == mdblocks._full(src)


def _edited(lines: list[str], data) -> tuple[str, str]:
    new = list(lines)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(new)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        if kind == "insert" or not new:
            new[at:at] = data.draw(st.lists(LINES, min_size=1, max_size=4))
        elif kind == "delete":
            del new[min(at, len(new) - 1):min(at, len(new) - 1) + data.draw(st.integers(1, 3))]
        else:
            new[min(at, len(new) - 1)] = data.draw(LINES)
    ending = data.draw(st.sampled_from(["\n", "\r\n"]))
    return ending.join(lines) + ending, ending.join(new) + data.draw(st.sampled_from(["", ending]))


@settings(max_examples=400, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=60), st.data())
def test_a_parse_from_a_recent_one_equals_a_full_parse(lines, data):
    _check(*_edited(lines, data))


@pytest.mark.slow
@settings(max_examples=20000, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=120), st.data())
def test_a_parse_from_a_recent_one_equals_a_full_parse_soak(lines, data):
    _check(*_edited(lines, data))


def test_a_reference_title_that_runs_past_a_heading():
    # mistune reads a link reference's title up to the next blank line, past a heading: an
    # edit after the heading can make it part of the title, so no parse restarts there.
    old = '[foo]: /url "ti\n## A\nx\n## B\n'
    new = '[foo]: /url "ti\n## A\ntle"\nx\n## B\n'
    assert [h.line for h in mdblocks.top_headings(old)] == [1, 3]
    assert [h.line for h in mdblocks.top_headings(new)] == [4]
    _check(old, new)
    _check(old.replace("## A\n", "## A\n\n") * 3, new.replace("## A\n", "## A\n\n") * 3)


def _corpus() -> list[Path]:
    for candidate in (Path(__file__).resolve().parents[2] / "shared" / "corpus", Path("/work/shared/corpus")):
        if (candidate / "markdown").is_dir():
            return sorted(p for p in (candidate / "markdown").rglob("*.md") if p.is_file())
    return []


def _corpus_edits(edits: int) -> None:
    rng = random.Random(12)
    pool = [line for p in _corpus() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    for path in _corpus():
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        old = mdblocks._full(mdblocks._normalise(text))
        for _ in range(edits):
            new = list(lines)
            at = rng.randrange(len(new) + 1)
            if rng.random() < 0.5 or not new:
                new[at:at] = [rng.choice(pool) + "\n" for _ in range(rng.randint(1, 3))]
            else:
                del new[at:at + rng.randint(1, 4)]
            _check(text, "".join(new), old)


@pytest.mark.skipif(not _corpus(), reason="markdown corpus not found (shared/corpus beside the checkout)")
def test_parses_from_recent_ones_equal_full_parses_on_real_files():
    _corpus_edits(3)


@pytest.mark.slow
@pytest.mark.skipif(not _corpus(), reason="markdown corpus not found (shared/corpus beside the checkout)")
def test_parses_from_recent_ones_equal_full_parses_on_real_files_soak():
    _corpus_edits(60)


def test_board_files_parsed_from_recent_parses(tmp_path, monkeypatch):
    # Every parse of this test goes through a recent one and is checked against a full parse.
    monkeypatch.setattr(mdblocks, "INCREMENTAL_MIN", 0)
    monkeypatch.setattr(mdblocks, "_check_incremental", True)
    root = _board(tmp_path)
    body = "".join(f"\n## TASK-{i}: task {i}\npriority: {i % 4 + 1}\n\n```\n## not a heading\n```\n"
                   for i in range(10, 60))
    (root / "TODO.md").write_text(TODO + body)
    load_board(root)
    for i in range(10, 20):
        update(root, lambda b, i=i: b.move(f"TASK-{i}", Column.IN_PROGRESS))
        update(root, lambda b, i=i: b.touch(f"TASK-{i}").add_note("note with ``` a fence"))
    assert _shape(load_board(root)) == _fresh_shape(root)


def test_a_large_file_edited_by_hand_parses_as_in_full(tmp_path):
    root = _board(tmp_path)
    body = "".join(f"\n## TASK-{i}: task {i}\n\ntext {i}\n" for i in range(10, 2000))
    todo = root / "TODO.md"
    todo.write_text(TODO + body)
    assert len(todo.read_bytes()) > mdblocks.INCREMENTAL_MIN
    load_board(root)
    text = todo.read_text()
    for edit in ("```\n", "## TASK-5000: new\n", "<!--\n", "-->\n", "```\n"):  # open, then close, a fence
        at = text.index("## TASK-1000:")
        text = text[:at] + edit + text[at:]
        todo.write_text(text)
        assert _shape(load_board(root)) == _fresh_shape(root), edit
    # the open fence and comment hide everything after them, then the closing fence shows it again
    assert load_board(root).find("TASK-1999") is not None


def test_a_changelog_drain_inserts_as_before(tmp_path):
    text = "# Changelog\n\n## [Unreleased]\n\n### Fixed\n\n" + "".join(f"- X-{i}: fix {i}\n" for i in range(1, 2000))
    text += "\n## [1.0.0] - 2026-01-01\n\n### Added\n\n- the first release\n"
    data = text.encode()
    for i in range(5):  # each insertion's headings parsed from the text before it
        expected = data.replace(b"\n\n## [1.0.0]", f"\n- TASK-{i}: t\n\n## [1.0.0]".encode())
        data = insert_entry(data, f"TASK-{i}: t", "Fixed")
        assert data == expected
    assert mdblocks.top_headings(data.decode(), 6) == list(mdblocks._full(mdblocks._normalise(data.decode())).headings)


def test_parse_file_gives_fresh_objects(tmp_path):
    path = tmp_path / "TODO.md"
    a, b = parse_file(path, Column.TODO, TODO.encode()), parse_file(path, Column.TODO, TODO.encode())
    ea, eb = next(a.entries()), next(b.entries())
    assert ea is not eb and ea.lines is not eb.lines and ea.heading is not eb.heading
    assert ea.heading.markers is not eb.heading.markers
    assert a.blocks[0] is not b.blocks[0]


@pytest.mark.parametrize("column", list(BOARD_COLUMNS))
def test_every_board_file_round_trips_through_the_cache(tmp_path, column):
    root = _board(tmp_path)
    path = root / COLUMN_FILES[column]
    data = ("\ufeff# X\r\n\r\n## TASK-40: a\r\nfiles: a.py\r\n\r\n## no id\r\ntext").encode()
    path.write_bytes(data)
    first = load_board(root).files[column]
    second = load_board(root).files[column]
    assert first.render() == second.render() == data
    assert first.blocks == second.blocks and first.blocks is not second.blocks
