"""The chat model of the tests, SmolLM2-135M-Instruct behind llama-cpp-python's server: what it
renders and what it accepts (the facts docs/chat-models.md reports; they break on an upgrade)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers.llama_server import smollm2_model_path

pytestmark = pytest.mark.model

# SmolLM2's own template (the GGUF's tokenizer.chat_template): ChatML turns, and a default
# system turn when the conversation has none.
SMOLLM2_RENDERED = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nName a colour.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}


@pytest.fixture(scope="module")
def chat_server(smollm2_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=smollm2_server.removesuffix("/v1"), timeout=120) as client:
        yield client


def chat(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"max_tokens": 24, "temperature": 0.0, "seed": 1, **body})


def test_smollm2_gguf_is_found_in_its_package() -> None:
    path = smollm2_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with Path(path).open("rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_chat_requests_are_rendered_with_smollm2s_chatml_template(chat_server: httpx.Client) -> None:
    # The server does not show the prompt it built; its token count does: the llama-2 fallback
    # ("[INST] ... [/INST]") or a missing default system turn would count differently.
    expected = chat_server.post("/extras/tokenize", json={"input": SMOLLM2_RENDERED}).json()["tokens"]
    reply = chat(chat_server, messages=[{"role": "user", "content": "Name a colour."}])
    assert reply.status_code == 200
    assert reply.json()["usage"]["prompt_tokens"] == len(expected)


def test_json_object_with_a_schema_constrains_the_reply(chat_server: httpx.Client) -> None:
    reply = chat(
        chat_server,
        messages=[{"role": "user", "content": "Is water wet? Answer in JSON."}],
        response_format={"type": "json_object", "schema": ANSWER_SCHEMA},
    )
    assert reply.status_code == 200
    answer = json.loads(reply.json()["choices"][0]["message"]["content"], strict=False)
    assert isinstance(answer["answer"], bool)


def test_openais_json_schema_type_is_refused_with_a_500_naming_the_field(chat_server: httpx.Client) -> None:
    # A validation error, but sent as HTTP 500: a client that retries 5xx must not retry this.
    reply = chat(
        chat_server,
        messages=[{"role": "user", "content": "Is water wet?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
    )
    assert reply.status_code == 500
    assert "response_format" in reply.text and "json_object" in reply.text
