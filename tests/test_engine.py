"""RequestEngine: lookup -> send -> store, concurrent and durable; against a real loopback server."""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import pytest
from fixtures.engine_parts import FAKE_KEY, PARAMS, failed_lines, make_engine, requests_for
from servers.openai_stub import (
    OpenAIStub,
    hang,
    unauthorized,
)

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError
from selfinstruct.llm.control.hedging import HedgePolicy
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import ChatMessage, CompletionRequest

pytestmark = pytest.mark.usefixtures("fake_key")


def test_answers_come_back_in_request_order_under_concurrency(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    prompts = [f"prompt {i}" for i in range(24)]
    rng = random.Random(3)
    for p in prompts:  # early prompts answer slowest, so completion order differs from request order
        stub.plan(p, hang(rng.uniform(0, 0.15)))
    results = make_engine(stub, store, tmp_path, concurrency=8).run(requests_for(*prompts), "bootstrap")
    assert [r.text if r else None for r in results] == [stub.answer_for(p) for p in prompts]


def test_stored_responses_are_not_sent_again(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    engine = make_engine(stub, store, tmp_path)
    first = engine.run(requests_for("a", "b", "c"), "bootstrap")
    assert stub.hits() == 3
    second = make_engine(stub, store, tmp_path).run(requests_for("c", "b", "a", "d"), "bootstrap")
    assert stub.hits() == 4 and stub.hits("d") == 1
    assert second[:3] == first[::-1]


def test_every_answer_is_in_the_store_when_run_returns(stub: OpenAIStub, tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    with ResponseStore(path) as store:
        engine = make_engine(stub, store, tmp_path)
        reqs = requests_for("x", "y")
        engine.run(reqs, "classify")
    with ResponseStore(path) as reopened:
        stored = reopened.get_many([engine.key(r) for r in reqs])
        assert [stored[engine.key(r)].text for r in reqs] == ["answer to: x", "answer to: y"]
        assert reopened.count("classify") == 2


def test_stored_request_metadata_holds_prompt_and_identity_but_no_key(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    make_engine(stub, store, tmp_path).run(requests_for("meta prompt"), "s")
    (blob,) = store._db.execute("SELECT request_json FROM responses").fetchone()
    meta = json.loads(blob)
    assert meta["prompt"] == "meta prompt" and meta["backend"]["kind"] == "openai"
    assert meta["params"]["max_tokens"] == 16
    assert FAKE_KEY not in blob


def test_identical_requests_in_one_batch_are_sent_once(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    engine = make_engine(stub, store, tmp_path)
    results = engine.run(requests_for("same", "same", "other", "same"), "s")
    assert stub.hits("same") == 1
    assert [r.text for r in results if r] == ["answer to: same"] * 2 + ["answer to: other", "answer to: same"]
    assert engine.stats()["s"]["duplicates"] == 2


def test_samples_with_different_index_are_distinct_requests(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    reqs = [CompletionRequest("p", PARAMS, sample_index=i) for i in range(3)]
    make_engine(stub, store, tmp_path).run(reqs, "s")
    assert stub.hits("p") == 3


def test_fatal_error_stops_the_batch_quickly_and_keeps_finished_answers(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    prompts = [f"p{i}" for i in range(40)]
    stub.plan("p0", unauthorized())
    for p in prompts[1:]:
        stub.plan(p, hang(0.05))
    engine = make_engine(stub, store, tmp_path, concurrency=2)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        engine.run(requests_for(*prompts), "bootstrap")
    assert time.monotonic() - started < 1.0
    assert "authentication failed (HTTP 401)" in str(info.value)
    assert FAKE_KEY not in str(info.value)
    assert stub.hits() < 10  # queued work was not sent
    assert store.count() == stub.hits() - 1  # every answer that did arrive was stored
    assert failed_lines(tmp_path) == []  # a fatal error is not a per-request failure


@pytest.mark.parametrize("hedge_budget", [0.0, 0.05], ids=["plain", "hedged"])
def test_a_stream_left_before_its_answers_are_read_does_not_wait_for_them(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path, hedge_budget: float
) -> None:
    # One slot: "slow" (2 s) holds it, "queued" waits for it; the caller reads neither.
    stub.plan("slow", hang(2.0))
    engine = make_engine(stub, store, tmp_path, concurrency=1, hedge=HedgePolicy(budget=hedge_budget))
    slow, queued = requests_for("slow", "queued")
    started = time.monotonic()
    with engine.stream("bootstrap") as stream:
        stream.submit(slow)
        while stub.hits("slow") == 0:  # it holds the slot
            time.sleep(0.01)
        stream.submit(queued)
    assert time.monotonic() - started < 1.0  # not the 2 s of "slow"
    # What was at the server is stored when it comes; what was not sent never is.
    deadline = time.monotonic() + 10
    while store.get(engine.key(slow)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get(engine.key(slow)) is not None
    time.sleep(0.3)
    assert stub.hits("queued") == 0 and store.get(engine.key(queued)) is None
    stats = engine.stats()["bootstrap"]
    assert (stats["sent"], stats["unwaited"], stats["called_off"], stats["succeeded"]) == (1, 1, 1, 0)
    assert failed_lines(tmp_path) == []


def test_empty_batch_returns_empty_list(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    assert make_engine(stub, store, tmp_path).run([], "s") == []


def test_a_local_backend_is_never_hedged(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    backend = OpenAIBackend(BackendConfig(kind="openai", model="stub-model", base_url=stub.base_url))
    backend.hedgeable = False  # as the embedded and transformers backends are
    engine = RequestEngine(
        backend, store, tmp_path / "failed.jsonl", concurrency=2, max_retries=0, timeout_s=5.0,
        progress=False, hedge=HedgePolicy(budget=1.0),
    )  # fmt: skip
    assert engine.hedge.budget == 0


def test_a_chat_request_to_a_text_only_backend_stops_the_stage_with_one_line(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    chat = CompletionRequest.chat(
        [ChatMessage("user", "Name a fruit.")], GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
    )
    with pytest.raises(BackendError, match="need a chat model: --backend openai --api chat") as error:
        make_engine(stub, store, tmp_path, api="completions").run([chat], "s")
    message = str(error.value)
    assert message.strip() and "\n" not in message  # the CLI prints it as the one line it is
    assert store.count() == 0 and not any(r.method == "POST" for r in stub.received)


def test_a_chat_request_is_stored_with_its_messages_and_schema(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    chat = CompletionRequest.chat(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "Name a fruit.")],
        GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0),
        response_schema='{"type": "string"}',
    )
    (completion,) = make_engine(stub, store, tmp_path, api="chat").run([chat], "s")
    assert completion is not None
    (blob,) = store._db.execute("SELECT request_json FROM responses").fetchone()
    meta = json.loads(blob)
    assert meta["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a fruit."},
    ]
    assert meta["response_schema"] == {"type": "string"} and "[system]" in meta["prompt"]


def test_a_text_request_keeps_its_key_and_chat_parts_change_it() -> None:
    params = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
    identity = {"kind": "openai", "model": "m"}
    text = CompletionRequest("Name a fruit.", params)
    # The key every stored answer of a text prompt was saved under: it must not move.
    payload = {
        "backend": identity,
        "prompt": "Name a fruit.",
        "params": params.model_dump(mode="json"),
        "sample_index": 0,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert text.key(identity) == hashlib.sha256(blob.encode("utf-8")).hexdigest()
    chat = CompletionRequest.chat([ChatMessage("user", "Name a fruit.")], params)
    keys = {
        text.key(identity),
        chat.key(identity),
        CompletionRequest.chat([ChatMessage("system", "Name a fruit.")], params).key(identity),
        CompletionRequest.chat([ChatMessage("user", "Name a fruit.")], params, '{"type": "string"}').key(
            identity
        ),
    }
    assert len(keys) == 4
