"""`kanban run`: tick in a loop, reacting as soon as an agent ends, with a live view.

One run per repository: it holds an flock on `.kanban/run.lock` for its whole life, with
its pid and start time written inside for the message a second run gives. The lock goes
with the process (a crash, a kill -9), so a file left behind never blocks.

Without `--watch` the run ends after a pass that found nothing to do. With it, the run
waits instead: on the agents' ends (pidfds, through the runner), and for the board. Each
wake (twice a second) it compares the stat of the five board files and of the checkout's
git index: a hand edit to TODO.md, a removed [ESCALATED] marker, `kanban retry`, a commit
that cleans the checkout of main all start a pass at once. Otherwise an idle run makes a
full pass only every IDLE_PASS_EVERY seconds (a new day for the budget, a push to retry).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from kanban import locks
from kanban.commands.tick import open_engine
from kanban.errors import KanbanError
from kanban.events import QUEUE_BLOCKED, RUN_FINISHED, Happening
from kanban.merge_queue import drain
from kanban.output import human_duration, say, warn
from kanban.paths import RUN_LOCK, STATE_DIR

WAKE_INTERVAL = 0.5  # the longest wait before noticing a hand edit (or an agent's end without a pidfd)
IDLE_PASS_EVERY = 10.0  # --watch, nothing running and nothing changed: a full pass this often
# Agents running, nothing ending or edited: a full pass this often. A safety net only: while
# every agent runs, nothing a pass does is due by the clock (supervisors enforce timeouts).
RUNNING_PASS_EVERY = 30.0
QUEUE_POLL = 0.01  # how often a loop waiting for agents looks whether the queue's drain is over
MAX_STRAIGHT_ON = 3  # passes in a row without a wait, after passes that moved something
DIRTY_SHOWN = 8  # files named in the dirty-checkout note, then "and N more"


def run(root: Path, *, no_merge: bool, live: bool | None = None, watch: bool = False) -> int:
    import sys

    engine = open_engine(root, agents=True)
    try:
        with run_lock(root), _term_as_interrupt():
            live = sys.stdout.isatty() if live is None else live
            return _run(engine, no_merge=no_merge, live=live, watch=watch)
    finally:
        engine.close()


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """`kill PID` (SIGTERM) ends a run as Ctrl-C does: the same message, agents left supervised.
    SIGINT is made to interrupt even when it came ignored (a run started in the background of a
    script inherits SIGINT ignored, and Python then never installs its handler)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, before_int)


def _run(engine, *, no_merge: bool, live: bool, watch: bool) -> int:
    from kanban.liveview import LiveView, PlainView
    from kanban.notify import Notifier

    engine.run_started_at = time.time()  # what [budget] run counts from
    if not no_merge:
        note = _dirty_checkout_note(engine)
        if note:
            warn(note)
    view = _Once(LiveView(engine, merging=not no_merge) if live else PlainView(engine, merging=not no_merge))
    notifier = Notifier(engine.root, engine.config, engine.history)
    try:
        view.start()
        code, lines = _loop(engine, view, notifier, no_merge=no_merge, watch=watch)
        view.stop(lines)
        notifier.notify(RUN_FINISHED, "; ".join(lines))
        notifier.close()
        return code
    except KeyboardInterrupt:
        view.stop()
        notifier.close(cancel=True)
        still = engine.history.live_runs()
        if still:
            say(f"interrupted: {len(still)} agent(s) still running under their supervisors, timeouts enforced:")
            for r in still:
                pid = engine.runner.pid(r.run_path(engine.runner))
                say(f"  {r.task} {r.role} attempt {r.attempt} " + (f"(pid {pid})" if pid else "(starting)"))
            say("run 'kanban run' or 'kanban tick' to pick up their results, 'kanban stop ID' to stop one")
        else:
            say("interrupted: no agent is running; the board is consistent")
        return 130
    finally:
        view.stop()
        notifier.close(cancel=True)


class _Once:
    """The view, stopped at most once whichever way the run ends."""

    def __init__(self, view) -> None:
        self.view, self.stopped = view, False

    def __getattr__(self, name: str):
        return getattr(self.view, name)

    def stop(self, summary_lines: list[str] | None = None) -> None:
        if not self.stopped:
            self.stopped = True
            self.view.stop(summary_lines)


# --- the loop ---------------------------------------------------------------------------


def _loop(engine, view, notifier, *, no_merge: bool, watch: bool) -> tuple[int, list[str]]:
    started_at = time.monotonic()
    beside = _queue_beside(engine) if not no_merge else None
    if not no_merge and beside is None:
        engine.yield_to = lambda: _verification_ended(engine)
    try:
        return _passes(engine, view, notifier, beside, no_merge=no_merge, watch=watch, started_at=started_at)
    finally:
        if beside is not None:
            beside.close()


def _passes(engine, view, notifier, beside, *, no_merge: bool, watch: bool, started_at: float) -> tuple[int, list[str]]:
    shown_blocked: tuple[str, ...] = ()  # the queue's blocked lines last shown: shown again only when they change
    last_queue = None  # the last drain that was not skipped (another merge queue running)
    idle_said = False
    hurried = 0  # passes in a row that went straight on
    failed_pass = ""  # --watch: why the last pass stopped (a half-typed board), shown once
    while True:
        before = board_signature(engine.root)
        try:
            merged = False

            def show(queue) -> None:
                nonlocal shown_blocked, last_queue, merged
                shown_blocked = _show_queue(view, queue, shown_blocked)
                notifier.queue(queue)
                if not queue.busy:
                    last_queue = queue
                merged = merged or bool(queue.merged or queue.conflicts or queue.failed)
                view.set_queue_state(getattr(beside or engine, "queue_state", None))

            def drain_queue() -> None:
                if beside is not None:
                    beside.poke()  # drained on its thread: shown when its report comes back
                    return
                show(drain(engine, wait=False))  # its verifications run beside the pool

            if beside is not None:
                for queue in beside.reports():
                    show(queue)
            # A verification that ended holds up the queue: land it and start the next one before
            # the agents' handovers, which may take a while (the queue's thread needs no word of it).
            if not no_merge and beside is None and _verification_ended(engine):
                drain_queue()
            report = engine.tick()
            if failed_pass:
                failed_pass = ""
                view.log(Happening("info", "the board reads again; carrying on"))
            _show_tick(view, report)
            notifier.tick(report)
            if not no_merge:
                drain_queue()
        except KanbanError as exc:
            if not watch:
                raise
            # A long watch outlives a person's edit in progress (a copied entry, a duplicate ID):
            # say it once, and try again when the board changes.
            if str(exc) != failed_pass:
                failed_pass = str(exc)
                view.log(Happening("problem", f"this pass stopped: {exc}; waiting for the board to change"))
            notifier.flush()
            view.refresh()
            if not engine.history.live_runs():
                _wait_for_change(engine, view, notifier, before)
            else:
                engine.runner.wait_any(_running(engine), timeout=WAKE_INTERVAL)
            continue
        _forget_freed(engine, notifier)
        notifier.flush()
        view.refresh()
        live_runs = _running(engine)
        if beside is not None and not live_runs and not report.busy and not report.changed:
            beside.wait_idle()  # nothing else under way: the pass ends with its drain, seen here
            for queue in beside.reports(hold_errors=True):  # an error: raised by the next pass's try
                show(queue)
            live_runs = _running(engine)  # that drain may have started a verification
        # A pass that moved anything (a result reaped, a start that failed into a retry) may have
        # left work for the next one: stop only after a pass that found nothing to do.
        idle = not live_runs and not report.busy and not report.changed and not merged and \
            (beside is None or beside.idle())
        if not idle:
            idle_said = False
            # A pass that moved something goes straight on to the next (a bounded number of times
            # in a row, so that nothing can make the loop spin); one that found nothing waits.
            moved = report.changed or merged
            if report.busy or (moved and hurried >= MAX_STRAIGHT_ON):  # another tick holds the lock
                hurried = 0
                engine.runner.wait_any(live_runs, timeout=WAKE_INTERVAL)
            elif moved:
                hurried += 1
            else:
                hurried = 0
                _wait_for_work(engine, view, notifier, live_runs, before, beside)
            continue
        if not watch:
            break
        if not idle_said:
            idle_said = True
            view.log(Happening("info", "nothing to do now; watching the board for new work (Ctrl-C to stop)"))
        _wait_for_change(engine, view, notifier, before)
    return _summary(engine, time.monotonic() - started_at, no_merge=no_merge, queue=last_queue)


def _queue_beside(engine):
    """The merge queue on a thread of its own (kanban.queue_beside) with the local executor; None
    (drained inside the loop) with another, whose runner keeps its own state in this process."""
    from kanban.queue_beside import QueueBeside
    from kanban.runner import LocalRunner

    if not QUEUE_THREAD or type(engine.runner) is not LocalRunner:
        return None
    return QueueBeside(engine, lambda queue_engine, **kw: drain(queue_engine, **kw))


QUEUE_THREAD = True  # bench/queue_beside_pool.py's "before" figure turns it off


def _verification_ended(engine) -> bool:
    return any(not engine.runner.poll(v.run_path(engine.runner)).running
               for v in engine.history.live_verifications() if v.ref)


def _running(engine) -> list[Path]:
    """The run directories of everything running: agents, and the merge queue's verifications. Not a
    planner's: `kanban plan` waits for it, and nothing on the board does."""
    from kanban.config import PLANNER

    return ([r.run_path(engine.runner) for r in engine.history.live_runs() if r.role != PLANNER]
            + [v.run_path(engine.runner) for v in engine.history.live_verifications() if v.ref])


def _wait_for_work(engine, view, notifier, live_runs: list[Path], before: tuple, beside=None) -> None:
    """Agents are running and the last pass found nothing to do: sleep until one of them ends
    (pidfds, through the runner), a board file changes by another hand than ours, a drain on
    the queue's thread is over (its report may hold work: a landing frees a dependent), or a
    full pass is due (RUNNING_PASS_EVERY: budgets, a push to retry). No pass every half second
    for nothing."""
    seen = _others_edits(engine.root, before)
    if seen is None:  # a person edited the board while the pass ran: a pass for it now
        return
    if beside is not None and not live_runs:  # only the queue's drain under way: its report next
        beside.wait_idle()
        return
    deadline = time.monotonic() + RUNNING_PASS_EVERY
    while (left := deadline - time.monotonic()) > 0:
        draining = beside is not None and not beside.idle()
        if engine.runner.wait_any(live_runs, timeout=min(QUEUE_POLL if draining else WAKE_INTERVAL, left)):
            return
        if draining and beside.idle():
            return
        notifier.flush()  # no view.refresh(): nothing it shows changed, or the wait would be over
        if board_signature(engine.root) != seen:
            return


def _others_edits(root: Path, before: tuple) -> tuple | None:
    """The board's signature now, or None if a file changed since BEFORE and not by this process."""
    from kanban.model import COLUMN_FILES
    from kanban.store import written_by_us

    now = board_signature(root)
    for name, was, is_ in zip([*COLUMN_FILES.values(), ".git/index"], before, now):
        if was != is_ and not (name != ".git/index" and written_by_us(root / name, is_)):
            return None
    return now


def _wait_for_change(engine, view, notifier, before: tuple) -> None:
    """Nothing is running: sleep until the board (or the checkout's index) changes, or until
    the next periodic pass. A stat of six files per wake: no busy loop, no ticking for nothing."""
    deadline = time.monotonic() + IDLE_PASS_EVERY
    while time.monotonic() < deadline:
        time.sleep(min(WAKE_INTERVAL, max(0.0, deadline - time.monotonic())))
        notifier.flush()
        if board_signature(engine.root) != before:
            return
        view.refresh()


def board_signature(root: Path) -> tuple:
    """What a cheap look at the board files says about them: changed when any of them was
    written (an editor's rename too: the inode), created or removed."""
    from kanban.model import COLUMN_FILES

    names = [*COLUMN_FILES.values(), ".git/index"]
    out: list[tuple[int, int, int, int] | None] = []
    for name in names:
        try:
            st = os.stat(root / name)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


def _show_tick(view, report) -> None:
    for h in report.events:
        view.log(h)


def _show_queue(view, queue, shown: tuple[str, ...]) -> tuple[str, ...]:
    """The queue's events, its blocked ones only when they differ from those shown last."""
    blocked = tuple(dict.fromkeys(h.text for h in queue.events if h.kind == QUEUE_BLOCKED))
    said = {h.text for h in queue.events}
    for line in queue.lines:  # repair lines and the like come without an event
        if line not in said:
            view.log(line)
    for h in queue.events:
        if h.kind != QUEUE_BLOCKED:
            view.log(h)
    if queue.busy or blocked == shown:
        return shown
    for text in blocked:
        view.log(Happening(QUEUE_BLOCKED, text))
    return blocked


def _forget_freed(engine, notifier) -> None:
    if not notifier.told_escalated:
        return
    from kanban.store import load_board

    try:
        tasks = load_board(engine.root, check=False).tasks()
    except Exception:  # noqa: BLE001 - a half-typed hand edit: look again next pass
        return
    notifier.forget_freed({t.id for t in tasks if t.escalated})


def _summary(engine, elapsed: float, *, no_merge: bool, queue) -> tuple[int, list[str]]:
    """What is left, in lines, and the exit status: 0 when every task on the board is done
    (merged; with --no-merge, ready to merge or waiting in TODO for those merges), 1 when any
    task is escalated or left undone (blocked queue, budget reached) or the queue is blocked."""
    from kanban.store import load_board

    tasks = load_board(engine.root).tasks()
    counts = {c: sum(1 for t in tasks if t.column.value == c) for c in ("TODO", "IN_PROGRESS", "REVIEW", "TESTING")}
    escalated = [t.id for t in tasks if t.escalated]
    ready = [t.id for t in tasks if t.ready]
    # With --no-merge a TODO task waits for merges the person deferred: not a failure.
    left = [t.id for t in tasks if not t.escalated and not (no_merge and (t.ready or t.column.value == "TODO"))]
    waiting = dict(queue.waiting) if queue is not None else {}
    blocked = queue.blocked if queue is not None else None
    lines = [f"nothing left to do after {elapsed:.1f}s: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    if waiting:
        files = sorted({f for fs in waiting.values() for f in fs})
        lines.append("waiting to merge until you commit or stash your changes to " + _some(files) + ": "
                     + ", ".join(waiting))
    others = [t for t in ready if t not in waiting]
    if others:
        lines.append(("ready to merge: " if no_merge else "ready but not merged: ") + ", ".join(others))
    if blocked:
        lines.append(f"merge queue blocked: {blocked}")
    if escalated:
        lines.append("escalated, waiting for a person: " + ", ".join(escalated))
    stuck = [t for t in left if t not in ready]
    if stuck:
        lines.append("not done (blocked by a dependency, a file lease or the merge queue): " + ", ".join(stuck))
    return (1 if escalated or left or blocked or waiting else 0), lines


# --- before the first pass --------------------------------------------------------------


def _dirty_checkout_note(engine) -> str | None:
    """Once, before the run: the person's checkout of main has uncommitted changes (the board
    files and kanban's own directories aside), and a merge touching them will wait."""
    from kanban import git
    from kanban.model import COLUMN_FILES

    main = engine.config.main_branch
    try:
        checkout = git.checkout_of(engine.root, main)
        if checkout is None:
            return None
        dirty = git.dirty_paths(checkout)
    except KanbanError:
        return None
    skip = set(COLUMN_FILES.values())
    skip_dirs = (f"{STATE_DIR}/", engine.config.worktree_dir.rstrip("/") + "/")
    paths = [p for p in dirty if p not in skip and not p.startswith(skip_dirs)]
    if not paths:
        return None
    where = "" if Path(checkout).resolve() == Path(engine.root).resolve() else f" ({checkout})"
    return (f"your checkout of {main}{where} has uncommitted changes in {_some(paths)}: tasks whose changes "
            f"touch them wait to merge until you commit or stash them")


def _some(paths: list[str]) -> str:
    shown = ", ".join(paths[:DIRTY_SHOWN])
    return shown + (f" and {len(paths) - DIRTY_SHOWN} more" if len(paths) > DIRTY_SHOWN else "")


# --- one run per repository -------------------------------------------------------------


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold `.kanban/run.lock` for the whole run; KanbanError naming the holder if another has it."""
    from kanban.store import state_dir

    path = state_dir(root) / RUN_LOCK
    fd = locks.open_lock_file(path)
    try:
        if not locks.acquire(fd, timeout=0):
            raise _held(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.time()}).encode() + b"\n", 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # still locked: no other run reads a half-cleared file
    finally:
        os.close(fd)


def _held(fd: int) -> KanbanError:
    """Who holds the run lock, from what it wrote (it may be a moment away from writing it)."""
    holder: dict = {}
    for _ in range(20):
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            holder = data
            break
        time.sleep(0.01)
    pid = holder.get("pid")
    started = holder.get("started")
    if isinstance(pid, int) and not isinstance(pid, bool) and isinstance(started, (int, float)):
        at = time.localtime(started)
        shown = time.strftime("%H:%M:%S" if at[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S", at)
        ago = human_duration(time.time() - started)
        return KanbanError(f"another 'kanban run' (pid {pid}, started {shown}, {ago} ago) drives this repository",
                           hint=f"stop it first (Ctrl-C in its terminal, or kill {pid})")
    return KanbanError("another 'kanban run' drives this repository",
                       hint="stop it first (Ctrl-C in its terminal)")
