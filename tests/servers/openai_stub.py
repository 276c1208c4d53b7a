"""A real OpenAI-compatible HTTP server on loopback whose behaviour a test scripts.

It answers `/v1/completions`, `/v1/chat/completions` and `/v1/models` like a real server,
records every request it received, and plays a per-prompt queue of faults (rate limits,
server errors, bad keys, garbled bodies, hangs, truncated answers, 200s that are not
answers) before answering normally. Tests drive the real `OpenAIBackend` and `RequestEngine` against it.

Optional modes, for whole runs of the `selfinstruct` command against it:
  scripted=True    answer each stage's prompt like a small model (servers/scripted_answers.py);
                   bootstrap_style=BootstrapStyle(...) for more new items per answer, or echoes
  faults=FaultPlan a share of requests drawn as faults, deterministically per request body
  delay_s=(lo, hi) every completion waits a random time in [lo, hi] seconds first
  logprobs         a request that asks gets token log-probabilities (servers/stub_logprobs.py);
                   send_logprobs=False: never any
  api_key=KEY      anything without "Bearer KEY" gets 401; strict_model=True: other models 404
  response_formats=TYPES  the response_format types it honours, e.g. ("text", "json_object") like
                   llama-cpp-python; another type gets that server's HTTP 500. A schema sent in an
                   honoured form gets a minimal JSON instance of it unless reply() scripted the
                   prompt. None (the default): the field is accepted and ignored, as some servers do.
It also runs as a process: `python tests/servers/openai_stub.py --port 0 --port-file PATH
[--scripted] [--faults JSON] [--delay LO[:HI]] [--response-formats T1,T2]` writes its port to PATH once it listens;
GET /stub/stats returns what it received and which faults it served.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:  # as `servers.stub_logprobs` under pytest, as a sibling module when run as a script
    from servers.stub_logprobs import Tokens, asked_top, logprobs_block, plain_tokens
except ModuleNotFoundError:
    from stub_logprobs import Tokens, asked_top, logprobs_block, plain_tokens  # type: ignore[no-redef]

ANY_PROMPT = "*"


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, consumed by one request."""

    status: int = 200
    body: str | None = None  # sent verbatim instead of the normal answer
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering (to outlast a client timeout)
    finish_reason: str | None = None  # answer normally, but with this finish_reason
    drop: bool = False  # close the connection without sending any response
    kind: str = ""  # a name under which the stub counts it as served (FaultPlan's faults)
    # Answer normally, but first let this change the answer's JSON body (a 200 that is not
    # an answer: no content, a filtered or failed finish, a broken usage object).
    edit: Callable[[dict[str, Any]], None] | None = None


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


def dropped() -> Fault:
    return Fault(drop=True)


_OMIT = object()  # _edit_choice: remove the field


def _edit_choice(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(answer: dict[str, Any]) -> None:
        choice = answer["choices"][0]
        for name, value in changes.items():
            if value is _OMIT:
                choice.pop(name, None)
            else:
                choice[name] = value

    return edit


def finished(reason: str) -> Fault:
    """A 200 whose choice ends with `reason` ("content_filter", "error", ...), text and all."""
    return Fault(edit=_edit_choice(finish_reason=reason))


def no_finish_reason() -> Fault:
    return Fault(edit=_edit_choice(finish_reason=_OMIT))


def no_content(**message: Any) -> Fault:
    """A chat answer whose message has `content: null` and `message`'s fields instead, as a
    refusal ({"refusal": "..."}), a tool call ({"tool_calls": [...]}) or a reasoning-only
    answer ({"reasoning_content": "..."}) comes back; on /completions, `text: null`."""

    def edit(answer: dict[str, Any]) -> None:
        choice = answer["choices"][0]
        if "message" in choice:
            choice["message"] = {"role": "assistant", "content": None, **message}
        else:
            choice["text"] = None

    return Fault(edit=edit)


def usage_of(usage: Any) -> Fault:
    """A normal answer whose `usage` is replaced by `usage` (a malformed one, for tests)."""

    def edit(answer: dict[str, Any]) -> None:
        answer["usage"] = usage

    return Fault(edit=edit)


FAULT_KINDS = ("429", "500", "503", "hang", "drop", "garbled", "length")
# 200s that are not answers; FaultPlan serves them when named in `kinds` or `permanent_kind`.
ANSWER_FAULT_KINDS = ("content_filter", "error", "no_finish_reason", "null_content", "bad_usage")


@dataclass(frozen=True)
class FaultPlan:
    """A share of requests answered with faults, drawn from (seed, request body, attempt number).

    The draw ignores timing and arrival order, so a run sees the same faults whatever its
    concurrency. Transient faults end: after `max_in_a_row` faults the same body is answered
    normally. A `permanent_share` of the bodies of `permanent_stage` ("bootstrap", "classify",
    "instances" or None for any) always get `permanent_kind`, to exhaust the client's retries.
    """

    share: float = 0.3
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    max_in_a_row: int = 3
    retry_after: str = "0.05"
    hang_s: float = 2.0  # longer than the client's timeout, or it is only a slow answer; inf = never
    # (JSON: Infinity)
    permanent_share: float = 0.0
    permanent_stage: str | None = None
    permanent_kind: str = "503"

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault plan keys {unknown}; known: {sorted(known)}")
        if "kinds" in data:
            data["kinds"] = tuple(data["kinds"])
        return cls(**data)

    def is_permanent(self, body_key: str, prompt: str) -> bool:
        if self.permanent_share <= 0:
            return False
        if self.permanent_stage is not None and _stage_of(prompt) != self.permanent_stage:
            return False
        return random.Random(f"{self.seed}/permanent/{body_key}").random() < self.permanent_share

    def pick(self, body_key: str, prompt: str, attempt: int) -> Fault | None:
        """The fault for attempt number `attempt` (0 = first) of this body, or None."""
        if self.is_permanent(body_key, prompt):
            return self.fault(self.permanent_kind)
        if attempt >= self.max_in_a_row:
            return None
        rng = random.Random(f"{self.seed}/{body_key}/{attempt}")
        if rng.random() >= self.share:
            return None
        return self.fault(rng.choice(self.kinds))

    def fault(self, kind: str) -> Fault:
        made = {
            "429": lambda: rate_limited(self.retry_after),
            "500": lambda: server_error(500),
            "503": lambda: server_error(503),
            "hang": lambda: hang(self.hang_s),
            "drop": dropped,
            "garbled": garbled,
            "length": truncated,
            "content_filter": lambda: finished("content_filter"),
            "error": lambda: finished("error"),
            "no_finish_reason": no_finish_reason,
            "null_content": lambda: no_content(refusal="I cannot help with that."),
            "bad_usage": lambda: usage_of({"prompt_tokens": "many", "completion_tokens": 3}),
        }
        if kind not in made:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS + ANSWER_FAULT_KINDS}")
        return replace(made[kind](), kind=kind)


def _stage_of(prompt: str) -> str:
    return str(_scripted().prompt_kind(prompt))


def _scripted() -> Any:
    # Imported on use: as `servers.scripted_answers` under pytest, as a sibling module when
    # this file runs as a script (then tests/servers itself is on sys.path).
    try:
        from servers import scripted_answers
    except ModuleNotFoundError:
        import scripted_answers  # type: ignore[no-redef]
    return scripted_answers


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

    def __init__(
        self,
        model: str = "stub-model",
        *,
        scripted: bool = False,
        bootstrap_style: Any = None,
        faults: FaultPlan | None = None,
        delay_s: tuple[float, float] = (0.0, 0.0),
        api_key: str | None = None,
        strict_model: bool = False,
        response_formats: tuple[str, ...] | None = None,
        chat_model: Any = None,
        port: int = 0,
    ) -> None:
        self.model = model
        self.scripted = scripted
        self.bootstrap_style = bootstrap_style  # a scripted_answers.BootstrapStyle; None = the default
        self.fault_plan = faults  # may be replaced (or set to None) between runs
        self.delay_s = delay_s
        self.api_key = api_key
        self.strict_model = strict_model
        self.response_formats = response_formats
        # Answers chat requests (a Backend such as servers.scripted_chat.ScriptedChatModel).
        self.chat_model = chat_model
        self.port = port
        self.served: Counter[str] = Counter()  # fault kind -> times served
        self.permanent: set[str] = set()  # bodies that got a permanent fault
        self._attempts: Counter[str] = Counter()  # request body -> times received
        self.replies: dict[str, str] = {}
        self.reply_logprobs: dict[str, Tokens] = {}
        self.send_logprobs = True
        self.received: list[Received] = []
        self.in_flight = 0  # POST requests being answered right now
        self.max_in_flight = 0  # the most answered at once since the stub started
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._seed_faults: dict[int, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------

    def reply(self, prompt: str, text: str, logprobs: Tokens | None = None) -> None:
        """Answer `prompt` with `text`; `logprobs` are its tokens, for a request that asks."""
        self.replies[prompt] = text
        if logprobs is not None:
            assert "".join(token for token, _ in logprobs) == text, "the tokens must make up the text"
            self.reply_logprobs[prompt] = logprobs

    def plan(self, prompt: str, *faults: Fault) -> None:
        """Queue faults for `prompt` (or ANY_PROMPT); each request consumes the next one."""
        with self._lock:
            self._faults[prompt].extend(faults)

    def plan_seed(self, seed: int, *faults: Fault) -> None:
        """Queue faults for the requests whose sampling seed is `seed` (one prompt of a run,
        when its text is not known in advance: a pipeline derives each prompt's seed)."""
        with self._lock:
            self._seed_faults[seed].extend(faults)

    def answer_for(self, prompt: str) -> str:
        return self.replies.get(prompt, f"answer to: {prompt}")

    def answer(self, prompt: str, seed: int | None, schema: dict[str, Any] | None = None) -> tuple[str, str]:
        """(text, finish_reason) of a normal answer: a scripted reply wins, then an instance of
        an honoured schema (what a constrained decoder must produce), then scripted mode."""
        if prompt not in self.replies and schema is not None:
            return json.dumps(minimal_instance(schema)), "stop"
        if prompt in self.replies or not self.scripted:
            return self.answer_for(prompt), "stop"
        answers = _scripted()
        scripted = answers.scripted_answer(prompt, seed, self.bootstrap_style or answers.BootstrapStyle())
        return scripted.text, scripted.finish_reason

    def stats(self) -> dict[str, Any]:
        """What GET /stub/stats returns: completions received, faults served, permanent bodies."""
        with self._lock:
            return {
                "completions": sum(1 for r in self.received if r.method == "POST"),
                "served": dict(self.served),
                "permanent": len(self.permanent),
            }

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

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
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
            refusal = self._refusal(received)
            if refusal is not None or received.body is None:
                return refusal
            prompt = _prompt_of(received.body)
            if self._seed_faults.get(received.body.get("seed")):  # type: ignore[arg-type]
                return self._seed_faults[received.body["seed"]].popleft()
            for name in (prompt, ANY_PROMPT):
                if self._faults.get(name):
                    return self._faults[name].popleft()
            return self._planned_fault(received.body, prompt)

    def _refusal(self, received: Received) -> Fault | None:
        """What a real server says to a wrong key (401) or a model it does not serve (404)."""
        if self.api_key is not None and received.headers.get("Authorization") != f"Bearer {self.api_key}":
            sent = received.headers.get("Authorization", "").removeprefix("Bearer ")
            # Real servers echo (part of) the wrong key: the client must not repeat it.
            return Fault(401, _error_body(f"Incorrect API key provided: {sent}"))
        if self.strict_model and received.body is not None and received.body.get("model") != self.model:
            return unknown_model(str(received.body.get("model")))
        form = (received.body or {}).get("response_format")
        formats = self.response_formats
        if formats is not None and isinstance(form, dict) and form.get("type") not in formats:
            # llama-cpp-python's answer to a type it does not know: a validation error, as a 500.
            allowed = " or ".join(repr(t) for t in formats)
            message = f"response_format.type: Input should be {allowed} (got {form.get('type')!r})"
            return Fault(500, json.dumps({"error": {"message": message, "type": "internal_server_error"}}))
        return None

    def honoured_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The JSON Schema a request asks for in a form this stub honours, or None."""
        form = body.get("response_format")
        if self.response_formats is None or not isinstance(form, dict):
            return None
        if form.get("type") == "json_schema" and "json_schema" in self.response_formats:
            schema = (form.get("json_schema") or {}).get("schema")
        elif form.get("type") == "json_object" and "json_object" in self.response_formats:
            schema = form.get("schema")
        else:
            return None
        return schema if isinstance(schema, dict) else None

    def _planned_fault(self, body: dict[str, Any], prompt: str) -> Fault | None:
        body_key = json.dumps(body, sort_keys=True)
        attempt = self._attempts[body_key]
        self._attempts[body_key] += 1
        if self.fault_plan is None:
            return None
        fault = self.fault_plan.pick(body_key, prompt, attempt)
        if fault is not None:
            self.served[fault.kind] += 1
            if self.fault_plan.is_permanent(body_key, prompt):
                self.permanent.add(body_key)
        return fault


def minimal_instance(schema: dict[str, Any]) -> Any:
    """The smallest value that satisfies `schema` (the keywords the pipeline's schemas use):
    an enum's or const's first value, an object of its required properties, the least items."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: minimal_instance(properties.get(name) or {}) for name in schema.get("required") or ()}
    if kind == "array":
        return [minimal_instance(schema.get("items") or {}) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    defaults: dict[Any, Any] = {"integer": 0, "number": 0, "boolean": False}
    return defaults.get(kind)


def _chat_answer(model: Any, body: dict[str, Any], schema: dict[str, Any] | None) -> tuple[str, str]:
    """What `model` answers to a chat request, with the schema the stub honours (if any)."""
    from selfinstruct.config import GenerationParams
    from selfinstruct.llm.types import ChatMessage, CompletionRequest

    params = GenerationParams(
        max_tokens=body.get("max_tokens", 16), temperature=body.get("temperature", 0.0),
        top_p=body.get("top_p", 1.0), seed=body.get("seed"),
    )  # fmt: skip
    messages = [ChatMessage(m["role"], m["content"]) for m in body["messages"]]
    request = CompletionRequest.chat(messages, params, json.dumps(schema) if schema is not None else None)
    completion = model.complete(request, timeout=30.0)
    return completion.text, completion.finish_reason


def _prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1]["content"])
    return str(body.get("prompt", ""))


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIStub
    protocol_version = "HTTP/1.1"
    _counted = False  # this request is in owner.in_flight

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError):  # a client killed mid-request: not news
            super().handle()

    def do_GET(self) -> None:
        if self.path == "/stub/stats":
            self._send(200, json.dumps(self.owner.stats()))
            return
        refusal = self.owner._record(Received("GET", self.path, dict(self.headers), None))
        if refusal is not None:
            self._send(refusal.status, refusal.body or "", refusal.headers)
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": self.owner.model}]}))
        else:
            self._send(404, _error_body("no such route"))

    def do_POST(self) -> None:
        # In flight from the request's arrival until its answer starts to leave (for tests
        # of concurrency limits: once the client has the answer it may send the next one).
        with self.owner._lock:
            self.owner.in_flight += 1
            self.owner.max_in_flight = max(self.owner.max_in_flight, self.owner.in_flight)
        self._counted = True
        try:
            self._answer_post()
        finally:
            self._count_out()

    def _count_out(self) -> None:
        if self._counted:
            self._counted = False
            with self.owner._lock:
                self.owner.in_flight -= 1

    def _answer_post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        fault = self.owner._record(Received("POST", self.path, dict(self.headers), body)) or Fault()
        if fault.drop:  # no status line, nothing: the client sees the connection close
            self.close_connection = True
            return
        if fault.status == 200 and max(self.owner.delay_s) > 0:
            self.owner._stopping.wait(random.uniform(*self.owner.delay_s))
        if fault.hang_s:  # math.inf: never answer (until the server stops)
            self.owner._stopping.wait(None if math.isinf(fault.hang_s) else fault.hang_s)
        if fault.status != 200 or fault.body is not None:
            self._send(fault.status, fault.body or "", fault.headers)
            return
        schema = self.owner.honoured_schema(body)
        if self.owner.chat_model is not None and "messages" in body:
            text, finish_reason = _chat_answer(self.owner.chat_model, body, schema)
        else:
            text, finish_reason = self.owner.answer(_prompt_of(body), body.get("seed"), schema)
        if self.path == "/v1/completions":
            choice: dict[str, Any] = {"index": 0, "text": text}
            kind = "text_completion"
        elif self.path == "/v1/chat/completions":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
            kind = "chat.completion"
        else:
            self._send(404, _error_body("no such route"))
            return
        choice["finish_reason"] = fault.finish_reason or finish_reason
        api = "chat" if "messages" in body else "completions"
        if self.owner.send_logprobs and asked_top(body, api):
            prompt = _prompt_of(body)
            tokens = self.owner.reply_logprobs.get(prompt) if prompt in self.owner.replies else None
            choice["logprobs"] = logprobs_block(tokens or plain_tokens(text), api, asked_top(body, api))
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
        if fault.edit is not None:
            fault.edit(answer)
        self._send(200, json.dumps(answer))

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        self._count_out()
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


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; the port goes to --port-file (written whole) once the stub listens."""
    parser = argparse.ArgumentParser(description="OpenAI-compatible stub server for tests")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--port-file", required=True, help="where to write the port once listening")
    parser.add_argument("--model", default="stub-model")
    parser.add_argument("--scripted", action="store_true", help="answer like a small model")
    parser.add_argument("--faults", type=FaultPlan.from_json, help="a FaultPlan as JSON")
    parser.add_argument("--delay", default="0", metavar="LO[:HI]", help="seconds before each answer")
    parser.add_argument("--response-formats", metavar="T1,T2", help="response_format types honoured")
    args = parser.parse_args(argv)
    low, _, high = args.delay.partition(":")
    stub = OpenAIStub(
        args.model,
        scripted=args.scripted,
        faults=args.faults,
        delay_s=(float(low), float(high or low)),
        response_formats=tuple(args.response_formats.split(",")) if args.response_formats else None,
        port=args.port,
    ).start()
    assert stub._server is not None
    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(str(stub._server.server_address[1]))
    os.replace(tmp, args.port_file)
    threading.Event().wait()  # until a signal ends the process


if __name__ == "__main__":
    main()
