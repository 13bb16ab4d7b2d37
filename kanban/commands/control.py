"""Per-task control: `kanban logs`, `kanban stop`, `kanban retry`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from kanban.board import Board
from kanban.errors import KanbanError
from kanban.ids import check_id
from kanban.model import ESCALATED, RETRY, Column
from kanban.output import say


def logs(root: Path, task_id: str, *, role: str | None, follow: bool, all_runs: bool) -> int:
    from kanban.history import History

    check_id(task_id)
    with History(root, readonly=True) as history:  # reading a log never writes: works on a read-only disk
        runs = [r for r in history.runs(task_id) if role is None or r.role == role]
        if not runs:
            raise KanbanError(f"no agent runs recorded for {task_id}" + (f" as {role}" if role else ""),
                              hint="runs appear once 'kanban tick' has started an agent for the task")
        for r in runs if all_runs else runs[-1:]:
            say(f"==> {r.task} {r.role} attempt {r.attempt}: {r.log}")
            _print_log(Path(r.log), follow and r is runs[-1], history, r.id)
    return 0


def _print_log(path: Path, follow: bool, history, run_id: int) -> None:
    """An agent wrote this log: never block on it or follow a link, and never pass its escape
    sequences on to the terminal (clipboard writes, title changes, a cleared screen)."""
    from kanban.untrusted import clean

    offset = 0
    while True:
        chunk = _read_from(path, offset)
        if chunk:
            text = chunk.decode("utf-8", errors="replace")
            sys.stdout.write(clean(text, max_bytes=len(chunk) * 4 + 16, max_line=1 << 20))
            sys.stdout.flush()
            offset += len(chunk)
            continue  # drain what is there before looking at the run's end
        if not follow or _run_ended(history, run_id):
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


def _run_ended(history, run_id: int) -> bool:
    from kanban.runner import LocalRunner

    run = next(r for r in history.runs() if r.id == run_id)
    return run.ended is not None or not LocalRunner().poll(Path(run.run_dir)).running


def stop(root: Path, task_id: str, *, force: bool) -> int:
    from kanban.history import History
    from kanban.runner import LocalRunner

    check_id(task_id)
    with History(root) as history:
        live = [r for r in history.live_runs() if r.task == task_id]
        if not live:
            raise KanbanError(f"no agent is running for {task_id}", code=1)
        runner = LocalRunner()
        for r in live:
            runner.cancel(Path(r.run_dir), force=force)
            say(f"stopping {task_id} {r.role} attempt {r.attempt} (pid {r.pid})" + (" with SIGKILL" if force else ""))
        runner.wait_any([Path(r.run_dir) for r in live], timeout=10)
    say("the next tick marks the task [ESCALATED]; 'kanban retry' resumes it")
    return 0


def retry(root: Path, task_id: str) -> int:
    """Clear [ESCALATED] so the task resumes with fresh strikes."""
    from kanban.history import History
    from kanban.store import update

    check_id(task_id)

    def change(board: Board) -> Column:
        f, entry = board.require(task_id)
        if ESCALATED not in entry.markers and RETRY not in entry.markers:
            raise KanbanError(f"{task_id} is not escalated", code=1,
                              hint="retry applies to tasks marked [ESCALATED] or [RETRY]")
        board.touch(task_id).set_markers([m for m in entry.markers if m not in (ESCALATED, RETRY)])
        entry.add_note(time.strftime("%Y-%m-%d %H:%M", time.gmtime()) + " UTC resumed with 'kanban retry'")
        return f.column

    column = update(root, change)
    with History(root) as history:
        history.event(task_id, "reset", detail="kanban retry")
    say(f"{task_id} will resume in {column.value} on the next tick")
    return 0
