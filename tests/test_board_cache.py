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
from kanban.board import parse_file, validate
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


# Every way an entry is edited, each on an entry that shares the cached parse (copy on write).
_EDITS = {
    "set_meta new": lambda e: e.set_meta("status", "picked"),
    "set_meta replace": lambda e: e.set_meta("priority", "1"),
    "set_meta delete": lambda e: e.set_meta("priority", None),
    "add_note": lambda e: e.add_note("a note"),
    "add_marker": lambda e: e.add_marker("RETRY"),
    "set_markers": lambda e: e.set_markers(["A", "B"]),
    "remove_marker": lambda e: (e.add_marker("X"), e.remove_marker("X")),
    "set_id": lambda e: e.set_id("TASK-50"),
    "convert_newlines": lambda e: e.convert_newlines("\r\n"),
}


@pytest.mark.parametrize("edit", list(_EDITS))
def test_editing_one_load_never_changes_another_load_or_the_cache(tmp_path, edit):
    root = _board(tmp_path)
    want = _fresh_shape(root)
    first, second = load_board(root), load_board(root)
    e1, e2 = first.find("TASK-1")[1], second.find("TASK-1")[1]
    assert e1.lines is e2.lines and e1.heading is e2.heading  # shared until edited
    before = (list(e1.lines), e1.heading.fields())
    _EDITS[edit](e1)
    assert (list(e1.lines), e1.heading.fields()) != before or edit == "remove_marker"
    assert (list(e2.lines), e2.heading.fields()) == before
    assert e1.origin is None and e2.origin is not None
    assert _shape(second) == want and _shape(load_board(root)) == want == _fresh_shape(root)


def test_a_change_that_skips_the_entry_methods_raises(tmp_path):
    root = _board(tmp_path)
    want = _fresh_shape(root)
    entry = load_board(root).find("TASK-1")[1]
    with pytest.raises(TypeError):
        entry.lines[0] = "## TASK-1: renamed\n"
    with pytest.raises(AttributeError):
        entry.lines.append("one more line\n")
    with pytest.raises(AttributeError):
        entry.heading.markers.append("RETRY")
    for name in ("task_id", "rest", "ending", "markers"):
        with pytest.raises(TypeError):
            setattr(entry.heading, name, "x")
    assert _shape(load_board(root)) == want


def test_an_edited_entry_is_validated_and_read_from_its_own_lines(tmp_path):
    root = _board(tmp_path)
    board = load_board(root)
    assert {t.id: t.priority for t in board.tasks()}["TASK-1"] == 2
    board.find("TASK-1")[1].set_meta("priority", "3")
    assert {t.id: t.priority for t in board.tasks()}["TASK-1"] == 3
    board.find("TASK-2")[1].set_meta("priority", "0")
    with pytest.raises(KanbanError) as err:
        validate(board)
    assert (err.value.file, err.value.line) == ("TODO.md", 12) and "priority of TASK-2" in err.value.message
    again = load_board(root)  # the cached parse still has what the file says
    assert {t.id: t.priority for t in again.tasks()}["TASK-1"] == 2
    validate(again)


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


def test_a_new_version_of_a_file_keeps_the_entries_it_has_unchanged(tmp_path):
    root = _board(tmp_path)
    before = load_board(root)
    first = before.find("TASK-2")[1].origin
    assert first.facts is not None  # validated
    todo = root / "TODO.md"
    todo.write_text(todo.read_text().replace("Notes.", "Notes,\nover two lines."))
    board = load_board(root)
    again = board.find("TASK-2")[1]
    assert again.line_no == before.find("TASK-2")[1].line_no + 1  # moved down a line, the same entry
    assert again.origin is first and first.facts is not None
    assert board.files[Column.TODO].blocks[0] != before.files[Column.TODO].blocks[0]  # the prose that changed
    assert _shape(board) == _fresh_shape(root)
    todo.write_text(todo.read_text().replace("depends: TASK-1", "depends: TASK-1, TASK-1"))
    assert load_board(root).find("TASK-2")[1].origin.lines is not first.lines  # changed: parsed again


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
    assert ea is not eb and a.blocks is not b.blocks and a.blocks[0] is not b.blocks[0]
    ea.add_marker("RETRY")  # copy on write: the entry's own lines and heading from its first edit
    ea.set_meta("priority", "1")
    assert ea.lines[0] == "## [RETRY] TASK-1: first\n" and eb.lines[0] == "## TASK-1: first\n"
    assert ea.heading.markers == ["RETRY"] and list(eb.heading.markers) == []
    assert eb.meta()["priority"] == "2" and a.render() != b.render() == TODO.encode()


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


# -- a new version of the files, validated against the last valid one ----------------------------
# A load of files that changed since the last valid load keeps the entries they have unchanged
# (board.parse_blocks) and validates only what changed (board.parses_valid_after). Whatever the
# edit, the load must give what a load with nothing cached gives: the same board, or the same
# error, word for word, at the same file and line.

_FILES = {
    "TODO.md": "# Todo\n\n## TASK-1: a\npriority: 2\n\n## TASK-2: b\ndepends: TASK-1\n\n## new heading\n"
               "depends: TASK-2\n\n# Later\n\n## TASK-3: c\ndepends: TASK-1, TASK-2\n\n## TASK-4: d\ndepends: TASK-0\n",
    "IN_PROGRESS.md": "# In progress\n\n## TASK-5: e\ndepends: TASK-3\n\n## TASK-6: f\n",
    "REVIEW.md": "## TASK-7: g\ndepends: TASK-6\n",
    "TESTING.md": "## TASK-8: h\n",
    "CHANGELOG.md": "# Changelog\n\n- TASK-0: bootstrap\n- TASK-9: old\n",
}


def _hand_edit(texts: dict[str, str], rng: random.Random) -> None:
    names = [n for n in texts if n != "CHANGELOG.md"]
    name = rng.choice(names)
    chunks = texts[name].split("\n\n")
    kind = rng.randrange(7)
    if kind == 0 and len(chunks) > 1:  # an entry (or prose) moved to another file
        chunk = chunks.pop(rng.randrange(len(chunks)))
        other = rng.choice(names)
        texts[other] = texts[other].rstrip("\n") + "\n\n" + chunk.strip("\n") + "\n"
    elif kind == 1:  # a depends line rewritten
        ids = [f"TASK-{n}" for n in range(11)] + ["TASK-99", "x/y"]
        at = rng.randrange(len(chunks))
        chunks[at] = chunks[at].rstrip("\n") + f"\ndepends: {', '.join(rng.sample(ids, rng.randint(1, 3)))}"
    elif kind == 2:  # a copy of an entry
        texts[rng.choice(names)] += "\n" + rng.choice(chunks).strip("\n") + "\n"
    elif kind == 3 and len(chunks) > 1:  # a deletion
        del chunks[rng.randrange(len(chunks))]
    elif kind == 4:  # a new entry, maybe with a bad priority
        chunks.append(f"## TASK-{rng.randint(1, 12)}: new\npriority: {rng.choice(['1', '0', 'x'])}")
    elif kind == 5:
        texts["CHANGELOG.md"] = texts["CHANGELOG.md"].replace(rng.choice(["TASK-0", "TASK-9"]), "TASK-10")
    else:  # prose only
        chunks.insert(rng.randrange(len(chunks) + 1), "Some words, by hand.")
    if kind != 0 and kind != 2 and kind != 5:
        texts[name] = "\n\n".join(chunks)


def _load_outcome(root: Path):
    try:
        board = load_board(root)
    except KanbanError as exc:
        return str(exc), exc.file, exc.line
    shape = _shape(board)
    files = {c: (raw, blocks) for c, (_path, raw, _bom, _exists, _dirty, blocks) in shape["files"].items()}
    return files, shape["done"]


def test_a_load_after_an_edit_is_the_load_of_nothing_cached(tmp_path):
    rng = random.Random(5)
    root = tmp_path / "board"
    root.mkdir()
    valid = dict(_FILES)
    texts = dict(valid)
    outcomes = {True: 0, False: 0}
    for step in range(300):
        for name, text in texts.items():
            (root / name).write_text(text)
        load_board(root) if step == 0 else None
        _hand_edit(texts, rng)
        for name, text in texts.items():
            (root / name).write_text(text)
        got = _load_outcome(root)  # from the cached parses and the last valid load
        fresh = tmp_path / f"fresh-{step}"  # a path never loaded: nothing cached for it
        fresh.mkdir()
        for name, text in texts.items():
            (fresh / name).write_text(text)
        assert got == _load_outcome(fresh), step
        outcomes[isinstance(got[0], dict)] += 1
        if not isinstance(got[0], dict) and rng.random() < 0.7:
            texts = dict(valid)  # back to a valid board, mostly
        elif isinstance(got[0], dict):
            valid = dict(texts)
    assert outcomes[True] > 60 and outcomes[False] > 60
