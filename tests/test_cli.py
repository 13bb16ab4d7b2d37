"""The commands as a user runs them: init, add, status, --help."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import git, run_cli, snapshot
from typer.testing import CliRunner

from kanban.cli import app

BOARD = ["TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md"]


def test_help_lists_only_working_commands():
    out = subprocess.run([sys.executable, "-m", "kanban", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("init", "add", "status", "preflight"):
        assert command in out


def test_cli_imports_stay_light():
    code = "import sys, kanban.cli; print(','.join(m for m in ('git', 'mistune', 'rich.table') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_init_creates_board_config_prompts_and_excludes(repo):
    proc = run_cli(repo, "init", check_code=0)
    for name in BOARD + ["kanban.toml"]:
        assert (repo / name).is_file(), name
        assert f"created {name}" in proc.stdout
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert ".worktrees/\n" in exclude and ".kanban/\n" in exclude
    assert "## [Unreleased]" in (repo / "CHANGELOG.md").read_text()
    run_cli(repo, "status", check_code=0)


def test_init_is_idempotent_and_never_overwrites(repo):
    (repo / "TODO.md").write_text("# mine\n\n## TASK-1: keep me\n")
    run_cli(repo, "init", check_code=0)
    before = snapshot(repo)
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    proc = run_cli(repo, "init", check_code=0)
    assert "nothing to do" in proc.stdout
    assert snapshot(repo) == before
    assert (repo / ".git" / "info" / "exclude").read_text() == exclude
    assert (repo / "TODO.md").read_text() == "# mine\n\n## TASK-1: keep me\n"


def test_init_respects_tool_kanban_in_pyproject(repo):
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.kanban]\npool_size = 2\n")
    run_cli(repo, "init", check_code=0)
    assert not (repo / "kanban.toml").exists()


def test_add_then_status_json(repo):
    run_cli(repo, "init", check_code=0)
    out = json.loads(run_cli(repo, "add", "First", "--priority", "2", "--files", "src/a.py, src/b.py",
                             "--json", check_code=0).stdout)
    assert out == {"id": "TASK-1", "title": "First"}
    run_cli(repo, "add", "Second", "--depends", "TASK-1", "--body", "**Problem:** x", check_code=0)
    data = json.loads(run_cli(repo, "status", "--json", check_code=0).stdout)
    assert data["schema"] == 1
    todo = data["columns"]["TODO"]
    assert todo["count"] == 2 and todo["file"] == "TODO.md"
    first, second = todo["tasks"]
    assert first["id"] == "TASK-1" and first["priority"] == 2 and first["files"] == ["src/a.py", "src/b.py"]
    assert second["depends"] == ["TASK-1"] and second["blocked_by"] == ["waiting on TASK-1"]
    assert set(data["columns"]) == {"TODO", "IN_PROGRESS", "REVIEW", "TESTING"}
    assert data["queue"] == [] and data["escalated"] == [] and data["agents"] == []
    text = (repo / "TODO.md").read_text()
    assert "## TASK-2: Second\ndepends: TASK-1\n\n**Problem:** x\n" in text


def test_status_shows_new_headings_markers_queue_and_escalations(tmp_path):
    (tmp_path / "TODO.md").write_text("## Write docs\n\n## TASK-1: a\n")
    (tmp_path / "IN_PROGRESS.md").write_text("## [ESCALATED] TASK-2: stuck\n")
    (tmp_path / "TESTING.md").write_text("## TASK-3: tested\nstatus: ready to merge\n")
    before = snapshot(tmp_path)
    data = json.loads(run_cli(tmp_path, "status", "--json", check_code=0).stdout)
    assert data["new"] == [{"title": "Write docs", "file": "TODO.md", "line": 1}]
    assert data["queue"] == ["TASK-3"] and data["escalated"] == ["TASK-2"]
    human = run_cli(tmp_path, "status", check_code=0).stdout
    for fragment in ("new Write docs", "[ESCALATED]", "TASK-3", "Ready to merge: TASK-3", "Escalated"):
        assert fragment in human
    assert snapshot(tmp_path) == before  # status never writes


def test_status_on_empty_directory(tmp_path):
    res = CliRunner().invoke(app, ["-C", str(tmp_path), "status", "--json"])
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert all(c["count"] == 0 for c in data["columns"].values())


def test_status_truncates_long_columns(tmp_path):
    (tmp_path / "TODO.md").write_text("".join(f"## TASK-{i}: t{i}\n\n" for i in range(1, 31)))
    out = run_cli(tmp_path, "status", check_code=0).stdout
    assert "and 10 more (--all)" in out
    assert "and 10 more" not in run_cli(tmp_path, "status", "--all", check_code=0).stdout


def test_unknown_option_is_usage_error(tmp_path):
    proc = run_cli(tmp_path, "status", "--bogus")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_runs_from_a_subdirectory(repo):
    run_cli(repo, "init", check_code=0)
    (repo / "sub").mkdir()
    proc = subprocess.run([sys.executable, "-m", "kanban", "add", "from sub"], cwd=repo / "sub",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "## TASK-1: from sub" in (repo / "TODO.md").read_text()
    git(repo, "status")


def test_status_stacks_columns_in_a_narrow_terminal(tmp_path, monkeypatch):
    (tmp_path / "TODO.md").write_text("## TASK-1: first task\npriority: 1\n")
    (tmp_path / "REVIEW.md").write_text("## [RETRY] TASK-2: second\n")
    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli(tmp_path, "status", check_code=0).stdout
    assert "TODO (1)\n  TASK-1 p1 first task - new; starts next\n" in out
    assert "REVIEW (1)\n  TASK-2 p3 [RETRY] second - reviewer starts next\n" in out
    assert "┃" not in out and "None" not in out
