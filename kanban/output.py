"""The one place that writes to the terminal: rich for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any


@cache
def console():
    from rich.console import Console  # imported on first use: keeps `kanban --help` fast

    return Console(highlight=False, soft_wrap=False)


@cache
def err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def say(message: str = "", *, style: str | None = None) -> None:
    console().print(message, style=style, markup=False, soft_wrap=True)


def show(renderable: Any) -> None:
    console().print(renderable)


def warn(message: str) -> None:
    err_console().print(f"warning: {message}", style="yellow", markup=False)


def error(message: str) -> None:
    # Plain write: error lines must be one clean line even without a terminal.
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """A line for the person on stderr, where stdout carries the command's output (a plan)."""
    err_console().print(message, markup=False)


def emit_text(text: str) -> None:
    """TEXT on stdout exactly as it is (markdown meant to be saved or piped): no markup, wrapping
    or emoji codes."""
    sys.stdout.write(text)
    sys.stdout.flush()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def human_duration(seconds: float) -> str:
    """15m, 1h30m, 42s, 2d3h: the units a person reads, the largest two that matter."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s}s" if s else f"{m}m"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(h, 24)
    return f"{d}d{h}h" if h else f"{d}d"
