"""Benchmark: `selfinstruct run --backend anthropic` against the loopback fake of the Messages API.

1. Prompt caching. `run -n N` (default 200) against the fake (`tests/servers/anthropic_fake.py`),
   once per cache minimum: the fake caches a prefix only from `min_cache_tokens` (Claude's
   minimum depends on the model: 1,024 tokens for Sonnet 4.5, 4,096 for Opus 4.5 and Haiku
   4.5 as published; 0 shows what the breakpoints give where every prefix is long enough).
   Printed per stage: input tokens, and the share the prompt cache served (targets: >= 80 %
   of classify's, >= 60 % of the instances'); and the run's projected cost at Claude Sonnet
   4.5's prices ($3 / $15 per million input / output tokens; read 0.1x, write 1.25x), with
   and without caching, for N and scaled to 1,000 instructions. Token counts are the fake's
   stand-in tokenizer (about 3.5 characters a token, 3 per message), not Claude's.
   Then the same run with `--batch` (Message Batches, tests/servers/anthropic_batches_fake.py):
   the cached shares inside the batches, the projected cost with the batch discount and
   caching, online, and without caching, and whether its files are the online run's.
2. Faults. `run -n F` (default 300) against a fake whose answers take 50-150 ms, without
   faults and with 30 % faults (429 with retry-after, 529, 500, dropped and hung connections,
   refusals): both times, their ratio (target <= 3) and whether the files are identical.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_anthropic.py [--n 200] [--faults-n 300]
     [--part caching|faults|all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers.anthropic_batches_fake import MessageBatchesFake  # noqa: E402
from servers.anthropic_fake import AnthropicFake, MessageFaults, prefix_tokens  # noqa: E402

from selfinstruct.rundir import BOOKKEEPING_FILES  # noqa: E402

MODEL = "claude-fake"
# Claude Sonnet 4.5's published prices, per 1K tokens.
PRICES = {"price_per_1k_input": 0.003, "price_per_1k_output": 0.015}
MINIMUMS = (0, 1024)


def selfinstruct_run(url: str, out: Path, n: int, concurrency: int, *flags: str, **backend: Any) -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{out.name}.json"  # JSON is YAML
    config.write_text(json.dumps({"seed": 42, "backend": {**PRICES, "concurrency": concurrency, **backend}}))
    command = [sys.executable, "-m", "selfinstruct", "run", "--out", str(out), "-n", str(n), "--no-progress"]
    command += [
        "--config",
        str(config),
        "--backend",
        "anthropic",
        "--base-url",
        url,
        "--model",
        MODEL,
        *flags,
    ]
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"run failed:\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in BOOKKEEPING_FILES
    }


def shared_prefixes() -> str:
    """The stand-in tokens of each stage's shared prefix (system message and demonstrations)."""
    from selfinstruct.config import build_config
    from selfinstruct.llm.anthropic.wire import message_params
    from selfinstruct.stages.chat_prompts import classify_request, instances_request
    from selfinstruct.stages.context import PromptSet

    config = build_config(overrides={"backend": {"kind": "anthropic"}})
    prompts = PromptSet.load(config.prompts)
    requests = {
        "classify": classify_request(
            prompts.chat.classify, prompts.classify, "x", False, config.classify.generation
        ),
        "instances (input-first)": instances_request(
            prompts.chat, prompts.instances_generation, "x", False, config.instances.generation, 5
        ),
        "instances (output-first)": instances_request(
            prompts.chat, prompts.instances_classification, "x", False, config.instances.generation, 5
        ),
    }
    return ", ".join(
        f"{name} {prefix_tokens(message_params(r, MODEL))[-1]:,}" for name, r in requests.items()
    )


def caching(workdir: Path, n: int, concurrency: int) -> None:
    print(f"1. prompt caching, run -n {n} (stand-in tokenizer; prices of Claude Sonnet 4.5)")
    print(f"  shared prefixes, tokens: {shared_prefixes()}")
    for minimum in MINIMUMS:
        for mode in ("online", "batch"):
            out = workdir / mode / f"cache-{minimum}"
            flags = ("--batch",) if mode == "batch" else ()
            with MessageBatchesFake((MODEL,), min_cache_tokens=minimum) as fake:
                seconds = selfinstruct_run(fake.base_url, out, n, concurrency, *flags, batch_poll_s=0.05)
            print(f"  minimum {minimum:>5} tokens, {mode}: {cost_line(out, n)}  [{seconds:.1f} s]")
        same = outputs(workdir / "online" / f"cache-{minimum}") == outputs(
            workdir / "batch" / f"cache-{minimum}"
        )
        print(f"    --batch wrote the online run's files: {same}")


def cost_line(out: Path, n: int) -> str:
    summary = json.loads((out / "summary.json").read_text())
    shares = []
    for stage in ("bootstrap", "classify", "instances"):
        s = summary["requests"][stage]
        share = s["prompt_tokens_cache_read"] / max(1, s["prompt_tokens"])
        shares.append(f"{stage} {share:.0%} of {s['prompt_tokens']:,}")
    p = summary["projection"]
    cost, online, uncached = p["projected_cost"], p["projected_online_cost"], p["projected_uncached_cost"]
    scale = 1000 / n
    return (
        f"cached input: {', '.join(shares)}; projected ${cost:.3f} (online ${online:.3f}, without caching "
        f"${uncached:.3f}); for 1,000 instructions ${cost * scale:.2f}"
    )


def faults(workdir: Path, n: int, concurrency: int) -> None:
    print(f"2. faults, run -n {n}, answers 50-150 ms, concurrency {concurrency}")
    times = {}
    for name, plan in (
        ("clean", None),
        ("faulty", MessageFaults(share=0.3, seed=7, retry_after="0.2", hang_s=float("inf"))),
    ):
        with AnthropicFake((MODEL,), faults=plan, delay_s=(0.05, 0.15)) as fake:
            times[name] = selfinstruct_run(fake.base_url, workdir / name / "run", n, concurrency)
            served = dict(fake.served)
        print(f"  {name}: {times[name]:.1f} s" + (f", faults served {served}" if served else ""))
    same = outputs(workdir / "clean" / "run") == outputs(workdir / "faulty" / "run")
    summary = json.loads((workdir / "faulty" / "run" / "summary.json").read_text())
    retries = sum(s["retries"] for s in summary["requests"].values())
    hedges = sum(s["hedged"] for s in summary["requests"].values())
    print(
        f"  ratio {times['faulty'] / times['clean']:.2f} (target <= 3); {retries} retries, {hedges} hedges; identical files: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--faults-n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--part", choices=("caching", "faults", "all"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("caching", "all"):
            caching(Path(tmp), args.n, args.concurrency)
        if args.part in ("faults", "all"):
            faults(Path(tmp), args.faults_n, args.concurrency)


if __name__ == "__main__":
    main()
