"""AnthropicBackend against the loopback fake of the Messages API (servers/anthropic_fake.py): the
key and headers, the fail-fast check, what each error means, and the prompt cache's accounting."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.anthropic_fake import AnthropicFake, MessageFaults

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.anthropic.client import AnthropicBackend
from selfinstruct.llm.control.retry import RetryPolicy
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import ChatMessage, CompletionRequest

KEY = "sk-ant-test-Q7ZP-distinctive-secret"
MODEL = "claude-fake"
PARAMS = GenerationParams(max_tokens=32, temperature=0.0, top_p=1.0)
# A system message and demonstrations of about 600 stand-in tokens, shared by every question.
SYSTEM = "You sort tasks into two kinds. " * 30
DEMOS = [("Task: add two numbers", "No"), ("Task: tell spam from mail", "Yes")] * 12


@pytest.fixture(autouse=True)
def no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake((MODEL,), api_key=KEY, min_cache_tokens=500) as server:
        yield server


def backend_for(
    url: str, key: str | None = KEY, tmp_path: Path | None = None, **changes: object
) -> AnthropicBackend:
    key_file = None
    if key is not None:
        assert tmp_path is not None
        key_file = tmp_path / "key.txt"
        key_file.write_text(key + "\n")
    config = BackendConfig(
        kind="anthropic", model=MODEL, base_url=url, api_key_file=str(key_file) if key_file else None
    )
    return AnthropicBackend(config.model_copy(update=changes))


def question(task: str, shared: bool = True) -> CompletionRequest:
    messages = [ChatMessage("system", SYSTEM)]
    for asked, answer in DEMOS:
        messages += [ChatMessage("user", asked), ChatMessage("assistant", answer)]
    messages.append(ChatMessage("user", f"Task: {task}"))
    return CompletionRequest.chat(messages, PARAMS, shared_prefix=len(messages) - 1 if shared else 0)


# -- the key, the headers, the fail-fast check ------------------------------------------------


def test_the_key_goes_in_x_api_key_with_the_api_version(fake: AnthropicFake, tmp_path: Path) -> None:
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    backend.check()
    completion = backend.complete(question("sort numbers"), timeout=5.0)
    assert completion.text and completion.finish_reason == "stop"
    post = [r for r in fake.received if r.method == "POST"][-1]
    assert post.headers["x-api-key"] == KEY and post.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in post.headers
    assert backend.identity() == {"kind": "anthropic", "model": MODEL}  # no URL, no key


def test_the_key_file_beats_anthropic_api_key(
    fake: AnthropicFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-some-other-key")
    backend_for(fake.base_url, tmp_path=tmp_path).check()  # the file's key: accepted
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    backend_for(fake.base_url, key=None).check()  # no file: the variable's


def test_an_openai_key_is_never_sent_to_anthropic(
    fake: AnthropicFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(BackendError, match=r"authentication failed \(HTTP 401\)"):
        backend_for(fake.base_url, key=None).check()
    with pytest.raises(BackendError, match="no API key: set ANTHROPIC_API_KEY"):
        backend_for("https://api.anthropic.com/v1", key=None)


def test_a_wrong_key_fails_the_check_in_one_line_without_repeating_it(
    fake: AnthropicFake, tmp_path: Path
) -> None:
    with pytest.raises(BackendError) as info:
        backend_for(fake.base_url, key="sk-ant-wrong-key-1234", tmp_path=tmp_path).check()
    assert "authentication failed (HTTP 401)" in str(info.value)
    assert "sk-ant-wrong" not in str(info.value) and "\n" not in str(info.value)


def test_a_url_that_is_not_the_api_is_named_with_the_one_that_is(fake: AnthropicFake, tmp_path: Path) -> None:
    root = fake.base_url.removesuffix("/v1")
    with pytest.raises(BackendError) as info:
        backend_for(root, tmp_path=tmp_path).check()
    assert "does not look like Anthropic's API" in str(info.value)
    assert f"try --base-url {fake.base_url}" in str(info.value)


def test_a_dead_server_fails_the_check(tmp_path: Path) -> None:
    with pytest.raises(
        BackendError, match=re.escape("cannot reach http://127.0.0.1:9/v1: connection refused")
    ):
        backend_for("http://127.0.0.1:9/v1", tmp_path=tmp_path).check()


# -- what each failure means -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "retry_after"),
    [
        ("429", "rate_limit", 0.05),
        ("529", "overloaded", None),
        ("500", "server", None),
        ("drop", "connection", None),
    ],
)
def test_a_transient_fault_is_retryable_with_its_kind(
    fake: AnthropicFake, tmp_path: Path, fault: str, kind: str, retry_after: float | None
) -> None:
    fake.faults = MessageFaults(share=1.0, kinds=(fault,), max_in_a_row=1, retry_after="0.05")
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    with pytest.raises(RetryableBackendError) as info:
        backend.complete(question("sort numbers"), timeout=5.0)
    assert info.value.kind == kind and info.value.retry_after == retry_after
    assert backend.complete(question("sort numbers"), timeout=5.0).text  # the retry is answered


def test_a_hung_call_times_out(fake: AnthropicFake, tmp_path: Path) -> None:
    fake.faults = MessageFaults(share=1.0, kinds=("hang",), max_in_a_row=1, hang_s=2.0)
    with pytest.raises(RetryableBackendError) as info:
        backend_for(fake.base_url, tmp_path=tmp_path).complete(question("sort numbers"), timeout=0.3)
    assert info.value.kind == "timeout"


def test_a_refusal_is_retryable_and_never_a_completion(fake: AnthropicFake, tmp_path: Path) -> None:
    fake.faults = MessageFaults(share=1.0, kinds=("refusal",), max_in_a_row=1)
    with pytest.raises(RetryableBackendError) as info:
        backend_for(fake.base_url, tmp_path=tmp_path).complete(question("sort numbers"), timeout=5.0)
    assert info.value.kind == "no_content" and "refused" in str(info.value)


def test_an_unknown_model_is_one_line_naming_the_models_served(fake: AnthropicFake, tmp_path: Path) -> None:
    backend = backend_for(fake.base_url, tmp_path=tmp_path, model="claude-nope")
    backend.check()
    with pytest.raises(BackendError) as info:
        backend.complete(question("sort numbers"), timeout=5.0)
    assert "unknown model 'claude-nope'" in str(info.value) and f"it serves '{MODEL}'" in str(info.value)


def test_a_request_the_api_refuses_is_one_line(fake: AnthropicFake, tmp_path: Path) -> None:
    hot = CompletionRequest("hi", GenerationParams(max_tokens=8, temperature=1.5, top_p=1.0))
    with pytest.raises(BackendError, match=r"request rejected \(HTTP 400\) at .*temperature"):
        backend_for(fake.base_url, tmp_path=tmp_path).complete(hot, timeout=5.0)


# -- the prompt cache, through the request engine -------------------------------------------


def engine_for(
    backend: AnthropicBackend, tmp_path: Path, store: ResponseStore, **kw: object
) -> RequestEngine:
    return RequestEngine(
        backend,
        store,
        failed_log=tmp_path / "failed.jsonl",
        concurrency=1,  # one at a time: the first request writes the cache before the next reads it
        max_retries=2,
        timeout_s=5.0,
        progress=False,
        retry_policy=RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.05),
        **kw,  # type: ignore[arg-type]
    )


def test_the_shared_prefix_is_written_once_then_read_and_priced_at_the_cache_rates(
    fake: AnthropicFake, tmp_path: Path, store: ResponseStore
) -> None:
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    engine = engine_for(backend, tmp_path, store, price_per_1k_input=3.0, price_per_1k_output=15.0)
    completions = engine.complete_all([question(f"task number {n}") for n in range(5)], "classify")
    prefix = completions[0].cache_write_tokens
    assert prefix > 500
    assert [c.cache_read_tokens for c in completions] == [0, prefix, prefix, prefix, prefix]
    assert [c.cache_write_tokens for c in completions] == [prefix, 0, 0, 0, 0]

    stats = engine.stats()["classify"]
    assert stats["prompt_tokens_cache_read"] == 4 * prefix and stats["prompt_tokens_cache_write"] == prefix
    assert stats["prompt_tokens"] == sum(c.prompt_tokens for c in completions)
    fresh = stats["prompt_tokens"] - 5 * prefix
    expected = (fresh + 4 * prefix * 0.1 + prefix * 1.25) / 1000 * 3.0 + stats[
        "completion_tokens"
    ] / 1000 * 15.0
    assert stats["cost"] == pytest.approx(expected)
    assert stats["uncached_cost"] == pytest.approx(
        stats["prompt_tokens"] / 1000 * 3.0 + stats["completion_tokens"] / 1000 * 15.0
    )
    assert stats["cost"] < 0.5 * stats["uncached_cost"]


def test_the_cache_rates_are_configurable(fake: AnthropicFake, tmp_path: Path, store: ResponseStore) -> None:
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    engine = engine_for(backend, tmp_path, store, price_per_1k_input=1.0, cache_price_factors=(0.5, 2.0))
    first, second = engine.complete_all([question("a"), question("b")], "classify")
    prefix = first.cache_write_tokens
    fresh = first.prompt_tokens + second.prompt_tokens - 2 * prefix
    assert engine.stats()["classify"]["cost"] == pytest.approx((fresh + prefix * 2.0 + prefix * 0.5) / 1000)


def test_without_a_breakpoint_or_below_the_minimum_nothing_is_cached(
    fake: AnthropicFake, tmp_path: Path, store: ResponseStore
) -> None:
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    unmarked = [backend.complete(question("same", shared=False), timeout=5.0) for _ in range(2)]
    fake.min_cache_tokens = 100_000  # a model whose minimum is longer than this prefix
    short = [backend.complete(question("same"), timeout=5.0) for _ in range(2)]
    for completion in unmarked + short:
        assert completion.cache_read_tokens == completion.cache_write_tokens == 0


def test_answers_replayed_from_the_store_keep_their_cache_counts(
    fake: AnthropicFake, tmp_path: Path, store: ResponseStore
) -> None:
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    requests = [question("a"), question("b")]
    engine_for(backend, tmp_path, store).complete_all(requests, "classify")
    again = engine_for(backend, tmp_path, store)
    again.complete_all(requests, "classify")
    stats = again.stats()["classify"]
    assert stats["sent"] == 0 and stats["prompt_tokens_cache_read"] == 0
    assert stats["cached_prompt_tokens_cache_read"] > 0 and stats["cached_prompt_tokens_cache_write"] > 0


def test_a_persistent_refusal_is_never_stored_and_goes_to_failed_jsonl(
    fake: AnthropicFake, tmp_path: Path, store: ResponseStore
) -> None:
    fake.refuse = lambda params: "forbidden" in json.dumps(params)
    backend = backend_for(fake.base_url, tmp_path=tmp_path)
    engine = engine_for(backend, tmp_path, store)
    results = engine.run([question("a forbidden task"), question("a fine task")], "classify")
    assert results[0] is None and results[1] is not None
    assert store.get(engine.key(question("a forbidden task"))) is None
    (line,) = [json.loads(x) for x in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert "refused" in line["reason"] and line["attempts"] == 3
