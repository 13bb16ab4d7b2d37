"""`kanban run` end to end with the real claude and codex CLIs and their presets.

The project is configured as a person would: `[agent] preset = "claude"` (or "codex"), the
CLI's key and endpoint in the environment (ANTHROPIC_API_KEY + ANTHROPIC_BASE_URL, both on the
default [env] allowlist; CODEX_API_KEY + `extra_args = ["-c", "openai_base_url=..."]`), a
`[test] command`, and `[env] extend_allow` for a marker variable every agent then carries.
The model is a scripted server of tests/model_servers.py on 127.0.0.1 that decides each reply
from the request alone: the role, the task and the attempt are in the prompt kanban wrote
("You are the reviewer for TASK-1 ... This is review attempt 2."), and so is the report path.
The scripted model works through the CLI's own shell tool (claude's Bash, codex's exec).

    1-3  one `kanban run` of two tasks: TASK-1's first review rejects it, the second prompt of
         its task agent holds the review, the second review approves; TASK-2's test command
         fails until fixed.txt exists, its tester gets the failing output, commits the file,
         the command passes. Both merge, exit 0.
    4    no key (a role of its own, a key that does not count, claude as root without
         IS_SANDBOX=1): `kanban run` (the real entry point) exits 2 with one line naming the
         role and the fix, before anything moves; no run is recorded.
    5    a model API that is down or hangs: each attempt fails well within two minutes
         (claude gives up by itself: the person's CLAUDE_CODE_MAX_RETRIES / API_TIMEOUT_MS win
         over the preset's; codex is stopped by the supervisor's retry_limit when down, its
         stall watchdog when hung), is retried once, then escalated; exit 1; no process
         carrying the marker is left.

Run time on 2 cores (-n 2): 50-60 s for the whole file on a quiet machine, 80-105 s beside
other test runs; codex's dead-API runs (~25 s each) and claude's happy path (12-30 s) the longest.

A CLI that is not installed skips its tests (tests/clis.py says where they are looked for).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_kit import BOARD_FILES, ESCALATED, carrying, run_kanban

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents_kit import Project, task_md
from clis import require_cli
from conftest import git, run_cli, snapshot
from model_servers import (
    Context,
    ScriptedAnthropic,
    ScriptedResponses,
    quote,
    run,
    say,
    write_file,
)

from kanban.sandbox import available as sandbox_available

pytestmark = pytest.mark.cli  # real agent CLIs: run with -m cli (.ci/run does)

SERVERS = {"claude": ScriptedAnthropic, "codex": ScriptedResponses}
MARKER_VAR = "KANBAN_E2E_CLI_MARKER"  # allowed through [env] extend_allow: every agent carries it
# Variables that would give a CLI a key, another endpoint or another home: none from outside.
FOREIGN = ("ANTHROPIC_", "CLAUDE_", "CODEX_", "OPENAI_", "IS_SANDBOX", "API_TIMEOUT_MS")
# What a person sets to make claude give up on a dead API sooner (the preset's 5 retries and
# 20 s per attempt would take ~19 s down and ~139 s hung). Both pass the default [env].
CLAUDE_FAST = {"CLAUDE_CODE_MAX_RETRIES": "1", "API_TIMEOUT_MS": "2000"}

# The test command: beta.txt (TASK-2's) needs fixed.txt, which only TASK-2's tester adds.
CHECK = textwrap.dedent("""\
    import pathlib, sys
    if pathlib.Path("beta.txt").exists() and not pathlib.Path("fixed.txt").exists():
        print("FAILED test_beta: fixed.txt is missing")
        sys.exit(1)
    print("PASSED test_beta")
""")


# --- the environment ------------------------------------------------------------------------------


class CliEnv:
    """One CLI's environment for kanban: PATH, sealed TMPDIR, a marker, the key and endpoint."""

    def __init__(self, name: str, path: str, monkeypatch, tmp_path: Path) -> None:
        self.name, self.path, self.monkeypatch, self.tmp_path = name, path, monkeypatch, tmp_path
        self.marker = f"e2e-{name}-{uuid.uuid4().hex}"
        for var in [v for v in os.environ if v.startswith(FOREIGN)]:
            monkeypatch.delenv(var)
        monkeypatch.setenv("PATH", str(Path(path).parent) + os.pathsep + os.environ.get("PATH", ""))
        tmpdir = tmp_path / "tmp"  # claude keeps $TMPDIR/claude-<uid>/<cwd>/...
        tmpdir.mkdir(exist_ok=True)
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        monkeypatch.setenv(MARKER_VAR, self.marker)
        if name == "claude" and os.geteuid() == 0:
            monkeypatch.setenv("IS_SANDBOX", "1")

    def give_key(self, server) -> None:
        if self.name == "claude":
            self.monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-scripted")
            self.monkeypatch.setenv("ANTHROPIC_BASE_URL", server.origin)  # claude adds /v1
        else:
            self.monkeypatch.setenv("CODEX_API_KEY", "sk-scripted")

    def extra_args(self, base_url: str) -> list[str]:
        return ["-c", f'openai_base_url="{base_url}"'] if self.name == "codex" else []

    def watch(self) -> Watch:
        return Watch(f"{MARKER_VAR}={self.marker}", self.tmp_path)

    def leftovers(self, wait: float = 10.0) -> list[str]:
        """Live processes carrying our marker in their environment (after up to WAIT seconds)."""
        deadline = time.monotonic() + wait
        while True:
            found = carrying(f"{MARKER_VAR}={self.marker}", self.tmp_path)
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


class Watch(threading.Thread):
    """While in use, every command line that carried ENTRY in its environment (sampled twice a
    second): proof that the leftover scan would see the agents' processes."""

    def __init__(self, entry: str, under: Path) -> None:
        super().__init__(daemon=True)
        self.entry, self.under, self.seen, self.done = entry, under, set(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.seen.update(line.split(": ", 1)[1] for line in carrying(self.entry, self.under))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(timeout=5)

    def saw(self, program: str) -> bool:
        return any(Path(part).name == program for cmd in self.seen for part in cmd.split()[:2])


@pytest.fixture(params=["claude", "codex"])
def cli(request, monkeypatch, tmp_path) -> CliEnv:
    return CliEnv(request.param, require_cli(request.param), monkeypatch, tmp_path)


@pytest.fixture
def projects(tmp_path):
    """make(...) -> Project; at teardown every process a run of it started is killed."""
    made: list[Project] = []

    def make(repo: Path, tasks: str, **options) -> Project:
        project = make_cli_project(repo, tmp_path / f"kit{len(made)}", tasks, **options)
        made.append(project)
        return project

    yield make
    for project in made:
        project.kill_everything()


def make_cli_project(repo: Path, kit: Path, tasks: str, *, preset: str, extra_args: list[str],
                     test_command: list[str] | None = None, other_files: dict[str, str] | None = None,
                     timeout: str = "90s", stall: str = "60s", retry_limit: str = "15s",
                     roles_toml: str = "", sandbox: str = "none") -> Project:
    """The `repo` fixture made a kanban project run by PRESET: config, board, prompts, committed."""
    from kanban.commands.init import init

    kit.mkdir(parents=True, exist_ok=True)
    toml = textwrap.dedent(f"""\
        main_branch = "main"

        [agent]
        preset = "{preset}"
        extra_args = {json.dumps(extra_args)}
        timeout = "{timeout}"
        stall = "{stall}"
        kill_grace = "2s"
        retry_limit = "{retry_limit}"
        sandbox = "{sandbox}"
        """) + roles_toml + textwrap.dedent(f"""
        [env]
        extend_allow = ["{MARKER_VAR}"]
        """)  # fmt: skip
    if test_command:
        toml += f'\n[test]\ncommand = {json.dumps(test_command)}\ntimeout = "60s"\n'
    (repo / "kanban.toml").write_text(toml)
    (repo / "TODO.md").write_text(f"# TODO\n\nTasks for {preset}.\n\n" + tasks)
    for name, text in (other_files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    init(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "kanban project")
    return Project(repo, kit, f"never-in-a-cmdline-{uuid.uuid4().hex}")


def run_path(root: Path, task: str, role: str, attempt: int) -> Path:
    return root / ".kanban" / "runs" / task / f"{role}-{attempt}"


def agent_log(root: Path, task: str, role: str, attempt: int) -> str:
    path = run_path(root, task, role, attempt) / "agent.log"
    return path.read_text(errors="replace") if path.exists() else "(no log)"


def prompt_of(root: Path, task: str, role: str, attempt: int) -> str:
    return (run_path(root, task, role, attempt) / "prompt.md").read_text()


def describe_runs(root: Path, runs) -> str:
    return "\n".join(f"--- {r.task} {r.role}-{r.attempt}: {r.outcome} {r.reason!r}\n"
                     + agent_log(root, r.task, r.role, r.attempt)[-2500:]
                     for r in runs if r.role != "test")  # fmt: skip


# --- the scripted model -----------------------------------------------------------------------------

ROLE_RE = re.compile(r"You are the (task agent|reviewer|tester) for ([A-Za-z][A-Za-z0-9_-]*-\d+)")
ATTEMPT_RE = re.compile(r"This is (?:review\s+|test\s+)?attempt\s+(\d+)\.")


class Model:
    """Answers each conversation from its prompt: (task, role, attempt) -> a shell command to run
    in the first turn (given the report path the prompt names), then a closing sentence.
    Records every prompt and report path seen per key, and anything it was not scripted for."""

    def __init__(self, work: dict[tuple[str, str, int], Callable[[str], str]]) -> None:
        self.work = work
        self.seen: dict[tuple[str, str, int], list[str]] = {}
        self.reports: dict[tuple[str, str, int], str | None] = {}
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, ctx: Context):
        found = ROLE_RE.search(ctx.prompt)
        attempt = ATTEMPT_RE.search(ctx.prompt, found.end()) if found else None
        if not found or not attempt:
            with self.lock:
                self.unexpected.append(ctx.prompt[-500:])
            return say("Nothing to do.")
        key = (found.group(2), found.group(1), int(attempt.group(1)))
        with self.lock:
            self.seen.setdefault(key, []).append(ctx.prompt)
            self.reports[key] = ctx.report_file
            if key not in self.work:
                self.unexpected.append(f"{key}: {ctx.prompt[found.start():found.start() + 300]}")
                return say("Nothing to do.")
        if ctx.turn == 0:
            if not ctx.report_file:
                with self.lock:
                    self.unexpected.append(f"{key}: no report path in the prompt")
                return say("I cannot find the report file.")
            return run(self.work[key](ctx.report_file))
        return say(f"Done: {key[1]} {key[2]} for {key[0]}.")


def edit(path: str, content: str, report: str) -> Callable[[str], str]:
    """A task agent's or tester's work: write PATH, commit it, write the report (and, first, the
    marker variable as the agent's shell sees it)."""
    def command(report_file: str) -> str:
        return " && ".join([write_file(path, content), f"git add {quote(path)}",
                            f"git commit -q -m {quote('feat: ' + path)}",
                            f"printenv {MARKER_VAR} > {quote(report_file)}",
                            f"printf %s {quote(report)} >> {quote(report_file)}"])
    return command


def review(report: str) -> Callable[[str], str]:
    return lambda report_file: write_file(report_file, report)


# --- 1, 2, 3: two tasks to main, a rejected review, a failing test command -----------------------

ALPHA_1, ALPHA_2, BETA = "alpha, first try\n", "alpha, as the review asked.\n", "beta\n"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sandbox", ["none", pytest.param("bwrap", marks=pytest.mark.skipif(
    not sandbox_available()[0],
    reason=f"bubblewrap cannot run here (apt-get install bubblewrap): {sandbox_available()[1]}"))])
def test_two_tasks_through_a_rejected_review_and_a_failing_test_command_reach_main(
        repo, cli, projects, capsys, sandbox):
    """With sandbox = "bwrap" too: every agent and the test command in bubblewrap, the CLI's own
    state in its folders (kanban.presets: claude's ~/.claude, codex's ~/.codex), committing
    through the sandbox's private objects and branch."""
    reason = f"REVIEW-REASON-{uuid.uuid4().hex[:8]}: alpha.txt must say 'as the review asked'."
    model = Model({
        ("TASK-1", "task agent", 1): edit("alpha.txt", ALPHA_1, "Created alpha.txt.\n"),
        ("TASK-1", "reviewer", 1): review(f"{reason}\n\nverdict: reject\n"),
        ("TASK-1", "task agent", 2): edit("alpha.txt", ALPHA_2, "Reworded alpha.txt as asked.\n"),
        ("TASK-1", "reviewer", 2): review("Now it says so.\n\nverdict: approve\n"),
        ("TASK-2", "task agent", 1): edit("beta.txt", BETA, "Created beta.txt.\n"),
        ("TASK-2", "reviewer", 1): review("Fine.\n\nverdict: approve\n"),
        ("TASK-2", "tester", 1): edit("fixed.txt", "fixed\n",
                                      "test_beta needed fixed.txt; created it.\n\nverdict: pass\n"),
    })
    tasks = (task_md("TASK-1", "Add alpha.txt", files="alpha.txt", body="Create alpha.txt.")
             + task_md("TASK-2", "Add beta.txt", files="beta.txt", body="Create beta.txt."))
    with SERVERS[cli.name](model) as server:
        p = projects(repo, tasks, preset=cli.name, extra_args=cli.extra_args(server.base_url),
                     test_command=[sys.executable, "check.py"], other_files={"check.py": CHECK},
                     sandbox=sandbox)
        start = git(p.root, "rev-parse", "main").strip()
        cli.give_key(server)
        with cli.watch() as watch:
            code, out, took = run_kanban(p.root, capsys)
        errors = list(server.errors)
    runs = {task: p.runs(task) for task in ("TASK-1", "TASK-2")}
    every = runs["TASK-1"] + runs["TASK-2"]
    why = (f"took {took:.1f}s", out, p.describe(), [(r.task, r.role, r.attempt, r.outcome, r.reason)
                                                    for r in every], model.unexpected, errors,
           describe_runs(p.root, every))  # fmt: skip
    print(why)  # shown when the test fails

    # 1. both tasks are merged: off the board, in CHANGELOG.md, their edits on main
    assert code == 0, why
    assert p.where("TASK-1") is None and p.where("TASK-2") is None, why
    changelog = (p.root / "CHANGELOG.md").read_text()
    for task, title in (("TASK-1", "Add alpha.txt"), ("TASK-2", "Add beta.txt")):
        assert any(task in line and title in line for line in changelog.splitlines()), changelog
    assert git(p.root, "show", "main:alpha.txt") == ALPHA_2
    assert git(p.root, "show", "main:beta.txt") == BETA
    assert git(p.root, "show", "main:fixed.txt") == "fixed\n"
    subjects = git(p.root, "log", "main", "--format=%s").splitlines()
    assert "Merge TASK-1: Add alpha.txt" in subjects and "Merge TASK-2: Add beta.txt" in subjects, subjects
    assert ".kanban-run" not in git(p.root, "log", "--all", "--name-only", "--format=")
    touched = git(p.root, "log", "--name-only", "--format=", f"{start}..main").split()
    assert set(touched) == {"alpha.txt", "beta.txt", "fixed.txt"}, touched

    # 2. TASK-1: the first review rejects and sends it back; the second prompt holds the reason
    assert [(r.role, r.attempt) for r in runs["TASK-1"]] == [
        ("task", 1), ("reviewer", 1), ("task", 2), ("reviewer", 2), ("test", 1)], why
    assert [r.outcome for r in runs["TASK-1"]] == ["ok", "failed", "ok", "ok", "ok"], why
    assert "verdict: reject" in (runs["TASK-1"][1].reason or ""), why
    assert reason in (run_path(p.root, "TASK-1", "reviewer", 1) / "report.md").read_text()
    second = prompt_of(p.root, "TASK-1", "task", 2)
    assert reason in second and "verdict: reject" in second, second
    assert any(reason in text for text in model.seen[("TASK-1", "task agent", 2)])  # it reached the model
    moves = [(kind, source, target) for _, _, kind, source, target, _ in p.history_events("TASK-1")]
    assert ("review_rejected", "REVIEW", "IN_PROGRESS") in moves, moves

    # 3. TASK-2: the test command fails first; the tester gets its output, fixes; it passes
    assert [(r.role, r.attempt) for r in runs["TASK-2"]] == [
        ("task", 1), ("reviewer", 1), ("test", 1), ("tester", 1), ("test", 2)], why
    assert [r.outcome for r in runs["TASK-2"]] == ["ok", "ok", "failed", "ok", "ok"], why
    assert "FAILED test_beta" in (run_path(p.root, "TASK-2", "test", 1) / "test.log").read_text()
    assert "PASSED test_beta" in (run_path(p.root, "TASK-2", "test", 2) / "test.log").read_text()
    tester_prompt = prompt_of(p.root, "TASK-2", "tester", 1)
    assert "FAILED test_beta: fixed.txt is missing" in tester_prompt, tester_prompt
    assert "check.py" in tester_prompt
    assert any("FAILED test_beta: fixed.txt is missing" in t for t in model.seen[("TASK-2", "tester", 1)])

    # every agent was the real CLI, through the preset, and wrote the report the prompt named
    started = '{"type":"system","subtype":"init"' if cli.name == "claude" else '{"type":"thread.started"'
    for r in every:
        if r.role == "test":
            continue
        log = agent_log(p.root, r.task, r.role, r.attempt)
        assert started in log, log
        assert (r.tokens or 0) > 0, (r, log[-2000:])  # its usage reached the history
        if cli.name == "claude":
            assert r.cost_usd is not None, r  # claude's own dollar figure
    for (task, _, _), report in model.reports.items():
        assert report == str(p.root / ".worktrees" / task / ".kanban-run" / "report.md"), model.reports
    assert set(model.seen) == set(model.work), (sorted(model.seen), model.unexpected)
    assert model.unexpected == [] and errors == [], why
    # the marker of [env] extend_allow reached the agents' shells, and the CLIs' processes
    for task in ("TASK-1", "TASK-2"):
        report = (run_path(p.root, task, "task", 1) / "report.md").read_text()
        assert report.startswith(cli.marker + "\n"), report
    assert watch.saw(cli.name), watch.seen
    assert cli.leftovers() == []
    if sandbox == "bwrap":  # each agent and test run was bwrap; nothing of their sandboxes is left
        for r in every:
            spec = json.loads((run_path(p.root, r.task, r.role, r.attempt) / "spec.json").read_text())
            assert Path(spec["argv"][0]).name == "bwrap" and spec["sandbox"]["mode"] == "bwrap", spec["argv"][:3]
            assert not (p.root / ".kanban" / "sandbox" / r.task / f"{r.role}-{r.attempt}").exists()
        subprocess.run(["git", "fsck", "--no-dangling"], cwd=p.root, check=True, capture_output=True)


# --- 4: no credentials -------------------------------------------------------------------------------


REVIEWER_ONLY = '[agent.task]\npreset = "demo"\n[agent.tester]\npreset = "demo"\n'


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["no key", "reviewer only", "decoy"])
def test_no_credentials_is_exit_2_naming_the_role_and_nothing_moves(repo, cli, projects, monkeypatch, case):
    """"no key": every role runs the CLI; "reviewer only": the others run the demo agent, so the
    line names [agent.reviewer]; "decoy": what does not count, claude's key as root without
    IS_SANDBOX=1, codex's OPENAI_API_KEY (codex exec ignores it)."""
    where = "[agent.reviewer] cannot start:" if case != "no key" else "[agent] cannot start:"
    fix = {"claude": "ANTHROPIC_API_KEY", "codex": "CODEX_API_KEY"}[cli.name]
    if case == "decoy":
        if cli.name == "claude":
            if os.geteuid() != 0:
                pytest.skip("only claude run as root needs IS_SANDBOX=1")
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-scripted")
            monkeypatch.delenv("IS_SANDBOX")
            fix = "IS_SANDBOX=1"
        else:
            monkeypatch.setenv("OPENAI_API_KEY", "sk-scripted")
    # an endpoint is no credential (nothing listens there: nothing may be asked anyway)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    p = projects(repo, task_md("TASK-1"), preset=cli.name, extra_args=cli.extra_args("http://127.0.0.1:9/v1"),
                 roles_toml="" if case == "no key" else REVIEWER_ONLY)
    before = snapshot(p.root)
    boards = {name: (p.root / name).read_bytes() for name in BOARD_FILES}
    for command in ("run", "tick") if case == "no key" else ("run",):
        proc = run_cli(p.root, command)
        assert proc.returncode == 2, (command, proc.returncode, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and where in lines[0] and cli.name in lines[0], proc.stderr
        assert fix in lines[0], proc.stderr  # the fix is named
        assert proc.stdout == "", proc.stdout
        assert {name: (p.root / name).read_bytes() for name in BOARD_FILES} == boards
        assert snapshot(p.root) == before
    assert not (p.root / ".kanban" / "runs").exists()
    if (p.root / ".kanban" / "history.sqlite").exists():
        assert p.runs() == [] and p.history_events() == [], p.history_events()
    assert git(p.root, "worktree", "list").count("\n") == 1  # no task worktree was made
    assert git(p.root, "branch", "--list", "kanban/*") == ""
    assert cli.leftovers(wait=0) == []


# --- 5: a dead model API -------------------------------------------------------------------------------

# The watchdogs: retry_limit 10 s, and a stall of 25 s (12 s for a hung codex). claude ends by
# itself first (~6 s an attempt with CLAUDE_FAST). codex, down, prints Reconnecting... lines from
# its start (no progress), so retry_limit stops it (it would exit by itself after ~31 s); hung,
# it prints nothing after turn.started for 15 s (its first WebSocket connect times out), so only
# the stall watchdog ends it, set below 15 s to leave retry_limit out of that race.
DEAD_TASK = task_md("TASK-1", "Add hello.txt", body="Create hello.txt saying hello.")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["down", "hang"])
def test_a_dead_model_api_fails_each_attempt_fast_retries_once_then_escalates(
        repo, cli, projects, monkeypatch, capsys, mode):
    if cli.name == "claude":  # the person's own values win over the preset's
        for name, value in CLAUDE_FAST.items():
            monkeypatch.setenv(name, value)
    with SERVERS[cli.name]([say("unused")], mode=mode) as server:
        p = projects(repo, DEAD_TASK, preset=cli.name, extra_args=cli.extra_args(server.base_url),
                     retry_limit="10s", timeout="100s",
                     stall="12s" if (cli.name, mode) == ("codex", "hang") else "25s")
        cli.give_key(server)
        with cli.watch() as watch:
            code, out, took = run_kanban(p.root, capsys)
        requests, hung = len(server.requests), server.hung
    runs = p.runs("TASK-1")
    why = (f"took {took:.1f}s, {requests} requests, {hung} hung", out, p.describe(),
           [(r.role, r.attempt, r.outcome, r.reason, r.exit_code, r.stalled, r.timed_out,
             r.ended and round(r.ended - r.started, 1)) for r in runs], describe_runs(p.root, runs))
    print(why)

    assert code == 1, why
    assert p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None), why
    assert [(r.role, r.attempt) for r in runs] == [("task", 1), ("task", 2)], why  # retried once
    for r in runs:
        assert r.outcome == "failed" and not r.timed_out, why
        assert r.ended is not None and r.ended - r.started < 60, why  # well under two minutes
        log = agent_log(p.root, r.task, r.role, r.attempt)
        if cli.name == "claude":  # claude gave up by itself, within its (shortened) retries
            assert r.exit_code not in (None, 0) and not r.stalled, why
            assert '"is_error":true' in log, log
            # CLAUDE_CODE_MAX_RETRIES=1 from the person's environment, not the preset's 5
            assert log.count('"subtype":"api_retry"') == 1, log
            assert "(claude said: " in p.entry_text("TASK-1"), p.entry_text("TASK-1")  # its own words
        elif mode == "down":  # codex retries for ~31 s: the supervisor's retry_limit stops it
            assert r.stalled and (r.reason or "").startswith("gave up"), why
            assert "Reconnecting..." in log, log
        else:  # a POST never answered: codex waits forever, silent; the stall watchdog stops it
            assert r.stalled and (r.reason or "").startswith("stalled"), why
    assert requests >= 2 if mode == "hang" else requests == 0, why
    assert git(p.root, "rev-list", "--count", "main..kanban/TASK-1").strip() == "0"
    assert watch.saw(cli.name), watch.seen  # the scan below does see the CLI's processes
    assert cli.leftovers() == [], why


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_with_the_defaults_a_hung_api_fails_each_attempt_within_two_minutes(repo, cli, projects, capsys):
    """No knob of the person's, kanban's defaults (stall 5m, retry_limit 60s, timeout 15m)."""
    with SERVERS[cli.name]([say("unused")], mode="hang") as server:
        p = projects(repo, DEAD_TASK, preset=cli.name, extra_args=cli.extra_args(server.base_url),
                     retry_limit="60s", timeout="15m", stall="5m")
        cli.give_key(server)
        code, out, took = run_kanban(p.root, capsys)
    runs = p.runs("TASK-1")
    durations = [round(r.ended - r.started, 1) for r in runs if r.ended]
    print(cli.name, "attempts took", durations, "s; run", round(took, 1), "s")
    assert code == 1 and [(r.role, r.attempt) for r in runs] == [("task", 1), ("task", 2)], (out, runs)
    assert all(d < 120 for d in durations) and len(durations) == 2, durations
    assert cli.leftovers() == []


# --- budgets -----------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_budget_of_a_few_cents_stops_new_starts_with_a_note_and_a_status_line(repo, cli, projects, capsys):
    # claude prices its own turns; codex reports tokens, priced by kanban's table for the model set.
    model = Model({
        ("TASK-1", "task agent", 1): edit("alpha.txt", ALPHA_1, "Created alpha.txt.\n"),
        ("TASK-1", "reviewer", 1): review("Fine.\n\nverdict: approve\n"),
    })
    limit = "$0.01"  # one scripted turn costs more (claude about $0.02, codex about $0.015)
    with SERVERS[cli.name](model) as server:
        roles = "" if cli.name == "claude" else 'model = "gpt-5"\n'
        p = projects(repo, task_md("TASK-1", "Add alpha.txt", files="alpha.txt", body="Create alpha.txt."),
                     preset=cli.name, extra_args=cli.extra_args(server.base_url),
                     roles_toml=roles + f'\n[budget]\ntask = "{limit}"\n')
        cli.give_key(server)
        code, out, _ = run_kanban(p.root, capsys)
    runs = p.runs("TASK-1")
    assert code == 1, out + describe_runs(p.root, runs)
    assert [r.role for r in runs] == ["task"], describe_runs(p.root, runs)
    assert runs[0].cost_usd and runs[0].cost_usd > 0, runs[0]
    assert p.where("TASK-1") == ("REVIEW", ESCALATED, None)
    note = p.entry_text("TASK-1")
    assert "budget" in note and limit in note, note
    status = run_cli(p.root, "status", check_code=0).stdout
    assert "budget" in status.lower(), status
    assert not model.unexpected, model.unexpected


# --- kanban plan: the planner is the real CLI ----------------------------------------------------------

PLAN_ANSWER = """## NEW-1: Add hello.txt
priority: 2
files: hello.txt

Create hello.txt saying hello.

## NEW-2: Add bye.txt
depends: NEW-1, TASK-1
files: bye.txt

Create bye.txt saying goodbye.
"""


@pytest.mark.timeout(180)
def test_kanban_plan_with_the_real_cli_appends_the_planners_tasks_to_todo(repo, cli, projects):
    """The planner preset's CLI against the scripted model: the model writes the plan to the report
    file its prompt names, through the CLI's own shell tool; `kanban plan` (the real entry point)
    numbers it after the board's IDs, appends it to TODO.md, records the run's tokens and cost."""
    prompts, unexpected = [], []

    def model(ctx: Context):
        if "You are the planner for this repository" not in ctx.prompt:
            unexpected.append(ctx.prompt[-300:])
            return say("Nothing to do.")
        prompts.append(ctx.prompt)
        if ctx.turn == 0:
            return run(write_file(ctx.report_file, PLAN_ANSWER)) if ctx.report_file else say("No report file.")
        return say("Planned two tasks.")

    with SERVERS[cli.name](model) as server:
        p = projects(repo, task_md("TASK-1", "Existing work", files="x.txt"), preset=cli.name,
                     extra_args=cli.extra_args(server.base_url))
        cli.give_key(server)
        todo = (p.root / "TODO.md").read_bytes()
        main = git(p.root, "rev-parse", "main")
        with cli.watch() as watch:
            proc = run_cli(p.root, "plan", "Say hello and goodbye")
        errors = list(server.errors)
    [run_row] = [r for r in p.runs() if r.role == "planner"]
    why = (proc.returncode, proc.stdout, proc.stderr, unexpected, errors, run_row,
           agent_log(p.root, "plan", "planner", 1)[-2500:])
    assert proc.returncode == 0, why
    day = time.strftime("%Y-%m-%d")
    assert (p.root / "TODO.md").read_bytes() == todo + (
        f"# Plan: Say hello and goodbye ({day})\n\n"
        "## TASK-2: Add hello.txt\npriority: 2\nfiles: hello.txt\n\nCreate hello.txt saying hello.\n\n"
        "## TASK-3: Add bye.txt\ndepends: TASK-2, TASK-1\nfiles: bye.txt\n\nCreate bye.txt saying goodbye.\n"
    ).encode(), why
    assert "TASK-2, TASK-3" in proc.stdout, proc.stdout
    # the prompt gave the feature, the board as it stands and the report path in the checkout
    assert prompts and "Say hello and goodbye" in prompts[0] and "TASK-1: Existing work" in prompts[0]
    assert f"{p.root}/.kanban/plan/.kanban-run/report.md" in prompts[0]
    assert (run_row.task, run_row.outcome, run_row.reason) == ("plan", "ok", None), why
    assert (run_row.tokens or 0) > 0, why  # its usage reached the history
    if cli.name == "claude":
        assert run_row.cost_usd is not None, why
    report = run_cli(p.root, "report", check_code=0).stdout
    assert "| planner | 1 |" in report, report
    # nothing started, main and the checkout as they were, no process left
    assert p.column("TASK-2") == "TODO" and git(p.root, "rev-parse", "main") == main
    assert git(p.root, "worktree", "list").count("\n") == 1
    assert unexpected == [] and errors == [], why
    assert watch.saw(cli.name), watch.seen
    assert cli.leftovers() == []
