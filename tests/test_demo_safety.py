"""`kanban demo --dir DIR` builds only in a new or empty directory, never in someone's work.

Pointed at an existing repository it used to replace kanban.toml and TODO.md,
commit the demo onto main and lose the person's escalated tasks. Anything but a
new or empty directory is refused: one line, exit 2, not a byte changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git

from kanban.commands.demo import _claim_empty_dir
from kanban.errors import KanbanError


def _everything(root: Path) -> dict[str, bytes]:
    """Every file under root, .git included, with its bytes (a link as its target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            out[key] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            out[key] = path.read_bytes()
        else:
            out[key] = b"<dir>"
    return out


def _demo(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanban", "demo", "--dir", str(where)], check=False,
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())


def _refused(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "building a demo" not in proc.stdout
    return lines[0]


def test_demo_refuses_an_existing_repository_and_changes_nothing(repo):
    (repo / "kanban.toml").write_text('main_branch = "main"\n[agent]\npreset = "claude"\n')
    (repo / "TODO.md").write_text("# TODO\n\n## TASK-1: mine\npriority: 1\n\nMy own task.\n")
    (repo / "IN_PROGRESS.md").write_text("# In progress\n\n## [ESCALATED] TASK-2: stuck\n\nNeeds a person.\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('mine')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "my work")
    (repo / "notes.txt").write_text("uncommitted\n")
    head = git(repo, "rev-parse", "HEAD")
    refs = git(repo, "for-each-ref")
    before = _everything(repo)
    line = _refused(_demo(repo))
    assert str(repo) in line and "git repository" in line and "new or empty directory" in line
    assert _everything(repo) == before
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "for-each-ref") == refs


def test_demo_refuses_a_directory_with_files(tmp_path):
    where = tmp_path / "stuff"
    where.mkdir()
    (where / ".hidden").write_text("keep\n")
    before = _everything(where)
    line = _refused(_demo(where))
    assert "not empty" in line
    assert _everything(where) == before


def test_demo_refuses_a_file(tmp_path):
    where = tmp_path / "file.txt"
    where.write_text("keep\n")
    assert "not a directory" in _refused(_demo(where))
    assert where.read_text() == "keep\n"


def test_demo_takes_a_new_or_an_empty_directory(tmp_path):
    _claim_empty_dir(tmp_path / "new" / "nested")
    assert (tmp_path / "new" / "nested").is_dir()
    (tmp_path / "empty").mkdir()
    _claim_empty_dir(tmp_path / "empty")
    (tmp_path / "empty" / "x").write_text("")
    with pytest.raises(KanbanError, match="not empty"):
        _claim_empty_dir(tmp_path / "empty")


# --- the demo explains itself, shows a rendered report, and cleans up after itself ------------------


@pytest.mark.heavy
def test_demo_says_what_it_shows_renders_its_report_and_removes_its_temp_dir(tmp_path):
    from kanban.commands.demo import DEMO_TASKS

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run([sys.executable, "-m", "kanban", "demo"], check=False, capture_output=True, text=True,
                          timeout=180, env={**os.environ, "TMPDIR": str(tmp)}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = proc.stdout
    intro = out[:out.index("building the demo repository in ")]
    assert intro.startswith("kanban demo: eight sample tasks")
    for n in range(1, 9):
        assert f"TASK-{n}" in DEMO_TASKS and (f"TASK-{n} " in intro or f"TASK-{n}," in intro), n
    for shown in ("dependency chain", "fails", "3s timeout", "the reviewer", "rejects its first", "tester fails",
                  "never runs beside"):
        assert shown in intro, shown
    assert len(intro.strip().splitlines()) <= 12
    # The report is rendered for a terminal: its headings and tables, no markdown syntax.
    report = out[out.index("kanban report"):]
    for heading in ("Totals", "Time per role", "Failures", "Merge queue"):
        assert re.search(rf"^\s*{heading}\s*$", report, re.M), heading
    raw = [ln for ln in report.splitlines()
           if re.match(r"\s*(#{1,6} |\|.*\||```|- \S)", ln) or "**" in ln]
    assert raw == [], raw
    # The temporary directory is gone, and the output says so.
    assert os.listdir(tmp) == []
    assert "the demo repository was removed; 'kanban demo --keep' keeps it" in out
