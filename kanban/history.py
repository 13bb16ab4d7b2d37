"""History in SQLite under .kanban/: one row per agent run, and an event log of transitions.

The board files say where each task is; the history says what happened:
which runs are live (to reap them), how often a task was sent back from a
stage (strikes, so nothing loops forever), which port a task holds.

A run is kept as the executor's reference to it (`run_ref`, from `Runner.ref`),
never as a local path: `Run.run_path(runner)` asks the runner where it is. Rows
of an older kanban hold a run directory (`run_dir`) instead; opening the history
for writing fills their reference in, and a reader sees it filled in too.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from kanban import paths
from kanban.budget import Spend

DB_NAME = paths.HISTORY_DB

_RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    role TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    run_dir TEXT,
    log TEXT NOT NULL,
    head_before TEXT,
    timeout REAL NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    exit_code INTEGER,
    signal INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    stalled INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    cost_usd REAL,
    tokens INTEGER,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    reason TEXT,
    run_ref TEXT UNIQUE,
    infra_failures INTEGER,
    node TEXT
);
"""
_RUNS_INDEX = "CREATE INDEX IF NOT EXISTS runs_live ON runs (ended);"
_SCHEMA = _RUNS_TABLE.format(name="runs") + _RUNS_INDEX + """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    task TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT,
    target TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_task ON events (task);
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY,
    tasks TEXT NOT NULL,
    sha TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    exit_code INTEGER,
    timed_out INTEGER NOT NULL DEFAULT 0,
    outcome TEXT,
    how TEXT,
    log TEXT NOT NULL,
    try INTEGER NOT NULL DEFAULT 1,
    run_dir TEXT,
    base TEXT,
    head TEXT,
    worktree TEXT,
    run_ref TEXT,
    armed INTEGER
);
CREATE TABLE IF NOT EXISTS ports (
    task TEXT PRIMARY KEY,
    port INTEGER NOT NULL UNIQUE
);
"""


class Run(NamedTuple):
    id: int
    task: str
    role: str
    attempt: int
    run_dir: str | None  # an older kanban's run directory; None in the rows of this one (run_ref)
    log: str
    head_before: str | None
    timeout: float
    started: float
    ended: float | None
    exit_code: int | None
    signal: int | None
    timed_out: int
    stalled: int
    cancelled: int
    outcome: str | None
    cost_usd: float | None
    tokens: int | None
    model: str | None = None  # the model it was started with, or the one its log names
    input_tokens: int | None = None  # of tokens: prompt tokens, cached ones included
    output_tokens: int | None = None
    reason: str | None = None  # why kanban judged it failed: "no verdict: ...", "timed out after 15m"
    run_ref: str | None = None  # the executor's reference to the run (Runner.ref)
    infra_failures: int | None = None  # tries the executor's infrastructure lost (a Ray node died): no strike
    node: str | None = None  # where it ran, when not on this machine (a Ray node)

    @property
    def ref(self) -> str:
        """The executor's reference to the run; for an older kanban's row, made from its run directory."""
        return self.run_ref or _legacy_ref(self.run_dir)

    def run_path(self, runner) -> Path:
        """Where the run is, as RUNNER (a kanban.runner.Runner) resolves its reference."""
        return runner.resolve(self.ref)


class Verification(NamedTuple):
    """One run of `[merge] verify` on a merged tree holding TASKS (comma-separated IDs)."""

    id: int
    tasks: str
    sha: str  # the merge commit it checked
    started: float
    ended: float | None
    exit_code: int | None
    timed_out: int
    outcome: str | None  # pass | fail | timeout | error (could not start) | None while it runs
    how: str | None  # how it ended, in words: "exit status 1", "timed out after 15m", "could not start: ..."
    log: str  # its own log file (absolute path)
    try_: int = 1  # 2 for the run that repeats a failure (flaky check)
    run_dir: str | None = None  # its run under the executor (None: run by an older kanban, in-process)
    base: str | None = None  # the commit the merge was built on: main, or the speculation ahead of it
    head: str | None = None  # the task branch's commit that was merged
    worktree: str | None = None  # the verify worktree it runs in
    run_ref: str | None = None  # its run's reference (Runner.ref); None: run in-process by an older kanban
    armed: int | None = None  # 1: made ready ahead of its turn, not started yet (runner.release starts it)

    @property
    def ref(self) -> str | None:
        """Its run's reference (made from an older kanban's run directory), or None: no run."""
        return self.run_ref or (_legacy_ref(self.run_dir) if self.run_dir else None)

    def run_path(self, runner) -> Path:
        """Where its run is, as RUNNER resolves its reference (only for a verification with a run)."""
        return runner.resolve(self.ref)

    def task_ids(self) -> list[str]:
        return [t for t in self.tasks.split(",") if t]


_VERIFICATION_COLUMNS = ("id, tasks, sha, started, ended, exit_code, timed_out, outcome, how, log, try, run_dir, base,"
                         " head, worktree, run_ref, armed")
_ADDED_VERIFICATION_COLUMNS = (("run_dir", "TEXT"), ("base", "TEXT"), ("head", "TEXT"), ("worktree", "TEXT"),
                               ("run_ref", "TEXT"), ("armed", "INTEGER"))


# Columns added after the first release, with their types: History() adds the missing
# ones to an existing database (SQLite appends them, so reads name the columns).
_ADDED_RUN_COLUMNS = (("model", "TEXT"), ("input_tokens", "INTEGER"), ("output_tokens", "INTEGER"),
                      ("reason", "TEXT"), ("run_ref", "TEXT"), ("infra_failures", "INTEGER"), ("node", "TEXT"))
_RUN_COLUMNS = ", ".join(Run._fields)
# The fields of a Spend, summed over runs.
_SPEND_SUMS = ("COALESCE(SUM(cost_usd), 0), COALESCE(SUM(tokens), 0), COUNT(*),"
               " COALESCE(SUM(cost_usd IS NULL AND tokens > 0), 0), COUNT(cost_usd)")


class History:
    def __init__(self, root: Path, *, readonly: bool = False) -> None:
        self.root = root
        self.path = paths.history_db(root)
        if readonly:
            self.db = _open_readonly(self.path)
            return
        from kanban.store import state_dir

        state_dir(root)  # `.kanban` that is a file: one clear line, not a traceback
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        def missing() -> list[tuple[str, str, str]]:
            found = []
            for table, added in (("runs", _ADDED_RUN_COLUMNS), ("verifications", _ADDED_VERIFICATION_COLUMNS)):
                have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
                found += [(table, name, kind) for name, kind in added if name not in have]
            return found

        if not missing() and not self._run_dir_required():
            return
        with self.transaction():  # another process may be migrating the same file
            for table, name, kind in missing():
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            if self._run_dir_required():
                self._rebuild_runs()
            self._fill_refs()

    def _run_dir_required(self) -> bool:
        """Whether `runs` is an older kanban's, whose every row must name a run directory."""
        return any(row[1] == "run_dir" and row[3] for row in self.db.execute("PRAGMA table_info(runs)"))

    def _rebuild_runs(self) -> None:
        """`runs` again with today's table (run_dir optional, run_ref unique), its rows kept: SQLite
        changes a column's constraints only by copying the table."""
        columns = ", ".join(Run._fields)
        self.db.execute("DROP TABLE IF EXISTS runs_migrating")
        self.db.execute(_RUNS_TABLE.format(name="runs_migrating"))
        self.db.execute(f"INSERT INTO runs_migrating ({columns}) SELECT {columns} FROM runs")
        self.db.execute("DROP TABLE runs")
        self.db.execute("ALTER TABLE runs_migrating RENAME TO runs")
        self.db.execute(_RUNS_INDEX)

    def _fill_refs(self) -> None:
        """The references of an older kanban's rows, made from their run directories."""
        for table in ("runs", "verifications"):
            rows = self.db.execute(f"SELECT id, run_dir FROM {table} WHERE run_ref IS NULL AND run_dir IS NOT NULL")
            self.db.executemany(f"UPDATE {table} SET run_ref=? WHERE id=?",
                                [(_legacy_ref(run_dir, self.root), row_id) for row_id, run_dir in rows.fetchall()])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- runs ------------------------------------------------------------------

    def next_attempt(self, task: str, role: str) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(attempt), 0) FROM runs WHERE task=? AND role=?",
                              (task, role)).fetchone()
        return int(row[0]) + 1

    def start_run(self, *, task: str, role: str, attempt: int, log: str, timeout: float,
                  head_before: str | None, model: str | None = None, run_ref: str | None = None,
                  run_dir: str | None = None) -> int:
        """RUN_REF: the executor's reference to the run (Runner.ref). A RUN_DIR instead is taken as a
        local run directory, and kept as the local runner's reference to it."""
        ref = run_ref or _legacy_ref(run_dir, self.root)
        cur = self.db.execute(
            "INSERT INTO runs (task, role, attempt, run_ref, log, timeout, started, head_before, model)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task, role, attempt, ref, log, timeout, time.time(), head_before, model or None),
        )
        assert cur.lastrowid is not None  # an INSERT sets it
        return int(cur.lastrowid)

    def finish_run(self, run_id: int, *, outcome: str, result: dict[str, Any] | None,
                   cost_usd: float | None = None, tokens: int | None = None,
                   input_tokens: int | None = None, output_tokens: int | None = None,
                   model: str | None = None, reason: str | None = None) -> None:
        """`model`, when given, replaces the one recorded at the start (the log names the real one)."""
        result = result or {}
        self.db.execute(
            "UPDATE runs SET ended=?, exit_code=?, signal=?, timed_out=?, stalled=?, cancelled=?, outcome=?,"
            " cost_usd=?, tokens=?, input_tokens=?, output_tokens=?, model=COALESCE(?, model), reason=?,"
            " infra_failures=?, node=? WHERE id=? AND ended IS NULL",
            (time.time(), result.get("exit_code"), result.get("signal"), int(bool(result.get("timed_out"))),
             int(bool(result.get("stalled"))), int(bool(result.get("cancelled"))), outcome, cost_usd, tokens,
             input_tokens, output_tokens, model or None, reason or None,
             _int_or_none(result.get("infra_failures")), _text_or_none(result.get("node")), run_id),
        )

    def live_runs(self) -> list[Run]:
        return [Run(*row) for row in self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE ended IS NULL ORDER BY id")]

    def runs(self, task: str | None = None) -> list[Run]:
        if task is None:
            return [Run(*row) for row in self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id")]
        return [Run(*row) for row in self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE task=? ORDER BY id", (task,))]

    # -- spend (kanban.budget) ---------------------------------------------------

    def spend(self, *, task: str | None = None, since: float | None = None) -> Spend:
        """Dollars and tokens of the finished runs, of one task and/or started at or after `since`."""
        where, args = ["ended IS NOT NULL"], list[Any]()
        if task is not None:
            where.append("task=?")
            args.append(task)
        if since is not None:
            where.append("started>=?")
            args.append(since)
        row = self.db.execute(
            f"SELECT {_SPEND_SUMS} FROM runs WHERE " + " AND ".join(where), args).fetchone()
        return Spend(float(row[0]), *(int(n) for n in row[1:]))

    def spend_by_task(self) -> dict[str, Spend]:
        """Spend of the finished runs, per task, in one query."""
        rows = self.db.execute(f"SELECT task, {_SPEND_SUMS} FROM runs WHERE ended IS NOT NULL GROUP BY task")
        return {task: Spend(float(cost), *(int(n) for n in rest)) for task, cost, *rest in rows}

    # -- events and strikes ------------------------------------------------------

    def event(self, task: str, kind: str, source: str | None = None, target: str | None = None,
              detail: str | None = None) -> None:
        self.db.execute("INSERT INTO events (time, task, kind, source, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
                        (time.time(), task, kind, source, target, detail))

    def events(self, task: str | None = None) -> list[tuple]:
        if task is None:
            return list(self.db.execute("SELECT time, task, kind, source, target, detail FROM events ORDER BY id"))
        return list(self.db.execute(
            "SELECT time, task, kind, source, target, detail FROM events WHERE task=? ORDER BY id", (task,)))

    def landed(self, commit: str) -> bool:
        """Whether the merge queue verified COMMIT and moved main to it (its "landing" record)."""
        return self.db.execute("SELECT 1 FROM events WHERE kind='landing' AND detail=? LIMIT 1",
                               (commit,)).fetchone() is not None

    def strikes(self, task: str) -> dict[str, int]:
        """Send-backs per stage since the task was last reset by a person."""
        last_reset = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events WHERE task=? AND kind='reset'",
                                     (task,)).fetchone()[0]
        counts: dict[str, int] = {}
        for (kind,) in self.db.execute("SELECT kind FROM events WHERE task=? AND id>? AND kind LIKE 'strike:%'",
                                       (task, last_reset)):
            stage = kind.split(":", 1)[1]
            counts[stage] = counts.get(stage, 0) + 1
        return counts

    def entered(self, task: str, column: str) -> float:
        """When the task last came into COLUMN from another one (0.0: never recorded)."""
        row = self.db.execute("SELECT MAX(time) FROM events WHERE task=? AND target=? AND"
                              " (source IS NULL OR source<>target)", (task, column)).fetchone()
        return float(row[0] or 0.0)

    def last_event(self, task: str) -> str | None:
        row = self.db.execute("SELECT kind FROM events WHERE task=? AND kind NOT LIKE 'strike:%'"
                              " ORDER BY id DESC LIMIT 1", (task,)).fetchone()
        return row[0] if row else None

    def escalated_tasks(self) -> set[str]:
        """Tasks whose latest event (strikes aside) is an escalation, in one query."""
        rows = self.db.execute(
            "SELECT e.task, e.kind FROM events e JOIN (SELECT task, MAX(id) AS id FROM events"
            " WHERE kind NOT LIKE 'strike:%' GROUP BY task) last ON e.id = last.id")
        return {task for task, kind in rows if kind == "escalated"}

    # -- verifications (the merge queue's `[merge] verify` runs) ---------------------

    def start_verification(self, tasks: list[str], sha: str, log: str, try_: int = 1, *,
                           run_ref: str | None = None, base: str | None = None, head: str | None = None,
                           worktree: str | None = None, run_dir: str | None = None, armed: bool = False) -> int:
        """RUN_REF as in start_run (a RUN_DIR instead is kept as the local runner's reference). ARMED:
        made ready ahead of its turn (release_verification starts it)."""
        ref = run_ref or (_legacy_ref(run_dir, self.root) if run_dir else None)
        cur = self.db.execute("INSERT INTO verifications (tasks, sha, started, log, try, run_ref, base, head, worktree,"
                              " armed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              (",".join(tasks), sha, time.time(), log, try_, ref, base, head, worktree,
                               1 if armed else None))
        assert cur.lastrowid is not None  # an INSERT sets it
        return int(cur.lastrowid)

    def release_verification(self, verification_id: int) -> None:
        """An armed verification's turn came: it starts now."""
        self.db.execute("UPDATE verifications SET armed=NULL, started=? WHERE id=? AND ended IS NULL",
                        (time.time(), verification_id))

    def latest_verification(self, task: str, base: str, head: str) -> Verification | None:
        """The last verification of TASK's commit HEAD merged onto BASE (the speculation queue's memory)."""
        row = self.db.execute(f"SELECT {_VERIFICATION_COLUMNS} FROM verifications WHERE tasks=? AND base=? AND"
                              " head=? ORDER BY id DESC LIMIT 1", (task, base, head)).fetchone()
        return Verification(*row) if row else None

    def verification(self, verification_id: int) -> Verification:
        row = self.db.execute(f"SELECT {_VERIFICATION_COLUMNS} FROM verifications WHERE id=?",
                              (verification_id,)).fetchone()
        return Verification(*row)

    def first_verifications(self) -> dict[tuple[str, str], int]:
        """(tasks, head) -> the id of the first verification of that commit: the queue's order."""
        return {(tasks, head): first for tasks, head, first in self.db.execute(
            "SELECT tasks, head, MIN(id) FROM verifications WHERE head IS NOT NULL GROUP BY tasks, head")}

    def live_verifications(self) -> list[Verification]:
        return [Verification(*row) for row in self.db.execute(
            f"SELECT {_VERIFICATION_COLUMNS} FROM verifications WHERE ended IS NULL ORDER BY id")]

    def finish_verification(self, verification_id: int, *, outcome: str, how: str, exit_code: int | None = None,
                            timed_out: bool = False) -> None:
        self.db.execute("UPDATE verifications SET ended=?, outcome=?, how=?, exit_code=?, timed_out=?"
                        " WHERE id=? AND ended IS NULL",
                        (time.time(), outcome, how, exit_code, int(timed_out), verification_id))

    def verifications(self, task: str | None = None) -> list[Verification]:
        """Every verification, or those whose merged tree held TASK, oldest first."""
        rows = self.db.execute(f"SELECT {_VERIFICATION_COLUMNS} FROM verifications ORDER BY id")
        found = [Verification(*row) for row in rows]
        return found if task is None else [v for v in found if task in v.task_ids()]

    # -- ports ---------------------------------------------------------------------

    def port_for(self, task: str, base: int, span: int = 1000) -> int:
        """The task's own KANBAN_PORT: the lowest free one from `base`, kept until released."""
        with self.transaction():
            row = self.db.execute("SELECT port FROM ports WHERE task=?", (task,)).fetchone()
            if row:
                return int(row[0])
            taken = {p for (p,) in self.db.execute("SELECT port FROM ports")}
            port = next(p for p in range(base, base + span) if p not in taken)
            self.db.execute("INSERT INTO ports (task, port) VALUES (?, ?)", (task, port))
            return port

    def release_port(self, task: str) -> None:
        self.db.execute("DELETE FROM ports WHERE task=?", (task,))


def _legacy_ref(run_dir: str | None, root: Path | None = None) -> str:
    """The local runner's reference to RUN_DIR (relative to ROOT when inside it)."""
    from kanban.runner import local_ref

    if not run_dir:
        raise ValueError("a run needs its reference (or, from an older kanban, its run directory)")
    return local_ref(root, run_dir)


def _read_as(name: str, have: set[str]) -> str:
    """What a reader of an older history (columns HAVE) sees in the column NAME it lacks, until a
    writer migrates it: the references of its runs made from their run directories, else NULL."""
    from kanban.runner import LOCAL_REF

    if name == "run_ref" and "run_dir" in have:
        return f"CASE WHEN run_dir IS NULL THEN NULL ELSE '{LOCAL_REF}' || run_dir END"
    return "NULL"


def _empty_history() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(_SCHEMA)
    return db


def _open_readonly(path: Path) -> sqlite3.Connection:
    """The history for reading only: never creates .kanban/ or the file, works on a read-only file system.

    Without a history yet: an empty one in memory. `mode=ro` reads the WAL too; where the
    directory is read-only and no -shm file exists (the last writer closed cleanly, so the
    WAL is checkpointed), SQLite needs `immutable=1` to open it at all.
    """
    from urllib.parse import quote

    if not path.is_file():
        return _empty_history()
    base = "file:" + quote(str(path.resolve()))
    for query in ("?mode=ro", "?mode=ro&immutable=1"):
        db = sqlite3.connect(base + query, uri=True, timeout=30, isolation_level=None)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM main.sqlite_master WHERE type='table'")}
            break
        except sqlite3.OperationalError:
            db.close()
            if query.endswith("immutable=1"):
                raise
    if "verifications" not in tables:  # a history from before per-run verify logs
        db.execute("CREATE TEMP TABLE verifications (id INTEGER PRIMARY KEY, tasks TEXT, sha TEXT, started REAL,"
                   " ended REAL, exit_code INTEGER, timed_out INTEGER, outcome TEXT, how TEXT, log TEXT, try INTEGER,"
                   " run_dir TEXT, base TEXT, head TEXT, worktree TEXT, run_ref TEXT, armed INTEGER)")
    if not {"runs", "events", "ports"} <= tables:
        # Its schema was never completed (a full disk at the first write): nothing was recorded.
        db.close()
        return _empty_history()
    have = {row[1] for row in db.execute("PRAGMA main.table_info(runs)")}
    added = [f"{_read_as(name, have)} AS {name}" for name, _ in _ADDED_RUN_COLUMNS if name not in have]
    if added:  # an older history, migrated by the next writer: the same columns meanwhile
        db.execute(f"CREATE TEMP VIEW runs AS SELECT *, {', '.join(added)} FROM main.runs")
    if "verifications" in tables:
        have = {row[1] for row in db.execute("PRAGMA main.table_info(verifications)")}
        added = [f"{_read_as(name, have)} AS {name}" for name, _ in _ADDED_VERIFICATION_COLUMNS if name not in have]
        if added:
            db.execute(f"CREATE TEMP VIEW verifications AS SELECT *, {', '.join(added)} FROM main.verifications")
    return db


def running_agents(root: Path) -> list[dict[str, Any]]:
    """Live runs for `kanban status`, without creating a history where there is none."""
    if not paths.history_db(root).exists():
        return []
    now = time.time()
    with History(root, readonly=True) as history:
        return [
            {"task": r.task, "role": r.role, "attempt": r.attempt, "pid": None,
             "elapsed": round(now - r.started, 1), "timeout": r.timeout, "log": r.log, "ref": r.ref}
            for r in history.live_runs()
        ]


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _text_or_none(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) and value else None
