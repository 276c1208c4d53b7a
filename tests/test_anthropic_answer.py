"""A Message -> a Completion, or why it is no answer (llm/anthropic/answer.py): what is stored, and
what is retried and never stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.anthropic.answer import completion_of_message, parse_message_body

USAGE = {
    "input_tokens": 12,
    "output_tokens": 5,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}


def message(
    content: Any = None, stop_reason: Any = "end_turn", usage: Any = None, **more: Any
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Yes."}] if content is None else content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": USAGE if usage is None else usage,
        **more,
    }


def refusal_of(body: Any) -> RetryableBackendError:
    with pytest.raises(RetryableBackendError) as info:
        parse_message_body(json.dumps(body))
    return info.value


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length")],
)
def test_a_finished_or_cut_answer_is_a_completion(stop_reason: str, finish_reason: str) -> None:
    completion = parse_message_body(json.dumps(message(stop_reason=stop_reason)))
    assert (completion.text, completion.finish_reason) == ("Yes.", finish_reason)
    assert (completion.prompt_tokens, completion.completion_tokens) == (12, 5)


def test_text_blocks_are_joined_and_other_blocks_ignored() -> None:
    content = [
        {"type": "text", "text": "Class label: Happy\n"},
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "Sentence: a sunny day"},
    ]
    assert (
        parse_message_body(json.dumps(message(content))).text == "Class label: Happy\nSentence: a sunny day"
    )


def test_prompt_tokens_are_every_token_read_and_the_cache_parts_are_kept() -> None:
    usage = {
        "input_tokens": 7,
        "output_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1000,
    }
    completion = completion_of_message(message(usage=usage))
    assert (completion.prompt_tokens, completion.cache_read_tokens, completion.cache_write_tokens) == (
        1007,
        1000,
        0,
    )
    written = completion_of_message(
        message(usage={**usage, "cache_read_input_tokens": None, "cache_creation_input_tokens": 900})
    )
    assert (written.prompt_tokens, written.cache_read_tokens, written.cache_write_tokens) == (907, 0, 900)


def test_the_cache_counts_are_stored_with_the_answer_and_read_back() -> None:
    from selfinstruct.llm.types import Completion

    usage = {**USAGE, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 2}
    completion = completion_of_message(message(usage=usage))
    assert Completion.from_json(json.loads(json.dumps(completion.to_json()))) == completion
    # An answer without cache counts stores what it always stored.
    assert set(completion_of_message(message()).to_json()) == {
        "text", "finish_reason", "prompt_tokens", "completion_tokens", "extra",
    }  # fmt: skip


def test_a_refusal_is_never_an_answer_even_with_some_text() -> None:
    error = refusal_of(message([{"type": "text", "text": "I can"}], stop_reason="refusal"))
    assert error.kind == "no_content" and "refused" in str(error)


@pytest.mark.parametrize("text", [None, "Let me look that up."])
def test_a_tool_call_is_never_an_answer_with_or_without_text(text: str | None) -> None:
    content = [{"type": "tool_use", "id": "t1", "name": "search", "input": {}}]
    if text is not None:
        content.insert(0, {"type": "text", "text": text})
    error = refusal_of(message(content, stop_reason="tool_use"))
    assert error.kind == "no_content" and "tool call" in str(error)


@pytest.mark.parametrize("content", [[], [{"type": "text", "text": ""}]])
def test_an_empty_content_is_never_an_answer(content: list[dict[str, Any]]) -> None:
    assert refusal_of(message(content)).kind == "no_content"


@pytest.mark.parametrize("stop_reason", [None, "pause_turn", "model_context_window_exceeded", "banana"])
def test_a_stop_reason_that_is_not_a_finished_answer_is_never_stored(stop_reason: str | None) -> None:
    assert refusal_of(message(stop_reason=stop_reason)).kind == "not_an_answer"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("{not json", "not JSON"),
        ([], "the body is a list"),
        (message(content="Yes."), "content is a string"),
        (message(content=["Yes."]), "a content block is a string"),
        (message(content=[{"type": "text", "text": 3}]), "text is a number"),
        (message(stop_reason=7), "stop_reason is a number"),
        (message(usage=[1]), "usage is a list"),
        (message(usage={**USAGE, "input_tokens": "many"}), "usage.input_tokens"),
        (message(usage={**USAGE, "cache_read_input_tokens": -1}), "usage.cache_read_input_tokens"),
    ],
)
def test_a_body_that_is_not_a_message_is_garbled(body: Any, detail: str) -> None:
    with pytest.raises(RetryableBackendError) as info:
        parse_message_body(body if isinstance(body, str) else json.dumps(body))
    assert info.value.kind == "garbled" and detail in str(info.value)


def test_an_error_object_in_a_200_is_a_server_error() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    error = refusal_of(body)
    assert error.kind == "server" and "Overloaded" in str(error)


def test_a_missing_usage_counts_no_tokens() -> None:
    body = message()
    del body["usage"]
    assert parse_message_body(json.dumps(body)).prompt_tokens == 0
