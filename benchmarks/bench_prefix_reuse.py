"""Benchmark: prompt-prefix reuse in the embedded backend, with and without, in one run.

Two workloads built from the packaged prompts and the first seed instructions: the classify
prompt (841+ tokens, all but the instruction shared; greedy, 3 tokens) and the instance
generation prompt (892+ tokens; greedy, `--tokens` tokens). For each, a fresh
`EmbeddedBackend` (concurrency 8, so the cache starts empty, as a stage does) gets all the
requests at once from threads, as the request engine sends them, with `prefix_cache` on
and then off; rounds repeat that, so that the load from other processes on a shared
machine hits both alike. Printed per workload: seconds per request (best round of each),
the ratio, and the share of prompt tokens served from the cache.

Then greedy agreement between the two, on the same prompts; the run fails if a text differs:
- one request at a time: reuse changes no logit, so the texts must be equal;
- all at once (the last round): requests share decode steps with others, and which others
  depends on timing, which reuse changes; the logits are batch-invariant
  (runtimes/llama_context.py), so these texts must be equal too. Printed: equal texts, and
  how many answers agree on their first 1/4/16 tokens.

Run: .venv/bin/python benchmarks/bench_prefix_reuse.py [--rounds 2] [--n 16] [--tokens 64] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from selfinstruct.config import BackendConfig, GenerationParams  # noqa: E402
from selfinstruct.llm.types import Completion, CompletionRequest  # noqa: E402
from selfinstruct.models.files import default_model_path  # noqa: E402
from selfinstruct.prompts import ClassifyPrompt, InstancesGenerationPrompt, load_prompt  # noqa: E402
from selfinstruct.runtimes.embedded import EmbeddedBackend  # noqa: E402
from selfinstruct.seeds import load_seed_tasks  # noqa: E402
from selfinstruct.stages.classify import render_classify_prompt  # noqa: E402
from selfinstruct.stages.instances import render_generation_prompt  # noqa: E402

N_CTX = 2048
CONCURRENCY = 8
FIRST_TOKENS = (1, 4, 16)


def workloads(n: int, n_instances: int, tokens: int) -> dict[str, tuple[list[str], GenerationParams]]:
    instructions = [task.instruction for task in load_seed_tasks()]
    classify = load_prompt("classify", "classify.yaml", ClassifyPrompt)
    instances = load_prompt("instances_generation", "instances_generation.yaml", InstancesGenerationPrompt)
    return {
        "classify": (
            [render_classify_prompt(classify, text) for text in instructions[:n]],
            GenerationParams(max_tokens=3, temperature=0.0, top_p=1.0),
        ),
        "instances": (
            [render_generation_prompt(instances, text) for text in instructions[:n_instances]],
            GenerationParams(max_tokens=tokens, temperature=0.0, top_p=1.0, stop=("\n\n\n",)),
        ),
    }


def backend(path: Path, threads: int, reuse: bool) -> EmbeddedBackend:
    config = BackendConfig(n_ctx=N_CTX, n_threads=threads, concurrency=CONCURRENCY, prefix_cache=reuse)
    built = EmbeddedBackend(config, path)
    built.complete(
        CompletionRequest("Warm up:", GenerationParams(max_tokens=2, temperature=0.0, top_p=1.0)), 60
    )
    return built


def all_at_once(
    llm: EmbeddedBackend, prompts: list[str], params: GenerationParams
) -> tuple[float, list[Completion]]:
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        started = time.perf_counter()
        done = list(pool.map(lambda p: llm.complete(CompletionRequest(p, params), timeout=600), prompts))
        return time.perf_counter() - started, done


def one_at_a_time(llm: EmbeddedBackend, prompts: list[str], params: GenerationParams) -> list[str]:
    return [llm.complete(CompletionRequest(p, params), timeout=600).text for p in prompts]


def first_tokens_agree(llm: EmbeddedBackend, a: str, b: str, n: int) -> bool:
    """Whether two answers agree on their first `n` tokens (the whole answer if shorter)."""
    tokenize = llm._decoder.tokenize  # the model's own tokenizer (BOS first)
    return tokenize(a)[1 : n + 1] == tokenize(b)[1 : n + 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=16, help="classify requests")
    parser.add_argument("--n-instances", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of an instance request")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="1 round, 8 classify and 4 instance requests")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.n, args.n_instances = 1, 8, 4
    path = default_model_path(Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or REPO / ".cache"))
    if not path.is_file():
        print(f"model not found at {path} (run the test suite once to assemble it)", file=sys.stderr)
        return 2

    load_before = os.getloadavg()[0]
    exact_failures = 0
    for name, (prompts, params) in workloads(args.n, args.n_instances, args.tokens).items():
        best: dict[bool, float] = {}
        last: dict[bool, list[Completion]] = {}
        for round_no in range(1, args.rounds + 1):
            for reuse in (True, False):
                llm = backend(path, args.threads, reuse)
                elapsed, done = all_at_once(llm, prompts, params)
                llm.close()
                best[reuse] = min(best.get(reuse, elapsed), elapsed)
                last[reuse] = done
                read = sum(c.prompt_tokens for c in done)
                reused = sum(int(c.extra.get("prompt_tokens_reused", 0)) for c in done)
                print(
                    f"{name} round {round_no}, reuse {'on ' if reuse else 'off'}: {len(done)} requests in "
                    f"{elapsed:.2f} s = {elapsed / len(done):.3f} s/request; prompt tokens {read}, "
                    f"reused {reused} ({reused / read:.1%})",
                    flush=True,
                )
        on, off = best[True] / len(prompts), best[False] / len(prompts)
        print(f"{name}: best s/request with reuse {on:.3f}, without {off:.3f}: {off / on:.1f}x faster")

        judge = backend(path, args.threads, reuse=True)
        plain = backend(path, args.threads, reuse=False)
        solo_on, solo_off = one_at_a_time(judge, prompts, params), one_at_a_time(plain, prompts, params)
        plain.close()
        same_solo = sum(a == b for a, b in zip(solo_on, solo_off, strict=True))
        exact_failures += len(prompts) - same_solo
        print(f"  greedy, one at a time: {same_solo} of {len(prompts)} texts equal with and without reuse")
        pairs = [(a.text, b.text) for a, b in zip(last[True], last[False], strict=True)]
        same = sum(a == b for a, b in pairs)
        exact_failures += len(pairs) - same
        firsts = ", ".join(
            f"first {n}: {sum(first_tokens_agree(judge, a, b, n) for a, b in pairs)}" for n in FIRST_TOKENS
        )
        print(
            f"  greedy, all at once (last round): {same} of {len(pairs)} texts equal; tokens agreeing, {firsts}"
        )
        solo_vs_batch = sum(a == b.text for a, b in zip(solo_off, last[False], strict=True))
        print(
            f"  (for scale: without reuse, all at once vs one at a time: {solo_vs_batch} of {len(pairs)} equal)"
        )
        judge.close()
    print(
        f"\nload average (1 min) before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    return 1 if exact_failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
