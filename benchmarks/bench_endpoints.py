"""Benchmark: one model behind three servers against one server, and a server killed mid-run.

Each server is `benchmarks/servers/fixed_delay_server.py` as its own process: every answer
takes 200 ms, with 16 slots (a request beyond them is refused with 429 + Retry-After).
So one server answers at most 80 requests/s, and three at most 240.

Measured, all in one run:
1. a batch of N requests (default 480, a classification stage's shape) through the real
   engine: one server at concurrency 16, then the three (`EndpointPool`, 16 each): the
   speed-up ratio (target >= 2.5);
2. a whole `selfinstruct run -n R` (default 600: bootstrap, classification, instances)
   against servers that answer like a bootstrap model (`--answers tasks`), with one
   `--base-url` and with three: the ratio of wall times;
3. the three-server batch again, with one server killed after a third of the answers:
   every request must complete, with the same answers as the one-server batch.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_endpoints.py [--n 480] [--run-n 600]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench_engine import Server, fixed_delay_server, requests

from selfinstruct.config import BackendConfig
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.openai.endpoint_pool import EndpointPool
from selfinstruct.llm.store import ResponseStore
from selfinstruct.rundir import BOOKKEEPING_FILES

SLOTS = 16
DELAY_S = 0.2


@contextlib.contextmanager
def servers(count: int, answers: str = "lorem") -> Iterator[list[Server]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(fixed_delay_server(DELAY_S, SLOTS, answers)) for _ in range(count)]


def engine_for(urls: list[str], workdir: Path) -> RequestEngine:
    config = BackendConfig(kind="openai", model="bench-model", endpoints=urls, concurrency=SLOTS)
    backend = (
        EndpointPool(config)
        if len(urls) > 1
        else OpenAIBackend(config.model_copy(update={"base_url": urls[0], "endpoints": ()}))
    )
    return RequestEngine(
        backend,
        ResponseStore(workdir / "store.sqlite"),
        failed_log=workdir / "failed.jsonl",
        concurrency=SLOTS,
        max_retries=10,
        timeout_s=30.0,
        progress=False,
    )


def batch(urls: list[str], n: int, kill: Server | None = None) -> tuple[float, list[str], RequestEngine]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = engine_for(urls, Path(tmp))
        if kill is not None:
            threading.Thread(target=kill_after, args=(kill, n // 3 // len(urls)), daemon=True).start()
        started = time.perf_counter()
        results = engine.run(requests("batch", n), "batch")
        took = time.perf_counter() - started
        engine.store.close()
    missing = sum(r is None for r in results)
    if missing:
        raise SystemExit(f"{missing} of {n} requests failed")
    return took, [r.text for r in results if r is not None], engine


def kill_after(server: Server, answered: int) -> None:
    while server.stats()["served"] < answered:
        time.sleep(0.01)
    server.process.kill()


def whole_run(urls: list[str], n: int, out: Path) -> float:
    command = [sys.executable, "-m", "selfinstruct", "run", "--out", str(out), "-n", str(n)]
    command += ["--backend", "openai", "--model", "bench-model", "--api", "completions"]
    command += ["--concurrency", str(SLOTS), "--no-progress"]
    for url in urls:
        command += ["--base-url", url]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"run failed: {result.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - started


def outputs(out: Path) -> dict[str, bytes]:
    """A run's output files (not its store, summary or config, which name the servers)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in BOOKKEEPING_FILES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=480, help="requests in the batch")
    parser.add_argument("--run-n", type=int, default=600, help="instructions in the whole run (0: skip)")
    args = parser.parse_args()

    print(
        f"servers: {DELAY_S * 1000:.0f} ms per answer, {SLOTS} slots each ({SLOTS / DELAY_S:.0f} req/s at most)"
    )
    with servers(3) as three:
        one_s, one_answers, _ = batch([three[0].base_url], args.n)
        three_s, three_answers, _ = batch([s.base_url for s in three], args.n)
    assert three_answers == one_answers
    print(f"\n1. batch of {args.n} requests")
    print(f"   one server:    {one_s:6.2f} s  ({args.n / one_s:5.1f} req/s)")
    print(f"   three servers: {three_s:6.2f} s  ({args.n / three_s:5.1f} req/s)")
    print(f"   speed-up: {one_s / three_s:.2f}x (target >= 2.5x)")

    if args.run_n:
        with tempfile.TemporaryDirectory() as tmp, servers(3, "tasks") as three:
            run_one = whole_run([three[0].base_url], args.run_n, Path(tmp) / "one" / "run")
            run_three = whole_run([s.base_url for s in three], args.run_n, Path(tmp) / "three" / "run")
            same = outputs(Path(tmp) / "one" / "run") == outputs(Path(tmp) / "three" / "run")
        print(f"\n2. whole run, -n {args.run_n} (bootstrap, classification, instances)")
        print(f"   one --base-url:    {run_one:6.2f} s")
        print(f"   three --base-url:  {run_three:6.2f} s")
        print(f"   speed-up: {run_one / run_three:.2f}x; outputs identical: {same}")

    with servers(3) as three:
        killed_s, killed_answers, engine = batch([s.base_url for s in three], args.n, kill=three[1])
    report = engine.router.report()
    print(f"\n3. three servers, the second killed after ~{args.n // 9} of its answers")
    print(
        f"   {killed_s:6.2f} s; all {args.n} answered; identical to the one-server batch: {killed_answers == one_answers}"
    )
    for r in report:
        print(
            f"   {r['url']}: answered {r['answered']}, errors {r['errors']}, breaker opened {r['breaker_opened']}x"
        )
    stats = engine.stats()["batch"]
    print(f"   retries {stats['retries']}, failed {stats['failed']}")


if __name__ == "__main__":
    main()
