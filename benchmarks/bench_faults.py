"""Benchmark: a whole run against a server that misbehaves, vs the same run against one that doesn't.

Two scripted stub servers (`tests/servers/openai_stub.py`, separate processes) answer like a
small model, each answer 50-150 ms late. One of them serves 30 % of requests as faults:
429 with Retry-After, 500, 503, dropped connections, malformed JSON, and hung connections
that never answer (a transient fault ends after 3 in a row for the same request). The
answers depend only on the request, so both runs must write byte-identical outputs.

`selfinstruct run -n N` (default 300) goes through all four stages against each, with every
setting at its default (timeout 120 s, 6 retries, hedging within 5 %) but the concurrency
(default 16). Printed: both times, their ratio (target <= 3), what the faulty server served,
the retries and hedges, and whether the outputs are identical.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_faults.py [--n 300] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
STUB = REPO / "tests" / "servers" / "openai_stub.py"
NOT_OUTPUTS = {"config.yaml", "summary.json", "failed.jsonl", "responses.sqlite", ".lock"}
FAULTS = {
    "share": 0.3,
    "kinds": ["429", "500", "503", "drop", "garbled", "hang"],
    "seed": 7,
    "max_in_a_row": 3,
    "retry_after": "0.2",
    "hang_s": float("inf"),
}


@contextlib.contextmanager
def stub(workdir: Path, name: str, faults: dict[str, object] | None) -> Iterator[str]:
    port_file = workdir / f"{name}.port"
    command = [sys.executable, str(STUB), "--port", "0", "--port-file", str(port_file), "--scripted"]
    command += ["--delay", "0.05:0.15"]
    if faults is not None:
        command += ["--faults", json.dumps(faults)]
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the stub server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port_file.read_text()}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def run(base: str, out: Path, n: int, concurrency: int) -> float:
    command = [sys.executable, "-m", "selfinstruct", "run", "--out", str(out), "-n", str(n), "--no-progress"]
    command += ["--backend", "openai", "--base-url", f"{base}/v1", "--model", "m", "--api", "completions"]
    command += ["--concurrency", str(concurrency)]
    started = time.monotonic()
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )
    if result.returncode != 0:
        raise SystemExit(f"run failed ({result.returncode}): {result.stderr[-2000:]}")
    return time.monotonic() - started


def outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in NOT_OUTPUTS and not p.name.startswith("responses.sqlite")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with stub(work, "clean", None) as clean, stub(work, "faulty", FAULTS) as faulty:
            # Both runs are called "run": the export names its datasets after the directory.
            clean_s = run(clean, work / "clean" / "run", args.n, args.concurrency)
            faulty_s = run(faulty, work / "faulty" / "run", args.n, args.concurrency)
            served = httpx.get(f"{faulty}/stub/stats", timeout=5).json()
        requests = json.loads((work / "faulty" / "run" / "summary.json").read_text())["requests"]
        clean_requests = json.loads((work / "clean" / "run" / "summary.json").read_text())["requests"]
        stage_s = {
            stage: [round(clean_requests[stage]["elapsed_s"], 2), round(stats["elapsed_s"], 2)]
            for stage, stats in requests.items()
        }
        identical = outputs(work / "clean" / "run") == outputs(work / "faulty" / "run")
    totals = {
        k: sum(s.get(k, 0) for s in requests.values())
        for k in ("sent", "retries", "hedged", "hedge_wins", "failed")
    }
    result = {
        "instructions": args.n,
        "fault_free_s": round(clean_s, 2),
        "with_faults_s": round(faulty_s, 2),
        "ratio": round(faulty_s / clean_s, 2),
        "faults_served": served["served"],
        "requests_with_faults": totals,
        "stage_seconds_clean_vs_faults": stage_s,
        "outputs_identical": identical,
    }
    print(json.dumps(result, indent=2))
    print(
        f"faults: {faulty_s:.1f} s vs {clean_s:.1f} s fault-free = {faulty_s / clean_s:.2f}x (target <= 3); "
        f"identical outputs: {identical}",
        file=sys.stderr,
    )
    if not identical:
        raise SystemExit("the outputs differ")


if __name__ == "__main__":
    main()
