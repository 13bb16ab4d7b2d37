"""The one place that writes to the terminal: rich for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=None)
def console():
    from rich.console import Console  # imported on first use: keeps `kanban --help` fast

    return Console(highlight=False, soft_wrap=False)


@lru_cache(maxsize=None)
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


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
