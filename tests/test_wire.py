"""openai/wire.py: a request's sampling parameters and messages, named once for every wire."""

from __future__ import annotations

import json

import pytest

from selfinstruct.config import GenerationParams
from selfinstruct.llm.openai import wire
from selfinstruct.llm.types import ChatMessage, CompletionRequest

FULL = GenerationParams(
    max_tokens=64,
    temperature=0.7,
    top_p=0.5,
    presence_penalty=1.5,
    frequency_penalty=-0.5,
    repeat_penalty=1.1,
    stop=("\n\n",),
    seed=7,
)


def test_every_generation_parameter_reaches_both_dialects() -> None:
    openai = wire.sampling(FULL, "openai")
    vllm = wire.sampling(FULL, "vllm")
    # Only the repetition penalty is named differently; every other field is the same.
    assert openai.pop("repeat_penalty") == vllm.pop("repetition_penalty") == 1.1
    assert openai == vllm
    # top_logprobs asks for something back, not a way to sample: the two APIs name it
    # differently, so the body gets it from logprobs_fields (and vLLM rows carry none).
    sent = set(openai) | {"repeat_penalty", "top_logprobs"}
    assert sent == set(GenerationParams.model_fields), "a GenerationParams field is not sent"


def test_unset_optional_parameters_are_left_out() -> None:
    bare = wire.sampling(GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0))
    assert not {"stop", "seed", "repeat_penalty"} & set(bare)


@pytest.mark.parametrize(
    ("mode", "form"),
    [
        ("text", None),
        ("json_object", {"type": "json_object", "schema": {"type": "object"}}),
        (
            "json_schema",
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
        ),
    ],
)
def test_a_chat_body_carries_messages_and_the_schema_as_its_mode_says(mode: str, form: object) -> None:
    request = CompletionRequest.chat(
        [ChatMessage("user", "Hi")], FULL, response_schema=json.dumps({"type": "object"})
    )
    path, body = wire.http_request(request, "m", "chat", mode)
    assert path == "/chat/completions"
    assert body["messages"] == [{"role": "user", "content": "Hi"}] and "prompt" not in body
    assert body.get("response_format") == form
    assert body["model"] == "m" and body["seed"] == 7


def test_a_text_prompt_goes_to_completions_or_as_one_user_message() -> None:
    request = CompletionRequest("Continue:", FULL)
    path, body = wire.http_request(request, "m", "completions", "text")
    assert (path, body["prompt"]) == ("/completions", "Continue:") and "messages" not in body
    path, body = wire.http_request(request, "m", "chat", "text")
    assert (path, body["messages"]) == ("/chat/completions", [{"role": "user", "content": "Continue:"}])


def test_top_logprobs_are_asked_as_each_api_names_them() -> None:
    params = FULL.with_(top_logprobs=5)
    _, completions = wire.http_request(CompletionRequest("Score:", params), "m", "completions", "text")
    assert completions["logprobs"] == 5 and "top_logprobs" not in completions
    _, chat = wire.http_request(
        CompletionRequest.chat([ChatMessage("user", "Hi")], params), "m", "chat", "text"
    )
    assert chat["logprobs"] is True and chat["top_logprobs"] == 5


def test_a_request_that_asks_for_no_logprobs_has_no_logprobs_fields() -> None:
    for api in ("completions", "chat"):
        _, body = wire.http_request(CompletionRequest("Continue:", FULL), "m", api, "text")
        assert not {"logprobs", "top_logprobs"} & set(body)
