"""A scripted OpenAI-compatible chat server on 127.0.0.1, for running real agent CLIs in tests.

    server = ScriptedOpenAI(script=lambda request: "the reply text")
    env["OPENAI_API_BASE"] = server.base_url      # http://127.0.0.1:<port>/v1
    ...
    server.requests                               # every request body, as parsed JSON
    server.close()

POST <base>/chat/completions answers with the text the script returns for that
request, streamed (SSE, in two chunks then a usage chunk) when the request asks
for "stream", else as one JSON body. The script gets the request's JSON (with
"path" and "index", its 0-based number among the requests, added) and returns
the reply's text. The default script answers aider's commit-message requests
with COMMIT_MESSAGE and everything else with DEFAULT_REPLY.

`mode` chooses a failure instead of a reply (it may be changed while running):
  "ok"        the script's reply;
  "down"      nothing listens at base_url: the port was bound, then closed, so a
              connection is refused;
  "error5xx"  every request gets HTTP `status` (default 503) with an OpenAI-style
              error body;
  "hang"      the request is read, recorded, then never answered: the handler
              waits until close() (at most `hang_seconds`).
Every request is recorded in `requests` (also in "error5xx" and "hang") with
its arrival time in "received_at" (time.monotonic()).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable

MODES = ("ok", "down", "error5xx", "hang")
COMMIT_MESSAGE = "feat: add hello.txt"
DEFAULT_REPLY = "I will create the file.\n\nhello.txt\n```\nhello from the scripted model\n```\n"
USAGE = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}

Script = Callable[[dict], str]


def system_text(request: dict) -> str:
    return " ".join(str(m.get("content")) for m in request.get("messages", [])
                    if m.get("role") == "system")  # fmt: skip


def is_commit_message_request(request: dict) -> bool:
    """aider asks for a commit message with a system prompt about writing one."""
    return "commit message" in system_text(request).lower()


def request_text(request: dict) -> str:
    """Everything the client sent in the messages, as one string (for "is X in the chat?")."""
    parts = []
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            parts += [str(c.get("text", c)) if isinstance(c, dict) else str(c) for c in content]
        else:
            parts.append(str(content))
    return "\n".join(parts)


def default_script(request: dict) -> str:
    return COMMIT_MESSAGE if is_commit_message_request(request) else DEFAULT_REPLY


class ScriptedOpenAI:
    def __init__(self, script: Script | None = None, mode: str = "ok", status: int = 503,
                 hang_seconds: float = 900.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.script = script or default_script
        self.mode = mode
        self.status = status
        self.hang_seconds = hang_seconds
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.server: http.server.ThreadingHTTPServer | None = None
        if mode == "down":
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            # closed again: connections are refused (unless another process takes the port)
        else:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
            self.server.daemon_threads = True
            port = self.server.server_port
            threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True).start()  # fmt: skip
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def close(self) -> None:
        self._closing.set()  # hung handlers return
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> ScriptedOpenAI:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r.get("path", "").endswith("/chat/completions")]

    def _record(self, path: str, request: dict) -> dict:
        with self._lock:
            request = {**request, "path": path, "index": len(self.requests),
                       "received_at": time.monotonic()}  # fmt: skip
            self.requests.append(request)
        return request

    def _handler(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                request = outer._record(self.path, body if isinstance(body, dict) else {})
                if outer.mode == "hang":
                    outer._closing.wait(outer.hang_seconds)
                    self.close_connection = True
                    return
                if outer.mode == "error5xx":
                    self.send_json(outer.status, {"error": {
                        "message": "scripted server error", "type": "server_error",
                        "code": str(outer.status)}})  # fmt: skip
                    return
                if not self.path.endswith("/chat/completions"):
                    self.send_json(404, {"error": {"message": "not found"}})
                    return
                text = outer.script(request)
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

        return Handler
