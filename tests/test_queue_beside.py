"""`kanban run`'s merge queue on its own thread (kanban.queue_beside): real git, real agents.

A drain is git work (build, land, push). On the queue's thread the agents' handovers go on
meanwhile; drained inside the loop, as with QUEUE_THREAD off, they wait for it. The remote's
pre-receive hook makes the push of TASK-1's landing take 2 s and writes when it ran.
"""

from __future__ import annotations

import pytest
from agents_kit import task_md
from conftest import git

import kanban.commands.run as run_mod
from kanban.merge_queue import QueueReport

HOOK = "#!/bin/sh\ndate +%s.%N >> {log}\nsleep 2\ndate +%s.%N >> {log}\n"


@pytest.mark.parametrize("thread", [True, False])
def test_handovers_go_on_while_the_queue_pushes(kit, tmp_path, monkeypatch, thread):
    monkeypatch.setattr(run_mod, "QUEUE_THREAD", thread)
    p = kit(task_md("TASK-1", "Quick") + task_md("TASK-2", "Slower"),
            extra_toml="\n[merge]\npush = true\n")
    p.set_rules([{"task": "TASK-1", "role": r, "steps": ([["commit"]] if r == "task" else [])}
                 for r in ("task", "reviewer", "tester")]
                + [{"task": "TASK-2", "role": "task", "steps": [["sleep", 0.8], ["commit"]]}])
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(p.root, "remote", "add", "origin", str(origin))
    git(p.root, "push", "-q", "origin", "main")
    pushes = tmp_path / "pushes.log"
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(HOOK.format(log=pushes))
    hook.chmod(0o755)

    assert run_mod.run(p.root, no_merge=False, live=False) == 0
    assert git(origin, "log", "--oneline", "main").count("Merge TASK-") == 2
    first_push = [float(t) for t in pushes.read_text().split()[:2]]  # TASK-1's landing
    started = {(r.task, r.role): r.started for r in p.runs()}
    review = started[("TASK-2", "reviewer")]
    ended_task = [e["t"] for e in p.events("end") if (e["task"], e["role"]) == ("TASK-2", "task")]
    assert first_push[0] < ended_task[0] < first_push[1], (first_push, ended_task)  # it ended during the push
    if thread:
        assert review < first_push[1], "the reviewer's start waited for the push"
    else:  # the old loop: the handover comes after the drain
        assert review >= first_push[1]


def test_a_run_ends_only_after_the_verification_its_last_drain_started(kit):
    """The last task turns ready; the queue's thread starts its verification while the loop finds
    nothing else to do. The run must wait for that check and land it (found by the crash soak:
    exit 1, the verification left running)."""
    p = kit(task_md("TASK-1", "Only"), extra_toml='\n[merge]\nverify = ["sleep", "0.5"]\n')
    assert run_mod.run(p.root, no_merge=False, live=False) == 0
    assert "TASK-1:" in (p.root / "CHANGELOG.md").read_text()


def test_a_drains_error_held_for_the_next_pass_is_raised_there_once(kit):
    """The loop reads reports twice a pass; the second read is outside the pass's error handling
    (where --watch says "this pass stopped" and watches on), so an error found there is held."""
    from kanban.config import load_config
    from kanban.engine import Engine
    from kanban.errors import KanbanError
    from kanban.history import History
    from kanban.queue_beside import QueueBeside

    p = kit(task_md("TASK-1", "Only"))
    drains = []

    def drain(engine, **kw):
        drains.append(kw)
        raise KanbanError("TODO.md:3: a half-typed entry")

    engine = Engine(p.root, load_config(p.root), History(p.root))
    beside = QueueBeside(engine, drain)
    try:
        beside.poke()
        beside.wait_idle()
        assert beside.reports(hold_errors=True) == []
        assert not beside.idle()  # the held error is still to be shown: the run may not end
        with pytest.raises(KanbanError, match="half-typed"):
            beside.reports()
        assert beside.idle() and beside.reports() == [] and drains == [{"wait": False}]
    finally:
        beside.close()
        engine.close()


def _queue_with_a_check(kit, tmp_path, seconds: float, later):
    """A QueueBeside whose first drain starts a real check of SECONDS under the executor (a
    verification in the history); LATER(engine) is every later drain. Returns (beside, engine,
    the drains' times)."""
    import time

    from kanban.config import load_config
    from kanban.engine import Engine
    from kanban.history import History
    from kanban.queue_beside import QueueBeside

    p = kit(task_md("TASK-1", "Only"))
    drains: list[float] = []

    def drain(engine, **kw):
        drains.append(time.monotonic())
        if len(drains) > 1:
            return later(engine)
        run_dir = tmp_path / "verify-run"
        engine.history.start_verification(["TASK-1"], "0" * 40, str(tmp_path / "v.log"),
                                          run_ref=engine.runner.ref(run_dir))
        engine.runner.submit(run_dir, ["sleep", str(seconds)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                             log=tmp_path / "v.log", timeout=10, wait=False)
        return QueueReport()

    engine = Engine(p.root, load_config(p.root), History(p.root))
    return QueueBeside(engine, drain), engine, drains


def _until(drains: list[float], count: int, deadline: float) -> None:
    import time

    while len(drains) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_queue_lands_a_verification_that_ended_without_a_word_from_the_loop(kit, tmp_path):
    """The queue's thread waits on the verifications it started: the one that ends is landed at
    once, not when the loop's next pass (busy with handovers, maybe) pokes it. Here nothing
    pokes it after the first drain, which starts a real 0.3 s check under the executor."""
    import time

    def land(engine):
        for v in engine.history.live_verifications():
            engine.history.finish_verification(v.id, outcome="pass", how="exit status 0")
        return QueueReport()

    beside, engine, drains = _queue_with_a_check(kit, tmp_path, 0.3, land)
    try:
        beside.poke()
        deadline = time.monotonic() + 5
        _until(drains, 2, deadline)
        assert len(drains) == 2, "the ended verification waited for a poke"
        assert drains[1] - drains[0] >= 0.3  # woken by its end, not at once
        time.sleep(0.2)
        assert len(drains) == 2  # with nothing live, the thread waits for a poke again
        beside.poke()
        _until(drains, 3, deadline)
        assert len(drains) == 3
    finally:
        beside.close()
        engine.close()


def test_an_ended_verification_no_drain_took_wakes_the_queue_once(kit, tmp_path):
    """A drain that could not take the ended check (another `kanban merge-queue` holds the lock)
    leaves it live: the thread then waits for a poke, it does not drain again and again."""
    import time

    beside, engine, drains = _queue_with_a_check(kit, tmp_path, 0.1, lambda engine: QueueReport(busy=True))
    try:
        beside.poke()
        _until(drains, 2, time.monotonic() + 5)
        time.sleep(0.5)
        assert len(drains) == 2
    finally:
        beside.close()
        engine.close()
