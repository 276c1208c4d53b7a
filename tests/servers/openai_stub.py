"""A real OpenAI-compatible HTTP server on loopback whose behaviour a test scripts.

It answers `/v1/completions`, `/v1/chat/completions` and `/v1/models` like a real server,
records every request it received, and plays a per-prompt queue of faults (rate limits,
server errors, bad keys, garbled bodies, hangs, truncated answers) before answering
normally. Tests drive the real `OpenAIBackend` and `RequestEngine` against it.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANY_PROMPT = "*"


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, consumed by one request."""

    status: int = 200
    body: str | None = None  # sent verbatim instead of the normal answer
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering (to outlast a client timeout)
    finish_reason: str | None = None  # answer normally, but with this finish_reason


def rate_limited(retry_after: str | None = None) -> Fault:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Fault(429, _error_body("Rate limit reached, slow down"), headers)


def server_error(status: int = 500) -> Fault:
    return Fault(status, _error_body(f"internal trouble {status}"))


def unauthorized() -> Fault:
    return Fault(401, _error_body("Incorrect API key provided"))


def unknown_model(model: str = "no-such-model") -> Fault:
    body = json.dumps(
        {"error": {"message": f"The model `{model}` does not exist", "code": "model_not_found"}}
    )
    return Fault(404, body)


def bad_request(message: str) -> Fault:
    return Fault(400, _error_body(message))


def garbled() -> Fault:
    return Fault(200, "{this is not json")


def no_choices() -> Fault:
    return Fault(200, json.dumps({"id": "x", "object": "text_completion", "choices": []}))


def hang(seconds: float) -> Fault:
    return Fault(hang_s=seconds)


def truncated() -> Fault:
    return Fault(finish_reason="length")


def _error_body(message: str) -> str:
    return json.dumps({"error": {"message": message, "type": "stub_error"}})


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


class OpenAIStub:
    """Start with `with OpenAIStub() as stub:`; `stub.base_url` ends in /v1."""

    def __init__(self, model: str = "stub-model") -> None:
        self.model = model
        self.replies: dict[str, str] = {}
        self.received: list[Received] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------

    def reply(self, prompt: str, text: str) -> None:
        self.replies[prompt] = text

    def plan(self, prompt: str, *faults: Fault) -> None:
        """Queue faults for `prompt` (or ANY_PROMPT); each request consumes the next one."""
        with self._lock:
            self._faults[prompt].extend(faults)

    def answer_for(self, prompt: str) -> str:
        return self.replies.get(prompt, f"answer to: {prompt}")

    def hits(self, prompt: str | None = None) -> int:
        """Completion requests received (for one prompt, or all)."""
        with self._lock:
            bodies = [r.body for r in self.received if r.method == "POST" and r.body is not None]
        return sum(1 for b in bodies if prompt is None or _prompt_of(b) == prompt)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> OpenAIStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # release hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------

    def _record(self, received: Received) -> Fault | None:
        with self._lock:
            self.received.append(received)
            if received.body is None:
                return None
            prompt = _prompt_of(received.body)
            for name in (prompt, ANY_PROMPT):
                if self._faults.get(name):
                    return self._faults[name].popleft()
        return None


def _prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1]["content"])
    return str(body.get("prompt", ""))


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.owner._record(Received("GET", self.path, dict(self.headers), None))
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": self.owner.model}]}))
        else:
            self._send(404, _error_body("no such route"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        fault = self.owner._record(Received("POST", self.path, dict(self.headers), body)) or Fault()
        if fault.hang_s:
            self.owner._stopping.wait(fault.hang_s)
        if fault.status != 200 or fault.body is not None:
            self._send(fault.status, fault.body or "", fault.headers)
            return
        if self.path == "/v1/completions":
            choice: dict[str, Any] = {"index": 0, "text": self.owner.answer_for(body["prompt"])}
            kind = "text_completion"
        elif self.path == "/v1/chat/completions":
            content = self.owner.answer_for(_prompt_of(body))
            choice = {"index": 0, "message": {"role": "assistant", "content": content}}
            kind = "chat.completion"
        else:
            self._send(404, _error_body("no such route"))
            return
        choice["finish_reason"] = fault.finish_reason or "stop"
        text = choice.get("text") or choice.get("message", {}).get("content", "")
        usage = {
            "prompt_tokens": len(_prompt_of(body).split()),
            "completion_tokens": len(text.split()),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        answer = {
            "id": "stub-1",
            "object": kind,
            "model": body.get("model"),
            "choices": [choice],
            "usage": usage,
        }
        self._send(200, json.dumps(answer))

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass
