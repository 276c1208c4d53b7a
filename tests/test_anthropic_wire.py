"""A request as the Messages API carries it (llm/anthropic/wire.py): the stages' chat prompts map
onto `system` + `messages` with the same text, and the shared prefix ends in a cache breakpoint."""

from __future__ import annotations

from typing import Any

import pytest

from selfinstruct.config import GenerationParams, build_config
from selfinstruct.errors import BackendError
from selfinstruct.llm.anthropic.wire import message_params
from selfinstruct.llm.types import ChatMessage, CompletionRequest
from selfinstruct.stages.chat_prompts import (
    bootstrap_request,
    classify_request,
    instances_request,
    task_request,
)
from selfinstruct.stages.context import PromptSet

PARAMS = GenerationParams(max_tokens=64, temperature=0.0, top_p=1.0)
BREAKPOINT = {"type": "ephemeral"}


def conversation(shared_prefix: int | None = None) -> CompletionRequest:
    messages = [
        ChatMessage("system", "Sort tasks."),
        ChatMessage("user", "Task: add numbers"),
        ChatMessage("assistant", "No"),
        ChatMessage("user", "Task: label the mood"),
    ]
    return CompletionRequest.chat(messages, PARAMS, shared_prefix=shared_prefix)


def text_of(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(block["text"] for block in content)


def breakpoints(params: dict[str, Any]) -> list[str]:
    """Where the cache breakpoints are: "system" or the index of the message."""
    found = []
    if isinstance(params.get("system"), list) and params["system"][-1].get("cache_control"):
        found.append("system")
    for n, message in enumerate(params["messages"]):
        if isinstance(message["content"], list) and any(b.get("cache_control") for b in message["content"]):
            found.append(str(n))
    return found


def test_the_system_message_becomes_system_and_the_turns_become_messages() -> None:
    params = message_params(conversation(shared_prefix=0), "claude-x")
    assert params == {
        "model": "claude-x",
        "max_tokens": 64,
        "temperature": 0.0,
        "system": "Sort tasks.",
        "messages": [
            {"role": "user", "content": "Task: add numbers"},
            {"role": "assistant", "content": "No"},
            {"role": "user", "content": "Task: label the mood"},
        ],
    }


def test_max_tokens_is_always_sent_and_stop_becomes_stop_sequences() -> None:
    request = CompletionRequest(
        "Continue: 1, 2,", GenerationParams(max_tokens=5, temperature=0.7, top_p=1.0, stop=("\n\n", "Task:"))
    )
    params = message_params(request, "claude-x")
    assert params["max_tokens"] == 5
    assert params["stop_sequences"] == ["\n\n", "Task:"]
    # A text prompt (for a base model) is one user turn, with no breakpoint.
    assert params["messages"] == [{"role": "user", "content": "Continue: 1, 2,"}]
    assert "system" not in params


@pytest.mark.parametrize(
    ("temperature", "top_p", "sent"),
    [
        (0.7, 0.5, {"temperature": 0.7}),  # the preset's bootstrap: current models refuse both
        (0.0, 1.0, {"temperature": 0.0}),
        (1.0, 0.9, {"top_p": 0.9}),  # temperature at the API's default: top_p narrows instead
        (1.0, 1.0, {"temperature": 1.0}),
    ],
)
def test_temperature_or_top_p_is_sent_never_both(
    temperature: float, top_p: float, sent: dict[str, float]
) -> None:
    params = message_params(
        CompletionRequest("x", GenerationParams(max_tokens=8, temperature=temperature, top_p=top_p)), "m"
    )
    assert {k: params[k] for k in ("temperature", "top_p") if k in params} == sent


def test_parameters_the_messages_api_lacks_are_not_sent() -> None:
    params = GenerationParams(
        max_tokens=8, temperature=0.5, top_p=1.0, presence_penalty=2.0, frequency_penalty=1.0,
        repeat_penalty=1.1, seed=7, top_logprobs=3,
    )  # fmt: skip
    sent = message_params(CompletionRequest("x", params), "m")
    assert set(sent) == {"model", "max_tokens", "temperature", "messages"}


def test_the_shared_prefix_ends_in_one_cache_breakpoint_and_the_question_has_none() -> None:
    params = message_params(conversation(shared_prefix=3), "m")
    assert breakpoints(params) == ["1"]  # system, user, assistant: the breakpoint on the assistant turn
    assert params["messages"][1]["content"] == [{"type": "text", "text": "No", "cache_control": BREAKPOINT}]
    assert params["messages"][2]["content"] == "Task: label the mood"


def test_a_chat_request_shares_its_system_message_by_default() -> None:
    params = message_params(conversation(), "m")
    assert breakpoints(params) == ["system"]
    assert params["system"] == [{"type": "text", "text": "Sort tasks.", "cache_control": BREAKPOINT}]


def test_without_a_shared_prefix_or_with_caching_off_nothing_is_marked() -> None:
    assert breakpoints(message_params(conversation(shared_prefix=0), "m")) == []
    assert breakpoints(message_params(conversation(shared_prefix=3), "m", cache=False)) == []


def test_the_caching_layout_changes_no_text_the_model_reads() -> None:
    plain = message_params(conversation(shared_prefix=0), "m")
    for shared in (1, 2, 3, 4):
        marked = message_params(conversation(shared_prefix=shared), "m")
        assert text_of(marked["system"]) == plain["system"]
        assert [(m["role"], text_of(m["content"])) for m in marked["messages"]] == [
            (m["role"], m["content"]) for m in plain["messages"]
        ]


def test_the_shared_prefix_is_not_part_of_the_store_key() -> None:
    identity = {"kind": "anthropic", "model": "m"}
    assert conversation(shared_prefix=0).key(identity) == conversation(shared_prefix=3).key(identity)


def test_a_system_message_after_the_first_turn_is_refused() -> None:
    messages = [ChatMessage("user", "hi"), ChatMessage("system", "late")]
    with pytest.raises(BackendError, match="only at the start"):
        message_params(CompletionRequest.chat(messages, PARAMS), "m")


# -- where each stage's shared prefix ends ----------------------------------------------------


@pytest.fixture(scope="module")
def prompts() -> tuple[PromptSet, Any]:
    config = build_config(overrides={"backend": {"kind": "anthropic"}})
    return PromptSet.load(config.prompts), config


def test_classify_and_instance_requests_share_everything_but_the_task(prompts: tuple[PromptSet, Any]) -> None:
    prompt_set, config = prompts
    classify = [
        classify_request(
            prompt_set.chat.classify, prompt_set.classify, task, False, config.classify.generation
        )
        for task in ("Sort these numbers.", "Is this review positive?")
    ]
    instances = [
        instances_request(
            prompt_set.chat, demos, "Sort these numbers.", False, config.instances.generation, 5
        )
        for demos in (prompt_set.instances_generation, prompt_set.instances_classification)
    ]
    for request in classify + instances:
        params = message_params(request, "m")
        last = len(params["messages"]) - 1
        assert breakpoints(params) == [str(last - 1)], "the demonstrations end in the breakpoint"
        assert isinstance(params["messages"][last]["content"], str)
    # Every classify request sends the same prefix, word for word: a cache can serve it.
    first, second = (message_params(r, "m") for r in classify)
    assert first["system"] == second["system"] and first["messages"][:-1] == second["messages"][:-1]


def test_stages_whose_demonstrations_vary_share_only_their_system_message(
    prompts: tuple[PromptSet, Any],
) -> None:
    prompt_set, config = prompts
    bootstrap = bootstrap_request(
        prompt_set.chat.bootstrap,
        ["Write a poem.", "Sort a list."],
        False,
        False,
        config.bootstrap.generation,
    )
    relabel = task_request(prompt_set.chat.relabel, "Add 2 and 3.", PARAMS)
    for request in (bootstrap, relabel):
        assert breakpoints(message_params(request, "m")) == ["system"]
