"""Safe writes: atomic, mode and line endings kept, one writer, never over a hand edit."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from kanban.errors import KanbanError
from kanban.model import Column
from kanban.store import board_lock, load_board, update


def test_hand_edit_during_update_is_reread_not_overwritten(tmp_path):
    todo = tmp_path / "TODO.md"
    todo.write_text("# TODO\n\n## TASK-1: a\n")
    calls = []

    def change(board):
        calls.append(1)
        if len(calls) == 1:  # a person saves the file between our read and our write
            todo.write_text("# TODO\n\nA note the person wrote.\n\n## TASK-1: a\n\n## TASK-5: by hand\n")
        board.add("from kanban", {})

    update(tmp_path, change)
    text = todo.read_text()
    assert len(calls) == 2
    assert "A note the person wrote." in text and "## TASK-5: by hand" in text
    assert "## TASK-6: from kanban" in text


def test_update_gives_up_with_clear_error_when_file_never_settles(tmp_path):
    todo = tmp_path / "TODO.md"
    todo.write_text("## TASK-1: a\n")
    n = [0]

    def change(board):
        n[0] += 1
        todo.write_text(f"## TASK-1: a\n\nedit {n[0]}\n")
        board.add("x", {})

    with pytest.raises(KanbanError, match="kept changing"):
        update(tmp_path, change, attempts=3)
    assert "TASK-2" not in todo.read_text()


def test_write_keeps_mode_and_crlf(tmp_path):
    todo = tmp_path / "TODO.md"
    todo.write_bytes(b"# T\r\n\r\n## TASK-1: a\r\n")
    os.chmod(todo, 0o640)
    update(tmp_path, lambda b: b.add("b", {"priority": "2"}))
    assert stat.S_IMODE(todo.stat().st_mode) == 0o640
    assert todo.read_bytes() == b"# T\r\n\r\n## TASK-1: a\r\n\r\n## TASK-2: b\r\npriority: 2\r\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".kanban-tmp")]


def test_move_writes_target_before_source(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    update(tmp_path, lambda b: b.move("TASK-1", Column.IN_PROGRESS))
    board = load_board(tmp_path)
    assert [t.column for t in board.tasks()] == [Column.IN_PROGRESS]
    assert (tmp_path / "TODO.md").read_text() == ""


def test_invalid_result_is_never_written(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")

    def change(board):
        board.touch("TASK-1").set_meta("depends", "TASK-1")

    with pytest.raises(KanbanError, match="depends on itself"):
        update(tmp_path, change)
    assert (tmp_path / "TODO.md").read_text() == "## TASK-1: a\n"


def _hold_lock(root: str, ready, release) -> None:
    with board_lock(Path(root)):
        ready.set()
        release.wait(10)


def test_one_writer_at_a_time(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(KanbanError, match="another kanban command is writing"):
            with board_lock(tmp_path, timeout=0.2):
                pass
    finally:
        release.set()
        holder.join(10)
    with board_lock(tmp_path, timeout=1):
        pass


def test_new_heading_gets_next_free_id_counting_changelog(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-2: a\n\n## Fix: the login bug\n")
    (tmp_path / "CHANGELOG.md").write_text("## [Unreleased]\n### Changed\n- TASK-9: merged earlier\n")
    board = load_board(tmp_path)
    assert [e.title for e in board.new_entries()] == ["Fix: the login bug"]
    update(tmp_path, lambda b: None)  # no write of TODO.md: nothing changes
    assert "## Fix: the login bug" in (tmp_path / "TODO.md").read_text()
    update(tmp_path, lambda b: b.touch("TASK-2"))
    assert (tmp_path / "TODO.md").read_text() == "## TASK-2: a\n\n## TASK-10: Fix: the login bug\n"
