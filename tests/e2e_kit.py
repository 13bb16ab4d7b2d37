"""Shared by the end-to-end tests of the real agent CLIs: processes by marker, runs of kanban."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kanban.commands.run import run as run_loop

BOARD_FILES = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")
ESCALATED = frozenset({"ESCALATED"})


def carrying(entry: str, under: Path | None = None) -> list[str]:
    """Live processes with ENTRY in their environment, or (UNDER given) working in UNDER: a
    supervisor forked by the spawner has an empty environment but works in its run directory."""
    needle = entry.encode()
    inside = None if under is None else os.fspath(Path(under).resolve())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd") if inside is not None else ""
        except (OSError, IndexError):
            continue
        ours = needle in environ or (inside is not None and (cwd == inside or cwd.startswith(inside + "/")))
        if ours and state not in (b"Z", b"X"):
            found.append(f"{proc.name}: {cmdline[:300]}")
    return found


def is_supervisor(cmdline: str) -> bool:
    """A supervisor: a program of its own, or forked by the spawner (whose command line it keeps)."""
    return "kanban.supervisor" in cmdline or "kanban.spawner" in cmdline


def run_kanban(root: Path, capsys) -> tuple[int, str, float]:
    began = time.monotonic()
    code = run_loop(root, no_merge=False, live=False)
    out = capsys.readouterr()
    return code, out.out + out.err, time.monotonic() - began
