"""`--batch`: the stateless stages through a Batch API, against a loopback fake with its faults.

The fake (servers/batch_api_fake.py) is real HTTP; crashes are raised at the exact step a
killed process would stop at, and a new engine and executor then resume from the run
directory, as the next invocation would. Nothing may be paid for twice: the fake counts
every line it answered, by custom_id.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_argv, run_outputs
from servers.batch_api_fake import BatchApiFake

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError
from selfinstruct.llm.batch_api import split_within
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.executors.batch import BatchExecutor
from selfinstruct.llm.executors.batch_journal import BatchJournal
from selfinstruct.llm.openai.batches import BatchClient, batch_line, read_results
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import CompletionRequest

PARAMS = GenerationParams(max_tokens=16, temperature=0.0, top_p=1.0)


@pytest.fixture
def fake() -> Iterator[BatchApiFake]:
    with BatchApiFake(lines_per_poll=3) as server:
        yield server


def engine_for(fake: BatchApiFake, folder: Path, max_retries: int = 3, **prices: float) -> RequestEngine:
    config = BackendConfig(
        kind="openai",
        model="m",
        base_url=fake.base_url,
        batch=True,
        batch_poll_s=0.01,
        max_retries=max_retries,
        **prices,
    )
    backend = OpenAIBackend(config)
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
    return [CompletionRequest(f"task {i}", PARAMS) for i in range(n)]


def texts(results: list) -> list[str | None]:  # type: ignore[type-arg]
    return [r.text if r is not None else None for r in results]


def test_every_answer_comes_back_by_custom_id_and_is_stored(fake: BatchApiFake, tmp_path: Path) -> None:
    engine = engine_for(fake, tmp_path)
    results = engine.run(requests(10), "classify")
    assert texts(results) == [f"answer to: task {i}" for i in range(10)]
    assert all(engine.store.get(engine.key(r)) for r in requests(10))
    stats = fake.stats()
    assert (stats["uploads"], stats["batches"], stats["paid_twice"]) == (1, 1, [])
    events = [json.loads(line)["event"] for line in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert events == ["prepared", "creating", "created", "collected"]
    again = engine_for(fake, tmp_path).run(requests(10), "classify")  # all from the store
    assert texts(again) == texts(results) and fake.stats()["batches"] == 1


def test_the_bootstrap_is_never_batched(fake: BatchApiFake, tmp_path: Path) -> None:
    # The bootstrap streams its requests (each prompt depends on the answers before it),
    # and a stream is always served in this process.
    with engine_for(fake, tmp_path).stream("bootstrap") as stream:
        [stream.result(f) for f in [stream.submit(r) for r in requests(3)]]
    assert fake.stats()["batches"] == 0 and fake.online_requests == 3


def test_a_batch_that_expires_half_done_keeps_its_answers_and_resubmits_the_rest(tmp_path: Path) -> None:
    with BatchApiFake(lines_per_poll=2, expire_after=4) as fake:
        engine = engine_for(fake, tmp_path)
        results = engine.run(requests(10), "classify")
        stats = fake.stats()
    assert texts(results) == [f"answer to: task {i}" for i in range(10)]
    assert stats["batches"] == 3  # 4 + 4 + 2
    assert stats["paid_twice"] == [] and len(stats["answered"]) == 10
    books = engine.stats()["classify"]
    # Sent again: the 6 lines the first batch did not run, then the 2 the second did not.
    assert (books["sent"], books["succeeded"], books["retries"]) == (10, 10, 6 + 2)


def test_error_file_lines_are_retried_and_then_reported_in_failed_jsonl(tmp_path: Path) -> None:
    engine_probe = engine_for(BatchApiFake().start(), tmp_path / "probe")
    always_failing = engine_probe.key(requests(4)[2])
    with BatchApiFake(error_ids={always_failing}) as fake:
        engine = engine_for(fake, tmp_path, max_retries=2)
        results = engine.run(requests(4), "classify")
        stats = fake.stats()
    assert texts(results)[2] is None and all(texts(results)[i] for i in (0, 1, 3))
    assert stats["batches"] == 3  # the first, then one per round for the failing line
    failure = json.loads((tmp_path / "failed.jsonl").read_text())
    assert failure["key"] == always_failing and "HTTP 500" in failure["reason"] and failure["attempts"] == 3
    assert engine.store.get(always_failing) is None
    books = engine.stats()["classify"]
    assert (books["sent"], books["failed"], books["retries"]) == (4, 1, 2)  # the failing line, twice more


def test_a_refused_line_fails_at_once(tmp_path: Path) -> None:
    key = engine_for(BatchApiFake().start(), tmp_path / "probe").key(requests(3)[0])
    with BatchApiFake(error_ids={key}, error_status=400) as fake:
        results = engine_for(fake, tmp_path).run(requests(3), "classify")
        assert fake.stats()["batches"] == 1
    assert texts(results)[0] is None
    assert "HTTP 400" in json.loads((tmp_path / "failed.jsonl").read_text())["reason"]


def test_a_batch_stuck_in_finalizing_is_waited_for(tmp_path: Path) -> None:
    with BatchApiFake(stuck_finalizing=5) as fake:
        results = engine_for(fake, tmp_path).run(requests(3), "classify")
        assert fake.stats()["polls"] >= 7
    assert all(texts(results))


class Crash(BaseException):
    """Where a killed process would stop (a BaseException, like KeyboardInterrupt)."""


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, after: int = 0) -> None:
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == after + 1:
            monkeypatch.setattr(owner, name, original)
            raise Crash
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def resume_and_check(fake: BatchApiFake, tmp_path: Path) -> None:
    results = engine_for(fake, tmp_path).run(requests(6), "classify")
    assert texts(results) == [f"answer to: task {i}" for i in range(6)]
    stats = fake.stats()
    assert stats["paid_twice"] == [] and stats["batches"] == 1 and stats["uploads"] == 1


def test_a_crash_between_upload_and_create_creates_from_the_same_file(
    fake: BatchApiFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_once(monkeypatch, BatchClient, "create")
    with pytest.raises(Crash):
        engine_for(fake, tmp_path).run(requests(6), "classify")
    assert fake.stats()["batches"] == 0
    resume_and_check(fake, tmp_path)


def test_a_crash_right_after_create_adopts_the_batch_it_made(
    fake: BatchApiFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_once(monkeypatch, BatchJournal, "created")  # the batch exists, its id was not written
    with pytest.raises(Crash):
        engine_for(fake, tmp_path).run(requests(6), "classify")
    assert fake.stats()["batches"] == 1
    resume_and_check(fake, tmp_path)


def test_a_crash_while_polling_polls_the_same_batch_again(
    fake: BatchApiFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_once(monkeypatch, BatchClient, "get", after=1)
    with pytest.raises(Crash):
        engine_for(fake, tmp_path).run(requests(6), "classify")
    resume_and_check(fake, tmp_path)


def test_batch_answers_are_priced_at_the_discount(fake: BatchApiFake, tmp_path: Path) -> None:
    engine = engine_for(fake, tmp_path, price_per_1k_input=1.0, price_per_1k_output=2.0)
    engine.run(requests(4), "classify")
    stats = engine.stats()["classify"]
    assert stats["cost"] == pytest.approx(stats["online_cost"] * 0.5) and stats["cost"] > 0
    projection = engine.project("classify", 4, 8)
    assert projection["projected_cost"] == pytest.approx(stats["cost"] * 2)
    assert projection["projected_online_cost"] == pytest.approx(stats["online_cost"] * 2)


def test_a_journal_written_before_the_anthropic_batches_is_read_the_same(tmp_path: Path) -> None:
    lines = [
        {"event": "uploaded", "stage": "classify", "file_id": "file-1", "keys": ["a", "b"]},
        {"event": "created", "file_id": "file-1", "batch_id": "batch_2"},
        {"event": "uploaded", "stage": "classify", "file_id": "file-3", "keys": ["c"]},
        {"event": "created", "file_id": "file-3", "batch_id": "batch_4"},
        {"event": "collected", "file_id": "file-3"},
    ]
    (tmp_path / "batches.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    journal = BatchJournal(tmp_path / "batches.jsonl")
    [open_entry] = journal.open_for("classify")
    assert (open_entry.ref, open_entry.keys, open_entry.batch_id) == ("file-1", ["a", "b"], "batch_2")
    assert journal.batch_ids() == {"batch_2", "batch_4"}


# -- the JSONL, pure ------------------------------------------------------------------------


def test_batches_are_cut_at_either_limit_in_order() -> None:
    lines = [batch_line(f"k{i}", "/completions", {"prompt": "x" * 10}) for i in range(7)]
    assert [len(f) for f in split_within(lines, max_requests=3, max_bytes=10**6)] == [3, 3, 1]
    by_bytes = split_within(lines, max_requests=100, max_bytes=len(lines[0]) * 2)
    assert [len(f) for f in by_bytes] == [2, 2, 2, 1] and [line for f in by_bytes for line in f] == lines
    with pytest.raises(BackendError, match="over the batch limit"):
        split_within(lines, max_requests=100, max_bytes=10)


def test_result_lines_are_classified() -> None:
    content = (
        b"\n".join(
            json.dumps(line).encode()
            for line in [
                {"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}, "error": None},
                {"custom_id": "b", "response": {"status_code": 503, "body": {"error": {"message": "busy"}}}},
                {"custom_id": "c", "response": {"status_code": 400, "body": {"error": {"message": "bad"}}}},
                {"custom_id": "d", "response": None, "error": {"code": "batch_expired", "message": "late"}},
            ]
        )
        + b"\n\n"
    )
    got = {r.custom_id: (r.body is not None, r.retryable, r.error) for r in read_results(content)}
    assert got == {
        "a": (True, False, None),
        "b": (False, True, "HTTP 503: busy"),
        "c": (False, False, "HTTP 400: bad"),
        "d": (False, True, "batch_expired: late"),
    }


# -- the command ----------------------------------------------------------------------------


def test_a_whole_run_with_batch_matches_an_online_run(tmp_path: Path) -> None:
    from servers.openai_stub import OpenAIStub

    config = tmp_path / "fast.yaml"
    config.write_text(
        "backend:\n  batch_poll_s: 0.02\n  price_per_1k_input: 1.0\n  price_per_1k_output: 2.0\n"
    )

    def run(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(run_argv(url, out, 8, *extra), capture_output=True, text=True, timeout=120)

    with OpenAIStub("m", scripted=True) as stub:  # answers like a small model, per prompt and seed
        online = run(stub.base_url, tmp_path / "online" / "run")
        assert online.returncode == 0, online.stderr
    with BatchApiFake(answer=lambda body: stub.answer(body["prompt"], body.get("seed"))) as fake:
        batched = run(fake.base_url, tmp_path / "batched" / "run", "--batch", "--config", str(config))
        stats = fake.stats()
    assert batched.returncode == 0, batched.stderr
    assert run_outputs(tmp_path / "batched" / "run") == run_outputs(tmp_path / "online" / "run")
    assert stats["batches"] == 2 and stats["paid_twice"] == []  # classify and instances
    assert (tmp_path / "batched" / "run" / "batches.jsonl").exists()
    # The projection prices each stage as it is sent: the bootstrap online, the rest at the discount.
    summary = json.loads((tmp_path / "batched" / "run" / "summary.json").read_text())
    projection, spent = summary["projection"], summary["requests"]
    assert {name: s["price_factor"] for name, s in projection["stages"].items()} == {
        "bootstrap": 1.0,
        "classify": 0.5,
        "instances": 0.5,
    }
    scale = 8 / summary["funnel"]["bootstrap"]["accepted"]
    assert projection["projected_cost"] == pytest.approx(scale * sum(s["cost"] for s in spent.values()))
    online = sum(s.get("online_cost", s["cost"]) for s in spent.values())
    assert projection["projected_online_cost"] == pytest.approx(scale * online)
    assert projection["projected_cost"] < projection["projected_online_cost"]
    cost, online = projection["projected_cost"], projection["projected_online_cost"]
    assert (
        f"projection: ~${cost:.4f} (${online:.4f} online) for 8 instructions, every stage\n" in batched.stderr
    )


def test_after_the_bootstrap_the_projection_prices_the_batched_stages_at_the_discount(tmp_path: Path) -> None:
    from servers.openai_stub import OpenAIStub

    config = tmp_path / "priced.yaml"
    config.write_text("backend:\n  price_per_1k_input: 1.0\n  price_per_1k_output: 2.0\n")
    stub = OpenAIStub("m", scripted=True)
    with BatchApiFake(answer=lambda body: stub.answer(body["prompt"], body.get("seed"))) as fake:
        argv = run_argv(fake.base_url, tmp_path / "run", 8, "--batch", "--config", str(config))
        argv[argv.index("run")] = "bootstrap"
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    projection = json.loads((tmp_path / "run" / "summary.json").read_text())["projection"]
    stages = projection["stages"]
    assert [stages[s]["basis"] for s in ("bootstrap", "classify", "instances")] == [
        "seen",
        "estimated",
        "estimated",
    ]
    assert [stages[s]["price_factor"] for s in ("bootstrap", "classify", "instances")] == [1.0, 0.5, 0.5]
    assert projection["projected_cost"] == pytest.approx(sum(s["cost"] for s in stages.values()))
    assert projection["projected_online_cost"] == pytest.approx(
        sum(s["online_cost"] for s in stages.values())
    )
    assert projection["projected_cost"] < projection["projected_online_cost"]


def test_a_run_killed_while_polling_resumes_the_same_batches(tmp_path: Path) -> None:
    import signal
    import time

    from servers.openai_stub import OpenAIStub

    config = tmp_path / "slow.yaml"
    config.write_text("backend:\n  batch_poll_s: 0.05\n")
    stub = OpenAIStub("m", scripted=True)
    with BatchApiFake(
        lines_per_poll=1, answer=lambda body: stub.answer(body["prompt"], body.get("seed"))
    ) as fake:
        argv = run_argv(fake.base_url, tmp_path / "run", 8, "--batch", "--config", str(config))
        process = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while fake.stats()["polls"] < 4 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # mid-poll of the classify batch
        process.wait(timeout=30)
        assert fake.stats()["batches"] == 1
        again = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        stats = fake.stats()
    assert again.returncode == 0, again.stderr
    assert stats["batches"] == 2 and stats["uploads"] == 2  # classify's, polled again; then instances'
    assert stats["paid_twice"] == []
