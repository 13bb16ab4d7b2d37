"""One planner run for `kanban plan`: a throwaway checkout of main, the prompt, the agent
under its supervisor, its answer.

The planner works in a detached checkout of main (`.kanban/plan`), on no branch, removed
afterwards: whatever it commits or changes there goes with it. Only its report is read,
without following links and bounded (agents.collect_report, which keeps a copy in the run
directory), and the shared git directory is checked after the run as after any agent's
(kanban.aftercheck): changed config or hooks are put back, and main moved onto the
planner's own commits is moved back; either way its answer is not used.

The run is recorded in the history like any agent's (task "plan", role "planner": cost,
tokens, duration), holds a slot of the pool while it runs, and starts only within the
budgets. `kanban plan` holds the plan lock from before the start until the run is
recorded; a run whose `kanban plan` was killed is settled by the next one (`settle`), or
by a tick once it has ended.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from kanban import agents, git, locks, paths
from kanban.config import PLANNER, Config, model_for
from kanban.errors import WORK_FAILED, KanbanError
from kanban.history import History, Run
from kanban.runner import Runner
from kanban.untrusted import read_capped

PLAN_TASK = paths.PLAN_TASK
WAIT_STEP = 1.0  # seconds between looks at a run that outlives its supervisor's wake-up
CANCEL_WAIT = 10.0  # seconds a cancelled planner gets to end before kanban plan gives up waiting


class Answer(NamedTuple):
    """What a planner run came back with."""

    text: str  # its report as it wrote it (bounded); "" when it wrote none
    source: str  # where that report is kept, relative to the root (for messages, and --from)
    run: Run  # its history row, finished
    failure: str | None  # why the run failed (then its answer is not used), or None


def run_planner(root: Path, config: Config, history: History, runner: Runner, feature: str,
                board_text: str) -> Answer:
    """Start the planner on FEATURE, with BOARD_TEXT (planner.board_summary) in its prompt, wait
    for it, and return its answer; a KanbanError when it cannot start (nothing is recorded then,
    unless the supervisor itself could not be started)."""
    from kanban.store import state_dir

    state_dir(root)
    with locks.hold(paths.plan_lock(root), timeout=0) as got:
        if not got:
            raise KanbanError("another 'kanban plan' is running in this repository",
                              hint="wait for it to end, then run this one again", code=WORK_FAILED)
        settle(root, config, history, runner)
        _check_can_start(root, config, history)
        main = git.rev_parse(root, f"refs/heads/{config.main_branch}")
        attempt = history.next_attempt(PLAN_TASK, PLANNER)
        rdir = paths.plan_run_dir(root, attempt)
        rdir.mkdir(parents=True, exist_ok=True)
        guard = _guard(root, config, history)
        with _checkout(root, main) as worktree:
            try:
                run_id = _start(root, config, history, runner, feature, board_text, worktree, rdir, attempt, main)
                result = _wait(runner, rdir)
            except KeyboardInterrupt:  # the person stopped kanban plan: the planner is stopped with it
                runner.cancel(rdir)
                runner.wait_any([rdir], timeout=CANCEL_WAIT)
                settle(root, config, history, runner, why="stopped by a person")
                raise
            finally:
                history.release_port(PLAN_TASK)
            text = agents.collect_report(worktree, rdir)
            found = _after(root, config, guard, main, worktree)
        row = _row(history, run_id)
        failure = _failure(row, result, text, found)
        record(history, config, row, result, failure)
        return Answer(text, str((rdir / agents.REPORT_NAME).relative_to(root)), _row(history, run_id), failure)


def _check_can_start(root: Path, config: Config, history: History) -> None:
    from kanban import startable
    from kanban.budget import budget_reason

    agent = config.agent_for(PLANNER)
    if agent.sandbox != "none":
        raise KanbanError(f'sandbox = "{agent.sandbox}" is not available for the planner yet',
                          file=config.source and Path(config.source).name,
                          hint='set [agent.planner] sandbox = "none": its checkout is thrown away and only its '
                               "report is read")
    startable.check(root, config, (PLANNER,))
    live = history.live_runs()
    if len(live) >= config.pool_size:
        raise KanbanError(f"the pool is full: {len(live)} agents are running (pool_size = {config.pool_size})",
                          hint="run kanban plan again when one of them has ended", code=WORK_FAILED)
    reason = budget_reason(history, config, None, None)
    if reason:
        raise KanbanError(f"the planner was not started: {reason}", hint="raise [budget] in kanban.toml",
                          code=WORK_FAILED)


def _start(root: Path, config: Config, history: History, runner: Runner, feature: str, board_text: str,
           worktree: Path, rdir: Path, attempt: int, main: str) -> int:
    """The prompt, environment and argv of the run, then the run itself under its supervisor."""
    from kanban.presets import build_argv, missing_credentials, prepare_run, preset_env, preset_for
    from kanban.prompts import render_role

    report_file = agents.prepare_report(worktree)
    values = {"feature": feature, "board": board_text, "main_branch": config.main_branch, "worktree": str(worktree),
              "report_file": str(report_file), "role": PLANNER, "attempt": str(attempt)}
    prompt = render_role(root, PLANNER, values)
    prompt_file, log = rdir / "prompt.md", rdir / "agent.log"
    prompt_file.write_text(prompt, encoding="utf-8")
    agent = config.agent_for(PLANNER)
    port = history.port_for(PLAN_TASK, config.port_base)
    launch = agents.Launch(task_id=PLAN_TASK, role=PLANNER, attempt=attempt, title=feature, body="", fields={},
                           notes="", port=port)
    env = agents.agent_env(config, launch, worktree, prompt_file, report_file, preset_env(agent))
    env.update(prepare_run(agent, rdir, worktree, env))
    reason = missing_credentials(agent, env)
    if reason:
        raise KanbanError(reason)
    model = model_for(agent, 1)
    argv = build_argv(agent, {"prompt_file": str(prompt_file), "prompt": prompt, "task_id": PLAN_TASK,
                              "role": PLANNER, "worktree": str(worktree), "report_file": str(report_file),
                              "run_dir": str(rdir), "model": model or ""})
    preset = preset_for(agent)
    run_id = history.start_run(task=PLAN_TASK, role=PLANNER, attempt=attempt, run_ref=runner.ref(rdir),
                               log=str(log), timeout=agent.timeout, head_before=main, model=model)
    try:
        handle = runner.submit(rdir, argv, worktree, env, log, agent.timeout, agent.stall, agent.kill_grace,
                               wait=False, idle_lines=tuple(getattr(preset, "idle_lines", ())) if preset else (),
                               retry_limit=agent.retry_limit)
    except KanbanError:
        history.finish_run(run_id, outcome="failed", result={"exit_code": None})
        raise
    history.event(PLAN_TASK, "spawned", detail=f"{PLANNER} attempt {attempt}, supervisor pid {handle.supervisor_pid}")
    return run_id


def _wait(runner: Runner, rdir: Path) -> dict | None:
    """Until the run is over: its result (None if it was lost)."""
    while True:
        state = runner.poll(rdir)
        if not state.running:
            return state.result
        if state.result is None and not state.supervisor_alive:
            return runner.reclaim(rdir, "kanban plan").result
        runner.wait_any([rdir], timeout=WAIT_STEP)


def _row(history: History, run_id: int) -> Run:
    return next(r for r in history.runs(PLAN_TASK) if r.id == run_id)


# -- the checkout --------------------------------------------------------------------------


@contextlib.contextmanager
def _checkout(root: Path, commit: str) -> Iterator[Path]:
    """A detached checkout of COMMIT at .kanban/plan while inside, gone afterwards."""
    from kanban.store import state_dir

    state_dir(root)
    path = paths.plan_checkout(root)
    drop_checkout(root)  # a killed kanban plan's
    git.add_detached_worktree(root, path, commit)
    try:
        yield path
    finally:
        drop_checkout(root)


def drop_checkout(root: Path) -> None:
    """Remove the planner's checkout and its registration, whatever the planner left there."""
    path = paths.plan_checkout(root)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        git.remove_worktree(root, path)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        else:
            return
    if any(w.path == path.resolve() or w.path == path for w in git.worktrees(root)):
        git.remove_worktree(root, path)  # registered with its folder gone: pruned


# -- after the run ---------------------------------------------------------------------------


def _guard(root: Path, config: Config, history: History):
    """The checks of the shared git directory, their baseline taken now if nothing else runs."""
    from kanban.aftercheck import AfterCheck

    check = AfterCheck(root, config.main_branch, history)
    if not history.live_runs():
        check.accept_current()
    return check


def _after(root: Path, config: Config, guard, main: str, worktree: Path) -> list[str]:
    """What the planner changed in the shared repository (put back), one line each."""
    found = []
    changed, aside = guard.guard.check_and_restore()
    if changed:
        kept = f"; what was found is kept in {aside.relative_to(root)}" if aside else ""
        found.append("the shared git directory changed during its run (" + ", ".join(str(c) for c in changed[:8])
                     + f"): kanban put it back{kept}")
    ref = f"refs/heads/{config.main_branch}"
    now = git.rev_parse(root, ref)
    own = git.head(worktree) if worktree.exists() else None
    if now != main and own and git.is_ancestor(root, main, now) and git.is_ancestor(root, now, own):
        back = git.update_ref(root, ref, main, now)
        found.append(f"it moved {config.main_branch} to its own commit {now[:10]}"
                     + (f"; kanban moved it back to {main[:10]}" if back else "; kanban could not move it back"))
    return found


def _failure(run: Run, result: dict | None, text: str, found: list[str]) -> str | None:
    from kanban.engine import ended_badly

    bad = ended_badly(run, result)
    if bad:
        return bad
    code = result.get("exit_code") if result else None
    if code != 0:
        return f"exit status {code}"
    if found:
        return "it changed the shared repository: " + "; ".join(found)
    if not text.strip():
        return "it wrote no plan to its report"
    return None


def record(history: History, config: Config, run: Run, result: dict | None, failure: str | None) -> None:
    """The run's end in the history: outcome, how it ended, and its cost from its log."""
    agent = config.agent_for(PLANNER)
    cost: dict = {}
    log_text = read_capped(Path(run.log), 1 << 20, tail=True)
    if log_text and not agent.command:
        from kanban.pricing import run_cost

        cost = run_cost(agent.preset, run.model, log_text, config.pricing)
    outcome = "ok" if failure is None else ("cancelled" if result and result.get("cancelled") else "failed")
    history.finish_run(run.id, outcome=outcome, result=result, cost_usd=cost.get("cost_usd"), tokens=cost.get("tokens"),
                       input_tokens=cost.get("input_tokens"), output_tokens=cost.get("output_tokens"),
                       model=cost.get("model"), reason=failure)


def settle(root: Path, config: Config, history: History, runner: Runner, *, stop: bool = True,
           why: str = "abandoned: its 'kanban plan' ended before the planner did") -> list[str]:
    """Planner runs left live by a `kanban plan` that was killed: stopped (with STOP; else those
    still running are left to their timeout) and recorded as failed, their checkout removed.
    Call holding the plan lock, or having found it free. One line per run settled."""
    lines = []
    for run in [r for r in history.live_runs() if r.role == PLANNER]:
        rdir = run.run_path(runner)
        state = runner.poll(rdir)
        if state.running and not stop:
            continue
        if state.running:
            runner.cancel(rdir, force=True)
            runner.wait_any([rdir], timeout=CANCEL_WAIT)
            state = runner.poll(rdir)
        if state.running:
            continue
        record(history, config, run, state.result, why)
        lines.append(f"{PLANNER} attempt {run.attempt} was abandoned by its 'kanban plan'; recorded as failed")
    return lines


def abandoned(root: Path) -> bool:
    """Whether no `kanban plan` holds the plan lock: its live planner runs are nobody's."""
    return not locks.is_held(paths.plan_lock(root))

