"""A loopback fake of Anthropic's Messages API: real HTTP on 127.0.0.1, answers decided by the
request alone, a simulated prompt cache, and the faults a client must survive.

Routes: `POST /v1/messages` and `GET /v1/models` (the client's fail-fast check); `GET
/fake/stats` says what it received and served. More routes plug in with `add_route(method,
path_regex, handler)` (Message Batches: anthropic_batches_fake.py), and `message(params)` is
the answer to one request's `params`, usable for a batch's lines as well.

What it checks, as the real API does (so that a wrong mapping fails here, not in production):
the `anthropic-version` header, `x-api-key` when `api_key` is set, the body's fields (no
extra ones such as `presence_penalty` or `seed`; `model`, `max_tokens` and `messages`
required; roles user and assistant only; no empty text; at most 4 cache breakpoints;
`temperature` and `top_p` not both, as current models refuse), and the model (`models`).

Answers: a chat prompt of this package gets `ScriptedChatModel`'s answer (the same messages
always get the same text, in any process), `end_turn`, unless `answer(params)` says
otherwise. Tokens are counted by a stand-in tokenizer: about 3.5 characters a token, plus 3
per message for its role and turn markers.

Prompt cache: the prefix up to each `cache_control` breakpoint is looked up (by its text,
for `cache_ttl_s` after its last use). The longest cached one is read
(`cache_read_input_tokens`); the last breakpoint's prefix, if not cached, is written
(`cache_creation_input_tokens`) and can be read once this answer is sent, so that requests
sent together all miss, as on the real API. A prefix shorter than `min_cache_tokens` (the
model's minimum; 1024 for Claude Sonnet 4.5) is neither read nor written. `input_tokens`
is the rest.

Faults (`faults=MessageFaults(...)`): a share of `POST /v1/messages` requests, drawn from
(seed, body, attempt), get 429 `rate_limit_error` with `retry-after`, 529 `overloaded_error`,
500 `api_error`, a dropped connection, a hang (`hang_s`), or a refusal (a 200 with
`stop_reason: refusal`); after `max_in_a_row` the same body is answered. `refuse(params)`
refuses a request every time. `delay_s=(lo, hi)`: each message waits that long first.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from selfinstruct.config import GenerationParams
from selfinstruct.llm.types import ChatMessage, CompletionRequest
from servers.scripted_chat import ScriptedChatModel

FAULT_KINDS = ("429", "529", "500", "drop", "hang", "refusal")
_FIELDS = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
}
_MAX_BREAKPOINTS = 4


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any  # the decoded JSON body; None for a GET


@dataclass(frozen=True)
class FakeResponse:
    status: int
    body: Any = None  # JSON-encoded when sent; bytes are sent as they are (a results file)
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without an answer
    hang_s: float = 0.0  # wait this long first (math.inf: until the fake stops)
    # Called once the answer is sent (a Message's prompt-cache writes become readable then;
    # a route that answers otherwise, such as a batch's results, calls it itself).
    on_sent: Callable[[], None] | None = None


Handler = Callable[[FakeRequest, "re.Match[str]"], FakeResponse]


def api_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> FakeResponse:
    """An error as the API writes it: {"type": "error", "error": {"type", "message"}}."""
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return FakeResponse(status, body, headers or {})


@dataclass(frozen=True)
class MessageFaults:
    """A share of message requests answered with faults, drawn from (seed, body, attempt), so
    that a run sees the same faults at any concurrency. After `max_in_a_row` faults the same
    body is answered."""

    share: float = 0.3
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    max_in_a_row: int = 3
    retry_after: str = "0.05"
    hang_s: float = 2.0  # longer than the client's timeout, or it is only a slow answer

    def pick(self, body_key: str, attempt: int) -> str | None:
        if attempt >= self.max_in_a_row:
            return None
        rng = random.Random(f"{self.seed}/{body_key}/{attempt}")
        return rng.choice(self.kinds) if rng.random() < self.share else None

    def response(self, kind: str) -> FakeResponse | None:
        """The fault's answer; None for a refusal (a 200, written by the message route)."""
        return {
            "429": api_error(
                429, "rate_limit_error", "rate limit exceeded", {"retry-after": self.retry_after}
            ),
            "529": api_error(529, "overloaded_error", "Overloaded"),
            "500": api_error(500, "api_error", "Internal server error"),
            "drop": FakeResponse(0, drop=True),
            "hang": FakeResponse(200, hang_s=self.hang_s),
            "refusal": None,
        }[kind]


def count_tokens(text: str) -> int:
    """The stand-in tokenizer: about 3.5 characters a token."""
    return math.ceil(len(text) * 2 / 7)


@dataclass(frozen=True)
class _Block:
    role: str
    text: str
    first_of_message: bool
    breakpoint: bool

    def tokens(self) -> int:
        return count_tokens(self.text) + (3 if self.first_of_message else 0)


class AnthropicFake:
    """Start with `with AnthropicFake() as fake:`; `fake.base_url` ends in /v1."""

    def __init__(
        self,
        models: tuple[str, ...] = ("claude-fake",),
        *,
        faults: MessageFaults | None = None,
        api_key: str | None = None,
        min_cache_tokens: int = 1024,
        cache_ttl_s: float = 300.0,
        refuse: Callable[[dict[str, Any]], bool] | None = None,
        answer: Callable[[dict[str, Any]], str | tuple[str, str]] | None = None,
        delay_s: tuple[float, float] = (0.0, 0.0),
        port: int = 0,
    ) -> None:
        self.models = models
        self.faults = faults  # may be replaced between runs
        self.api_key = api_key
        self.min_cache_tokens = min_cache_tokens
        self.cache_ttl_s = cache_ttl_s
        self.refuse = refuse
        self.answer = answer
        self.delay_s = delay_s  # every message waits a random time in [lo, hi] seconds first
        self.port = port
        self.received: list[FakeRequest] = []
        self.served: Counter[str] = Counter()  # fault kind -> times served
        self.usage: Counter[str] = Counter()  # usage field -> tokens answered, all requests
        self._attempts: Counter[str] = Counter()
        self._cache: dict[str, float] = {}  # prefix digest -> when it expires
        self._ids = itertools.count(1)
        self._model = ScriptedChatModel()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.add_route("POST", r"/v1/messages", self._messages_route)
        self.add_route("GET", r"/v1/models", self._models_route)
        self.add_route("GET", r"/fake/stats", lambda request, match: FakeResponse(200, self.stats()))

    # -- extending and reading it ----------------------------------------------------------

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method` on paths that match `path` (a regex, matched whole) with `handler`."""
        self.routes.append((method, re.compile(path), handler))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "messages": sum(1 for r in self.received if r.method == "POST" and r.path == "/v1/messages"),
                "served": dict(self.served),
                "usage": dict(self.usage),
            }

    def hits(self) -> int:
        """Message requests received."""
        return self.stats()["messages"]

    # -- one Messages request -------------------------------------------------------------

    def message(self, params: Any, refused: bool = False) -> FakeResponse:
        """The answer to one request body (`params`): a Message, or the API's 4xx."""
        problem = self._invalid(params)
        if problem is not None:
            return problem
        if params["model"] not in self.models:
            return api_error(404, "not_found_error", f"model: {params['model']}")
        blocks = _blocks_of(params)
        if refused or (self.refuse is not None and self.refuse(params)):
            text, stop = "", "refusal"
        else:
            text, stop = self._answer(params)
        read, written, commit = self._use_cache(params["model"], blocks)
        usage = {
            "input_tokens": sum(b.tokens() for b in blocks) - read - written,
            "output_tokens": count_tokens(text),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }
        with self._lock:
            self.usage.update(usage)
        content = [{"type": "text", "text": text}] if text else []
        message = {
            "id": f"msg_fake_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        return FakeResponse(200, message, on_sent=commit)

    def _answer(self, params: dict[str, Any]) -> tuple[str, str]:
        if self.answer is not None:
            given = self.answer(params)
            return given if isinstance(given, tuple) else (given, "end_turn")
        system = params.get("system")
        messages = [ChatMessage("system", _text(system))] if system else []
        messages += [ChatMessage(m["role"], _text(m["content"])) for m in params["messages"]]
        sampling = GenerationParams(
            max_tokens=params["max_tokens"],
            temperature=params.get("temperature", 1.0),
            top_p=params.get("top_p", 1.0),
        )
        try:
            completion = self._model.complete(CompletionRequest.chat(messages, sampling), timeout=30.0)
        except AssertionError:  # not a chat prompt of this package
            return f"answer to: {messages[-1].content}", "end_turn"
        return completion.text, "end_turn"

    def _use_cache(self, model: str, blocks: list[_Block]) -> tuple[int, int, Callable[[], None]]:
        """(tokens read, tokens written, what stores the prefixes once the answer is sent)
        for a request with these blocks; see the module doc."""
        prefixes = []  # (digest, tokens) of each breakpoint's prefix long enough to cache
        for end, block in enumerate(blocks, start=1):
            if block.breakpoint:
                tokens = sum(b.tokens() for b in blocks[:end])
                if tokens >= self.min_cache_tokens:
                    text = json.dumps([model] + [[b.role, b.text, b.first_of_message] for b in blocks[:end]])
                    prefixes.append((hashlib.sha256(text.encode()).hexdigest(), tokens))
        now = time.monotonic()
        read = 0
        with self._lock:
            for digest, tokens in prefixes:
                if self._cache.get(digest, 0.0) > now:
                    read = max(read, tokens)
                    self._cache[digest] = now + self.cache_ttl_s
            last = prefixes[-1] if prefixes else None
            written = last[1] - read if last is not None and last[1] > read else 0

        def commit() -> None:
            with self._lock:
                until = time.monotonic() + self.cache_ttl_s
                for digest, _ in prefixes:
                    self._cache[digest] = max(self._cache.get(digest, 0.0), until)

        return read, written, commit

    def _invalid(self, params: Any) -> FakeResponse | None:
        def bad(message: str) -> FakeResponse:
            return api_error(400, "invalid_request_error", message)

        if not isinstance(params, dict):
            return bad("body: Input should be an object")
        extra = sorted(set(params) - _FIELDS)
        if extra:
            return bad(f"{extra[0]}: Extra inputs are not permitted")
        for name in ("model", "max_tokens", "messages"):
            if name not in params:
                return bad(f"{name}: Field required")
        if not isinstance(params["max_tokens"], int) or params["max_tokens"] < 1:
            return bad("max_tokens: Input should be a positive integer")
        if "temperature" in params and "top_p" in params:
            return bad(
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
            )
        if not 0.0 <= params.get("temperature", 1.0) <= 1.0:
            return bad("temperature: Input should be less than or equal to 1")
        messages = params["messages"]
        if not isinstance(messages, list) or not messages:
            return bad("messages: at least one message is required")
        for n, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return bad(f"messages.{n}.role: Input should be 'user' or 'assistant'")
        try:
            blocks = _blocks_of(params)
        except ValueError as exc:
            return bad(str(exc))
        if sum(b.breakpoint for b in blocks) > _MAX_BREAKPOINTS:
            return bad(f"A maximum of {_MAX_BREAKPOINTS} blocks with cache_control may be provided.")
        return None

    # -- routes ---------------------------------------------------------------------------

    def _messages_route(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        refused = False
        if self.faults is not None:
            key = json.dumps(request.body, sort_keys=True)
            with self._lock:
                attempt = self._attempts[key]
                self._attempts[key] += 1
            kind = self.faults.pick(key, attempt)
            if kind is not None:
                with self._lock:
                    self.served[kind] += 1
                fault = self.faults.response(kind)
                if fault is not None and fault.hang_s == 0:
                    return fault
                if fault is not None:  # a hang, then the answer (to a client that no longer waits)
                    self._stopping.wait(None if math.isinf(fault.hang_s) else fault.hang_s)
                refused = kind == "refusal"
        if max(self.delay_s) > 0:
            self._stopping.wait(random.uniform(*self.delay_s))
        return self.message(request.body, refused=refused)

    def _models_route(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"}
            for m in self.models
        ]
        body = {"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]}
        return FakeResponse(200, body)

    def _refusal(self, request: FakeRequest) -> FakeResponse | None:
        """What the API says to any request before its route: a missing version or a bad key."""
        if request.path.startswith("/fake/"):
            return None
        if request.headers.get("anthropic-version") != "2023-06-01":
            return api_error(400, "invalid_request_error", "anthropic-version: header is required")
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return api_error(
                401, "authentication_error", f"invalid x-api-key {request.headers.get('x-api-key')}"
            )
        return None

    def serve(self, request: FakeRequest) -> FakeResponse:
        with self._lock:
            self.received.append(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        known = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match is not None:
                known = True
                if method == request.method:
                    return handler(request, match)
        return api_error(405 if known else 404, "not_found_error", f"{request.method} {request.path}")

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "fake not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> AnthropicFake:
        fake = self

        class Bound(_HttpHandler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Bound)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # release hanging handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> AnthropicFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prefix_tokens(params: dict[str, Any]) -> list[int]:
    """The stand-in tokens of the prefix up to each cache breakpoint of a request body."""
    blocks = _blocks_of(params)
    return [
        sum(b.tokens() for b in blocks[:end]) for end, block in enumerate(blocks, start=1) if block.breakpoint
    ]


def _text(content: Any) -> str:
    """A system or message content (a string, or text blocks) as the text the model reads."""
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in content)


def _blocks_of(params: dict[str, Any]) -> list[_Block]:
    """The request's text blocks in the order the cache sees them: system, then messages.
    ValueError for a block the API would refuse."""
    parts: list[tuple[str, Any]] = []
    if params.get("system"):
        parts.append(("system", params["system"]))
    parts += [(m["role"], m.get("content")) for m in params["messages"]]
    blocks = []
    for n, (role, content) in enumerate(parts):
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(items, list) or not items:
            raise ValueError(f"messages.{n}.content: Input should be a string or a list of blocks")
        for first, item in zip(itertools.chain([True], itertools.repeat(False)), items, strict=False):
            if (
                not isinstance(item, dict)
                or item.get("type") != "text"
                or not isinstance(item.get("text"), str)
            ):
                raise ValueError(f"messages.{n}.content: only text blocks are served here")
            if not item["text"]:
                raise ValueError("messages: text content blocks must be non-empty")
            control = item.get("cache_control")
            if control is not None and control != {"type": "ephemeral"}:
                raise ValueError("cache_control: Input tag does not match the expected 'ephemeral'")
            blocks.append(_Block(role, item["text"], first, control is not None))
    return blocks


class _HttpHandler(BaseHTTPRequestHandler):
    owner: AnthropicFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError):  # a client gone mid-request: not news
            super().handle()

    def do_GET(self) -> None:
        self._serve(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._send(api_error(400, "invalid_request_error", "the body is not JSON"))
            return
        self._serve(body)

    def _serve(self, body: Any) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.owner.serve(
            FakeRequest(self.command, parts.path, parse_qs(parts.query), headers, body)
        )
        self._send(response)

    def _send(self, response: FakeResponse) -> None:
        if response.drop:  # no status line, nothing: the client sees the connection close
            self.close_connection = True
            return
        raw = isinstance(response.body, bytes)
        data = response.body if raw else json.dumps(response.body).encode("utf-8")
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/binary" if raw else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a hang)
            pass
        if response.on_sent is not None:
            response.on_sent()
