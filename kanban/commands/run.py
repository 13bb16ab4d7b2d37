"""`kanban run`: tick in a loop, reacting as soon as an agent ends, with a live view."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path

from kanban.commands.tick import open_engine
from kanban.merge_queue import drain
from kanban.output import console, say, warn

WAKE_INTERVAL = 0.5  # also the longest wait before noticing a hand edit


def run(root: Path, *, no_merge: bool, live: bool | None = None) -> int:
    engine = open_engine(root, agents=True)
    engine.run_started_at = time.time()  # what [budget] run counts from
    live = sys.stdout.isatty() if live is None else live
    view = LiveView(engine) if live else None
    try:
        if view:
            view.start()
        return _loop(engine, view, no_merge=no_merge)
    except KeyboardInterrupt:
        if view:
            view.stop()
        still = engine.history.live_runs()
        if still:
            say(f"interrupted: {len(still)} agent(s) still running under their supervisors, timeouts enforced:")
            for r in still:
                say(f"  {r.task} {r.role} attempt {r.attempt} (pid {r.pid})")
            say("run 'kanban run' or 'kanban tick' to pick up their results, 'kanban stop ID' to stop one")
        else:
            say("interrupted: no agent is running; the board is consistent")
        return 130
    finally:
        if view:
            view.stop()
        engine.history.close()


def _loop(engine, view, *, no_merge: bool) -> int:
    started_at = time.monotonic()
    while True:
        report = engine.tick(record_pids=False)
        for line in ["repair: " + r for r in report.repaired] + report.reaped + report.started:
            view.log(line) if view else say(line)
        for line in report.problems:
            view.log("! " + line) if view else warn(line)
        merged = False
        if not no_merge:
            queue = drain(engine)
            for line in queue.lines + ([f"merge queue stopped: {queue.blocked}"] if queue.blocked else []):
                view.log(line) if view else say(line)
            merged = bool(queue.merged or queue.conflicts or queue.failed)
        if view:
            view.refresh()
        live_runs = engine.history.live_runs()
        # A pass that moved anything (a result reaped, a start that failed into a retry) may have
        # left work for the next one: stop only after a pass that found nothing to do.
        if not live_runs and not report.busy and not report.changed and not merged:
            break
        engine.runner.wait_any([Path(r.run_dir) for r in live_runs], timeout=WAKE_INTERVAL)
    if view:
        view.stop()
    return _summary(engine, time.monotonic() - started_at, no_merge=no_merge)


def _summary(engine, elapsed: float, *, no_merge: bool) -> int:
    """Say what is left, and return the exit status: 0 when every task on the board is done
    (merged; with --no-merge, ready to merge or waiting in TODO for those merges), 1 when any
    task is escalated or left undone (blocked queue, budget reached)."""
    from kanban.store import load_board

    tasks = load_board(engine.root).tasks()
    counts = {c: sum(1 for t in tasks if t.column.value == c) for c in ("TODO", "IN_PROGRESS", "REVIEW", "TESTING")}
    escalated = [t.id for t in tasks if t.escalated]
    ready = [t.id for t in tasks if t.ready]
    # With --no-merge a TODO task waits for merges the person deferred: not a failure.
    left = [t.id for t in tasks if not t.escalated and not (no_merge and (t.ready or t.column.value == "TODO"))]
    say(f"nothing left to do after {elapsed:.1f}s: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if ready:
        say(("ready to merge: " if no_merge else "ready but not merged: ") + ", ".join(ready))
    if escalated:
        say("escalated, waiting for a person: " + ", ".join(escalated))
    stuck = [t for t in left if t not in ready]
    if stuck:
        say("not done (blocked by a dependency, a file lease or the merge queue): " + ", ".join(stuck))
    return 1 if escalated or left else 0


class LiveView:
    """A board summary, the running agents and the latest events, redrawn in place."""

    def __init__(self, engine) -> None:
        from rich.live import Live

        self.engine = engine
        self.events: deque[str] = deque(maxlen=12)
        self.live = Live(console=console(), refresh_per_second=4, transient=False, auto_refresh=False)
        self.running = False

    def start(self) -> None:
        self.live.start()
        self.running = True
        self.refresh()

    def stop(self) -> None:
        if self.running:
            self.refresh()
            self.live.stop()
            self.running = False

    def log(self, line: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {line}")

    def refresh(self) -> None:
        if self.running:
            self.live.update(self._render(), refresh=True)

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from kanban.store import load_board

        try:
            tasks = load_board(self.engine.root).tasks()
        except Exception as exc:  # noqa: BLE001 - a half-typed hand edit must not kill the view
            tasks, note = [], f"(board unreadable right now: {exc})"
        else:
            note = ""
        counts = Text()
        for column in ("TODO", "IN_PROGRESS", "REVIEW", "TESTING"):
            n = sum(1 for t in tasks if t.column.value == column)
            counts.append(f"{column} {n}   ", style="bold")
        counts.append(f"escalated {sum(1 for t in tasks if t.escalated)}", style="red")
        agents = Table(title="agents", title_justify="left", expand=False, show_edge=False)
        for name in ("task", "role", "attempt", "elapsed", "timeout", "pid"):
            agents.add_column(name)
        now = time.time()
        for r in self.engine.history.live_runs():
            agents.add_row(r.task, r.role, str(r.attempt), f"{now - r.started:.0f}s", f"{r.timeout:.0f}s", str(r.pid))
        return Group(counts, Text(note), agents, Text("\n".join(self.events)))
