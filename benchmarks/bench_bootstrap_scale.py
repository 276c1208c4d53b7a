"""Benchmark: the pipelined bootstrap's share of a fast server's ideal rate as the pool grows, in one run.

`selfinstruct`'s real bootstrap (`Run`, engine, HTTP client, SQLite store) generates N
instructions at concurrency 64 against `benchmarks/servers/fixed_delay_server.py --answers
tasks` (every answer takes 200 ms, 64 at once: ideal 64 / 0.2 s = 320 requests/s, about 4.7
new instructions an answer), for each N of --sizes (default 2,000, 10,000 and 52,000),
with the similarity fields (`most_similar`, `avg_similarity_score`; the default) and
without them (`bootstrap.similarity_stats: false`). Everything else is the default.

Printed per N and setting: requests sent, the rate while the stage sends (requests / the
stream's time, from summary.json) as a share of the ideal (target >= 80% at 10,000 with the
defaults), and the wall time of the whole stage from start-up to the written file, which
holds the similarity pass after the loop. With and without, the instructions must be the
same (the similarity fields aside).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_bootstrap_scale.py [--sizes 2000,10000,52000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_bootstrap import bootstrap
from bench_engine import fixed_delay_server

from selfinstruct.rundir import INSTRUCTIONS_FILE

DELAY_S, SLOTS, TARGET = 0.2, 64, 0.80
SIMILARITY_FIELDS = ("most_similar", "avg_similarity_score")


def without_similarity(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in row.items() if k not in SIMILARITY_FIELDS} for row in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,52000", help="instruction counts, comma-separated")
    args = parser.parse_args()
    ideal = SLOTS / DELAY_S
    verdict = 0
    print(f"server: {SLOTS} slots, {DELAY_S * 1000:.0f} ms an answer: ideal {ideal:.0f} requests/s")
    with fixed_delay_server(DELAY_S, SLOTS, answers="tasks") as server:
        for n in (int(size) for size in args.sizes.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                work, measured = Path(tmp), {}
                for stats in (True, False):
                    result = bootstrap(
                        server.base_url, work / str(stats) / "run", n, SLOTS, similarity_stats=stats
                    )
                    measured[stats] = result
                    share = result["sent"] / result["seconds"] / ideal
                    print(
                        f"n {n:>6}, similarity fields {'on ' if stats else 'off'}: {result['sent']:>6} requests, "
                        f"{result['sent'] / result['seconds']:6.1f} requests/s = {share:4.0%} of ideal; stage "
                        f"{result['wall']:6.1f} s from start to written file",
                        flush=True,
                    )
                    if stats and n >= 10_000 and share < TARGET:
                        verdict = 1
                same = without_similarity(work / "True" / "run" / INSTRUCTIONS_FILE) == without_similarity(
                    work / "False" / "run" / INSTRUCTIONS_FILE
                )
                print(f"  the same instructions with and without the fields: {same}")
                verdict = verdict or int(not same)
    print(
        f"target: >= {TARGET:.0%} of ideal at 10,000 and above with the fields on: {'PASS' if not verdict else 'FAIL'}"
    )
    return verdict


if __name__ == "__main__":
    sys.exit(main())
