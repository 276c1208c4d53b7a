"""Benchmark: the batch-invariant embedded decoder against the old one, on the same prompts, in one run.

"new" is the embedded backend as shipped: llama.cpp's tiled K-quant kernel off, so a
sequence's logits do not depend on what shares its batch (runtimes/llama_context.py). "old"
is the same code with the tiled kernel back on (GGML_CPU_TILED_MM=1), which is what the
decoder did before issue 25 apart from one detail kept in both: no prompt is read in a call
of one token (at most one token more per prompt is read again). ggml reads the switch once
per process, so every measurement runs in a child process of its own, old and new in
turn, so that other load on a shared machine hits both alike.

Each child loads the model (concurrency 8, the default n_ctx) and measures:
- read: 16 prompts of ~400 tokens at once, 1 token each: prompt tokens/s (prefill);
- write: 16 other prompts at once, --tokens greedy tokens each: generated tokens/s;
- agree: the write prompts again one at a time: how many greedy texts equal the batched ones.
Printed per round and best against best, with each child's peak resident memory.

--run N also runs `selfinstruct run -n N` on the embedded model, old and new, each into a
fresh directory, with peak memory and the rows written. The two write different datasets
(old's depend on batching), so their runs do different work; the verdict (the issue's cost
target: new at most 15% slower) compares the tokens read and generated per second of the
stages (summary.json), and wall times are printed beside it.

Run: .venv/bin/python benchmarks/bench_batch_invariance.py [--rounds 3] [--tokens 48] [--run 200 [--run-rounds 2]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

TARGET = 1.15  # new may take at most 15% longer than old
VARIANTS = {"old": "1", "new": "0"}  # GGML_CPU_TILED_MM
# A preamble of our own, long enough that reading it is a real part of the work.
PREAMBLE = (
    "The notes below were kept by the volunteers who run a small lending library in a market town. "
    "Each entry says what was asked at the desk, who asked it, what the volunteer on duty found, and "
    "what was promised for the following week. The library opens on Tuesdays, Thursdays and Saturdays, "
    "lends books, maps, seeds and tools, and keeps a shelf of local history that may not leave the room. "
    "Volunteers write in plain words, name no borrower, and mark anything unfinished with a star so that "
    "the next person on duty can pick it up. "
) * 3
TOPICS = [
    "a map of the old canal",
    "seeds for a shady garden",
    "a ladder for the orchard",
    "the mill's ledgers",
    "a guide to local birds",
    "tools to mend a fence",
    "the parish records of 1890",
    "a book on bee keeping",
    "a recipe for plum jam",
    "the bus times to the coast",
    "a chess set for the club",
    "a history of the fair",
    "a sewing machine for a week",
    "the flood marks on the bridge",
    "a telescope for the school",
    "bread ovens",
]


def prompts(tag: str) -> list[str]:
    return [
        f"Entry {tag}-{i}. {PREAMBLE}\nToday someone asked about {topic}, and"
        for i, topic in enumerate(TOPICS)
    ]


def child(tokens: int) -> dict[str, Any]:
    """One measurement in this process (the parent set GGML_CPU_TILED_MM)."""
    import resource

    from selfinstruct.config import BackendConfig, GenerationParams, cache_dir
    from selfinstruct.llm.types import CompletionRequest
    from selfinstruct.models.files import default_model_path
    from selfinstruct.runtimes.embedded import EmbeddedBackend

    backend = EmbeddedBackend(BackendConfig(concurrency=8), default_model_path(cache_dir()))

    def batch(texts: list[str], max_tokens: int) -> tuple[float, list[str], int, int]:
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0)
        with ThreadPoolExecutor(max_workers=len(texts)) as pool:
            started = time.perf_counter()
            done = list(
                pool.map(lambda p: backend.complete(CompletionRequest(p, params), timeout=600), texts)
            )
            elapsed = time.perf_counter() - started
        return (
            elapsed,
            [c.text for c in done],
            sum(c.prompt_tokens for c in done),
            sum(c.completion_tokens for c in done),
        )

    batch(prompts("warm"), 4)  # page in the weights, build the graphs
    read_s, _, read_tokens, _ = batch(prompts("read"), 1)
    write_s, texts, _, written = batch(prompts("write"), tokens)
    params = GenerationParams(max_tokens=tokens, temperature=0.0, top_p=1.0)
    solo = [backend.complete(CompletionRequest(p, params), timeout=600).text for p in prompts("write")]
    backend.close()
    return {
        "read_tok_s": read_tokens / read_s,
        "write_tok_s": written / write_s,
        "agree": sum(a == b for a, b in zip(solo, texts, strict=True)),
        "of": len(texts),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def spawn(argv: list[str], variant: str) -> tuple[str, float, float]:
    """argv in a child with the variant's kernel setting: (its stdout, seconds, peak MiB)."""
    env = {**os.environ, "GGML_CPU_TILED_MM": VARIANTS[variant], "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{variant} child failed ({proc.returncode}): {err.read().strip()[-500:]}")
        return out.read(), elapsed, usage.ru_maxrss / 1024


def decoder_rounds(rounds: int, tokens: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for round_no in range(1, rounds + 1):
        line = [f"round {round_no}:"]
        for variant in ("old", "new") if round_no % 2 else ("new", "old"):
            printed, _, _ = spawn([sys.executable, __file__, "--child", "--tokens", str(tokens)], variant)
            measured = json.loads(printed.strip().splitlines()[-1])
            results[variant].append(measured)
            line.append(
                f"{variant} read {measured['read_tok_s']:6.1f} tok/s, write {measured['write_tok_s']:5.1f} tok/s, "
                f"agree {measured['agree']}/{measured['of']}, {measured['peak_mib']:.0f} MiB |"
            )
        print(" ".join(line), flush=True)
    return results


STAGES = ("bootstrap", "classify", "instances")


def run_rounds(n: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """`selfinstruct run -n N` per variant and round: seconds, peak MiB, rows, and per stage the
    tokens read (prompt tokens not reused), generated, and the stage's seconds (summary.json)."""
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="bench-invariance-") as tmp:
        for round_no in range(1, rounds + 1):
            for variant in ("old", "new") if round_no % 2 else ("new", "old"):
                out = Path(tmp) / f"{variant}-{round_no}" / "run"
                argv = [str(Path(sys.executable).parent / "selfinstruct"), "run", "--out", str(out)]
                _, seconds, peak = spawn([*argv, "--num-instructions", str(n), "--no-progress"], variant)
                rows = len(json.loads((out / "finetuning_data" / "alpaca_data.json").read_text()))
                requests = json.loads((out / "summary.json").read_text())["requests"]
                stages = {
                    stage: (
                        requests[stage]["prompt_tokens"] - requests[stage]["prompt_tokens_reused"],
                        requests[stage]["completion_tokens"],
                        requests[stage]["elapsed_s"],
                    )
                    for stage in STAGES
                }
                results[variant].append({"seconds": seconds, "peak": peak, "rows": rows, "stages": stages})
                rates = ", ".join(
                    f"{stage} {(read + made) / t:.0f}" for stage, (read, made, t) in stages.items()
                )
                print(
                    f"run -n {n}, {variant}: {seconds:.1f} s, {rows} rows, peak {peak:.0f} MiB; tokens read + "
                    f"generated per second: {rates}; {tokens_per_s(stages):.0f} in all",
                    flush=True,
                )
    return results


def tokens_per_s(stages: dict[str, tuple[int, int, float]]) -> float:
    return sum(read + made for read, made, _ in stages.values()) / sum(t for _, _, t in stages.values())


def report_decoder(decoder: dict[str, list[dict[str, Any]]]) -> int:
    print("\nbest of each (the least disturbed by other load), old | new | new/old:")
    for key, label in (("read_tok_s", "read (prefill), tok/s"), ("write_tok_s", "write (16 at once), tok/s")):
        old, new = max(m[key] for m in decoder["old"]), max(m[key] for m in decoder["new"])
        print(f"  {label:<28} {old:7.1f} | {new:7.1f} | {new / old:.2f}")
    for variant in ("old", "new"):
        agree = [m["agree"] for m in decoder[variant]]
        peak = statistics.median(m["peak_mib"] for m in decoder[variant])
        print(
            f"  {variant}: batched greedy texts equal to one-at-a-time: {min(agree)} to {max(agree)} of 16; "
            f"peak memory {peak:.0f} MiB"
        )
    if min(m["agree"] for m in decoder["new"]) < 16:
        print("FAIL: the new decoder gave a batched text other than its one-at-a-time text")
        return 1
    return 0


def report_runs(n: int, runs: dict[str, list[dict[str, Any]]]) -> int:
    # The two variants write different datasets (that is the point), so their runs do different
    # work: the verdict compares tokens read and generated per second of the stages.
    old_rate = max(tokens_per_s(r["stages"]) for r in runs["old"])
    new_rate = max(tokens_per_s(r["stages"]) for r in runs["new"])
    ratio = old_rate / new_rate
    wall = {v: min(r["seconds"] for r in runs[v]) for v in runs}
    peak = {v: max(r["peak"] for r in runs[v]) for v in runs}
    print(
        f"\nrun -n {n}, best of {len(runs['old'])}: wall old {wall['old']:.1f} s, new {wall['new']:.1f} s "
        f"(different datasets); tokens read + generated per second old {old_rate:.0f}, new {new_rate:.0f}: "
        f"new takes {ratio:.2f}x the time per token (target <= {TARGET}): {'PASS' if ratio <= TARGET else 'FAIL'}"
    )
    print(f"peak memory: old {peak['old']:.0f} MiB, new {peak['new']:.0f} MiB")
    return int(ratio > TARGET)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="decoder rounds (0: none)")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--run", type=int, default=0, metavar="N", help="also time `selfinstruct run -n N`")
    parser.add_argument("--run-rounds", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.tokens)))
        return 0

    load_before = os.getloadavg()[0]
    verdict = report_decoder(decoder_rounds(args.rounds, args.tokens)) if args.rounds else 0
    if args.run:
        verdict = report_runs(args.run, run_rounds(args.run, args.run_rounds)) or verdict
    print(
        f"load average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
