"""`kanban preflight`: every check before spawning agents, each shown as pass or fail."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from kanban.model import COLUMN_FILES
from kanban.output import emit_json, say
from kanban.paths import STATE_DIR, worktree_root

MIN_FREE_DISK = 1 << 30


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str


def preflight(root: Path, *, as_json: bool, repair: bool = False) -> int:
    from kanban.config import load_config
    from kanban.store import load_board

    config = load_config(root)  # a bad config: exit 2 before any check runs
    fixes = run_repair(root, config) if repair else []
    board = load_board(root, check=False)  # a board that breaks a rule fails its line; the rest still run
    results = run_checks(root, config, board)
    if as_json:
        out = {"ok": all(c.ok for c in results), "checks": [c._asdict() for c in results]}
        if repair:
            out["repaired"] = fixes
        emit_json(out)
    else:
        if repair:
            for line in fixes:
                say(f"repair: {line}")
            say(f"repair: {len(fixes)} fix(es)" if fixes else "repair: nothing to fix")
        for c in results:
            say(f"{'pass' if c.ok else 'FAIL'}  {c.name}: {c.detail}", style=None if c.ok else "red")
        failed = sum(not c.ok for c in results)
        say(f"{len(results) - failed} passed, {failed} failed")
    if any(c.name == "board" and not c.ok for c in results):
        return 2  # bad input, as every command says of that board
    return 0 if all(c.ok for c in results) else 1


def run_repair(root: Path, config) -> list[str]:
    """The full repair, with the tick and merge locks held so no kanban pass races it.

    If a tick or a merge queue is running, only the repairs safe beside it are made.
    """
    from kanban import git
    from kanban.engine import tick_lock
    from kanban.history import History
    from kanban.merge_queue import merge_lock
    from kanban.repair import repair

    if git.toplevel(root) is None or not git.branch_exists(root, config.main_branch):
        return []
    with History(root) as history, tick_lock(root, wait=10.0) as ticked, merge_lock(root) as merging:
        scope = "full" if ticked and merging else "tick" if ticked else "merge" if merging else None
        if scope is None:
            return ["a tick and a merge queue are running; repair skipped, run it again when they finish"]
        lines = repair(root, config, history, scope=scope)
        if scope != "full":
            lines.append("a tick or merge queue is running: only the repairs safe beside it were made")
        return lines


def run_checks(root: Path, config, board) -> list[Check]:
    from kanban import git

    results = [_git_version(), _board(board)]
    top = git.toplevel(root)
    if top is None:
        return results + [Check("repository", False, f"{root} is not a git repository; run 'git init'")]
    steps: list[Callable[[], Check]] = [
        lambda: _main_branch(root, config.main_branch),
        lambda: _clean_checkout(root, config),
        lambda: _state_dirs_ignored(root, config),
        lambda: _capacity(root, config),
        lambda: _stale(root, config, board),
    ]
    results += [step() for step in steps]
    results += _agent_clis(root, config)
    results.append(_sandbox(config))
    results += _services(root, config)
    if config.executor.kind == "ray":
        results += _cluster(root, config)
    return results


def _cluster(root: Path, config) -> list[Check]:
    """The Ray cluster and the shared remote ([executor] kind = "ray"; docs/ray.md)."""
    try:
        from kanban.executors.ray_runner import cluster_checks
    except ImportError as exc:
        return [Check("ray", False, f"Ray is not installed ({exc}); pip install \"kanban-agents[ray]\"")]
    return [Check(name, ok, detail) for name, ok, detail in cluster_checks(root, config)]


def _sandbox(config) -> Check:
    """Whether bubblewrap works here; fails only when a role asks for it (sandbox = "bwrap")."""
    from kanban.config import ROLES
    from kanban.sandbox import available

    roles = [r for r in ROLES if config.agent_for(r).sandbox == "bwrap"]
    if roles and config.executor.kind != "local":  # the agents run on the workers: checked there
        return Check("sandbox", True, 'sandbox = "bwrap" on the workers (the probe job checks bubblewrap there)')
    ok, why = available()
    if roles:
        where = "[agent]" if len(roles) == len(ROLES) else ", ".join(f"[agent.{r}]" for r in roles)
        if ok:
            return Check("sandbox", True, f"{where} sandbox = \"bwrap\": {why}")
        return Check("sandbox", False, f'{where} sandbox = "bwrap" but {why}; install bubblewrap '
                                       '(apt-get install bubblewrap) or set sandbox = "none"')
    if ok:
        return Check("sandbox", True, f'off (sandbox = "none"); bubblewrap works here ({why}): set [agent] '
                                      'sandbox = "bwrap" to confine agents to their worktree and branch')
    return Check("sandbox", True, f'off (sandbox = "none"); bubblewrap is not usable here: {why}')


def _board(board) -> Check:
    """The board files keep the rules (kanban.board.validate: IDs, priorities, files, depends)."""
    from kanban.commands.status import board_problem

    problem = board_problem(board)
    if problem is not None:
        return Check("board", False, str(problem))
    tasks = board.tasks()
    new = len(board.new_entries())
    return Check("board", True, f"{len(tasks)} task(s) on the board" + (f", {new} new" if new else "")
                 + f", {len(board.done_ids)} done; every depends names a task and has an end")


def _git_version() -> Check:
    from kanban import git

    have = git.version()
    shown = ".".join(map(str, have))
    ok = have >= git.MIN_VERSION
    need = ".".join(map(str, git.MIN_VERSION))
    return Check("git", ok, f"git {shown}" + ("" if ok else f"; kanban needs {need} or newer for merge-tree"))


def _main_branch(root: Path, main: str) -> Check:
    from kanban import git

    if not git.has_commits(root):
        return Check("main branch", False, "the repository has no commits yet; make a first commit")
    if not git.branch_exists(root, main):
        current = git.current_branch(root) or "a detached HEAD"
        return Check("main branch", False, f"no branch {main!r} (HEAD is on {current}); "
                                           f"set main_branch in kanban.toml")
    return Check("main branch", True, f"{main} at {git.rev_parse(root, main)[:10]}")


def _clean_checkout(root: Path, config) -> Check:
    from kanban import git

    skip = set(COLUMN_FILES.values())
    skip_dirs = (f"{STATE_DIR}/", config.worktree_dir.rstrip("/") + "/")
    changed = [p for code, p in git.status_porcelain(root)
               if code != "??" and p not in skip and not p.startswith(skip_dirs)]
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        return Check("clean checkout", False, "uncommitted changes in " + ", ".join(changed[:5]) + more
                     + "; commit or stash them")
    return Check("clean checkout", True, "no uncommitted changes outside the board files")


def _state_dirs_ignored(root: Path, config) -> Check:
    from kanban import git

    loose = [d for d in (STATE_DIR, config.worktree_dir) if not git.is_ignored(root, d.rstrip("/") + "/x")]
    if loose:
        return Check("ignored state", False, ", ".join(loose) + " not ignored by git; run 'kanban init'")
    return Check("ignored state", True, f"{STATE_DIR}/ and {config.worktree_dir}/ are ignored by git")


def _capacity(root: Path, config) -> Check:
    running = _running_count(root)
    free_disk = shutil.disk_usage(root).free
    if free_disk < MIN_FREE_DISK:
        return Check("capacity", False, f"only {free_disk >> 20} MiB free on disk; worktrees need room")
    free = config.pool_size - running
    return Check("capacity", free > 0, f"{free} of {config.pool_size} agent slots free, "
                                       f"{free_disk >> 30} GiB free on disk")


def _running_count(root: Path) -> int:
    try:
        from kanban.history import running_agents
    except ImportError:
        return 0
    return len(running_agents(root))


def _stale(root: Path, config, board) -> Check:
    from kanban import git
    from kanban.ids import branch_name

    active = {t.id for t in board.tasks() if t.column.value != "TODO"}
    wt_root = worktree_root(root, config.worktree_dir).resolve()
    stale = [f"worktree {w.path.name}" for w in git.worktrees(root)
             if w.path.parent == wt_root and w.path.name not in active]
    stale += [f"branch {b}" for b in git.branches(root, "refs/heads/kanban/")
              if b not in {branch_name(i) for i in active}]
    if stale:
        return Check("stale worktrees", False, ", ".join(stale[:6]) + (" ..." if len(stale) > 6 else "")
                     + " belong to no task in progress; remove them or run 'kanban preflight --repair'")
    return Check("stale worktrees", True, "every kanban worktree and branch belongs to a task")


def _agent_clis(root: Path, config) -> list[Check]:
    from kanban import startable
    from kanban.presets import executable_for

    problems = startable.problems(root, config)
    checks = [Check(f"agent {p.program}", False, f"{', '.join(p.roles)}: {p.message}") for p in problems]
    broken = {role for p in problems for role in p.roles}
    seen = set()
    for role in ("task", "reviewer", "tester"):
        exe = executable_for(config.agent_for(role))
        if role in broken or exe is None or exe in seen:
            continue
        seen.add(exe)
        found = startable.find_program(exe, startable.role_env(root, config, role))
        checks.append(Check(f"agent {exe}", True, f"{found}, credentials found"))
    return checks


def _services(root: Path, config) -> list[Check]:
    from kanban.services import probe_command, probe_tcp, probe_url

    checks = []
    for svc in config.checks:
        if svc.url:
            ok, detail = probe_url(svc.url, svc.timeout)
        elif svc.tcp:
            ok, detail = probe_tcp(svc.tcp, svc.timeout)
        else:
            ok, detail = probe_command(svc.command, svc.timeout, str(root))
        checks.append(Check(f"service {svc.name}", ok, detail))
    return checks
