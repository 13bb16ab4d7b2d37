"""The live view of `kanban run`, and the words of the engine's lines.

Real repositories, real supervised scripted agents (agents_kit.py), a real engine; the
frame is rendered to fixed-width rich consoles and read back as text.
"""

from __future__ import annotations

import io
import re
import sys
import time

import pytest
from agents_kit import task_md
from rich.console import Console

from kanban.commands.run import run as run_loop
from kanban.commands.tick import open_engine
from kanban.events import BUDGET_REACHED, ESCALATED, QueueState
from kanban.liveview import LiveView, PlainView

pytestmark = pytest.mark.timeout(90)

CLOCK = r"\d\d:\d\d:\d\d"
ESCALATED_ENTRY = "# In progress\n\n## [ESCALATED] TASK-7: Stuck on a person\n\nWaits for a person.\n"
CHANGELOG = "# Changelog\n\n## [Unreleased]\n\n- TASK-8: Old work\n- TASK-9: Older work\n"


def render(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text()


def wait_for(condition, timeout: float = 20.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def verifying(seconds: float, now: float | None = None) -> QueueState:
    return QueueState("verifying", ("TASK-4",), (now or time.time()) - seconds)


@pytest.fixture
def busy(kit):
    """A board mid-run: TASK-1's task agent and TASK-2's reviewer running (15m timeouts, pids known),
    TASK-3 waiting in TODO for TASK-1, TASK-7 escalated, TASK-8 and TASK-9 merged."""
    release = None

    def make():
        nonlocal release
        tasks = task_md("TASK-1", "Hang around") + task_md("TASK-2", "Quick one") + \
            task_md("TASK-3", "After the first", depends="TASK-1")
        p = kit(tasks, timeout="15m", other_files={"IN_PROGRESS.md": ESCALATED_ENTRY, "CHANGELOG.md": CHANGELOG})
        release = p.flag("release")
        p.set_rules([
            {"task": "TASK-1", "role": "task", "steps": [["wait_for", str(release)]]},
            {"task": "TASK-2", "role": "task", "steps": [["commit"]]},
            {"role": "reviewer", "steps": [["wait_for", str(release)]]},
        ])
        lines = p.drive(lambda: {(r.task, r.role) for r in p.runs() if r.ended is None and p.agent_pid(r)}
                        == {("TASK-1", "task"), ("TASK-2", "reviewer")}, what="both agents running")
        return p, lines

    yield make
    if release is not None:
        release.touch()


def test_the_frame_fits_120_80_and_50_columns_and_tells_the_whole_state(busy):
    p, lines = busy()
    engine = open_engine(p.root)
    try:
        pids = {r.task: p.agent_pid(r) for r in engine.history.live_runs()}
        view = LiveView(engine)
        view.refresh()
        now = time.time()
        engine.queue_state = verifying(42, now)  # the merge queue sets it on the engine
        for line in lines:
            view.log(line)
        for width in (120, 80, 50):
            text = render(view.renderable(now), width)
            for line in text.splitlines():
                assert len(line) <= width, (width, line)
            for count in ("TODO 1", "IN_PROGRESS 2", "REVIEW 1", "TESTING 0", "done 2", "escalated 1"):
                assert count in text, (width, count, text)
            assert "merge queue: verifying TASK-4 for 42s" in text, text
            assert "TASK-1" in text and "TASK-2" in text
            # the timeout in a person's units (pids, the rows' last column, may hold "900")
            rows = [line.rsplit(None, 1)[0] if line.split() and line.split()[-1].isdigit() else line
                    for line in text.splitlines()]
            assert "15m" in text and "900" not in "\n".join(rows), text
            assert "None" not in text and "->" not in text, text
            assert re.search(rf"{CLOCK} TASK-2 started: reviewer, attempt 1", text), text
            if width >= 80:
                assert re.search(r"TASK-1\s+task agent\s+1\s+\S+\s+15m\s+" + str(pids["TASK-1"]), text), text
                assert re.search(r"TASK-2\s+reviewer\s+1\s+\S+\s+15m\s+" + str(pids["TASK-2"]), text), text
            else:  # narrow: shorter labels, the timeout beside the elapsed time, no pid
                assert re.search(r"TASK-2\s+review\s+1\s+\d+(m|s)\S*/15m", text), text
    finally:
        engine.history.close()


def test_a_set_queue_state_and_a_pid_not_known_yet(kit):
    """set_queue_state() is the other way in; a run whose agent is not up yet shows 'starting'."""
    p = kit(task_md("TASK-1", "Hang around"), timeout="15m")
    release = p.flag("release")
    p.set_rules([{"role": "task", "steps": [["wait_for", str(release)]]}])
    engine = open_engine(p.root)
    try:
        report = engine.tick()  # the tick does not wait for the agent: its supervisor starts it
        assert report.started == ["TASK-1 started: task agent, attempt 1"]
        view = LiveView(engine)
        view.refresh()
        now = time.time()
        view.set_queue_state(QueueState("blocked", (), now, "main has uncommitted changes in src/app.py"))
        text = render(view.renderable(now), 80)
        assert p.agent_pid(engine.history.live_runs()[0]) or "starting" in text, text
        assert "None" not in text, text
        assert "merge queue: blocked: main has uncommitted changes in src/app.py" in text, text
        wait_for(lambda: p.agent_pid(engine.history.live_runs()[0]), what="the agent started")
        pid = p.agent_pid(engine.history.live_runs()[0])
        view.refresh()
        text = render(view.renderable(now), 80)
        assert str(pid) in text and "starting" not in text, text
    finally:
        release.touch()
        engine.history.close()


def test_the_live_view_redraws_on_its_own_and_ends_on_the_summary(busy):
    p, _ = busy()
    engine = open_engine(p.root)
    try:
        stream = io.StringIO()
        console = Console(width=80, file=stream, force_terminal=True, color_system=None)
        view = LiveView(engine, console=console, refresh_per_second=10)
        view.set_queue_state(verifying(42))
        view.start()
        time.sleep(1.6)  # the run loop blocked (a long verification): nobody calls refresh()
        drawn = stream.getvalue()
        # redrawn by rich's thread from the snapshot: a history read there would have raised
        # (sqlite connections are bound to their thread) and stopped the redraws
        seen = set(re.findall(r"verifying TASK-4 for (\d+)s", drawn))
        assert len(seen) >= 2 and seen <= {"42", "43", "44"}, drawn[-2000:]
        view.stop(["nothing left to do after 3.1s", "escalated, waiting for a person: TASK-7"])
        everything = stream.getvalue()
        assert everything.count("kanban run ended") == 1, everything[len(drawn):]
        last = everything[everything.index("kanban run ended"):]  # the frame left on the screen
        final = render(view.renderable(), 80)
        for text in (last, final):
            assert "nothing left to do after 3.1s" in text and "waiting for a person: TASK-7" in text, text
            assert "done 2" in text and "escalated 1" in text and "TODO 1" in text, text
            assert "attempt" not in text and "pid" not in text, text  # not the agents table
        view.stop()  # a second stop (the run loop's finally) changes nothing
        assert render(view.renderable(), 80) == final
    finally:
        engine.history.close()


def test_an_unreadable_board_is_one_line_and_never_kills_the_view(busy):
    p, _ = busy()
    engine = open_engine(p.root)
    try:
        view = LiveView(engine)
        view.refresh()
        plain = PlainView(engine, interval=60, out=io.StringIO())
        plain.refresh()
        todo = p.root / "TODO.md"
        todo.write_text(todo.read_text() + task_md("TASK-1", "Typed twice by a person"))  # a half-made edit
        view.refresh()
        plain.refresh()
        for width in (80, 50):
            text = render(view.renderable(), width)
            notes = [line for line in text.splitlines() if "board unreadable right now" in line]
            assert len(notes) == 1 and notes[0].startswith("(board unreadable right now: "), text
            assert all(len(line) <= width for line in text.splitlines()), text
            assert "TODO 1" in text and "TASK-2" in text, text  # the last counts and the agents stay
        assert "(board unreadable right now: " in plain.progress_line()
        assert "used twice" in plain.progress_line()
    finally:
        engine.history.close()


def test_plain_view_prints_events_and_a_progress_line_every_interval(kit):
    p = kit(task_md("TASK-1", "Hang around"), timeout="15m",
            other_files={"CHANGELOG.md": CHANGELOG})
    release = p.flag("release")
    p.set_rules([{"role": "task", "steps": [["wait_for", str(release)]]}])
    engine = open_engine(p.root)
    try:
        report = engine.tick()
        out = io.StringIO()
        view = PlainView(engine, interval=0.2, out=out)
        view.set_queue_state(verifying(42))
        view.start()
        for happening in report.events:
            view.log(happening)
        began = time.monotonic()
        wait_for(lambda: "progress:" in out.getvalue(), timeout=5, what="a progress line")
        assert time.monotonic() - began < 1.0  # within the interval (and some scheduling slack)
        wait_for(lambda: out.getvalue().count("progress:") >= 3, timeout=5, what="three progress lines")
        view.stop(["nothing left to do after 1.0s"])
    finally:
        release.touch()
        engine.history.close()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(rf"{CLOCK} TASK-1 started: task agent, attempt 1", lines[0]), lines
    progress = [line for line in lines if " progress: " in line]
    for line in progress:
        assert re.fullmatch(rf"{CLOCK} progress: 1 running \(TASK-1 task agent \d+s\), TODO 0, IN_PROGRESS 1, "
                            r"REVIEW 0, TESTING 0, done 2, escalated 0; merge queue: verifying TASK-4 for 4\ds",
                            line), line
    assert lines[-2:] == ["nothing left to do after 1.0s",
                          "final: TODO 0, IN_PROGRESS 1, REVIEW 0, TESTING 0, done 2, escalated 0"]
    count = out.getvalue().count("progress:")
    time.sleep(0.5)
    assert out.getvalue().count("progress:") == count  # stopped means stopped


def test_a_timeout_and_an_escalation_in_words_and_as_events(kit):
    p = kit(task_md("TASK-1", "Hang forever"), timeout="1s", kill_grace="0.1s",
            rules=[{"role": "task", "steps": [["hang"]]}])
    engine = open_engine(p.root)
    events = []
    try:
        deadline = time.monotonic() + 30
        while not any(e.kind == ESCALATED for e in events):
            assert time.monotonic() < deadline, events
            report = engine.tick()
            lines = report.reaped + report.started + report.problems  # the lists hold the same words
            assert sorted(e.text for e in report.events) == sorted(lines), (report.events, lines)
            events += report.events
            time.sleep(0.05)
    finally:
        engine.history.close()
    said = [(e.kind, e.text, e.task, e.title) for e in events]
    assert said == [
        ("started", "TASK-1 started: task agent, attempt 1", "TASK-1", "Hang forever"),
        ("timed_out", "TASK-1 timed out after 1s; retrying", "TASK-1", "Hang forever"),
        ("started", "TASK-1 started: task agent, attempt 2", "TASK-1", "Hang forever"),
        (ESCALATED, "TASK-1 escalated: failed again (timed out after 1s)", "TASK-1", "Hang forever"),
    ], said


def test_a_budget_stop_is_its_own_event(kit):
    """At a [budget] limit: 'budget_reached' for the task held back, and an escalation for one in flight."""
    p = kit(task_md("TASK-1", "Not yet started"), extra_toml='[budget]\ntask = "$1"\n',
            other_files={"IN_PROGRESS.md": "# In progress\n\n## [RETRY] TASK-2: Half done\n\nMore to do.\n"})
    engine = open_engine(p.root)
    try:
        for task in ("TASK-1", "TASK-2"):  # what each spent before (an earlier run of kanban)
            run_id = engine.history.start_run(task=task, role="task", attempt=1, run_dir=f"/gone/{task}",
                                              log="/gone/agent.log", timeout=900.0, head_before=None)
            engine.history.finish_run(run_id, outcome="failed", result={"exit_code": 1}, cost_usd=1.5)
        report = engine.tick()
    finally:
        engine.history.close()
    said = {(e.kind, e.task): e for e in report.events}
    assert said[(BUDGET_REACHED, "TASK-1")].text == "TASK-1 not started: budget reached: task TASK-1 spent $1.50 " \
                                                    "of $1.00", report.events
    assert said[(BUDGET_REACHED, "TASK-1")].title == "Not yet started"
    assert (BUDGET_REACHED, "TASK-2") in said
    escalation = said[(ESCALATED, "TASK-2")]
    assert escalation.title == "Half done"
    assert escalation.text.startswith("TASK-2 escalated: not started: budget reached: task TASK-2 spent $1.50")
    assert report.started == [] and escalation.text in report.reaped
    assert p.where("TASK-1")[0] == "TODO" and "ESCALATED" in p.where("TASK-2")[1]


def test_a_whole_run_tells_its_story_in_words(kit, capsys):
    """task -> review -> test -> merged, with a failed first attempt and a rejected review: every line
    the run prints is a sentence, not an engine event name."""
    p = kit(task_md("TASK-1", "Add a greeting", files="hello.txt") + task_md("TASK-2", "Add docs", files="docs.md"),
            rules=[
                {"task": "TASK-1", "role": "task", "attempt": 1, "steps": [["exit", 1]]},
                {"task": "TASK-1", "role": "task", "steps": [["commit", "hello.txt"]]},
                {"task": "TASK-2", "role": "task", "steps": [["commit", "docs.md"]]},
                {"task": "TASK-2", "role": "reviewer", "attempt": 1,
                 "steps": [["report", "verdict: reject\nThe docs say nothing."]]},
                {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
                {"role": "tester", "steps": [["report", "verdict: pass"]]},
            ])
    assert run_loop(p.root, no_merge=False, live=False) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    for phrase in ("TASK-1 started: task agent, attempt 1", "TASK-1 failed: exit status 1; retrying",
                   "TASK-1 started: task agent, attempt 2", "TASK-1 committed its work; on to review",
                   "TASK-2 rejected by review; back to the task agent", "TASK-2 approved by review",
                   "TASK-1 passed its tests; ready to merge", "TASK-2 passed its tests; ready to merge",
                   "merged into main"):
        assert re.search(rf"^{CLOCK} .*{re.escape(phrase)}", out, re.MULTILINE), (phrase, out)  # as it came
    assert "->" not in out, out
    for word in ("test_ok", "task_ok", "review_ok", "task_failed", "review_rejected", "picked"):
        assert word not in out.lower(), (word, out)
    assert "[RETRY]" not in out and "[ESCALATED]" not in out, out
    changelog = (p.root / "CHANGELOG.md").read_text()
    assert "TASK-1: Add a greeting" in changelog and "TASK-2: Add docs" in changelog


CHECK = """\
import pathlib, sys
sys.exit(0 if pathlib.Path("fixed.txt").exists() else 1)
"""


@pytest.mark.heavy
def test_the_test_stage_in_words_up_to_its_escalation(kit):
    """[test] command fails, the tester fixes nothing, back to review, and at last escalated."""
    toml = f'[test]\ncommand = ["{sys.executable}", "check.py", "{{tests}}"]\ntimeout = "20s"\n'
    p = kit(task_md("TASK-1", "Thing", files="src/thing.py"), extra_toml=toml,
            other_files={"check.py": CHECK, "src/thing.py": "x = 1\n", "tests/test_thing.py": "pass\n"}, rules=[
                {"role": "task", "steps": [["write", "src/thing.py", "x = 2\n"], ["commit", "src/thing.py"]]},
                {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
                {"role": "tester", "steps": [["commit"], ["report", "verdict: pass"]]},  # fixes nothing
            ])
    lines = p.drive(lambda: (p.where("TASK-1") or ("", frozenset(), None))[1] == frozenset({"ESCALATED"}),
                    timeout=60, what="escalation")
    expected = [
        "TASK-1 started: tests, attempt 1 (1 covering file)",
        "TASK-1 failed its tests (exit status 1); the tester fixes them",
        "TASK-1 started: tester, attempt 1",
        "TASK-1 tester finished (attempt 1); running the tests again",
        "TASK-1 failed its tests (exit status 1); the tester tries again",
        "TASK-1 failed its tests again (exit status 1); back to review",
        "TASK-1 escalated: failed its tests again after going back to review (exit status 1)",
    ]
    at = [lines.index(line) if line in lines else -1 for line in expected]
    assert -1 not in at and at == sorted(at), "\n".join(lines)
    assert not [line for line in lines if "->" in line or re.search(r"\b[a-z]+_[a-z]+\b", line)], lines
