"""`kanban run`'s merge queue on a thread of its own, beside the pool's loop.

Each drain of the queue is git work: building the merge, checking the person's checkout,
landing, removing the branch. Done inside the loop, its 50 ms or so per task kept finished
agents waiting for their handover (100 short tasks: a third of the loop's time). On a
thread the drains overlap the handovers; both spend most of their time waiting on git,
which holds no lock of ours.

What makes it safe is what already makes `kanban tick` and `kanban merge-queue` safe to run
at once in two processes: every shared state is behind a file lock (the board's, the merge
queue's, the worktrees'), and each side has its own history connection, its own runner
(a LocalRunner keeps nothing a second one cannot read from the run files) and its own
engine. The loop pokes the queue whenever a pass may have made work for it (a task became
ready), and takes the queue's reports back to show them. The queue waits on its own
verifications: the one that ends is landed, and the check armed behind it released, at once,
not after the loop's next pass (which may be busy with handovers for a while).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from kanban.merge_queue import QueueReport

POKE_STEP = 0.05  # while its verifications run, how often the queue's thread looks for a poke


class QueueBeside:
    """Drains on a worker thread, one at a time, each run once per poke (pokes meanwhile: one more)
    or when one of the queue's verifications ends."""

    def __init__(self, engine, drain) -> None:
        self._of = engine  # the loop's: the queue's own engine is made (and closed) on its thread
        self.queue_state = None  # the queue engine's after its last drain, for the live view
        self._drain = drain
        self._wake = threading.Event()
        self._busy = False  # set before the poke is taken, cleared with the report put out
        self._state = threading.Lock()  # a report out and busy cleared are one step for idle()
        self._stopping = False
        self._reports: queue.SimpleQueue[QueueReport | BaseException] = queue.SimpleQueue()
        self._held: BaseException | None = None  # a drain's error kept for the loop's next reports()
        self._seen_ended: set[Path] = set()  # run directories of verifications whose end woke the thread
        self._thread = threading.Thread(target=self._serve, name="kanban-merge-queue", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def idle(self) -> bool:
        """Nothing asked of the queue is under way or unreported (asked in this order: a report is
        out before the thread says it is no longer busy)."""
        with self._state:
            return not self._busy and not self._wake.is_set() and self._reports.empty() and self._held is None

    def wait_idle(self, step: float = 0.005) -> None:
        """Until the drains asked for are over (a drain never waits for a verification: short)."""
        while not self.idle() and self._reports.empty() and self._held is None and self._thread.is_alive():
            time.sleep(step)

    def reports(self, hold_errors: bool = False) -> list[QueueReport]:
        """The drains' reports since the last call; a drain's error is raised here, in the loop,
        or (HOLD_ERRORS) kept for the next call, the reports before it returned."""
        found: list[QueueReport] = []
        while True:
            if self._held is not None:
                item: QueueReport | BaseException = self._held
            else:
                try:
                    item = self._reports.get_nowait()
                except queue.Empty:
                    return found
            if isinstance(item, BaseException):
                if hold_errors:
                    self._held = item
                    return found
                self._held = None
                raise item
            found.append(item)

    def close(self, timeout: float = 30.0) -> None:
        """Let the drain under way finish (bounded), then end the thread and its engine."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)

    def _serve(self) -> None:
        from kanban.engine import Engine
        from kanban.history import History

        # Its own history connection (sqlite's are per thread) and runner. Its first drain makes the
        # merge queue's repairs, as `kanban merge-queue` beside a `kanban tick` would.
        engine = Engine(self._of.root, self._of.config, History(self._of.root),
                        runner=type(self._of.runner)(self._of.root))
        engine.run_started_at = self._of.run_started_at
        try:
            while True:
                self._await_work(engine)
                with self._state:
                    self._busy = True
                    self._wake.clear()
                if self._stopping:
                    return
                outcome: QueueReport | BaseException
                try:
                    outcome = self._drain(engine, wait=False)
                    self.queue_state = getattr(engine, "queue_state", None)
                except BaseException as exc:  # noqa: BLE001 - shown by the loop, which decides
                    outcome = exc
                with self._state:
                    self._reports.put(outcome)
                    self._busy = False
        finally:
            self._busy = False
            engine.close()

    def _await_work(self, engine) -> None:
        """Until a poke, or the end of a verification the queue started (pidfds, through the runner).
        A run seen ended wakes the thread once: a drain that could not take it (another queue holds
        the merge lock) must not make it spin."""
        live = {v.run_path(engine.runner) for v in engine.history.live_verifications() if v.ref and not v.armed}
        self._seen_ended &= live
        running = list(live - self._seen_ended)
        while running and not self._wake.is_set():
            ended = engine.runner.wait_any(running, timeout=POKE_STEP)
            if ended:
                self._seen_ended.update(ended)
                return
        self._wake.wait()
