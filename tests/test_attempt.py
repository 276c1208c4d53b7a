"""control/attempt.py: one request from "not stored" to answered or given up: retries, admission slots, hedged twins."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fixtures.engine_parts import failed_lines, make_engine, requests_for
from servers.openai_stub import (
    ANY_PROMPT,
    OpenAIStub,
    garbled,
    hang,
    rate_limited,
    server_error,
)

from selfinstruct.llm.control.hedging import HedgePolicy
from selfinstruct.llm.store import ResponseStore

pytestmark = pytest.mark.usefixtures("fake_key")


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
    # Every try but a twin reaches the stub. A twin that lost its race may still be on its way
    # when run() returns (nobody waits for it), or may have been called off before it was sent:
    # so the stub sees between the two counts, and never a try the books do not have.
    least, most = stats["sent"] + stats["retries"], stats["sent"] + stats["retries"] + stats["hedged"]
    deadline = time.monotonic() + 5.0
    while stub.stats()["completions"] < most and time.monotonic() < deadline:
        time.sleep(0.01)
    assert least <= stub.stats()["completions"] <= most
