"""History in SQLite under .kanban/: one row per agent run, and an event log of transitions.

The board files say where each task is; the history says what happened:
which runs are live (to reap them), how often a task was sent back from a
stage (strikes, so nothing loops forever), which port a task holds.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

DB_NAME = "history.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    role TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    run_dir TEXT NOT NULL UNIQUE,
    log TEXT NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
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
    tokens INTEGER
);
CREATE INDEX IF NOT EXISTS runs_live ON runs (ended);
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
    run_dir: str
    log: str
    pid: int | None
    pid_start: int | None
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


class History:
    def __init__(self, root: Path) -> None:
        state = root / ".kanban"
        state.mkdir(exist_ok=True)
        self.path = state / DB_NAME
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

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

    def start_run(self, *, task: str, role: str, attempt: int, run_dir: str, log: str, timeout: float,
                  head_before: str | None) -> int:
        cur = self.db.execute(
            "INSERT INTO runs (task, role, attempt, run_dir, log, timeout, started, head_before)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (task, role, attempt, run_dir, log, timeout, time.time(), head_before),
        )
        return int(cur.lastrowid)

    def set_pid(self, run_id: int, pid: int | None, pid_start: int | None) -> None:
        self.db.execute("UPDATE runs SET pid=?, pid_start=? WHERE id=?", (pid, pid_start, run_id))

    def finish_run(self, run_id: int, *, outcome: str, result: dict[str, Any] | None,
                   cost_usd: float | None = None, tokens: int | None = None) -> None:
        result = result or {}
        self.db.execute(
            "UPDATE runs SET ended=?, exit_code=?, signal=?, timed_out=?, stalled=?, cancelled=?, outcome=?,"
            " cost_usd=?, tokens=? WHERE id=? AND ended IS NULL",
            (time.time(), result.get("exit_code"), result.get("signal"), int(bool(result.get("timed_out"))),
             int(bool(result.get("stalled"))), int(bool(result.get("cancelled"))), outcome, cost_usd, tokens,
             run_id),
        )

    def live_runs(self) -> list[Run]:
        return [Run(*row) for row in self.db.execute("SELECT * FROM runs WHERE ended IS NULL ORDER BY id")]

    def runs(self, task: str | None = None) -> list[Run]:
        if task is None:
            return [Run(*row) for row in self.db.execute("SELECT * FROM runs ORDER BY id")]
        return [Run(*row) for row in self.db.execute("SELECT * FROM runs WHERE task=? ORDER BY id", (task,))]

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


def running_agents(root: Path) -> list[dict[str, Any]]:
    """Live runs for `kanban status`, without creating a history where there is none."""
    if not (root / ".kanban" / DB_NAME).exists():
        return []
    now = time.time()
    with History(root) as history:
        return [
            {"task": r.task, "role": r.role, "attempt": r.attempt, "pid": r.pid,
             "elapsed": round(now - r.started, 1), "timeout": r.timeout, "log": r.log}
            for r in history.live_runs()
        ]
