"""`kanban status` reads like a plan: pick order, what each task waits for, why it was escalated,
what it cost; a board that breaks a rule is still shown (and `preflight` still runs every check)."""

from __future__ import annotations

import json
from pathlib import Path

from agents_kit import task_md
from conftest import git, run_cli, snapshot

from kanban.history import History


def _status(root: Path, *args: str, code: int = 0) -> dict:
    return json.loads(run_cli(root, "status", "--json", *args, check_code=code).stdout)


def _rows(data: dict, column: str) -> dict[str, dict]:
    return {row["id"]: row for row in data["columns"][column]["tasks"]}


def _order(data: dict, column: str) -> list[str]:
    return [row["id"] for row in data["columns"][column]["tasks"]]


def _board(root: Path, **files: str) -> None:
    for name, text in files.items():
        (root / f"{name}.md").write_text(text)


def _event(root: Path, task: str, kind: str = "picked") -> None:
    with History(root) as history:
        history.event(task, kind, "TODO", "IN_PROGRESS")


# --- the order of each column ------------------------------------------------------------------


def test_each_column_lists_its_tasks_in_the_order_the_scheduler_takes_them(tmp_path, monkeypatch):
    """Priority first, then place in the file; escalated tasks last. The same order as the scheduler's."""
    from kanban.scheduler import plan
    from kanban.store import load_board

    _board(tmp_path,
           TODO=task_md("TASK-1", priority=3) + task_md("TASK-2", priority=1) + "## [ESCALATED] TASK-3: stuck\n"
           "priority: 1\n\n" + task_md("TASK-4", priority=2) + task_md("TASK-5", priority=1),
           REVIEW=task_md("TASK-6") + task_md("TASK-7", priority=2))
    data = _status(tmp_path)
    assert _order(data, "TODO") == ["TASK-2", "TASK-5", "TASK-4", "TASK-1", "TASK-3"]
    assert _order(data, "REVIEW") == ["TASK-7", "TASK-6"]
    # the scheduler's own picks, with room for every task, come in the same order
    board = load_board(tmp_path)
    picks = [s.task_id for s in plan(board.tasks(), done=set(), running={}, pool_size=99) if s.pick]
    assert picks == [t for t in _order(data, "TODO") if t != "TASK-3"]
    assert data["columns"]["TODO"]["count"] == 5

    monkeypatch.setenv("COLUMNS", "80")
    human = run_cli(tmp_path, "status", check_code=0).stdout
    shown = [line.split()[0] for line in human.split("IN_PROGRESS (")[0].splitlines()[1:]]
    assert shown == ["TASK-2", "TASK-5", "TASK-4", "TASK-1", "TASK-3"]


def test_the_header_counts_exactly_the_lines_shown(tmp_path, monkeypatch):
    """New headings count (they are shown), and a cut column says how many of how many."""
    _board(tmp_path,
           TODO="## Write docs\n\n## Another new one\n\n" + "".join(task_md(f"TASK-{i}") for i in range(1, 26)))

    def todo_lines(out: str) -> list[str]:  # the stacked view: one line per task, wrapped ones indented deeper
        return [line for line in out.split("IN_PROGRESS (")[0].splitlines()[1:] if not line.startswith("    ")]

    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli(tmp_path, "status", check_code=0).stdout
    assert out.startswith("TODO (20 of 27)\n") and todo_lines(out)[-1] == "  ... and 7 more (--all)"
    assert len(todo_lines(out)) == 20 + 1
    full = run_cli(tmp_path, "status", "--all", check_code=0).stdout
    assert full.startswith("TODO (27)\n") and "more (--all)" not in full and len(todo_lines(full)) == 27
    monkeypatch.setenv("COLUMNS", "140")  # the table view: the same counts in its header
    out = run_cli(tmp_path, "status", check_code=0).stdout
    assert "TODO (20 of 27)" in out and "and 7 more (--all)" in out
    assert "TODO (27)" in run_cli(tmp_path, "status", "--all", check_code=0).stdout


# --- what each task waits for ------------------------------------------------------------------


def test_new_tasks_are_marked_until_kanban_has_seen_them(tmp_path, monkeypatch):
    _board(tmp_path, TODO="## Fresh heading\n\n" + task_md("TASK-1") + task_md("TASK-2"))
    data = _status(tmp_path)
    assert _rows(data, "TODO")["TASK-1"]["new"] and _rows(data, "TODO")["TASK-2"]["new"]
    _event(tmp_path, "TASK-1", "budget")  # anything in the history: kanban has seen it
    data = _status(tmp_path)
    rows = _rows(data, "TODO")
    assert not rows["TASK-1"]["new"] and rows["TASK-2"]["new"]
    assert rows["TASK-2"]["plan"].startswith("new")
    assert data["new"] == [{"title": "Fresh heading", "file": "TODO.md", "line": 1}]
    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli(tmp_path, "status", check_code=0).stdout
    assert "  new Fresh heading (line 1)\n" in out
    assert "TASK-1 p3 Work on TASK-1 - starts next\n" in out
    assert "TASK-2 p3 Work on TASK-2 - new; starts next\n" in out


def test_blocked_tasks_say_by_what(tmp_path, monkeypatch):
    (tmp_path / "kanban.toml").write_text("pool_size = 3\n")
    _board(tmp_path,
           TODO=task_md("TASK-1", depends="TASK-5") + task_md("TASK-2", files="src/cache.py")
           + task_md("TASK-3", depends="TASK-6") + task_md("TASK-4") + task_md("TASK-8"),
           IN_PROGRESS=task_md("TASK-5", files="src/") + "## [ESCALATED] TASK-6: stuck\n",
           REVIEW=task_md("TASK-7"))
    data = _status(tmp_path)
    todo = _rows(data, "TODO")
    assert [w["text"] for w in todo["TASK-1"]["waits"]] == ["waits for TASK-5"]
    assert todo["TASK-1"]["waits"][0] | {"kind": "depends", "on": "TASK-5"} == todo["TASK-1"]["waits"][0]
    assert [w["text"] for w in todo["TASK-2"]["waits"]] == ["files held by TASK-5"]
    assert todo["TASK-2"]["waits"][0]["kind"] == "files"
    assert [w["text"] for w in todo["TASK-3"]["waits"]] == ["waits for TASK-6 (escalated)"]
    # pool of 3: TASK-7's reviewer and TASK-5's task agent first (finishing beats starting), then TASK-4
    assert data["pool"] == {"size": 3, "busy": 0, "starting": ["TASK-7", "TASK-5", "TASK-4"]}
    assert todo["TASK-4"]["next"] == "task" and todo["TASK-4"]["plan"] == "new; starts next"
    assert [w["kind"] for w in todo["TASK-8"]["waits"]] == ["slot"]
    assert todo["TASK-8"]["plan"] == "new; waits for a free slot"
    assert _rows(data, "REVIEW")["TASK-7"]["plan"] == "reviewer starts next"
    assert todo["TASK-1"]["blocked_by"] == ["waiting on TASK-5"]  # the key scripts already read, kept
    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli(tmp_path, "status", check_code=0).stdout
    for line in ("TASK-1 p3 Work on TASK-1 - new; waits for TASK-5", "TASK-2 p3 Work on TASK-2 - new; files held by",
                 "TASK-8 p3 Work on TASK-8 - new; waits for a free slot",
                 "Pool: 0 of 3 slots busy; next tick starts TASK-7, TASK-5, TASK-4"):
        assert line in out, out


def test_a_pick_that_would_take_the_files_of_an_earlier_pick_says_so(tmp_path):
    _board(tmp_path, TODO=task_md("TASK-1", files="a.py", priority=1) + task_md("TASK-2", files="a.py"))
    todo = _rows(_status(tmp_path), "TODO")
    assert todo["TASK-1"]["next"] == "task"
    assert [w["text"] for w in todo["TASK-2"]["waits"]] == ["files held by TASK-1, which starts next"]


def test_escalated_tasks_say_why_from_their_last_note(tmp_path, monkeypatch):
    _board(tmp_path, IN_PROGRESS=(
        "## [ESCALATED] TASK-1: stuck\n\n### Notes\n\n"
        "- 2026-01-01 10:00 UTC task agent attempt 1 failed: exit status 1\n"
        "- 2026-01-01 11:00 UTC reviewer failed: no verdict\n  Report:\n  nothing useful\n"
        "\n## [ESCALATED] TASK-2: no notes at all\n"))
    data = _status(tmp_path)
    rows = _rows(data, "IN_PROGRESS")
    assert rows["TASK-1"]["escalation"] == "2026-01-01 11:00 UTC reviewer failed: no verdict"
    assert rows["TASK-1"]["plan"] == "escalated: reviewer failed: no verdict"
    assert rows["TASK-2"]["plan"] == "escalated: waiting for a person"
    assert rows["TASK-1"]["next"] is None and data["escalated"] == ["TASK-1", "TASK-2"]
    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli(tmp_path, "status", check_code=0).stdout
    assert "  TASK-1 p3 [ESCALATED] stuck - escalated: reviewer failed: no verdict\n" in out


def test_cost_per_task_once_known_and_a_budget_that_holds_a_task(tmp_path, monkeypatch):
    _board(tmp_path, TODO=task_md("TASK-1") + task_md("TASK-2"))
    with History(tmp_path) as history:
        run = history.start_run(task="TASK-1", role="task", attempt=1, run_dir=str(tmp_path / "r1"),
                                log=str(tmp_path / "r1.log"), timeout=60, head_before=None)
        history.finish_run(run, outcome="failed", result={"exit_code": 1}, cost_usd=0.42, tokens=1200)
    data = _status(tmp_path)
    rows = _rows(data, "TODO")
    assert rows["TASK-1"]["cost_usd"] == 0.42 and rows["TASK-2"]["cost_usd"] is None
    monkeypatch.setenv("COLUMNS", "80")
    assert "TASK-1 p3 Work on TASK-1 $0.42 - starts next" in run_cli(tmp_path, "status", check_code=0).stdout

    (tmp_path / "kanban.toml").write_text('[budget]\ntask = "$0.40"\n')
    rows = _rows(_status(tmp_path), "TODO")
    assert rows["TASK-1"]["next"] is None
    assert rows["TASK-1"]["waits"] == [{"kind": "budget", "on": None,
                                        "text": "budget reached: task TASK-1 spent $0.42 of $0.40"}]
    assert rows["TASK-2"]["next"] == "task"


def test_a_running_agent_is_shown_on_its_task(kit):
    p = kit(task_md("TASK-1", files="a.py") + task_md("TASK-2", files="a.py"), timeout="30s",
            rules=[{"task": "TASK-1", "role": "task", "steps": [["sleep", 20]]}])
    run_cli(p.root, "tick", check_code=0)
    data = _status(p.root)
    row = _rows(data, "IN_PROGRESS")["TASK-1"]
    assert row["agent"]["role"] == "task" and row["agent"]["attempt"] == 1
    assert row["plan"].startswith("task agent running, attempt 1, ") and row["plan"].endswith(" of 30s")
    assert [w["text"] for w in _rows(data, "TODO")["TASK-2"]["waits"]] == ["files held by TASK-1"]
    assert data["pool"]["busy"] == 1


# --- a board that breaks a rule ------------------------------------------------------------------


def test_a_broken_depends_still_shows_the_board_under_the_error(tmp_path, monkeypatch):
    _board(tmp_path, TODO=task_md("TASK-1", depends="TASK-2") + task_md("TASK-2", depends="TASK-1")
           + task_md("TASK-3", depends="TASK-99"))
    before = snapshot(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    proc = run_cli(tmp_path, "status")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: TODO.md:")
    assert "TASK-99" in proc.stderr or "cycle" in proc.stderr
    assert ("TODO (3)" in proc.stdout
            and "TASK-3 p3 Work on TASK-3 - new; waits for TASK-99 (on no board)" in proc.stdout)
    data = _status(tmp_path, code=2)
    assert data["error"] == proc.stderr.removeprefix("error: ").strip()
    assert _order(data, "TODO") == ["TASK-1", "TASK-2", "TASK-3"]

    _board(tmp_path, TODO=task_md("TASK-1", depends="TASK-2") + task_md("TASK-2", depends="TASK-1"))
    proc = run_cli(tmp_path, "status")
    assert proc.returncode == 2 and "dependency cycle TASK-1 -> TASK-2 -> TASK-1" in proc.stderr
    assert "waits for TASK-2" in proc.stdout and "waits for TASK-1" in proc.stdout
    assert _status(tmp_path, code=2)["error"].startswith("TODO.md:2: dependency cycle")
    _board(tmp_path, TODO=task_md("TASK-1"))
    assert _status(tmp_path)["error"] is None
    (tmp_path / "TODO.md").write_bytes(before["TODO.md"])
    assert snapshot(tmp_path) == before  # status never writes, broken board or not


def test_preflight_runs_every_check_with_the_board_line_failed(repo):
    run_cli(repo, "init", check_code=0)
    (repo / "kanban.toml").write_text('[agent]\npreset = "demo"\n')
    (repo / "TODO.md").write_text(task_md("TASK-1", depends="TASK-42"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    proc = run_cli(repo, "preflight")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FAIL  board: TODO.md:2: depends names TASK-42" in proc.stdout
    for check in ("pass  git:", "pass  main branch:", "pass  clean checkout:", "pass  capacity:", "1 failed"):
        assert check in proc.stdout, proc.stdout
    data = json.loads(run_cli(repo, "preflight", "--json", check_code=2).stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert not data["ok"] and not checks["board"]["ok"] and checks["main branch"]["ok"]

    (repo / "TODO.md").write_text(task_md("TASK-1") + "## New one\n")  # board edits leave the checkout clean
    proc = run_cli(repo, "preflight", check_code=0)
    assert "pass  board: 1 task(s) on the board, 1 new, 0 done" in proc.stdout


def test_status_keeps_working_for_scripts_without_a_config_or_history(tmp_path):
    """The summary of a bare board (bench/board_scale.py calls summarize like this)."""
    from kanban.commands.status import summarize
    from kanban.store import load_board

    _board(tmp_path, TODO=task_md("TASK-1") + task_md("TASK-2", depends="TASK-1"))
    summary = summarize(load_board(tmp_path), agents=[])
    rows = _rows(summary, "TODO")
    assert rows["TASK-1"]["plan"] == "new; starts next" and rows["TASK-2"]["plan"] == "new; waits for TASK-1"
    assert summary["pool"] == {"size": 6, "busy": 0, "starting": ["TASK-1"]}
