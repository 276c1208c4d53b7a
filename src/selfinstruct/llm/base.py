"""What every model backend shares: the request, the completion, and the Backend protocol.

A backend turns one `CompletionRequest` into one `Completion`, or raises
`RetryableBackendError` (worth another try) or `BackendError` (stop the run). It knows
nothing of retries, caching or concurrency: that is the request engine's job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from selfinstruct.config import GenerationParams


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
    """

    prompt: str
    params: GenerationParams
    # Several samples of the same prompt differ only by this index (and the seed derived from it).
    sample_index: int = 0
    messages: tuple[ChatMessage, ...] = ()
    response_schema: str | None = None

    @classmethod
    def chat(
        cls,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        response_schema: str | None = None,
        sample_index: int = 0,
    ) -> CompletionRequest:
        rendered = "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)
        return cls(rendered, params, sample_index, tuple(messages), response_schema)

    def key(self, backend_identity: dict[str, Any]) -> str:
        """A stable hash of everything that determines the response; never includes secrets."""
        payload: dict[str, Any] = {
            "backend": backend_identity,
            "prompt": self.prompt,
            "params": self.params.model_dump(mode="json"),
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
class Completion:
    """One model response. `finish_reason` is "stop" or "length" (as OpenAI reports it)."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(
            text=data["text"],
            finish_reason=data["finish_reason"],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            extra=dict(data.get("extra") or {}),
        )


class Backend(Protocol):
    """A model that completes prompts.

    A backend that also answers chat requests (`CompletionRequest.messages`) has a class
    attribute `chat = True`; the engine refuses chat requests to any other.
    """

    def identity(self) -> dict[str, Any]:
        """What distinguishes this backend's answers (kind, model, url); part of the cache key."""
        ...

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        """Complete one prompt, or raise RetryableBackendError / BackendError."""
        ...

    def close(self) -> None: ...
