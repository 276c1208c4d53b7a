"""The request layer's vocabulary: the request, the completion, and what a backend is.

A backend turns one `CompletionRequest` into one `Completion`, or raises
`RetryableBackendError` (worth another try) or `BackendError` (stop the run). It knows
nothing of retries, caching or concurrency: that is the request engine's job.

What a backend can do beyond that is declared, not guessed: every backend has the
capabilities of `Backend` (mypy checks them; `BackendBase` gives the defaults of a local,
text-only model), and a backend that talks to OpenAI-compatible servers is also an
`HttpBackend`, and one that can call a running request off is a `CancellableBackend`. The
engine, the pipeline and the CLI ask `isinstance(backend, HttpBackend)` rather than
probing for attributes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from selfinstruct.config import GenerationParams


@lru_cache(maxsize=64)
def params_json(params: GenerationParams) -> dict[str, Any]:
    """`params` as the store key and the store's request record show them. A stage sends
    thousands of requests with a handful of parameter sets: each is dumped once. The dict is
    shared: callers must not change it."""
    dumped: dict[str, Any] = params.model_dump(mode="json")
    return dumped


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """One prompt to complete, with everything that determines the answer.

    A text prompt (`prompt`) is continued by a base model. A chat request (`messages`, built
    with `CompletionRequest.chat`) is answered by a chat model; its `prompt` is a readable
    rendering of the messages, for logs and people reading the store. `response_schema`
    (JSON text of a JSON Schema) asks a server that supports it for an answer of that shape.

    `shared_prefix` says how many of the first messages many requests of the stage share
    word for word (the system message, a fixed set of demonstrations): a provider whose
    prompt cache must be told where a reusable prefix ends (Anthropic's `cache_control`)
    marks it there. It changes no text the model reads, so it is not part of the key.
    """

    prompt: str
    params: GenerationParams
    # Several samples of the same prompt differ only by this index (and the seed derived from it).
    sample_index: int = 0
    messages: tuple[ChatMessage, ...] = ()
    response_schema: str | None = None
    shared_prefix: int = 0

    @classmethod
    def chat(
        cls,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        response_schema: str | None = None,
        sample_index: int = 0,
        shared_prefix: int | None = None,
    ) -> CompletionRequest:
        """A chat request; by default its system message, if it has one, is the shared prefix."""
        rendered = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
        if shared_prefix is None:
            shared_prefix = 1 if messages and messages[0].role == "system" else 0
        if not 0 <= shared_prefix <= len(messages):
            raise ValueError(f"shared_prefix {shared_prefix} of {len(messages)} messages")
        return cls(rendered, params, sample_index, tuple(messages), response_schema, shared_prefix)

    def text_length(self) -> int:
        """The characters the model reads: the prompt, or the messages' text (not their roles)."""
        if self.messages:
            return sum(len(m.content) for m in self.messages)
        return len(self.prompt)

    def key(self, backend_identity: dict[str, Any]) -> str:
        """A stable hash of everything that determines the response; never includes secrets."""
        payload: dict[str, Any] = {
            "backend": backend_identity,
            "prompt": self.prompt,
            "params": params_json(self.params),
            "sample_index": self.sample_index,
        }
        # Only when set, so that every text request keeps the key it always had.
        if self.messages:
            payload["messages"] = [[m.role, m.content] for m in self.messages]
        if self.response_schema is not None:
            payload["response_schema"] = self.response_schema
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenLogprobs:
    """One generated token: its text, and the log-probabilities (natural log) of the most
    likely texts at its position, text -> logprob, as many as the request's `top_logprobs`
    asked for (a server may add the generated token itself when it is not among them)."""

    token: str
    top: dict[str, float]


@dataclass(frozen=True)
class Completion:
    """One model response. `finish_reason` is "stop" or "length" (as OpenAI reports it).

    `prompt_tokens` counts every token the model read. Of those, a provider's prompt cache
    served `cache_read_tokens` (billed at a fraction of the input price) and wrote
    `cache_write_tokens` (Anthropic bills a write above the input price; OpenAI writes for free).
    `logprobs` has one entry per generated token when the request asked for them
    (`GenerationParams.top_logprobs`) and the backend could give them; else it is empty.
    """

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    logprobs: tuple[TokenLogprobs, ...] = ()
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict (which deep-copies every field): once per answer stored.
        data: dict[str, Any] = {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "extra": copy.deepcopy(self.extra) if self.extra else {},
        }
        # Only when there are some, so that every other stored answer reads as it always did.
        if self.logprobs:
            data["logprobs"] = [[t.token, t.top] for t in self.logprobs]
        if self.cache_read_tokens:
            data["cache_read_tokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            data["cache_write_tokens"] = self.cache_write_tokens
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(
            text=data["text"],
            finish_reason=data["finish_reason"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            extra=dict(data.get("extra") or {}),
            logprobs=tuple(TokenLogprobs(str(token), dict(top)) for token, top in data.get("logprobs") or ()),
            cache_read_tokens=int(data.get("cache_read_tokens", 0)),
            cache_write_tokens=int(data.get("cache_write_tokens", 0)),
        )


class StreamAborted(Exception):
    """Inside a worker: a fatal error elsewhere has stopped the requests this one came with,
    or the caller no longer needs its answer (the stream was dismissed)."""


class Backend(Protocol):
    """A model that completes prompts."""

    # Answers chat requests (`CompletionRequest.messages`); the engine refuses them to any other.
    chat: bool
    # A stuck call is worth a twin (a remote server); a local model would compete with itself.
    hedgeable: bool

    def identity(self) -> dict[str, Any]:
        """What distinguishes this backend's answers (kind, model, ...); part of the cache key."""
        ...

    def legacy_identities(self) -> list[dict[str, Any]]:
        """Identities an older version keyed this backend's answers under (looked up too)."""
        ...

    def check(self) -> None:
        """Fail fast (BackendError) when the model cannot answer at all (a dead server, a bad key)."""
        ...

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        """Complete one prompt, or raise RetryableBackendError / BackendError."""
        ...

    def close(self) -> None: ...


class BackendBase:
    """The defaults of `Backend`'s capabilities: a local model that completes text prompts."""

    chat: bool = False
    hedgeable: bool = False

    def legacy_identities(self) -> list[dict[str, Any]]:
        return []

    def check(self) -> None:
        """A model loaded in this process answers once it has loaded."""

    def close(self) -> None:
        """Nothing to release."""


@runtime_checkable
class CancellableBackend(Backend, Protocol):
    """A backend whose running calls can be called off: an in-process model, where a request
    nobody waits for any more would go on using the CPU that the next stage needs. (A
    server's answer is worth storing for a later run, so HTTP calls are left to finish.)"""

    def complete_cancellable(
        self, request: CompletionRequest, timeout: float, cancel: threading.Event
    ) -> Completion:
        """`complete`, or StreamAborted soon after `cancel` is set."""
        ...


@runtime_checkable
class HttpBackend(Backend, Protocol):
    """A backend in front of one or several OpenAI-compatible servers."""

    # How a response_schema is asked for (openai/output_modes.py); "auto" until settled.
    output_mode: str

    def urls(self) -> list[str]:
        """The base URL of every server behind it, in order (for messages and the metrics)."""
        ...

    def probe_output_mode(self) -> str:
        """Ask the server which output mode it honours; remember and return it."""
        ...
