"""backend.output_mode: how a chat server is asked for JSON, probed once per run and recorded.

The probe runs against the real HTTP stub set up like the servers of docs/chat-models.md:
OpenAI/vLLM (json_schema), llama-cpp-python (json_object with a schema; json_schema is an
HTTP 500), a server that knows neither, and one that accepts the field and ignores it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers.openai_stub import OpenAIStub, hang, server_error, unauthorized

from selfinstruct.cli.generate import resolve_config
from selfinstruct.cli.parser import build_parser
from selfinstruct.config import BackendConfig, GenerationParams, build_config
from selfinstruct.errors import BackendError
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.openai.output_modes import settle_output_mode
from selfinstruct.llm.types import ChatMessage, CompletionRequest
from selfinstruct.pipeline import Run

MODEL = "stub-model"
OPENAI_LIKE = ("text", "json_object", "json_schema")
LLAMA_CPP_PYTHON_LIKE = ("text", "json_object")
SCHEMA = '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}'


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def chat_backend(base_url: str, **changes: Any) -> OpenAIBackend:
    config = BackendConfig(kind="openai", model=MODEL, base_url=base_url, api="chat")
    return OpenAIBackend(config.model_copy(update=changes))


def posts(stub: OpenAIStub) -> list[dict[str, Any]]:
    return [r.body for r in stub.received if r.method == "POST" and r.body is not None]


def probed_forms(stub: OpenAIStub) -> list[str]:
    return [body["response_format"]["type"] for body in posts(stub)]


# -- the request forms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("json_schema", {"type": "json_schema", "json_schema": {"name": "answer", "schema": "SCHEMA"}}),
        ("auto", {"type": "json_schema", "json_schema": {"name": "answer", "schema": "SCHEMA"}}),
        ("json_object", {"type": "json_object", "schema": "SCHEMA"}),
        ("text", None),
    ],
)
def test_a_response_schema_is_sent_in_the_form_the_output_mode_names(mode: str, expected: Any) -> None:
    request = CompletionRequest.chat(
        [ChatMessage("user", "Is it?")], GenerationParams(max_tokens=8, temperature=0, top_p=1), SCHEMA
    )
    with OpenAIStub(MODEL) as stub:
        backend = chat_backend(stub.base_url, output_mode=mode)
        backend.complete(request, timeout=10)
        backend.close()
    body = posts(stub)[0]
    if expected is None:
        assert "response_format" not in body
    else:
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        assert body["response_format"] == _replace(expected, "SCHEMA", schema)


def _replace(value: Any, marker: str, by: Any) -> Any:
    if value == marker:
        return by
    if isinstance(value, dict):
        return {k: _replace(v, marker, by) for k, v in value.items()}
    return value


# -- the probe ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formats", "mode", "forms_tried"),
    [
        (OPENAI_LIKE, "json_schema", ["json_schema"]),
        # json_schema is refused with a 500 and must not be retried: one request per form.
        (LLAMA_CPP_PYTHON_LIKE, "json_object", ["json_schema", "json_object"]),
        (("text",), "text", ["json_schema", "json_object"]),
        # Accepted and ignored: a plain-text answer proves nothing.
        (None, "text", ["json_schema", "json_object"]),
    ],
    ids=["openai-like", "llama-cpp-python-like", "neither", "ignores-the-field"],
)
def test_the_probe_finds_the_form_a_server_honours_with_one_request_per_form(
    formats: tuple[str, ...] | None, mode: str, forms_tried: list[str]
) -> None:
    with OpenAIStub(MODEL, response_formats=formats) as stub:
        backend = chat_backend(stub.base_url, max_retries=6)
        assert backend.probe_output_mode() == mode
        backend.close()
    assert backend.output_mode == mode
    assert probed_forms(stub) == forms_tried
    assert all(body["temperature"] == 0 and body["max_tokens"] <= 32 for body in posts(stub))


def test_a_json_answer_in_a_code_fence_counts_as_honouring_the_form() -> None:
    with OpenAIStub(MODEL) as stub:  # ignores response_format; the reply is scripted
        stub.reply("Say yes.", '```json\n{"answer": "yes"}\n```\n')
        backend = chat_backend(stub.base_url)
        assert backend.probe_output_mode() == "json_schema"
        backend.close()


def test_json_that_does_not_match_the_schema_does_not_count() -> None:
    with OpenAIStub(MODEL) as stub:
        stub.reply("Say yes.", '{"answer": "Yes!"}')
        backend = chat_backend(stub.base_url)
        assert backend.probe_output_mode() == "text"
        backend.close()


def test_an_unreachable_server_is_one_line_naming_the_url() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    backend = chat_backend(url)
    with pytest.raises(BackendError) as caught:
        backend.probe_output_mode()
    message = str(caught.value)
    assert message.startswith(f"cannot probe the output mode of {url}: ")
    assert "connection refused" in message and "\n" not in message
    assert backend.output_mode == "auto"


def test_a_server_that_times_out_on_every_form_is_an_error_not_text() -> None:
    with OpenAIStub(MODEL, response_formats=OPENAI_LIKE) as stub:
        stub.plan("*", hang(2.0), hang(2.0))
        backend = chat_backend(stub.base_url, timeout_s=0.3)
        with pytest.raises(BackendError, match=r"cannot probe the output mode .*no answer within 0.3 s"):
            backend.probe_output_mode()
        backend.close()
        assert stub.hits() == 2


def test_a_busy_server_gives_no_verdict_on_a_form() -> None:
    # A 503 says nothing about json_schema: recording "text" for good would be a guess.
    with OpenAIStub(MODEL, response_formats=OPENAI_LIKE) as stub:
        stub.plan("*", server_error(503), server_error(503))
        backend = chat_backend(stub.base_url)
        with pytest.raises(BackendError, match=r"HTTP 503"):
            backend.probe_output_mode()
        backend.close()


def test_a_refused_key_during_the_probe_is_the_usual_authentication_error() -> None:
    with OpenAIStub(MODEL, response_formats=OPENAI_LIKE) as stub:
        stub.plan("*", unauthorized())
        backend = chat_backend(stub.base_url)
        with pytest.raises(BackendError, match=r"authentication failed \(HTTP 401\)"):
            backend.probe_output_mode()
        backend.close()
        assert stub.hits() == 1


# -- the run records it -----------------------------------------------------------------------


def chat_run(out: Path, stub: OpenAIStub, log: list[str], **backend: Any) -> Run:
    config = build_config(
        overrides={
            "backend": {"kind": "openai", "api": "chat", "model": MODEL, "base_url": stub.base_url, **backend}
        }
    )
    return Run(out, config, progress=False, log=log.append)


def recorded_mode(out: Path) -> str:
    return str(yaml.safe_load((out / "config.yaml").read_text("utf-8"))["backend"]["output_mode"])


@pytest.fixture
def llama_like() -> Iterator[OpenAIStub]:
    with OpenAIStub(MODEL, response_formats=LLAMA_CPP_PYTHON_LIKE) as stub:
        yield stub


def test_a_run_probes_once_and_records_the_mode_in_its_config(llama_like: OpenAIStub, tmp_path: Path) -> None:
    out, log = tmp_path / "run", []
    run = chat_run(out, llama_like, log)
    with run.opened():
        assert run.config.backend.output_mode == "json_object"
        assert run._backend.output_mode == "json_object"
    assert recorded_mode(out) == "json_object"
    assert log == [
        f"chat model at {llama_like.base_url}: answers as json_object (probed; recorded in config.yaml)"
    ]
    probes = llama_like.hits()

    again = chat_run(out, llama_like, log)  # the same command run again on the same directory
    with again.opened():
        assert again._backend.output_mode == "json_object"
    assert llama_like.hits() == probes and len(log) == 1


def test_a_run_on_another_server_probes_again(llama_like: OpenAIStub, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with chat_run(out, llama_like, []).opened():
        pass
    with OpenAIStub(MODEL, response_formats=OPENAI_LIKE) as other, chat_run(out, other, []).opened():
        assert other.hits() == 1
    assert recorded_mode(out) == "json_schema"


def test_a_mode_given_explicitly_is_not_probed_and_reaches_the_backend(
    llama_like: OpenAIStub, tmp_path: Path
) -> None:
    run = chat_run(tmp_path / "run", llama_like, [], output_mode="text")
    with run.opened():
        assert run._backend.output_mode == "text"
    assert llama_like.hits() == 0 and recorded_mode(tmp_path / "run") == "text"


def test_a_completions_run_is_not_probed(llama_like: OpenAIStub, tmp_path: Path) -> None:
    with chat_run(tmp_path / "run", llama_like, [], api="completions").opened():
        pass
    assert llama_like.hits() == 0 and recorded_mode(tmp_path / "run") == "auto"


def stage_config(out: Path, *flags: str) -> Any:
    args = build_parser().parse_args(["classify", "--out", str(out), *flags])
    return resolve_config(args, reuse_run_config=True)


def test_a_stage_command_on_the_run_gets_the_recorded_mode(llama_like: OpenAIStub, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with chat_run(out, llama_like, []).opened():
        pass
    assert stage_config(out).backend.output_mode == "json_object"
    assert stage_config(out, "--output-mode", "text").backend.output_mode == "text"
    # Probed for another server: not that server's answer; the stage probes its own.
    assert stage_config(out, "--base-url", "http://127.0.0.1:9/v1").backend.output_mode == "auto"


# -- the real llama-cpp-python server ----------------------------------------------------------


@pytest.mark.model
def test_llama_cpp_pythons_server_probes_as_json_object(smollm2_server: str) -> None:
    backend = chat_backend(smollm2_server, model="smollm2")
    try:
        assert backend.probe_output_mode() == "json_object"
    finally:
        backend.close()


# -- settle_output_mode: the one place that decides ----------------------------------------


def recorded_for(config: BackendConfig, mode: str, **other: Any) -> dict[str, Any]:
    return {**config.model_dump(mode="json"), "output_mode": mode, **other}


def test_a_named_mode_is_used_as_named_without_a_look_at_the_record_or_a_probe() -> None:
    config = BackendConfig(kind="openai", base_url="http://127.0.0.1:9/v1", api="chat", output_mode="text")

    def probe() -> str:
        raise AssertionError("a named mode is never probed")

    assert settle_output_mode(config, recorded_for(config, "json_object"), probe) == "text"


def test_auto_takes_what_the_run_recorded_for_the_same_server_else_probes() -> None:
    config = BackendConfig(kind="openai", base_url="http://127.0.0.1:9/v1", api="chat")
    probes: list[str] = []

    def probe() -> str:
        probes.append("asked")
        return "json_schema"

    assert settle_output_mode(config, recorded_for(config, "json_object"), probe) == "json_object"
    assert probes == []
    other_server = recorded_for(config, "json_object", base_url="http://127.0.0.1:10/v1")
    assert settle_output_mode(config, other_server, probe) == "json_schema"
    assert settle_output_mode(config, recorded_for(config, "auto"), probe) == "json_schema"
    assert settle_output_mode(config, None, probe) == "json_schema"
    assert probes == ["asked"] * 3
    assert settle_output_mode(config, None, None) == "auto"  # nothing can be asked
