"""Benchmark: the Ray executor's overhead against the local engine, on the same loopback server.

One `fixed_delay_server.py` (200 ms per answer, 64 slots) answers N distinct requests (default
320) twice, each time into a fresh store: once through the local engine at concurrency 16,
once through `--executor ray` (ray.data.llm's HTTP processor, `ray.concurrency` workers,
each sending its batch's requests one after another, as that processor does). Ray runs on
this machine with `ray.init()` (2 CPUs here); its start-up is timed apart from the job.
The answers must be the same.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_ray_executor.py [--n 320] [--workers 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_engine import fixed_delay_server, requests

from selfinstruct.config import BackendConfig, RayConfig
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.executors.ray import RayExecutor
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.store import ResponseStore

CONCURRENCY = 16


def engine(config: BackendConfig, workdir: Path, ray: bool) -> RequestEngine:
    backend = OpenAIBackend(config)
    return RequestEngine(
        backend,
        ResponseStore(workdir / "store.sqlite"),
        failed_log=workdir / "failed.jsonl",
        concurrency=CONCURRENCY,
        max_retries=10,
        timeout_s=30.0,
        progress=False,
        executor=RayExecutor(config, backend) if ray else None,
    )


def timed_batch(config: BackendConfig, n: int, ray: bool) -> tuple[float, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        e = engine(config, Path(tmp), ray)
        started = time.perf_counter()
        results = e.run(requests("classify", n), "classify")
        took = time.perf_counter() - started
    if any(r is None for r in results):
        raise SystemExit("some requests failed")
    return took, [r.text for r in results if r is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=320)
    parser.add_argument("--workers", type=int, default=16, help="ray.concurrency (HTTP workers)")
    parser.add_argument("--batch-size", type=int, default=4, help="ray.batch_size")
    args = parser.parse_args()

    import ray

    with fixed_delay_server(0.2, 64) as server:
        config = BackendConfig(
            kind="openai",
            model="bench-model",
            base_url=server.base_url,
            concurrency=CONCURRENCY,
            executor="ray",
            ray=RayConfig(concurrency=args.workers, batch_size=args.batch_size, max_retries=3),
        )
        local_s, local_answers = timed_batch(config, args.n, ray=False)
        started = time.perf_counter()
        RayExecutor(config, OpenAIBackend(config))._start_ray()
        init_s = time.perf_counter() - started
        ray_s, ray_answers = timed_batch(config, args.n, ray=True)
        again_s, _ = timed_batch(config, args.n, ray=True)  # Ray warm: workers start again per job
    ray.shutdown()
    print(f"{args.n} requests, 200 ms each; local engine at concurrency {CONCURRENCY}")
    print(f"  local engine:         {local_s:6.2f} s ({args.n / local_s:6.1f} req/s)")
    print(f"  ray start (ray.init): {init_s:6.2f} s, once per process")
    print(
        f"  ray job:              {ray_s:6.2f} s ({args.n / ray_s:6.1f} req/s), {args.workers} workers, batches of {args.batch_size}"
    )
    print(f"  ray job, second:      {again_s:6.2f} s")
    print(
        f"  overhead: ray job / local = {ray_s / local_s:.2f}x; (start + job) / local = {(init_s + ray_s) / local_s:.2f}x"
    )
    print(f"  same answers: {ray_answers == local_answers}")


if __name__ == "__main__":
    main()
