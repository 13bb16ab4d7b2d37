"""`kanban plan` (issue 14) with a scripted planner: the fake agent of tests/agents_kit.py as
`[agent.planner]`, a real supervisor, a real detached checkout of main, real git.

    - a good plan lands in TODO.md byte for byte where expected (fresh IDs after the highest on
      the board and in CHANGELOG.md, the plan's own labels rewritten in depends), and `kanban
      run` takes it to CHANGELOG.md;
    - a plan with a cycle, an unknown dependency, a bad glob, a hostile title... is refused with
      one line per problem, exit 2, and no byte of the repository changed;
    - --partial keeps the valid part and names the rest; --dry-run and --json write nothing;
      --from takes a plan from a file (an earlier answer) without asking a planner;
    - the planner's run is in the history (and `kanban report`), within the budgets, and
      nothing it does in its checkout or to the shared repository is kept.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agents_kit import task_md
from conftest import git, run_inproc, snapshot
from e2e_kit import run_kanban

from kanban import locks, paths
from kanban.history import History

TODAY = "DATE"  # a plan heading's date, as undated() writes it


def undated(text):
    """TEXT (str or bytes) with each plan heading's date made DATE, if it is today's or yesterday's
    (a suite that runs across midnight): the expected texts are written once, the date is the day's."""
    days = {time.strftime("%Y-%m-%d", time.localtime(time.time() - back)) for back in (0, 86400)}
    as_bytes = isinstance(text, bytes)
    out = re.sub(r"^(# Plan: .*) \((\d{4}-\d{2}-\d{2})\)(\r?)$",
                 lambda m: f"{m[1]} (DATE){m[3]}" if m[2] in days else m[0],
                 text.decode("utf-8") if as_bytes else text, flags=re.M)
    return out.encode("utf-8") if as_bytes else out

EXISTING = task_md("TASK-1", "Existing work", files="src/old.py")
CHANGELOG_WITH_TASK_7 = "# Changelog\n\n## [Unreleased]\n\n- TASK-7: Merged long ago\n"

GOOD_PLAN = """Here is the plan.

## NEW-1: Add the greeting module
priority: 2
files: src/greet.py, tests/test_greet.py

Write `greet(name)`.

## NEW-2: Use the greeting on the command line
depends: NEW-1, TASK-1
files: src/cli.py

Call greet() from the CLI.

## TASK-A: Document the greeting
depends: NEW-2
track: docs

Say how to greet in the README.
"""

# What TODO.md gets (after its blank last line): IDs after TASK-7 (CHANGELOG.md), the highest anywhere.
GOOD_SECTION = f"""# Plan: Greet people ({TODAY})

## TASK-8: Add the greeting module
priority: 2
files: src/greet.py, tests/test_greet.py

Write `greet(name)`.

## TASK-9: Use the greeting on the command line
depends: TASK-8, TASK-1
files: src/cli.py

Call greet() from the CLI.

## TASK-10: Document the greeting
depends: TASK-9
track: docs

Say how to greet in the README.
"""


def planning(kit, plan: str | None = GOOD_PLAN, *, steps: list | None = None, tasks: str = EXISTING,
             extra_toml: str = "", changelog: str | None = CHANGELOG_WITH_TASK_7):
    """A project whose planner writes PLAN to its report (or does STEPS)."""
    rules = [{"role": "planner", "steps": steps if steps is not None else [["report", plan]]}]
    other = {"CHANGELOG.md": changelog} if changelog is not None else None
    return kit(tasks, rules=rules, extra_toml=extra_toml, other_files=other)


def plan(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_inproc(root, "plan", *args)


def outside_state(root: Path) -> dict[str, bytes]:
    """Every file of the repository but git's and kanban's own state."""
    return {k: v for k, v in snapshot(root).items() if not k.startswith(".kanban")}


def planner_runs(root: Path):
    with History(root) as history:
        return [r for r in history.runs() if r.role == "planner"]


def errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


# --- a good plan ---------------------------------------------------------------------------------


def test_a_good_plan_lands_in_todo_byte_exactly_and_kanban_run_takes_it_to_the_changelog(kit, capsys):
    p = planning(kit)
    todo, others = (p.root / "TODO.md").read_bytes(), outside_state(p.root)
    main = git(p.root, "rev-parse", "main")

    proc = plan(p.root, "Greet people")
    assert proc.returncode == 0, proc.stderr
    assert undated((p.root / "TODO.md").read_bytes()) == todo + GOOD_SECTION.encode()
    assert {k: v for k, v in outside_state(p.root).items() if k != "TODO.md"} == \
           {k: v for k, v in others.items() if k != "TODO.md"}
    assert "TASK-8, TASK-9, TASK-10" in proc.stdout and "kanban tick" in proc.stdout, proc.stdout
    # nothing started, main untouched, the planner's checkout gone
    assert p.column("TASK-8") == "TODO" and git(p.root, "rev-parse", "main") == main
    assert git(p.root, "worktree", "list").count("\n") == 1
    assert not paths.plan_checkout(p.root).exists()
    # the run is recorded like any other, and the planner saw the feature and the board
    [run] = planner_runs(p.root)
    assert (run.task, run.attempt, run.outcome, run.reason) == ("plan", 1, "ok", None)
    assert run.ended is not None and run.ended >= run.started
    prompt = (paths.plan_run_dir(p.root, 1) / "prompt.md").read_text()
    assert "Greet people" in prompt and "TASK-1: Existing work" in prompt and "files: src/old.py" in prompt
    assert "Merged (in CHANGELOG.md): 1 task." in prompt
    [start] = p.events("start")
    assert start["env"]["KANBAN_ROLE"] == "planner" and start["cwd"] == str(paths.plan_checkout(p.root))
    assert "| planner | 1 |" in run_inproc(p.root, "report", check_code=0).stdout

    code, out, _ = run_kanban(p.root, capsys)
    assert code == 0, out
    changelog = (p.root / "CHANGELOG.md").read_text()
    for task_id in ("TASK-1", "TASK-8", "TASK-9", "TASK-10"):
        assert f"{task_id}:" in changelog, changelog
        assert p.column(task_id) is None
    merged = [line for line in git(p.root, "log", "--format=%s", "main").splitlines() if line.startswith("Merge")]
    assert merged.index("Merge TASK-10: Document the greeting") < merged.index(
        "Merge TASK-9: Use the greeting on the command line") < merged.index("Merge TASK-8: Add the greeting module")


def test_dry_run_prints_what_would_be_written_and_from_writes_it_without_a_planner(kit):
    """--dry-run (and --json) write nothing; --from writes the first answer as it was shown."""
    p = planning(kit)
    before = outside_state(p.root)
    proc = plan(p.root, "Greet people", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert undated(proc.stdout) == GOOD_SECTION
    assert outside_state(p.root) == before
    report = ".kanban/runs/plan/planner-1/report.md"
    assert f"--from {report}" in proc.stderr, proc.stderr

    proc = plan(p.root, "Greet people", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["written"] is False and undated("# " + data["heading"]) == f"# Plan: Greet people ({TODAY})"
    assert data["planner"]["outcome"] == "ok" and data["planner"]["report"] == data["source"]
    assert data["planner"]["log"] == ".kanban/runs/plan/planner-2/agent.log"
    assert [t["title"] for t in data["tasks"]][0] == "Add the greeting module"
    assert outside_state(p.root) == before

    proc = plan(p.root, "Greet people", "--from", str(p.root / report), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["written"] is True and data["planner"] is None and data["problems"] == []
    assert [(t["id"], t["label"], t["depends"]) for t in data["tasks"]] == [
        ("TASK-8", "NEW-1", []), ("TASK-9", "NEW-2", ["TASK-8", "TASK-1"]), ("TASK-10", "TASK-A", ["TASK-9"])]
    assert undated((p.root / "TODO.md").read_bytes()) == before["TODO.md"] + GOOD_SECTION.encode()
    assert len(planner_runs(p.root)) == 2  # --from asked no planner


# --- refused plans ------------------------------------------------------------------------------

BAD_PLAN = """## NEW-1: Loop one
depends: NEW-2

## NEW-2: Loop two
depends: NEW-1

## NEW-3: Wants a task nobody has
depends: TASK-99

## NEW-4: Reaches outside
files: src/ok.py, ../secrets/*

## NEW-5: \x1b]0;owned\x07Hostile \x1b[31mtitle

## NEW-6: Fine on its own
"""


def test_a_bad_plan_is_refused_with_one_line_per_problem_and_nothing_changes(kit):
    p = planning(kit, BAD_PLAN)
    before = outside_state(p.root)
    proc = plan(p.root, "Greet people")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    source = ".kanban/runs/plan/planner-1/report.md"
    lines = errors(proc)
    assert lines[:4] == [
        f"error: {source}:2: dependency cycle NEW-1 -> NEW-2 -> NEW-1; remove one of these depends so the chain "
        "has an end",
        f"error: {source}:8: depends names TASK-99, which is on no board file and not in CHANGELOG.md; fix the ID "
        "or remove it from depends",
        f"error: {source}:11: files of NEW-4 names '../secrets/*', which is not a path inside the repository; use "
        "repository-relative paths or globs such as src/cache.py or src/**/*.py",
        f"error: {source}:13: NEW-5: the title holds a control character or terminal escape; write it as plain "
        "text",
    ], proc.stderr
    assert len(lines) == 5 and lines[4].startswith("error: the plan is refused: 4 problems in 6 tasks; nothing "
                                                    "was written"), proc.stderr
    assert "--partial" in lines[4] and f"--from {source}" in lines[4]
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert outside_state(p.root) == before
    assert git(p.root, "worktree", "list").count("\n") == 1
    [run] = planner_runs(p.root)
    assert run.outcome == "ok"  # the planner did its job; its plan is what was refused


CASES = {
    "cycle": ("## NEW-1: A\ndepends: NEW-1\n", "2: NEW-1 depends on itself; remove it from its own depends line"),
    "longer cycle": ("## NEW-1: A\ndepends: NEW-3\n\n## NEW-2: B\ndepends: NEW-1\n\n## NEW-3: C\ndepends: NEW-2\n",
                     "2: dependency cycle NEW-1 -> NEW-3 -> NEW-2 -> NEW-1"),
    "unknown dependency": ("## NEW-1: A\ndepends: TASK-1, TASK-123\n",
                           "2: depends names TASK-123, which is on no board file and not in CHANGELOG.md"),
    "not an ID": ("## NEW-1: A\ndepends: the first one\n", "2: depends names 'the first one', which is not a task "
                                                           "ID"),
    "absolute glob": ("## NEW-1: A\nfiles: /etc/*\n", "2: files of NEW-1 names '/etc/*', which is not a path"),
    "backslash": ("## NEW-1: A\nfiles: src\\win.py\n", "2: files of NEW-1 names 'src\\\\win.py'"),
    "priority": ("## NEW-1: A\npriority: 0\n", "2: priority of NEW-1 must be a whole number from 1 (most urgent), "
                                               "got '0'"),
    "escape in title": ("## NEW-1: \x1b[2Jcleared\n", "1: NEW-1: the title holds a control character or terminal "
                                                      "escape"),
    "bidi in title": ("## NEW-1: innocent\u202etxt.exe\n", "1: NEW-1: the title holds a character that reorders or "
                                                           "hides text"),
    "marker": ("## [ESCALATED] NEW-1: A\n", "1: NEW-1 carries the marker [ESCALATED], which only kanban sets"),
    "status": ("## NEW-1: A\nstatus: ready to merge\n", "2: NEW-1 sets 'status:', which is kanban's own line"),
    "twice": ("## NEW-1: A\n\n## NEW-1: B\n", "3: task ID NEW-1 is used twice (also at "),
    "open fence": ("## NEW-1: A\n\n```\ncode\n", "1: NEW-1: the body opens a code fence (line 1 of its body: ```)"),
    "no task": ("Sorry, I could not plan this.\n", "the plan holds no task entry"),
    "too many": ("".join(f"## NEW-{i}: T{i}\n\n" for i in range(1, 53)), "the plan has 52 tasks, over the limit "
                                                                         "of 50"),
    "long title": ("## NEW-1: " + "x" * 201 + "\n", "1: NEW-1: the title is 201 characters long, over 200"),
}


def test_each_kind_of_bad_entry_is_named_in_the_boards_words(kit):
    p = planning(kit, None, steps=[["exit", 1]])  # --from asks no planner: one that ran would fail
    before = outside_state(p.root)
    wrong = []
    for case, (text, expected) in sorted(CASES.items()):
        plan_file = p.kit / f"{case.replace(' ', '-')}.md"
        plan_file.write_text(text)
        proc = plan(p.root, "Something", "--from", str(plan_file))
        lines = errors(proc)
        if not (proc.returncode == 2 and len(lines) == 2 and expected in lines[0]
                and lines[0].startswith(f"error: {plan_file}") and "nothing was written" in lines[1]):
            wrong.append(f"{case}: exit {proc.returncode}, {proc.stderr!r}")
    assert not wrong, "\n".join(wrong)
    assert outside_state(p.root) == before and planner_runs(p.root) == []


def test_partial_keeps_the_valid_tasks_and_names_the_rest(kit):
    text = """## NEW-1: Good start
files: a.py

## NEW-2: Bad glob
files: ../../x

## NEW-3: Needs the bad one
depends: NEW-2

## NEW-4: Needs the good one
depends: NEW-1, TASK-1
"""
    p = planning(kit, text)
    todo = (p.root / "TODO.md").read_bytes()
    proc = plan(p.root, "Half a plan", "--partial")
    assert proc.returncode == 0, proc.stderr
    assert undated((p.root / "TODO.md").read_bytes()) == todo + f"""# Plan: Half a plan ({TODAY})

## TASK-8: Good start
files: a.py

## TASK-9: Needs the good one
depends: TASK-8, TASK-1
""".encode()
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, proc.stderr
    assert "files of NEW-2 names '../../x'" in warnings[0]
    assert "NEW-3 is left out: it depends on NEW-2, which is left out" in warnings[1]
    assert "(2 left out)" in proc.stdout, proc.stdout

    nothing_valid = "## NEW-1: A\ndepends: TASK-99\n"
    (p.kit / "bad.md").write_text(nothing_valid)
    before = outside_state(p.root)
    proc = plan(p.root, "Nothing good", "--partial", "--from", str(p.kit / "bad.md"))
    assert proc.returncode == 2 and outside_state(p.root) == before, proc.stderr


def test_a_label_that_is_an_existing_id_means_the_plans_own_task(kit):
    text = "## TASK-1: First\n\n## TASK-2: Second\ndepends: TASK-1, TASK-7\n"
    p = planning(kit, text)
    proc = plan(p.root, "Own numbering", "--json")
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads(proc.stdout)["tasks"]
    assert [(t["id"], t["depends"]) for t in tasks] == [("TASK-8", []), ("TASK-9", ["TASK-8", "TASK-7"])]
    assert p.column("TASK-1") == "TODO" and "## TASK-1: Existing work" in (p.root / "TODO.md").read_text()


def test_the_body_is_sanitised_and_the_plans_prose_left_out(kit):
    text = ("I looked at the code first.\n\n# Heading of the answer\n\n## NEW-1: Clean\nfiles: a.py\n\n"
            "Line with \x1b[31mcolour\x1b[0m and a bell\x07.\n\n### Details\n\nMore.\n")
    p = planning(kit, text)
    proc = plan(p.root, "Sanitise", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert undated(proc.stdout) == (f"# Plan: Sanitise ({TODAY})\n\n## TASK-8: Clean\nfiles: a.py\n\n"
                           "Line with colour and a bell.\n\n### Details\n\nMore.\n")


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("feature, words", [
    ("", "the feature is empty"),
    ("two\nlines", "the feature spans several lines"),
    ("\x1b[31mred", "the feature holds a control character"),
    ("x" * 201, "the feature is 201 characters long"),
])
def test_bad_feature_text_is_one_line_and_no_planner(kit, feature, words):
    p = planning(kit)
    before = outside_state(p.root)
    proc = plan(p.root, feature)
    assert proc.returncode == 2 and len(errors(proc)) == 1 and words in proc.stderr, proc.stderr
    assert outside_state(p.root) == before and p.events() == []


def test_a_bad_from_file_is_one_line(kit, tmp_path):
    p = planning(kit, None, steps=[["exit", 1]])
    (tmp_path / "latin1.md").write_bytes("## NEW-1: caf\xe9\n".encode("latin-1"))
    before = outside_state(p.root)
    for path, words in ((tmp_path / "missing.md", "there is no such --from file"),
                        (tmp_path, "the --from file is a directory"),
                        (tmp_path / "latin1.md", "the --from file is not valid UTF-8")):
        proc = plan(p.root, "From a file", "--from", str(path))
        assert proc.returncode == 2 and len(errors(proc)) == 1 and words in proc.stderr, proc.stderr
        assert str(path) in proc.stderr
    assert outside_state(p.root) == before and planner_runs(p.root) == []


def test_a_bad_board_is_exit_2_before_the_planner_starts(kit):
    p = planning(kit, tasks=task_md("TASK-1", depends="TASK-50"))
    proc = plan(p.root, "Anything")
    assert proc.returncode == 2 and "depends names TASK-50" in proc.stderr, proc.stderr
    assert p.events() == []


# --- the planner's run -----------------------------------------------------------------------------


@pytest.mark.parametrize("steps, why", [
    ([["exit", 3]], "exit status 3"),
    ([["print", "thinking"]], "it wrote no plan to its report"),
    ([["hang"]], "timed out after 1s"),
])
def test_a_planner_that_fails_is_exit_1_naming_its_log_and_nothing_is_written(kit, steps, why):
    p = planning(kit, steps=steps, extra_toml='[agent.planner]\ntimeout = "1s"\n')
    before = outside_state(p.root)
    proc = plan(p.root, "Anything")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    [line] = errors(proc)
    assert f"the planner failed: {why}" in line and ".kanban/runs/plan/planner-1/agent.log" in line, line
    assert outside_state(p.root) == before
    [run] = planner_runs(p.root)
    assert run.outcome == "failed" and run.reason == why
    assert git(p.root, "worktree", "list").count("\n") == 1
    assert "### plan planner attempt 1: " + why in run_inproc(p.root, "report", check_code=0).stdout


def test_what_the_planner_does_in_its_checkout_is_not_kept(kit):
    steps = [["write", "README.md", "changed by the planner\n"], ["commit", "planner-was-here.txt"],
             ["report", GOOD_PLAN]]
    p = planning(kit, steps=steps)
    main = git(p.root, "rev-parse", "main")
    proc = plan(p.root, "Greet people")
    assert proc.returncode == 0, proc.stderr
    assert git(p.root, "rev-parse", "main") == main and (p.root / "README.md").read_text() == "# project\n"
    assert not paths.plan_checkout(p.root).exists()
    assert git(p.root, "branch", "--list").split() == ["*", "main"]


@pytest.mark.parametrize("misdeed, found", [
    ([["commit", "evil.txt"], ["git", "update-ref", "refs/heads/main", "HEAD"]], "it moved main to its own commit"),
    ([["git", "config", "core.hooksPath", "/tmp/evil-hooks"]], "the shared git directory changed during its run"),
])
def test_a_planner_that_changes_the_shared_repository_is_undone_and_its_plan_not_used(kit, misdeed, found):
    p = planning(kit, steps=[*misdeed, ["report", GOOD_PLAN]])
    main = git(p.root, "rev-parse", "main")
    before = outside_state(p.root)
    proc = plan(p.root, "Greet people")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert found in proc.stderr and "kanban" in proc.stderr, proc.stderr
    assert git(p.root, "rev-parse", "main") == main
    assert subprocess.run(["git", "config", "core.hooksPath"], cwd=p.root, capture_output=True).returncode == 1
    assert outside_state(p.root) == before


def test_budgets_apply_to_the_planner(kit):
    p = planning(kit, extra_toml='[budget]\nday = "$1"\n')
    with History(p.root) as history:  # a run of today that spent more than the day's budget
        run_id = history.start_run(task="TASK-1", role="task", attempt=1, log=str(p.root / "x.log"), timeout=60,
                                   head_before=None, run_dir=str(p.root / ".kanban" / "runs" / "TASK-1" / "task-1"))
        history.finish_run(run_id, outcome="ok", result={"exit_code": 0}, cost_usd=1.5)
    proc = plan(p.root, "Greet people")
    assert proc.returncode == 1 and "budget reached: today (UTC) spent $1.50 of $1.00" in proc.stderr, proc.stderr
    assert planner_runs(p.root) == [] and p.events() == []


def test_one_plan_at_a_time(kit):
    p = planning(kit)
    paths.state_dir(p.root).mkdir(exist_ok=True)
    with locks.hold(paths.plan_lock(p.root)):
        proc = plan(p.root, "Greet people")
    assert proc.returncode == 1 and "another 'kanban plan' is running" in proc.stderr, proc.stderr
    assert p.events() == []


def test_a_killed_kanban_plan_leaves_a_run_that_the_next_tick_or_plan_settles(kit):
    p = planning(kit, steps=[["hang"]], tasks="", extra_toml='[agent.planner]\ntimeout = "5s"\n')
    proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(p.root), "plan", "Greet people"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not p.events("start") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.events("start"), "the planner never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    [run] = planner_runs(p.root)
    assert run.ended is None  # live: its supervisor still enforces the timeout
    assert p.tick().reaped == []  # still running: nobody's to settle yet
    while planner_runs(p.root)[0].ended is None and time.monotonic() < deadline:
        p.tick()
        time.sleep(0.2)
    [run] = planner_runs(p.root)
    assert run.outcome == "failed" and "abandoned" in (run.reason or ""), run
    assert paths.plan_checkout(p.root).exists()  # left by the killed plan; the next plan removes it
    p.set_rules([{"role": "planner", "steps": [["report", "## NEW-1: Settled\n"]]}])
    proc2 = plan(p.root, "Greet people", "--dry-run")
    assert proc2.returncode == 0, proc2.stderr
    assert not paths.plan_checkout(p.root).exists()
    assert git(p.root, "worktree", "list").count("\n") == 1


TODO_SHAPES = {  # TODO.md as a person may have left it -> what goes between its text and the plan
    "no final newline": (b"# TODO\n\nMy notes", b"\n\n"),
    "no blank line": (b"# TODO\n\n## TASK-1: Existing work\nfiles: src/old.py\n", b"\n"),
    "crlf": (b"# TODO\r\n\r\n## TASK-1: Existing work\r\n", b"\r\n"),
    "bom": ("\ufeff# TODO\n\nNotes.\n\n".encode(), b""),
    "missing": (None, b""),
}


def test_the_plan_goes_at_the_very_end_of_todo_in_its_own_style(kit):
    p = planning(kit, None, steps=[["exit", 1]])
    (p.kit / "plan.md").write_text("## NEW-1: One\nfiles: a.py\n\nDo it.\n\n## NEW-2: Two\ndepends: NEW-1\n")
    todo = p.root / "TODO.md"
    for shape, (before, between) in TODO_SHAPES.items():
        if before is None:
            todo.unlink()
        else:
            todo.write_bytes(before)
        proc = plan(p.root, "Shapes", "--from", str(p.kit / "plan.md"), "--json")
        assert proc.returncode == 0, (shape, proc.stderr)
        first, second = [t["id"] for t in json.loads(proc.stdout)["tasks"]]
        nl = "\r\n" if shape == "crlf" else "\n"
        section = nl.join([f"# Plan: Shapes ({TODAY})", "", f"## {first}: One", "files: a.py", "", "Do it.", "",
                           f"## {second}: Two", f"depends: {first}", ""]).encode()
        assert undated(todo.read_bytes()) == (before or b"") + between + section, shape


def test_a_todo_that_ends_inside_a_code_fence_is_refused_unchanged(kit):
    p = planning(kit, None, steps=[["exit", 1]])
    (p.kit / "plan.md").write_text("## NEW-1: One\n")
    todo = p.root / "TODO.md"
    todo.write_bytes(b"# TODO\n\n```\nan example never closed\n")
    proc = plan(p.root, "Hidden", "--from", str(p.kit / "plan.md"))
    assert proc.returncode == 2 and "an unclosed code fence or HTML block above would hide them" in proc.stderr, \
        proc.stderr
    assert todo.read_bytes() == b"# TODO\n\n```\nan example never closed\n"


def test_ctrl_c_stops_the_planner_and_records_it_cancelled(kit):
    p = planning(kit, steps=[["hang"]], tasks="")
    proc = subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(p.root), "plan", "Greet people"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 30
    while not p.events("start") and time.monotonic() < deadline:
        time.sleep(0.05)
    [start] = p.events("start")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "the planner was stopped" in err, err
    [run] = planner_runs(p.root)
    assert run.outcome == "cancelled" and run.ended is not None
    assert not Path(f"/proc/{start['pid']}").exists() or b"zombie" in Path(f"/proc/{start['pid']}/status").read_bytes()
    assert not paths.plan_checkout(p.root).exists() and git(p.root, "worktree", "list").count("\n") == 1


def test_an_answer_too_long_to_read_whole_is_refused(kit):
    p = planning(kit, "## NEW-1: Long\n\n" + "word " * 14000)
    before = outside_state(p.root)
    proc = plan(p.root, "Long")
    assert proc.returncode == 2 and "the planner's answer is over the 64 KiB" in proc.stderr, proc.stderr
    assert outside_state(p.root) == before


def test_the_repositorys_planner_template_wins_and_a_bad_one_stops_before_the_planner(kit):
    p = planning(kit)
    template = p.root / "prompts" / "planner.md"
    template.write_text("Plan {{ feature }} for {{ main_branch }}; answer in {{ report_file }}.\n{{ board }}\n")
    assert plan(p.root, "Greet people", "--dry-run").returncode == 0
    prompt = (paths.plan_run_dir(p.root, 1) / "prompt.md").read_text()
    report = paths.plan_checkout(p.root) / ".kanban-run" / "report.md"
    assert prompt.startswith(f"Plan Greet people for main; answer in {report}.\nWaiting in TODO.md (1):\n"), prompt

    template.write_text("Plan {{ feature }} with {{ nonsense }}.\n")
    proc = plan(p.root, "Greet people", "--dry-run")
    assert proc.returncode == 2 and "prompts/planner.md:1: unknown placeholder {{ nonsense }}" in proc.stderr, \
        proc.stderr
    assert len(planner_runs(p.root)) == 1 and len(p.events("start")) == 1  # no second planner started
    assert not paths.plan_checkout(p.root).exists()
