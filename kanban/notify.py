"""`[notify]`: run the person's command when they should know something.

Kinds (kanban.events.NOTIFY_KINDS): a task escalated, the merge queue blocked, a
budget reached, `kanban run` finished. The command is argv, never a shell. Its
placeholders {event} {task} {title} {summary} are filled in one pass, so a value
is never scanned for placeholders again (a title holding "{summary}" stays that
text), and no value is parsed at all: titles come from hand-edited files and from
agents. Each value is one printable line, bounded. The same values are in the
command's environment as KANBAN_EVENT, KANBAN_TASK, KANBAN_TITLE, KANBAN_SUMMARY,
with KANBAN_REPO.

Delivery runs in one background thread, in order: a pass of `kanban run` never
waits for a slow webhook, and the loop keeps reaping agents. Each call is bounded
(stdin /dev/null, output captured up to a few KiB, its own session, the whole group
killed at the timeout); `close()` waits for what is queued, so a `kanban tick` from
cron delivers before it exits. A failure (not found, non-zero, timed out) is never
fatal: the main thread (`flush`) prints it as one warning line and records it in
the history.

Deduplication is per process for escalations and budgets (one call per escalation
of a task, one per budget reached), and through the history for a blocked queue, so
`kanban merge-queue` from cron every minute says a blocked reason once, not sixty
times an hour.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kanban.events import (
    BUDGET_REACHED,
    ESCALATED,
    QUEUE_BLOCKED,
    Happening,
)

SUMMARY_MAX = 300
TITLE_MAX = 200
OUTPUT_MAX = 4096  # of the command's output, kept for the warning
PENDING_MAX = 32  # notifications waiting for the worker; more are dropped (and said so)
KILL_GRACE = 0.5
HISTORY_KIND = "notify"  # the history's record of each call (task "": it changes no task's state)
_FILL_RE = re.compile(r"\{(event|task|title|summary)\}")
_BUDGET_WHAT_RE = re.compile(r"budget reached: (.+?) (?:spent|used) ")


def one_line(text: object, cap: int) -> str:
    """Printable, one line, at most CAP characters (escapes and control characters dropped)."""
    from kanban.untrusted import clean

    line = " ".join(clean(str(text), max_bytes=cap * 4 + 16, max_line=cap * 4).split())
    return line if len(line) <= cap else line[: cap - 1] + "…"


def fill(argv: tuple[str, ...] | list[str], values: dict[str, str]) -> list[str]:
    """The command with its placeholders replaced in one pass: values are never scanned again.

    An element that a value would start with "-" (an option the person did not write) gets
    a leading space: a title can never become an option of the person's command."""
    out = []
    for arg in argv:
        filled = _FILL_RE.sub(lambda m: values[m.group(1)], arg)
        if filled.startswith("-") and not arg.startswith("-"):
            filled = " " + filled
        out.append(filled)
    return out


@dataclass(frozen=True)
class Notice:
    event: str
    task: str
    title: str
    summary: str

    @classmethod
    def of(cls, event: str, summary: str, task: str = "", title: str = "") -> Notice:
        return cls(event, one_line(task, 80), one_line(title, TITLE_MAX), one_line(summary, SUMMARY_MAX))

    def values(self) -> dict[str, str]:
        return {"event": self.event, "task": self.task, "title": self.title, "summary": self.summary}

    def shown(self) -> str:
        return f"{self.event}" + (f" {self.task}" if self.task else "")


@dataclass(frozen=True)
class Outcome:
    notice: Notice
    ok: bool
    how: str  # "exit status 0", "timed out after 10s", "not found: notify-send", ...


def deliver(command: tuple[str, ...], timeout: float, root: Path, notice: Notice,
            on_start=None) -> Outcome:
    """Run the command for one notice, bounded; never raises. ON_START(stop): given, once it
    started, a function that stops it with its whole group."""
    from kanban.runner import run_bounded

    argv = fill(command, notice.values())
    env = dict(os.environ)
    env.update({"KANBAN_EVENT": notice.event, "KANBAN_TASK": notice.task, "KANBAN_TITLE": notice.title,
                "KANBAN_SUMMARY": notice.summary, "KANBAN_REPO": str(root)})
    try:
        done = run_bounded(argv, root, env, timeout=timeout, output_limit=OUTPUT_MAX, merge_stderr=True,
                           grace=KILL_GRACE, on_start=on_start)
    except FileNotFoundError:
        return Outcome(notice, False, f"not found: {one_line(argv[0], 120)}")
    except (OSError, ValueError) as exc:  # not executable, a NUL byte, ...
        return Outcome(notice, False, f"could not start {one_line(argv[0], 120)}: "
                                      f"{one_line(getattr(exc, 'strerror', None) or exc, 120)}")
    except Exception as exc:  # noqa: BLE001 - a notification must never break the run
        return Outcome(notice, False, f"failed: {one_line(exc, 200)}")
    if done.timed_out:
        return Outcome(notice, False, f"timed out after {timeout:g}s; its process group was killed")
    if done.returncode == 0:
        return Outcome(notice, True, "exit status 0")
    last = [line for line in done.output.decode("utf-8", errors="replace").splitlines() if line.strip()][-1:]
    return Outcome(notice, False, f"exit status {done.returncode}" + (f": {one_line(last[0], 200)}" if last else ""))


class Notifier:
    """Turns the happenings of passes into calls of the `[notify]` command, each once."""

    def __init__(self, root: Path, config, history=None) -> None:
        self.root = Path(root)
        self.config = config.notify
        self.history = history
        self._told_escalated: set[str] = set()  # tasks told about, while they stay escalated
        self._told_budgets: set[str] = set()
        self._blocked: tuple[str, ...] | None = None  # the queue's blocked reasons last told, this process
        self._warned: set[str] = set()
        self._results: list[Outcome] = []
        self._lock = threading.Lock()
        self._queue: queue_mod.Queue[Notice | None] = queue_mod.Queue()
        self._thread: threading.Thread | None = None
        self._current = None  # stops the command being delivered (kanban.runner.run_bounded)
        self._closed = False

    @property
    def enabled(self) -> bool:
        return bool(self.config.command)

    @property
    def told_escalated(self) -> frozenset[str]:
        return frozenset(self._told_escalated)

    # -- what happened ---------------------------------------------------------------------

    def notify(self, kind: str, summary: str, task: str = "", title: str = "") -> bool:
        """Queue one call (when [notify] wants this kind); True when queued."""
        if not self.config.wants(kind) or self._closed:
            return False
        if self._queue.qsize() >= PENDING_MAX:
            with self._lock:
                self._results.append(Outcome(Notice.of(kind, summary, task, title), False,
                                             f"dropped: more than {PENDING_MAX} notifications waiting"))
            return False
        self._queue.put(Notice.of(kind, summary, task, title))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="kanban-notify", daemon=True)
            self._thread.start()
        return True

    def tick(self, report) -> None:
        """An engine pass: its escalations and budgets reached."""
        if not self.enabled:
            return
        for h in report.events:
            self.happening(h)

    def queue(self, report) -> None:
        """A merge-queue pass: its escalations (held branches) and whether it is blocked."""
        if not self.enabled or report.busy:
            return  # another merge queue ran: it says what it found
        for h in report.events:
            if h.kind != QUEUE_BLOCKED:
                self.happening(h)
        self._queue_state(tuple(dict.fromkeys(h.text for h in report.events if h.kind == QUEUE_BLOCKED)))

    def happening(self, h: Happening) -> None:
        if h.kind == ESCALATED:
            if not h.task or h.task in self._told_escalated:
                return
            self._told_escalated.add(h.task)
            self.notify(ESCALATED, h.text, h.task, h.title)
        elif h.kind == BUDGET_REACHED:
            found = _BUDGET_WHAT_RE.search(h.text)  # one per limit ("today (UTC)", "task TASK-3") and day
            key = (found.group(1) if found else h.text) + time.strftime(" %Y-%m-%d", time.gmtime())
            if key in self._told_budgets:
                return
            self._told_budgets.add(key)
            self.notify(BUDGET_REACHED, h.text, h.task, h.title)
        elif h.kind == QUEUE_BLOCKED:
            self._queue_state((h.text,))

    def forget_freed(self, escalated_now: set[str] | frozenset[str]) -> None:
        """Tasks a person freed may be escalated again later: that is a new escalation."""
        self._told_escalated &= escalated_now

    def _queue_state(self, blocked: tuple[str, ...]) -> None:
        """Blocked reasons are told once each; the record in the history keeps a `kanban merge-queue`
        run from cron from telling the same one every minute."""
        if blocked == self._blocked:
            return
        told = self._last_queue_record()
        self._blocked = blocked
        new = [reason for reason in blocked if reason not in told]
        self._record_queue(blocked)
        for reason in new:
            self.notify(QUEUE_BLOCKED, reason)

    def _last_queue_record(self) -> tuple[str, ...]:
        if self.history is None:
            return ()
        row = self.history.db.execute("SELECT detail FROM events WHERE task='' AND kind=? ORDER BY id DESC LIMIT 1",
                                      ("notify_queue",)).fetchone()
        return tuple(filter(None, (row[0] or "").split("\n"))) if row else ()

    def _record_queue(self, blocked: tuple[str, ...]) -> None:
        if self.history is None:
            return
        if blocked == self._last_queue_record():
            return
        self.history.event("", "notify_queue", detail="\n".join(blocked))

    # -- delivery --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            notice = self._queue.get()
            try:
                if notice is None:
                    return
                outcome = deliver(self.config.command, self.config.timeout, self.root, notice,
                                  on_start=lambda stop: setattr(self, "_current", stop))
                self._current = None
                with self._lock:
                    self._results.append(outcome)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one call
                if notice is not None:
                    with self._lock:
                        self._results.append(Outcome(notice, False, f"failed: {one_line(exc, 200)}"))
            finally:
                self._queue.task_done()

    def flush(self) -> list[str]:
        """On the main thread: record what was delivered, warn once per kind of failure.
        Returns the warning lines printed."""
        from kanban.output import warn

        with self._lock:
            results, self._results = self._results, []
        lines = []
        for outcome in results:
            if self.history is not None:
                with contextlib.suppress(Exception):  # a record must not stop the run
                    self.history.event("", HISTORY_KIND, detail=f"{outcome.notice.shown()}: "
                                       + ("sent" if outcome.ok else f"failed: {outcome.how}"))
            if outcome.ok:
                continue
            key = outcome.how.split(":")[0]  # "not found", "exit status 1", "timed out after 10s; ..."
            if key in self._warned:
                continue
            self._warned.add(key)
            line = f"notify: the [notify] command for {outcome.notice.shown()} {outcome.how}"
            warn(line)
            lines.append(line)
        return lines

    def close(self, *, cancel: bool = False, limit: float | None = None) -> list[str]:
        """Deliver what is queued (each call bounded by its timeout), or with CANCEL drop it;
        then flush. Returns the warning lines printed."""
        self._closed = True
        thread = self._thread
        if thread is not None:
            if cancel:
                try:
                    while True:
                        self._queue.get_nowait()
                        self._queue.task_done()
                except queue_mod.Empty:
                    pass
            pending = self._queue.qsize()
            self._queue.put(None)
            bound = limit if limit is not None else (self.config.timeout + 2 * KILL_GRACE + 1) * (pending + 1)
            thread.join(min(1.0, bound) if cancel else bound)
            current = self._current
            if thread.is_alive() and current is not None:  # interrupted, or past every bound
                current()
                thread.join(2 * KILL_GRACE + 0.5)
        return self.flush()
