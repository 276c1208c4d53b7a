"""OpenAIBackend against a real HTTP server on loopback (the scripted stub, and llama.cpp's)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.llama_server import llama_server, model_path_for_tests
from servers.openai_stub import (
    Fault,
    OpenAIStub,
    bad_request,
    finished,
    garbled,
    hang,
    no_choices,
    no_content,
    no_finish_reason,
    rate_limited,
    server_error,
    truncated,
    unauthorized,
    unknown_model,
    usage_of,
)

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.openai.client import OpenAIBackend, parse_retry_after
from selfinstruct.llm.types import ChatMessage, CompletionRequest

FAKE_KEY = "sk-test-ZX9Q-distinctive-secret-4242"
PARAMS = GenerationParams(max_tokens=32, temperature=0.7, top_p=0.5)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def backend_for(stub: OpenAIStub, **changes: object) -> OpenAIBackend:
    config = BackendConfig(kind="openai", model="stub-model", base_url=stub.base_url)
    return OpenAIBackend(config.model_copy(update=changes))


def request(prompt: str = "Name a fruit.", **param_changes: object) -> CompletionRequest:
    return CompletionRequest(prompt, PARAMS.with_(**param_changes))


# -- request mapping -----------------------------------------------------------------------


def test_completions_request_carries_every_generation_parameter(stub: OpenAIStub) -> None:
    backend = backend_for(stub)
    params = dict(
        presence_penalty=0.5, frequency_penalty=-0.25, repeat_penalty=1.15, stop=("\n\n", "3."), seed=11
    )
    backend.complete(request(**params), timeout=5)
    sent = stub.received[-1]
    assert sent.path == "/v1/completions"
    assert sent.body == {
        "model": "stub-model",
        "prompt": "Name a fruit.",
        "max_tokens": 32,
        "temperature": 0.7,
        "top_p": 0.5,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "repeat_penalty": 1.15,
        "stop": ["\n\n", "3."],
        "seed": 11,
    }


def test_unset_optional_parameters_are_left_out_of_the_body(stub: OpenAIStub) -> None:
    backend_for(stub).complete(request(), timeout=5)
    body = stub.received[-1].body or {}
    assert "repeat_penalty" not in body and "seed" not in body and "stop" not in body


def test_chat_api_sends_the_prompt_as_one_user_message(stub: OpenAIStub) -> None:
    stub.reply("Name a fruit.", "A plum.")
    completion = backend_for(stub, api="chat").complete(request(), timeout=5)
    sent = stub.received[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body is not None
    assert sent.body["messages"] == [{"role": "user", "content": "Name a fruit."}]
    assert "prompt" not in sent.body and sent.body["max_tokens"] == 32
    assert completion.text == "A plum."


def test_completion_text_finish_reason_and_usage_come_from_the_response(stub: OpenAIStub) -> None:
    stub.reply("Name a fruit.", "An apple, of course")
    completion = backend_for(stub).complete(request(), timeout=5)
    assert completion.text == "An apple, of course"
    assert completion.finish_reason == "stop"
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 4)


def test_finish_reason_length_is_passed_through(stub: OpenAIStub) -> None:
    stub.plan("Name a fruit.", truncated())
    assert backend_for(stub).complete(request(), timeout=5).finish_reason == "length"


# -- a 200 that is not an answer ----------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"refusal": "I can't help with that."}, "refused (I can't help with that.)"),
        ({"tool_calls": [{"id": "c1", "type": "function"}]}, "a tool call"),
        ({"reasoning_content": "Let me think..."}, "reasoning only"),
        ({}, "content is null"),
    ],
)
def test_a_chat_answer_without_content_is_a_retryable_failure_saying_why(
    stub: OpenAIStub, message: dict[str, object], reason: str
) -> None:
    stub.plan("*", no_content(**message))
    with pytest.raises(RetryableBackendError) as info:
        backend_for(stub, api="chat").complete(request(), timeout=5)
    assert reason in str(info.value) and stub.base_url in str(info.value)
    assert info.value.kind == "no_content"


def test_a_completion_with_null_text_is_a_retryable_failure(stub: OpenAIStub) -> None:
    stub.plan("*", no_content())
    with pytest.raises(RetryableBackendError, match="no text"):
        backend_for(stub).complete(request(), timeout=5)


@pytest.mark.parametrize("api", ["completions", "chat"])
@pytest.mark.parametrize("reason", ["content_filter", "error", "tool_calls"])
def test_a_filtered_or_failed_finish_is_a_retryable_failure_not_an_answer(
    stub: OpenAIStub, api: str, reason: str
) -> None:
    stub.plan("*", finished(reason))
    with pytest.raises(RetryableBackendError, match=f"finish_reason '{reason}'") as info:
        backend_for(stub, api=api).complete(request(), timeout=5)
    assert info.value.kind == "not_an_answer"


def test_an_answer_without_finish_reason_is_a_retryable_failure_not_a_stop(stub: OpenAIStub) -> None:
    stub.plan("*", no_finish_reason())
    with pytest.raises(RetryableBackendError, match="no finish_reason"):
        backend_for(stub).complete(request(), timeout=5)


@pytest.mark.parametrize(
    "usage",
    [
        [1, 2],
        "12 tokens",
        {"prompt_tokens": "many", "completion_tokens": 3},
        {"prompt_tokens": 3, "completion_tokens": {"n": 3}},
        {"prompt_tokens": -1},
        {"prompt_tokens": 2.5},
        {"prompt_tokens": True},
    ],
)
def test_a_malformed_usage_object_is_a_retryable_failure_not_a_traceback(
    stub: OpenAIStub, usage: object
) -> None:
    stub.plan("*", usage_of(usage))
    with pytest.raises(RetryableBackendError, match=r"malformed response \(usage") as info:
        backend_for(stub).complete(request(), timeout=5)
    assert info.value.kind == "garbled"


def test_a_deeply_nested_body_is_a_retryable_failure_not_a_recursion_error(stub: OpenAIStub) -> None:
    stub.plan("*", Fault(200, "[" * 100_000 + "]" * 100_000))
    with pytest.raises(RetryableBackendError, match="not JSON"):
        backend_for(stub).complete(request(), timeout=5)


# -- API key -------------------------------------------------------------------------------


def test_key_from_environment_is_sent_as_bearer_token(
    stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    backend_for(stub).complete(request(), timeout=5)
    assert stub.received[-1].headers["Authorization"] == f"Bearer {FAKE_KEY}"


def test_key_from_file_is_read_and_stripped(stub: OpenAIStub, tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(f"  {FAKE_KEY}\n")
    backend_for(stub, api_key_file=str(key_file)).complete(request(), timeout=5)
    assert stub.received[-1].headers["Authorization"] == f"Bearer {FAKE_KEY}"


def test_a_key_file_wins_over_the_environment_key(
    stub: OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OPENAI_API_KEY is often exported for OpenAI itself; a key file named for this endpoint
    # must be what it gets, and the OpenAI key must not travel to it.
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-file")
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    backend_for(stub, api_key_file=str(key_file)).complete(request(), timeout=5)
    assert stub.received[-1].headers["Authorization"] == "Bearer sk-from-file"


def test_no_key_is_fine_for_a_loopback_server(stub: OpenAIStub) -> None:
    backend_for(stub).complete(request(), timeout=5)
    assert "Authorization" not in stub.received[-1].headers


def test_no_key_for_a_remote_server_is_a_backend_error() -> None:
    config = BackendConfig(kind="openai", base_url="https://api.example.com/v1")
    with pytest.raises(BackendError, match=r"no API key: set OPENAI_API_KEY or backend\.api_key_file"):
        OpenAIBackend(config)


def test_missing_key_file_is_a_backend_error_naming_the_file(tmp_path: Path) -> None:
    config = BackendConfig(kind="openai", api_key_file=str(tmp_path / "nope.txt"))
    with pytest.raises(BackendError, match=r"nope\.txt"):
        OpenAIBackend(config)


def test_key_never_appears_in_errors_or_identity(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    backend = backend_for(stub)
    # A server that echoes the key back in its error text must not leak it either.
    stub.plan("*", unauthorized(), bad_request(f"bad header Bearer {FAKE_KEY}"), server_error(503))
    messages = []
    for _ in range(3):
        with pytest.raises((BackendError, RetryableBackendError)) as info:
            backend.complete(request(), timeout=5)
        messages.append(str(info.value))
    assert all(FAKE_KEY not in m for m in messages), messages
    assert "***" in messages[1]
    assert FAKE_KEY not in repr(backend.identity())


def test_identity_names_api_and_model_but_not_the_server(stub: OpenAIStub) -> None:
    # Answers are keyed by the model, not by where it is served (several endpoints, resumes).
    assert backend_for(stub, api="chat").identity() == {
        "kind": "openai",
        "api": "chat",
        "model": "stub-model",
    }
    assert backend_for(stub, api="chat").legacy_identities() == [
        {"kind": "openai", "api": "chat", "model": "stub-model", "base_url": stub.base_url}
    ]


# -- error classification ------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_failure_is_fatal(stub: OpenAIStub, status: int) -> None:
    stub.plan("*", unauthorized() if status == 401 else server_error(403))
    with pytest.raises(
        BackendError, match=rf"authentication failed \(HTTP {status}\) at http://127\.0\.0\.1"
    ):
        backend_for(stub).complete(request(), timeout=5)


def test_unknown_model_is_fatal_and_says_so(stub: OpenAIStub) -> None:
    stub.plan("*", unknown_model())
    with pytest.raises(BackendError, match="unknown model 'stub-model'"):
        backend_for(stub).complete(request(), timeout=5)


def test_a_404_is_an_unknown_model_where_the_server_lists_its_models_without_ours() -> None:
    with OpenAIStub("another-model") as stub:
        stub.plan("*", Fault(404, json.dumps({"error": {"message": "Not Found"}})))
        backend = backend_for(stub)
        backend.check()
        with pytest.raises(BackendError) as info:
            backend.complete(request(), timeout=5)
    assert str(info.value) == (
        f"unknown model 'stub-model' at {stub.base_url} (HTTP 404: Not Found); it serves 'another-model'"
    )


def test_a_404_from_a_server_that_lists_our_model_is_not_called_an_unknown_model(stub: OpenAIStub) -> None:
    stub.plan("*", Fault(404, json.dumps({"error": {"message": "Not Found"}})))
    backend = backend_for(stub)
    backend.check()
    with pytest.raises(BackendError) as info:
        backend.complete(request(), timeout=5)
    assert str(info.value) == f"unexpected HTTP 404 from {stub.base_url}: Not Found"


def test_a_bad_request_saying_the_model_does_not_exist_is_an_unknown_model(stub: OpenAIStub) -> None:
    stub.plan("*", bad_request("model 'stub-model' not found, try pulling it first"))
    with pytest.raises(BackendError, match=r"unknown model 'stub-model'.*HTTP 400"):
        backend_for(stub).complete(request(), timeout=5)


def test_bad_request_is_fatal_with_the_servers_message_on_one_line(stub: OpenAIStub) -> None:
    stub.plan("*", bad_request("max_tokens is too large:\n" + "x" * 500))
    with pytest.raises(BackendError) as info:
        backend_for(stub).complete(request(), timeout=5)
    message = str(info.value)
    assert "HTTP 400" in message and "max_tokens is too large" in message
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize(
    "fault", [server_error(500), server_error(503), server_error(408), garbled(), no_choices()]
)
def test_transient_failures_are_retryable(stub: OpenAIStub, fault: object) -> None:
    stub.plan("*", fault)  # type: ignore[arg-type]
    with pytest.raises(RetryableBackendError):
        backend_for(stub).complete(request(), timeout=5)


def test_rate_limit_is_retryable_with_the_servers_retry_after(stub: OpenAIStub) -> None:
    stub.plan("*", rate_limited("7"))
    with pytest.raises(RetryableBackendError) as info:
        backend_for(stub).complete(request(), timeout=5)
    assert info.value.retry_after == 7.0


def test_a_hanging_server_times_out_as_retryable(stub: OpenAIStub) -> None:
    stub.plan("*", hang(5))
    started = time.monotonic()
    with pytest.raises(RetryableBackendError, match=r"within 0\.3 s"):
        backend_for(stub).complete(request(), timeout=0.3)
    assert time.monotonic() - started < 2


def test_connection_refused_is_retryable_and_says_so() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(BackendConfig(kind="openai", base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(RetryableBackendError, match="connection refused"):
        backend.complete(request(), timeout=2)
    with pytest.raises(BackendError, match=rf"cannot reach http://127.0.0.1:{port}/v1: connection refused"):
        backend.check()


def test_check_passes_against_a_live_server(stub: OpenAIStub) -> None:
    backend_for(stub).check()
    assert stub.received[-1].path == "/v1/models"


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("3", 3.0), ("0.25", 0.25), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_accepts_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


# -- against llama.cpp's own OpenAI-compatible server --------------------------------------


@pytest.mark.model
def test_real_llama_cpp_server_returns_text(tmp_path: Path) -> None:
    with llama_server(model_path_for_tests(), tmp_path / "server.log") as base_url:
        backend = OpenAIBackend(BackendConfig(kind="openai", model="gemma", base_url=base_url))
        backend.check()
        params = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0, repeat_penalty=1.1)
        completion = backend.complete(CompletionRequest("The three primary colours are", params), timeout=60)
        backend.close()
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert 1 <= completion.completion_tokens <= 8
    assert completion.prompt_tokens > 0


def test_chat_messages_and_a_response_schema_are_sent_as_given(stub: OpenAIStub) -> None:
    stub.reply("List two fruits.", '{"items": ["plum", "fig"]}')
    schema = '{"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}}}}'
    chat = CompletionRequest.chat(
        [ChatMessage("system", "You write short lists."), ChatMessage("user", "List two fruits.")],
        GenerationParams(max_tokens=32, temperature=0.0, top_p=1.0),
        response_schema=schema,
    )
    completion = backend_for(stub, api="chat").complete(chat, timeout=5)
    body = stub.received[-1].body or {}
    assert body["messages"] == [
        {"role": "system", "content": "You write short lists."},
        {"role": "user", "content": "List two fruits."},
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": json.loads(schema)},
    }
    assert completion.text == '{"items": ["plum", "fig"]}'


def test_chat_messages_are_never_flattened_into_a_completions_prompt(stub: OpenAIStub) -> None:
    chat = CompletionRequest.chat(
        [ChatMessage("user", "Hi.")], GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
    )
    with pytest.raises(BackendError, match="--api chat"):
        backend_for(stub).complete(chat, timeout=5)
    assert stub.received == [] or all(r.method != "POST" for r in stub.received)


@pytest.mark.model
def test_llama_cpp_answers_a_model_name_it_does_not_list(smollm2_server: str) -> None:
    # Its models list names the GGUF's path; it serves that model under any name, so a name
    # missing from the list is no reason to refuse at start.
    backend = OpenAIBackend(BackendConfig(kind="openai", model="m", base_url=smollm2_server))
    try:
        backend.check()
        assert backend.complete(request(max_tokens=2), timeout=60).completion_tokens >= 1
    finally:
        backend.close()
