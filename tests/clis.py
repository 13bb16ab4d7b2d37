"""Where the tests find the real agent CLIs: PATH, then KANBAN_AGENT_TOOLS, then .ci/run's cache.

Read once at import, before the sealed HOME of conftest replaces the real one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_CACHE = Path(os.environ.get("KANBAN_CI_CACHE") or Path.home() / ".cache" / "kanban-ci")
TOOL_DIRS = [d for d in os.environ.get("KANBAN_AGENT_TOOLS", "").split(os.pathsep) if d] + [
    str(_CACHE / "npm" / "node_modules" / ".bin"), str(_CACHE / "aider" / "bin")]


def find_cli(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in TOOL_DIRS:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def require_cli(name: str) -> str:
    """The CLI's path, or skip the test: the CI installs all three (.ci/run)."""
    path = find_cli(name)
    if path is None:
        pytest.skip(f"{name} CLI not installed (" + {"claude": "npm i -g @anthropic-ai/claude-code",
                                                     "codex": "npm i -g @openai/codex",
                                                     "aider": "pip install aider-chat"}.get(name, "see the README")
                    + ", or put its folder in KANBAN_AGENT_TOOLS; .ci/run installs it)")
    return path
