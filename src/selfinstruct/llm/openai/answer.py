"""The body of an OpenAI-compatible completion or chat answer -> a `Completion`, or why not.

A server's 200 is untrusted text. Only an answer the pipeline can use becomes a
`Completion`: text, a finish reason of "stop" or "length", and token counts. Everything else
raises `RetryableBackendError`, so the engine retries it, never stores it, and records it
in failed.jsonl with this reason if it persists:
- a body that is not the expected JSON shape, or a `usage` object that is not counts ("garbled");
- a chat message with `content: null` (a refusal, a tool call, a reasoning-only answer) ("no_content");
- a finish reason that says the text is not a finished answer: `content_filter`, `error`,
  a tool call, or none at all ("not_an_answer").
An answer cut by `max_tokens` ("length") is a real answer: the stages drop its last item.
Of its prompt tokens, those the server's prefix cache served are `cache_read_tokens`.
Token log-probabilities, when the answer has them, are read by answer_logprobs.py.
"""

from __future__ import annotations

import json
from typing import Any

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.answer_checks import garbled, kind_of, short, token_count
from selfinstruct.llm.openai.answer_logprobs import parse_logprobs
from selfinstruct.llm.types import Completion

# Finish reasons of a text that ended normally or at max_tokens, as the pipeline records them.
# Hugging Face TGI reports a natural stop as "eos_token" or "stop_sequence".
_FINISH_REASONS = {"stop": "stop", "length": "length", "eos_token": "stop", "stop_sequence": "stop"}


def parse_answer(body: bytes | str, api: str) -> Completion:
    """The completion in a `/completions` (api="completions") or `/chat/completions` body.

    Raises RetryableBackendError (with a `kind`, and a message that names the problem but
    never the whole body) for anything that is not a usable answer.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise garbled(f"not JSON ({type(exc).__name__})") from None
    choice = _first_choice(data)
    text = _text_of(choice, api)
    finish_reason = _finish_reason_of(choice)
    usage = data.get("usage")
    if usage is None:
        usage = {}  # servers may leave usage out; it is accounting, not the answer
    if not isinstance(usage, dict):
        raise garbled(f"usage is {kind_of(usage)}, not an object")
    return Completion(
        text=text,
        finish_reason=finish_reason,
        prompt_tokens=token_count(usage, "prompt_tokens"),
        completion_tokens=token_count(usage, "completion_tokens"),
        logprobs=parse_logprobs(choice, api),
        cache_read_tokens=_cached_tokens(usage),
    )


def _cached_tokens(usage: dict[str, Any]) -> int:
    """The prompt tokens the server's prefix cache served (OpenAI and vLLM report them in
    `usage.prompt_tokens_details.cached_tokens`; included in `prompt_tokens`)."""
    details = usage.get("prompt_tokens_details")
    if details is None:
        return 0
    if not isinstance(details, dict):
        raise garbled(f"usage.prompt_tokens_details is {kind_of(details)}, not an object")
    return token_count(details, "cached_tokens")


def _first_choice(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise garbled(f"the body is {kind_of(data)}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise garbled("no choices")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise garbled(f"choices[0] is {kind_of(choice)}, not an object")
    return choice


def _text_of(choice: dict[str, Any], api: str) -> str:
    if api != "chat":
        text = choice.get("text")
        if text is None:
            raise RetryableBackendError("the answer has no text", kind="no_content")
        if not isinstance(text, str):
            raise garbled(f"text is {kind_of(text)}, not a string")
        return text
    message = choice.get("message")
    if not isinstance(message, dict):
        raise garbled(f"message is {kind_of(message)}, not an object")
    content = message.get("content")
    if content is None:
        raise RetryableBackendError(
            f"the answer has no content: {_why_no_content(message)}", kind="no_content"
        )
    if not isinstance(content, str):
        raise garbled(f"message.content is {kind_of(content)}, not a string")
    return content


def _why_no_content(message: dict[str, Any]) -> str:
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        return f"refused ({short(refusal)})"
    if message.get("tool_calls") or message.get("function_call"):
        return "a tool call"
    if message.get("reasoning_content") or message.get("reasoning"):
        return "reasoning only"
    return "content is null"


def _finish_reason_of(choice: dict[str, Any]) -> str:
    reason = choice.get("finish_reason")
    if reason is None:
        # Not "stop": a stream cut short or a server in trouble can leave it out, and a
        # text that may be unfinished must not be stored as a finished one.
        raise RetryableBackendError("the answer has no finish_reason", kind="not_an_answer")
    if not isinstance(reason, str):
        raise garbled(f"finish_reason is {kind_of(reason)}, not a string")
    if reason not in _FINISH_REASONS:
        raise RetryableBackendError(
            f"the answer ended with finish_reason {short(reason)!r}", kind="not_an_answer"
        )
    return _FINISH_REASONS[reason]
