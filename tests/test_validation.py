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
