"""One pass of the pipeline: reap finished agents, apply transitions, fill free slots.

Data flows one way: the board and the history are read, the pure machine and
scheduler decide, and this module carries the decision out: board writes
(each transition its own atomic update), worktrees, and supervised runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kanban import agents, git, locks, paths
from kanban.aftercheck import AfterCheck
from kanban.board import Board, BoardFile, to_task
from kanban.config import PLANNER, Config
from kanban.entry import Entry
from kanban.errors import KanbanError
from kanban.events import BUDGET_REACHED, Happening
from kanban.events import ESCALATED as ESCALATED_KIND
from kanban.history import History, Run
from kanban.machine import Action, Event, InvalidTransition, TaskState, Transition, describe_state, transition
from kanban.model import COLUMN_FILES, COLUMN_ROLE, ESCALATED, READY_STATUS, RETRY, Column, Role
from kanban.presets import build_argv, cli_error, missing_credentials
from kanban.prompts import render_role
from kanban.runner import Runner
from kanban.scheduler import Start, plan
from kanban.store import update
from kanban.untrusted import clean, read_capped
from kanban.verdict import WORDS, read_verdict

LOG_TAIL_LINES = 15
REPORT_LIMIT = 4000

OK_EVENT = {Role.TASK: Event.TASK_OK, Role.REVIEWER: Event.REVIEW_OK, Role.TESTER: Event.TEST_OK}
FAIL_EVENT = {Role.TASK: Event.TASK_FAILED, Role.REVIEWER: Event.REVIEW_REJECTED, Role.TESTER: Event.TEST_FAILED}
ROLE_NAMES = {Role.TASK: "task agent", Role.REVIEWER: "reviewer", Role.TESTER: "tester"}
TEST_RUN = "test"  # the history's role for a run of `[test] command`: kanban's own, not an agent
TESTS = "tests"  # how the lines name a run of `[test] command`


@dataclass
class TickReport:
    """What a pass did, in words a person uses ("TASK-5 timed out after 15m; retrying").

    The string lists are what `kanban tick` prints (and `--json` holds); `events` is every
    one of those lines again, in the order they happened, as data for the live view and
    notifications (an escalation is kind "escalated" with its task and title).
    """

    reaped: list[str] = field(default_factory=list)  # one line per finished run
    started: list[str] = field(default_factory=list)  # one line per started run
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # one line per fix made by repair
    planned: list[Start] = field(default_factory=list)  # --dry-run: what would start
    busy: bool = False  # another tick held the lock
    cut_short: bool = False  # stopped between handovers for the caller's more urgent work (Engine.yield_to)
    events: list[Happening] = field(default_factory=list)  # the lines above, in order, as data

    @property
    def changed(self) -> bool:
        return bool(self.reaped or self.started or self.cut_short)

    def add(self, where: str, happening: Happening) -> Happening:
        """Record one line: its text in the list WHERE (reaped, started, problems), and as an event."""
        getattr(self, where).append(happening.text)
        self.events.append(happening)
        return happening


@contextlib.contextmanager
def tick_lock(root: Path, wait: float = 0.0) -> Iterator[bool]:
    """One tick at a time per repository; yields False if another one holds it."""
    from kanban.store import state_dir

    state_dir(root)  # created, or one clear line where it cannot be
    with locks.hold(paths.tick_lock(root), timeout=wait) as got:
        yield got


class Engine:
    def __init__(self, root: Path, config: Config, history: History, runner: Runner | None = None) -> None:
        self.root = root
        self.config = config
        self.history = history
        if runner is None:
            from kanban.executors import runner_for

            runner = runner_for(root, config)
        self.runner = runner
        self.repaired_scopes: set[str] = set()  # repair runs once per engine and scope (a run loop ticks often)
        self.run_started_at: float | None = None  # set by `kanban run`: the start of its [budget] run
        self.queue_state = None  # a kanban.events.QueueState the merge queue sets, the live view reads
        self._aftercheck: AfterCheck | None = None
        # Asked between handovers: True stops the pass there (kanban run: a verification ended,
        # and landing it, then starting the next, comes before the rest of the handovers).
        self.yield_to: Callable[[], bool] | None = None

    def close(self) -> None:
        """The end of this kanban's use of the engine: its history, and its runner's helpers (the
        runs themselves go on)."""
        try:
            self.runner.close()
        finally:
            self.history.close()

    @property
    def aftercheck(self) -> AfterCheck:
        if self._aftercheck is None:
            self._aftercheck = AfterCheck(self.root, self.config.main_branch, self.history)
        return self._aftercheck

    def repair_once(self, scope: str) -> list[str]:
        """The repairs that are safe for SCOPE ("tick" or "merge"), the first time only; never raises."""
        if scope in self.repaired_scopes:
            return []
        self.repaired_scopes.add(scope)
        from kanban.repair import repair

        try:
            return repair(self.root, self.config, self.history, self.runner, scope=scope)
        except KanbanError as exc:
            return [f"repair stopped: {exc}"]

    # -- the pass ------------------------------------------------------------------

    def tick(self, *, dry_run: bool = False) -> TickReport:
        """One pass: repair once, reap the runs that ended, hand over, fill the free slots."""
        report = TickReport()
        with tick_lock(self.root) as got:
            if not got:
                report.busy = True
                return report
            if dry_run:
                report.planned = self._plan(self._load())
                return report
            report.repaired = self.repair_once("tick")
            report.events += [Happening("repaired", f"repair: {line}") for line in report.repaired]
            self._assign_new_ids()
            if not self.history.live_runs():
                self.aftercheck.accept_current()
            self._reap(report)
            self._notice_person_resets()
            self._fill(report)
        return report

    def _load(self) -> Board:
        """The board for reading (shared while its files are unchanged): changes go through update()."""
        from kanban.store import read_board

        return read_board(self.root)

    def _assign_new_ids(self) -> None:
        if self._load().new_entries():
            update(self.root, lambda board: board.assign_ids())

    def _plan(self, board: Board) -> list[Start]:
        # A run of `[test] command` holds its task (and a pool slot) like the tester it stands for; the
        # planner of `kanban plan` holds a slot, and no task ("plan" is never a task's ID).
        live = self.history.live_runs()
        running = {r.task: _slot_role(r.role) for r in live}
        starts = plan(board.tasks(), done=board.done_ids, running=running, pool_size=self.config.pool_size)
        limits = self.config.executor.pool
        if not limits:
            return starts
        counts: dict[str, int] = {}
        for r in live:
            counts[r.role] = counts.get(r.role, 0) + 1
        kept = []
        for start in starts:  # `[executor.pool]`: at most so many runs of one kind at once
            kind = TEST_RUN if start.role is Role.TESTER and self._tests_next(start.task_id) else start.role.value
            if counts.get(kind, 0) >= limits.get(kind, self.config.pool_size):
                continue
            counts[kind] = counts.get(kind, 0) + 1
            kept.append(start)
        return kept

    # -- reaping -------------------------------------------------------------------

    def _reap(self, report: TickReport) -> None:
        for run in self.history.live_runs():
            if self._cut_short(report):
                return
            if run.role == PLANNER:  # `kanban plan`'s own, judged there; settled here only once nobody's
                self._reap_planner(run, report)
                continue
            state = self.runner.poll(run.run_path(self.runner))
            if state.running and not state.supervisor_alive:  # nothing enforces its timeout any more
                self.runner.reclaim(run.run_path(self.runner), "kanban tick")
                report.add("problems", self._problem(
                    run.task, f"{run.task} {_who(run.role)} lost its supervisor; the agent was stopped"))
                state = self.runner.poll(run.run_path(self.runner))
            if state.running:
                continue
            infra = self._infra_failures(run, state.result)
            if infra is not None:
                report.add("problems", self._problem(run.task, f"{run.task} {_who(run.role)}: {infra}"))
                report.add("reaped", self._hold(run, state.result, "infrastructure failure",
                                                f"{_stamp()} its {run.role} run was lost by the cluster: {infra}",
                                                f"the cluster lost its {_who(run.role)} run (not a strike)"))
                continue
            try:
                found = self.aftercheck.after_run(run.task, agents.worktree_path(self.root, self.config, run.task))
                if found:  # a run that reached into the shared repository is not judged at all
                    first = found.splitlines()[0]
                    report.add("problems", self._problem(run.task, f"{run.task} changed the shared repository: "
                                                                   f"{first}"))
                    report.add("reaped", self._hold(run, state.result, "changed the shared repository",
                                                    f"after its {run.role} run: {found}",
                                                    f"its {_who(run.role)} changed the shared repository"))
                    continue
                report.add("reaped", self._finish(run, state.result))
            except KanbanError as exc:
                report.add("problems", self._problem(run.task, f"{run.task} could not be judged: {exc}"))
                report.add("reaped", self._hold(run, state.result, clean(str(exc)),
                                                f"its {run.role} run could not be judged: {exc}",
                                                f"its {_who(run.role)} run could not be judged: {exc}"))

    def _cut_short(self, report: TickReport) -> bool:
        """After a handover, whether the caller has more urgent work (`yield_to`: the run loop's
        merge queue, whose verification ended): the pass stops there, the rest is the next one's."""
        if report.changed and self.yield_to is not None and self.yield_to():
            report.cut_short = True
        return report.cut_short

    def _reap_planner(self, run: Run, report: TickReport) -> None:
        """A planner run that ended after its `kanban plan` was killed: recorded as failed (its cost
        too), so that it neither holds a slot nor counts as running any more."""
        from kanban import planrun

        if not self.runner.poll(run.run_path(self.runner)).running and planrun.abandoned(self.root):
            for line in planrun.settle(self.root, self.config, self.history, self.runner, stop=False):
                report.add("reaped", Happening("info", line))

    def _infra_failures(self, run: Run, result: dict | None) -> str | None:
        """Record the tries the executor's infrastructure lost (a dead node, a lost job, a failed
        push: never the agent's strike); what to hold the task for when the last try was lost too."""
        if not result or not result.get("infra_failures"):
            return None
        errors = [clean(str(e), max_bytes=300) for e in (result.get("infra_errors") or [])][-5:]
        self.history.event(run.task, "infra_failure",
                           detail=f"{run.role} attempt {run.attempt}: {result['infra_failures']} lost: "
                                  + "; ".join(errors))
        return clean(str(result.get("error") or ""), max_bytes=500) if result.get("infra") else None

    def _problem(self, task_id: str, text: str) -> Happening:
        return Happening("problem", _one_line(text), task_id, self._title(task_id))

    def _title(self, task_id: str) -> str:
        """The task's title on the board, or "" (gone, or the board unreadable right now)."""
        try:
            found = self._load().find(task_id)
        except KanbanError:
            return ""
        return found[1].title if found else ""

    def _hold(self, run: Run, result: dict | None, reason: str, note: str, why: str) -> Happening:
        """A finished run that must not be judged, or could not be (its worktree broken by the agent):
        recorded as failed and held for a person, never left live for every later pass to trip over."""
        if any(r.id == run.id for r in self.history.live_runs()):
            self.history.finish_run(run.id, outcome="failed", result=result, reason=reason)
        try:
            return self.escalate_event(run.task, f"{_stamp()} {note}", why=why)
        except KanbanError as again:
            return self._problem(run.task, f"{run.task} could not be escalated: {again}")

    def _finish(self, run: Run, result: dict | None) -> Happening:
        if run.role == TEST_RUN:
            return self._finish_test(run, result)
        role = Role(run.role)
        worktree = agents.worktree_path(self.root, self.config, run.task)
        report_text = clean(agents.collect_report(worktree, run.run_path(self.runner)), max_bytes=REPORT_LIMIT).strip()
        ok, why = self._judge(run, role, result, report_text)
        log_text = read_capped(Path(run.log), 1 << 20, tail=True)  # cost lines are spread over it
        agent = self.config.agent_for(role.value)
        cost: dict = {}
        if log_text and not agent.command:
            from kanban.pricing import run_cost

            cost = run_cost(agent.preset, run.model, log_text, self.config.pricing)
        outcome = "ok" if ok else ("cancelled" if result and result.get("cancelled") else "failed")
        self.history.finish_run(run.id, outcome=outcome, result=result, cost_usd=cost.get("cost_usd"),
                         tokens=cost.get("tokens"), input_tokens=cost.get("input_tokens"),
                         output_tokens=cost.get("output_tokens"), model=cost.get("model"),
                         reason=why or None)
        name = f"{ROLE_NAMES[role]} attempt {run.attempt}"
        said_why = _why_words(run, result, why)  # "timed out after 15m": the person's units
        if role is Role.TESTER and self.config.test.command and outcome != "cancelled":
            return self._after_tester(run, name, ok, why, report_text)
        if ok:
            note = f"{_stamp()} {name} succeeded" + (f":\n{report_text}" if report_text else "")
            return self.apply_event(run.task, OK_EVENT[role], note, who=ROLE_NAMES[role])
        said = cli_error(agent.preset, log_text) if not agent.command else None
        note = f"{_stamp()} {name} failed: {why}" + (f" ({agent.preset} said: {clean(said)})" if said else "")
        if report_text:
            note += f"\nReport:\n{report_text}"
        tail = _last_lines(clean(log_text, max_bytes=8000), LOG_TAIL_LINES)
        if tail:
            note += f"\nLast lines of {Path(run.log).relative_to(self.root)}:\n{tail}"
        if outcome == "cancelled":
            return self.escalate_event(run.task, note + "\nStopped with 'kanban stop'; run 'kanban retry' to resume.",
                                       why=f"its {ROLE_NAMES[role]} was stopped with 'kanban stop'")
        return self.apply_event(run.task, FAIL_EVENT[role], note, why=said_why, who=ROLE_NAMES[role])

    def _after_tester(self, run: Run, name: str, ok: bool, why: str, report_text: str) -> Happening:
        """With `[test] command`, the tester only fixes: the command runs again and decides."""
        worktree = agents.worktree_path(self.root, self.config, run.task)
        if worktree.exists() and (git.merge_in_progress(worktree) or git.unmerged_files(worktree)):
            note = f"{_stamp()} {name} left the merge of {self.config.main_branch} unfinished"
            return self.apply_event(run.task, Event.TEST_FAILED,
                                    note + (f"\nReport:\n{report_text}" if report_text else ""),
                                    why=f"left the merge of {self.config.main_branch} unfinished",
                                    who=ROLE_NAMES[Role.TESTER])
        said = "finished" if ok or why.startswith("no verdict") else f"ended ({why})"
        note = f"{_stamp()} {name} {said}; the test command runs again"
        if report_text:
            note += f":\n{report_text}"
        self._note(run.task, note)
        self.history.event(run.task, "tester_done", detail=why or None)
        shown = "finished" if ok or why.startswith("no verdict") else f"ended ({_why_words(run, None, why)})"
        return Happening("info", _one_line(f"{run.task} {ROLE_NAMES[Role.TESTER]} {shown} (attempt {run.attempt}); "
                                           f"running the tests again"), run.task, self._title(run.task))

    def _finish_test(self, run: Run, result: dict | None) -> Happening:
        ok, why = self._judge_process(run, result)
        outcome = "ok" if ok else ("cancelled" if result and result.get("cancelled") else "failed")
        self.history.finish_run(run.id, outcome=outcome, result=result, reason=why or None)
        took = f" in {_human(float(result['duration']))}" if result and result.get("duration") is not None else ""
        spec = self.runner.spec(run.run_path(self.runner))  # its command as submitted, before any sandbox
        shown = " ".join(((" ".join(spec.command)[:2000] if spec else "") or self.config.test.shown()).split())
        if ok:
            return self.apply_event(run.task, Event.TEST_OK, f"{_stamp()} tests passed: `{clean(shown)}`{took}",
                                    who=TESTS)
        note = f"{_stamp()} tests failed ({why}){took}: `{clean(shown)}`"
        tail = _last_lines(clean(read_capped(Path(run.log), 64 * 1024, tail=True), max_bytes=8000), 40)
        if tail:
            note += f"\nLast lines of {Path(run.log).relative_to(self.root)}:\n{tail}"
        if outcome == "cancelled":
            return self.escalate_event(run.task, note + "\nStopped with 'kanban stop'; run 'kanban retry' to resume.",
                                       why="its tests were stopped with 'kanban stop'")
        tester_tried = any(r.role == Role.TESTER.value for r in self._testing_visit_runs(run.task))
        return self.apply_event(run.task, Event.TEST_FAILED if tester_tried else Event.TESTS_FAILED_FIRST, note,
                                why=_why_words(run, result, why), who=TESTS)

    def _testing_visit_runs(self, task_id: str) -> list[Run]:
        """The finished test and tester runs since the task last came into TESTING."""
        since = self.history.entered(task_id, Column.TESTING.value)
        return [r for r in self.history.runs(task_id)
                if r.role in (TEST_RUN, Role.TESTER.value) and r.ended is not None and r.started >= since]

    def _judge_process(self, run: Run, result: dict | None) -> tuple[bool, str]:
        """How the process ended: timeouts, stalls, crashes and exit status."""
        why = ended_badly(run, result)
        if why:
            return False, why
        code = result.get("exit_code") if result else None
        return code == 0, "" if code == 0 else f"exit status {code}"

    def _judge(self, run: Run, role: Role, result: dict | None, report: str) -> tuple[bool, str]:
        """An agent's run: how it ended, then its written verdict, then its commits.

        A written verdict wins over the exit status; without one, a preset's reviewer or
        tester has failed (its CLI exits 0 whatever the model concluded), while a custom
        command's exit status answers.
        """
        bad = ended_badly(run, result)
        if bad:
            return False, bad  # timed out, stalled, crashed, stopped: no verdict counts
        ok, why = self._judge_process(run, result)
        worktree = agents.worktree_path(self.root, self.config, run.task)
        if not worktree.exists():
            return False, "its worktree is gone"
        verdict = read_verdict(report, role.value)
        words = " or ".join(f"'verdict: {w}'" for w in WORDS[role.value])
        if verdict is not None and verdict.ok is None:
            return False, f"its report's verdict {verdict.word!r} is not one of {words}"
        if verdict is not None:
            ok, why = bool(verdict.ok), "" if verdict.ok else f"its report says 'verdict: {verdict.word}'"
        elif role is not Role.TASK and not self.config.agent_for(role.value).command:
            return False, f"no verdict: its report has no {words} line"
        if not ok:
            return False, why
        if role is Role.TASK and git.head(worktree) == run.head_before:
            return False, "exited 0 without a commit"
        if role is Role.TESTER and (git.merge_in_progress(worktree) or git.unmerged_files(worktree)):
            return False, "exited 0 with the merge of main unfinished"
        return True, ""

    # -- transitions -----------------------------------------------------------------

    def apply(self, task_id: str, event: Event, note: str | None) -> str:
        """Carry out one transition on the board (one atomic update) and log it; the line that says so."""
        return self.apply_event(task_id, event, note).text

    def apply_event(self, task_id: str, event: Event, note: str | None, *, why: str = "",
                    who: str = "") -> Happening:
        """`apply`, returning what happened as data. WHY ("timed out after 15m", "exit status 1")
        and WHO ("task agent", "reviewer", "tester", "tests") only shape the words."""
        strikes = self.history.strikes(task_id)
        outcome: dict = {}

        def change(board: Board) -> None:
            found = board.find(task_id)
            if found is None:
                outcome["gone"] = True
                return
            f, entry = found
            outcome["title"] = entry.title
            tr = transition(state_of(f, entry, strikes), event)
            outcome.update(tr=tr, source=f.column)
            carry_out(board, task_id, tr, note)

        try:
            update(self.root, change)
        except InvalidTransition as exc:  # the entry was moved by hand while its agent ran
            self.history.event(task_id, "ignored", detail=f"{event.value}: {exc}")
            return Happening("info", f"{task_id} was moved by hand; the {_result_of(event, who)} is ignored",
                             task_id, outcome.get("title", ""))
        if outcome.get("gone"):
            self.history.event(task_id, "ignored", detail=f"{event.value}: the entry is no longer on the board")
            return Happening("info", f"{task_id} is no longer on the board; the {_result_of(event, who)} is ignored",
                             task_id)
        tr = outcome["tr"]
        title = outcome.get("title", "")
        self.history.event(task_id, event.value, outcome["source"].value, tr.column.value, note)
        if tr.strike:
            self.history.event(task_id, f"strike:{tr.strike}")
        if tr.action is Action.ESCALATE:
            self.history.event(task_id, "escalated")
        kind, text = _transition_words(task_id, event, tr.column, tr.escalated, why, who, self.config.main_branch)
        return Happening(kind, _one_line(text), task_id, title)

    def remove_merged(self, task_ids: dict[str, str]) -> list[Happening]:
        """MERGED for tasks main already holds ({task: merged commit}): the entries leave the board in one write.

        The table decides (TESTING ready + MERGED -> DONE). An entry a person changed while it merged
        (ready removed, [ESCALATED] set, moved to another file) matches no row, and leaves the board
        all the same: main holds its commit and CHANGELOG.md its line, and an entry left behind would
        show finished work as pending. The history records that ("overruled", then "merged"), and the
        lines returned, one per such entry, tell the person.
        """
        strikes = {task_id: self.history.strikes(task_id) for task_id in task_ids}
        seen: dict[str, tuple[Column, Transition | InvalidTransition]] = {}

        def change(board: Board) -> None:
            seen.clear()  # update() runs this again after a concurrent hand edit
            for task_id in task_ids:
                found = board.find(task_id)
                if found is None:
                    continue
                f, entry = found
                try:
                    tr = transition(state_of(f, entry, strikes[task_id]), Event.MERGED)
                except InvalidTransition as exc:
                    seen[task_id] = (f.column, exc)
                    f.remove(entry)  # outside the table: main already holds it
                    continue
                seen[task_id] = (f.column, tr)
                carry_out(board, task_id, tr)

        update(self.root, change)
        lines = []
        main = self.config.main_branch
        with self.history.transaction():
            for task_id, sha in task_ids.items():
                if task_id not in seen:  # gone already (a crash after the board write): main holds it
                    self.history.event(task_id, Event.MERGED.value, None, Column.DONE.value, sha)
                    continue
                source, tr = seen[task_id]
                if isinstance(tr, InvalidTransition):
                    self.history.event(task_id, "overruled", source.value, Column.DONE.value,
                                       f"{Event.MERGED.value}: {tr}; {main} holds it ({sha}), so the entry "
                                       f"left the board anyway")
                    lines.append(Happening("problem", f"{task_id} was changed by hand while it merged "
                                                      f"({describe_state(tr.state)}); {main} holds it, so it "
                                                      f"left {COLUMN_FILES[source]} all the same", task_id))
                self.history.event(task_id, Event.MERGED.value, source.value, Column.DONE.value, sha)
        return lines

    def _note(self, task_id: str, note: str) -> None:
        def change(board: Board) -> None:
            if board.find(task_id):
                board.touch(task_id).add_note(note)

        update(self.root, change)

    def escalate(self, task_id: str, note: str) -> str:
        return self.escalate_event(task_id, note).text

    def escalate_event(self, task_id: str, note: str, *, why: str | None = None) -> Happening:
        """Hold a task for a person: the table's HELD row, in place (a run stopped with `kanban stop`,
        a budget, a run that could not be judged, a branch the merge queue must not merge).

        The line says why: WHY, or the first line of NOTE (its stamp dropped). A task already
        escalated (say, by hand while its agent ran) matches no row: it stays as it is, and gets
        NOTE, since the person who looks at it should read why kanban would have held it too.
        """
        strikes = self.history.strikes(task_id)
        outcome: dict = {}

        def change(board: Board) -> None:
            outcome.clear()  # update() runs this again after a concurrent hand edit
            found = board.find(task_id)
            if found is None:
                return
            f, entry = found
            outcome.update(title=entry.title, source=f.column)
            try:
                outcome["tr"] = transition(state_of(f, entry, strikes), Event.HELD)
            except InvalidTransition as exc:
                outcome["refused"] = exc
                board.touch(task_id).add_note(note)
                return
            carry_out(board, task_id, outcome["tr"], note)

        update(self.root, change)
        said = why if why is not None else _unstamped(note.strip().splitlines()[0] if note.strip() else "")
        title = outcome.get("title", "")
        if "source" not in outcome:
            self.history.event(task_id, "ignored", detail=f"{Event.HELD.value}: the entry is no longer on the "
                                                          f"board: {note}")
            return Happening("info", _one_line(f"{task_id} is no longer on the board; not held"
                                               + (f" ({said})" if said else "")), task_id)
        if "refused" in outcome:
            self.history.event(task_id, "ignored", detail=f"{Event.HELD.value}: {outcome['refused']}: {note}")
            return Happening("info",
                             _one_line(f"{task_id} is already escalated; noted" + (f": {said}" if said else "")),
                             task_id, title)
        tr = outcome["tr"]
        self.history.event(task_id, Event.HELD.value, outcome["source"].value, tr.column.value, note)
        if tr.action is Action.ESCALATE:  # every HELD row's
            self.history.event(task_id, "escalated")
        return Happening(ESCALATED_KIND, _one_line(f"{task_id} escalated" + (f": {said}" if said else "")),
                         task_id, title)

    def _notice_person_resets(self) -> None:
        """A person removed [ESCALATED] by hand: the task starts over with no strikes.

        Not a transition of the table: the person's edit already changed the board, and kanban
        only records what it means for the strikes ("reset"). `kanban retry` is the same wish
        carried out by kanban, through the RETRY_REQUESTED rows.
        """
        escalated = self.history.escalated_tasks()
        if not escalated:
            return
        for task in self._load().tasks():
            if task.id in escalated and not task.escalated:
                self.history.event(task.id, "reset", detail="[ESCALATED] removed by hand")

    # -- starting agents ---------------------------------------------------------------

    def _fill(self, report: TickReport) -> None:
        if len(self.history.live_runs()) >= self.config.pool_size:  # no free slot: nothing to plan (an idle
            return  # run's timer pass over a big board costs nothing)
        board = self._load()
        starts = self._plan(board)
        titles = {t.id: t.title for t in board.tasks()} if starts else {}
        for start in starts:
            if self._cut_short(report):
                return
            title = titles.get(start.task_id, "")
            if self._over_budget(start, report, title):
                continue
            try:
                report.add("started", self._start(start))
            except KanbanError as exc:
                who = ROLE_NAMES[start.role]
                report.add("problems", Happening("problem", _one_line(f"{start.task_id} could not start its {who}: "
                                                                      f"{exc}"), start.task_id, title))
                note = f"{_stamp()} {who} could not start: {exc}"
                report.add("reaped", self.apply_event(start.task_id, FAIL_EVENT[start.role], note,
                                                      why="could not start", who=who))

    def _start(self, start: Start) -> Happening:
        if start.pick:
            self.apply(start.task_id, Event.PICKED, None)  # move the entry first, then spawn
        board = self._load()
        f, entry = board.require(start.task_id)
        if f.column not in COLUMN_ROLE or COLUMN_ROLE[f.column] is not start.role:
            raise KanbanError(f"{start.task_id} is in {f.name}, not ready for a {start.role.value}")
        role = start.role.value
        worktree = agents.ensure_worktree(self.root, self.config, start.task_id)
        conflicts = git.merge_main_into(worktree, self.config.main_branch) if start.role is Role.TESTER else []
        if start.role is Role.TESTER and not conflicts and self._tests_next(start.task_id):
            return self._start_tests(start.task_id, worktree, entry.title)
        attempt = self.history.next_attempt(start.task_id, role)
        launch = agents.Launch(
            task_id=start.task_id, role=role, attempt=attempt, title=entry.title,
            body=entry.body(), fields=entry.meta(), notes=entry.notes(),
            port=self.history.port_for(start.task_id, self.config.port_base),
        )
        rdir = agents.run_dir(self.root, start.task_id, role, attempt)
        # May exist, unrecorded, from an attempt that failed to start; the runner refuses a used one.
        rdir.mkdir(parents=True, exist_ok=True)
        prompt_file, log = rdir / "prompt.md", rdir / "agent.log"
        report_file = agents.prepare_report(worktree)
        values = agents.prompt_values(self.root, self.config, launch, worktree, report_file, conflicts)
        prompt = render_role(self.root, role, values)
        prompt_file.write_text(prompt, encoding="utf-8")
        agent = self.config.agent_for(role)
        from kanban.presets import prepare_run, preset_env

        env = agents.agent_env(self.config, launch, worktree, prompt_file, report_file, preset_env(agent))
        env.update(prepare_run(agent, rdir, worktree, env))  # e.g. aider's ignore file and git wrapper
        reason = missing_credentials(agent, env)
        if reason:
            raise KanbanError(reason)
        from kanban.config import model_for

        model = model_for(agent, attempt)  # a ladder: the retry gets the next, stronger model
        argv = build_argv(agent, {"prompt_file": str(prompt_file), "prompt": prompt, "task_id": start.task_id,
                                  "role": role, "worktree": str(worktree), "report_file": str(report_file),
                                  "run_dir": str(rdir), "model": model or ""})
        head = git.head(worktree)
        what = f"{ROLE_NAMES[start.role]}, attempt {attempt}" + (f" ({model})" if model and agent.models else "")
        return self._submit(start.task_id, role, attempt, rdir, argv, worktree, env, log, agent.timeout,
                            agent.stall, agent.kill_grace, head, what, entry.title, model=model)

    def _over_budget(self, start: Start, report: TickReport, title: str = "") -> bool:
        """At a [budget] limit no new agent starts: a task in flight is escalated with a note
        naming the budget, a TODO task stays where it is. Running agents finish as usual."""
        from kanban.budget import budget_reason, record_budget

        if start.role is Role.TESTER and self._tests_next(start.task_id):
            return False  # the test command spends no tokens
        reason = budget_reason(self.history, self.config, start.task_id, self.run_started_at)
        if not reason:
            return False
        if record_budget(self.history, start.task_id, reason):
            report.add("problems", Happening(BUDGET_REACHED, _one_line(f"{start.task_id} not started: {reason}"),
                                             start.task_id, title))
        if not start.pick:
            report.add("reaped", self.escalate_event(
                start.task_id, f"{_stamp()} not started: {reason}; raise [budget] in kanban.toml, then run "
                               "'kanban retry'", why=f"not started: {reason}"))
        return True

    def _tests_next(self, task_id: str) -> bool:
        """With `[test] command`: run it now, unless it failed last and the tester has not fixed since."""
        if not self.config.test.command:
            return False
        runs = self._testing_visit_runs(task_id)
        return not runs or runs[-1].role != TEST_RUN or runs[-1].outcome == "ok"

    def _start_tests(self, task_id: str, worktree: Path, title: str = "") -> Happening:
        """`[test] command` in the task's worktree, supervised like an agent; no agent is spent."""
        changed = git.changed_files(worktree, self.config.main_branch)
        tests = agents.covering_tests(changed, agents.tracked_candidates(worktree, changed))
        argv = self.config.test.argv(tests)
        attempt = self.history.next_attempt(task_id, TEST_RUN)
        rdir = agents.run_dir(self.root, task_id, TEST_RUN, attempt)
        rdir.mkdir(parents=True, exist_ok=True)
        env = agents.test_env(self.config, task_id, worktree, self.history.port_for(task_id, self.config.port_base))
        test = self.config.test
        return self._submit(task_id, TEST_RUN, attempt, rdir, argv, worktree, env, rdir / "test.log",
                            test.timeout, test.stall, self.config.agent.kill_grace, git.head(worktree),
                            f"{TESTS}, attempt {attempt} ({len(tests)} covering file{'s' if len(tests) != 1 else ''})"
                            if tests else f"{TESTS}, attempt {attempt} (fallback command: no covering test found)",
                            title)

    def _submit(self, task_id: str, role: str, attempt: int, rdir: Path, argv: list[str], worktree: Path,
                env: dict[str, str], log: Path, timeout: float, stall: float | None, grace: float,
                head: str | None, what: str, title: str = "", model: str | None = None) -> Happening:
        run_id = self.history.start_run(task=task_id, role=role, attempt=attempt, run_ref=self.runner.ref(rdir),
                                        log=str(log), timeout=timeout, head_before=head, model=model)
        try:
            # Not waiting for the agent to be up keeps the engine free for the next handover;
            # the pid is recorded when the run is next polled, a failed start comes back as a result.
            from kanban.sandbox import plan_for_run

            box = plan_for_run(self.root, self.config, role, task_id, worktree, rdir, argv, env)
            sandboxed: dict[str, Any] = {"sandbox": box} if box is not None else {}
            handle = self.runner.submit(rdir, argv, worktree, env, log, timeout, stall, grace,
                                        wait=False, idle_lines=_idle_lines(self.config, role),
                                        retry_limit=_retry_limit(self.config, role), **sandboxed)
        except KanbanError:
            self.history.finish_run(run_id, outcome="failed", result={"exit_code": None})
            raise
        self.history.event(task_id, "spawned", detail=f"{role} attempt {attempt}, "
                                                      f"supervisor pid {handle.supervisor_pid}")
        return Happening("started", f"{task_id} started: {what}", task_id, title)


# -- the words of the lines -------------------------------------------------------------

def _who(role: str) -> str:
    """A run's role as a person says it: "task agent", "reviewer", "tester", "tests"."""
    if role == TEST_RUN:
        return TESTS
    try:
        return ROLE_NAMES[Role(role)]
    except ValueError:
        return role


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _unstamped(line: str) -> str:
    """A note's first line without its leading "2026-01-01 12:00 UTC " stamp."""
    import re

    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC\s*", "", line)


def _duration(seconds: float) -> str:
    from kanban.output import human_duration

    return human_duration(seconds) if seconds >= 1 else f"{seconds:g}s"


def _why_words(run: Run, result: dict | None, why: str) -> str:
    """WHY as the line says it: a timeout in a person's units ("timed out after 15m")."""
    if result and result.get("timed_out"):
        return f"timed out after {_duration(run.timeout)}"
    return why


_RESULT_OF = {Event.PICKED: "pick", Event.TASK_OK: "task agent's result", Event.TASK_FAILED: "task agent's result",
              Event.REVIEW_OK: "review", Event.REVIEW_REJECTED: "review", Event.TEST_OK: "test result",
              Event.TEST_FAILED: "test result", Event.TESTS_FAILED_FIRST: "test result",
              Event.MERGED: "merge", Event.MERGE_CONFLICT: "merge conflict",
              Event.VERIFY_FAILED: "post-merge check", Event.RETRY_REQUESTED: "retry", Event.HELD: "hold"}


def _result_of(event: Event, who: str) -> str:
    return f"{who}'s result" if who and event not in (Event.PICKED, Event.RETRY_REQUESTED) else _RESULT_OF[event]


def _transition_words(task: str, event: Event, column: Column, escalated: bool, why: str, who: str,
                      main: str) -> tuple[str, str]:
    """(kind, line) for a transition carried out: "TASK-5 approved by review", "TASK-5 timed out after
    15m; retrying", "TASK-5 escalated: rejected by review a second time"."""
    why = _one_line(why)
    verdict = why.startswith("its report says 'verdict:")  # a plain verdict needs no explaining
    timed_out = why.startswith("timed out")
    who = who or {Event.TASK_FAILED: ROLE_NAMES[Role.TASK], Event.REVIEW_REJECTED: ROLE_NAMES[Role.REVIEWER],
                  Event.TEST_FAILED: ROLE_NAMES[Role.TESTER], Event.TESTS_FAILED_FIRST: TESTS}.get(event, "")
    # what went wrong, when it was not a verdict: "timed out after 15m", "reviewer failed: could not start"
    actor = "" if who == ROLE_NAMES[Role.TASK] else f"{who} "
    went = f"{actor}{why}" if timed_out else f"{actor}failed: {why}" if why else f"{actor}failed"
    tests_failed = "failed its tests" + (f" ({why})" if why and not verdict else "")
    if who != TESTS and why and not verdict:  # the tester, not the tests, went wrong
        tests_failed = went
    if escalated:
        reason = {
            Event.TASK_FAILED: "failed again" + (f" ({why})" if why else ""),
            Event.REVIEW_REJECTED: "rejected by review a second time" if verdict or not why
            else f"sent back by review a second time ({went})",
            Event.TEST_FAILED: "failed its tests again after going back to review" + (
                f" ({why})" if why and not verdict else ""),
            Event.MERGE_CONFLICT: f"conflicts with {main} a second time",
            Event.VERIFY_FAILED: "failed the post-merge check a second time",
        }.get(event, event.value.replace("_", " "))
        return ESCALATED_KIND, f"{task} escalated: {reason}"
    failed_kind = "timed_out" if timed_out else None
    if event is Event.PICKED:
        return "info", f"{task} picked from TODO"
    if event is Event.TASK_OK:
        return "committed", f"{task} committed its work; on to review"
    if event is Event.TASK_FAILED:
        return failed_kind or "retrying", f"{task} {went}; retrying"
    if event is Event.REVIEW_OK:
        return "approved", f"{task} approved by review"
    if event is Event.REVIEW_REJECTED:
        said = "rejected by review" if verdict or not why else went
        return failed_kind or "rejected", f"{task} {said}; back to the task agent"
    if event is Event.TEST_OK:
        return "tested", f"{task} passed its tests; ready to merge"
    if event is Event.TESTS_FAILED_FIRST:
        return failed_kind or "test_failed", f"{task} {went if timed_out else tests_failed}; the tester fixes them"
    if event is Event.TEST_FAILED:
        if column is Column.REVIEW:
            again = tests_failed.replace("failed its tests", "failed its tests again", 1)
            return failed_kind or "test_failed", f"{task} {went if timed_out else again}; back to review"
        return failed_kind or "test_failed", f"{task} {went if timed_out else tests_failed}; the tester tries again"
    if event is Event.MERGED:
        return "merged", f"{task} merged into {main}"
    if event is Event.MERGE_CONFLICT:
        return "conflict", f"{task} conflicts with {main}; the tester merges it again"
    if event is Event.VERIFY_FAILED:
        return "verify_failed", f"{task} failed the post-merge check; back to review"
    if event is Event.RETRY_REQUESTED:
        return "info", f"{task} resumed"
    return "info", f"{task} {event.value.replace('_', ' ')}"


def _slot_role(role: str) -> Role:
    """The role a live run holds its pool slot as: the test command's as the tester's, the planner's
    as a task agent's (of no task on the board)."""
    if role == TEST_RUN:
        return Role.TESTER
    return Role.TASK if role == PLANNER else Role(role)


def _retry_limit(config: Config, role: str) -> float | None:
    return None if role == TEST_RUN else config.agent_for(role).retry_limit


def _idle_lines(config: Config, role: str) -> tuple[str, ...]:
    """Log lines of the role's CLI that are retries or reconnects, not progress, for the stall watchdog."""
    if role == TEST_RUN:
        return ()
    from kanban.presets import preset_for

    preset = preset_for(config.agent_for(role))
    return tuple(getattr(preset, "idle_lines", ())) if preset else ()


def ended_badly(run: Run, result: dict | None) -> str | None:
    """Why a run ended without a usable exit status, or None when it exited by itself."""
    if result is None:
        return "its supervisor and the process vanished without a result"
    if result.get("timed_out"):
        return f"timed out after {_human(run.timeout)}"
    if result.get("retrying"):
        return "gave up: its CLI did nothing but retry or reconnect to the model API for too long"
    if result.get("stalled"):
        return "stalled: its log stopped growing"
    if result.get("cancelled"):
        return "stopped by a person"
    if result.get("exit_code") is None:
        return str(result.get("error") or f"killed by signal {result.get('signal')}")
    return None


# -- carrying out a transition on the board ----------------------------------------------

def state_of(f: BoardFile, entry: Entry, strikes: Mapping[str, int] | None = None) -> TaskState:
    """The machine's view of an entry: its column, markers, ready line, and STRIKES."""
    return TaskState.of(to_task(f, entry, 0), strikes)


def carry_out(board: Board, task_id: str, tr: Transition, note: str | None = None) -> None:
    """Do to the entry what TR says, inside one board update: DONE takes it off the board (it lives
    on in CHANGELOG.md); any other column gets the entry, TR's markers and ready line, and NOTE.
    The action itself (spawning, merging, resetting strikes) is the caller's."""
    f, entry = board.require(task_id)
    if tr.column is Column.DONE:
        f.remove(entry)
        return
    entry = board.move(task_id, tr.column)
    board.touch(task_id)
    _set_flags(entry, retry=tr.retry, escalated=tr.escalated, ready=tr.ready)
    if note:
        entry.add_note(note)


def _set_flags(entry: Entry, *, retry: bool, escalated: bool, ready: bool) -> None:
    markers = [m for m in entry.markers if m not in (RETRY, ESCALATED)]
    markers += [RETRY] if retry else []
    markers += [ESCALATED] if escalated else []
    entry.set_markers(markers)
    status = entry.meta().get("status")
    if ready:
        entry.set_meta("status", READY_STATUS)
    elif status == READY_STATUS:
        entry.set_meta("status", None)


def _last_lines(text: str, n: int) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines[-n:])


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime()) + " UTC"


def _human(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:g}s"
    seconds = int(seconds)
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds}s"
