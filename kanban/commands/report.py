"""`kanban report`: the history as markdown, printed or written to a file."""

from __future__ import annotations

import sys
from pathlib import Path

from kanban.output import say


def report(root: Path, *, output: Path | None) -> int:
    from kanban.report import build_report

    text = build_report(root)
    if output is None:
        sys.stdout.write(text)
        return 0
    from kanban.store import atomic_write

    target = output if output.is_absolute() else Path.cwd() / output
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, text.encode("utf-8"))
    except OSError as exc:  # name the file asked for, not atomic_write's temporary one
        from kanban.errors import KanbanError, from_environment

        found = from_environment(exc)
        raise KanbanError(f"cannot write the report: {exc.strerror or exc}", file=str(output),
                          hint=found.hint if found else "choose another --output path",
                          code=found.code if found else 2) from None
    say(f"wrote {target}")
    return 0
