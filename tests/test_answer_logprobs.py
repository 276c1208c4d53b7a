"""openai/answer_logprobs.py: token log-probabilities in both answer shapes, all or none."""

from __future__ import annotations

import json
from typing import Any

import pytest

from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.types import Completion, TokenLogprobs

# What llama-cpp-python 0.3.36's server sent for "Score from 1 to 5: " (max_tokens 3, logprobs 3).
COMPLETIONS_BODY = {
    "object": "text_completion",
    "choices": [
        {
            "text": "1.\n",
            "index": 0,
            "logprobs": {
                "text_offset": [19, 20, 21],
                "token_logprobs": [-1.287, -2.218, -1.404],
                "tokens": ["1", ".", "\n"],
                "top_logprobs": [
                    {"1": -1.287, "\n": -1.739, "2": -1.972},
                    {".": -2.218, ",": -2.408, "0": -2.447},
                    {"0": -2.588, "5": -2.633},  # the token itself left out: it is added
                ],
            },
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3},
}
# And for a yes/no question to the chat endpoint (top_logprobs 3).
CHAT_BODY = {
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"content": "No.", "role": "assistant"},
            "logprobs": {
                "content": [
                    {
                        "token": "No",
                        "logprob": -0.684,
                        "bytes": None,
                        "top_logprobs": [
                            {"token": "No", "logprob": -0.684, "bytes": None},
                            {"token": "Yes", "logprob": -1.634, "bytes": None},
                            {"token": "no", "logprob": -3.280, "bytes": None},
                        ],
                    },
                    {"token": ".", "logprob": -0.620, "bytes": None, "top_logprobs": []},
                ],
                "refusal": None,
            },
            "finish_reason": "stop",
        }
    ],
}


def test_the_completions_shape_gives_each_token_and_its_alternatives() -> None:
    completion = parse_answer(json.dumps(COMPLETIONS_BODY), "completions")
    assert completion.text == "1.\n"
    assert [t.token for t in completion.logprobs] == ["1", ".", "\n"]
    assert completion.logprobs[0].top == {"1": -1.287, "\n": -1.739, "2": -1.972}
    assert completion.logprobs[2].top == {"0": -2.588, "5": -2.633, "\n": -1.404}


def test_the_chat_shape_gives_each_token_and_its_alternatives() -> None:
    completion = parse_answer(json.dumps(CHAT_BODY), "chat")
    assert completion.logprobs == (
        TokenLogprobs("No", {"No": -0.684, "Yes": -1.634, "no": -3.280}),
        TokenLogprobs(".", {".": -0.620}),
    )


def _broken(body: dict[str, Any], change: Any) -> str:
    copy = json.loads(json.dumps(body))
    change(copy["choices"][0]["logprobs"])
    return json.dumps(copy)


@pytest.mark.parametrize(
    ("body", "api", "change"),
    [
        (COMPLETIONS_BODY, "completions", lambda b: b["tokens"].pop()),
        (COMPLETIONS_BODY, "completions", lambda b: b["top_logprobs"].__setitem__(1, None)),
        (COMPLETIONS_BODY, "completions", lambda b: b["token_logprobs"].__setitem__(0, "x")),
        (COMPLETIONS_BODY, "completions", lambda b: b["top_logprobs"][0].__setitem__("9", 3.0)),
        (CHAT_BODY, "chat", lambda b: b["content"][0].pop("top_logprobs")),
        (CHAT_BODY, "chat", lambda b: b["content"][1].__setitem__("logprob", None)),
        (CHAT_BODY, "chat", lambda b: b.__setitem__("content", None)),
    ],
)
def test_a_block_of_another_shape_gives_no_logprobs_but_keeps_the_answer(
    body: dict[str, Any], api: str, change: Any
) -> None:
    completion = parse_answer(_broken(body, change), api)
    assert completion.logprobs == () and completion.text


def test_an_answer_without_logprobs_has_none() -> None:
    body = json.loads(json.dumps(CHAT_BODY))
    del body["choices"][0]["logprobs"]
    assert parse_answer(json.dumps(body), "chat").logprobs == ()


def test_logprobs_survive_the_store_and_a_plain_answer_is_stored_as_before() -> None:
    completion = parse_answer(json.dumps(CHAT_BODY), "chat")
    assert Completion.from_json(json.loads(json.dumps(completion.to_json()))) == completion
    plain = Completion("hi", "stop", 1, 1, {"x": 1})
    assert plain.to_json() == {
        "text": "hi",
        "finish_reason": "stop",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "extra": {"x": 1},
    }
