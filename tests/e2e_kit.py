"""Shared by the end-to-end tests of the real agent CLIs: processes by marker, runs of kanban."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kanban.commands.run import run as run_loop

BOARD_FILES = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")
ESCALATED = frozenset({"ESCALATED"})


def carrying(entry: str) -> list[str]:
    needle = entry.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if needle in environ and state not in (b"Z", b"X"):
            found.append(f"{proc.name}: {cmdline[:300]}")
    return found


def run_kanban(root: Path, capsys) -> tuple[int, str, float]:
    began = time.monotonic()
    code = run_loop(root, no_merge=False, live=False)
    out = capsys.readouterr()
    return code, out.out + out.err, time.monotonic() - began
