"""aider's preset end to end: a scripted OpenAI-compatible server, a real aider, real git.

The server answers every chat completion with a fixed reply holding an edit
in aider's "whole" format (the one it uses for openai/gpt-4o-mini), and a
commit message when aider asks for one. The test runs the preset's argv in
a git worktree and expects aider's own commit with the file in it.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kanban.config import AgentConfig
from kanban.presets import build_argv, missing_credentials, parse_cost, preset_env

MODEL = "openai/gpt-4o-mini"  # "openai/" + any name: litellm's OpenAI-compatible route
CONTENT = "hello from the scripted model\n"
REPLY = f"I will create the file.\n\nhello.txt\n```\n{CONTENT}```\n"
COMMIT_MESSAGE = "feat: add hello.txt"
USAGE = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}
AIDER_DIRS = ["/work/tools/aider-venv/bin"] + [
    d for d in os.environ.get("KANBAN_AGENT_TOOLS", "").split(os.pathsep) if d]


def find_aider() -> str | None:
    found = shutil.which("aider")
    if found:
        return found
    for folder in AIDER_DIRS:
        path = Path(folder) / "aider"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


class ScriptedOpenAI:
    """POST /v1/chat/completions with a fixed reply, streamed (SSE) or not, on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append({"path": self.path, **request})
                if not self.path.endswith("/chat/completions"):
                    self.send_json(404, {"error": {"message": "not found"}})
                    return
                system = " ".join(str(m.get("content")) for m in request.get("messages", [])
                                  if m.get("role") == "system")  # fmt: skip
                text = COMMIT_MESSAGE if "commit message" in system.lower() else REPLY
                if request.get("stream"):
                    self.stream(request, text)
                else:
                    self.send_json(200, {
                        "id": "chatcmpl-1", "object": "chat.completion",
                        "created": int(time.time()), "model": request.get("model"), "usage": USAGE,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                    })  # fmt: skip

            def send_json(self, status: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def stream(self, request: dict, text: str) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": request.get("model")}  # fmt: skip
                middle = len(text) // 2
                chunks = [
                    {"index": 0, "delta": {"role": "assistant", "content": text[:middle]},
                     "finish_reason": None},
                    {"index": 0, "delta": {"content": text[middle:]}, "finish_reason": None},
                    {"index": 0, "delta": {}, "finish_reason": "stop"},
                ]  # fmt: skip
                for choice in chunks:
                    self.event({**base, "choices": [choice]})
                self.event({**base, "choices": [], "usage": USAGE})
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def event(self, obj: dict) -> None:
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def aider_cli() -> str:
    path = find_aider()
    if path is None:
        pytest.skip("aider is not installed (looked on PATH and in " + ", ".join(AIDER_DIRS)
                    + "); pip install aider-chat to run this test")
    return path


@pytest.fixture
def api():
    server = ScriptedOpenAI()
    yield server
    server.close()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "no-stream"])
def test_aider_preset_commits_the_scripted_edit(tmp_path, repo, api, aider_cli, stream):
    worktree = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", "-b", "task/T-1", str(worktree))
    before = git(worktree, "rev-parse", "HEAD").strip()
    gitignore_before = git(worktree, "ls-files", ".gitignore")
    prompt_file = tmp_path / "prompt.md"
    prompt_file.write_text("Create hello.txt saying hello.\n")

    agent = AgentConfig(preset="aider", model=MODEL,
                        extra_args=() if stream else ("--no-stream",))  # fmt: skip
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_API_BASE")) and not k.startswith("AIDER_")}
    env.update(preset_env(agent))
    env.update(OPENAI_API_KEY="dummy", OPENAI_API_BASE=api.base_url,
               PATH=str(Path(aider_cli).parent) + os.pathsep + env.get("PATH", ""))  # fmt: skip
    assert missing_credentials(agent, env) is None
    argv = build_argv(agent, {"prompt_file": str(prompt_file), "prompt": "unused",
                              "task_id": "T-1", "role": "task", "worktree": str(worktree),
                              "model": MODEL})  # fmt: skip

    proc = subprocess.run(argv, cwd=worktree, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    log = proc.stdout + proc.stderr

    assert proc.returncode == 0, log
    assert any(bool(r.get("stream")) is stream for r in api.requests), api.requests
    after = git(worktree, "rev-parse", "HEAD").strip()
    assert after != before, log
    assert git(worktree, "rev-list", "--count", f"{before}..{after}").strip() == "1"
    assert git(worktree, "log", "-1", "--format=%s").strip() == COMMIT_MESSAGE
    assert git(worktree, "show", "--name-only", "--format=", "HEAD").split() == ["hello.txt"]
    assert (worktree / "hello.txt").read_text() == CONTENT
    # the worktree is clean apart from aider's untracked repo-map cache
    assert git(worktree, "status", "--porcelain", "--untracked-files=no") == ""
    untracked = git(worktree, "status", "--porcelain").split("\n")
    assert all(line.startswith("?? .aider.tags.cache") for line in untracked if line), untracked
    assert git(worktree, "ls-files", ".gitignore") == gitignore_before
    assert not list(worktree.glob(".aider.*history*"))  # history files went to /dev/null
    # main is untouched: the commit is on the task's branch only
    assert git(repo, "rev-parse", "main").strip() == before
    cost = parse_cost("aider", log)
    assert cost["tokens"] and cost["tokens"] > 0, log
    assert cost["cost_usd"] is not None and cost["cost_usd"] > 0, log  # litellm knows its prices
