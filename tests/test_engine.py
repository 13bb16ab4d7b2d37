"""Acceptance tests of the agent engine: real git, real supervised subprocesses as agents.

Agents are the scripted fake of agents_kit.py, run by the real supervisor in
real worktrees. The engine is driven by `kanban tick` / `kanban run` (as a
subprocess or in-process) and polled in bounded loops; timeouts are short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from agents_kit import Project, live_pids, max_overlap, task_md
from conftest import git, run_cli

from kanban import procs
from kanban.commands.run import run as run_loop
from kanban.runner import LocalRunner

RETRY = frozenset({"RETRY"})
ESCALATED = frozenset({"ESCALATED"})
READY = ("TESTING", frozenset(), "ready to merge")

pytestmark = pytest.mark.timeout(90)


def wait_for(condition, timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def transitions(p: Project, task: str) -> list[tuple[str, str | None, str | None]]:
    kinds = {"picked", "task_ok", "task_failed", "review_ok", "review_rejected", "test_ok", "test_failed"}
    return [(e[2], e[3], e[4]) for e in p.history_events(task) if e[2] in kinds]


def recorder(p: Project, task: str, seen: list, done):
    """An `until` for drive() that also records every state the task was seen in after a tick."""

    def until() -> bool:
        state = p.where(task)
        if not seen or seen[-1] != state:
            seen.append(state)
        return done(state)

    return until


def started(p: Project, task: str, role: str, attempt: int) -> dict:
    found = [e for e in p.events("start") if (e["task"], e["role"], e["attempt"]) == (task, role, attempt)]
    assert len(found) == 1, (task, role, attempt, p.events())
    return found[0]


# --- 1. the whole way to "ready to merge" -------------------------------------------------


def test_success_goes_todo_in_progress_review_testing_ready(kit):
    p = kit(task_md("TASK-1", "Add a greeting", files="hello.txt"), rules=[
        {"role": "task", "steps": [["sleep", 0.2], ["commit", "hello.txt"], ["report", "Wrote hello.txt"]]},
        {"role": "reviewer", "steps": [["report", "Looks good to me"]]},
        {"role": "tester", "steps": [["report", "All 3 tests pass"]]},
    ])
    main_before = git(p.root, "rev-parse", "main").strip()
    assert p.where("TASK-1") == ("TODO", frozenset(), None)
    seen: list = []
    p.drive(recorder(p, "TASK-1", seen, lambda s: s == READY), what="TASK-1 ready to merge")

    columns = [s[0] for s in seen]
    assert [c for i, c in enumerate(columns) if i == 0 or columns[i - 1] != c] == ["IN_PROGRESS", "REVIEW", "TESTING"]
    assert seen[-1] == READY
    assert transitions(p, "TASK-1") == [
        ("picked", "TODO", "IN_PROGRESS"), ("task_ok", "IN_PROGRESS", "REVIEW"),
        ("review_ok", "REVIEW", "TESTING"), ("test_ok", "TESTING", "TESTING")]
    testing = (p.root / "TESTING.md").read_text()
    assert "## TASK-1: Add a greeting" in testing and "status: ready to merge" in testing
    for name in ("TODO.md", "IN_PROGRESS.md", "REVIEW.md"):
        assert "TASK-1" not in (p.root / name).read_text()

    # the branch has the agent's commit; main did not move (nothing merged)
    assert git(p.root, "rev-parse", "main").strip() == main_before
    log = git(p.root, "log", "--format=%s", "main..kanban/TASK-1").splitlines()
    assert "TASK-1: task attempt 1" in log
    assert git(p.root, "show", "kanban/TASK-1:hello.txt") == "TASK-1 task attempt 1\n"

    # the worktree, on the task's branch, is where every agent ran
    worktree = p.root / ".worktrees" / "TASK-1"
    assert worktree.is_dir()
    assert git(worktree, "symbolic-ref", "--short", "HEAD").strip() == "kanban/TASK-1"
    listed = git(p.root, "worktree", "list", "--porcelain")
    assert f"worktree {worktree}\n" in listed and "branch refs/heads/kanban/TASK-1" in listed
    for role in ("task", "reviewer", "tester"):
        start = started(p, "TASK-1", role, 1)
        assert Path(start["cwd"]) == worktree
        assert start["env"]["KANBAN_TASK_ID"] == "TASK-1" and start["env"]["KANBAN_ROLE"] == role
        assert start["env"]["KANBAN_PROMPT_FILE"] == start["prompt_file"]
        assert Path(start["env"]["KANBAN_WORKTREE"]) == worktree
    assert "Add a greeting" in p.prompt("TASK-1", "task", 1)

    runs = p.runs("TASK-1")
    assert [(r.role, r.attempt, r.exit_code, r.outcome) for r in runs] == [
        ("task", 1, 0, "ok"), ("reviewer", 1, 0, "ok"), ("tester", 1, 0, "ok")]
    assert all(r.ended is not None and not r.timed_out for r in runs)

    entry = p.entry_text("TASK-1")
    assert "### Notes" in entry
    for text in ("task agent attempt 1 succeeded", "Wrote hello.txt", "reviewer attempt 1 succeeded",
                 "Looks good to me", "tester attempt 1 succeeded", "All 3 tests pass"):
        assert text in entry, text


# --- 2, 3, 6. task agent failures ----------------------------------------------------------


def test_failure_then_success_retries_with_the_failure_note_in_the_prompt(kit, tmp_path):
    go = tmp_path / "go"
    p = kit(task_md("TASK-1"), rules=[
        {"role": "task", "attempt": 1, "steps": [
            ["print", "compiling..."], ["print", "error: boom at line 7"],
            ["report", "Could not build: the header is missing"], ["exit", 1]]},
        {"role": "task", "attempt": 2, "steps": [["wait_for", str(go)], ["commit"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None) and len(p.runs("TASK-1")) == 2,
            what="a [RETRY] with its second attempt running")

    assert "## [RETRY] TASK-1:" in (p.root / "IN_PROGRESS.md").read_text()
    first = p.runs("TASK-1")[0]
    assert (first.exit_code, first.outcome) == (1, "failed")
    entry = p.entry_text("TASK-1")
    for text in ("task agent attempt 1 failed: exit status 1", "Could not build: the header is missing",
                 "error: boom at line 7", "compiling..."):
        assert text in entry, text
    prompt = p.prompt("TASK-1", "task", 2)
    for text in ("task agent attempt 1 failed: exit status 1", "Could not build: the header is missing",
                 "error: boom at line 7"):
        assert text in prompt, text
    assert "This is attempt 2" in prompt

    go.touch()
    p.drive(lambda: p.column("TASK-1") == "REVIEW", what="TASK-1 in REVIEW")
    assert p.where("TASK-1")[1] == frozenset()  # [RETRY] cleared
    runs = p.runs("TASK-1")
    assert [(r.role, r.attempt, r.exit_code) for r in runs[:2]] == [("task", 1, 1), ("task", 2, 0)]


def test_failing_twice_escalates_and_later_ticks_leave_it_alone(kit):
    p = kit(task_md("TASK-1"), rules=[{"role": "task", "steps": [["print", "no luck"], ["exit", 2]]}])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None), what="TASK-1 escalated")
    assert "## [ESCALATED] TASK-1:" in (p.root / "IN_PROGRESS.md").read_text()
    entry = p.entry_text("TASK-1")
    assert "task agent attempt 1 failed: exit status 2" in entry
    assert "task agent attempt 2 failed: exit status 2" in entry
    assert [(r.attempt, r.exit_code) for r in p.runs("TASK-1")] == [(1, 2), (2, 2)]

    board = p.board_bytes()
    for _ in range(3):
        report = p.tick()
        assert report.started == [] and report.reaped == []
        time.sleep(0.1)
    run_cli(p.root, "tick", check_code=0)
    assert len(p.runs("TASK-1")) == 2
    assert p.board_bytes() == board


def test_exit_zero_without_a_commit_is_a_failure(kit, tmp_path):
    go = tmp_path / "go"
    p = kit(task_md("TASK-1"), rules=[
        {"role": "task", "attempt": 1, "steps": [["write", "scratch.txt", "not committed"], ["print", "done!"]]},
        {"role": "task", "attempt": 2, "steps": [["wait_for", str(go)]]},
    ])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="a [RETRY]")
    first = p.runs("TASK-1")[0]
    assert (first.exit_code, first.outcome) == (0, "failed")
    assert "task agent attempt 1 failed: exited 0 without a commit" in p.entry_text("TASK-1")
    assert git(p.root, "rev-list", "--count", "main..kanban/TASK-1").strip() == "0"
    go.touch()
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None), what="escalation")
    assert "task agent attempt 2 failed: exited 0 without a commit" in p.entry_text("TASK-1")


# --- 4, 5, 9. timeouts, the detached supervisor, the stall watchdog -------------------------


def test_hanging_agent_and_its_grandchildren_are_killed_at_the_timeout(kit, tmp_path):
    go = tmp_path / "go"
    grandchildren = f"grandchild-{uuid.uuid4().hex}"
    p = kit(task_md("TASK-1"), timeout="1.5s", kill_grace="0.3s", rules=[
        {"role": "task", "attempt": 1, "steps": [["spawn", grandchildren], ["print", "working..."], ["hang"]]},
        {"role": "task", "attempt": 2, "steps": [["wait_for", str(go)]]},
    ])
    p.tick()
    wait_for(lambda: len(live_pids(grandchildren)) == 2, what="two grandchildren running")
    pgid = started(p, "TASK-1", "task", 1)["pgid"]
    assert procs.group_members(pgid)

    p.drive(lambda: p.runs("TASK-1")[0].ended is not None, what="the hung run reaped")
    assert live_pids(grandchildren) == []  # none survived, the SIGTERM-deaf one included
    assert procs.group_members(pgid) == []
    first = p.runs("TASK-1")[0]
    assert (first.timed_out, first.outcome, first.exit_code) == (1, "failed", None)
    assert p.where("TASK-1") == ("IN_PROGRESS", RETRY, None)
    entry = p.entry_text("TASK-1")
    assert "task agent attempt 1 failed: timed out after" in entry
    assert "working..." in entry  # the log tail


def test_supervisor_outlives_the_tick_and_kills_at_the_timeout(kit, tmp_path):
    go = tmp_path / "go"
    p = kit(task_md("TASK-1"), timeout="1.5s", rules=[
        {"role": "task", "attempt": 1, "steps": [["print", "sleeping"], ["sleep", 30]]},
        {"role": "task", "attempt": 2, "steps": [["wait_for", str(go)]]},
    ])
    tick = run_cli(p.root, "tick", check_code=0)  # a separate process, finished when this returns
    assert "TASK-1 started: task agent, attempt 1" in tick.stdout
    (run,) = p.runs("TASK-1")
    run_dir = run.run_path(LocalRunner(p.root))
    info = json.loads((run_dir / "agent.json").read_text())
    assert procs.alive(info["pid"], info["start_time"]), "the agent died with the tick"
    assert procs.alive(info["supervisor_pid"], info["supervisor_start_time"])

    # no tick from here on: the supervisor alone enforces the timeout
    wait_for(lambda: not procs.alive(info["pid"], info["start_time"]), timeout=15, what="the agent killed")
    wait_for(lambda: (run_dir / "result.json").exists(), timeout=5, what="result.json")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["timed_out"] is True and result["exit_code"] is None
    assert 1.5 <= result["duration"] < 25  # at its timeout, long before its 30 s sleep would end
    assert p.runs("TASK-1")[0].ended is None  # nothing recorded yet: no tick ran
    wait_for(lambda: not procs.alive(info["supervisor_pid"], info["supervisor_start_time"]), timeout=5,
             what="the supervisor exited")

    run_cli(p.root, "tick", check_code=0)
    first = p.runs("TASK-1")[0]
    assert (first.timed_out, first.outcome) == (1, "failed")
    assert p.where("TASK-1") == ("IN_PROGRESS", RETRY, None)
    assert "task agent attempt 1 failed: timed out after" in p.entry_text("TASK-1")


def test_stalled_agent_is_killed_by_the_watchdog(kit, tmp_path):
    go = tmp_path / "go"
    p = kit(task_md("TASK-1"), timeout="30s", stall="0.8s", rules=[
        {"role": "task", "attempt": 1, "steps": [["print", "thinking..."], ["sleep", 60]]},
        {"role": "task", "attempt": 2, "steps": [["wait_for", str(go)]]},
    ])
    p.drive(lambda: p.runs("TASK-1")[0].ended is not None, timeout=20, what="the stalled run reaped")
    first = p.runs("TASK-1")[0]
    assert (first.stalled, first.timed_out, first.outcome) == (1, 0, "failed")
    assert p.where("TASK-1") == ("IN_PROGRESS", RETRY, None)
    entry = p.entry_text("TASK-1")
    assert "task agent attempt 1 failed: stalled" in entry and "thinking..." in entry


# --- 7, 8. reviewers and testers say no ---------------------------------------------------------


def test_reviewer_rejection_returns_the_task_with_the_review_and_a_second_escalates(kit):
    p = kit(task_md("TASK-1"), rules=[
        {"role": "reviewer", "attempt": 1, "steps": [["report", "Please add a test for the empty case"], ["exit", 1]]},
        {"role": "reviewer", "attempt": 2, "steps": [["report", "Still no test for the empty case"], ["exit", 1]]},
    ])
    seen: list = []
    p.drive(recorder(p, "TASK-1", seen, lambda s: s is not None and "ESCALATED" in s[1]), what="escalation")

    assert ("IN_PROGRESS", RETRY, None) in seen
    assert seen[-1] == ("REVIEW", ESCALATED, None)
    assert transitions(p, "TASK-1") == [
        ("picked", "TODO", "IN_PROGRESS"), ("task_ok", "IN_PROGRESS", "REVIEW"),
        ("review_rejected", "REVIEW", "IN_PROGRESS"), ("task_ok", "IN_PROGRESS", "REVIEW"),
        ("review_rejected", "REVIEW", "REVIEW")]
    prompt = p.prompt("TASK-1", "task", 2)
    assert "reviewer attempt 1 failed: exit status 1" in prompt
    assert "Please add a test for the empty case" in prompt
    entry = p.entry_text("TASK-1")
    assert "Please add a test for the empty case" in entry and "Still no test for the empty case" in entry
    assert [(r.role, r.attempt) for r in p.runs("TASK-1")] == [
        ("task", 1), ("reviewer", 1), ("task", 2), ("reviewer", 2)]
    p.tick()
    assert len(p.runs("TASK-1")) == 4


def test_tester_failing_twice_goes_back_to_review_with_the_failure_notes(kit, tmp_path):
    go = tmp_path / "go"
    failing = [["print", "FAILED tests/test_x.py::test_sum"], ["report", "test_sum: expected 2, got 3"], ["exit", 1]]
    p = kit(task_md("TASK-1"), rules=[
        {"role": "tester", "attempt": 1, "steps": failing},
        {"role": "tester", "attempt": 2, "steps": failing},
        {"role": "reviewer", "attempt": 2, "steps": [["wait_for", str(go)]]},
    ])
    seen: list = []
    p.drive(recorder(p, "TASK-1", seen, lambda s: s == ("REVIEW", RETRY, None)), what="back in REVIEW [RETRY]")
    assert ("TESTING", RETRY, None) in seen
    assert "## [RETRY] TASK-1:" in (p.root / "REVIEW.md").read_text()
    entry = p.entry_text("TASK-1")
    for text in ("tester attempt 1 failed: exit status 1", "tester attempt 2 failed: exit status 1",
                 "test_sum: expected 2, got 3", "FAILED tests/test_x.py::test_sum"):
        assert text in entry, text
    assert "tester attempt 2 failed" in p.prompt("TASK-1", "reviewer", 2)
    assert transitions(p, "TASK-1")[-2:] == [("test_failed", "TESTING", "TESTING"),
                                            ("test_failed", "TESTING", "REVIEW")]

    go.touch()  # the second review passes, the third test run too
    p.drive(lambda: p.where("TASK-1") == READY, what="ready to merge")
    assert [(r.role, r.attempt) for r in p.runs("TASK-1")][-2:] == [("reviewer", 2), ("tester", 3)]


# --- 10, 11. file leases, the pool, finishing first --------------------------------------------


@pytest.mark.heavy
def test_tasks_sharing_files_never_overlap_and_disjoint_ones_run_together(kit):
    tasks = (task_md("TASK-1", files="src/shared.py") + task_md("TASK-2", files="src/shared.py")
             + task_md("TASK-3", files="src/*.py") + task_md("TASK-4", files="docs/guide.md")
             + task_md("TASK-5", files="lib/util.py"))
    quick = [["sleep", 0.05]]
    p = kit(tasks, pool_size=6)
    together = str(p.kit / "barrier")  # TASK-1, 4 and 5 wait for each other: alive at once if started together
    p.set_rules([
        {"task": "TASK-1", "role": "task", "steps": [["barrier", together, 3], ["commit", "src/shared.py"]]},
        {"task": "TASK-2", "role": "task", "steps": [["sleep", 0.2], ["commit", "src/shared.py"]]},
        {"task": "TASK-3", "role": "task", "steps": [["sleep", 0.2], ["commit", "src/three.py"]]},
        {"task": "TASK-4", "role": "task", "steps": [["barrier", together, 3], ["commit", "docs/guide.md"]]},
        {"task": "TASK-5", "role": "task", "steps": [["barrier", together, 3], ["commit", "lib/util.py"]]},
        {"role": "reviewer", "steps": quick}, {"role": "tester", "steps": quick},
    ])
    assert run_loop(p.root, no_merge=False, live=False) == 0

    changelog = (p.root / "CHANGELOG.md").read_text()
    for n in range(1, 6):
        assert f"TASK-{n}:" in changelog
        assert p.where(f"TASK-{n}") is None
    assert git(p.root, "show", "main:src/shared.py") == "TASK-1 task attempt 1\nTASK-2 task attempt 1\n"

    runs = p.runs()
    span = {t: (min(r.started for r in runs if r.task == t), max(r.ended for r in runs if r.task == t))
            for t in {r.task for r in runs}}
    times: dict = {}
    for e in p.history_events():
        times.setdefault((e[1], e[2]), e[0])
    for first, second in (("TASK-1", "TASK-2"), ("TASK-1", "TASK-3"), ("TASK-2", "TASK-3")):
        a, b = sorted((first, second), key=lambda t: span[t][0])
        assert span[a][1] < span[b][0], f"{a} and {b} share files but their runs overlap"
        assert times[(b, "picked")] > times[(a, "merged")], f"{b} was picked before {a} was merged"

    # TASK-1, TASK-4 and TASK-5 touch disjoint files: their task agents ran at the same time
    agent = {(e["task"], e["role"], e["attempt"]): e["t"] for e in p.events("start")}
    ends = {(e["task"], e["role"], e["attempt"]): e["t"] for e in p.events("end")}
    spans = [(agent[(t, "task", 1)], ends[(t, "task", 1)]) for t in ("TASK-1", "TASK-4", "TASK-5")]
    assert max_overlap(spans) == 3


@pytest.mark.heavy
def test_pool_is_never_exceeded_and_finishing_beats_starting(kit):
    tasks = "".join(task_md(f"TASK-{n}") for n in range(1, 7))
    p = kit(tasks, pool_size=2)
    pair = str(p.kit / "barrier")  # the first two picks wait for each other: the pool is used
    p.set_rules([
        {"task": "TASK-1", "role": "task", "steps": [["barrier", pair, 2], ["commit"]]},
        {"task": "TASK-2", "role": "task", "steps": [["barrier", pair, 2], ["commit"]]},
        {"role": "task", "steps": [["sleep", 0.3], ["commit"]]},
        {"role": "reviewer", "steps": [["sleep", 0.1]]},
        {"role": "tester", "steps": [["sleep", 0.1]]},
    ])
    assert run_loop(p.root, no_merge=True, live=False) == 0
    for n in range(1, 7):
        assert p.where(f"TASK-{n}") == READY
    runs = p.runs()
    assert len(runs) == 18 and all(r.outcome == "ok" for r in runs)

    # at no instant more than two agents: by the agents' own clocks and by the history
    starts = {(e["task"], e["role"], e["attempt"]): e["t"] for e in p.events("start")}
    ends = {(e["task"], e["role"], e["attempt"]): e["t"] for e in p.events("end")}
    assert len(starts) == len(ends) == 18
    assert max_overlap([(starts[k], ends[k]) for k in starts]) == 2
    assert max_overlap([(r.started, r.ended) for r in runs]) <= 2

    # finishing first: no task was picked while another waited for its reviewer or tester
    picks = [r for r in runs if r.role == "task"]
    for task in {r.task for r in runs}:
        mine = [r for r in runs if r.task == task]
        for before, after in zip(mine, mine[1:]):
            for pick in picks:
                assert not before.ended <= pick.started < after.started, (
                    f"{pick.task} was picked while {task} waited for its {after.role}")
    first_picks = sorted(picks, key=lambda r: r.started)
    third = first_picks[2]
    early = [r for r in runs if r.task in (first_picks[0].task, first_picks[1].task) and r.role == "reviewer"]
    assert all(r.started < third.started for r in early)


def test_a_pass_stops_between_handovers_when_the_caller_has_more_urgent_work(kit):
    """kanban run asks between handovers whether a verification ended (Engine.yield_to): the pass
    stops after the handover in hand, and the next pass does the rest."""
    from kanban.commands.tick import open_engine

    p = kit(task_md("TASK-1") + task_md("TASK-2") + task_md("TASK-3"), pool_size=3)
    p.set_rules([{"role": "task", "steps": [["commit"]]}])
    engine = open_engine(p.root)
    try:
        asked = []
        engine.yield_to = lambda: asked.append(1) or True
        first = engine.tick()
        assert len(first.started) == 1 and first.cut_short and asked == [1], first
        wait_for(lambda: not any(engine.runner.poll(r.run_path(engine.runner)).running for r in p.runs()),
                 what="TASK-1's agent to end")
        engine.yield_to = None
        rest = engine.tick()
        assert len(rest.reaped) == 1 and len(rest.started) >= 2 and not rest.cut_short, rest
    finally:
        engine.history.close()


# --- 12. idempotence --------------------------------------------------------------------------


def test_ticks_without_agent_events_change_nothing(kit, tmp_path):
    go = tmp_path / "go"
    tasks = (task_md("TASK-1") + task_md("TASK-2") + task_md("TASK-3", depends="TASK-1")
             + task_md("TASK-4", files="app.py") + task_md("TASK-5", files="app.py"))
    p = kit(tasks, rules=[
        {"task": "TASK-2", "role": "task", "steps": [["exit", 1]]},
        {"task": "TASK-4", "role": "task", "steps": [["print", "busy"], ["wait_for", str(go)], ["commit"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == READY and p.where("TASK-2") == ("IN_PROGRESS", ESCALATED, None),
            what="a quiet board")
    assert p.column("TASK-3") == "TODO" and p.column("TASK-5") == "TODO" and p.column("TASK-4") == "IN_PROGRESS"

    def state():
        return (p.board_bytes(), [tuple(r) for r in p.runs()], sorted(os.listdir(p.root / ".kanban" / "runs")),
                git(p.root, "for-each-ref"), git(p.root, "worktree", "list", "--porcelain"))

    p.tick()
    before = state()
    for _ in range(2):
        report = p.tick()
        assert (report.started, report.reaped, report.problems) == ([], [], [])
        assert state() == before
    out = run_cli(p.root, "tick", check_code=0)
    assert "nothing to do" in out.stdout
    assert state() == before
    assert len(p.runs("TASK-4")) == 1 and p.runs("TASK-4")[0].ended is None


# --- 13. stop and retry ------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True], ids=["term", "force"])
def test_stop_kills_the_group_escalates_and_retry_resumes(kit, tmp_path, force):
    grandchildren = f"grandchild-{uuid.uuid4().hex}"
    p = kit(task_md("TASK-1"), timeout="30s", kill_grace="0.3s", rules=[
        {"role": "task", "attempt": 1, "steps": [["spawn", grandchildren], ["print", "working"], ["hang"]]},
        {"role": "task", "attempt": 2, "steps": [["print", "resumed"], ["commit"]]},
    ])
    run_cli(p.root, "tick", check_code=0)
    wait_for(lambda: len(live_pids(grandchildren)) == 2, what="grandchildren running")
    (run,) = p.runs("TASK-1")
    info = json.loads((run.run_path(LocalRunner(p.root)) / "agent.json").read_text())
    stop = run_cli(p.root, "stop", "TASK-1", *(["--force"] if force else []), check_code=0)
    assert f"stopping TASK-1 task attempt 1 (pid {info['pid']})" in stop.stdout
    assert live_pids(grandchildren) == []
    assert not procs.alive(info["pid"], info["start_time"])
    assert procs.group_members(info["pid"]) == []

    run_cli(p.root, "tick", check_code=0)
    first = p.runs("TASK-1")[0]
    assert (first.cancelled, first.outcome) == (1, "cancelled")
    assert p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None)
    assert "Stopped with 'kanban stop'" in p.entry_text("TASK-1")
    run_cli(p.root, "tick", check_code=0)
    assert len(p.runs("TASK-1")) == 1  # escalated: left alone

    run_cli(p.root, "retry", "TASK-1", check_code=0)
    assert p.where("TASK-1") == ("IN_PROGRESS", frozenset(), None)
    p.drive(lambda: p.column("TASK-1") == "REVIEW", what="the resumed task in REVIEW")
    assert [(r.attempt, r.outcome) for r in p.runs("TASK-1") if r.role == "task"] == [(1, "cancelled"), (2, "ok")]


def table_spy(monkeypatch) -> list[tuple[str, str, str, str]]:
    """Every call of the machine's `transition` (the engine's and the commands'), as
    (event, state before, state after, action), or (event, state, "invalid", "-") when no
    row applied: proof a change went through the table."""
    from kanban import engine, machine

    calls: list[tuple[str, str, str, str]] = []
    real = machine.transition

    def spy(state, event):
        try:
            tr = real(state, event)
        except machine.InvalidTransition:
            calls.append((event.value, machine.describe_state(state), "invalid", "-"))
            raise  # as it would
        after = machine.TaskState(tr.column, tr.retry, tr.escalated, tr.ready)
        calls.append((event.value, machine.describe_state(state), machine.describe_state(after), tr.action.value))
        return tr

    monkeypatch.setattr(machine, "transition", spy)
    monkeypatch.setattr(engine, "transition", spy)
    return calls


def test_stop_retry_and_merge_go_through_the_state_machine(kit, monkeypatch):
    from kanban.commands.control import retry, stop
    from kanban.commands.merge_queue import merge_queue

    p = kit(task_md("TASK-1"), timeout="30s", kill_grace="0.3s", rules=[
        {"role": "task", "attempt": 1, "steps": [["print", "working"], ["hang"]]},
        {"role": "task", "attempt": 2, "steps": [["commit"]]},
    ])
    calls = table_spy(monkeypatch)
    p.tick()
    wait_for(lambda: p.agent_pid(p.runs("TASK-1")[0]) is not None, what="the task agent's pid")
    assert stop(p.root, "TASK-1", force=False) == 0
    p.tick()  # reaps the stopped run: HELD, in place
    assert p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None)
    assert calls == [("picked", "TODO", "IN_PROGRESS", "spawn_task"),
                     ("held", "IN_PROGRESS", "IN_PROGRESS [ESCALATED]", "escalate")]
    moves = [e[2:5] for e in p.history_events("TASK-1")]
    assert moves[-2:] == [("held", "IN_PROGRESS", "IN_PROGRESS"), ("escalated", None, None)]
    assert "Stopped with 'kanban stop'" in p.entry_text("TASK-1")

    assert retry(p.root, "TASK-1") == 0
    assert calls[-1] == ("retry_requested", "IN_PROGRESS [ESCALATED]", "IN_PROGRESS", "resume")
    assert p.where("TASK-1") == ("IN_PROGRESS", frozenset(), None)
    assert [e[2:5] for e in p.history_events("TASK-1")][-2:] == [
        ("retry_requested", "IN_PROGRESS", "IN_PROGRESS"), ("reset", None, None)]

    p.drive(lambda: p.where("TASK-1") == READY, what="the resumed task ready to merge")
    assert merge_queue(p.root, batch=False, dry_run=False, as_json=False) == 0
    assert p.where("TASK-1") is None and "TASK-1:" in (p.root / "CHANGELOG.md").read_text()
    assert calls[-1] == ("merged", "TESTING ready", "DONE", "finish")
    assert [c[0] for c in calls] == ["picked", "held", "retry_requested", "task_ok", "review_ok", "test_ok", "merged"]
    merged = [e for e in p.history_events("TASK-1") if e[2] == "merged"]
    assert [e[3:5] for e in merged] == [("TESTING", "DONE")]
    assert not [e for e in p.history_events("TASK-1") if e[2] in ("ignored", "overruled")]


def test_retry_of_a_retry_only_task_or_one_moved_back_to_todo_goes_through_the_table(tmp_path, monkeypatch):
    from kanban.commands.control import retry
    from kanban.errors import KanbanError
    from kanban.history import History
    from kanban.store import load_board

    (tmp_path / "TODO.md").write_text("## [ESCALATED] TASK-1: moved back by hand\n\n## TASK-3: fresh\n")
    (tmp_path / "REVIEW.md").write_text("## [RETRY] TASK-2: second\n")
    with History(tmp_path) as history:
        history.event("TASK-2", "strike:review")
    calls = table_spy(monkeypatch)
    assert retry(tmp_path, "TASK-2") == 0 and retry(tmp_path, "TASK-1") == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("TODO.md", "REVIEW.md")}
    with pytest.raises(KanbanError, match="TASK-3 is not escalated") as refused:
        retry(tmp_path, "TASK-3")
    assert refused.value.code == 1
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert calls == [("retry_requested", "REVIEW [RETRY]", "REVIEW", "resume"),
                     ("retry_requested", "TODO [ESCALATED]", "TODO", "resume"),
                     ("retry_requested", "TODO", "invalid", "-")]
    tasks = {t.id: (t.column.value, t.markers) for t in load_board(tmp_path).tasks()}
    assert tasks == {"TASK-1": ("TODO", frozenset()), "TASK-2": ("REVIEW", frozenset()),
                     "TASK-3": ("TODO", frozenset())}
    assert "resumed with 'kanban retry'" in (tmp_path / "REVIEW.md").read_text()
    with History(tmp_path) as history:
        assert history.strikes("TASK-2") == {}  # RESUME: fresh strikes
        assert [e[2:5] for e in history.events("TASK-2")][-2:] == [
            ("retry_requested", "REVIEW", "REVIEW"), ("reset", None, None)]
        assert not history.events("TASK-3")


def test_an_entry_changed_by_hand_while_it_merged_still_leaves_the_board(kit, monkeypatch):
    """Main holds the commit, so the entry goes although the table has no row for it; the history says so."""
    from kanban.commands.tick import open_engine

    p = kit(task_md("TASK-1") + task_md("TASK-2"))
    p.drive(lambda: p.where("TASK-1") == READY and p.where("TASK-2") == READY, what="two tasks ready")
    testing = p.root / "TESTING.md"
    testing.write_text(testing.read_text().replace("## TASK-2:", "## [ESCALATED] TASK-2:"))
    calls = table_spy(monkeypatch)
    shas = {t: git(p.root, "rev-parse", f"kanban/{t}").strip() for t in ("TASK-1", "TASK-2")}
    engine = open_engine(p.root)
    try:
        told = engine.remove_merged(shas)
    finally:
        engine.history.close()
    assert p.where("TASK-1") is None and p.where("TASK-2") is None
    assert calls == [("merged", "TESTING ready", "DONE", "finish"),
                     ("merged", "TESTING [ESCALATED] ready", "invalid", "-")]
    (line,) = told
    assert (line.kind, line.task) == ("problem", "TASK-2")
    assert "TASK-2 was changed by hand while it merged (TESTING [ESCALATED] ready)" in line.text
    assert "so it left TESTING.md all the same" in line.text
    kinds = [e[2:5] for e in p.history_events("TASK-2")][-2:]
    assert kinds == [("overruled", "TESTING", "DONE"), ("merged", "TESTING", "DONE")]
    assert "MERGED does not apply" in p.history_events("TASK-2")[-2][5]
    assert [e[2:5] for e in p.history_events("TASK-1")][-1] == ("merged", "TESTING", "DONE")
    assert not [e for e in p.history_events("TASK-1") if e[2] == "overruled"]


# --- 14. dependencies --------------------------------------------------------------------------


def test_a_task_whose_dependency_is_not_merged_stays_in_todo(kit):
    p = kit(task_md("TASK-1", "Base") + task_md("TASK-2", "On top", depends="TASK-1"),
            read_files=("work/TASK-1-task-1.txt",))
    assert run_loop(p.root, no_merge=True, live=False) == 0
    assert p.where("TASK-1") == READY  # tested, but not merged
    assert p.column("TASK-2") == "TODO"
    for _ in range(3):
        p.tick()
    assert p.column("TASK-2") == "TODO" and p.runs("TASK-2") == []
    status = json.loads(run_cli(p.root, "status", "--json", check_code=0).stdout)
    (row,) = status["columns"]["TODO"]["tasks"]
    assert row["id"] == "TASK-2" and "waiting on TASK-1" in row["blocked_by"]

    run_cli(p.root, "merge-queue", check_code=0)
    assert "TASK-1:" in (p.root / "CHANGELOG.md").read_text()
    p.drive(lambda: p.column("TASK-2") not in (None, "TODO"), what="TASK-2 picked once TASK-1 is merged")
    wait_for(lambda: any(e["task"] == "TASK-2" for e in p.events("start")), what="TASK-2's agent")
    start = started(p, "TASK-2", "task", 1)
    assert start["files"]["work/TASK-1-task-1.txt"] == "TASK-1 task attempt 1\n"  # branched from the new main


# --- 15. logs and status ---------------------------------------------------------------------


def test_logs_prints_the_run_log_and_status_shows_the_running_agent(kit, tmp_path):
    go = tmp_path / "go"
    line = f"hello from the fake agent {uuid.uuid4().hex}"
    p = kit(task_md("TASK-1"), timeout="20s", rules=[
        {"role": "task", "steps": [["print", line], ["wait_for", str(go)], ["print", "bye"], ["commit"]]},
    ])
    run_cli(p.root, "tick", check_code=0)
    (run,) = p.runs("TASK-1")
    wait_for(lambda: line in Path(run.log).read_text(), what="the agent's first line")
    logs = run_cli(p.root, "logs", "TASK-1", check_code=0)
    assert line in logs.stdout and "TASK-1 task attempt 1" in logs.stdout

    status = json.loads(run_cli(p.root, "status", "--json", check_code=0).stdout)
    (agent,) = status["agents"]
    assert (agent["task"], agent["role"], agent["attempt"], agent["pid"]) == ("TASK-1", "task", 1, p.agent_pid(run))
    assert agent["timeout"] == 20
    assert 0 <= agent["elapsed"] < agent["timeout"]
    assert agent["pid"] and procs.process_start_time(agent["pid"]) is not None  # a live process

    go.touch()
    p.drive(lambda: p.column("TASK-1") == "REVIEW", what="TASK-1 in REVIEW")
    logs = run_cli(p.root, "logs", "TASK-1", "--role", "task", check_code=0)
    assert line in logs.stdout and "bye" in logs.stdout
    missing = run_cli(p.root, "logs", "TASK-9")
    assert missing.returncode == 2 and "no task TASK-9 on the board or in its history" in missing.stderr


# --- 16. a broken command template -------------------------------------------------------------


def test_unknown_placeholder_fails_the_task_with_a_note_and_others_proceed(kit):
    p = kit(task_md("TASK-2", "Another task"), other_files={"REVIEW.md": "# Review\n\n" + task_md("TASK-1")})
    with (p.root / "kanban.toml").open("a") as f:
        f.write(f"\n[agent.reviewer]\ncommand = {json.dumps(p.command + ['{nope}'])}\n")

    tick = run_cli(p.root, "tick", check_code=0)  # no crash
    assert "nope" in tick.stderr and "could not start" in tick.stderr
    assert p.where("TASK-1") == ("IN_PROGRESS", RETRY, None)
    entry = p.entry_text("TASK-1")
    assert "reviewer could not start" in entry and "{nope}" in entry
    assert "TASK-2 started: task agent, attempt 1" in tick.stdout  # the next start still happened

    lines = p.drive(lambda: all(p.where(t) and "ESCALATED" in p.where(t)[1] for t in ("TASK-1", "TASK-2")),
                    what="both tasks escalated")
    assert not [line for line in lines if line.startswith("problem:") and "could not start" not in line]
    assert all(r.role == "task" and r.outcome == "ok" for r in p.runs())  # no reviewer ever ran
    assert {r.task for r in p.runs()} == {"TASK-1", "TASK-2"}


# --- 17. the demo ------------------------------------------------------------------------------


@pytest.mark.heavy
def test_demo_runs_to_its_end(tmp_path):
    where = tmp_path / "demo"
    try:
        proc = subprocess.run([sys.executable, "-m", "kanban", "demo", "--dir", str(where)],
                              capture_output=True, text=True, timeout=80, env=os.environ.copy())
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert "nothing left to do" in proc.stdout
        changelog = (where / "CHANGELOG.md").read_text()
        for n in range(1, 9):
            assert f"TASK-{n}:" in changelog
        # the closing report, rendered for a terminal (list items as bullets, no raw markdown):
        # every task merged once, the planned hang timed out
        assert "• tasks: 8 worked on, 8 merged, 0 escalated" in proc.stdout
        assert "• merged: 8 (" in proc.stdout
        assert "• timeouts: 1," in proc.stdout
        assert "\n## " not in proc.stdout and "- tasks:" not in proc.stdout
        assert live_pids(str(where)) == []
    finally:
        for pid in live_pids(str(where)):
            os.kill(pid, 9)


# --- 18. worktree set-up, copied files, ports --------------------------------------------------


def test_failed_worktree_setup_fails_the_task_with_its_output(kit, tmp_path):
    calls = tmp_path / "setup-calls"
    script = f"import sys; open({str(calls)!r}, 'a').write('x'); print('setup says no'); sys.exit(3)"
    p = kit(task_md("TASK-1"), extra_toml=f"""
            [worktree]
            setup = [["python3", "-c", {json.dumps(script)}]]
            """)
    tick = run_cli(p.root, "tick", check_code=0)
    assert "could not start" in tick.stderr
    assert p.where("TASK-1") == ("IN_PROGRESS", RETRY, None)
    entry = p.entry_text("TASK-1")
    assert "task agent could not start" in entry and "exited 3" in entry and "setup says no" in entry

    run_cli(p.root, "tick", check_code=0)  # set-up is run again, fails again: no agent in a broken worktree
    assert p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None)
    assert calls.read_text() == "xx"
    assert p.events() == [] and p.runs() == []


def test_worktree_copy_and_distinct_ports(kit, tmp_path):
    go = tmp_path / "go"
    p = kit(task_md("TASK-1") + task_md("TASK-2") + task_md("TASK-3"), read_files=(".env",),
            other_files={".gitignore": ".env\n"}, extra_toml="""
            [worktree]
            copy = [".env"]
            """, rules=[{"role": "task", "steps": [["wait_for", str(go)], ["commit"]]}])
    (p.root / ".env").write_text("API_URL=http://localhost:1234\n")
    assert git(p.root, "check-ignore", ".env").strip() == ".env"
    p.tick()
    wait_for(lambda: len(p.events("start")) == 3, what="three agents")
    starts = {e["task"]: e for e in p.events("start")}
    for e in starts.values():
        assert e["files"][".env"] == "API_URL=http://localhost:1234\n"
        assert Path(e["cwd"], ".env").is_file()
    ports = [int(starts[t]["env"]["KANBAN_PORT"]) for t in ("TASK-1", "TASK-2", "TASK-3")]
    assert len(set(ports)) == 3 and all(port >= 20000 for port in ports)

    go.touch()
    p.drive(lambda: all(p.column(t) == "TESTING" for t in ("TASK-1", "TASK-2", "TASK-3")), what="testing")
    reviewers = {e["task"]: int(e["port"]) for e in p.events("start") if e["role"] == "reviewer"}
    assert reviewers == dict(zip(("TASK-1", "TASK-2", "TASK-3"), ports))  # a task keeps its port
