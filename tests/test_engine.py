"""RequestEngine: store-first, concurrent, retrying, durable; run against a real loopback server."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.openai_stub import (
    ANY_PROMPT,
    OpenAIStub,
    finished,
    garbled,
    hang,
    no_content,
    rate_limited,
    server_error,
    unauthorized,
)

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError
from selfinstruct.llm.control.hedging import HedgePolicy
from selfinstruct.llm.control.retry import RetryPolicy
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import ChatMessage, CompletionRequest

FAKE_KEY = "sk-engine-test-QQ77-very-secret"
PARAMS = GenerationParams(max_tokens=16, temperature=0.7, top_p=0.9, seed=1)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResponseStore]:
    with ResponseStore(tmp_path / "responses.sqlite") as response_store:
        yield response_store


@pytest.fixture(autouse=True)
def fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def make_engine(
    stub: OpenAIStub,
    store: ResponseStore,
    tmp_path: Path,
    *,
    concurrency: int = 4,
    max_retries: int = 3,
    api: str = "completions",
    **kw: object,
) -> RequestEngine:
    config = BackendConfig(kind="openai", model="stub-model", base_url=stub.base_url, api=api)
    backend = OpenAIBackend(config)
    return RequestEngine(
        backend,
        store,
        failed_log=tmp_path / "failed.jsonl",
        concurrency=concurrency,
        max_retries=max_retries,
        timeout_s=kw.pop("timeout_s", 5.0),  # type: ignore[arg-type]
        progress=False,
        # Tiny backoff so retry tests take milliseconds, not seconds.
        retry_policy=RetryPolicy(max_retries=max_retries, base_s=0.01, cap_s=0.05),
        **kw,  # type: ignore[arg-type]
    )


def requests_for(*prompts: str) -> list[CompletionRequest]:
    return [CompletionRequest(p, PARAMS) for p in prompts]


def failed_lines(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "failed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


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


def test_transient_failures_are_retried_until_success(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    stub.plan("flaky", rate_limited(), server_error(500), garbled(), server_error(503))
    engine = make_engine(stub, store, tmp_path, max_retries=4)
    (result,) = engine.run(requests_for("flaky"), "s")
    assert result is not None and result.text == "answer to: flaky"
    assert stub.hits("flaky") == 5
    assert engine.stats()["s"]["retries"] == 4
    assert failed_lines(tmp_path) == []


def test_a_timeout_is_retried(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    stub.plan("slow", hang(3))
    (result,) = make_engine(stub, store, tmp_path, timeout_s=0.2).run(requests_for("slow"), "s")
    assert result is not None and stub.hits("slow") == 2


def test_retry_after_from_the_server_is_honoured(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    stub.plan("wait", rate_limited("0.4"))
    started = time.monotonic()
    (result,) = make_engine(stub, store, tmp_path).run(requests_for("wait"), "s")
    assert result is not None
    assert time.monotonic() - started >= 0.4


def test_exhausted_retries_are_logged_not_stored_and_resent_next_run(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    stub.plan("doomed", *[server_error(500)] * 3)
    engine = make_engine(stub, store, tmp_path, max_retries=2)
    results = engine.run(requests_for("fine", "doomed"), "instances")
    assert results[0] is not None and results[1] is None
    assert store.count() == 1
    (line,) = failed_lines(tmp_path)
    assert line["stage"] == "instances" and line["attempts"] == 3
    assert line["key"] == engine.key(requests_for("doomed")[0])
    assert line["prompt_head"] == "doomed" and "HTTP 500" in str(line["reason"])
    assert engine.stats()["instances"]["last_failure"] == line["reason"]
    # The next run sends only the failed request (the stub now answers it).
    again = make_engine(stub, store, tmp_path, max_retries=2).run(requests_for("fine", "doomed"), "instances")
    assert again[1] is not None and again[1].text == "answer to: doomed"
    assert stub.hits("fine") == 1 and stub.hits("doomed") == 4


def test_answers_that_are_not_answers_are_retried_never_stored_and_logged_with_their_reason(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    # A filtered answer that passes on retry costs a retry; a refusal that persists is a
    # failure with its reason; neither is replayed as data by the next run.
    stub.plan("flaky", finished("content_filter"))
    stub.plan("refused", *[no_content(refusal="No.")] * 3)
    engine = make_engine(stub, store, tmp_path, max_retries=2, api="chat")
    results = engine.run(requests_for("flaky", "refused"), "instances")
    assert results[0] is not None and results[0].finish_reason == "stop"
    assert results[0].text == "answer to: flaky" and results[1] is None
    assert store.count() == 1
    (line,) = failed_lines(tmp_path)
    assert line["prompt_head"] == "refused" and "refused (No.)" in str(line["reason"])
    again = make_engine(stub, store, tmp_path, max_retries=2, api="chat").run(
        requests_for("flaky", "refused"), "instances"
    )
    assert again[1] is not None and again[1].text == "answer to: refused"
    assert stub.hits("flaky") == 2 and stub.hits("refused") == 4


def test_prompt_head_in_failed_log_is_cut_to_200_characters(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    long_prompt = "x" * 1000
    stub.plan(long_prompt, server_error(500))
    make_engine(stub, store, tmp_path, max_retries=0).run(requests_for(long_prompt), "s")
    assert failed_lines(tmp_path)[0]["prompt_head"] == "x" * 200


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


def test_stats_add_up_and_price_tokens(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    stub.plan("bad", *[server_error(500)] * 2)
    stub.plan("retry", server_error(502))
    engine = make_engine(
        stub, store, tmp_path, max_retries=1, price_per_1k_input=2.0, price_per_1k_output=4.0
    )
    engine.run(requests_for("one two", "retry", "bad"), "s")
    engine.run(requests_for("one two", "new words here", "new words here"), "s")
    s = engine.stats()["s"]
    assert s["requests"] == 6
    assert s["requests"] == s["cached"] + s["duplicates"] + s["sent"]
    assert (s["cached"], s["duplicates"], s["sent"]) == (1, 1, 4)
    assert s["sent"] == s["succeeded"] + s["failed"] == 3 + 1
    assert s["retries"] == 2
    # stub usage: prompt tokens = words in the prompt, completion tokens = words in "answer to: <prompt>"
    assert s["prompt_tokens"] == 2 + 1 + 3
    assert s["completion_tokens"] == 4 + 3 + 5
    assert s["cost"] == pytest.approx(6 / 1000 * 2.0 + 12 / 1000 * 4.0)
    assert s["elapsed_s"] > 0


def test_stats_without_prices_have_no_cost(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    engine = make_engine(stub, store, tmp_path)
    engine.run(requests_for("a"), "s")
    assert "cost" not in engine.stats()["s"]


def test_empty_batch_returns_empty_list(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    assert make_engine(stub, store, tmp_path).run([], "s") == []


# -- admission control ---------------------------------------------------------------------


def test_concurrency_never_exceeds_the_configured_limit(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    prompts = [f"c{i}" for i in range(30)]
    for p in prompts:
        stub.plan(p, hang(0.03))
    engine = make_engine(stub, store, tmp_path, concurrency=5)
    assert all(engine.run(requests_for(*prompts), "s"))
    assert stub.max_in_flight == 5
    assert engine.stats()["s"]["concurrency_limit"] == 5


def test_a_429_with_retry_after_holds_back_every_new_request_then_all_complete(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    prompts = [f"burst {i}" for i in range(12)]
    # Of the first four requests, one is refused for 0.5 s; the other three answer after 0.1 s,
    # when their workers are free to send more: the gate must hold those back too.
    stub.plan(ANY_PROMPT, rate_limited("0.5"), hang(0.1), hang(0.1), hang(0.1))
    engine = make_engine(stub, store, tmp_path, concurrency=4)
    hits_during_gate: list[int] = []
    sampler = threading.Timer(0.3, lambda: hits_during_gate.append(stub.hits()))
    sampler.start()
    started = time.monotonic()
    results = engine.run(requests_for(*prompts), "s")
    sampler.join()
    assert [r.text if r else None for r in results] == [stub.answer_for(p) for p in prompts]
    # At most the first wave (a worker that starts late is held back too); without the gate
    # the three workers freed at 0.1 s would have sent more by now.
    assert len(hits_during_gate) == 1 and 1 <= hits_during_gate[0] <= 4
    assert time.monotonic() - started >= 0.5
    s = engine.stats()["s"]
    assert (s["throttled"], s["throttle_events"], s["retries"]) == (1, 1, 1)
    assert s["succeeded"] == 12 and failed_lines(tmp_path) == []


def test_a_burst_of_429s_cuts_the_limit_once_and_everything_completes(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    prompts = [f"wave {i}" for i in range(16)]
    stub.plan(ANY_PROMPT, *[rate_limited("0.2")] * 8)  # the whole first wave is refused
    engine = make_engine(stub, store, tmp_path, concurrency=8)
    results = engine.run(requests_for(*prompts), "s")
    assert all(results)
    s = engine.stats()["s"]
    assert (s["throttled"], s["throttle_events"], s["retries"]) == (8, 1, 8)
    assert s["concurrency_limit"] < 8


def test_after_a_429_fewer_requests_are_in_flight(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    engine = make_engine(stub, store, tmp_path, concurrency=8)
    stub.plan("first", rate_limited())
    engine.run(requests_for("first"), "probe")
    assert engine.stats()["probe"]["throttle_events"] == 1
    assert engine.admission.limit == 4
    prompts = [f"after {i}" for i in range(12)]
    for p in prompts:
        stub.plan(p, hang(0.05))
    stub.max_in_flight = 0
    engine.run(requests_for(*prompts), "s")
    limit = engine.stats()["s"]["concurrency_limit"]
    # Additive increase: 4 -> 5 -> 6 over these successes, never back to 8 in one batch.
    assert 4 <= stub.max_in_flight <= limit < 8


def test_a_timeout_counts_as_throttling(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    stub.plan("slow", hang(3))
    engine = make_engine(stub, store, tmp_path, timeout_s=0.2)
    engine.run(requests_for("slow"), "s")
    s = engine.stats()["s"]
    assert (s["throttled"], s["throttle_events"], s["concurrency_limit"]) == (1, 1, 2)


def test_a_server_error_does_not_cut_the_limit(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    stub.plan("oops", server_error(500), garbled())
    engine = make_engine(stub, store, tmp_path, concurrency=4)
    engine.run(requests_for("oops"), "s")
    s = engine.stats()["s"]
    assert (s["retries"], s["throttled"], s["throttle_events"], s["concurrency_limit"]) == (2, 0, 0, 4)


def test_engines_can_share_one_admission_controller(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    first = make_engine(stub, store, tmp_path, concurrency=8)
    second = make_engine(stub, store, tmp_path, concurrency=8, admission=first.admission)
    stub.plan("x", rate_limited())
    first.run(requests_for("x"), "s")
    assert second.admission.limit == 4


# -- cost projection -----------------------------------------------------------------------


def priced_engine(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> RequestEngine:
    return make_engine(stub, store, tmp_path, price_per_1k_input=2.0, price_per_1k_output=4.0)


def test_projection_scales_the_cost_per_unit_to_the_whole_run(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    engine = priced_engine(stub, store, tmp_path)
    engine.run(requests_for("one two", "three"), "bootstrap")  # 3 prompt + 7 completion tokens
    cost = 3 / 1000 * 2.0 + 7 / 1000 * 4.0
    p = engine.project("bootstrap", done_units=2, total_units=10)
    assert p["cost_so_far"] == pytest.approx(cost) == pytest.approx(p["cost_this_run"])
    assert p["cost_per_unit"] == pytest.approx(cost / 2)
    assert p["projected_cost"] == pytest.approx(cost * 5)
    assert p["projected_remaining_cost"] == pytest.approx(cost * 4)
    assert (p["tokens_so_far"], p["projected_tokens"]) == (10, 50)


def test_projection_of_a_resumed_run_counts_answers_replayed_from_the_store(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    priced_engine(stub, store, tmp_path).run(requests_for("one two", "three"), "bootstrap")
    resumed = priced_engine(stub, store, tmp_path)
    resumed.run(requests_for("one two", "three", "four five six"), "bootstrap")
    p = resumed.project("bootstrap", done_units=3, total_units=6)
    paid_before = 3 / 1000 * 2.0 + 7 / 1000 * 4.0
    paid_now = 3 / 1000 * 2.0 + 5 / 1000 * 4.0
    assert p["cost_this_run"] == pytest.approx(paid_now)
    assert p["cost_so_far"] == pytest.approx(paid_before + paid_now)
    assert p["projected_cost"] == pytest.approx(2 * (paid_before + paid_now))


def test_projection_without_prices_projects_tokens_only(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    engine = make_engine(stub, store, tmp_path)
    engine.run(requests_for("a b"), "s")
    p = engine.project("s", done_units=1, total_units=4)
    assert p["cost_so_far"] is None and p["projected_cost"] is None
    assert p["projected_tokens"] == 4 * p["tokens_so_far"] == 4 * (2 + 4)


def test_projection_before_the_first_unit_has_no_estimate(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    engine = priced_engine(stub, store, tmp_path)
    p = engine.project("not started", done_units=0, total_units=100)
    assert p["cost_so_far"] == 0 and p["projected_cost"] is None and p["projected_tokens"] is None
    with pytest.raises(ValueError):
        engine.project("s", done_units=-1, total_units=5)


# -- RetryPolicy ---------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_retries=10, base_s=0.5, cap_s=30.0, rng=random.Random(0))
    for retry in range(1, 10):
        ceiling = min(30.0, 0.5 * 2 ** (retry - 1))
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # it spreads over the whole range


def test_retry_after_overrides_backoff_but_is_capped() -> None:
    policy = RetryPolicy(max_retries=3, base_s=0.5, retry_after_cap_s=60, rng=random.Random(0))
    assert 7.0 <= policy.delay(1, retry_after=7.0) <= 7.5
    assert policy.delay(1, retry_after=3600) <= 60.5


def test_retry_budget_is_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    assert [policy.allows_retry(n) for n in range(4)] == [True, True, False, False]


def test_a_hung_request_is_hedged_after_the_stage_latency_not_its_timeout(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    # A budget that the hedges of the warm-up's cold start (few latencies known) cannot use up.
    engine = make_engine(stub, store, tmp_path, concurrency=4, timeout_s=30.0, hedge=HedgePolicy(budget=0.2))
    engine.run(requests_for(*(f"warm {i}" for i in range(40))), "s")  # latencies to judge by
    stub.plan("stuck", hang(20))  # the first attempt never answers in time; a second one does
    before = engine.stats()["s"]
    started = time.monotonic()
    (result,) = engine.run(requests_for("stuck"), "s")
    assert time.monotonic() - started < 5
    assert result is not None and result.text == "answer to: stuck"
    stats = engine.stats()["s"]
    # The twin answered first: no timeout, no retry.
    assert stats["hedge_wins"] - before["hedge_wins"] == 1 and stats["retries"] == before["retries"]
    assert stub.hits("stuck") == 2
    assert store.count() == 41  # one stored answer per key


def test_hedges_stay_within_their_budget(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    engine = make_engine(stub, store, tmp_path, concurrency=8, timeout_s=1.0, hedge=HedgePolicy(budget=0.05))
    engine.run(requests_for(*(f"warm {i}" for i in range(20))), "s")
    stuck = [f"stuck {i}" for i in range(10)]
    for prompt in stuck:
        stub.plan(prompt, hang(1.5))  # each first attempt hangs; a twin or a retry answers
    results = engine.run(requests_for(*stuck), "s")
    assert all(r is not None for r in results)
    stats = engine.stats()["s"]
    assert stats["hedged"] <= 0.05 * (stats["sent"] + stats["retries"])
    assert stub.stats()["completions"] == stats["sent"] + stats["retries"] + stats["hedged"]


def test_a_local_backend_is_never_hedged(stub: OpenAIStub, store: ResponseStore, tmp_path: Path) -> None:
    backend = OpenAIBackend(BackendConfig(kind="openai", model="stub-model", base_url=stub.base_url))
    backend.hedgeable = False  # as the embedded and transformers backends are
    engine = RequestEngine(
        backend, store, tmp_path / "failed.jsonl", concurrency=2, max_retries=0, timeout_s=5.0,
        progress=False, hedge=HedgePolicy(budget=1.0),
    )  # fmt: skip
    assert engine.hedge.budget == 0


def test_a_glitch_is_retried_at_once_and_only_overload_backs_off_exponentially() -> None:
    policy = RetryPolicy(max_retries=6, base_s=1.0, rng=random.Random(0))
    glitches = [policy.delay(n, overload=False) for n in range(1, 7)]
    assert max(glitches) <= 0.1  # a tenth of the base, never growing
    overloads = [policy.delay(6, overload=True) for _ in range(50)]
    assert max(overloads) > 1.0  # up to base x 2^5
    assert policy.delay(1, retry_after=2.0, overload=False) >= 2.0  # Retry-After always wins


def test_a_chat_request_to_a_text_only_backend_stops_the_stage_with_one_line(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    chat = CompletionRequest.chat(
        [ChatMessage("user", "Name a fruit.")], GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
    )
    with pytest.raises(BackendError, match="need a chat model: --backend openai --api chat"):
        make_engine(stub, store, tmp_path, api="completions").run([chat], "s")
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
