"""Benchmark: batched decoding in the embedded backend against the old one-at-a-time path, in one run.

The reference is what `EmbeddedBackend` did before batching: one `llama_cpp.Llama`, calls
serialised by a lock, `create_completion` for each request in turn. Ours is `EmbeddedBackend`
(llama_decoder.py) with `concurrency` = the number of requests, all submitted at once from
threads, as the request engine does. Every request is greedy, `--tokens` long, with no stop
string, and throughput counts the tokens actually generated (the base model may end early
with EOS). Target: 8 concurrent requests give >= 1.6x the reference's tokens/s.

Rounds alternate reference and ours, so that the load from other processes on a shared
machine hits both alike. Printed: each round's ratio, and best vs best (the verdict: the
best round of each is the one least slowed by other load). Also printed: ours at 1/4/8/16
concurrent requests, and how many greedy texts equal our own one-at-a-time answer (all must:
our logits are batch-invariant, runtimes/llama_context.py) and the reference's (need not be
all: the reference loads the model with the CPU repack buffers, which take other kernels).

Run: .venv/bin/python benchmarks/bench_embedded_batching.py [--rounds 5] [--tokens 64] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from selfinstruct.config import BackendConfig, GenerationParams  # noqa: E402
from selfinstruct.llm.types import Completion, CompletionRequest  # noqa: E402
from selfinstruct.models.files import default_model_path  # noqa: E402
from selfinstruct.runtimes.embedded import EmbeddedBackend  # noqa: E402

N_CTX = 512
TARGET = 1.6
# Our own openings, varied so that the sequences do not share a cache or an answer.
TOPICS = [
    "how to keep a sourdough starter alive",
    "the rules of a card game played on trains",
    "why the river behind the mill floods every spring",
    "a week of packed lunches for a hiking trip",
    "choosing a first telescope on a small budget",
    "the history of a lighthouse on a rocky island",
    "teaching a parrot to say good morning",
    "repairing a puncture on a bicycle tyre",
    "planning a garden that attracts bees",
    "the customs of a village harvest festival",
    "saving money on heating in an old house",
    "how a chess club runs its yearly tournament",
    "writing a polite complaint about a noisy neighbour",
    "the life of a beekeeper through the seasons",
    "making paper lanterns for a street party",
    "what to pack for a week of rain in the mountains",
]


def prompts(n: int) -> list[str]:
    return [f"A short guide to {TOPICS[i % len(TOPICS)]}.\n\nFirst," for i in range(n)]


def model_path() -> Path:
    cache = Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or REPO / ".cache")
    return default_model_path(cache)


class LockedReference:
    """The old embedded path: one Llama, a lock, create_completion per request."""

    def __init__(self, path: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=N_CTX, n_threads=threads, seed=0, verbose=False)
        self.lock = threading.Lock()

    def complete(self, prompt: str, tokens: int) -> tuple[str, int]:
        with self.lock:
            out = self.llm.create_completion(
                prompt, max_tokens=tokens, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0
            )
        return out["choices"][0]["text"], out["usage"]["completion_tokens"]  # type: ignore[index]


def run_reference(ref: LockedReference, texts: list[str], tokens: int) -> tuple[float, list[str], int]:
    started = time.perf_counter()
    results = [ref.complete(p, tokens) for p in texts]
    elapsed = time.perf_counter() - started
    return elapsed, [r[0] for r in results], sum(r[1] for r in results)


def run_batched(backend: EmbeddedBackend, texts: list[str], tokens: int) -> tuple[float, list[str], int]:
    params = GenerationParams(max_tokens=tokens, temperature=0.0, top_p=1.0)
    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        started = time.perf_counter()
        done = list(pool.map(lambda p: backend.complete(CompletionRequest(p, params), timeout=600), texts))
        elapsed = time.perf_counter() - started
    return elapsed, [c.text for c in done], sum(c.completion_tokens for c in done)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="1 round, 16 tokens, no 1/4/16 sweep")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tokens = 1, 16
    path = model_path()
    if not path.is_file():
        print(f"model not found at {path} (run the test suite once to assemble it)", file=sys.stderr)
        return 2

    texts = prompts(8)
    reference = LockedReference(path, args.threads)
    backends = {
        n: EmbeddedBackend(BackendConfig(n_ctx=N_CTX, n_threads=args.threads, concurrency=n), path)
        for n in ((8,) if args.quick else (1, 4, 8, 16))
    }
    # Warm both (page in the weights, build the graphs) before timing anything.
    run_reference(reference, texts[:1], 4)
    run_batched(backends[8], texts, 4)

    load_before = os.getloadavg()[0]
    ratios: list[float] = []
    reference_rates: list[float] = []
    mismatches = 0
    sweep: dict[int, list[float]] = {n: [] for n in backends}
    for round_no in range(1, args.rounds + 1):
        ref_s, ref_texts, ref_tokens = run_reference(reference, texts, args.tokens)
        ours_s, our_texts, our_tokens = run_batched(backends[8], texts, args.tokens)
        ref_rate, our_rate = ref_tokens / ref_s, our_tokens / ours_s
        reference_rates.append(ref_rate)
        ratios.append(our_rate / ref_rate)
        mismatches = max(mismatches, sum(a != b for a, b in zip(ref_texts, our_texts, strict=True)))
        print(
            f"round {round_no}: reference (locked, one at a time) {ref_tokens} tok in {ref_s:.2f} s = "
            f"{ref_rate:.1f} tok/s | batched, 8 concurrent {our_tokens} tok in {ours_s:.2f} s = "
            f"{our_rate:.1f} tok/s | ratio {ratios[-1]:.2f}x",
            flush=True,
        )
        for n, backend in backends.items():
            if n != 8:
                elapsed, _, generated = run_batched(backend, prompts(n), args.tokens)
                sweep[n].append(generated / elapsed)
        sweep[8].append(our_rate)

    print(
        f"\nload average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    print("aggregate tok/s by concurrent requests (min / median / max over rounds):")
    print(f"  reference, 8 one at a time: {_spread(reference_rates)}")
    for n, rates in sweep.items():
        print(f"  batched, {n:>2} concurrent:     {_spread(rates)}")
    best = max(sweep[8]) / max(reference_rates)
    verdict = "PASS" if best >= TARGET else "FAIL"
    print(
        f"\n8 concurrent vs one at a time: per round {min(ratios):.2f}x .. {max(ratios):.2f}x "
        f"(median {statistics.median(ratios):.2f}x); best vs best {best:.2f}x; target >= {TARGET}x "
        f"(best vs best, the least disturbed by other load): {verdict}"
    )
    solo = [c.text for c in (_greedy(backends.get(1) or backends[8], p, args.tokens) for p in texts)]
    same_as_solo = sum(a == b for a, b in zip(solo, our_texts, strict=True))
    print(
        f"greedy texts, 8 concurrent (last round): {same_as_solo} of 8 equal to our own one-at-a-time answer"
    )
    print(
        f"  and {8 - mismatches} of 8 equal to the reference's in every round (different kernels: see the doc)"
    )
    for backend in backends.values():
        backend.close()
    reference.llm.close()
    return 0 if best >= TARGET and same_as_solo == len(texts) else 1


def _spread(rates: list[float]) -> str:
    return f"{min(rates):6.1f} / {statistics.median(rates):6.1f} / {max(rates):6.1f}"


def _greedy(backend: EmbeddedBackend, prompt: str, tokens: int) -> Completion:
    params = GenerationParams(max_tokens=tokens, temperature=0.0, top_p=1.0)
    return backend.complete(CompletionRequest(prompt, params), timeout=600)


if __name__ == "__main__":
    raise SystemExit(main())
