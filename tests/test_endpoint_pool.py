"""Several real servers behind one backend: spread, failover, the breaker, and keys without URLs.

The servers are stub processes (servers/stub_process.py) that the tests kill, freeze and
start again on the same port, as a crashed or wedged server would behave.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_argv, run_outputs
from servers.stub_process import StubProcess

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.llm.control.breaker import BreakerState, CircuitBreaker
from selfinstruct.llm.control.retry import RetryPolicy
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.openai.endpoint_pool import EndpointPool
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import CompletionRequest

PARAMS = GenerationParams(max_tokens=16, temperature=0.0, top_p=1.0)


@pytest.fixture
def servers() -> Iterator[list[StubProcess]]:
    stubs = [StubProcess(scripted=False, delay="0.02:0.04") for _ in range(3)]
    try:
        yield [s.start() for s in stubs]
    finally:
        for s in stubs:
            s.__exit__()


def pool_engine(
    urls: list[str], folder: Path, *, concurrency: int = 4, timeout_s: float = 5.0, hedge: bool = False
) -> RequestEngine:
    from selfinstruct.llm.control.hedging import HedgePolicy

    config = BackendConfig(kind="openai", model="m", endpoints=urls, concurrency=concurrency)
    pool = EndpointPool(config)
    for route in pool.router.routes:  # a quick breaker, so tests see it reopen in time
        route.breaker = CircuitBreaker(failures_to_open=3, cooldown_s=0.3, max_cooldown_s=1.0)
    return RequestEngine(
        pool,
        ResponseStore(folder / "store.sqlite"),
        failed_log=folder / "failed.jsonl",
        concurrency=concurrency,
        max_retries=6,
        timeout_s=timeout_s,
        progress=False,
        retry_policy=RetryPolicy(max_retries=6, base_s=0.05, cap_s=0.2),
        hedge=HedgePolicy(budget=0.2) if hedge else HedgePolicy(0.0),
    )


def requests(n: int, tag: str = "p") -> list[CompletionRequest]:
    return [CompletionRequest(f"{tag} {i}", PARAMS) for i in range(n)]


def test_work_is_spread_over_every_endpoint_within_each_ones_limit(
    servers: list[StubProcess], tmp_path: Path
) -> None:
    engine = pool_engine([s.base_url for s in servers], tmp_path, concurrency=4)
    results = engine.run(requests(90), "s")
    assert [r.text for r in results if r] == [f"answer to: p {i}" for i in range(90)]
    counts = [s.stats()["completions"] for s in servers]
    assert sum(counts) == 90 and min(counts) >= 20, counts
    assert engine.concurrency == 12  # the stream keeps every endpoint's slots busy
    report = engine.router.report()
    assert [r["answered"] for r in report] == counts


def test_a_killed_endpoint_is_taken_out_and_every_request_still_completes(
    servers: list[StubProcess], tmp_path: Path
) -> None:
    engine = pool_engine([s.base_url for s in servers], tmp_path)
    killer = threading.Timer(0.3, servers[1].kill)
    killer.start()
    results = engine.run(requests(150), "s")
    killer.join()
    assert [r.text for r in results if r] == [f"answer to: p {i}" for i in range(150)]
    assert not (tmp_path / "failed.jsonl").exists()
    dead = engine.router.routes[1]
    assert dead.breaker.times_opened >= 1 and dead.errors >= 3
    assert dead.answered < 50  # it stopped taking its third early on
    stats = engine.stats()["s"]
    assert stats["succeeded"] == 150 and stats["failed"] == 0


def test_an_endpoint_that_comes_back_is_probed_and_used_again(
    servers: list[StubProcess], tmp_path: Path
) -> None:
    engine = pool_engine([s.base_url for s in servers], tmp_path)
    servers[2].kill()
    engine.run(requests(40, "before"), "s")
    route = engine.router.routes[2]
    assert route.breaker.times_opened >= 1 and route.answered == 0
    servers[2].start()  # the same port
    time.sleep(1.1)  # past the longest cooldown: the next request there is the probe
    engine.run(requests(60, "after"), "s")
    assert route.breaker.state is BreakerState.CLOSED
    assert route.answered >= 10
    assert servers[2].stats()["completions"] == route.answered


def test_a_frozen_endpoint_does_not_hold_up_the_run(servers: list[StubProcess], tmp_path: Path) -> None:
    # SIGSTOP: connections are accepted and never answered, as by a wedged server.
    engine = pool_engine([s.base_url for s in servers], tmp_path, timeout_s=1.0, hedge=True)
    engine.run(requests(30, "warm"), "s")  # latencies to hedge by
    servers[0].pause()
    started = time.monotonic()
    results = engine.run(requests(60), "s")
    took = time.monotonic() - started
    servers[0].resume()
    assert all(results)
    assert engine.router.routes[0].breaker.times_opened >= 1
    assert took < 6, took


def test_stored_answers_are_found_whichever_endpoints_serve_the_model(
    servers: list[StubProcess], tmp_path: Path
) -> None:
    first = pool_engine([servers[0].base_url], tmp_path)
    first.run(requests(20), "s")
    first.store.close()
    again = pool_engine([servers[1].base_url, servers[2].base_url], tmp_path)
    results = again.run(requests(20), "s")
    assert all(results) and again.stats()["s"]["cached"] == 20
    assert servers[1].stats()["completions"] == servers[2].stats()["completions"] == 0


def test_answers_stored_under_an_older_url_key_are_not_paid_for_again(
    servers: list[StubProcess], tmp_path: Path
) -> None:
    config = BackendConfig(kind="openai", model="m", base_url=servers[0].base_url)
    store = ResponseStore(tmp_path / "store.sqlite")
    old_identity = OpenAIBackend(config).legacy_identities()[0]
    assert old_identity["base_url"] == servers[0].base_url
    from selfinstruct.llm.types import Completion

    for request in requests(5):
        store.put(request.key(old_identity), "s", {}, Completion("stored before", "stop"))
    store.close()  # an older version's run ended; this one opens its store
    store = ResponseStore(tmp_path / "store.sqlite")
    engine = RequestEngine(OpenAIBackend(config), store, tmp_path / "failed.jsonl", 2, 0, 5.0, progress=False)
    assert [r.text for r in engine.run(requests(5), "s") if r] == ["stored before"] * 5
    assert servers[0].stats()["completions"] == 0
    # Stored again under the current key: found directly from now on.
    assert all(store.get(engine.key(r)) for r in requests(5))


def test_every_endpoint_down_fails_the_requests_like_one_dead_server(tmp_path: Path) -> None:
    dead = [StubProcess(scripted=False).start() for _ in range(2)]
    for s in dead:
        s.kill()
    engine = pool_engine([s.base_url for s in dead], tmp_path)
    started = time.monotonic()
    results = engine.run(requests(6), "s")
    assert results == [None] * 6
    lines = (tmp_path / "failed.jsonl").read_text().splitlines()
    assert len(lines) == 6 and "connection refused" in json.loads(lines[0])["reason"]
    assert time.monotonic() - started < 15


# -- whole runs through the CLI ------------------------------------------------------------


def run_with(urls: list[str], out: Path, n: int = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_argv(urls, out, n), capture_output=True, text=True, timeout=180)


def kill_after(stub: StubProcess, answered: int) -> None:
    """Kill `stub` once it has answered that many requests (mid-run on any machine)."""
    deadline = time.monotonic() + 60
    while stub.stats()["completions"] < answered and time.monotonic() < deadline:
        time.sleep(0.01)
    stub.kill()


def test_a_run_on_three_servers_with_one_killed_matches_a_one_server_run(tmp_path: Path) -> None:
    stubs = [StubProcess(scripted=True, delay="0.02:0.05").start() for _ in range(3)]
    try:
        one = run_with([stubs[0].base_url], tmp_path / "one" / "run")
        assert one.returncode == 0, one.stderr
        killer = threading.Thread(target=kill_after, args=(stubs[2], 15))
        killer.start()
        three = run_with([s.base_url for s in stubs], tmp_path / "three" / "run")
        killer.join()
    finally:
        for s in stubs:
            s.__exit__()
    assert three.returncode == 0, three.stderr
    assert run_outputs(tmp_path / "three" / "run") == run_outputs(tmp_path / "one" / "run")
    summary = json.loads((tmp_path / "three" / "run" / "summary.json").read_text())
    report = {e["url"]: e for e in summary["endpoints"]}
    assert list(report) == [s.base_url for s in stubs]
    assert all(e["answered"] > 0 for e in report.values())
    assert report[stubs[2].base_url]["errors"] > 0  # the killed one failed some and was retried elsewhere
    assert "endpoint " + stubs[0].base_url in three.stderr  # the closing summary names each
    config = (tmp_path / "three" / "run" / "config.yaml").read_text()
    assert all(s.base_url in config for s in stubs)  # a resume reads them back


def test_no_endpoint_reachable_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    dead = [StubProcess(scripted=False).start() for _ in range(2)]
    for s in dead:
        s.kill()
    result = run_with([s.base_url for s in dead], tmp_path / "run")
    assert result.returncode != 0
    assert "no endpoint answers" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
