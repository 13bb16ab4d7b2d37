"""What `kanban run` shows while it works: the board, the agents, the merge queue, the latest events.

Two views with one interface, chosen by the run loop:

- `LiveView(engine)`: a frame redrawn in place on a terminal (rich Live). It redraws on its
  own twice a second, so elapsed times and "verifying TASK-4 for 42s" keep moving while the
  run loop is blocked (a merge queue verification may take minutes).
- `PlainView(engine)`: for a log file or a pipe: one line per event as it comes, prefixed
  with the time, and a progress line every `interval` seconds.

The run loop calls `refresh()` after each pass: that is the only place the board and the
history are read (sqlite connections belong to the thread that opened them). Everything drawn
in between, by rich's refresh thread or by PlainView's timer, comes from that last snapshot.

    view.start(); view.log(happening_or_text); view.refresh(); view.set_queue_state(state)
    view.stop(summary_lines)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kanban.events import Happening, QueueState
from kanban.output import human_duration

EVENTS_SHOWN = 8  # the latest events in the live frame
WIDE = 70  # from this width on the agents table has its timeout and pid columns
PROGRESS_INTERVAL = 30.0  # PlainView: a progress line at least this often

COLUMNS = ("TODO", "IN_PROGRESS", "REVIEW", "TESTING")
ROLE_WORDS = {"task": "task agent", "reviewer": "reviewer", "tester": "tester", "test": "tests"}
SHORT_ROLE = {"task agent": "task", "reviewer": "review", "tester": "tester", "tests": "tests"}
KIND_STYLE = {
    "escalated": "bold red", "problem": "red", "budget_reached": "bold red", "queue_blocked": "bold red",
    "timed_out": "yellow", "retrying": "yellow", "rejected": "yellow", "test_failed": "yellow",
    "conflict": "yellow", "verify_failed": "yellow",
    "approved": "green", "tested": "green", "merged": "bold green", "committed": "green",
}


@dataclass(frozen=True)
class Agent:
    task: str
    role: str  # as a person says it: "task agent", "reviewer", "tester", "tests"
    attempt: int
    started: float  # epoch seconds
    timeout: float  # seconds
    pid: int | None  # None until the run is next polled
    node: str | None = None  # the Ray node it runs on (kanban.executors); None on this machine

    def elapsed(self, now: float) -> str:
        return human_duration(now - self.started)

    @property
    def pid_text(self) -> str:
        if self.node:
            return self.node
        return str(self.pid) if self.pid else "starting"


@dataclass(frozen=True)
class Snapshot:
    """The board and the live runs, as read on the run loop's thread."""

    counts: dict[str, int] = field(default_factory=dict)  # the columns, "done" and "escalated"
    agents: tuple[Agent, ...] = ()
    note: str = ""  # "(board unreadable right now: ...)"
    capacity: str | None = None  # the executor's free capacity ("Ray 2.60.0: 3 nodes, 12 of 16 agent_slot free")
    taken: float = 0.0
    board: object = field(default=None, repr=False, compare=False)  # what the counts were taken from

    def count_items(self) -> list[str]:
        if not self.counts:
            return []
        names = [(c, c) for c in COLUMNS] + [("done", "done"), ("escalated", "escalated")]
        return [f"{shown} {self.counts.get(key, 0)}" for key, shown in names]


def take_snapshot(engine, previous: Snapshot | None = None) -> Snapshot:
    """Read the board and the live runs now. Never raises: a half-typed board (a person is
    editing it) keeps the last counts and says so in one line."""
    note = ""
    counts = dict(previous.counts) if previous else {}
    board = None
    try:
        from kanban.store import read_board

        board = read_board(engine.root)
        if previous is None or previous.board is not board:  # the same board object: the same counts
            tasks = board.tasks()
            counts = dict.fromkeys(COLUMNS, 0)
            for t in tasks:
                counts[t.column.value] = counts.get(t.column.value, 0) + 1
            counts["done"] = len(board.done_ids)
            counts["escalated"] = sum(1 for t in tasks if t.escalated)
    except Exception as exc:  # noqa: BLE001 - whatever the board holds right now must not kill the view
        note = _one_line(f"(board unreadable right now: {exc})")
    agents = previous.agents if previous else ()
    try:
        runner = engine.runner
        agents = tuple(Agent(r.task, ROLE_WORDS.get(r.role, r.role), r.attempt, r.started, r.timeout,
                             runner.pid(r.run_path(runner)), runner.where(r.run_path(runner)))
                       for r in engine.history.live_runs())
    except Exception as exc:  # noqa: BLE001 - a busy or closed history: keep the last agents
        note = note or _one_line(f"(history unreadable right now: {exc})")
    capacity = None
    with contextlib.suppress(Exception):
        capacity = engine.runner.capacity()
    return Snapshot(counts, agents, note, capacity, time.time(), board if not note else None)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _as_happening(item: Happening | str) -> Happening:
    return item if isinstance(item, Happening) else Happening("info", _one_line(item))


class _View:
    """What both views share: the snapshot, the queue state and the latest events."""

    def __init__(self, engine, *, merging: bool = True) -> None:
        self.engine = engine
        self.merging = merging  # False: `--no-merge`, the queue line says so
        self.snapshot = Snapshot()
        self.events: deque[tuple[float, Happening]] = deque(maxlen=EVENTS_SHOWN)
        self._queue: QueueState | None = None
        self.running = False

    def set_queue_state(self, state: QueueState | None) -> None:
        self._queue = state

    def queue_state(self) -> QueueState | None:
        """The newer of the state set here and the one the merge queue put on the engine."""
        found = [s for s in (getattr(self.engine, "queue_state", None), self._queue) if s is not None]
        return max(found, key=lambda s: s.since) if found else None

    def queue_text(self, now: float) -> str:
        if not self.merging:
            return "off (--no-merge)"
        state = self.queue_state()
        return _one_line(state.describe(now)) if state is not None else "idle"

    def refresh(self) -> None:
        """Read the board and the live runs (on the calling thread) for everything drawn next."""
        self.snapshot = take_snapshot(self.engine, self.snapshot)

    def _remember(self, item: Happening | str) -> tuple[float, Happening]:
        entry = (time.time(), _as_happening(item))
        self.events.append(entry)
        return entry


class LiveView(_View):
    """A frame redrawn in place: counts, agents, merge queue, latest events; at the end, the summary."""

    def __init__(self, engine, *, console=None, merging: bool = True, refresh_per_second: float = 2) -> None:
        super().__init__(engine, merging=merging)
        from rich.live import Live

        from kanban.output import console as default_console

        self.final: Any = None  # the summary frame, once stopped
        self.live = Live(console=console or default_console(), get_renderable=self.renderable,
                         auto_refresh=True, refresh_per_second=refresh_per_second, transient=False)

    def start(self) -> None:
        self.refresh()
        self.live.start()
        self.running = True

    def log(self, item: Happening | str) -> None:
        self._remember(item)
        if self.running:
            self.live.refresh()

    def refresh(self) -> None:
        super().refresh()
        if self.running:
            self.live.refresh()

    def stop(self, summary_lines: list[str] | None = None) -> None:
        if not self.running:
            return
        super().refresh()
        self.final = SummaryFrame(list(summary_lines or []), self.snapshot)
        self.running = False
        self.live.stop()  # draws the summary one last time and leaves it on the screen

    def renderable(self, now: float | None = None):
        """What is drawn now: the frame from the last snapshot, or the summary once stopped."""
        return self.final if self.final is not None else Frame(self, time.time() if now is None else now)


class Frame:
    """The live frame, laid out for the width it is given."""

    def __init__(self, view: _View, now: float) -> None:
        self.view, self.now = view, now

    def __rich_console__(self, console, options):
        from rich import box
        from rich.table import Table
        from rich.text import Text

        width = options.max_width
        snap, now = self.view.snapshot, self.now
        running = len(snap.agents)
        yield _line(f"kanban run: {running} agent{'s' if running != 1 else ''} running", "bold")
        yield from _packed(snap.count_items(), width)
        if snap.note:
            yield _line(snap.note, "yellow")
        yield _line(f"merge queue: {self.view.queue_text(now)}")
        if snap.capacity:
            yield _line(f"cluster: {snap.capacity}")
        if snap.agents:
            wide = width >= WIDE
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), expand=False)
            for name in ("task", "role", "attempt" if wide else "#", "elapsed" if wide else "time"):
                table.add_column(name, no_wrap=True, overflow="ellipsis")
            if wide:
                table.add_column("timeout", no_wrap=True, overflow="ellipsis")
                table.add_column("node" if any(a.node for a in snap.agents) else "pid", no_wrap=True,
                                 overflow="ellipsis")
            for a in snap.agents:
                if wide:
                    table.add_row(a.task, a.role, str(a.attempt), a.elapsed(now), human_duration(a.timeout),
                                  a.pid_text)
                else:
                    table.add_row(a.task, SHORT_ROLE.get(a.role, a.role), str(a.attempt),
                                  f"{a.elapsed(now)}/{human_duration(a.timeout)}")
            yield table
        else:
            yield _line("no agent running", "dim")
        events = tuple(self.view.events)  # a copy: the run loop appends while rich's thread draws
        if events:
            yield Text("")
            yield _line("latest:", "bold")
            for at, h in events:
                yield _line(f"{time.strftime('%H:%M:%S', time.localtime(at))} {h.text}", KIND_STYLE.get(h.kind))


class SummaryFrame:
    """The last frame: what the run says about itself, and the final counts."""

    def __init__(self, lines: list[str], snapshot: Snapshot) -> None:
        self.lines, self.snapshot = lines, snapshot

    def __rich_console__(self, console, options):
        from rich.text import Text

        width = options.max_width
        yield _line("kanban run ended", "bold")
        yield from _packed(self.snapshot.count_items(), width)
        if self.snapshot.note:
            yield _line(self.snapshot.note, "yellow")
        for line in self.lines:  # the summary wraps: every word of it matters
            yield Text(_one_line(line), overflow="fold")


def _line(text: str, style: str | None = None):
    """One line that never wraps: cut with an ellipsis at the width it gets."""
    from rich.text import Text

    return Text(_one_line(text), style=style or "", no_wrap=True, overflow="ellipsis")


def _packed(items: Iterable[str], width: int):
    """'TODO 4  IN_PROGRESS 2  ...' packed into as few lines as fit WIDTH, never split inside an item."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    from rich.text import Text

    return [Text(line, style="bold", no_wrap=True, overflow="ellipsis") for line in lines]


class PlainView(_View):
    """No terminal: a line per event as it comes, and a progress line every INTERVAL seconds."""

    def __init__(self, engine, *, interval: float = PROGRESS_INTERVAL, out=None, merging: bool = True) -> None:
        super().__init__(engine, merging=merging)
        self.interval = interval
        self._out = out  # None: sys.stdout at the time of writing (pytest's capsys replaces it)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._timer: threading.Thread | None = None

    def start(self) -> None:
        if self.running:
            return
        self.refresh()
        self.running = True
        self._stopped.clear()
        self._timer = threading.Thread(target=self._tick, name="kanban-progress", daemon=True)
        self._timer.start()

    def log(self, item: Happening | str) -> None:
        at, h = self._remember(item)
        self._print(f"{time.strftime('%H:%M:%S', time.localtime(at))} {h.text}")

    def stop(self, summary_lines: list[str] | None = None) -> None:
        if not self.running:
            return
        self.running = False
        self._stopped.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=5)
        super().refresh()
        for line in summary_lines or []:
            self._print(_one_line(line))
        self._print("final: " + self.counts_text())

    def counts_text(self) -> str:
        snap = self.snapshot
        text = ", ".join(snap.count_items()) or "board not read yet"
        return text + (f" {snap.note}" if snap.note else "")

    def progress_line(self, now: float | None = None) -> str:
        """'16:04:30 progress: 2 running (TASK-3 task agent 4m, ...), TODO 4, ...; merge queue: idle'."""
        now = time.time() if now is None else now
        snap = self.snapshot
        agents = ", ".join(f"{a.task} {a.role} {a.elapsed(now)}" for a in snap.agents)
        running = f"{len(snap.agents)} running" + (f" ({agents})" if agents else "")
        return (f"{time.strftime('%H:%M:%S', time.localtime(now))} progress: {running}, {self.counts_text()}; "
                f"merge queue: {self.queue_text(now)}")

    def _tick(self) -> None:
        while not self._stopped.wait(self.interval):
            self._print(self.progress_line())

    def _print(self, line: str) -> None:
        with self._lock:
            out = self._out or sys.stdout
            try:
                out.write(line + "\n")
                out.flush()
            except (OSError, ValueError):  # a closed pipe or file must not kill the run
                pass

