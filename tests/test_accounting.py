"""Accounting: what a stage's requests cost, counted as they happen, priced, and projected to the whole stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.engine_parts import make_engine, requests_for
from servers.openai_stub import (
    OpenAIStub,
    server_error,
    usage_of,
)

from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.store import ResponseStore

pytestmark = pytest.mark.usefixtures("fake_key")


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


def test_an_openai_answers_cached_prompt_tokens_are_counted_and_priced_at_the_read_rate(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    # OpenAI and vLLM report the prefix their cache served inside prompt_tokens.
    usage = {"prompt_tokens": 1200, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 1024}}
    stub.plan("cached", usage_of(usage))
    stub.plan(
        "details null", usage_of({"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": None})
    )
    engine = make_engine(stub, store, tmp_path, price_per_1k_input=2.0, price_per_1k_output=4.0)
    cached, plain = engine.complete_all(requests_for("cached", "details null"), "s")
    assert (cached.prompt_tokens, cached.cache_read_tokens, cached.cache_write_tokens) == (1200, 1024, 0)
    assert plain.cache_read_tokens == 0
    s = engine.stats()["s"]
    assert (s["prompt_tokens"], s["prompt_tokens_cache_read"], s["prompt_tokens_cache_write"]) == (
        1205,
        1024,
        0,
    )
    assert s["cost"] == pytest.approx((181 + 1024 * 0.1) / 1000 * 2.0 + 11 / 1000 * 4.0)
    assert s["uncached_cost"] == pytest.approx(1205 / 1000 * 2.0 + 11 / 1000 * 4.0)


def test_malformed_cached_token_details_are_a_garbled_answer(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    stub.plan("bad", usage_of({"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": [3]}))
    engine = make_engine(stub, store, tmp_path, max_retries=0)
    assert engine.run(requests_for("bad"), "s") == [None]
    assert "prompt_tokens_details is a list" in (engine.stats()["s"]["last_failure"] or "")
