"""The history keeps a run reference the runner gives out and resolves, not a local path.

New rows hold `run_ref` (`local:` and the run directory relative to the repository) and no
run directory; rows of an older kanban (a `run_dir` column that every row had to fill, no
`run_ref`) still resolve, read-only before any writer migrated them and after.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from kanban import paths
from kanban.errors import KanbanError
from kanban.history import History
from kanban.runner import LocalRunner

# The two tables as kanban wrote them before run references.
OLD_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, task TEXT NOT NULL, role TEXT NOT NULL, attempt INTEGER NOT NULL,
    run_dir TEXT NOT NULL UNIQUE, log TEXT NOT NULL, pid INTEGER, pid_start INTEGER, head_before TEXT,
    timeout REAL NOT NULL, started REAL NOT NULL, ended REAL, exit_code INTEGER, signal INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0, stalled INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0,
    outcome TEXT, cost_usd REAL, tokens INTEGER, model TEXT, input_tokens INTEGER, output_tokens INTEGER,
    reason TEXT
);
CREATE INDEX runs_live ON runs (ended);
CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL NOT NULL, task TEXT NOT NULL, kind TEXT NOT NULL,
    source TEXT, target TEXT, detail TEXT);
CREATE TABLE verifications (id INTEGER PRIMARY KEY, tasks TEXT NOT NULL, sha TEXT NOT NULL, started REAL NOT NULL,
    ended REAL, exit_code INTEGER, timed_out INTEGER NOT NULL DEFAULT 0, outcome TEXT, how TEXT, log TEXT NOT NULL,
    try INTEGER NOT NULL DEFAULT 1, run_dir TEXT, base TEXT, head TEXT, worktree TEXT);
CREATE TABLE ports (task TEXT PRIMARY KEY, port INTEGER NOT NULL UNIQUE);
"""


def rows(root: Path, table: str) -> list[dict]:
    db = sqlite3.connect(paths.history_db(root))
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY id")]
    finally:
        db.close()


def old_history(root: Path) -> tuple[Path, Path]:
    """A history an older kanban wrote: one finished run and one verification, by run directory."""
    run_dir = paths.run_dir(root, "TASK-1", "task", 1).resolve()
    verify_dir = (paths.verify_runs_dir(root) / "check").resolve()
    for d in (run_dir, verify_dir):
        d.mkdir(parents=True)
    db = sqlite3.connect(paths.history_db(root))
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO runs (task, role, attempt, run_dir, log, pid, pid_start, timeout, started, ended, outcome)"
               " VALUES ('TASK-1', 'task', 1, ?, ?, 4242, 17, 60, 1.0, 2.0, 'ok')",
               (str(run_dir), str(run_dir / "agent.log")))
    db.execute("INSERT INTO verifications (tasks, sha, started, log, run_dir)"
               " VALUES ('TASK-1', 'abc', 1.0, 'v.log', ?)", (str(verify_dir),))
    db.execute("INSERT INTO verifications (tasks, sha, started, log) VALUES ('TASK-1', 'abd', 1.0, 'v2.log')")
    db.commit()
    db.close()
    return run_dir, verify_dir


def test_the_local_runner_gives_out_references_relative_to_the_repository(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path)
    run_dir = paths.run_dir(tmp_path, "TASK-1", "reviewer", 2)
    assert runner.ref(run_dir) == "local:.kanban/runs/TASK-1/reviewer-2"
    assert runner.resolve(runner.ref(run_dir)) == run_dir
    assert runner.ref(run_dir.resolve()) == "local:.kanban/runs/TASK-1/reviewer-2"  # the same run, however named
    assert runner.ref(Path("/elsewhere/run")) == "local:/elsewhere/run"  # outside the repository: absolute
    assert runner.resolve("local:/elsewhere/run") == Path("/elsewhere/run")
    moved = tmp_path / "moved"  # a repository moved (or seen from another mount) keeps its runs
    assert LocalRunner(moved).resolve(runner.ref(run_dir)) == moved / ".kanban/runs/TASK-1/reviewer-2"
    assert LocalRunner().ref(run_dir) == f"local:{run_dir}"  # without a root: absolute
    with pytest.raises(KanbanError, match="relative to its repository"):
        LocalRunner().resolve("local:.kanban/runs/TASK-1/task-1")
    for bad in ("ray:raysubmit_1", "local:", "/abs/path"):
        with pytest.raises(KanbanError, match="not a run"):
            runner.resolve(bad)


def test_new_rows_store_the_reference_and_no_path(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path)
    run_dir = paths.run_dir(tmp_path, "TASK-1", "task", 1)
    with History(tmp_path) as h:
        h.start_run(task="TASK-1", role="task", attempt=1, run_ref=runner.ref(run_dir), log="agent.log", timeout=60,
                    head_before=None)
        h.start_run(task="TASK-1", role="task", attempt=2, run_dir=str(run_dir.parent / "task-2"), log="agent.log",
                    timeout=60, head_before=None)  # a caller that still names a directory: kept as its reference
        h.start_verification(["TASK-1"], "abc", "v.log", run_ref=runner.ref(tmp_path / ".kanban/verify-runs/x"))
        h.start_verification(["TASK-1"], "abd", "v.log")
        (first, second) = h.runs()
        assert first.run_path(runner) == run_dir and second.run_path(runner) == run_dir.parent / "task-2"
        assert [v.ref for v in h.verifications()] == ["local:.kanban/verify-runs/x", None]
    stored = rows(tmp_path, "runs")
    assert [(r["run_dir"], r["run_ref"]) for r in stored] == [
        (None, "local:.kanban/runs/TASK-1/task-1"), (None, "local:.kanban/runs/TASK-1/task-2")]
    assert not [r for r in stored + rows(tmp_path, "verifications")
                if str(tmp_path) in str(r["run_ref"]) + str(r["run_dir"])]


def test_old_rows_resolve_before_and_after_the_migration(tmp_path: Path) -> None:
    (tmp_path / ".kanban").mkdir()
    run_dir, verify_dir = old_history(tmp_path)
    runner = LocalRunner(tmp_path)
    with History(tmp_path, readonly=True) as h:  # not migrated: the reader makes the references itself
        (run,) = h.runs()
        assert run.ref == f"local:{run_dir}" and run.run_path(runner) == run_dir
        assert [v.ref for v in h.verifications()] == [f"local:{verify_dir}", None]
        assert h.verifications()[0].run_path(runner) == verify_dir
    assert "run_ref" not in rows(tmp_path, "runs")[0], "a reader writes nothing"

    with History(tmp_path) as h:  # the first writer migrates: references filled in, run_dir kept
        (run,) = h.runs()
        assert run.run_ref == "local:.kanban/runs/TASK-1/task-1" and run.run_dir == str(run_dir)
        assert run.run_path(runner).resolve() == run_dir
        assert [v.run_ref for v in h.verifications()] == ["local:.kanban/verify-runs/check", None]
        new_run = paths.run_dir(tmp_path, "TASK-2", "task", 1)
        h.start_run(task="TASK-2", role="task", attempt=1, run_ref=runner.ref(new_run), log="agent.log", timeout=60,
                    head_before=None)  # no run directory: the old NOT NULL is gone
        with pytest.raises(sqlite3.IntegrityError):  # and a reference names one run
            h.start_run(task="TASK-2", role="task", attempt=2, run_ref=h.runs()[1].ref, log="agent.log", timeout=60,
                        head_before=None)
        assert [r.task for r in h.live_runs()] == ["TASK-2"]
    with History(tmp_path) as h:  # migrated once: opened again, nothing changes
        assert [r.ref for r in h.runs()] == ["local:.kanban/runs/TASK-1/task-1", "local:.kanban/runs/TASK-2/task-1"]

    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.move(tmp_path, moved)  # migrated rows are relative: they follow the repository
    with History(moved, readonly=True) as h:
        assert h.runs()[0].run_path(LocalRunner(moved)) == moved / ".kanban/runs/TASK-1/task-1"


def test_a_tick_records_its_runs_by_reference(kit) -> None:
    from agents_kit import task_md

    from kanban.commands.tick import open_engine

    p = kit(task_md("TASK-1"))
    engine = open_engine(p.root)
    try:
        assert engine.tick().started == ["TASK-1 started: task agent, attempt 1"]
        (run,) = engine.history.live_runs()
        assert run.run_dir is None and run.ref == "local:.kanban/runs/TASK-1/task-1"
        assert engine.runner.resolve(run.ref) == paths.run_dir(p.root, "TASK-1", "task", 1)
        assert engine.runner.wait_any([run.run_path(engine.runner)], timeout=30)
        engine.tick()
        assert engine.history.runs("TASK-1")[0].outcome == "ok"
    finally:
        engine.history.close()
