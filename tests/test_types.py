"""llm/types.py: what a backend declares it can do, checked by type, not guessed by attribute."""

from __future__ import annotations

import pytest
from servers.scripted_answers import ScriptedModel

from selfinstruct.config import BackendConfig
from selfinstruct.llm.control.routing import Routed
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.openai.endpoint_pool import EndpointPool
from selfinstruct.llm.types import HttpBackend


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_one_server_is_an_http_backend_that_is_not_routed() -> None:
    backend = OpenAIBackend(BackendConfig(kind="openai", base_url="http://127.0.0.1:9/v1", api="chat"))
    assert isinstance(backend, HttpBackend) and not isinstance(backend, Routed)
    assert backend.chat and backend.hedgeable and backend.urls() == ["http://127.0.0.1:9/v1"]


def test_a_pool_is_routed_and_lists_its_servers_with_their_weights() -> None:
    config = BackendConfig(
        kind="openai",
        endpoints=({"url": "http://127.0.0.1:9/v1", "weight": 3}, "http://127.0.0.1:10/v1"),  # type: ignore[arg-type]
    )
    pool = EndpointPool(config)
    assert isinstance(pool, HttpBackend) and isinstance(pool, Routed)
    assert not pool.chat and pool.hedgeable
    assert pool.urls() == ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"]
    assert [e.config.weight for e in pool.endpoints] == [r.weight for r in pool.router.routes] == [3.0, 1.0]


def test_a_local_model_has_the_default_capabilities() -> None:
    model = ScriptedModel()
    assert not isinstance(model, HttpBackend) and not isinstance(model, Routed)
    assert (model.chat, model.hedgeable, model.legacy_identities()) == (False, False, [])
    model.check()  # nothing to check: it answers once loaded


# -- the store key: pinned, so that no change of the request layer invalidates stored answers ----


def test_a_request_that_asks_for_no_logprobs_keeps_the_key_it_had_before_they_existed() -> None:
    from selfinstruct.config import GenerationParams
    from selfinstruct.llm.types import ChatMessage, CompletionRequest

    identity = {"kind": "openai", "model": "m", "api": "completions"}
    params = GenerationParams(
        max_tokens=16, temperature=0.7, top_p=0.9, stop=("\n",), seed=3, repeat_penalty=1.1
    )
    text = CompletionRequest("Hello, world", params, sample_index=2)
    chat = CompletionRequest.chat(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")],
        GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0),
        response_schema='{"type":"object"}',
    )
    # Computed on main before top_logprobs was added to GenerationParams.
    assert text.key(identity) == "7e7bf3d762151ded595ce13caa866a9d3cda8bb806562bbcb809ca542556f8ff"
    assert chat.key(identity) == "4f4ffa6249ea2b30ff4685f70090eba8b73bdf7433212acdc3510aafd2fac72a"
    asking = CompletionRequest("Hello, world", params.with_(top_logprobs=5), sample_index=2)
    assert asking.key(identity) != text.key(identity)
    assert (
        "top_logprobs" not in params.model_dump()
        and params.with_(top_logprobs=5).model_dump()["top_logprobs"] == 5
    )
