"""Per-task control: `kanban logs`, `kanban stop`, `kanban retry`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from kanban.board import Board
from kanban.errors import KanbanError
from kanban.ids import check_id
from kanban.model import ESCALATED, RETRY, Column
from kanban.output import say


class _Shown(NamedTuple):
    """One run `kanban logs` can show: an agent's, the [test] command's, or a `[merge] verify`."""

    label: str  # "reviewer attempt 2", "verify at 1a2b3c4d5e with TASK-2"
    how: str  # how it ended, in words
    log: Path
    started: float
    run_id: int | None  # of an agent or test run
    verification_id: int | None = None


def logs(root: Path, task_id: str, *, role: str | None, follow: bool, all_runs: bool) -> int:
    from kanban.history import History

    check_id(task_id)
    with History(root, readonly=True) as history:  # reading a log never writes: works on a read-only disk
        shown = _runs_of(root, history, task_id, role)
        if not shown:
            if not _known(root, task_id, history):
                raise unknown_task(task_id)
            raise KanbanError(f"no agent runs recorded for {task_id}" + (f" as {role}" if role else ""),
                              hint="runs appear once 'kanban tick' has started an agent for the task")
        if len(shown) > 1 and not all_runs:
            say(f"{task_id}: {len(shown)} runs, the latest shown ('kanban logs {task_id} --all' prints every log)")
            width = min(20, max(len(s.label) for s in shown))
            for s in shown:
                say(f"  {s.label:<{width}}  {s.how}")
        for s in shown if all_runs else shown[-1:]:
            say(f"==> {task_id} {s.label}: {s.how}")
            say(f"    {_relative(root, s.log)}")
            _print_log(s.log, follow and s is shown[-1], history, s, root)
    return 0


def _runs_of(root: Path, history, task_id: str, role: str | None) -> list[_Shown]:
    """The task's agent runs, test runs and verify runs (`--role verify`: only those), oldest first."""
    from kanban.report import run_how, verification_how, verification_title

    now = time.time()
    found = [_Shown(f"{r.role} attempt {r.attempt}", run_how(r, now=now, stall=_stall_of(root, r)),
                    Path(r.log), r.started, r.id)
             for r in history.runs(task_id) if role is None or r.role == role]
    if role in (None, "verify"):
        found += [_Shown(verification_title(v, task_id), verification_how(v, now=now), Path(v.log),
                         v.started, None, v.id)
                  for v in history.verifications(task_id)]
    return sorted(found, key=lambda s: (s.started, s.verification_id is not None))


def _stall_of(root: Path, run) -> float | None:
    """The stall limit the run had (as the runner recorded it), when it stalled."""
    if not run.stalled:
        return None
    runner = _runner(root)
    spec = runner.spec(run.run_path(runner))
    return (spec.stall or None) if spec else None  # a stall of 0 is none


def _relative(root: Path, path: Path) -> str:
    from kanban.untrusted import clean

    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return clean(shown, max_bytes=2000, max_line=1000)


def _known(root: Path, task_id: str, history) -> bool:
    """Whether any board file (CHANGELOG.md too) or the history knows the task."""
    from kanban.store import load_board

    if task_id in load_board(root, check=False).all_ids():  # a board that breaks a rule still names its tasks
        return True
    return bool(history.runs(task_id) or history.events(task_id) or history.verifications(task_id))


def _require_known(root: Path, task_id: str) -> None:
    from kanban.history import History

    with History(root, readonly=True) as history:
        if not _known(root, task_id, history):
            raise unknown_task(task_id)


def unknown_task(task_id: str) -> KanbanError:
    """The one answer of logs, stop and retry for an ID that no board file and no history knows."""
    return KanbanError(f"no task {task_id} on the board or in its history", hint="'kanban status' lists the tasks")


def _print_log(path: Path, follow: bool, history, run: _Shown, root: Path) -> None:
    """An agent wrote this log: never block on it or follow a link, and never pass its escape
    sequences on to the terminal (clipboard writes, title changes, a cleared screen)."""
    from kanban.untrusted import clean

    offset = 0
    while True:
        ended = not follow or _ended(history, run, root)  # asked first: what it wrote before its end is read
        while chunk := _read_from(path, offset):
            text = chunk.decode("utf-8", errors="replace")
            sys.stdout.write(clean(text, max_bytes=len(chunk) * 4 + 16, max_line=1 << 20))
            sys.stdout.flush()
            offset += len(chunk)
        if ended:
            return
        time.sleep(0.2)


def _read_from(path: Path, offset: int, limit: int = 1 << 20) -> bytes:
    """Up to LIMIT bytes of a regular file from OFFSET; nothing for a FIFO, a link or a device."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, limit, offset)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _ended(history, run: _Shown, root: Path) -> bool:
    if run.verification_id is not None:
        v = next(v for v in history.verifications() if v.id == run.verification_id)
        return v.ended is not None or not _queue_running(root)
    return run.run_id is None or _run_ended(root, history, run.run_id)


def _run_ended(root: Path, history, run_id: int) -> bool:
    run = next(r for r in history.runs() if r.id == run_id)
    runner = _runner(root)
    return run.ended is not None or not runner.poll(run.run_path(runner)).running


def _runner(root: Path):
    """The runner `[executor]` names (kanban.executors.runner_for)."""
    from kanban.config import load_config
    from kanban.executors import runner_for

    return runner_for(root, load_config(root))


def _queue_running(root: Path) -> bool:
    """Whether a merge queue holds its lock (a verify it left open when it died has ended too).
    Asked without writing: the lock file is opened read-only, never created."""
    from kanban import locks, paths

    return locks.is_held(paths.merge_lock(root))


def stop(root: Path, task_id: str, *, force: bool) -> int:
    from kanban.history import History

    check_id(task_id)
    _require_known(root, task_id)  # before the history is opened for writing: an unknown ID creates nothing
    with History(root) as history:
        live = [r for r in history.live_runs() if r.task == task_id]
        if not live:
            raise KanbanError(f"no agent is running for {task_id}", code=1)
        runner = _runner(root)
        for r in live:
            runner.cancel(r.run_path(runner), force=force)
            pid = runner.pid(r.run_path(runner))
            say(f"stopping {task_id} {r.role} attempt {r.attempt}" + (f" (pid {pid})" if pid else "")
                + (" with SIGKILL" if force else ""))
        runner.wait_any([r.run_path(runner) for r in live], timeout=10)
    say("the next tick marks the task [ESCALATED]; 'kanban retry' resumes it")
    return 0


def retry(root: Path, task_id: str) -> int:
    """Clear [ESCALATED] (or [RETRY]) so the task resumes with fresh strikes: the table's
    RETRY_REQUESTED rows decide, and their RESUME action resets the strikes."""
    from kanban.engine import carry_out, state_of
    from kanban.history import History
    from kanban.machine import Action, Event, InvalidTransition, transition
    from kanban.store import load_board, update

    check_id(task_id)
    board = load_board(root, check=False)
    if board.find(task_id) is None:
        _require_known(root, task_id)
        where = "it is merged (in CHANGELOG.md)" if task_id in board.done_ids else "only its history is left"
        raise KanbanError(f"{task_id} is not on the board: {where}",
                          hint="retry applies to tasks marked [ESCALATED] or [RETRY] in a board file")

    note = time.strftime("%Y-%m-%d %H:%M", time.gmtime()) + " UTC resumed with 'kanban retry'"
    with History(root, readonly=True) as history:  # a refused retry writes nothing
        strikes = history.strikes(task_id)

    def change(board: Board) -> tuple[Column, Column, Action]:
        f, entry = board.require(task_id)
        try:
            tr = transition(state_of(f, entry, strikes), Event.RETRY_REQUESTED)
        except InvalidTransition:  # neither marker: nothing to resume
            raise KanbanError(f"{task_id} is not escalated", code=1,
                              hint=f"retry applies to tasks marked [{ESCALATED}] or [{RETRY}]") from None
        carry_out(board, task_id, tr, note)
        return f.column, tr.column, tr.action

    source, column, action = update(root, change)
    with History(root) as history:
        history.event(task_id, Event.RETRY_REQUESTED.value, source.value, column.value, note)
        if action is Action.RESUME:  # every RETRY_REQUESTED row's: fresh strikes
            history.event(task_id, "reset", detail="kanban retry")
    say(f"{task_id} will resume in {column.value} on the next tick")
    return 0
