"""Scripted model servers on 127.0.0.1 that the real agent CLIs can be pointed at.

    ScriptedAnthropic   the Anthropic Messages API as Claude Code uses it
                        (POST /v1/messages, streamed SSE or plain JSON; tool_use blocks)
    ScriptedResponses   the OpenAI Responses API as codex uses it
                        (POST /v1/responses, streamed SSE; function_call / custom_tool_call items)

Both take a *script*, record every request, and can instead play a failure mode.

A script is a list of turns, or a callable ``ctx -> turn``. A turn is a `Turn`
(text and/or tool calls), a plain str (just text), or a list of `ToolCall` /
str items. Helpers build them:

    shell("git commit -qam 'x'")        run one shell command (the CLI's own shell tool:
                                        claude's Bash, codex's exec_command / shell / ...)
    run("cmd1", "cmd2", text="...")     one turn with several shell calls
    say("final words")                  a text-only turn: the CLI's last turn
    tool("Write", file_path=..., ...)   any tool by its name, with its input

With a list, the n-th turn of a conversation (`ctx.turn`: how many assistant
turns its history already holds) gets script[n]; past the end it gets
`say("done")`. A callable gets a `Context` (turn, session, body, messages,
prompt, tool results, headers) and returns the turn. `reviewer_script()` is a
scripted role that reads the prompt and answers from it.

Only the *main* conversation is scripted: a request that offers no tools
(claude's helper calls: titles, summaries...) gets `side_text` (default "ok")
and does not count as a turn.

Failure modes, per server (`mode=`):

    "ok"        the script (default)
    "down"      nothing listens: a port was bound, read and closed again
    "error5xx"  every request answers `status` (529 overloaded for Anthropic, 500 for OpenAI)
    "hang"      connections are accepted and read, and never answered until close()
    "stall"     the streamed answer starts (200 and the first event), then nothing, until close()

Use as a context manager (or call close()); close() never blocks on a hung handler.
`chunk_delay=` streams text word by word with that many seconds between words (a slow model).

Pointing the CLIs at them (tests/test_cli_real.py does this):

    claude  ANTHROPIC_BASE_URL=<server.origin> (no /v1), ANTHROPIC_API_KEY=anything,
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, and IS_SANDBOX=1 when root.
            At start-up it sends HEAD / (answered 200); then POST /v1/messages?beta=true,
            stream: true, 24 tools; the prompt is the last text block of the first user
            message (after a <system-reminder> block), and messages may hold role "system".
            Conversations are told apart by the x-claude-code-session-id header.
    codex   CODEX_API_KEY=anything (OPENAI_API_KEY is ignored) and
            -c openai_base_url=<server.base_url>. It first tries a WebSocket (GET
            /v1/responses with Upgrade): the server answers 426, codex logs "failed to connect
            to Responses WebSocket" and falls back to POST /v1/responses at once. A provider
            table with supports_websockets=false skips the WebSocket. codex-cli 0.171 with its
            default model sends no top-level `tools`: an input item {"type":
            "additional_tools"} holds namespaces of tools, and the only shell route is the
            freeform tool "exec" (JavaScript calling tools.exec_command({cmd})); the server
            sees which shell tools are offered (exec, exec_command, shell_command, shell,
            local_shell) and calls the right one. Results come back as custom_tool_call_output
            / function_call_output items. Conversations are told apart by the session-id
            header (or prompt_cache_key).
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SECRET_HEADERS = {"authorization", "x-api-key", "cookie", "proxy-authorization", "openai-api-key"}
MODES = ("ok", "down", "error5xx", "hang", "stall")


# --- what a script says ------------------------------------------------------------------


@dataclass
class ToolCall:
    """One tool call. name None with `command` set: the server's shell tool, whatever its name."""

    name: str | None = None
    input: Any = None  # dict for function tools, str for freeform (custom) tools
    command: str | None = None  # for the shell tool


@dataclass
class Turn:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


TurnLike = Turn | str | ToolCall | list


def shell(command: str) -> ToolCall:
    """Run one shell command with the CLI's own shell tool."""
    return ToolCall(command=command)


def tool(name: str, input: Any = None, **kwargs: Any) -> ToolCall:
    """Call a tool by its name: tool("Write", file_path="/x", content="y")."""
    return ToolCall(name=name, input=input if input is not None else kwargs)


def run(*commands: str, text: str = "") -> Turn:
    """One assistant turn running these shell commands (in parallel tool calls)."""
    return Turn(text=text, tool_calls=[shell(c) for c in commands])


def say(text: str) -> Turn:
    """A text-only turn: the CLI takes it as the final answer."""
    return Turn(text=text)


def as_turn(value: TurnLike | None) -> Turn:
    if value is None:
        return say("done")
    if isinstance(value, Turn):
        return value
    if isinstance(value, str):
        return say(value)
    if isinstance(value, ToolCall):
        return Turn(tool_calls=[value])
    if isinstance(value, (list, tuple)):
        texts = [v for v in value if isinstance(v, str)]
        calls = [v for v in value if isinstance(v, ToolCall)]
        return Turn(text="\n".join(texts), tool_calls=calls)
    raise TypeError(f"a script step must be a Turn, str, ToolCall or list, not {value!r}")


def quote(text: str) -> str:
    """Single-quote a string for a shell command line (the CLI's shell, not ours)."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def write_file(path: str, content: str) -> str:
    """A shell command writing CONTENT to PATH (printf, so no trailing newline is added)."""
    return f"printf %s {quote(content)} > {quote(path)}"


def commit_all(message: str) -> str:
    return f"git add -A && git commit -q -m {quote(message)}"


@dataclass
class Context:
    """What a script callable sees about one request of the main conversation."""

    server: Any
    path: str
    headers: dict[str, str]
    body: dict
    turn: int  # assistant turns already in this conversation's history (0: its first request)
    session: int  # which conversation this is on this server (0, 1, ... in order of first sight)
    messages: list  # Anthropic: body["messages"]; Responses: body["input"]
    prompt: str  # every text of the user's messages of the conversation, joined
    tool_results: list[str]  # the outputs of the previous turn's tool calls, in order
    tools: list[str]  # names of the tools the CLI offers

    @property
    def report_file(self) -> str | None:
        """The report path the prompt names (a KANBAN_REPORT_FILE=... or `.../report.md`)."""
        return find_report_path(self.prompt)


_REPORT = re.compile(r"(?:KANBAN_REPORT_FILE\s*[=:]\s*|`)(/[^\s`'\"]+\.md)`?")


def find_report_path(text: str) -> str | None:
    found = _REPORT.findall(text or "")
    return found[-1] if found else None


Script = Callable[[Context], TurnLike] | Iterable[TurnLike]


def reviewer_script(reject_first: int = 1, report_env: bool = False) -> Callable[[Context], TurnLike]:
    """A reviewer: writes `verdict: reject` into the report file for its first REJECT_FIRST
    conversations on the server, `verdict: approve` after that, then ends with a summary.

    The report path is read from the prompt (or, with report_env, "$KANBAN_REPORT_FILE").
    """

    def script(ctx: Context) -> TurnLike:
        verdict = "reject" if ctx.session < reject_first else "approve"
        target = "$KANBAN_REPORT_FILE" if report_env else ctx.report_file
        if ctx.turn == 0:
            if not target:
                return say("verdict: reject\nI cannot find the report file in my prompt.")
            dest = target if report_env else quote(target)
            body = f"Review {ctx.session + 1}.\n\nverdict: {verdict}\n"
            return run(f"printf %s {quote(body)} > {dest}")
        return say(f"Reviewed: verdict: {verdict}")

    return script


def task_script(files: Mapping[str, str], message: str, report: str | None = "verdict: done\n",
                final: str = "Done.") -> list[TurnLike]:
    """A task agent: writes FILES (relative paths) and commits them in one turn, writes REPORT
    to $KANBAN_REPORT_FILE in the next (when given), then says FINAL."""
    commands = [write_file(path, content) for path, content in files.items()]
    steps: list[TurnLike] = [run(" && ".join(commands + [commit_all(message)]))]
    if report is not None:
        steps.append(run(f'printf %s {quote(report)} > "$KANBAN_REPORT_FILE"'))
    steps.append(say(final))
    return steps


# --- the server machinery ----------------------------------------------------------------


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class ScriptedServer:
    """Base: a ThreadingHTTPServer on 127.0.0.1 with a script, a request log and failure modes."""

    default_status = 500
    side_text = "ok"

    def __init__(self, script: Script | None = None, *, mode: str = "ok", status: int | None = None,
                 side_text: str | None = None, model: str = "scripted-model",
                 chunk_delay: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.status = status or self.default_status
        self.model = model
        self.chunk_delay = chunk_delay  # seconds between streamed text pieces (a slow model)
        if side_text is not None:
            self.side_text = side_text
        self._script_fn, self._script_list = None, None
        if callable(script):
            self._script_fn = script
        else:
            self._script_list = list(script) if script is not None else [say("done")]
        self.requests: list[dict] = []  # every request: method, path, headers (no secrets), body
        self.errors: list[str] = []  # exceptions raised while answering (a broken script)
        self.hung = 0  # connections held open by hang / stall
        self._sessions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if mode == "down":
            self.port = free_port()
        else:
            self._server = _Server(("127.0.0.1", 0), self._handler_class())
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.base_url = self.origin + "/v1"

    # -- lifecycle

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; hung handlers are released (their connections closed). Never blocks long."""
        self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- queries for tests

    def main_requests(self) -> list[dict]:
        """The recorded requests that belong to the scripted conversation(s)."""
        return [r for r in self.requests if r.get("main")]

    def first_prompt(self) -> str:
        main = self.main_requests()
        return main[0]["prompt"] if main else ""

    def wait_for_requests(self, count: int = 1, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return True
            time.sleep(0.05)
        return len(self.requests) >= count

    # -- to override

    def is_main(self, path: str, body: dict) -> bool:
        raise NotImplementedError

    def history(self, body: dict) -> list:
        raise NotImplementedError

    def conversation_key(self, headers: dict[str, str], body: dict) -> str | None:
        return None

    def answer(self, handler, path: str, body: dict, turn: Turn | None, record: dict) -> None:
        raise NotImplementedError

    def answer_other(self, handler, method: str, path: str, body: dict) -> None:
        handler.send_json(404, {"error": {"message": f"no {method} {path} here"}})

    def error_body(self) -> dict:
        return {"error": {"message": "scripted failure", "type": "server_error"}}

    def start_stall(self, handler, path: str, body: dict) -> None:
        """Send the status line and the first event of a stream, then return (the caller hangs)."""
        handler.start_sse()

    # -- helpers for subclasses

    def next_turn(self, ctx: Context) -> Turn:
        if self._script_fn is not None:
            return as_turn(self._script_fn(ctx))
        steps = self._script_list or []
        return as_turn(steps[ctx.turn] if ctx.turn < len(steps) else None)

    def _session_for(self, key: str | None, turn: int) -> int:
        with self._lock:
            if key is None:  # no id: a conversation starts with each first-turn request
                key = f"anon-{len(self._sessions)}" if turn == 0 else f"anon-{max(len(self._sessions) - 1, 0)}"
            if key not in self._sessions:
                self._sessions[key] = len(self._sessions)
            return self._sessions[key]

    def _hang(self, handler) -> None:
        with self._lock:
            self.hung += 1
        while not self._closed.wait(0.1):
            pass
        handler.close_connection = True

    def _pieces(self, text: str) -> list[str]:
        """TEXT in streamed pieces: two halves, or word by word (waiting chunk_delay) when slow."""
        if self.chunk_delay <= 0:
            half = len(text) // 2
            return [text[:half], text[half:]]
        return _Slow(re.findall(r"\S+\s*", text) or [text], self.chunk_delay, self._closed)

    def _handler_class(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "scripted-model/1"
            sys_version = ""

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> tuple[bytes, dict]:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not length and "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    raw = self._read_chunked()
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                return raw, body if isinstance(body, dict) else {"_json": body}

            def _read_chunked(self) -> bytes:
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            def _handle(self, method: str) -> None:
                try:
                    raw, body = self._body() if method in ("POST", "PUT", "PATCH") else (b"", {})
                except (OSError, ValueError):
                    return
                headers = {k.lower(): v for k, v in self.headers.items()
                           if k.lower() not in SECRET_HEADERS}
                record = {"method": method, "path": self.path, "headers": headers, "body": body,
                          "time": time.time(), "auth": any(
                              k.lower() in SECRET_HEADERS for k in self.headers.keys())}
                with outer._lock:
                    outer.requests.append(record)
                try:
                    outer._dispatch(self, method, record)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                except Exception as exc:  # noqa: BLE001 - a broken script: answer 500, and let the test see it
                    outer.errors.append(f"{type(exc).__name__}: {exc}")
                    try:
                        self.send_json(500, {"error": {"message": f"scripted server error: {exc}"}})
                    except OSError:
                        pass

            def do_POST(self) -> None:
                self._handle("POST")

            def do_GET(self) -> None:
                self._handle("GET")

            def do_HEAD(self) -> None:
                self._handle("HEAD")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

            def do_OPTIONS(self) -> None:
                self._handle("OPTIONS")

            def send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def start_sse(self, headers: Mapping[str, str] | None = None) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.close_connection = True

            def event(self, name: str | None, obj: Any) -> None:
                head = f"event: {name}\n".encode() if name else b""
                self.wfile.write(head + b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

        return Handler

    def _dispatch(self, handler, method: str, record: dict) -> None:
        path, body = record["path"], record["body"]
        if self.mode == "hang":
            self._hang(handler)
            return
        if self.mode == "error5xx":
            handler.send_json(self.status, self.error_body())
            return
        route = path.split("?", 1)[0]
        if method == "POST" and self.is_main(route, body):
            record["main"] = True
            if self.mode == "stall":
                self.start_stall(handler, route, body)
                self._hang(handler)
                return
            history = self.history(body)
            turn = self.count_turns(history)
            session = self._session_for(self.conversation_key(record["headers"], body), turn)
            ctx = Context(server=self, path=route, headers=record["headers"], body=body, turn=turn,
                          session=session, messages=history, prompt=self.user_text(history),
                          tool_results=self.last_tool_results(history), tools=self.tool_names(body))
            record.update(turn=turn, session=session, prompt=ctx.prompt)
            step = self.next_turn(ctx)
            record["reply"] = step
            self.answer(handler, route, body, step, record)
            return
        if self.mode == "stall" and method == "POST" and self.is_side(route, body):
            self.start_stall(handler, route, body)
            self._hang(handler)
            return
        self.answer_other(handler, method, route, body)

    def is_side(self, path: str, body: dict) -> bool:
        return False

    def count_turns(self, history: list) -> int:
        raise NotImplementedError

    def user_text(self, history: list) -> str:
        raise NotImplementedError

    def last_tool_results(self, history: list) -> list[str]:
        raise NotImplementedError

    def tool_names(self, body: dict) -> list[str]:
        names = []
        for t in body.get("tools") or []:
            if isinstance(t, dict):
                names.append(t.get("name") or (t.get("function") or {}).get("name") or t.get("type"))
        return [n for n in names if n]


class _Slow(list):
    """A list whose iteration sleeps DELAY before each item after the first (until closed)."""

    def __init__(self, items, delay: float, closed: threading.Event) -> None:
        super().__init__(items)
        self.delay, self.closed = delay, closed

    def __iter__(self):
        for i, item in enumerate(list.__iter__(self)):
            if i and self.closed.wait(self.delay):
                return
            yield item


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --- Anthropic Messages API ----------------------------------------------------------------


class ScriptedAnthropic(ScriptedServer):
    """POST /v1/messages as Claude Code calls it.

    Point claude at it with ANTHROPIC_BASE_URL=server.origin (no /v1: claude adds it) and any
    ANTHROPIC_API_KEY. The main conversation is the requests that offer tools; claude's helper
    calls without tools get `side_text`.
    """

    default_status = 529
    shell_tool = "Bash"

    def is_main(self, path: str, body: dict) -> bool:
        return path.endswith("/v1/messages") and bool(body.get("tools"))

    def is_side(self, path: str, body: dict) -> bool:
        return path.endswith("/v1/messages")

    def conversation_key(self, headers: dict[str, str], body: dict) -> str | None:
        return headers.get("x-claude-code-session-id")

    def history(self, body: dict) -> list:
        return list(body.get("messages") or [])

    def count_turns(self, history: list) -> int:
        return sum(1 for m in history if isinstance(m, dict) and m.get("role") == "assistant")

    @staticmethod
    def _texts(content) -> list[str]:
        if isinstance(content, str):
            return [content]
        out = []
        for block in content or []:
            if isinstance(block, dict) and block.get("type") == "text":
                out.append(str(block.get("text", "")))
        return out

    def user_text(self, history: list) -> str:
        return "\n".join(t for m in history if isinstance(m, dict) and m.get("role") == "user"
                         for t in self._texts(m.get("content")))

    def last_tool_results(self, history: list) -> list[str]:
        if not history or history[-1].get("role") != "user":
            return []
        out = []
        for block in history[-1].get("content") or []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                out.append(content if isinstance(content, str) else "\n".join(self._texts(content)))
        return out

    def error_body(self) -> dict:
        kind = "overloaded_error" if self.status == 529 else "api_error"
        return {"type": "error", "error": {"type": kind, "message": "scripted failure"}}

    def _blocks(self, turn: Turn) -> list[dict]:
        blocks: list[dict] = []
        if turn.text:
            blocks.append({"type": "text", "text": turn.text})
        for call in turn.tool_calls:
            if call.name is None:
                name, args = self.shell_tool, {"command": call.command, "description": "scripted command"}
            else:
                name, args = call.name, call.input if call.input is not None else {}
            blocks.append({"type": "tool_use", "id": _new_id("toolu_"), "name": name, "input": args})
        if not blocks:
            blocks.append({"type": "text", "text": "done"})
        return blocks

    def _usage(self, body: dict) -> dict:
        size = len(json.dumps(body.get("messages") or []))
        return {"input_tokens": max(1, size // 4), "output_tokens": 25,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

    def answer(self, handler, path: str, body: dict, turn: Turn | None, record: dict) -> None:
        blocks = self._blocks(turn or say(self.side_text))
        self._reply(handler, body, blocks)

    def _reply(self, handler, body: dict, blocks: list[dict]) -> None:
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        usage = self._usage(body)
        message = {"id": _new_id("msg_"), "type": "message", "role": "assistant",
                   "model": body.get("model") or self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        if not body.get("stream"):
            handler.send_json(200, {**message, "content": blocks, "stop_reason": stop,
                                    "usage": usage}, {"request-id": _new_id("req_")})
            return
        handler.start_sse({"request-id": _new_id("req_")})
        handler.event("message_start", {"type": "message_start", "message": message})
        handler.event("ping", {"type": "ping"})
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                handler.event("content_block_start", {"type": "content_block_start", "index": i,
                                                      "content_block": {"type": "text", "text": ""}})
                for part in self._pieces(block["text"]):
                    if part:
                        handler.event("content_block_delta", {
                            "type": "content_block_delta", "index": i,
                            "delta": {"type": "text_delta", "text": part}})
            else:
                handler.event("content_block_start", {
                    "type": "content_block_start", "index": i,
                    "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                      "input": {}}})
                partial = json.dumps(block["input"])
                half = len(partial) // 2
                for part in (partial[:half], partial[half:]):
                    handler.event("content_block_delta", {
                        "type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": part}})
            handler.event("content_block_stop", {"type": "content_block_stop", "index": i})
        handler.event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": stop, "stop_sequence": None},
                                        "usage": {"output_tokens": usage["output_tokens"]}})
        handler.event("message_stop", {"type": "message_stop"})

    def start_stall(self, handler, path: str, body: dict) -> None:
        handler.start_sse()
        message = {"id": _new_id("msg_"), "type": "message", "role": "assistant",
                   "model": body.get("model") or self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
        handler.event("message_start", {"type": "message_start", "message": message})

    def answer_other(self, handler, method: str, path: str, body: dict) -> None:
        if method == "POST" and path.endswith("/v1/messages"):  # a helper call without tools
            self._reply(handler, body, [{"type": "text", "text": self.side_text}])
        elif method == "POST" and path.endswith("/count_tokens"):
            size = len(json.dumps(body.get("messages") or [])) + len(json.dumps(body.get("tools") or []))
            handler.send_json(200, {"input_tokens": max(1, size // 4)})
        elif method in ("GET", "HEAD") and path.rstrip("/").endswith("/v1/models"):
            handler.send_json(200, {"data": [{"type": "model", "id": self.model,
                                              "display_name": self.model,
                                              "created_at": "2025-01-01T00:00:00Z"}],
                                    "has_more": False, "first_id": self.model, "last_id": self.model})
        elif method in ("GET", "HEAD") and path in ("/", "/v1", "/v1/"):
            handler.send_json(200, {"ok": True})
        else:
            handler.send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                                 "message": f"no {method} {path}"}})


# --- OpenAI Responses API -------------------------------------------------------------------


ASSISTANT_ITEMS = {"function_call", "custom_tool_call", "local_shell_call", "reasoning",
                   "web_search_call", "tool_search_call"}
OUTPUT_ITEMS = {"function_call_output", "custom_tool_call_output", "local_shell_call_output",
                "tool_search_output"}


class ScriptedResponses(ScriptedServer):
    """POST /v1/responses as codex calls it (HTTP + SSE; a WebSocket upgrade is refused).

    Point codex at it with `-c openai_base_url=<server.base_url>` (or a model_providers table
    with base_url) and CODEX_API_KEY set. The shell tool is whichever of codex's shell tools
    the request offers (exec_command, shell_command, shell, local_shell).
    """

    default_status = 500

    def is_main(self, path: str, body: dict) -> bool:
        return path.endswith("/responses") and bool(self.tool_names(body))

    def is_side(self, path: str, body: dict) -> bool:
        return path.endswith("/responses")

    @staticmethod
    def offered_tools(body: dict) -> list[dict]:
        """Every tool the request offers: top-level `tools`, and the `additional_tools` input
        items codex 0.171 sends instead ("responses lite"), namespaces flattened."""
        out: list[dict] = []

        def walk(tools, namespace=None):
            for t in tools or []:
                if not isinstance(t, dict):
                    continue
                if t.get("type") == "namespace":
                    walk(t.get("tools"), t.get("name"))
                else:
                    out.append({**t, "_namespace": namespace})

        walk(body.get("tools"))
        for item in body.get("input") or []:
            if isinstance(item, dict) and item.get("type") == "additional_tools":
                walk(item.get("tools"))
        return out

    def tool_names(self, body: dict) -> list[str]:
        return [t.get("name") or t.get("type") for t in self.offered_tools(body)]

    def conversation_key(self, headers: dict[str, str], body: dict) -> str | None:
        return (headers.get("session_id") or headers.get("session-id")
                or headers.get("conversation_id") or body.get("prompt_cache_key"))

    def history(self, body: dict) -> list:
        items = body.get("input") or []
        return [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else list(items)

    @staticmethod
    def _assistant(item: dict) -> bool:
        kind = item.get("type")
        return kind in ASSISTANT_ITEMS or (kind == "message" and item.get("role") == "assistant")

    def count_turns(self, history: list) -> int:
        turns, inside = 0, False
        for item in history:
            if not isinstance(item, dict):
                continue
            mine = self._assistant(item)
            if mine and not inside:
                turns += 1
            inside = mine
        return turns

    @staticmethod
    def _texts(content) -> list[str]:
        if isinstance(content, str):
            return [content]
        return [str(c.get("text", "")) for c in content or []
                if isinstance(c, dict) and c.get("type") in ("input_text", "output_text", "text")]

    def user_text(self, history: list) -> str:
        return "\n".join(t for m in history if isinstance(m, dict) and m.get("role") == "user"
                         for t in self._texts(m.get("content")))

    def last_tool_results(self, history: list) -> list[str]:
        out = []
        for item in reversed(history):
            if not isinstance(item, dict) or item.get("type") not in OUTPUT_ITEMS:
                break
            output = item.get("output")
            if isinstance(output, dict):
                output = output.get("content") or json.dumps(output)
            elif isinstance(output, list):
                output = "\n".join(self._texts(output))
            out.append(str(output))
        return list(reversed(out))

    def _shell_item(self, tools: list[dict], command: str) -> dict:
        names = {(t.get("name") or t.get("type")): t for t in tools if isinstance(t, dict)}
        call_id = _new_id("call_")
        if "exec" in names and names["exec"].get("type") == "custom":
            # code mode: the one shell route is JavaScript calling the nested exec_command
            js = ("const r = await tools.exec_command({cmd: " + json.dumps(command)
                  + ", yield_time_ms: 30000});\n"
                  "text(typeof r === \"string\" ? r : JSON.stringify(r));\n")
            return {"type": "custom_tool_call", "name": "exec", "call_id": call_id, "input": js}
        if "exec_command" in names:
            args = {"cmd": command, "yield_time_ms": 10000}
            return {"type": "function_call", "name": "exec_command", "call_id": call_id,
                    "arguments": json.dumps(args)}
        if "shell_command" in names:
            return {"type": "function_call", "name": "shell_command", "call_id": call_id,
                    "arguments": json.dumps({"command": command, "timeout_ms": 60000})}
        if "shell" in names:
            return {"type": "function_call", "name": "shell", "call_id": call_id,
                    "arguments": json.dumps({"command": ["bash", "-lc", command], "timeout_ms": 60000})}
        if "local_shell" in names:
            return {"type": "local_shell_call", "call_id": call_id, "status": "completed",
                    "action": {"type": "exec", "command": ["bash", "-lc", command], "timeout_ms": 60000}}
        raise ValueError(f"the request offers no shell tool (tools: {sorted(names)})")

    def _items(self, body: dict, turn: Turn) -> list[dict]:
        items: list[dict] = []
        tools = self.offered_tools(body)
        for call in turn.tool_calls:
            if call.name is None:
                item = self._shell_item(tools, call.command or "")
            elif isinstance(call.input, str):  # a freeform tool, e.g. apply_patch
                item = {"type": "custom_tool_call", "name": call.name, "call_id": _new_id("call_"),
                        "input": call.input}
            else:
                item = {"type": "function_call", "name": call.name, "call_id": _new_id("call_"),
                        "arguments": json.dumps(call.input or {})}
            item.setdefault("id", _new_id("fc_"))
            item.setdefault("status", "completed")
            items.append(item)
        if turn.text or not items:
            items.append({"type": "message", "id": _new_id("msg_"), "role": "assistant",
                          "status": "completed",
                          "content": [{"type": "output_text", "text": turn.text or "done",
                                       "annotations": []}]})
        return items

    def _response(self, resp_id: str, body: dict, status: str, output: list | None = None,
                  usage: dict | None = None) -> dict:
        return {"id": resp_id, "object": "response", "created_at": int(time.time()),
                "status": status, "model": body.get("model") or self.model, "output": output or [],
                "usage": usage}

    def answer(self, handler, path: str, body: dict, turn: Turn | None, record: dict) -> None:
        self._stream(handler, body, self._items(body, turn or say(self.side_text)))

    def _stream(self, handler, body: dict, items: list[dict]) -> None:
        resp_id = _new_id("resp_")
        size = len(json.dumps(body.get("input") or []))
        usage = {"input_tokens": max(1, size // 4), "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": 25, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": max(1, size // 4) + 25}
        if not body.get("stream", True):
            handler.send_json(200, self._response(resp_id, body, "completed", items, usage))
            return
        handler.start_sse({"x-request-id": _new_id("req_")})
        seq = iter(range(1, 1_000_000))
        handler.event("response.created", {"type": "response.created", "sequence_number": next(seq),
                                           "response": self._response(resp_id, body, "in_progress")})
        for index, item in enumerate(items):
            added = dict(item)
            if item["type"] == "message":
                added = {**item, "content": [], "status": "in_progress"}
            handler.event("response.output_item.added", {
                "type": "response.output_item.added", "sequence_number": next(seq),
                "output_index": index, "item": added})
            if item["type"] == "message":
                for part in self._pieces(item["content"][0]["text"]):
                    if part:
                        handler.event("response.output_text.delta", {
                            "type": "response.output_text.delta", "sequence_number": next(seq),
                            "item_id": item["id"], "output_index": index, "content_index": 0,
                            "delta": part})
            handler.event("response.output_item.done", {
                "type": "response.output_item.done", "sequence_number": next(seq),
                "output_index": index, "item": item})
        handler.event("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                             "response": self._response(resp_id, body, "completed", items,
                                                                        usage)})

    def start_stall(self, handler, path: str, body: dict) -> None:
        handler.start_sse()
        handler.event("response.created", {"type": "response.created", "sequence_number": 1,
                                           "response": self._response(_new_id("resp_"), body,
                                                                      "in_progress")})

    def answer_other(self, handler, method: str, path: str, body: dict) -> None:
        if method == "POST" and path.endswith("/responses"):  # a helper call without tools
            self._stream(handler, body, self._items(body, say(self.side_text)))
        elif method == "GET" and path.endswith("/responses"):  # a WebSocket upgrade: refuse it
            handler.send_json(426, {"error": {"message": "use HTTP POST", "type": "invalid_request_error"}})
        elif method in ("GET", "HEAD") and path.rstrip("/").endswith("/models"):
            handler.send_json(200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "scripted"}]})
        else:
            handler.send_json(404, {"error": {"message": f"no {method} {path}", "type": "not_found"}})

    def error_body(self) -> dict:
        return {"error": {"message": "scripted failure", "type": "server_error", "code": "server_error"}}
