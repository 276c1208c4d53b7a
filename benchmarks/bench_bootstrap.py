"""Benchmark: the pipelined bootstrap against a fixed-latency server, vs the reference's rounds.

`selfinstruct bootstrap` (the real `Run`, engine, HTTP client and SQLite store) generates N
instructions (default 2,000) at concurrency 64 against `benchmarks/servers/fixed_delay_server.py
--answers tasks`: every answer takes 200 ms, 64 fit at once, so the ideal is 64 / 0.2 s = 320
requests/s. Every other setting is the default (window 64, similarity stats on).

Measured, all in one run:
1. the pipelined bootstrap's request rate (requests sent / the stage's sending time, which
   the summary records) vs that ideal; target >= 80 %; the wall time with start-up is shown too;
2. the reference's rounds (`bootstrap.window: null`: 5 prompts a round, each round waits for
   its slowest answer) on the same server, for fewer instructions (default 300): the ratio of
   request rates, pipelined / rounds;
3. exactness: the same N at concurrency 16 must write a byte-identical instructions file.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_bootstrap.py [--n 2000] [--rounds-n 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_engine import fixed_delay_server

from selfinstruct.config import build_config
from selfinstruct.pipeline import Run
from selfinstruct.rundir import INSTRUCTIONS_FILE

DELAY_S, SLOTS = 0.2, 64


def bootstrap(base_url: str, out: Path, n: int, concurrency: int, **bootstrap_options: Any) -> dict[str, Any]:
    config = build_config(
        overrides={
            "bootstrap": {"num_instructions": n, **bootstrap_options},
            "backend": {
                "kind": "openai",
                "base_url": base_url,
                "model": "bench-model",
                "concurrency": concurrency,
            },
        }
    )
    run = Run(out, config, progress=False, log=lambda _: None)
    started = time.perf_counter()
    with run.opened():
        records = run.bootstrap()
    wall = time.perf_counter() - started
    requests = run.summary()["requests"]["bootstrap"]
    # The rate while the stage sends (its stream's time); `wall` adds the start-up (backend
    # check, store, imports) and writing the file.
    rate = requests["sent"] / requests["elapsed_s"]
    return {
        "records": len(records),
        "sent": requests["sent"],
        "seconds": requests["elapsed_s"],
        "wall": wall,
        "rate": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="instructions, pipelined (default 2000)")
    parser.add_argument(
        "--rounds-n", type=int, default=300, help="instructions, reference rounds (default 300)"
    )
    args = parser.parse_args()
    ideal = SLOTS / DELAY_S
    with tempfile.TemporaryDirectory() as tmp, fixed_delay_server(DELAY_S, SLOTS, answers="tasks") as server:
        work = Path(tmp)
        piped = bootstrap(server.base_url, work / "c64", args.n, concurrency=64)
        rounds = bootstrap(server.base_url, work / "rounds", args.rounds_n, concurrency=64, window=None)
        c16 = bootstrap(server.base_url, work / "c16", args.n, concurrency=16)
        identical = (work / "c64" / INSTRUCTIONS_FILE).read_bytes() == (
            work / "c16" / INSTRUCTIONS_FILE
        ).read_bytes()
        most_at_once = server.stats()["max_in_flight"]
    result = {
        "ideal_requests_per_s": ideal,
        "pipelined_c64": piped,
        "share_of_ideal": round(piped["rate"] / ideal, 3),
        "reference_rounds_c64": rounds,
        "pipelined_vs_rounds": round(piped["rate"] / rounds["rate"], 1),
        "pipelined_c16": c16,
        "identical_at_c16_and_c64": identical,
        "server_most_in_flight": most_at_once,
    }
    print(json.dumps(result, indent=2))
    print(
        f"bootstrap {args.n}: {piped['rate']:.0f} req/s = {100 * piped['rate'] / ideal:.0f}% of the ideal {ideal:.0f}; "
        f"{result['pipelined_vs_rounds']}x the reference's rounds ({rounds['rate']:.1f} req/s); "
        f"identical at concurrency 16 and 64: {identical}",
        file=sys.stderr,
    )
    if not identical:
        raise SystemExit("the instructions differ between concurrency 16 and 64")


if __name__ == "__main__":
    main()
