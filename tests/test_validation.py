"""Every validation error: one clear line naming file and line, exit 2, and no byte changed.

The cases run the real entry point in this process (conftest.run_inproc); two go through a real
`python -m kanban` (run_cli) so that the process boundary stays tested: exit 2
(test_board_file_that_is_a_directory) and exit 0 (test_hostile_heading_text_is_never_an_id).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_cli, run_inproc, snapshot

CASES = [
    # (name, {file: text}, expected fragments of the single error line)
    ("duplicate-id", {"TODO.md": "## TASK-1: a\n", "REVIEW.md": "# R\n\n## TASK-1: b\n"},
     ["REVIEW.md:3:", "TASK-1 is used twice", "also at TODO.md:1"]),
    ("depends-dotdot", {"TODO.md": "## TASK-1: a\ndepends: ../etc\n"},
     ["TODO.md:2:", "'../etc'", "not a task ID"]),
    ("depends-slash", {"TODO.md": "## TASK-1: a\ndepends: TASK-2/x\n\n## TASK-2: b\n"},
     ["TODO.md:2:", "'TASK-2/x'", "not a task ID"]),
    ("depends-space", {"TODO.md": "## TASK-1: a\ndepends: TASK 2\n"}, ["TODO.md:2:", "'TASK 2'"]),
    ("depends-shell", {"TODO.md": "## TASK-1: a\ndepends: TASK-2;rm -rf ~\n"}, ["TODO.md:2:", "not a task ID"]),
    ("depends-dash", {"TODO.md": "## TASK-1: a\ndepends: -rf\n"}, ["TODO.md:2:", "'-rf'"]),
    ("depends-lookalike", {"TODO.md": "## TASK-1: a\ndepends: TАSK-2\n\n## TASK-2: b\n"},  # Cyrillic А
     ["TODO.md:2:", "not a task ID"]),
    ("depends-unknown", {"TODO.md": "## TASK-1: a\ndepends: TASK-9\n"},
     ["TODO.md:2:", "TASK-9", "on no board file"]),
    ("depends-self", {"TODO.md": "## TASK-1: a\ndepends: TASK-1\n"}, ["TODO.md:2:", "depends on itself"]),
    ("cycle", {"TODO.md": "## TASK-1: a\ndepends: TASK-2\n\n## TASK-2: b\ndepends: TASK-3\n",
               "REVIEW.md": "## TASK-3: c\ndepends: TASK-1\n"},
     ["dependency cycle", "TASK-1 -> TASK-2 -> TASK-3 -> TASK-1"]),
    ("priority-word", {"TODO.md": "# T\n\n## TASK-1: a\npriority: high\n"},
     ["TODO.md:4:", "priority of TASK-1", "'high'"]),
    ("priority-zero", {"TODO.md": "## TASK-1: a\npriority: 0\n"}, ["TODO.md:2:", "priority"]),
    ("files-outside", {"TODO.md": "## TASK-1: a\nfiles: ../../etc/passwd\n"}, ["TODO.md:2:", "not a path inside"]),
    ("files-absolute", {"TODO.md": "## TASK-1: a\nfiles: /etc/passwd\n"}, ["TODO.md:2:", "not a path inside"]),
    ("invalid-utf8", {"TODO.md": b"# ok\n\n## TASK-1: caf\xe9\n"}, ["TODO.md:3:", "not valid UTF-8"]),
    ("nul-byte", {"REVIEW.md": b"## TASK-1: a\n\x00\x01binary"}, ["REVIEW.md:2:", "NUL byte"]),
]


def _write(root: Path, files: dict) -> None:
    for name, text in files.items():
        data = text.encode() if isinstance(text, str) else text
        (root / name).write_bytes(data)


@pytest.mark.parametrize("name,files,fragments", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("add", "New task")])
def test_bad_board_is_one_line_exit_2_nothing_written(tmp_path, name, files, fragments, command):
    _write(tmp_path, files)
    before = snapshot(tmp_path)
    proc = run_inproc(tmp_path, *command)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in proc.stderr
    if command[0] == "add":
        assert proc.stdout == ""
    elif command == ("status", "--json") and proc.stdout:  # a board that parses is shown under its error
        import json

        data = json.loads(proc.stdout)
        assert data["error"] and data["error"] in lines[0] and "columns" in data
    after = snapshot(tmp_path)
    after.pop(".kanban/board.lock", None)  # the lock file is not board state
    assert after == before


def test_board_file_that_is_a_directory(tmp_path):
    (tmp_path / "TESTING.md").mkdir()
    proc = run_cli(tmp_path, "status")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: TESTING.md: is a directory, not a file; remove or rename it"


def test_board_file_symlink_outside_repository(tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("## TASK-1: a\n")
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(outside, root / "TODO.md")
    proc = run_inproc(root, "add", "x")
    assert proc.returncode == 2
    assert "TODO.md: is a symbolic link to" in proc.stderr and "outside the repository" in proc.stderr
    assert outside.read_text() == "## TASK-1: a\n"


def test_symlink_inside_repository_is_followed_and_kept(tmp_path):
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "todo.md").write_text("## TASK-1: a\n")
    os.symlink("board/todo.md", tmp_path / "TODO.md")
    run_inproc(tmp_path, "add", "second", check_code=0)
    assert (tmp_path / "TODO.md").is_symlink()
    assert "## TASK-2: second" in (tmp_path / "board" / "todo.md").read_text()


@pytest.mark.parametrize("bad", ["../x", "a b", "TASK-1;ls", "-rf", "TАSK-1", "TASK-", "x" * 70 + "-1"])
def test_add_rejects_bad_depends_argument(tmp_path, bad):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    before = snapshot(tmp_path)
    proc = run_inproc(tmp_path, "add", "new", "--depends", bad)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "not a task ID" in proc.stderr
    assert snapshot(tmp_path) == before


def test_add_rejects_unknown_depends(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    proc = run_inproc(tmp_path, "add", "new", "--depends", "TASK-7")
    assert proc.returncode == 2 and "TASK-7, which is not on the board" in proc.stderr
    assert (tmp_path / "TODO.md").read_text() == "## TASK-1: a\n"


@pytest.mark.parametrize("title", ["", "   ", "# heading", "two\nlines"])
def test_add_rejects_bad_titles(tmp_path, title):
    proc = run_inproc(tmp_path, "add", title)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert not (tmp_path / "TODO.md").exists()


def test_hostile_heading_text_is_never_an_id(tmp_path):
    (tmp_path / "TODO.md").write_text("## ../../etc: title\n\n## TASK-1;rm: x\n\n## TАSK-3: lookalike\n")
    run_cli(tmp_path, "add", "ok", check_code=0)
    text = (tmp_path / "TODO.md").read_text()
    assert "## TASK-1: ../../etc: title" in text
    assert "## TASK-2: TASK-1;rm: x" in text
    assert "## TASK-3: TАSK-3: lookalike" in text
    assert "## TASK-4: ok" in text


# -- validating only what an update changed --------------------------------------------------
# A board loaded valid remembers it (Board.valid_base), and validate then checks only what
# changed since. Whatever the change, it must find exactly what the full check finds, entry by
# entry: the same first problem, in the same words, at the same file and line, or none.

_BOARD = {
    "TODO.md": "# Todo\n\n## TASK-1: a\npriority: 2\n\n## TASK-2: b\ndepends: TASK-1\n\n## new heading\n"
               "depends: TASK-2\n\n## TASK-3: c\ndepends: TASK-1, TASK-2\nfiles: src/a.py\n\n"
               "## TASK-4: d\ndepends: TASK-0\n",
    "IN_PROGRESS.md": "# In progress\n\n## TASK-5: e\ndepends: TASK-3\n\n## TASK-6: f\n",
    "REVIEW.md": "## TASK-7: g\ndepends: TASK-6\n",
    "TESTING.md": "## TASK-8: h\n",
    "CHANGELOG.md": "# Changelog\n\n- TASK-0: bootstrap\n- TASK-9: old\n",
}
_IDS = [f"TASK-{n}" for n in range(12)]


def _random_change(board, rng) -> None:
    from kanban.entry import Entry
    from kanban.model import BOARD_COLUMNS

    located = list(board.located())
    f, entry = rng.choice(located)
    tid = entry.task_id
    kind = rng.randrange(12)
    if kind == 0 and tid:
        board.move(tid, rng.choice(BOARD_COLUMNS))
    elif kind == 1:
        deps = rng.sample(_IDS + ["TASK-99", "bad/id", tid or "TASK-1"], rng.randint(0, 3))
        entry.set_meta("depends", ", ".join(deps) if deps else None)
    elif kind == 2:
        entry.set_meta("priority", rng.choice(["0", "1", "high", "3"]))
    elif kind == 3:
        entry.set_id(rng.choice(_IDS))
    elif kind == 4:
        entry.add_marker("RETRY")
    elif kind == 5:
        f.remove(entry)
    elif kind == 6:
        board.add("added", {"depends": rng.choice(["", "TASK-1", "TASK-98", "TASK-8"])})
    elif kind == 7:
        (board.done_ids.discard if rng.random() < 0.7 else board.done_ids.add)(rng.choice(["TASK-0", "TASK-9"]))
    elif kind == 8:  # past the edit methods: the lines replaced wholesale
        entry.lines = [entry.lines[0], f"depends: {rng.choice(_IDS + ['TASK-97'])}\n"]
    elif kind == 9:  # the same entry object twice
        board.files[rng.choice(BOARD_COLUMNS)].blocks.insert(0, entry)
    elif kind == 10:
        entry.convert_newlines("\r\n")
    elif kind == 11:
        f.blocks.insert(rng.randrange(len(f.blocks) + 1), Entry([f"## {rng.choice(_IDS)}: new\n",
                                                                 f"depends: {rng.choice(_IDS)}\n"], 1))


def _outcome(check, board):
    from kanban.errors import KanbanError

    try:
        check(board)
    except KanbanError as exc:
        return str(exc), exc.file, exc.line
    return None


def test_validating_what_changed_finds_what_the_full_check_finds(tmp_path):
    import random

    from kanban import board as board_module
    from kanban.store import load_board

    _write(tmp_path, _BOARD)
    rng = random.Random(12)
    found = {True: 0, False: 0}
    for _ in range(600):
        board = load_board(tmp_path)
        assert board.valid_base is not None
        for _ in range(rng.randint(1, 4)):
            _random_change(board, rng)
        want = _outcome(board_module._validate_in_order, board)
        assert _outcome(board_module.validate, board) == want
        found[want is None] += 1
        board.valid_base = None  # the full check by lists, too
        assert _outcome(board_module.validate, board) == want
    assert found[True] > 100 and found[False] > 100  # both kinds of board were tried


def test_an_update_that_breaks_the_board_names_the_problem(tmp_path):
    from kanban.errors import KanbanError
    from kanban.store import update

    _write(tmp_path, _BOARD)
    before = snapshot(tmp_path)
    for change, words in [
        (lambda b: b.touch("TASK-1").set_meta("depends", "TASK-5"), "dependency cycle TASK-1 -> TASK-5"),
        (lambda b: b.touch("TASK-8").set_id("TASK-6"), "task ID TASK-6 is used twice"),
        (lambda b: b.touch("TASK-6").set_meta("depends", "TASK-42"), "depends names TASK-42"),
        (lambda b: b.done_ids.discard("TASK-0"), "depends names TASK-0"),
        (lambda b: b.files[b.find("TASK-2")[0].column].remove(b.find("TASK-1")[1]), "depends names TASK-1"),
    ]:
        with pytest.raises(KanbanError) as err:
            update(tmp_path, change)
        assert words in str(err.value)
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".kanban")} == before
