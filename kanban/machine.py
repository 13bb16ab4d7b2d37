"""The task state machine of DESIGN section 3, kept as a table of rows. Pure.

The caller reads a task's state from the board, reports what happened as an
`Event`, and carries out the `Transition` it gets back: move the entry, set
or clear the markers, run the action, and bump the named strike counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from kanban.model import Column, Task


class Event(str, Enum):
    PICKED = "picked"
    TASK_OK = "task_ok"
    TASK_FAILED = "task_failed"
    REVIEW_OK = "review_ok"
    REVIEW_REJECTED = "review_rejected"
    TEST_OK = "test_ok"
    TEST_FAILED = "test_failed"  # the tests still fail after the tester worked on them
    TESTS_FAILED_FIRST = "tests_failed_first"  # `[test] command` failed before any tester fixed
    MERGED = "merged"
    MERGE_CONFLICT = "merge_conflict"
    VERIFY_FAILED = "verify_failed"
    RETRY_REQUESTED = "retry_requested"  # a person ran `kanban retry` on an escalated or [RETRY] task
    HELD = "held"  # a person must look: stopped with `kanban stop`, a budget, a run that could not be judged


class Action(str, Enum):
    SPAWN_TASK = "spawn_task"
    SPAWN_REVIEWER = "spawn_reviewer"
    SPAWN_TESTER = "spawn_tester"
    ENQUEUE_MERGE = "enqueue_merge"
    FINISH = "finish"  # changelog entry, worktree and branch removed
    ESCALATE = "escalate"  # leave it for a person
    RESUME = "resume"  # spawn the column's role again (TODO: wait to be picked); the caller resets strikes


# Strike counters, named for the stage a task was sent back from.
REVIEW_STAGE = "review"
TESTING_STAGE = "testing"
MERGE_STAGE = "merge"
STAGES = (REVIEW_STAGE, TESTING_STAGE, MERGE_STAGE)


class InvalidTransition(ValueError):
    """No row of the table applies: the event does not fit the task's state."""

    def __init__(self, state: TaskState, event: Event) -> None:
        accepted = ", ".join(e.name for e in accepted_events(state)) or "no event"
        super().__init__(f"{event.name} does not apply to a task in {describe_state(state)} (it accepts: {accepted})")
        self.state = state
        self.event = event


@dataclass(frozen=True)
class TaskState:
    column: Column
    retry: bool = False
    escalated: bool = False
    ready: bool = False
    strikes: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, task: Task, strikes: Mapping[str, int] | None = None) -> TaskState:
        return cls(task.column, task.retry, task.escalated, task.ready, dict(strikes or {}))


@dataclass(frozen=True)
class Transition:
    column: Column
    retry: bool
    escalated: bool
    ready: bool
    action: Action
    strike: str | None  # the strike counter the caller must increment


@dataclass(frozen=True)
class Row:
    """One line of the table. Guards left of `target`; None matches either value."""

    source: Column
    event: Event
    target: Column
    action: Action
    # guards
    retry: bool | None = None
    ready: bool | None = None
    escalated: bool = False  # only RETRY_REQUESTED rows take escalated tasks
    stage: str | None = None  # strike counter the next guard reads
    struck: bool | None = None  # True: sent back from `stage` before; False: never
    # outcome
    to_retry: bool = False
    to_escalated: bool = False
    to_ready: bool = False
    strike: str | None = None

    def matches(self, state: TaskState, event: Event) -> bool:
        return (
            self.source is state.column
            and self.event is event
            and self.escalated == state.escalated
            and self.retry in (None, state.retry)
            and self.ready in (None, state.ready)
            and (self.stage is None or self.struck == (state.strikes.get(self.stage, 0) >= 1))
        )


_C, _E, _A = Column, Event, Action

# A second send-back from the same stage escalates instead: the `struck=True`
# rows. Escalating clears [RETRY] and ready: one marker per heading, and an
# escalated task must not sit in the merge queue.
ROWS: tuple[Row, ...] = (
    Row(_C.TODO, _E.PICKED, _C.IN_PROGRESS, _A.SPAWN_TASK),
    Row(_C.IN_PROGRESS, _E.TASK_OK, _C.REVIEW, _A.SPAWN_REVIEWER),
    Row(_C.IN_PROGRESS, _E.TASK_FAILED, _C.IN_PROGRESS, _A.SPAWN_TASK, retry=False, to_retry=True),
    Row(_C.IN_PROGRESS, _E.TASK_FAILED, _C.IN_PROGRESS, _A.ESCALATE, retry=True, to_escalated=True),
    Row(_C.REVIEW, _E.REVIEW_OK, _C.TESTING, _A.SPAWN_TESTER),
    Row(_C.REVIEW, _E.REVIEW_REJECTED, _C.IN_PROGRESS, _A.SPAWN_TASK,
        stage=REVIEW_STAGE, struck=False, to_retry=True, strike=REVIEW_STAGE),
    Row(_C.REVIEW, _E.REVIEW_REJECTED, _C.REVIEW, _A.ESCALATE,
        stage=REVIEW_STAGE, struck=True, to_escalated=True),
    Row(_C.TESTING, _E.TEST_OK, _C.TESTING, _A.ENQUEUE_MERGE, ready=False, to_ready=True),
    # The test command failed and no tester has tried yet: the tester fixes, markers stay.
    Row(_C.TESTING, _E.TESTS_FAILED_FIRST, _C.TESTING, _A.SPAWN_TESTER, retry=False, ready=False),
    Row(_C.TESTING, _E.TESTS_FAILED_FIRST, _C.TESTING, _A.SPAWN_TESTER, retry=True, ready=False,
        to_retry=True),
    Row(_C.TESTING, _E.TEST_FAILED, _C.TESTING, _A.SPAWN_TESTER, retry=False, ready=False, to_retry=True),
    Row(_C.TESTING, _E.TEST_FAILED, _C.REVIEW, _A.SPAWN_REVIEWER, retry=True, ready=False,
        stage=TESTING_STAGE, struck=False, to_retry=True, strike=TESTING_STAGE),
    Row(_C.TESTING, _E.TEST_FAILED, _C.TESTING, _A.ESCALATE, retry=True, ready=False,
        stage=TESTING_STAGE, struck=True, to_escalated=True),
    Row(_C.TESTING, _E.MERGED, _C.DONE, _A.FINISH, ready=True),
    Row(_C.TESTING, _E.MERGE_CONFLICT, _C.TESTING, _A.SPAWN_TESTER, ready=True,
        stage=MERGE_STAGE, struck=False, to_retry=True, strike=MERGE_STAGE),
    Row(_C.TESTING, _E.MERGE_CONFLICT, _C.TESTING, _A.ESCALATE, ready=True,
        stage=MERGE_STAGE, struck=True, to_escalated=True),
    Row(_C.TESTING, _E.VERIFY_FAILED, _C.REVIEW, _A.SPAWN_REVIEWER, ready=True,
        stage=MERGE_STAGE, struck=False, to_retry=True, strike=MERGE_STAGE),
    Row(_C.TESTING, _E.VERIFY_FAILED, _C.TESTING, _A.ESCALATE, ready=True,
        stage=MERGE_STAGE, struck=True, to_escalated=True),
    # A person resumes a task: escalated, or only [RETRY] (say, to give it fresh strikes). A TODO
    # entry has these markers only when a person moved it back there; it then waits to be picked.
    Row(_C.TODO, _E.RETRY_REQUESTED, _C.TODO, _A.RESUME, escalated=True),
    Row(_C.TODO, _E.RETRY_REQUESTED, _C.TODO, _A.RESUME, retry=True),
    Row(_C.IN_PROGRESS, _E.RETRY_REQUESTED, _C.IN_PROGRESS, _A.RESUME, escalated=True),
    Row(_C.IN_PROGRESS, _E.RETRY_REQUESTED, _C.IN_PROGRESS, _A.RESUME, retry=True),
    Row(_C.REVIEW, _E.RETRY_REQUESTED, _C.REVIEW, _A.RESUME, escalated=True),
    Row(_C.REVIEW, _E.RETRY_REQUESTED, _C.REVIEW, _A.RESUME, retry=True),
    Row(_C.TESTING, _E.RETRY_REQUESTED, _C.TESTING, _A.RESUME, escalated=True),
    Row(_C.TESTING, _E.RETRY_REQUESTED, _C.TESTING, _A.RESUME, retry=True),
    # Held for a person, in place, from any column on the board (escalated already: no row).
    Row(_C.TODO, _E.HELD, _C.TODO, _A.ESCALATE, to_escalated=True),
    Row(_C.IN_PROGRESS, _E.HELD, _C.IN_PROGRESS, _A.ESCALATE, to_escalated=True),
    Row(_C.REVIEW, _E.HELD, _C.REVIEW, _A.ESCALATE, to_escalated=True),
    Row(_C.TESTING, _E.HELD, _C.TESTING, _A.ESCALATE, to_escalated=True),
)


def find_row(state: TaskState, event: Event) -> Row | None:
    """The row that applies, if any. Guards are disjoint, so there is at most one."""
    return next((row for row in ROWS if row.matches(state, event)), None)


def transition(state: TaskState, event: Event) -> Transition:
    row = find_row(state, event)
    if row is None:
        raise InvalidTransition(state, event)
    return Transition(row.target, row.to_retry, row.to_escalated, row.to_ready, row.action, row.strike)


def accepted_events(state: TaskState) -> list[Event]:
    return [event for event in Event if find_row(state, event) is not None]


def describe_state(state: TaskState) -> str:
    return state.column.name + _flags(state.retry, state.escalated, state.ready)


def describe_rows() -> list[str]:
    """One line per row, e.g. for the docs' table of transitions."""
    return [_describe_row(row) for row in ROWS]


def _describe_row(row: Row) -> str:
    guards = ", ".join(_guard_words(row))
    source = f"{row.source.name} ({guards})" if guards else row.source.name
    target = row.target.name + _flags(row.to_retry, row.to_escalated, row.to_ready)
    strike = f", strike {row.strike}" if row.strike else ""
    return f"{source} + {row.event.name} -> {target}: {row.action.name}{strike}"


def _guard_words(row: Row) -> list[str]:
    words = []
    if row.escalated:
        words.append("escalated")
    if row.retry is not None:
        words.append("retry" if row.retry else "no retry")
    if row.ready is not None:
        words.append("ready" if row.ready else "not ready")
    if row.stage is not None:
        words.append(f"{row.stage} strikes {'>= 1' if row.struck else '0'}")
    return words


def _flags(retry: bool, escalated: bool, ready: bool) -> str:
    return "".join(
        text for on, text in ((retry, " [RETRY]"), (escalated, " [ESCALATED]"), (ready, " ready")) if on
    )
