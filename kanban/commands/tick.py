"""`kanban tick`: one non-blocking pass: reap, transition, fill free slots; returns at once."""

from __future__ import annotations

from pathlib import Path

from kanban.output import emit_json, say, warn


def check_repository(root: Path, config) -> None:
    """Exit 2, one line, unless ROOT is a git repository whose main branch exists."""
    from kanban import git
    from kanban.errors import KanbanError

    if git.toplevel(root) is None:
        raise KanbanError(f"{root} is not a git repository", hint="run 'git init' and commit, then 'kanban init'")
    if not git.branch_exists(root, config.main_branch):
        raise KanbanError(f"no branch {config.main_branch!r} in this repository",
                          file=config.source and Path(config.source).name,
                          hint="commit something first, or set main_branch in kanban.toml")


def open_engine(root: Path, *, agents: bool = False):
    """Config, history and engine for a repository, after the checks every pass needs.

    AGENTS: the pass may start agents, so each role's CLI and credentials must be there
    (exit 2 before anything moves otherwise)."""
    from kanban.config import load_config
    from kanban.engine import Engine
    from kanban.errors import KanbanError
    from kanban.history import History
    from kanban.store import load_board

    config = load_config(root)
    try:
        load_board(root)  # a bad board is exit 2 before anything runs
    except KanbanError:
        from kanban.repair import find_duplicates

        # an entry left in two files by a crash is not bad input: the pass repairs it first
        if not find_duplicates(root, config, load_board(root, check=False), None):
            raise
    check_repository(root, config)
    from kanban.agents import check_worktree_dir

    check_worktree_dir(root, config)
    if agents:
        from kanban import startable

        startable.check(root, config)
        from kanban.prompts import check_templates

        check_templates(root)  # a prompt that is a FIFO or a device: exit 2 before anything moves
    return Engine(root, config, History(root))


def tick(root: Path, *, dry_run: bool, as_json: bool) -> int:
    from kanban.notify import Notifier

    engine = open_engine(root, agents=not dry_run)
    # [notify]: escalations and budgets of this pass, told once (people run this from cron)
    notifier = None if dry_run else Notifier(root, engine.config, engine.history)
    try:
        report = engine.tick(dry_run=dry_run)
        if notifier is not None:
            notifier.tick(report)
        code = _show(report, as_json)
        if notifier is not None:
            notifier.close()  # each call bounded by [notify] timeout
        return code
    finally:
        if notifier is not None:
            notifier.close(cancel=True)
        engine.close()


def _show(report, as_json: bool) -> int:
    if as_json:
        emit_json({"busy": report.busy, "repaired": report.repaired, "reaped": report.reaped,
                   "started": report.started,
                   "problems": report.problems,
                   "would_start": [{"task": s.task_id, "role": s.role.value, "pick": s.pick}
                                   for s in report.planned]})
        return 0
    if report.busy:
        say("another tick is running; nothing done")
    for line in report.repaired:
        say("repair: " + line)
    for line in report.reaped + report.started:
        say(line)
    for line in report.problems:
        warn(line)
    for s in report.planned:
        say(f"would start: {s.task_id} {s.role.value}" + (" (picked from TODO)" if s.pick else ""))
    if not (report.reaped or report.started or report.planned or report.busy or report.repaired):
        say("nothing to do")
    return 0
