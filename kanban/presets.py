"""Agent presets: the real non-interactive command lines of the agent CLIs."""

from __future__ import annotations

PRESET_EXECUTABLES = {"claude": "claude", "codex": "codex", "aider": "aider", "demo": None}


def executable_for(agent) -> str | None:
    """The program an agent config runs (None for the built-in demo agent)."""
    if agent.command:
        return agent.command[0]
    return PRESET_EXECUTABLES.get(agent.preset)
