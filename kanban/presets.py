"""Agent presets: the real non-interactive command lines of the agent CLIs."""

from __future__ import annotations

PRESET_EXECUTABLES = {"claude": "claude", "codex": "codex", "aider": "aider", "demo": None}


def executable_for(agent) -> str | None:
    """The program an agent config runs (None for the built-in demo agent)."""
    if agent.command:
        return agent.command[0]
    return PRESET_EXECUTABLES.get(agent.preset)


# --- temporary minimal API (replaced by the full presets) ---
import sys as _sys


def build_argv(agent, placeholders):
    argv = list(agent.command) if agent.command else [_sys.executable, "-m", "kanban.demo_agent", "{prompt_file}"]
    return [a.format_map(placeholders) for a in argv + list(agent.extra_args)]


def missing_credentials(agent, env):
    return None


def parse_cost(preset, text):
    return {}


def preset_env(agent):
    return {}
