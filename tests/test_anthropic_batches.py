"""`--batch` with `--backend anthropic`: Message Batches, against the loopback fake with its faults.

The fake (servers/anthropic_batches_fake.py) is real HTTP and answers each batch line as its
online route answers the same request. Crashes are raised at the exact step a killed process
would stop at, and a new engine and executor resume from the run directory, as the next
invocation would; one test kills a real `selfinstruct run` with SIGKILL. Nothing may be
paid for twice: the fake counts every succeeded line by custom_id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_outputs
from servers.anthropic_batches_fake import MessageBatchesFake

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.llm.anthropic.batches import MessageBatches, read_results
from selfinstruct.llm.anthropic.client import AnthropicBackend
from selfinstruct.llm.batch_api import BatchState
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.executors.batch import BatchExecutor
from selfinstruct.llm.executors.batch_journal import BatchJournal
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import ChatMessage, CompletionRequest

MODEL = "claude-fake"
PARAMS = GenerationParams(max_tokens=16, temperature=0.0, top_p=1.0)
# A system message long enough for the fake's prompt cache (min_cache_tokens below).
SYSTEM = "You label tasks. " * 40


@pytest.fixture
def fake() -> Iterator[MessageBatchesFake]:
    with MessageBatchesFake((MODEL,), lines_per_poll=3, min_cache_tokens=100) as server:
        yield server


def engine_for(
    fake: MessageBatchesFake, folder: Path, max_retries: int = 3, **prices: float
) -> RequestEngine:
    config = BackendConfig(
        kind="anthropic",
        model=MODEL,
        base_url=fake.base_url,
        batch=True,
        batch_poll_s=0.01,
        max_retries=max_retries,
        **prices,
    )
    backend = AnthropicBackend(config)
    return RequestEngine(
        backend,
        ResponseStore(folder / "responses.sqlite"),
        folder / "failed.jsonl",
        4,
        max_retries,
        5.0,
        progress=False,
        price_per_1k_input=prices.get("price_per_1k_input"),
        price_per_1k_output=prices.get("price_per_1k_output"),
        executor=BatchExecutor(config, backend, folder, progress=False),
    )


def requests(n: int) -> list[CompletionRequest]:
    return [
        CompletionRequest.chat([ChatMessage("system", SYSTEM), ChatMessage("user", f"task {i}")], PARAMS)
        for i in range(n)
    ]


def texts(results: list) -> list[str | None]:  # type: ignore[type-arg]
    return [r.text if r is not None else None for r in results]


ANSWERS = [f"answer to: task {i}" for i in range(10)]


def test_every_answer_comes_back_by_custom_id_in_any_order_and_is_stored(
    fake: MessageBatchesFake, tmp_path: Path
) -> None:
    engine = engine_for(fake, tmp_path, price_per_1k_input=3.0, price_per_1k_output=15.0)
    results = engine.run(requests(10), "classify")
    assert texts(results) == ANSWERS  # the results file was shuffled
    assert all(engine.store.get(engine.key(r)) for r in requests(10))
    stats = fake.stats()
    assert (stats["batches"], stats["messages"], stats["paid_twice"], len(stats["paid"])) == (1, 0, [], 10)
    events = [json.loads(line)["event"] for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert events == ["prepared", "creating", "created", "collected"]
    # The shared system message was read from the prompt cache inside the batch, and the whole
    # cost, cache reads included, is at the batch discount.
    books = engine.stats()["classify"]
    assert books["prompt_tokens_cache_read"] == 9 * books["prompt_tokens_cache_write"] > 0
    assert books["cost"] == pytest.approx(books["online_cost"] * 0.5) and books["cost"] > 0
    again = engine_for(fake, tmp_path).run(requests(10), "classify")  # all from the store
    assert texts(again) == texts(results) and fake.stats()["batches"] == 1


def test_a_batch_that_expires_half_done_and_errored_lines_are_sent_again_and_all_answered(
    tmp_path: Path,
) -> None:
    keys = [engine_for(MessageBatchesFake().start(), tmp_path / "probe").key(r) for r in requests(10)]
    with MessageBatchesFake((MODEL,), lines_per_poll=2, expire_after=4, error_ids={keys[1], keys[8]}) as fake:
        engine = engine_for(fake, tmp_path)
        results = engine.run(requests(10), "classify")
        stats = fake.stats()
    assert texts(results) == ANSWERS
    assert stats["paid_twice"] == [] and len(stats["paid"]) == 10
    # Round 1 runs 0-3 (1 errors) and expires 4-9; round 2 sends 1 and 4-9: runs 1, 4, 5, 6
    # and expires 7-9; round 3 sends 7, 8, 9 (8 errors); round 4 sends 8.
    assert stats["batches"] == 4
    books = engine.stats()["classify"]
    assert (books["sent"], books["succeeded"], books["retries"]) == (10, 10, 7 + 3 + 1)
    assert not (tmp_path / "failed.jsonl").exists()


def test_a_request_the_api_refuses_fails_at_once(tmp_path: Path) -> None:
    key = engine_for(MessageBatchesFake().start(), tmp_path / "probe").key(requests(3)[0])
    with MessageBatchesFake(error_ids={key}, error_type="invalid_request_error") as fake:
        results = engine_for(fake, tmp_path).run(requests(3), "classify")
        assert fake.stats()["batches"] == 1
    assert texts(results) == [None, *ANSWERS[1:3]]
    failure = json.loads((tmp_path / "failed.jsonl").read_text())
    assert failure["key"] == key and "invalid_request_error" in failure["reason"] and failure["attempts"] == 1


def test_a_create_whose_answer_was_lost_is_found_in_the_listing_not_sent_again(tmp_path: Path) -> None:
    with MessageBatchesFake((MODEL,), drop_create_answers=1) as fake:
        results = engine_for(fake, tmp_path).run(requests(4), "classify")
        stats = fake.stats()
    assert texts(results) == ANSWERS[:4]
    assert (stats["batches"], stats["listings"], stats["paid_twice"]) == (1, 1, [])


class Crash(BaseException):
    """Where a killed process would stop (a BaseException, like KeyboardInterrupt)."""


def test_a_batch_whose_id_was_lost_is_found_by_paging_through_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MessageBatchesFake((MODEL,), page_cap=1) as fake:
        original = BatchJournal.created

        def crash(self: BatchJournal, *args: Any) -> None:
            monkeypatch.setattr(BatchJournal, "created", original)
            raise Crash  # the batch exists; its id was never written

        monkeypatch.setattr(BatchJournal, "created", crash)
        with pytest.raises(Crash):
            engine_for(fake, tmp_path).run(requests(6), "classify")
        # Other batches of the workspace: newer ones of other sizes, an older one of the same size.
        fake.foreign_batch(6, age_s=3600)
        fake.foreign_batch(2)
        fake.foreign_batch(7)
        results = engine_for(fake, tmp_path).run(requests(6), "classify")
        stats = fake.stats()
    assert texts(results) == ANSWERS[:6]
    assert (stats["batches"], stats["paid_twice"], len(stats["paid"])) == (4, [], 6)  # no new batch of ours
    assert stats["listings"] >= 3  # one batch a page: ours is the third


def test_a_create_that_never_reached_the_api_is_sent_once_on_resume_and_adopts_no_other_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MessageBatchesFake((MODEL,)) as fake:

        def crash(self: MessageBatches, *args: Any) -> str:
            raise Crash  # "creating" is in the journal; the request never left

        monkeypatch.setattr(MessageBatches, "create", crash)
        with pytest.raises(Crash):
            engine_for(fake, tmp_path).run(requests(6), "classify")
        monkeypatch.undo()
        other = fake.foreign_batch(6, age_s=3600)  # the same size, made long before
        engine = engine_for(fake, tmp_path)
        results = engine.run(requests(6), "classify")
        stats = fake.stats()
    assert texts(results) == ANSWERS[:6] and engine.stats()["classify"]["retries"] == 0
    assert (stats["batches"], stats["paid_twice"]) == (2, [])
    created = [json.loads(line) for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert [e["batch_id"] for e in created if e["event"] == "created"] != [other]


def test_results_are_read_from_this_api_only(fake: MessageBatchesFake, tmp_path: Path) -> None:
    # The key goes with the request: a results_url on another host is not followed.
    engine_for(fake, tmp_path).run(requests(2), "classify")
    batch_id = next(iter(fake.batches))
    api = MessageBatches(
        AnthropicBackend(BackendConfig(kind="anthropic", model=MODEL, base_url=fake.base_url))
    )
    state = api.poll(batch_id)
    elsewhere = BatchState(batch_id, "ended", True, 2, state.raw | {"results_url": "http://192.0.2.1:9/r"})
    assert sorted(o.completion.text for o in api.results(elsewhere) if o.completion) == ANSWERS[:2]
    api.close()


def test_result_lines_are_classified() -> None:
    message = {"content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "usage": {}}
    lines: list[Any] = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": message}},
        {"custom_id": "b", "result": {"type": "succeeded", "message": message | {"stop_reason": "refusal"}}},
        {
            "custom_id": "c",
            "result": {"type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error"}}},
        },
        {
            "custom_id": "d",
            "result": {"type": "errored", "error": {"type": "invalid_request_error", "message": "x"}},
        },
        {"custom_id": "e", "result": {"type": "expired"}},
        {"custom_id": "f", "result": {"type": "canceled"}},
    ]
    content = b"\n".join(json.dumps(line).encode() for line in lines) + b"\nnot json\n\n"
    got = {
        o.key: (o.completion.text if o.completion else None, o.retryable, o.reason)
        for o in read_results(content)
    }
    assert got == {
        "a": ("hi", True, None),
        "b": (None, True, "the answer has no content: refused"),
        "c": (None, True, "errored: overloaded_error"),
        "d": (None, False, "errored: invalid_request_error: x"),
        "e": (None, True, "expired before it ran"),
        "f": (None, True, "canceled before it ran"),
    }


# -- the command ----------------------------------------------------------------------------


def selfinstruct_argv(fake: MessageBatchesFake, out: Path, n: int, *extra: str) -> list[str]:
    config = out.parent / f"{out.name}.json"  # JSON is YAML
    out.parent.mkdir(parents=True, exist_ok=True)
    backend = {
        "batch_poll_s": 0.02,
        "retry_base_s": 0.01,
        "price_per_1k_input": 3.0,
        "price_per_1k_output": 15.0,
    }
    config.write_text(json.dumps({"seed": 42, "backend": backend}))
    args = ["run", "--out", str(out), "--config", str(config), "-n", str(n), "--no-progress"]
    args += ["--backend", "anthropic", "--base-url", fake.base_url, "--model", MODEL, *extra]
    return [sys.executable, "-m", "selfinstruct", *args]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}


def test_a_whole_run_with_batch_writes_the_same_files_as_an_online_run(tmp_path: Path) -> None:
    with MessageBatchesFake((MODEL,), lines_per_poll=4, min_cache_tokens=500) as fake:
        online_run, batched_run = tmp_path / "online" / "run", tmp_path / "batched" / "run"
        online = subprocess.run(
            selfinstruct_argv(fake, online_run, 6),
            capture_output=True,
            text=True,
            env=environment(),
            timeout=120,
        )
        assert online.returncode == 0, online.stderr
        assert fake.stats()["batches"] == 0
        batched = subprocess.run(
            selfinstruct_argv(fake, batched_run, 6, "--batch"),
            capture_output=True,
            text=True,
            env=environment(),
            timeout=120,
        )
        stats = fake.stats()
    assert batched.returncode == 0, batched.stderr
    assert run_outputs(batched_run) == run_outputs(online_run)
    assert "finetuning_data/alpaca_data.json" in run_outputs(online_run)
    assert stats["batches"] == 2 and stats["paid_twice"] == []  # classify and instances
    summary = json.loads((batched_run / "summary.json").read_text())
    stages = summary["projection"]["stages"]
    assert [stages[s]["price_factor"] for s in ("bootstrap", "classify", "instances")] == [1.0, 0.5, 0.5]
    requests_ = summary["requests"]
    assert requests_["classify"]["prompt_tokens_cache_read"] > 0.5 * requests_["classify"]["prompt_tokens"]


def test_a_run_killed_while_polling_resumes_the_same_batch(tmp_path: Path) -> None:
    with MessageBatchesFake((MODEL,), lines_per_poll=1) as fake:
        argv = selfinstruct_argv(fake, tmp_path / "run", 6, "--batch")
        process = subprocess.Popen(argv, stderr=subprocess.DEVNULL, env=environment())
        deadline = time.monotonic() + 60
        while fake.stats()["batch_polls"] < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)  # mid-poll of the classify batch
        process.wait(timeout=30)
        assert fake.stats()["batches"] == 1
        again = subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=120)
        stats = fake.stats()
    assert again.returncode == 0, again.stderr
    assert stats["batches"] == 2  # classify's, polled again; then instances'
    assert stats["paid_twice"] == []
    events = [json.loads(line) for line in (tmp_path / "run" / "batches.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("created") == 2
