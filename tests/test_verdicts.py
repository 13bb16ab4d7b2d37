"""Verdicts from what agents write, the test stage kanban runs itself, and starts that cannot fail.

Real git, real supervised subprocesses: the scripted agent of agents_kit.py
(a custom `command`, so its exit status may answer) and the built-in demo
agent (a preset, so only its written verdict counts).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from agents_kit import Project, task_md
from conftest import git, run_cli, snapshot

from kanban import config as kconfig
from kanban.commands.run import run as run_loop
from kanban.verdict import read_verdict

RETRY = frozenset({"RETRY"})
ESCALATED = frozenset({"ESCALATED"})
READY = ("TESTING", frozenset(), "ready to merge")

pytestmark = pytest.mark.timeout(90)


# --- the format ------------------------------------------------------------------------


@pytest.mark.parametrize("text, role, expected", [
    ("All good.\nverdict: approve\n", "reviewer", ("approve", True)),
    ("**Verdict:** `Reject`\n", "reviewer", ("reject", False)),
    ("verdict: reject\n...\nverdict: approve", "reviewer", ("approve", True)),  # the last line counts
    ("> verdict: pass", "tester", ("pass", True)),
    ("verdict: fail", "tester", ("fail", False)),
    ("verdict: fail", "task", ("fail", False)),
    ("verdict: maybe", "reviewer", ("maybe", None)),
    ("verdict: pass", "reviewer", ("pass", None)),  # a tester's word from a reviewer is no verdict
])
def test_verdict_lines(text, role, expected):
    assert tuple(read_verdict(text, role)) == expected


@pytest.mark.parametrize("text", ["", "LGTM, approve!", "the verdict is approve", "verdicts: approve"])
def test_no_verdict_line(text):
    assert read_verdict(text, "reviewer") is None


# --- reviewers --------------------------------------------------------------------------


def test_a_written_reject_sends_the_task_back_with_the_review_and_a_second_one_escalates(kit):
    p = kit(task_md("TASK-1"), rules=[
        {"role": "reviewer", "steps": [["report", "Needs a test for the empty input.\nverdict: reject"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="a rejection")
    review = [r for r in p.runs("TASK-1") if r.role == "reviewer"][0]
    assert (review.exit_code, review.outcome) == (0, "failed")  # exit 0, but it rejected
    p.drive(lambda: p.where("TASK-1") == ("REVIEW", ESCALATED, None), what="the second rejection escalating")
    second = p.prompt("TASK-1", "task", 2)
    assert "Needs a test for the empty input." in second and "verdict: reject" in second
    assert "its report says 'verdict: reject'" in p.entry_text("TASK-1")


def test_a_written_verdict_wins_over_the_exit_status(kit):
    p = kit(task_md("TASK-1"), rules=[
        {"role": "reviewer", "steps": [["report", "Fine.\nverdict: approve"], ["exit", 3]]},
        {"role": "tester", "steps": [["report", "verdict: pass"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == READY, what="ready to merge")


def test_a_custom_command_without_a_verdict_answers_with_its_exit_status(kit):
    p = kit(task_md("TASK-1"), rules=[{"role": "reviewer", "steps": [["report", "no verdict here"], ["exit", 1]]}])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="a rejection by exit status")
    assert "exit status 1" in p.entry_text("TASK-1")


def test_an_unknown_verdict_word_is_a_failure_that_names_it(kit):
    p = kit(task_md("TASK-1"), rules=[{"role": "reviewer", "steps": [["report", "verdict: looks-ok"]]}])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="a failed review")
    assert "verdict 'looks-ok' is not one of 'verdict: approve' or 'verdict: reject'" in p.entry_text("TASK-1")


def test_a_task_agent_that_writes_verdict_fail_has_failed_even_with_a_commit(kit):
    p = kit(task_md("TASK-1"), rules=[
        {"role": "task", "attempt": 1, "steps": [["commit"], ["report", "Could not finish.\nverdict: fail"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="a retry")
    assert "Could not finish." in p.prompt("TASK-1", "task", 2)


def test_a_preset_reviewer_without_a_verdict_has_failed(kit):
    p = kit(task_md("TASK-1", body="demo: no-verdict\ndemo: sleep 0.1"),
            extra_toml='[agent.reviewer]\npreset = "demo"\n')
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="no verdict counted as a failure")
    text = p.entry_text("TASK-1")
    assert "no verdict: its report has no 'verdict: approve' or 'verdict: reject' line" in text
    review = [r for r in p.runs("TASK-1") if r.role == "reviewer"][0]
    assert review.reason.startswith("no verdict") and review.exit_code == 0
    report = run_cli(p.root, "report", check_code=0).stdout
    assert "TASK-1 reviewer attempt 1: no verdict" in report  # not "exit 0"


def test_the_report_lives_in_the_worktree_ignored_by_git_and_is_never_committed(kit, repo):
    p = kit(task_md("TASK-1"), rules=[
        # `git add -A` is what a careless agent runs: the report must not go with it.
        {"role": "task", "steps": [["report", "did it"], ["write", "a.txt", "a"], ["commit"]]},
        {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
        {"role": "tester", "steps": [["report", "verdict: pass"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == READY, what="ready to merge")
    start = p.events("start")[0]
    worktree = Path(start["worktree"])
    assert start["report_file"] == str(worktree / ".kanban-run" / "report.md")
    assert git(worktree, "status", "--porcelain") == "?? a.txt\n"
    assert ".kanban-run" not in git(repo, "log", "--all", "--name-only", "--format=")
    # each report was moved to its run directory, and the worktree's copy removed
    assert (repo / ".kanban" / "runs" / "TASK-1" / "task-1" / "report.md").read_text() == "did it\n"
    assert (repo / ".kanban" / "runs" / "TASK-1" / "reviewer-1" / "report.md").read_text() == "verdict: approve\n"
    assert not (worktree / ".kanban-run" / "report.md").exists()


def test_a_fifo_or_a_link_in_place_of_the_report_neither_hangs_nor_leaks(kit, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE\n")
    p = kit(task_md("TASK-1") + task_md("TASK-2"), rules=[
        {"task": "TASK-1", "role": "task", "steps": [
            ["commit"], ["print", "making a fifo"],
        ]},
    ])
    # The agents replace their report by a FIFO (TASK-1) and a symlink to a secret (TASK-2).
    p.set_rules([
        {"task": "TASK-1", "role": "task", "steps": [["commit"], ["mkfifo_report"]]},
        {"task": "TASK-2", "role": "task", "steps": [["commit"], ["link_report", str(secret)]]},
    ])
    agent = p.kit / "agent.py"
    source = agent.read_text().replace('''    elif op == "crash":''', '''    elif op == "mkfifo_report":
        os.unlink(env["KANBAN_REPORT_FILE"]); os.mkfifo(env["KANBAN_REPORT_FILE"])
    elif op == "link_report":
        os.unlink(env["KANBAN_REPORT_FILE"]); os.symlink(args[0], env["KANBAN_REPORT_FILE"])
    elif op == "crash":''')
    agent.write_text(source)
    p.drive(lambda: p.where("TASK-1") == READY and p.where("TASK-2") == READY, what="both through")
    for task in ("TASK-1", "TASK-2"):
        assert "TOP-SECRET-VALUE" not in p.entry_text(task)
        assert "TOP-SECRET-VALUE" not in p.prompt(task, "reviewer", 1)


# --- the test stage ----------------------------------------------------------------------

CHECK = textwrap.dedent("""\
    import pathlib, sys
    print("checking with", sys.argv[1:])
    ok = pathlib.Path("fixed.txt").exists()
    print("PASSED" if ok else "FAILED test_thing: fixed.txt is missing")
    sys.exit(0 if ok else 1)
""")


def _test_stage(kit, rules, command='["{python}", "check.py", "{{tests}}"]', **options) -> Project:
    toml = f'[test]\ncommand = {command.format(python=sys.executable)}\ntimeout = "20s"\n'
    return kit(task_md("TASK-1", files="src/thing.py"), rules=rules, extra_toml=toml,
               other_files={"check.py": CHECK, "src/thing.py": "x = 1\n", "tests/test_thing.py": "pass\n"},
               **options)


def test_a_passing_test_command_makes_the_task_ready_without_a_tester(kit):
    p = _test_stage(kit, [
        {"role": "task", "steps": [["write", "fixed.txt", "ok"], ["write", "src/thing.py", "x = 2\n"],
                                   ["commit", "fixed.txt"]]},
        {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == READY, what="ready to merge")
    roles = [r.role for r in p.runs("TASK-1")]
    assert roles == ["task", "reviewer", "test"]  # no tester agent was spent
    assert "tests passed" in p.entry_text("TASK-1")


def test_a_failing_test_command_starts_the_tester_with_the_output_then_passes_after_its_fix(kit):
    p = _test_stage(kit, [
        {"role": "task", "steps": [["write", "src/thing.py", "x = 2\n"], ["commit", "src/thing.py"]]},
        {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
        # The tester says "fail", but only the command's exit status counts.
        {"role": "tester", "steps": [["write", "fixed.txt", "ok"], ["commit", "fixed.txt"],
                                     ["report", "fixed it\nverdict: fail"]]},
    ])
    p.drive(lambda: p.where("TASK-1") == READY, what="ready after the tester's fix")
    runs = p.runs("TASK-1")
    assert [r.role for r in runs] == ["task", "reviewer", "test", "tester", "test"]
    assert [r.outcome for r in runs if r.role == "test"] == ["failed", "ok"]
    prompt = p.prompt("TASK-1", "tester", 1)
    assert "FAILED test_thing: fixed.txt is missing" in prompt
    assert "check.py" in prompt
    # {tests}: the covering test of src/thing.py went to the command
    log = (p.root / ".kanban" / "runs" / "TASK-1" / "test-1" / "test.log").read_text()
    assert "checking with ['tests/test_thing.py']" in log


@pytest.mark.heavy
def test_tests_that_still_fail_after_the_tester_go_back_and_finally_escalate(kit):
    p = _test_stage(kit, [
        {"role": "task", "steps": [["write", "src/thing.py", "x = 2\n"], ["commit", "src/thing.py"]]},
        {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
        {"role": "tester", "steps": [["commit"], ["report", "verdict: pass"]]},  # claims pass, fixes nothing
    ])
    p.drive(lambda: p.where("TASK-1") == ("REVIEW", RETRY, None), timeout=60, what="back to REVIEW")
    roles = [r.role for r in p.runs("TASK-1")]
    assert roles == ["task", "reviewer", "test", "tester", "test", "tester", "test", "reviewer"][: len(roles)]
    p.drive(lambda: (p.where("TASK-1") or ("", frozenset(), None))[1] == ESCALATED, timeout=60,
            what="escalation")
    assert sum(1 for r in p.runs("TASK-1") if r.role == "test") <= 6  # bounded, never a loop


def test_the_fallback_runs_when_no_covering_test_is_found(kit):
    toml_command = f'["{sys.executable}", "check.py", "{{tests}}"]\nfallback = ["{sys.executable}", "check.py", "ALL"]'
    p = _test_stage(kit, [
        {"role": "task", "steps": [["write", "fixed.txt", "ok"], ["commit", "fixed.txt"]]},
        {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
    ], command=toml_command.replace("{", "{{").replace("}", "}}").replace("{{python}}", "{python}"))
    p.drive(lambda: p.where("TASK-1") == READY, what="ready")
    log = (p.root / ".kanban" / "runs" / "TASK-1" / "test-1" / "test.log").read_text()
    assert "checking with ['ALL']" in log


def test_test_config_argv():
    test = kconfig.TestConfig(command=("pytest", "-q", "{tests}"), fallback=())
    assert test.argv(["a.py", "b.py"]) == ["pytest", "-q", "a.py", "b.py"]
    assert test.argv([]) == ["pytest", "-q"]
    assert kconfig.TestConfig(command=("pytest", "{tests}"), fallback=("make", "test")).argv([]) == ["make", "test"]


@pytest.mark.parametrize("toml, message", [
    ('[test]\ncommand = "pytest"\n', "test.command must be a command"),
    ('[test]\nfallback = ["pytest"]\n', "test.fallback is set without a command"),
    ('[test]\ncommand = ["pytest", "--files={tests}"]\n', "has {tests} inside"),
    ('[test]\ncommand = ["pytest"]\nfallback = ["pytest", "{tests}"]\n', "test.fallback cannot use {tests}"),
    ('[test]\ncomand = ["pytest"]\n', 'did you mean "command"?'),
])
def test_bad_test_config_is_one_line_and_exit_2(repo, toml, message):
    (repo / "kanban.toml").write_text(toml)
    proc = run_cli(repo, "tick", check_code=2)
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "kanban.toml:" in proc.stderr


# --- starts that cannot succeed ---------------------------------------------------------


def _board(repo: Path, toml: str) -> dict:
    (repo / "kanban.toml").write_text(toml)
    (repo / "TODO.md").write_text("# TODO\n\n" + task_md("TASK-1"))
    run_cli(repo, "init", check_code=0)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    return snapshot(repo)


@pytest.mark.parametrize("toml, expected", [
    ('[agent]\ncommand = ["no-such-agent-xyz", "{prompt_file}"]\n',
     "[agent] cannot start: no-such-agent-xyz is not on the agents' PATH"),
    ('[agent]\npreset = "demo"\n[agent.reviewer]\ncommand = ["no-such-reviewer", "{prompt_file}"]\n',
     "[agent.reviewer] cannot start: no-such-reviewer is not on the agents' PATH"),
])
def test_a_missing_cli_is_exit_2_before_any_task_moves(repo, toml, expected):
    before = _board(repo, toml)
    for command in (["tick"], ["run"]):
        proc = run_cli(repo, *command, check_code=2)
        assert expected in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert snapshot(repo) == before  # the board is unchanged, no run was recorded
    assert not (repo / ".kanban" / "runs").exists()


def _fake_cli(tmp_path: Path, name: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    program = folder / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("preset, env, expected", [
    ("codex", {}, "codex has no credentials"),
    ("claude", {"ANTHROPIC_API_KEY": "k"}, "IS_SANDBOX=1" if os.geteuid() == 0 else None),
    ("claude", {}, "claude"),
])
def test_missing_credentials_are_exit_2_naming_the_role_and_the_fix(repo, tmp_path, monkeypatch, preset, env,
                                                                     expected):
    folder = _fake_cli(tmp_path, preset)
    monkeypatch.setenv("PATH", folder + os.pathsep + os.environ["PATH"])
    for name in ("ANTHROPIC_API_KEY", "CODEX_API_KEY", "IS_SANDBOX", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    extra = '\nextra_args = ["-c", "model=\\"o3\\"", "-p", "fast"]' if preset == "codex" else ""
    before = _board(repo, f'[agent]\npreset = "{preset}"{extra}\n')
    proc = run_cli(repo, "tick")
    if expected is None:  # not root: claude with a key can start
        return
    assert proc.returncode == 2, proc.stderr
    assert "[agent] cannot start:" in proc.stderr and expected in proc.stderr
    assert snapshot(repo) == before


def test_a_start_that_fails_keeps_run_going_until_the_retry_has_run(kit, tmp_path):
    flag = tmp_path / "setup-ran-once"
    setup = [sys.executable, "-c", f"import pathlib, sys; p = pathlib.Path({str(flag)!r}); "
             "first = not p.exists(); p.touch(); sys.exit(1 if first else 0)"]
    p = kit(task_md("TASK-1"), rules=[
        {"role": "reviewer", "steps": [["report", "verdict: approve"]]},
        {"role": "tester", "steps": [["report", "verdict: pass"]]},
    ], extra_toml=f"[worktree]\nsetup = {json.dumps(setup)}\n")
    code = run_loop(p.root, no_merge=False, live=False)
    assert code == 0
    assert p.where("TASK-1") is None  # merged
    assert "TASK-1" in (p.root / "CHANGELOG.md").read_text()


def test_run_exits_1_when_a_task_is_escalated(kit):
    p = kit(task_md("TASK-1"), rules=[{"role": "task", "steps": [["exit", 1]]}])
    assert run_loop(p.root, no_merge=False, live=False) == 1
    assert p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None)


def test_run_with_no_merge_exits_0_when_everything_is_ready(kit):
    p = kit(task_md("TASK-1"))
    assert run_loop(p.root, no_merge=True, live=False) == 0
    assert p.where("TASK-1") == READY


# --- budgets --------------------------------------------------------------------------------

FAKE_CLAUDE = r'''#!/usr/bin/env python3
# Plays claude -p --output-format stream-json: does its role's work, prints a costed result line.
import json, os, subprocess, sys
role = os.environ["KANBAN_ROLE"]
if role == "task":
    open("work.txt", "a").write("work\n")
    subprocess.run(["git", "add", "work.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)
else:
    open(os.environ["KANBAN_REPORT_FILE"], "w").write("verdict: " + ("approve" if role == "reviewer" else "pass"))
print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "total_cost_usd": 0.03,
                  "usage": {"input_tokens": 1000, "output_tokens": 100}}), flush=True)
'''


def test_a_budget_stops_new_starts_with_a_note_and_a_status_line(kit, tmp_path, monkeypatch):
    folder = tmp_path / "fakebin"
    folder.mkdir()
    (folder / "claude").write_text(FAKE_CLAUDE.replace("#!/usr/bin/env python3", f"#!{sys.executable}"))
    (folder / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("IS_SANDBOX", "1")
    roles = "".join(f'[agent.{role}]\npreset = "claude"\n' for role in ("task", "reviewer", "tester"))
    p = kit(task_md("TASK-1"), extra_toml=roles + '[budget]\ntask = "$0.05"\n')
    assert run_loop(p.root, no_merge=False, live=False) == 1
    # task agent $0.03, reviewer $0.03: the tester would start past $0.05
    assert [r.role for r in p.runs("TASK-1")] == ["task", "reviewer"]
    assert [r.cost_usd for r in p.runs("TASK-1")] == [0.03, 0.03]
    assert p.where("TASK-1") == ("TESTING", ESCALATED, None)
    assert "budget" in p.entry_text("TASK-1") and "$0.05" in p.entry_text("TASK-1")
    status = run_cli(p.root, "status", check_code=0).stdout
    assert "budget" in status.lower() and "$0.06" in status


def test_a_report_with_nul_bytes_escapes_and_a_huge_line_leaves_a_loadable_board(kit):
    hostile = "verdict: reject\nok\x00\x1b]0;pwned\x07\x1b[2J" + "y" * 100_000
    p = kit(task_md("TASK-1"), rules=[{"role": "reviewer", "steps": [["report", hostile]]}])
    p.drive(lambda: p.where("TASK-1") == ("IN_PROGRESS", RETRY, None), what="a rejection")
    text = (p.root / "IN_PROGRESS.md").read_bytes()
    assert b"\x00" not in text and b"\x1b" not in text and b"\x07" not in text
    assert len(text) < 20_000
    run_cli(p.root, "preflight")  # loads
    run_cli(p.root, "status", check_code=0)


def test_every_note_is_cleaned_where_it_is_written():
    # Whatever the source (an agent's report, a verify log, a file name from a branch), a note
    # never carries a control byte or an escape into a board file, and its size is bounded.
    from kanban.entry import NOTE_MAX_BYTES, _note_item

    lines = _note_item("merge conflict in evil\x00name\x1b[31m.txt\x07\n" + "z" * 50_000, "\n")
    text = "".join(lines)
    assert "\x00" not in text and "\x1b" not in text and "\x07" not in text
    assert "evilname.txt" in text and len(text.encode()) < NOTE_MAX_BYTES + 200
