"""`kanban merge-queue`: drain tasks that are ready to merge into main."""

from __future__ import annotations

from pathlib import Path

from kanban.commands.tick import open_engine
from kanban.merge_queue import drain
from kanban.output import emit_json, say, warn


def merge_queue(root: Path, *, batch: bool, dry_run: bool, as_json: bool) -> int:
    from kanban.notify import Notifier

    engine = open_engine(root)
    # [notify]: a held branch (escalated) or a blocked queue, told once (people run this from cron)
    notifier = None if dry_run else Notifier(root, engine.config, engine.history)
    try:
        report = drain(engine, batch=True if batch else None, dry_run=dry_run)
        if notifier is not None:
            notifier.queue(report)
        code = _show(report, as_json)
        if notifier is not None:
            notifier.close()  # each call bounded by [notify] timeout
        return code
    finally:
        if notifier is not None:
            notifier.close(cancel=True)
        engine.close()


def _show(report, as_json: bool) -> int:
    if as_json:
        emit_json({"merged": report.merged, "conflicts": report.conflicts, "failed": report.failed,
                   "verifications": report.verifications, "blocked": report.blocked, "busy": report.busy,
                   "waiting": report.waiting,
                   "lines": report.lines})
    else:
        for line in report.lines:
            say(line)
        if report.busy:
            say("another merge queue is running; nothing done")
        elif not report.lines:
            say("nothing is ready to merge")
        if report.verifications:
            say(f"{report.verifications} verification run(s)")
        if report.blocked:
            warn(f"stopped: {report.blocked}")
    return 1 if (report.blocked or report.conflicts or report.failed or report.waiting) else 0
