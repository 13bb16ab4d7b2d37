"""The claude and codex presets end to end: the real CLIs against scripted model servers.

Each test runs the preset's argv (kanban.presets.build_argv) in a git worktree, with the
environment kanban.agents.agent_env builds, against a server of tests/model_servers.py on
127.0.0.1. The scripted model runs shell commands through the CLI's own tool: the CLI writes
and commits a file and writes the report named in its prompt.

Failure modes: a server that is down, answers 5xx, or never answers. The fast tests shorten
the CLI's retries (what a person could set through [env] or extra_args) to check that the CLI
exits non-zero, prints only idle lines (presets' idle_lines) while it retries, and leaves no
process behind; the tests marked slow run the preset's own values and check the exit times
measured for the comments in kanban/presets.py (-m slow).

A CLI that is not installed skips its tests: found on PATH, else in the directories of
KANBAN_AGENT_TOOLS (os.pathsep-separated), else in /root/.cache/kanban-ci/npm/node_modules/.bin.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clis import require_cli

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_servers import (  # noqa: E402
    ScriptedAnthropic,
    ScriptedResponses,
    commit_all,
    quote,
    reviewer_script,
    run,
    say,
    write_file,
)

from kanban import agents  # noqa: E402
from kanban.config import AgentConfig, Config  # noqa: E402
from kanban.presets import PRESETS, build_argv, missing_credentials, preset_env  # noqa: E402
from kanban.verdict import read_verdict  # noqa: E402

MARKER_VAR = "KANBAN_TEST_MARKER"
CONTENT = "hello from the scripted model\n"
MESSAGE = "feat: add hello.txt"
REPORT = "Added hello.txt.\n\nverdict: done\n"
SERVERS = {"claude": ScriptedAnthropic, "codex": ScriptedResponses}


def cli_or_skip(name: str) -> str:
    return require_cli(name)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


# --- processes ---------------------------------------------------------------------------


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment or command line carries MARKER (ours never does)."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("environ", "cmdline"):
            try:
                data = Path("/proc", entry, part).read_bytes()
            except OSError:
                continue
            if needle in data:
                found.append(int(entry))
                break
    return found


def leftovers(marker: str, wait: float = 3.0) -> list[str]:
    """Processes still carrying MARKER after up to WAIT seconds, killed, as 'pid: cmdline'."""
    deadline = time.monotonic() + wait
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for pid in marked_pids(marker):
        try:
            cmd = Path("/proc", str(pid), "cmdline").read_bytes().replace(b"\0", b" ").decode()
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        left.append(f"{pid}: {cmd.strip()}")
    return left


@dataclass
class Result:
    returncode: int | None  # None: still running when killed
    elapsed: float
    log: str
    lines: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


# --- a run as kanban would start it ----------------------------------------------------------


@dataclass
class Setup:
    name: str
    cli: str
    root: Path
    worktree: Path
    run_dir: Path
    marker: str = field(default_factory=lambda: "mark-" + uuid.uuid4().hex)

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    def prompt(self, text: str = "") -> str:
        return (f"Task T-1: create hello.txt saying hello. {self.marker}-prompt\n\n"
                f"Write your report to `{self.report}`.\n{text}")

    def agent(self, server, extra_args: tuple[str, ...] = ()) -> AgentConfig:
        if self.name == "codex":  # how a person points codex at another Responses server
            extra_args = ("-c", f"openai_base_url={server.base_url}") + tuple(extra_args)
        return AgentConfig(preset=self.name, extra_args=tuple(extra_args))

    def env(self, server, agent: AgentConfig, monkeypatch, overrides: dict[str, str]) -> dict[str, str]:
        monkeypatch.setenv("PATH", str(Path(self.cli).parent) + os.pathsep + os.environ.get("PATH", ""))
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "CODEX_API_KEY",
                     "OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME", "CLAUDE_CONFIG_DIR"):
            monkeypatch.delenv(name, raising=False)
        if self.name == "claude":
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-scripted")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.origin)  # claude adds /v1 itself
            if os.geteuid() == 0:
                monkeypatch.setenv("IS_SANDBOX", "1")
        else:
            monkeypatch.setenv("CODEX_API_KEY", "sk-scripted")
        tmpdir = self.run_dir.parent / "tmp"  # claude keeps $TMPDIR/claude-<uid>/<cwd>/<session>/
        tmpdir.mkdir(exist_ok=True)
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        for name, value in overrides.items():
            monkeypatch.setenv(name, value)
        prompt_file = self.run_dir / "prompt.md"
        launch = agents.Launch(task_id="T-1", role="task", attempt=1, title="hello", body="",
                               fields={}, notes="", port=20001)  # fmt: skip
        env = agents.agent_env(Config(), launch, self.worktree, prompt_file, self.report,
                               preset_env(agent))  # fmt: skip
        env.update(overrides)  # (names outside the default [env] allow list, e.g. API_TIMEOUT_MS)
        env[MARKER_VAR] = self.marker
        assert missing_credentials(agent, env) is None
        return env

    def run(self, server, monkeypatch, *, prompt: str | None = None, extra_args: tuple[str, ...] = (),
            env: dict[str, str] | None = None, timeout: float = 60.0) -> Result:
        """The preset's argv in the worktree; killed (whole group) after TIMEOUT seconds."""
        agent = self.agent(server, extra_args)
        environ = self.env(server, agent, monkeypatch, env or {})
        prompt = prompt if prompt is not None else self.prompt()
        (self.run_dir / "prompt.md").write_text(prompt)
        argv = build_argv(agent, {"prompt_file": str(self.run_dir / "prompt.md"), "prompt": prompt,
                                  "task_id": "T-1", "role": "task", "worktree": str(self.worktree),
                                  "model": "", "report_file": str(self.report),
                                  "run_dir": str(self.run_dir)})  # fmt: skip
        log_path = self.run_dir / f"agent-{time.monotonic_ns()}.log"
        start = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=self.worktree, env=environ, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                code = None
            elapsed = time.monotonic() - start
            try:  # what the supervisor does: the whole group goes
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        text = log_path.read_text(errors="replace")
        return Result(code, elapsed, text, [ln.strip() for ln in text.splitlines() if ln.strip()],
                      leftovers(self.marker))


@pytest.fixture(params=["claude", "codex"])
def setup(request, tmp_path, repo) -> Setup:
    name = request.param
    cli = cli_or_skip(name)
    worktree = repo / ".worktrees" / "T-1"
    git(repo, "worktree", "add", "-q", "-b", "kanban/T-1", str(worktree))
    run_dir = tmp_path / "run"  # outside the repository, as kanban's report lies outside the worktree
    run_dir.mkdir()
    return Setup(name, cli, repo, worktree, run_dir)


def idle(name: str, line: str) -> bool:
    return any(re.search(p, line) for p in PRESETS[name].idle_lines)


def task_steps(report_from_prompt: bool = True):
    """Write and commit hello.txt; write the report (path from the prompt); say done."""

    def script(ctx):
        if ctx.turn == 0:
            return run(write_file("hello.txt", CONTENT) + " && " + commit_all(MESSAGE))
        if ctx.turn == 1:
            target = quote(ctx.report_file) if report_from_prompt else '"$KANBAN_REPORT_FILE"'
            assert ctx.report_file, ctx.prompt
            return run(f"printf %s {quote(REPORT)} > {target}")
        return say("Done: hello.txt is committed.")

    return script


# --- the servers themselves (no CLI) -----------------------------------------------------------


def _post(url: str, body: dict, timeout: float = 5.0):
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json",
                                              "x-api-key": "secret", "authorization": "Bearer s"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.timeout(30)
def test_model_servers_script_record_and_fail_without_a_cli():
    import socket

    tools = [{"name": "Bash", "input_schema": {}}]
    with ScriptedAnthropic([run("echo hi"), say("bye")]) as server:
        first = {"stream": True, "tools": tools, "messages": [{"role": "user", "content": "go"}]}
        status, text = _post(server.base_url + "/messages", first)
        assert status == 200 and '"input_json_delta"' in text and "message_stop" in text
        assert '"name": "Bash"' in text and "echo hi" in text.replace('\\"', '"')
        status, text = _post(server.base_url + "/messages", {"tools": tools, "messages": [
            {"role": "user", "content": "go"}, {"role": "assistant", "content": "x"},
            {"role": "user", "content": [{"type": "tool_result", "content": "hi"}]}]})
        assert status == 200 and '"text": "bye"' in text and '"end_turn"' in text
        assert [r["turn"] for r in server.main_requests()] == [0, 1]
        assert server.main_requests()[1]["prompt"] == "go"
        assert all("x-api-key" not in r["headers"] and "authorization" not in r["headers"]
                   for r in server.requests)
        status, text = _post(server.base_url + "/messages/count_tokens", {"messages": []})
        assert status == 200 and "input_tokens" in text
    for cls, expected in ((ScriptedAnthropic, 529), (ScriptedResponses, 500)):
        with cls(mode="error5xx") as server:
            assert _post(server.base_url + "/messages", {})[0] == expected
    with ScriptedResponses(mode="down") as server:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    for mode in ("hang", "stall"):
        server = ScriptedResponses(mode=mode)
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(b'POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}')
        assert server.wait_for_requests(1) and _wait(lambda server=server: server.hung == 1)
        start = time.monotonic()
        server.close()  # releases the held connection, and does not wait for it
        assert time.monotonic() - start < 3
        client.settimeout(5)
        data = client.recv(65536)
        assert (data == b"") if mode == "hang" else data.startswith(b"HTTP/1.1 200")
        client.close()


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


# --- the happy path ---------------------------------------------------------------------------


@pytest.mark.cli
@pytest.mark.timeout(90)
def test_preset_commits_the_scripted_edit_and_writes_the_report(setup, monkeypatch):
    before = git(setup.worktree, "rev-parse", "HEAD").strip()
    with SERVERS[setup.name](task_steps()) as server:
        result = setup.run(server, monkeypatch)
    assert result.returncode == 0, result.log
    assert not server.errors, server.errors
    # the prompt reached the model, whole, in the first user message
    assert f"{setup.marker}-prompt" in server.first_prompt()
    assert str(setup.report) in server.first_prompt()
    main = server.main_requests()
    assert [r["turn"] for r in main] == [0, 1, 2], [(r["path"], r.get("turn")) for r in server.requests]
    assert all(not r["auth"] or "authorization" not in r["headers"] for r in server.requests)
    # the tool results came back to the model
    assert main[1]["body"] and main[2]["body"]
    # the CLI committed the edit, on the task's branch only
    after = git(setup.worktree, "rev-parse", "HEAD").strip()
    assert after != before, result.log
    assert git(setup.worktree, "log", "-1", "--format=%s").strip() == MESSAGE
    assert git(setup.worktree, "show", "--name-only", "--format=", "HEAD").split() == ["hello.txt"]
    assert (setup.worktree / "hello.txt").read_text() == CONTENT
    assert git(setup.root, "rev-parse", "main").strip() == before
    # nothing else left in the worktree, tracked or not
    assert git(setup.worktree, "status", "--porcelain", "--ignored") == ""
    # the report, outside the worktree and the repository, was written by the CLI's shell
    assert setup.report.read_text() == REPORT
    assert read_verdict(REPORT, "task").word == "done"
    # progress is never taken for idling; the only idle lines are codex's refused WebSocket
    # (the server answers the upgrade 426, codex falls back to HTTPS)
    progress = [ln for ln in result.lines if re.search(
        r'"type":"(?:assistant|user|result|item\.(?:started|completed)|turn\.completed)"', ln)
        and "Falling back from WebSockets" not in ln]
    assert len(progress) >= 4, result.log
    assert [ln for ln in progress if idle(setup.name, ln)] == []
    assert [ln for ln in result.lines if idle(setup.name, ln) and "WebSocket" not in ln] == []
    assert result.leftovers == []


@pytest.mark.cli
@pytest.mark.timeout(90)
def test_scripted_reviewer_rejects_then_approves(setup, monkeypatch):
    """Two reviewer runs against one server: the first conversation rejects, the next approves,
    each writing its verdict to $KANBAN_REPORT_FILE (the prompt names it too)."""
    verdicts = []
    with SERVERS[setup.name](reviewer_script(reject_first=1, report_env=True)) as server:
        for attempt in (1, 2):
            setup.run_dir = setup.run_dir.parent / f"run{attempt}"
            setup.run_dir.mkdir()
            result = setup.run(server, monkeypatch, prompt=setup.prompt("Review the change."))
            assert result.returncode == 0, result.log
            assert result.leftovers == []
            verdicts.append(read_verdict(setup.report.read_text(), "reviewer"))
    assert [(v.word, v.ok) for v in verdicts] == [("reject", False), ("approve", True)]
    assert sorted({r["session"] for r in server.main_requests()}) == [0, 1]


# --- failure modes, fast: the CLI's retries shortened ------------------------------------------

# claude: one retry and 2 s per attempt (the preset's 5 and 20 s are checked by the slow tests).
CLAUDE_FAST = {"CLAUDE_CODE_MAX_RETRIES": "1", "API_TIMEOUT_MS": "2000"}


def codex_fast(server) -> tuple[str, ...]:
    """A provider of one's own (the built-in one's retries cannot be changed): HTTPS only,
    no request retries, one stream retry."""
    settings = {"name": '"scripted"', "base_url": f'"{server.base_url}"', "env_key": '"CODEX_API_KEY"',
                "supports_websockets": "false", "request_max_retries": "0", "stream_max_retries": "1"}
    args = ["-c", "model_provider=scripted"]  # (an inline {table} would need {{ }} in extra_args)
    for key, value in settings.items():
        args += ["-c", f"model_providers.scripted.{key}={value}"]
    return tuple(args)


def fast_run(setup: Setup, server, monkeypatch, timeout: float) -> Result:
    if setup.name == "claude":
        return setup.run(server, monkeypatch, env=CLAUDE_FAST, timeout=timeout)
    return setup.run(server, monkeypatch, extra_args=codex_fast(server), timeout=timeout)


def check_failed_cleanly(setup: Setup, result: Result, bound: float) -> None:
    assert result.returncode not in (None, 0), (result.returncode, result.elapsed, result.log)
    assert result.elapsed < bound, (result.elapsed, result.log)
    assert result.leftovers == []
    if setup.name == "claude":
        final = [ln for ln in result.lines if ln.startswith('{"type":"result"')]
        assert final and '"is_error":true' in final[-1], result.log
    else:
        assert any(ln.startswith('{"type":"turn.failed"') for ln in result.lines), result.log
    assert git(setup.worktree, "status", "--porcelain") == ""


def check_retries_are_idle(setup: Setup, result: Result) -> None:
    """Between the start-up lines and the final error, every line is an idle line."""
    if setup.name == "claude":
        middle = [ln for ln in result.lines
                  if not ln.startswith(('{"type":"system","subtype":"init"', '{"type":"result"'))
                  and '"model":"<synthetic>"' not in ln]  # the error, as claude's last message
        assert any('"subtype":"api_retry"' in ln for ln in middle), result.log
    else:
        start = next(i for i, ln in enumerate(result.lines) if ln == '{"type":"turn.started"}')
        end = next((i for i, ln in enumerate(result.lines) if ln.startswith('{"type":"turn.failed"')),
                   len(result.lines))
        middle = result.lines[start + 1:end]
        if end < len(result.lines):
            middle = middle[:-1]  # the last error before turn.failed is the failure itself
        assert any("Reconnecting..." in ln for ln in middle), result.log
    assert [ln for ln in middle if not idle(setup.name, ln)] == [], result.log


@pytest.mark.cli
@pytest.mark.timeout(60)
def test_server_down_fails_fast(setup, monkeypatch):
    with SERVERS[setup.name]([say("unused")], mode="down") as server:
        result = fast_run(setup, server, monkeypatch, timeout=40)
    check_failed_cleanly(setup, result, bound=30)
    check_retries_are_idle(setup, result)


@pytest.mark.cli
@pytest.mark.timeout(60)
def test_server_errors_fail_fast(setup, monkeypatch):
    with SERVERS[setup.name]([say("unused")], mode="error5xx") as server:
        result = fast_run(setup, server, monkeypatch, timeout=40)
        assert len(server.main_requests()) == 0  # 5xx: nothing was scripted
        assert len([r for r in server.requests if r["method"] == "POST"]) >= 2  # it did retry
    check_failed_cleanly(setup, result, bound=30)
    check_retries_are_idle(setup, result)


@pytest.mark.cli
@pytest.mark.timeout(60)
def test_server_that_hangs(setup, monkeypatch):
    """claude gives up by itself (API_TIMEOUT_MS per attempt). codex never does: a POST
    without an answer waits forever, so what counts is that it prints nothing a stall watchdog
    would take for progress, and that killing its group leaves nothing behind."""
    with SERVERS[setup.name]([say("unused")], mode="hang") as server:
        if setup.name == "claude":
            result = fast_run(setup, server, monkeypatch, timeout=40)
            assert server.hung >= 2  # two attempts, each held open until API_TIMEOUT_MS
        else:
            result = fast_run(setup, server, monkeypatch, timeout=6)
            assert result.returncode is None, result.log  # still waiting: the test killed it
            assert server.hung == 1
    if setup.name == "claude":
        check_failed_cleanly(setup, result, bound=30)
        check_retries_are_idle(setup, result)
    else:
        start = result.lines.index('{"type":"turn.started"}')
        assert [ln for ln in result.lines[start + 1:] if not idle(setup.name, ln)] == []
        assert result.leftovers == []


# --- failure modes with the preset's own values (slow) -------------------------------------------

# Measured here (2 cores): claude 19 s down, 19 s 529, 139 s hung; codex 31 s down, 31 s 500,
# and never by itself when hung (6 WebSocket connects of 15 s, then a POST that waits forever).
SLOW_BOUNDS = {("claude", "down"): 60, ("claude", "error5xx"): 60, ("claude", "hang"): 200,
               ("codex", "down"): 75, ("codex", "error5xx"): 75}


@pytest.mark.cli
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["down", "error5xx", "hang"])
def test_preset_values_bound_a_failing_attempt(setup, monkeypatch, mode):
    if setup.name == "codex" and mode == "hang":
        # never exits: check it is still only reconnecting after the WebSocket phase (~96 s)
        with SERVERS["codex"]([say("unused")], mode="hang") as server:
            result = setup.run(server, monkeypatch, timeout=120)
        assert result.returncode is None, result.log
        start = result.lines.index('{"type":"turn.started"}')
        rest = result.lines[start + 1:]
        assert any("Falling back from WebSockets" in ln for ln in rest), result.log
        assert [ln for ln in rest if not idle("codex", ln)] == []
        assert result.leftovers == []
        return
    bound = SLOW_BOUNDS[(setup.name, mode)]
    with SERVERS[setup.name]([say("unused")], mode=mode) as server:
        result = setup.run(server, monkeypatch, timeout=bound + 30)
    check_failed_cleanly(setup, result, bound=bound)
    check_retries_are_idle(setup, result)
