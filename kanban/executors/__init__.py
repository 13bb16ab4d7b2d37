"""Where runs go: the one place that turns `[executor]` into a Runner (kanban.runner's protocol).

"local" (the default) is kanban.runner.LocalRunner: a detached supervisor per run on this
machine. "ray" is kanban.executors.ray_runner.RayRunner: each run a Ray job on a cluster, its
work travelling through a shared git remote (docs/ray.md). Ray is an optional extra
(`pip install "kanban-agents[ray]"`): chosen for its Jobs API (a command with its own environment,
its logs streamed, `stop_job` killing the whole process tree) and for a whole cluster that
runs on one machine for the tests.
"""

from __future__ import annotations

from pathlib import Path

from kanban.config import Config
from kanban.errors import BAD_INPUT, KanbanError
from kanban.runner import LocalRunner, Runner


def runner_for(root: Path, config: Config) -> Runner:
    """The Runner `[executor] kind` names, for the repository at ROOT."""
    if config.executor.kind == "local":
        return LocalRunner(root)
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # the extra is not installed
        raise KanbanError('[executor] kind = "ray" needs Ray, which is not installed', file=config.source,
                          code=BAD_INPUT, hint='pip install "kanban-agents[ray]", or set kind = "local"')
    from kanban.executors.ray_runner import RayRunner

    return RayRunner(root, config)
