from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kanban.machine import (
    ROWS,
    STAGES,
    Action,
    Event,
    InvalidTransition,
    TaskState,
    Transition,
    describe_rows,
    find_row,
    transition,
)
from kanban.model import Column, Task

C, E, A = Column, Event, Action
IP, RV, TS = C.IN_PROGRESS, C.REVIEW, C.TESTING
ONE_REVIEW, ONE_TESTING, ONE_MERGE = {"review": 1}, {"testing": 1}, {"merge": 1}


def state(column, *, retry=False, escalated=False, ready=False, **strikes):
    return TaskState(column, retry, escalated, ready, strikes)


def to(column, action, *, retry=False, escalated=False, ready=False, strike=None):
    return Transition(column, retry, escalated, ready, action, strike)


# Written out from DESIGN section 3, independently of ROWS.
EXPECTED = [
    ("pick", state(C.TODO), E.PICKED, to(IP, A.SPAWN_TASK)),
    ("task ok", state(IP), E.TASK_OK, to(RV, A.SPAWN_REVIEWER)),
    ("task ok after retry", state(IP, retry=True), E.TASK_OK, to(RV, A.SPAWN_REVIEWER)),
    ("task failed", state(IP), E.TASK_FAILED, to(IP, A.SPAWN_TASK, retry=True)),
    ("task failed again", state(IP, retry=True), E.TASK_FAILED, to(IP, A.ESCALATE, escalated=True)),
    ("review ok", state(RV), E.REVIEW_OK, to(TS, A.SPAWN_TESTER)),
    ("review ok after retry", state(RV, retry=True), E.REVIEW_OK, to(TS, A.SPAWN_TESTER)),
    ("rejected", state(RV), E.REVIEW_REJECTED, to(IP, A.SPAWN_TASK, retry=True, strike="review")),
    ("rejected twice", state(RV, review=1), E.REVIEW_REJECTED, to(RV, A.ESCALATE, escalated=True)),
    ("test ok", state(TS), E.TEST_OK, to(TS, A.ENQUEUE_MERGE, ready=True)),
    ("test ok after retry", state(TS, retry=True), E.TEST_OK, to(TS, A.ENQUEUE_MERGE, ready=True)),
    ("test failed", state(TS), E.TEST_FAILED, to(TS, A.SPAWN_TESTER, retry=True)),
    ("test failed twice", state(TS, retry=True), E.TEST_FAILED,
     to(RV, A.SPAWN_REVIEWER, retry=True, strike="testing")),
    ("test failed twice, again", state(TS, retry=True, testing=1), E.TEST_FAILED,
     to(TS, A.ESCALATE, escalated=True)),
    ("tests failed before a tester", state(TS), E.TESTS_FAILED_FIRST, to(TS, A.SPAWN_TESTER)),
    ("tests failed before a tester, retry", state(TS, retry=True), E.TESTS_FAILED_FIRST,
     to(TS, A.SPAWN_TESTER, retry=True)),
    ("merged", state(TS, ready=True), E.MERGED, to(C.DONE, A.FINISH)),
    ("conflict", state(TS, ready=True), E.MERGE_CONFLICT, to(TS, A.SPAWN_TESTER, retry=True, strike="merge")),
    ("conflict again", state(TS, ready=True, merge=1), E.MERGE_CONFLICT, to(TS, A.ESCALATE, escalated=True)),
    ("verify failed", state(TS, ready=True), E.VERIFY_FAILED,
     to(RV, A.SPAWN_REVIEWER, retry=True, strike="merge")),
    ("verify failed again", state(TS, ready=True, merge=1), E.VERIFY_FAILED, to(TS, A.ESCALATE, escalated=True)),
    ("retry in progress", state(IP, escalated=True, review=1), E.RETRY_REQUESTED, to(IP, A.RESUME)),
    ("retry review", state(RV, escalated=True), E.RETRY_REQUESTED, to(RV, A.RESUME)),
    ("retry testing", state(TS, escalated=True, merge=1), E.RETRY_REQUESTED, to(TS, A.RESUME)),
    # `kanban retry` on a task with only [RETRY], or on one a person moved back to TODO
    ("retry todo", state(C.TODO, escalated=True), E.RETRY_REQUESTED, to(C.TODO, A.RESUME)),
    ("retry todo [RETRY]", state(C.TODO, retry=True), E.RETRY_REQUESTED, to(C.TODO, A.RESUME)),
    ("retry in progress [RETRY]", state(IP, retry=True), E.RETRY_REQUESTED, to(IP, A.RESUME)),
    ("retry review [RETRY]", state(RV, retry=True, review=1), E.RETRY_REQUESTED, to(RV, A.RESUME)),
    ("retry testing [RETRY]", state(TS, retry=True, testing=1), E.RETRY_REQUESTED, to(TS, A.RESUME)),
    # held for a person, in place: markers and ready cleared, [ESCALATED] set
    ("held todo", state(C.TODO), E.HELD, to(C.TODO, A.ESCALATE, escalated=True)),
    ("held in progress", state(IP, retry=True), E.HELD, to(IP, A.ESCALATE, escalated=True)),
    ("held review", state(RV, review=1), E.HELD, to(RV, A.ESCALATE, escalated=True)),
    ("held testing ready", state(TS, ready=True, merge=1), E.HELD, to(TS, A.ESCALATE, escalated=True)),
]


@pytest.mark.parametrize(("name", "before", "event", "after"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_each_row(name, before, event, after):
    assert transition(before, event) == after


def test_every_row_is_exercised_by_the_expected_list():
    used = {find_row(before, event) for _, before, event, _ in EXPECTED}
    assert used == set(ROWS)


def all_states():
    for column, retry, escalated, ready in itertools.product(Column, *[(False, True)] * 3):
        for counts in itertools.product((0, 1, 2), repeat=len(STAGES)):
            yield TaskState(column, retry, escalated, ready, dict(zip(STAGES, counts)))


def test_at_most_one_row_applies_to_any_state():
    for s, event in itertools.product(all_states(), Event):
        assert sum(row.matches(s, event) for row in ROWS) <= 1, (s, event)


@pytest.mark.parametrize(
    ("before", "event"),
    [
        (state(C.TODO), E.TASK_OK),
        (state(C.TODO, escalated=True), E.PICKED),
        (state(IP), E.PICKED),
        (state(IP), E.REVIEW_OK),
        (state(RV), E.TEST_OK),
        (state(TS, ready=True), E.TEST_OK),
        (state(TS, ready=True), E.TEST_FAILED),
        (state(TS), E.MERGED),
        (state(TS), E.MERGE_CONFLICT),
        (state(TS), E.VERIFY_FAILED),
        (state(C.DONE), E.MERGED),
        (state(C.DONE), E.RETRY_REQUESTED),
        (state(IP), E.RETRY_REQUESTED),
        (state(IP, escalated=True), E.TASK_OK),
        (state(RV, escalated=True), E.REVIEW_OK),
        (state(TS, escalated=True, ready=True), E.MERGED),
        (state(TS, retry=True), E.MERGED),
        (state(RV, ready=True), E.MERGED),
        (state(C.TODO), E.RETRY_REQUESTED),
        (state(TS, ready=True), E.RETRY_REQUESTED),
        (state(C.DONE, retry=True), E.RETRY_REQUESTED),
        (state(C.DONE), E.HELD),
        (state(IP, escalated=True), E.HELD),
        (state(TS, escalated=True, ready=True), E.HELD),
    ],
)
def test_invalid_events_raise(before, event):
    with pytest.raises(InvalidTransition) as info:
        transition(before, event)
    assert event.name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_invalid_message_names_what_the_state_accepts():
    with pytest.raises(InvalidTransition, match=r"TESTING \[RETRY\].*accepts: TEST_OK, TEST_FAILED"):
        transition(state(TS, retry=True), E.MERGED)


def test_escalated_task_accepts_only_retry_requested():
    for s in all_states():
        if s.escalated:
            for event in Event:
                if event is not E.RETRY_REQUESTED:
                    assert find_row(s, event) is None


def test_state_of_task_reads_markers_and_status():
    task = Task("TASK-1", "t", Column.TESTING, markers=frozenset({"RETRY"}), status="ready to merge")
    s = TaskState.of(task, {"merge": 1})
    assert (s.column, s.retry, s.escalated, s.ready, s.strikes) == (TS, True, False, True, {"merge": 1})


def test_describe_rows_has_one_line_per_row():
    lines = describe_rows()
    assert len(lines) == len(ROWS)
    assert "REVIEW (review strikes 0) + REVIEW_REJECTED -> IN_PROGRESS [RETRY]: SPAWN_TASK, strike review" in lines
    assert "TESTING (ready) + MERGED -> DONE: FINISH" in lines
    for column in ("TODO", "IN_PROGRESS", "REVIEW", "TESTING"):
        assert f"{column} (escalated) + RETRY_REQUESTED -> {column}: RESUME" in lines
        assert f"{column} (retry) + RETRY_REQUESTED -> {column}: RESUME" in lines
        assert f"{column} + HELD -> {column} [ESCALATED]: ESCALATE" in lines


def test_every_task_on_the_board_can_be_held_unless_escalated():
    for s in all_states():
        row = find_row(s, E.HELD)
        if s.column is C.DONE or s.escalated:
            assert row is None, s
        else:
            t = transition(s, E.HELD)
            assert (t.column, t.retry, t.escalated, t.ready, t.action, t.strike) == (
                s.column, False, True, False, A.ESCALATE, None), s


def test_retry_requested_applies_exactly_to_escalated_or_retry_tasks_on_the_board():
    for s in all_states():
        accepted = find_row(s, E.RETRY_REQUESTED) is not None
        assert accepted == (s.column is not C.DONE and (s.escalated or s.retry)), s
        if accepted:
            assert transition(s, E.RETRY_REQUESTED) == to(s.column, A.RESUME)


def test_held_for_an_escalated_task_names_what_it_accepts():
    with pytest.raises(InvalidTransition, match=r"HELD does not apply to a task in REVIEW \[ESCALATED\].*"
                                                r"accepts: RETRY_REQUESTED"):
        transition(state(RV, escalated=True), E.HELD)


# --- no task loops forever -------------------------------------------------------

FAILURES = (E.TASK_FAILED, E.REVIEW_REJECTED, E.TEST_FAILED, E.MERGE_CONFLICT, E.VERIFY_FAILED)
# Only a person may restart a task. TESTS_FAILED_FIRST is a self-loop in the table: the engine
# sends it only before the tester's first run in a TESTING visit, so it happens at most once per
# visit (the engine test of the test stage pins that); after the tester it is TEST_FAILED.
WALKING = [e for e in Event if e not in (E.RETRY_REQUESTED, E.TESTS_FAILED_FIRST)]


def test_tests_failing_before_any_tester_keep_the_markers_and_spawn_the_tester():
    for retry in (False, True):
        t = transition(state(C.TESTING, retry=retry), E.TESTS_FAILED_FIRST)
        assert (t.column, t.retry, t.escalated, t.ready, t.action, t.strike) == (
            C.TESTING, retry, False, False, A.SPAWN_TESTER, None)
    with pytest.raises(InvalidTransition):
        transition(state(C.TESTING, ready=True), E.TESTS_FAILED_FIRST)


def apply(s: TaskState, event: Event) -> TaskState:
    """Do what a caller does with a transition, strikes included."""
    t = transition(s, event)
    strikes = dict(s.strikes)
    if t.strike:
        strikes[t.strike] = strikes.get(t.strike, 0) + 1
    if t.action is A.RESUME:
        strikes = {}
    return TaskState(t.column, t.retry, t.escalated, t.ready, strikes)


def finished(s: TaskState) -> bool:
    return s.column is C.DONE or s.escalated


def longest_walk(s: TaskState, memo: dict) -> int:
    """Longest event sequence from `s` to DONE or ESCALATED; recursion fails on a cycle."""
    key = (s.column, s.retry, s.escalated, s.ready, tuple(sorted(s.strikes.items())))
    if key in memo:
        assert memo[key] is not None, f"cycle through {s}"
        return memo[key]
    memo[key] = None
    nexts = [apply(s, e) for e in WALKING if find_row(s, e)]
    assert nexts or finished(s), f"stuck in {s}"
    memo[key] = 0 if finished(s) else 1 + max(longest_walk(n, memo) for n in nexts)
    return memo[key]


BOUND = longest_walk(state(C.TODO), {})


def test_the_graph_without_a_person_is_acyclic_and_short():
    assert 10 <= BOUND <= 20


@settings(max_examples=300)
@given(st.lists(st.sampled_from(WALKING), max_size=60))
def test_random_event_sequences_end_within_the_bound(events):
    s, steps = state(C.TODO), 0
    for event in events:
        if finished(s):
            break
        if find_row(s, event) is None:
            continue  # this event cannot happen here; the caller would never report it
        s, steps = apply(s, event), steps + 1
    assert steps <= BOUND


@settings(max_examples=300)
@given(st.data())
def test_failures_alone_escalate_within_a_few_steps(data):
    # Walk anywhere first, then only fail: escalation must follow quickly.
    s = state(C.TODO)
    for _ in range(data.draw(st.integers(0, BOUND))):
        options = [e for e in WALKING if find_row(s, e)]
        if finished(s) or not options:
            break
        s = apply(s, data.draw(st.sampled_from(options)))
    steps = 0
    while not finished(s):
        options = [e for e in FAILURES if find_row(s, e)] or [E.PICKED]
        s, steps = apply(s, data.draw(st.sampled_from(options))), steps + 1
        assert steps <= 8, s
    assert s.column is C.DONE or s.escalated


@settings(max_examples=100)
@given(st.data())
def test_retry_requested_resets_and_resumes(data):
    s = state(data.draw(st.sampled_from([IP, RV, TS])), escalated=True, ready=data.draw(st.booleans()),
              review=1, testing=1, merge=1)
    s = apply(s, E.RETRY_REQUESTED)
    assert not (s.escalated or s.retry or s.ready) and s.strikes == {}
