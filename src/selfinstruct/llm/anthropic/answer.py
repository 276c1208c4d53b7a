"""A Message (the Messages API's answer) -> a `Completion`, or why it is no answer.

The body of a 200 from `POST /v1/messages` and the `message` of a succeeded Message Batch
result are the same object, so both paths read it here. Only an answer the pipeline can
use becomes a `Completion`; everything else raises `RetryableBackendError`, so the engine
retries it, never stores it, and records it in failed.jsonl with this reason if it persists:
- a body that is not a Message, or a `usage` that is not counts ("garbled");
- a `refusal`, a tool call (`tool_use`: any text is a preamble to the call, not an answer),
  a content without text ("no_content");
- a `stop_reason` that says the text is not a finished answer: `pause_turn`, a context
  window exceeded, an unknown one, or none ("not_an_answer").
`end_turn` and `stop_sequence` are our "stop"; `max_tokens` is "length", a real answer
whose last item the stages drop.

Usage: `input_tokens` counts only what came after the last cache breakpoint; the tokens
read from the prompt cache (`cache_read_input_tokens`) and written to it
(`cache_creation_input_tokens`) come on top. A `Completion`'s `prompt_tokens` is their sum,
every token the model read, as OpenAI counts it.
"""

from __future__ import annotations

import json
from typing import Any

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.answer_checks import garbled, kind_of, short, token_count
from selfinstruct.llm.types import Completion

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def parse_message_body(body: bytes | str) -> Completion:
    """The completion in a 200's body from `POST /v1/messages`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise garbled(f"not JSON ({type(exc).__name__})") from None
    return completion_of_message(data)


def completion_of_message(message: Any) -> Completion:
    """The completion in a Message object (a decoded body, or a batch result's `message`)."""
    if not isinstance(message, dict):
        raise garbled(f"the body is {kind_of(message)}, not an object")
    if message.get("type") == "error":
        error = message.get("error")
        detail = error.get("message") if isinstance(error, dict) else None
        raise RetryableBackendError(f"an error in a 200: {short(str(detail))}", kind="server")
    content = message.get("content")
    if not isinstance(content, list):
        raise garbled(f"content is {kind_of(content)}, not a list")
    text = _text_of(content)
    finish_reason = _finish_reason_of(message.get("stop_reason"), text)
    usage = message.get("usage")
    if usage is None:
        usage = {}  # accounting, not the answer
    if not isinstance(usage, dict):
        raise garbled(f"usage is {kind_of(usage)}, not an object")
    read = token_count(usage, "cache_read_input_tokens")
    written = token_count(usage, "cache_creation_input_tokens")
    return Completion(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=token_count(usage, "input_tokens") + read + written,
        completion_tokens=token_count(usage, "output_tokens"),
        cache_read_tokens=read,
        cache_write_tokens=written,
    )


def _text_of(content: list[Any]) -> str:
    """The text blocks, joined (other blocks, such as a tool call, are not text)."""
    texts = []
    for block in content:
        if not isinstance(block, dict):
            raise garbled(f"a content block is {kind_of(block)}, not an object")
        if block.get("type") == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise garbled(f"a text block's text is {kind_of(text)}, not a string")
            texts.append(text)
    return "".join(texts)


def _finish_reason_of(reason: Any, text: str) -> str:
    if reason == "refusal":
        raise RetryableBackendError("the answer has no content: refused", kind="no_content")
    if reason == "tool_use":
        raise RetryableBackendError("the answer is a tool call, not text", kind="no_content")
    if reason is None:
        # A text that may be unfinished must not be stored as a finished one.
        raise RetryableBackendError("the answer has no stop_reason", kind="not_an_answer")
    if not isinstance(reason, str):
        raise garbled(f"stop_reason is {kind_of(reason)}, not a string")
    if reason not in STOP_REASONS:
        raise RetryableBackendError(
            f"the answer ended with stop_reason {short(reason)!r}", kind="not_an_answer"
        )
    if not text:
        raise RetryableBackendError("the answer has no content: no text", kind="no_content")
    return STOP_REASONS[reason]
