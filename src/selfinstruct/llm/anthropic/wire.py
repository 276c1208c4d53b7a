"""A request as the Messages API carries it: `message_params`, the one mapping of a
`CompletionRequest` onto the body of `POST /v1/messages`. A Message Batch request's `params`
are the same dict, so both paths send the same request and get answers stored under the
same key.

- The chat prompts of every stage map as they are: a leading system message becomes
  `system`, the turns become `messages`. A text prompt (for a base model) is one user turn.
- `max_tokens` is always sent (the API requires it); `stop` becomes `stop_sequences`.
- Current Claude models take `temperature` or `top_p`, not both (a 400 otherwise): the
  temperature is sent, unless it is left at 1 (the API's default) and `top_p` narrows the
  sampling instead. The Messages API has no presence or frequency penalty, no repeat
  penalty, no seed and no log-probabilities: those fields are not sent (they stay in the
  request's key, which is about what we asked for).
- Prompt caching: the request's `shared_prefix` (the system message, or the system message
  and a stage's fixed demonstrations) ends in a `cache_control` breakpoint, so that its
  tokens are read from Anthropic's cache on the requests after the first (at a tenth of
  the input price). A marked message's text goes as one text block with the breakpoint
  instead of a plain string: the model reads the same text either way.
"""

from __future__ import annotations

from typing import Any

from selfinstruct.config import GenerationParams
from selfinstruct.errors import BackendError
from selfinstruct.llm.types import ChatMessage, CompletionRequest

ANTHROPIC_VERSION = "2023-06-01"
# The prompt cache's breakpoint: the prefix up to and including the marked block is cached
# (5 minutes, renewed by each read).
CACHE_BREAKPOINT = {"type": "ephemeral"}


def message_params(request: CompletionRequest, model: str, cache: bool = True) -> dict[str, Any]:
    """The Messages API's request body for `request`; with `cache`, its shared prefix ends in
    a cache breakpoint (where it has one)."""
    messages = list(request.messages) or [ChatMessage("user", request.prompt)]
    marked = request.shared_prefix - 1 if cache and request.messages else -1
    system: list[ChatMessage] = []
    while messages and messages[0].role == "system":
        system.append(messages.pop(0))
    if any(m.role == "system" for m in messages):
        raise BackendError("the Messages API takes system messages only at the start of a conversation")
    params: dict[str, Any] = {"model": model, **sampling(request.params)}
    if system:
        text = "\n\n".join(m.content for m in system)
        params["system"] = _blocks(text) if 0 <= marked < len(system) else text
    params["messages"] = [
        {"role": m.role, "content": _blocks(m.content) if n + len(system) == marked else m.content}
        for n, m in enumerate(messages)
    ]
    return params


def sampling(params: GenerationParams) -> dict[str, Any]:
    """The sampling fields of a request, as the Messages API names them."""
    fields: dict[str, Any] = {"max_tokens": params.max_tokens}
    if params.temperature == 1.0 and params.top_p < 1.0:
        fields["top_p"] = params.top_p
    else:
        fields["temperature"] = params.temperature
    if params.stop:
        fields["stop_sequences"] = list(params.stop)
    return fields


def _blocks(text: str) -> list[dict[str, Any]]:
    """`text` as one text block that ends the cached prefix."""
    return [{"type": "text", "text": text, "cache_control": dict(CACHE_BREAKPOINT)}]
