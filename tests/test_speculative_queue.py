"""The merge queue beside the pool: verifications under kanban's executor, `[merge] parallel`
speculations on top of each other landed in order, a failure run once more before it counts
(a pass then recorded as flaky), and a queue that picks up its running checks after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import git, run_cli
from test_merge_queue import assert_task_done, good, has_bad
from test_merge_queue import make_project as make_queue_project

from kanban.history import History

# Logs start and end of each run with its head, sleeps, fails where a BAD file is in the tree;
# a FLAKY file makes the first run on each commit fail.
VERIFY = '''\
import json, os, subprocess, sys, time
LOG, SLEEP, TMP = {log!r}, {sleep!r}, {tmp!r}
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
def note(kind):
    with open(LOG, "a") as out:
        out.write(json.dumps({{"kind": kind, "head": head, "t": time.time(), "pid": os.getpid()}}) + "\\n")
note("start")
time.sleep(SLEEP)
bad = any(name.startswith("BAD") for name in os.listdir("."))
flaky_mark = os.path.join(TMP, "flaky-" + head)
flaky = os.path.exists("FLAKY") and not os.path.exists(flaky_mark)
if flaky:
    open(flaky_mark, "w").close()
note("end")
sys.exit(1 if bad or flaky else 0)
'''


def project(tmp_path: Path, *, sleep: float, toml: str = ""):
    p = make_queue_project(tmp_path, toml=toml)
    script = tmp_path / "spec-verify.py"
    log = tmp_path / "spec-runs.jsonl"
    script.write_text(VERIFY.format(log=str(log), sleep=sleep, tmp=str(tmp_path)))
    _use_verify(p, script, "the speculation test's verify")
    return p, log


def _use_verify(p, script: Path, message: str) -> None:
    """`[merge] verify` runs SCRIPT, committed on main."""
    text = (p.root / "kanban.toml").read_text()
    start = text.index("verify = ")
    end = text.index("\n", start)
    (p.root / "kanban.toml").write_text(text[:start] + f"verify = {json.dumps([sys.executable, str(script)])}"
                                        + text[end:])
    git(p.root, "commit", "-q", "-am", message)


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def most_at_once(recs: list[dict]) -> int:
    points = sorted([(r["t"], 1 if r["kind"] == "start" else -1) for r in recs], key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def landed_order(p) -> list[str]:
    out = git(p.root, "log", "--first-parent", "--merges", "--reverse", "--format=%s", "main")
    return [line.split(":")[0].removeprefix("Merge ") for line in out.splitlines()]


def test_parallel_verifications_speculate_in_order_and_a_bad_task_stays_off_main(tmp_path):
    p, log = project(tmp_path, sleep=0.6, toml="parallel = 3\n")
    start = p.main()
    for n in range(1, 7):
        p.add_task(n, f"Add module {n}", good(f"mod{n}") if n != 3 else {"BAD": "x\n"}, priority=n)

    out = p.queue(code=1)

    assert out["merged"] == ["TASK-1", "TASK-2", "TASK-4", "TASK-5", "TASK-6"], out
    assert out["failed"] == ["TASK-3"]
    assert landed_order(p) == ["TASK-1", "TASK-2", "TASK-4", "TASK-5", "TASK-6"]
    assert not has_bad(p, "main") and git(p.root, "merge-base", "--is-ancestor", start, "main") == ""
    with History(p.root, readonly=True) as history:
        # an armed one the queue discarded never ran (it waited for its turn): not a check at all
        spans = [(v.started, v.ended) for v in history.verifications() if not v.armed]
    assert most_at_once([{"t": a, "kind": "start"} for a, _ in spans] + [{"t": b, "kind": "end"} for _, b in spans]) \
        == 3, "three verifications ran at once, never more"
    for tid in ("TASK-1", "TASK-2", "TASK-4", "TASK-5", "TASK-6"):
        assert_task_done(p, tid)
    with History(p.root, readonly=True) as history:
        checks = history.verifications()
    # every landed commit was verified exactly as it landed: its own verification passed on its base
    main_merges = git(p.root, "log", "--first-parent", "--merges", "--format=%H", "main").split()
    passed = {v.sha for v in checks if v.outcome == "pass"}
    assert set(main_merges) <= passed
    assert [v.try_ for v in checks if v.tasks == "TASK-3" and v.outcome == "fail"][-2:] == [1, 2]
    bad = {v.sha for v in checks if v.tasks == "TASK-3"}
    assert all(v.outcome == "discarded" for v in checks if v.base in bad), "speculations on top of TASK-3 were rebuilt"


def test_beside_a_failure_run_once_more_the_next_is_built_without_it(tmp_path):
    """A failure usually repeats: while TASK-1's check runs again, TASK-2 is verified on main
    without it (not on top of it), so a real failure costs one round, not two."""
    p, log = project(tmp_path, sleep=0.5, toml="parallel = 2\n")
    start = p.main()
    p.add_task(1, "Add bad", {"BAD": "x\n"}, priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)
    p.add_task(3, "Add three", good("three"), priority=3)

    out = p.queue(code=1)

    assert out["failed"] == ["TASK-1"] and out["merged"] == ["TASK-2", "TASK-3"], out
    assert landed_order(p) == ["TASK-2", "TASK-3"] and not has_bad(p, "main")
    with History(p.root, readonly=True) as history:
        checks = history.verifications()
    retry = next(v for v in checks if v.tasks == "TASK-1" and v.try_ == 2)
    beside = [v for v in checks if v.tasks == "TASK-2" and v.base == start and not v.armed
              and v.started <= retry.ended]
    assert beside, [(v.tasks, v.base == start, v.try_, v.outcome) for v in checks]
    assert git(p.root, "rev-parse", "main~1").strip() != start  # TASK-3 on top of TASK-2
    assert git(p.root, "rev-parse", "main~2").strip() == start


def test_a_flaky_pass_beside_the_next_lands_first_and_the_next_is_checked_again_on_it(tmp_path):
    p, log = project(tmp_path, sleep=0.3, toml="parallel = 2\n")
    p.add_task(1, "Add flaky", {**good("one"), "FLAKY": "x\n"}, priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1", "TASK-2"] and landed_order(p) == ["TASK-1", "TASK-2"], out
    with History(p.root, readonly=True) as history:
        checks = history.verifications()
    passed = {v.sha for v in checks if v.outcome == "pass"}
    main_merges = git(p.root, "log", "--first-parent", "--merges", "--format=%H", "main").split()
    assert set(main_merges) <= passed, "each landed merge passed its check as it landed"


def test_parallel_3_is_much_faster_than_1(tmp_path):
    """The bench measures it; here only that speculation overlaps (a ratio, not a wall-clock figure)."""
    figures = {}
    for parallel in (1, 3):
        (tmp_path / f"p{parallel}").mkdir()
        # long enough checks that three supervisors start within one on a loaded machine
        p, log = project(tmp_path / f"p{parallel}", sleep=0.4 if parallel == 1 else 2.0,
                         toml=f"parallel = {parallel}\n")
        for n in range(1, 7):
            p.add_task(n, f"Add module {n}", good(f"mod{n}"), priority=n)
        assert p.queue(code=0)["merged"] == [f"TASK-{n}" for n in range(1, 7)]
        figures[parallel] = most_at_once(records(log))
    assert figures == {1: 1, 3: 3}


def test_a_failure_is_run_once_more_and_a_pass_then_is_flaky(tmp_path):
    p, log = project(tmp_path, sleep=0.0)
    p.add_task(1, "Add one", {**good("one"), "FLAKY": "x\n"})

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1"]
    assert any("recorded as flaky" in line for line in out["lines"]), out["lines"]
    with History(p.root, readonly=True) as history:
        assert [(v.outcome, v.try_) for v in history.verifications("TASK-1")] == [("fail", 1), ("pass", 2)]
        assert any(kind == "flaky" for _, _, kind, *_ in history.events("TASK-1"))
    report = run_cli(p.root, "report", check_code=0).stdout
    assert "flaky" in report.lower(), report


def test_a_queue_killed_mid_verification_picks_its_check_up_again(tmp_path):
    p, log = project(tmp_path, sleep=2.0)
    p.add_task(1, "Add one", good("one"))
    queue = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(p.root), "merge-queue"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 20
    while not records(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    queue.send_signal(signal.SIGKILL)
    queue.wait(timeout=10)
    assert [r["kind"] for r in records(log)] == ["start"], "the check outlives the queue, under its supervisor"

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1"]
    assert [r["kind"] for r in records(log)] == ["start", "end"], "the same check was waited for, not run again"
    assert out["verifications"] == 0
    assert_task_done(p, "TASK-1")


def test_kanban_run_keeps_the_pool_going_while_a_verification_runs(kit):
    """24 agents' worth of work would wait behind a blocking verify; beside the pool they do not."""
    from agents_kit import task_md

    from kanban.commands.run import run as run_loop

    tasks = "".join(task_md(f"TASK-{n}", f"Add module {n}", files=f"src/m{n}.py") for n in range(1, 5))
    p = kit(tasks, pool_size=2, extra_toml=textwrap.dedent(f"""
        [merge]
        verify = {json.dumps([sys.executable, "-c", "import time; time.sleep(1.5)"])}
        """))
    p.set_rules([{"role": "task", "steps": [["sleep", 0.3], ["commit"]]},
                 {"role": "reviewer", "steps": [["sleep", 0.1]]}, {"role": "tester", "steps": [["sleep", 0.1]]}])

    assert run_loop(p.root, no_merge=False, live=False) == 0

    with History(p.root, readonly=True) as history:
        checks = [v for v in history.verifications() if v.outcome == "pass"]
        runs = history.runs()
    assert len(checks) == 4
    # some agent started while a verification ran: the loop did not block on it
    assert any(v.started < r.started < v.ended for v in checks for r in runs), \
        [(v.started, v.ended) for v in checks]
    for n in range(1, 5):
        assert f"TASK-{n}:" in (p.root / "CHANGELOG.md").read_text()


HOLD_VERIFY = '''\
import os, sys, time
HOLD = {hold!r}
while os.path.exists(HOLD):
    time.sleep(0.02)
sys.exit(1 if any(name.startswith("BAD") for name in os.listdir(".")) else 0)
'''


def test_with_parallel_1_the_next_merge_waits_armed_and_starts_when_its_turn_comes(tmp_path):
    """The next candidate is built, checked out and supervised while the one ahead verifies, its
    check not started (at most `parallel` run); it starts when the one ahead passes, and one
    built on a chain that broke is discarded, never run."""
    p, _ = project(tmp_path, sleep=0.0, toml="parallel = 1\n")
    hold = tmp_path / "hold"
    script = tmp_path / "spec-verify.py"
    script.write_text(HOLD_VERIFY.format(hold=str(hold)))
    for n in range(1, 4):
        p.add_task(n, f"Add module {n}", good(f"mod{n}") if n != 2 else {"BAD": "x\n"}, priority=n)
    hold.write_text("wait\n")
    queue = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(p.root), "merge-queue", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        live: list = []
        while time.monotonic() < deadline:
            if (p.root / ".kanban" / "history.sqlite").exists():
                with History(p.root, readonly=True) as history:
                    live = history.live_verifications()
                if len(live) == 2:
                    break
            time.sleep(0.05)
        assert [(v.tasks, bool(v.armed)) for v in live] == [("TASK-1", False), ("TASK-2", True)], live
        assert live[1].base == live[0].sha, "the armed one is built on the one ahead"
    finally:
        hold.unlink()
    out, err = queue.communicate(timeout=120)
    assert queue.returncode == 1, err
    result = json.loads(out)
    assert result["merged"] == ["TASK-1", "TASK-3"] and result["failed"] == ["TASK-2"], result
    assert not has_bad(p, "main")
    with History(p.root, readonly=True) as history:
        rows = history.verifications()
    assert all(v.ended is not None for v in rows), "nothing is left waiting after the queue ends"
    assert [(v.tasks, v.outcome) for v in rows if not v.armed][:2] == [("TASK-1", "pass"), ("TASK-2", "fail")]


# The first in the queue checks longest: the ones behind it have passed when it does. EDIT: a
# file the check of a tree with mod3.py writes, as a person editing while the checks run.
SLOW_FIRST = '''\
import os, sys, time
files = set(os.listdir("src")) if os.path.isdir("src") else set()
if {edit!r} and "mod3.py" in files:
    with open({edit!r}, "a") as out:
        out.write("mine\\n")
time.sleep({sleep!r} if files == {{"mod1.py"}} else 0.1)
sys.exit(0)
'''


def _slow_first_project(tmp_path: Path, sleep: float, edit: str = ""):
    p = make_queue_project(tmp_path, toml="parallel = 3\n")
    script = tmp_path / "slow-first.py"
    script.write_text(SLOW_FIRST.format(sleep=sleep, edit=edit and str(p.root / edit)))
    _use_verify(p, script, "a verify where the first check is the slow one")
    return p


def test_checks_that_passed_together_land_in_one_move_of_main(tmp_path):
    """TASK-2 and TASK-3 pass while TASK-1 still runs, and keep their places (not rebuilt in
    another order on every pass while they wait): when TASK-1 passes, main moves once, to
    TASK-3's merge, not once per task (one fast-forward of the checkout, not three)."""
    p = _slow_first_project(tmp_path, sleep=1.5)
    for n in (1, 2, 3):
        p.add_task(n, f"Add module {n}", good(f"mod{n}"), priority=n)
    before = len(git(p.root, "reflog", "--format=%H", "refs/heads/main").split())

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1", "TASK-2", "TASK-3"] and landed_order(p) == ["TASK-1", "TASK-2", "TASK-3"], out
    with History(p.root, readonly=True) as history:
        assert [(v.tasks, v.outcome) for v in history.verifications()] == \
            [("TASK-1", "pass"), ("TASK-2", "pass"), ("TASK-3", "pass")]
    moves = git(p.root, "reflog", "--format=%H", "refs/heads/main").split()
    assert len(moves) - before == 1, git(p.root, "reflog", "refs/heads/main")
    for tid in ("TASK-1", "TASK-2", "TASK-3"):
        assert_task_done(p, tid)


def test_of_checks_that_passed_together_those_before_one_touching_uncommitted_work_land(tmp_path):
    """The person starts editing a file TASK-3 brings in while the checks run: landed together,
    TASK-3 would overwrite it, so TASK-1 and TASK-2 land one by one, TASK-3 waits for the person,
    and main holds nothing of it."""
    p = _slow_first_project(tmp_path, sleep=1.5, edit="shared.txt")
    p.add_task(1, "Add module 1", good("mod1"), priority=1)
    p.add_task(2, "Add module 2", good("mod2"), priority=2)
    p.add_task(3, "Touch shared", {**good("mod3"), "shared.txt": "alpha\nBETA\ngamma\n"}, priority=3)

    out = p.queue()

    assert out["merged"] == ["TASK-1", "TASK-2"] and landed_order(p) == ["TASK-1", "TASK-2"], out
    assert "waiting to merge: TASK-3" in out["_proc"].stdout + "\n".join(out.get("lines", [])), out
    assert not p.in_main(p.tips["TASK-3"])
    assert (p.root / "shared.txt").read_text() == "alpha\nbeta\ngamma\nmine\n"
    for tid in ("TASK-1", "TASK-2"):
        assert_task_done(p, tid)
