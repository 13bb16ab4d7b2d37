"""Can each role's agent start at all? Checked before `tick` or `run` picks anything.

A missing CLI or key would otherwise make every picked task burn its strikes
on starts that cannot succeed. The checks look at what the agent will get:
the PATH of its filtered environment, the credentials the preset's CLI reads,
and, for claude as root, IS_SANDBOX=1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from kanban.config import ROLES, Config
from kanban.errors import KanbanError
from kanban.presets import executable_for, missing_credentials, preset_env


class Problem(NamedTuple):
    program: str  # the CLI the roles run
    roles: tuple[str, ...]
    message: str


def role_env(root: Path, config: Config, role: str) -> dict[str, str]:
    """The environment an agent of ROLE would get, as far as it is known before a task."""
    agent = config.agent_for(role)
    env = config.env.filter(dict(os.environ))
    for name, value in preset_env(agent).items():
        env.setdefault(name, value)
    env["KANBAN_WORKTREE"] = str(root)
    return env


def find_program(program: str, env: dict[str, str]) -> str | None:
    if os.sep in program:
        return program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    return shutil.which(program, path=env.get("PATH", ""))


def problems(root: Path, config: Config, roles: tuple[str, ...] = ROLES) -> list[Problem]:
    """Each distinct reason an agent of ROLES (the pipeline's) cannot start, with the roles it affects."""
    found: dict[tuple[str, str], list[str]] = {}
    for role in roles:
        agent = config.agent_for(role)
        env = role_env(root, config, role)
        program = executable_for(agent)
        if program and find_program(program, env) is None:
            what = "command" if agent.command else f"preset {agent.preset!r}"
            found.setdefault((program, f"{program} is not on the agents' PATH (its {what}); install it, "
                             "or set [agent] preset or command in kanban.toml"), []).append(role)
            continue
        reason = missing_credentials(agent, env)
        if reason:
            found.setdefault((program or agent.preset, reason), []).append(role)
    return [Problem(program, tuple(roles), message) for (program, message), roles in found.items()]


def sandbox_problem(config: Config) -> Problem | None:
    """The roles whose `sandbox = "bwrap"` cannot work here (bubblewrap missing or unusable)."""
    roles = tuple(r for r in ROLES if config.agent_for(r).sandbox == "bwrap")
    if not roles:
        return None
    from kanban.sandbox import available

    ok, why = available()
    if ok:
        return None
    return Problem("bwrap", roles, f'sandbox = "bwrap" but {why}; install bubblewrap (apt-get install '
                                   'bubblewrap) or set sandbox = "none" in kanban.toml')


def check(root: Path, config: Config, roles: tuple[str, ...] = ROLES) -> None:
    """KanbanError (exit 2) naming the roles and the fix when any agent of ROLES cannot start."""
    found = problems(root, config, roles) + [p for p in [sandbox_problem(config)] if p and set(p.roles) & set(roles)]
    if not found:
        return
    lines = [f"{_where(p.roles)} cannot start: {p.message}" for p in found]
    raise KanbanError("; ".join(lines), file=config.source and Path(config.source).name,
                      hint="nothing was started and the board is unchanged")


def _where(roles: tuple[str, ...]) -> str:
    return "[agent]" if set(roles) == set(ROLES) else ", ".join(f"[agent.{r}]" for r in roles)
