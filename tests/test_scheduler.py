from __future__ import annotations

import re

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from kanban.model import Column, Role, Task
from kanban.scheduler import Start, blocked_reasons, files_overlap, plan

C = Column
ACTIVE = (C.IN_PROGRESS, C.REVIEW, C.TESTING)


def task(n, column=C.TODO, *, priority=3, depends=(), files=(), markers=(), status=None, order=None):
    return Task(
        f"TASK-{n}", f"task {n}", column, priority, tuple(depends), tuple(files),
        frozenset(markers), status, None, n if order is None else order,
    )


def ids(starts):
    return [s.task_id for s in starts]


# --- plan ------------------------------------------------------------------------


def test_finishing_beats_starting():
    tasks = [task(1), task(2, C.IN_PROGRESS), task(3, C.REVIEW), task(4, C.TESTING)]
    assert plan(tasks, done=set(), running={}, pool_size=6) == [
        Start("TASK-4", Role.TESTER, False),
        Start("TASK-3", Role.REVIEWER, False),
        Start("TASK-2", Role.TASK, False),
        Start("TASK-1", Role.TASK, True),
    ]


def test_scarce_slots_go_to_finishing_work():
    tasks = [task(1), task(2, C.IN_PROGRESS), task(3, C.REVIEW), task(4, C.TESTING)]
    assert ids(plan(tasks, done=set(), running={"TASK-9": Role.TASK}, pool_size=3)) == ["TASK-4", "TASK-3"]


def test_priority_then_order_within_a_group():
    tasks = [
        task(1, C.REVIEW, priority=3, order=0),
        task(2, C.REVIEW, priority=1, order=5),
        task(3, C.REVIEW, priority=3, order=-1),
        task(4, priority=2, order=9),
        task(5, priority=1, order=10),
        task(6, priority=2, order=8),
    ]
    assert ids(plan(tasks, done=set(), running={}, pool_size=6)) == [
        "TASK-2", "TASK-3", "TASK-1", "TASK-5", "TASK-6", "TASK-4",
    ]


def test_pick_waits_for_dependencies_to_be_merged():
    tasks = [task(1, depends=["TASK-2"]), task(2, C.TESTING, status="ready to merge"), task(3, depends=["TASK-4"])]
    assert ids(plan(tasks, done={"TASK-4"}, running={}, pool_size=6)) == ["TASK-3"]
    assert ids(plan(tasks, done={"TASK-2", "TASK-4"}, running={}, pool_size=6)) == ["TASK-1", "TASK-3"]


def test_files_in_flight_block_a_pick_even_without_an_agent():
    tasks = [
        task(1, files=["src/cache.py"]),
        task(2, C.TESTING, files=["src"], status="ready to merge"),
        task(3, files=["docs/*.md"]),
    ]
    assert ids(plan(tasks, done=set(), running={}, pool_size=6)) == ["TASK-3"]


def test_escalated_tasks_release_their_files():
    tasks = [task(1, files=["src/a.py"]), task(2, C.REVIEW, files=["src/a.py"], markers=["ESCALATED"])]
    assert plan(tasks, done=set(), running={}, pool_size=6) == [Start("TASK-1", Role.TASK, True)]


def test_two_overlapping_todo_tasks_only_first_is_picked():
    tasks = [task(1, files=["src/**/*.py"]), task(2, files=["src/db/models.py"]), task(3, files=["README.md"])]
    assert ids(plan(tasks, done=set(), running={}, pool_size=6)) == ["TASK-1", "TASK-3"]


def test_blocked_pick_does_not_hold_back_later_ones():
    tasks = [task(1, priority=1, depends=["TASK-8"]), task(2, priority=2)]
    assert ids(plan(tasks, done=set(), running={}, pool_size=1)) == ["TASK-2"]


def test_tasks_without_files_overlap_nothing():
    tasks = [task(1), task(2), task(3, C.IN_PROGRESS, files=["**"])]
    assert ids(plan(tasks, done=set(), running={"TASK-3": Role.TASK}, pool_size=6)) == ["TASK-1", "TASK-2"]


def test_escalated_and_ready_tasks_get_no_agent():
    tasks = [
        task(1, C.IN_PROGRESS, markers=["ESCALATED"]),
        task(2, C.TESTING, status="ready to merge"),
        task(3, C.TODO, markers=["ESCALATED"]),
        task(4, C.TESTING, markers=["RETRY"]),
    ]
    assert plan(tasks, done=set(), running={}, pool_size=6) == [Start("TASK-4", Role.TESTER, False)]


def test_running_tasks_are_not_started_twice():
    tasks = [task(1, C.IN_PROGRESS), task(2, C.REVIEW), task(3, C.TESTING)]
    running = {"TASK-1": Role.TASK, "TASK-3": Role.TESTER}
    assert plan(tasks, done=set(), running=running, pool_size=6) == [Start("TASK-2", Role.REVIEWER, False)]


def test_full_or_overfull_pool_starts_nothing():
    tasks = [task(1), task(2, C.REVIEW)]
    running = {f"X-{i}": Role.TASK for i in range(4)}
    assert plan(tasks, done=set(), running=running, pool_size=4) == []
    assert plan(tasks, done=set(), running=running, pool_size=2) == []
    assert plan(tasks, done=set(), running={}, pool_size=0) == []


def test_done_column_is_ignored():
    assert plan([task(1, C.DONE)], done={"TASK-1"}, running={}, pool_size=6) == []


def test_blocked_reasons():
    tasks = [
        todo := task(1, depends=["TASK-2", "TASK-3", "TASK-99"], files=["src/cache.py"]),
        task(2, C.DONE),
        task(3, C.IN_PROGRESS),
        task(7, C.REVIEW, files=["src/*.py"]),
        task(8, C.REVIEW, files=["src/db.py"]),
        task(9, C.TESTING, files=["src"], markers=["ESCALATED"]),
    ]
    assert blocked_reasons(todo, tasks, {"TASK-2"}) == [
        "waiting on TASK-3",
        "waiting on TASK-99 (on no board)",
        "files overlap TASK-7",
    ]
    assert blocked_reasons(task(5), tasks, set()) == []
    assert blocked_reasons(task(6, markers=["ESCALATED"]), tasks, set()) == ["escalated: waiting for a person"]


PATHS = ["a.py", "b.py", "src", "src/a.py", "src/b/c.py", "docs/*.md", "src/**", "*.py", "tests/test_?.py"]


@st.composite
def boards(draw):
    n = draw(st.integers(0, 15))
    tasks = []
    for i in range(n):
        column = draw(st.sampled_from([C.TODO, *ACTIVE, C.DONE]))
        tasks.append(task(
            i, column,
            priority=draw(st.integers(1, 3)),
            depends=draw(st.lists(st.sampled_from([f"TASK-{k}" for k in range(n)]), max_size=2)),
            files=draw(st.lists(st.sampled_from(PATHS), max_size=2)),
            markers=draw(st.sampled_from([(), ("RETRY",), ("ESCALATED",)])),
            status=draw(st.sampled_from([None, "ready to merge"])),
            order=draw(st.integers(0, 5)),
        ))
    running_ids = draw(st.lists(st.sampled_from([t.id for t in tasks] + ["GONE-1"]), max_size=8, unique=True))
    running = {i: Role.TASK for i in running_ids}
    done = {t.id for t in tasks if t.column is C.DONE}
    return tasks, done, running, draw(st.integers(0, 8))


@settings(max_examples=120)
@given(boards())
def test_plan_invariants(board):
    tasks, done, running, pool_size = board
    starts = plan(tasks, done=done, running=running, pool_size=pool_size)
    by_id = {t.id: t for t in tasks}
    assert len(starts) <= max(0, pool_size - len(running))
    assert len({s.task_id for s in starts}) == len(starts)
    for s in starts:
        t = by_id[s.task_id]
        assert s.task_id not in running and not t.escalated and not t.ready
        assert s.pick == (t.column is C.TODO)
        assert not s.pick or set(t.depends) <= done
    # Leases: no two tasks in flight after this plan declare overlapping files.
    picked = {s.task_id for s in starts if s.pick}
    flying = [t for t in tasks if (t.column in ACTIVE and not t.escalated) or t.id in picked]
    for t in flying:
        if t.id in picked:
            assert not any(files_overlap(t.files, o.files) for o in flying if o.id != t.id)
    # Finishing first: a pick only when no unstarted active task was left out.
    if picked:
        assert all(t.id in running or t.escalated or t.ready or t.id in {s.task_id for s in starts}
                   for t in tasks if t.column in ACTIVE)


# --- files_overlap ---------------------------------------------------------------

OVERLAP_CASES = [
    # literals
    ("src/a.py", "src/a.py", True),
    ("src/a.py", "src/b.py", False),
    ("src", "src/a.py", True),
    ("src", "srcx/a.py", False),
    ("src/a", "src/a.py", False),
    ("./src/", "src", True),
    ("src//a.py", "./src/./a.py", True),
    ("/src/a.py", "src/a.py", True),
    (".", "anything/at/all", True),
    # glob vs literal
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/a/b.py", False),
    ("src/*.py", "src", True),
    ("src/*.py", "srcx", False),
    ("src/*.py", "src/a.md", False),
    ("src/*.py", "src/a.py/inner.txt", True),  # src/a.py may be a directory
    ("src/*", "src/pkg/mod.py", True),
    ("src/a*/x.py", "src/a", True),  # `*` may be empty: src/a/x.py
    ("src/a*.py", "src/a", False),
    ("src/**", "src/a/b/c.py", True),
    ("src/**/c.py", "src/c.py", True),
    ("src/**/c.py", "src/a/b/c.py", True),
    ("**/c.py", "c.py", True),
    ("**/c.py", "src/d.py", True),  # src/d.py may be a directory holding c.py
    ("src/**/c.py", "lib/c.py", False),
    ("tests/test_?.py", "tests/test_a.py", True),
    ("tests/test_?.py", "tests/test_ab.py", False),
    ("tests/test_?.py", "tests/test_/.py", False),
    ("src/[ab].py", "src/b.py", True),
    ("src/[ab].py", "src/c.py", False),
    ("src/[a-c].py", "src/b.py", True),
    ("src/[!a].py", "src/a.py", False),
    ("src/[!a].py", "src/z.py", True),
    ("src/[^a].py", "src/a.py", False),
    ("src/[].py", "src/].py", False),  # `[].py` never closes: a literal `[`
    ("src/[.py", "src/[.py", True),
    ("src/[]]", "src/]", True),
    # glob vs glob
    ("src/*.py", "src/**", True),
    ("src/*.py", "docs/*.md", False),
    ("src/*", "srcx/*", False),
    ("src*", "srcx/*", True),
    ("src/a*", "src/ab*", True),
    ("src/a*", "src/b*", False),
    ("*.py", "*.md", False),
    ("*.py", "a.*", True),
    ("*.py", "**/*.md", True),  # x.py may be a directory holding y.md
    ("src/*/tests", "src/core/*", True),
    ("src/[ab]/*.py", "src/[cd]/*.py", False),
    ("src/[a-m]*", "src/[n-z]*", False),
    ("src/[a-m]*", "src/[!n-z]*", True),
    ("**", "*.py", True),
]


@pytest.mark.parametrize(("a", "b", "expected"), OVERLAP_CASES)
def test_files_overlap_cases(a, b, expected):
    assert files_overlap([a], [b]) is expected
    assert files_overlap([b], [a]) is expected


def test_files_overlap_lists():
    assert files_overlap(["a.py", "src/*.py"], ["docs", "src/x.py"])
    assert not files_overlap(["a.py", "b.py"], ["c.py", "docs"])
    assert not files_overlap([], ["**"])
    assert not files_overlap(["", "  "], ["**"])  # blank entries name nothing
    assert files_overlap("src/a.py", ["src"])  # a bare string is one entry, not letters


# A reference matcher, written independently: translate to a regular expression.
def reference_regex(entry: str) -> re.Pattern:
    pattern = "/".join(p for p in entry.strip().split("/") if p not in ("", ".")) or "**"
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":  # the generator below only writes well-formed classes
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            neg = body[0] in "!^"
            out, i = out + f"(?!/)[{'^' if neg else ''}{body[neg:]}]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def covers(entry: str, path: str) -> bool:
    """The entry matches the path or one of its parent directories."""
    rx, parts = reference_regex(entry), path.split("/")
    return any(rx.fullmatch("/".join(parts[:k])) for k in range(1, len(parts) + 1))


# Each piece of an entry, with strings it can match, to build a witness path.
PIECES = {
    "a": ["a"], "b": ["b"], ".": ["."], "/": ["/"], "*": ["", "a", "bc"], "**": ["", "c", "a/b"],
    "?": ["a", "c"], "[ab]": ["a", "b"], "[!a]": ["b", "c"], "[a-c]": ["b", "c"], "**/": ["", "a/", "b/c/"],
}


@st.composite
def entry_and_witness(draw):
    pieces = draw(st.lists(st.sampled_from(sorted(PIECES)), min_size=1, max_size=6))
    witness = "".join(draw(st.sampled_from(PIECES[p])) for p in pieces)
    return "".join(pieces), "/".join(p for p in witness.split("/") if p not in ("", "."))


@st.composite
def generalised(draw, path):
    """An entry that likely covers `path`: itself, a parent, or with wildcards put in."""
    parts = path.split("/")
    k = draw(st.integers(1, len(parts)))
    parts = parts[:k]
    j = draw(st.integers(0, k - 1))
    parts[j] = draw(st.sampled_from([parts[j], "*", "**", "?" * len(parts[j]), parts[j][:1] + "*"]))
    return "/".join(parts)


entries = entry_and_witness().map(lambda pair: pair[0])
entry_lists = st.lists(entries, max_size=3)


@settings(max_examples=300)
@given(entry_lists, entry_lists)
def test_files_overlap_is_symmetric(a, b):
    assert files_overlap(a, b) == files_overlap(b, a)


@settings(max_examples=300)
@given(entry_and_witness(), entries, st.data())
def test_a_path_covered_by_both_means_overlap(first, other, data):
    a, path = first
    assume(path and covers(a, path))
    b = data.draw(st.one_of(generalised(path), st.just(other)))
    event(f"b covers the path: {covers(b, path)}")
    if covers(b, path):
        assert files_overlap([a], [b]), (a, b, path)
        assert files_overlap([a], [path]) and files_overlap([b], [path])


@settings(max_examples=120)
@given(st.lists(entry_lists, min_size=1, max_size=6), entry_lists)
def test_lease_index_agrees_with_pairwise_overlap(held, asked):
    from kanban.scheduler import Leases

    holders = [Task(f"T-{i}", "t", Column.IN_PROGRESS, files=tuple(files)) for i, files in enumerate(held)]
    task = Task("Q-1", "q", Column.TODO, files=tuple(asked))
    expected = {t.id for t in holders if files_overlap(t.files, task.files)}
    assert {t.id for t in Leases(holders).overlapping(task)} == expected
