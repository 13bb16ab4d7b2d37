"""aider's preset end to end: the scripted OpenAI-compatible server, a real aider, real git.

Each test sets up what kanban sets up before a launch: the task's worktree with
the board files (each holding a unique marker), the report file in its ignored
.kanban-run/ (kanban.agents.prepare_report), the run directory with the files
the preset names (kanban.presets.prepare_aider_run), and the preset's argv and
environment. The server plays the model: aider's "whole" edit format (the one it
uses for openai/gpt-4o-mini), and a commit message when aider asks for one.

aider starts slowly (8-30 s here), so the fast tests are two runs with many
assertions each; the failure modes (server down, 5xx, hung) take one to six
minutes each and are marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clis import find_cli

sys.path.insert(0, str(Path(__file__).resolve().parent))

from openai_chat_server import (  # noqa: E402
    COMMIT_MESSAGE,
    ScriptedOpenAI,
    is_commit_message_request,
    request_text,
)

from kanban import agents  # noqa: E402
from kanban.config import AgentConfig  # noqa: E402
from kanban.model import COLUMN_FILES  # noqa: E402
from kanban.presets import (  # noqa: E402
    AIDER,
    AIDER_BOARD_FILES,
    build_argv,
    missing_credentials,
    parse_cost,
    prepare_aider_run,
    preset_env,
)
from kanban.verdict import read_verdict  # noqa: E402

MODEL = "openai/gpt-4o-mini"  # "openai/" + any name: litellm's OpenAI-compatible route
CODE = "hello from the scripted model\n"


def marker(name: str) -> str:
    return "MARKER-" + name.replace(".", "-") + "-q7f3a"


def find_aider() -> str | None:
    return find_cli("aider")


@pytest.fixture
def aider_cli() -> str:
    path = find_aider()
    if path is None:
        pytest.skip("aider CLI not installed (pip install aider-chat, or put its folder in KANBAN_AGENT_TOOLS;"
                    " .ci/run installs it)")  # fmt: skip
    return path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def idle(line: str) -> bool:
    return any(re.fullmatch(p, line) for p in AIDER.idle_lines)


class Launch:
    """A task worktree and run directory set up as kanban does, and aider run in them."""

    def __init__(self, tmp_path: Path, repo: Path, aider: str, role: str) -> None:
        self.repo, self.aider, self.role = repo, aider, role
        for name in AIDER_BOARD_FILES:
            (repo / name).write_text(f"# {name}\n\n{marker(name)}\n")
        git(repo, "add", *AIDER_BOARD_FILES)
        git(repo, "commit", "-q", "-m", "board")
        self.worktree = tmp_path / "worktree"
        git(repo, "worktree", "add", "-q", "-b", "task/T-1", str(self.worktree))
        self.start = git(self.worktree, "rev-parse", "HEAD").strip()
        self.report = agents.prepare_report(self.worktree)
        self.run_dir = agents.run_dir(repo, "T-1", role, 1)
        self.run_dir.mkdir(parents=True)
        self.prompt_file = self.run_dir / "prompt.md"
        self.prompt_file.write_text(  # names every board file, as kanban's prompts do
            "Create hello.txt saying hello. Do not edit the board files ("
            + ", ".join(AIDER_BOARD_FILES) + f"). Write your report to {self.report}.\n")
        self.log = ""
        self.elapsed = 0.0

    def run(self, api: ScriptedOpenAI, extra_args: tuple[str, ...] = (),
            timeout: float = 240) -> subprocess.CompletedProcess:
        agent = AgentConfig(preset="aider", model=MODEL, extra_args=extra_args)
        env = {k: v for k, v in os.environ.items()
               if not k.endswith(("_API_KEY", "_API_BASE")) and not k.startswith(("AIDER_", "GIT_PYTHON_"))
               and k != "COLUMNS"}  # fmt: skip
        env.update(preset_env(agent))
        env.update(prepare_aider_run(self.run_dir, self.worktree))
        env.update(OPENAI_API_KEY="dummy", OPENAI_API_BASE=api.base_url, KANBAN_REPORT_FILE=str(self.report),
                   PATH=str(Path(self.aider).parent) + os.pathsep + env.get("PATH", ""))  # fmt: skip
        assert missing_credentials(agent, env) is None
        argv = build_argv(agent, {
            "prompt_file": str(self.prompt_file), "prompt": "unused", "task_id": "T-1",
            "role": self.role, "worktree": str(self.worktree), "report_file": str(self.report),
            "run_dir": str(self.run_dir), "model": MODEL})  # fmt: skip
        began = time.monotonic()
        proc = subprocess.run(argv, cwd=self.worktree, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        self.elapsed = time.monotonic() - began
        self.began = began
        self.log = proc.stdout + proc.stderr
        return proc

    def new_commits(self) -> list[str]:
        return git(self.worktree, "rev-list", f"{self.start}..HEAD").split()

    def assert_report_never_committed(self) -> None:
        everything = git(self.repo, "log", "-p", "--all", "--format=%H %s")
        assert "verdict:" not in everything and ".kanban-run" not in everything
        assert not [f for f in git(self.worktree, "ls-files").split() if ".kanban-run" in f]
        assert git(self.worktree, "status", "--porcelain", "--untracked-files=no") == ""
        untracked = [line for line in git(self.worktree, "status", "--porcelain").splitlines() if line]
        assert all(line.startswith("?? .aider.tags.cache") for line in untracked), untracked
        assert "!! .kanban-run/" in git(self.worktree, "status", "--porcelain", "--ignored")

    def assert_board_files_never_in_the_chat(self, api: ScriptedOpenAI) -> None:
        assert api.chat_requests()
        for request in api.requests:
            text = request_text(request)
            leaked = [name for name in AIDER_BOARD_FILES if marker(name) in text]
            assert not leaked, (request["index"], leaked)


def test_board_files_are_kanbans():
    assert AIDER_BOARD_FILES == tuple(COLUMN_FILES.values())


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_task_agent_commits_its_edit_and_writes_the_report(tmp_path, repo, aider_cli):
    """Streaming; one reply edits hello.txt and the report (by its absolute path) and names
    board files: the edit is committed alone, the report written, no board file read."""
    launch = Launch(tmp_path, repo, aider_cli, "task")
    report_text = "## Report\n\nCreated hello.txt; TODO.md and CHANGELOG.md untouched.\n\nverdict: done\n"
    replies = []

    def script(request: dict) -> str:
        if is_commit_message_request(request):
            return COMMIT_MESSAGE
        replies.append(request)
        if len(replies) > 1:
            return "Done.\n"
        return (f"I will create hello.txt; see TODO.md and CHANGELOG.md.\n\nhello.txt\n```\n{CODE}```\n\n"
                f"{launch.report}\n```\n{report_text}```\n")

    with ScriptedOpenAI(script=script) as api:
        proc = launch.run(api)
    log = launch.log

    assert proc.returncode == 0, log
    assert any(r.get("stream") for r in api.chat_requests()), api.requests
    # (a) the report holds the model's text, and its verdict
    assert launch.report.read_text() == report_text, log
    assert read_verdict(report_text, "task").ok is True
    # (b) aider's own commit of the real edit, and nothing else in it
    commits = launch.new_commits()
    assert len(commits) == 1, log
    assert git(launch.worktree, "log", "-1", "--format=%s").strip() == COMMIT_MESSAGE
    assert git(launch.worktree, "show", "--name-only", "--format=", "HEAD").split() == ["hello.txt"]
    assert (launch.worktree / "hello.txt").read_text() == CODE
    assert "Unable to add" not in log and "did not match any file" not in log, log
    # aider commits again after its lint pass; the report (untracked) makes that try look like
    # a change, and git finds nothing to commit: an "Unable to commit" line, harmless.
    assert log.count("Unable to commit") <= 1, log
    # (c) the report is nowhere in git; main is untouched
    launch.assert_report_never_committed()
    assert git(repo, "rev-parse", "main").strip() == launch.start
    # the prompt and the reply name board files; none of them reached the chat
    launch.assert_board_files_never_in_the_chat(api)
    assert len(replies) == 1, [request_text(r)[-300:] for r in replies]
    assert "Added TODO.md" not in log and "Added CHANGELOG.md" not in log, log
    assert not list(launch.worktree.glob(".aider.*history*"))  # history files went to /dev/null
    # progress is not mistaken for idling
    for line in ("Applied edit to hello.txt", "Tokens:", "Commit "):
        assert any(line in ln and not idle(ln) for ln in log.splitlines()), (line, log)
    cost = parse_cost("aider", log)
    assert cost["tokens"] and cost["tokens"] > 0, log
    assert cost["cost_usd"] is not None and cost["cost_usd"] > 0, log  # litellm knows its prices


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_reviewer_writes_only_the_report_and_nothing_is_committed(tmp_path, repo, aider_cli):
    """Not streaming; the reply edits only the report (by its path in the repo)."""
    launch = Launch(tmp_path, repo, aider_cli, "reviewer")
    report_text = "Looks right; REVIEW.md and TESTING.md left alone.\n\n**Verdict:** approve\n"

    def script(request: dict) -> str:
        if is_commit_message_request(request):
            return COMMIT_MESSAGE
        return f"My review, see REVIEW.md and TESTING.md:\n\n.kanban-run/report.md\n```\n{report_text}```\n"

    with ScriptedOpenAI(script=script) as api:
        proc = launch.run(api, extra_args=("--no-stream",))
    log = launch.log

    assert proc.returncode == 0, log
    assert api.chat_requests() and not any(r.get("stream") for r in api.chat_requests())
    assert launch.report.read_text() == report_text, log
    assert read_verdict(launch.report.read_text(), "reviewer").ok is True
    assert launch.new_commits() == [], log
    assert "only kanban's report changed" in log, log  # the wrapper, not git's pathspec error
    assert "did not match any file" not in log, log
    launch.assert_report_never_committed()
    launch.assert_board_files_never_in_the_chat(api)


def test_prepare_aider_run_files(tmp_path):
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".aiderignore").write_text("secrets/")
    run_dir = tmp_path / "run"
    (run_dir).mkdir()
    (run_dir / "aider-git").symlink_to("/etc/passwd")  # never written through
    env = prepare_aider_run(run_dir, worktree)
    assert env == {"GIT_PYTHON_GIT_EXECUTABLE": str(run_dir / "aider-git")}
    lines = (run_dir / "aiderignore").read_text().splitlines()
    assert lines[0] == "secrets/" and [f"/{n}" for n in AIDER_BOARD_FILES] == lines[-5:]
    assert "max_retries: 0" in (run_dir / "aider.model.settings.yml").read_text()
    wrapper = run_dir / "aider-git"
    assert not wrapper.is_symlink() and os.access(wrapper, os.X_OK)
    for arg in ("--aiderignore", "--model-settings-file"):
        assert AIDER.argv[AIDER.argv.index(arg) + 1].startswith("{run_dir}/")


def test_an_identity_given_by_environment_is_git_config_for_aider(tmp_path, repo):
    # aider asks `git config --get user.name` and writes "Your Name" into the shared .git/config
    # when it finds none; the identity kanban passes (GIT_AUTHOR_*) must answer that question.
    run_dir = tmp_path / "run"
    given = {"GIT_AUTHOR_NAME": "Ada Agent", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    env = prepare_aider_run(run_dir, repo, given)
    assert env["GIT_CONFIG_COUNT"] == "2"
    full = {**os.environ, **env}
    for key, value in (("user.name", "Ada Agent"), ("user.email", "ada@example.com")):
        found = subprocess.run(["git", "config", "--get", key], cwd=repo, env=full, capture_output=True, text=True)
        assert found.stdout.strip() == value
    local = subprocess.run(["git", "config", "--local", "--list"], cwd=repo, capture_output=True, text=True)
    assert "user.name" not in local.stdout  # nothing was written
    # the person's own command-scope config is left alone
    assert "GIT_CONFIG_COUNT" not in prepare_aider_run(run_dir, repo, {**given, "GIT_CONFIG_COUNT": "1"})


def test_git_wrapper_keeps_the_report_out_of_add_and_commit(tmp_path, repo):
    run_dir = tmp_path / "run"
    wrapper = prepare_aider_run(run_dir, repo)["GIT_PYTHON_GIT_EXECUTABLE"]
    report = agents.prepare_report(repo)
    report.write_text("verdict: approve\n")
    (repo / "hello.txt").write_text(CODE)

    def wrapped(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([wrapper, *args], cwd=repo, capture_output=True, text=True)

    # what aider runs when it edited the report and hello.txt
    assert wrapped("add", str(report)).returncode == 0
    assert wrapped("add", str(repo / "hello.txt")).returncode == 0
    done = wrapped("commit", "-m", "feat: -- .kanban-run/report.md", "--no-verify", "--",
                   str(report), str(repo / "hello.txt"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert git(repo, "show", "--name-only", "--format=%s", "HEAD").split() == [
        "feat:", "--", ".kanban-run/report.md", "hello.txt"]
    # only the report edited: no commit, and the index is not committed instead
    (repo / "staged.txt").write_text("x\n")
    git(repo, "add", "staged.txt")
    done = wrapped("commit", "-m", "msg", "--no-verify", "--", ".kanban-run/report.md")
    assert done.returncode == 1 and "only kanban's report changed" in done.stderr
    assert git(repo, "log", "-1", "--format=%s").strip() == "feat: -- .kanban-run/report.md"
    # everything else is git's own
    assert wrapped("rev-parse", "HEAD").stdout == git(repo, "rev-parse", "HEAD")
    assert wrapped("--version").stdout.startswith("git version")
    assert "verdict: approve" not in git(repo, "log", "-p", "--all")


# Lines aider 0.86.2 printed in the failure-mode runs (with COLUMNS=10000), and lines of progress.
IDLE_SAMPLES = [
    "Retrying in 0.2 seconds...",
    "Retrying in 32.0 seconds...",
    "litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.",
    "litellm.ServiceUnavailableError: ServiceUnavailableError: OpenAIException - scripted server error",
    "litellm.Timeout: APITimeoutError - Request timed out. Error_str: Request timed out.",
    "litellm.RateLimitError: RateLimitError: OpenAIException - rate limited",
    "The API provider's servers are down or overloaded.",
    "The API provider timed out without returning a response. They may be down or overloaded.",
    "The API provider has rate limited you. Try again later or check your quotas.",
]
PROGRESS_SAMPLES = [
    "Aider v0.86.2",
    "Applied edit to hello.txt",
    "Commit 946daaf feat: add hello.txt",
    "Tokens: 889 sent, 52 received. Cost: $0.00016 message, $0.00016 session.",
    "I will retry the failing test: Retrying in 2 seconds... was printed by the old code",
    "hello.txt",
]


def test_idle_lines():
    for pattern in AIDER.idle_lines:
        re.compile(pattern)
    assert all(idle(line) for line in IDLE_SAMPLES)
    assert not any(idle(line) for line in PROGRESS_SAMPLES)


def _preset_timeout() -> float:
    return float(AIDER.argv[AIDER.argv.index("--timeout") + 1])


TRIES = 9  # aider's own loop: the first request and 8 retries
SLEEPS = 0.25 + 0.5 + 1 + 2 + 4 + 8 + 16 + 32  # 63.75 s between them
START_UP = 60.0  # allowance for aider's start-up on a busy 2-core machine (8-30 s measured)


@pytest.mark.cli
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", ["down", "error5xx", "hang"])
def test_aider_gives_up_within_its_bound(tmp_path, repo, aider_cli, mode):
    """With a key and the server down, answering 503, or hung: aider exits 0 by itself after
    9 tries with no commit; each try is one request (max_retries 0), and every line it
    prints after its start-up is an idle line. Measured: down ~74 s, 503 ~65 s after start-up,
    hung 9 x --timeout + 64 s after start-up (~336 s with --timeout 30)."""
    launch = Launch(tmp_path, repo, aider_cli, "task")
    per_try = _preset_timeout() + 2 if mode == "hang" else 2.0
    bound = SLEEPS + TRIES * per_try + 10
    with ScriptedOpenAI(mode=mode) as api:
        proc = launch.run(api, timeout=START_UP + bound + 120)
    log = launch.log

    assert proc.returncode == 0, log
    assert launch.new_commits() == [] and launch.report.read_text() == ""
    if mode == "down":
        assert launch.elapsed < START_UP + bound, (launch.elapsed, log)
    else:
        assert len(api.requests) == TRIES, [r["received_at"] for r in api.requests]
        after_first = launch.elapsed - (api.requests[0]["received_at"] - launch.began)
        assert after_first < bound, (launch.elapsed, after_first, log)
    assert log.count("Retrying in ") == TRIES - 1, log
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if idle(line))
    assert all(idle(line) for line in lines[first:]), lines[first:]
