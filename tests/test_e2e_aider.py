"""`kanban run` end to end with the real aider, the aider preset, and a scripted model.

The project is configured as a person would: `[agent] preset = "aider"`, a model,
OPENAI_API_KEY and OPENAI_API_BASE in the environment (both on the default [env]
allowlist), and `[test] command`. The scripted OpenAI-compatible server
(tests/openai_chat_server.py) plays the model for every role: it reads the role,
the task and the attempt from the prompt aider sends ("You are the reviewer for
TASK-1 ... This is review attempt 2.") and answers in aider's "whole" edit format
(a file name, then its whole content in a fence), which is also how it writes the
report, `.kanban-run/report.md`, that the preset puts in the chat with --file.

aider starts slowly (7-30 s), so the happy path is one `kanban run` of two tasks
that covers the review loop and the test stage together; the credentials check
runs no aider at all; the dead-API runs take two aider attempts each (the hung
server's are ~1 min each, so that one is marked slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from clis import require_cli
from e2e_kit import BOARD_FILES, ESCALATED, carrying, is_supervisor, run_kanban

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agents_kit import Project, task_md
from conftest import git, run_cli, snapshot
from openai_chat_server import ScriptedOpenAI, is_commit_message_request, request_text

from kanban.sandbox import available as sandbox_available

pytestmark = pytest.mark.cli  # real agent CLIs: run with -m cli (.ci/run does)

MODEL = "openai/gpt-4o-mini"  # "openai/" + a name: litellm's OpenAI-compatible route
MARKER_VAR = "KANBAN_E2E_AIDER_MARKER"  # allowed through [env] extend_allow: every agent carries it
COMMIT_MESSAGE = "feat: scripted change"

# The test command: the tests of beta.txt need fixed.txt (only TASK-2 adds beta.txt, and only
# its tester adds fixed.txt; main gets beta.txt only with fixed.txt, after its tests pass).
CHECK = textwrap.dedent("""\
    import pathlib, sys
    if pathlib.Path("beta.txt").exists() and not pathlib.Path("fixed.txt").exists():
        print("FAILED test_beta: fixed.txt is missing")
        sys.exit(1)
    print("PASSED test_beta")
""")


@pytest.fixture
def aider_cli() -> str:
    return require_cli("aider")


# --- the environment and the project --------------------------------------------------------------


def _not_ours(name: str) -> bool:
    """Variables that would point aider (or litellm) somewhere else, or give it a key."""
    return (name.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) or name.startswith(
        ("AIDER_", "LITELLM_", "OPENAI_", "GIT_PYTHON_")) or name in (
        "OLLAMA_API_BASE", "VERTEXAI_PROJECT", "AWS_BEARER_TOKEN_BEDROCK"))  # fmt: skip


class AiderEnv:
    def __init__(self, monkeypatch, cli: str, tmp_path: Path) -> None:
        self.monkeypatch, self.tmp_path = monkeypatch, tmp_path
        self.marker = f"aider-e2e-{uuid.uuid4().hex}"
        for name in [n for n in os.environ if _not_ours(n)]:
            monkeypatch.delenv(name)
        # appended: aider's venv bin also holds a `python`, which must not shadow anything
        monkeypatch.setenv("PATH", os.environ.get("PATH", "") + os.pathsep + str(Path(cli).parent))
        monkeypatch.setenv(MARKER_VAR, self.marker)
        # No network but 127.0.0.1: litellm's price table from its package, not from GitHub, and
        # aider's copy of it (fetched into ~/.aider/caches unless a fresh, non-empty one is
        # there; a failed fetch leaves "{}", so it would try again at every start) present.
        # Without an entry for the model aider falls back to litellm's table.
        monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        caches = Path(os.environ["HOME"]) / ".aider" / "caches"
        caches.mkdir(parents=True, exist_ok=True)
        (caches / "model_prices_and_context_window.json").write_text('{"kanban-e2e-placeholder": {}}')

    def point_at(self, api: ScriptedOpenAI) -> None:
        self.monkeypatch.setenv("OPENAI_API_KEY", "dummy")
        self.monkeypatch.setenv("OPENAI_API_BASE", api.base_url)

    @contextlib.contextmanager
    def watch(self, every: float = 0.5):
        """Yields a set that fills, while the block runs, with the command lines of the live
        processes carrying our marker: proof that the marker reaches the agents."""
        seen: set[str] = set()
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                seen.update(line.split(": ", 1)[1] for line in carrying(f"{MARKER_VAR}={self.marker}", self.tmp_path))
                done.wait(every)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield seen
        finally:
            done.set()
            thread.join(10)

    def leftovers(self, wait: float = 15.0) -> list[str]:
        """Live processes carrying our marker in their environment (after up to WAIT seconds)."""
        deadline = time.monotonic() + wait
        while True:
            found = carrying(f"{MARKER_VAR}={self.marker}", self.tmp_path)
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


@pytest.fixture
def aider_env(monkeypatch, aider_cli, tmp_path) -> AiderEnv:
    return AiderEnv(monkeypatch, aider_cli, tmp_path)


@pytest.fixture
def projects(tmp_path):
    """make(...) -> Project; at teardown every process a run of it started is killed."""
    made: list[Project] = []

    def make(repo: Path, tasks: str, **options) -> Project:
        project = make_aider_project(repo, tmp_path / f"kit{len(made)}", tasks, **options)
        made.append(project)
        return project

    yield make
    for project in made:
        project.kill_everything()


def make_aider_project(repo: Path, kit: Path, tasks: str, *, test_command: list[str] | None = None,
                       other_files: dict[str, str] | None = None, timeout: str = "4m", stall: str = "100s",
                       retry_limit: str = "20s", roles_toml: str = "", sandbox: str = "none") -> Project:
    """The `repo` fixture made a kanban project run by aider: config, board, prompts, committed."""
    from kanban.commands.init import init

    kit.mkdir(parents=True, exist_ok=True)
    toml = textwrap.dedent(f"""\
        main_branch = "main"

        [agent]
        preset = "aider"
        model = "{MODEL}"
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
    (repo / "TODO.md").write_text("# TODO\n\nTasks for aider.\n\n" + tasks)
    for name, text in (other_files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    init(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "kanban project")
    return Project(repo, kit, f"never-in-a-cmdline-{uuid.uuid4().hex}")


def agent_log(root: Path, task: str, role: str, attempt: int) -> str:
    path = root / ".kanban" / "runs" / task / f"{role}-{attempt}" / "agent.log"
    return path.read_text(errors="replace") if path.exists() else "(no log)"


def prompt_of(root: Path, task: str, role: str, attempt: int) -> str:
    return (root / ".kanban" / "runs" / task / f"{role}-{attempt}" / "prompt.md").read_text()


# --- the scripted model -----------------------------------------------------------------------------

ROLE_RE = re.compile(r"You are the (task agent|reviewer|tester) for ([A-Za-z][A-Za-z0-9_-]*-\d+)")
ATTEMPT_RE = re.compile(r"This is (?:review\s+|test\s+)?attempt\s+(\d+)\.")
REPORT = ".kanban-run/report.md"  # relative to the worktree, aider's git root


def whole(*files: tuple[str, str], say: str = "Here are the files.") -> str:
    """A reply in aider's whole edit format: each file's name, then its whole content fenced."""
    return say + "\n\n" + "".join(f"{name}\n```\n{content}```\n\n" for name, content in files)


class Model:
    """Answers each role from its prompt; records what each (task, role, attempt) was sent."""

    def __init__(self, replies: dict[tuple[str, str, int], str]) -> None:
        self.replies = replies
        self.seen: dict[tuple[str, str, int], list[str]] = {}
        self.unexpected: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: dict) -> str:
        if is_commit_message_request(request):
            return COMMIT_MESSAGE + "\n"
        text = request_text(request)
        found = ROLE_RE.search(text)
        attempt = ATTEMPT_RE.search(text, found.end()) if found else None
        if not found or not attempt:
            with self.lock:
                self.unexpected.append(text[-500:])
            return "Nothing to do.\n"
        key = (found.group(2), found.group(1), int(attempt.group(1)))
        with self.lock:
            self.seen.setdefault(key, []).append(text)
            if key not in self.replies:
                self.unexpected.append(f"{key}: {text[found.start():found.start() + 300]}")
        return self.replies.get(key, "Nothing to do.\n")


# --- 1, 2, 3: two tasks to main, a rejected review, a failing test command -----------------------

ALPHA_1, ALPHA_2, BETA = "alpha, first try\n", "alpha, as the review asked.\n", "beta\n"
REASON = "REVIEW-REASON-7f3: alpha.txt must end with a full stop and say 'as the review asked'."


@pytest.mark.timeout(600)
@pytest.mark.parametrize("sandbox", ["none", pytest.param("bwrap", marks=pytest.mark.skipif(
    not sandbox_available()[0],
    reason=f"bubblewrap cannot run here (apt-get install bubblewrap): {sandbox_available()[1]}"))])
def test_two_tasks_through_a_rejected_review_and_a_failing_test_command_reach_main(
        repo, aider_env, projects, capsys, sandbox):
    """With sandbox = "bwrap" too: aider (its git wrapper, GitPython, ~/.aider) and the test
    command in bubblewrap, committing through the sandbox's private objects and branch."""
    tasks = (task_md("TASK-1", "Add alpha.txt", files="alpha.txt", body="Create alpha.txt.")
             + task_md("TASK-2", "Add beta.txt", files="beta.txt", body="Create beta.txt."))
    p = projects(repo, tasks, test_command=[sys.executable, "check.py"], other_files={"check.py": CHECK},
                 sandbox=sandbox)
    model = Model({
        ("TASK-1", "task agent", 1): whole(("alpha.txt", ALPHA_1), (REPORT, "Created alpha.txt.\n")),
        ("TASK-1", "reviewer", 1): whole((REPORT, f"{REASON}\n\nverdict: reject\n"), say="My review."),
        ("TASK-1", "task agent", 2): whole(("alpha.txt", ALPHA_2),
                                           (REPORT, "Reworded alpha.txt as the review asked.\n")),
        ("TASK-1", "reviewer", 2): whole((REPORT, "Now it ends with a full stop.\n\nverdict: approve\n"),
                                         say="My review."),
        ("TASK-2", "task agent", 1): whole(("beta.txt", BETA), (REPORT, "Created beta.txt.\n")),
        ("TASK-2", "reviewer", 1): whole((REPORT, "Fine.\n\nverdict: approve\n"), say="My review."),
        ("TASK-2", "tester", 1): whole(("fixed.txt", "fixed\n"),
                                       (REPORT, "test_beta needed fixed.txt; created it.\n\nverdict: pass\n")),
    })
    start = git(p.root, "rev-parse", "main").strip()
    with ScriptedOpenAI(script=model) as api, aider_env.watch() as seen:
        aider_env.point_at(api)
        code, out, took = run_kanban(p.root, capsys)
    print(f"kanban run took {took:.1f}s\n{out}")  # shown when the test fails
    runs = {task: p.runs(task) for task in ("TASK-1", "TASK-2")}
    why = (out, p.describe(), [(r.task, r.role, r.attempt, r.outcome, r.reason) for rs in runs.values()
                               for r in rs], model.unexpected)  # fmt: skip

    # 1. both tasks are merged: off the board, in CHANGELOG.md, their edits on main
    assert code == 0, why
    assert p.where("TASK-1") is None and p.where("TASK-2") is None, why
    changelog = (p.root / "CHANGELOG.md").read_text()
    assert "- TASK-1: Add alpha.txt" in changelog and "- TASK-2: Add beta.txt" in changelog, changelog
    assert git(p.root, "show", "main:alpha.txt") == ALPHA_2
    assert git(p.root, "show", "main:beta.txt") == BETA
    assert git(p.root, "show", "main:fixed.txt") == "fixed\n"
    subjects = git(p.root, "log", "main", "--format=%s").splitlines()
    assert "Merge TASK-1: Add alpha.txt" in subjects and "Merge TASK-2: Add beta.txt" in subjects, subjects
    # aider made the commits (its own message), and never committed a report or a board file
    assert COMMIT_MESSAGE in subjects, subjects
    assert ".kanban-run" not in git(p.root, "log", "--all", "--name-only", "--format=")
    # no task's worktree is left: only idle ones, parked for the next task (warm worktrees)
    left = [line.split()[0] for line in git(p.root, "worktree", "list").splitlines()[1:]]
    assert git(p.root, "branch", "--list", "kanban/*") == "" and all("/.idle/" in path for path in left), left
    # aider found an identity (the GIT_AUTHOR_* kanban passes) and wrote none into the shared config
    local = subprocess.run(["git", "config", "--local", "--list"], cwd=p.root, capture_output=True,
                           text=True).stdout
    assert "user.name" not in local and "user.email" not in local, local
    touched = git(p.root, "log", "--name-only", "--format=", f"{start}..main").split()
    assert not set(touched) & set(BOARD_FILES), touched  # a branch's board edits never reach main

    # 2. TASK-1: the first review rejects and sends it back; the second prompt holds the reason
    assert [(r.role, r.attempt) for r in runs["TASK-1"]] == [
        ("task", 1), ("reviewer", 1), ("task", 2), ("reviewer", 2), ("test", 1)], why
    first_review = runs["TASK-1"][1]
    assert first_review.outcome == "failed" and "verdict: reject" in (first_review.reason or ""), why
    assert [r.outcome for r in runs["TASK-1"]] == ["ok", "failed", "ok", "ok", "ok"], why
    review_report = p.root / ".kanban" / "runs" / "TASK-1" / "reviewer-1" / "report.md"
    assert REASON in review_report.read_text()
    second = prompt_of(p.root, "TASK-1", "task", 2)
    assert REASON in second and "verdict: reject" in second, second
    assert any(REASON in text for text in model.seen[("TASK-1", "task agent", 2)])  # it reached the model
    moves = [(kind, source, target) for _, _, kind, source, target, _ in p.history_events("TASK-1")]
    assert ("review_rejected", "REVIEW", "IN_PROGRESS") in moves, moves

    # 3. TASK-2: the test command fails first; the tester gets its output, fixes; it passes
    assert [(r.role, r.attempt) for r in runs["TASK-2"]] == [
        ("task", 1), ("reviewer", 1), ("test", 1), ("tester", 1), ("test", 2)], why
    assert [r.outcome for r in runs["TASK-2"] if r.role == "test"] == ["failed", "ok"], why
    test_log = (p.root / ".kanban" / "runs" / "TASK-2" / "test-1" / "test.log").read_text()
    assert "FAILED test_beta: fixed.txt is missing" in test_log
    assert "PASSED test_beta" in (p.root / ".kanban" / "runs" / "TASK-2" / "test-2" / "test.log").read_text()
    tester_prompt = prompt_of(p.root, "TASK-2", "tester", 1)
    assert "FAILED test_beta: fixed.txt is missing" in tester_prompt, tester_prompt
    assert "check.py" in tester_prompt
    assert any("FAILED test_beta: fixed.txt is missing" in t for t in model.seen[("TASK-2", "tester", 1)])

    # every agent was a real aider, and none of them reached for the network
    for r in runs["TASK-1"] + runs["TASK-2"]:
        if r.role != "test":
            log = agent_log(p.root, r.task, r.role, r.attempt)
            assert "Aider v" in log and "raw.githubusercontent.com" not in log, log

    # every role ran exactly the attempts above, and nothing else was asked of the model
    assert set(model.seen) == set(model.replies), (sorted(model.seen), model.unexpected)
    assert model.unexpected == []
    assert any("/aider " in c for c in seen) and any(is_supervisor(c) for c in seen), seen
    assert aider_env.leftovers() == []
    if sandbox == "bwrap":  # each agent and test run was bwrap; nothing of their sandboxes is left
        for r in runs["TASK-1"] + runs["TASK-2"]:
            spec = json.loads((p.root / ".kanban" / "runs" / r.task / f"{r.role}-{r.attempt}" / "spec.json")
                              .read_text())
            assert Path(spec["argv"][0]).name == "bwrap" and spec["sandbox"]["mode"] == "bwrap", spec["argv"][:3]
            assert not (p.root / ".kanban" / "sandbox" / r.task / f"{r.role}-{r.attempt}").exists()
        subprocess.run(["git", "fsck", "--no-dangling"], cwd=p.root, check=True, capture_output=True)


# --- 4: no key -------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("roles_toml, where", [
    ("", "[agent] cannot start: aider has no credentials"),
    # only the reviewer runs aider: the line names that role alone
    ('[agent.task]\npreset = "demo"\n[agent.tester]\npreset = "demo"\n',
     "[agent.reviewer] cannot start: aider has no credentials"),
])
def test_no_key_is_exit_2_naming_the_role_and_nothing_moves(repo, aider_env, projects, monkeypatch,
                                                            roles_toml, where):
    p = projects(repo, task_md("TASK-1"), roles_toml=roles_toml)
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")  # a base URL is no key
    assert not [n for n in os.environ if n.endswith("_API_KEY")]
    before = snapshot(p.root)
    boards = {name: (p.root / name).read_bytes() for name in BOARD_FILES}
    for command in ("run", "tick"):
        proc = run_cli(p.root, command)
        assert proc.returncode == 2, (command, proc.returncode, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and where in lines[0], proc.stderr
        assert "OPENAI_API_KEY" in lines[0]  # the fix is named
        assert {name: (p.root / name).read_bytes() for name in BOARD_FILES} == boards
        assert snapshot(p.root) == before
    assert not (p.root / ".kanban" / "runs").exists()
    assert git(p.root, "worktree", "list").count("\n") == 1  # no task worktree was made
    assert aider_env.leftovers(wait=0) == []


# --- 5: a dead model API ---------------------------------------------------------------------------

DEAD_TASK = task_md("TASK-1", "Add hello.txt", body="Create hello.txt saying hello.")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["down", pytest.param("hang", marks=pytest.mark.slow)])
def test_a_dead_model_api_is_given_up_retried_once_then_escalated(repo, aider_env, projects, capsys, mode):
    """aider exits 0 by itself only after 9 tries (74 s down, ~6 min hung): the supervisor stops it
    once its log has shown only retry lines for retry_limit, well before the stall or the timeout."""
    p = projects(repo, DEAD_TASK, retry_limit="20s", stall="100s", timeout="4m")
    with ScriptedOpenAI(mode=mode, hang_seconds=300) as api, aider_env.watch() as seen:
        aider_env.point_at(api)
        code, out, took = run_kanban(p.root, capsys)
        requests = len(api.requests)
    runs = p.runs("TASK-1")
    logs = "\n".join(f"--- {r.role}-{r.attempt} ---\n" + agent_log(p.root, r.task, r.role, r.attempt)[-3000:]
                     for r in runs)  # fmt: skip
    why = (f"took {took:.1f}s", out, [(r.role, r.attempt, r.outcome, r.reason, r.ended and r.ended - r.started)
                                      for r in runs], logs)  # fmt: skip
    print(why)

    assert code == 1, why
    assert p.where("TASK-1") == ("IN_PROGRESS", ESCALATED, None), why
    assert [(r.role, r.attempt) for r in runs] == [("task", 1), ("task", 2)], why  # retried once
    for r in runs:
        assert r.outcome == "failed" and r.stalled and not r.timed_out, why
        assert "gave up" in (r.reason or "") and "retry" in (r.reason or ""), why
        assert r.ended is not None and r.ended - r.started < 120, why  # well under the timeout
        assert "Retrying in " in agent_log(p.root, r.task, r.role, r.attempt), why
    entry = p.entry_text("TASK-1")
    assert "gave up: its CLI did nothing but retry or reconnect to the model API for too long" in entry
    if mode == "hang":
        assert requests >= 2, why  # each attempt's first request was held until aider's --timeout
    assert git(p.root, "rev-list", "--count", "main..kanban/TASK-1").strip() == "0"
    # the marker reached the supervisors and the aiders while they ran; none of them is left
    assert any(is_supervisor(c) for c in seen) and any("/aider " in c for c in seen), seen
    assert aider_env.leftovers() == [], why
