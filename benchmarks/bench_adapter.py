"""Benchmark: does the tuned model answer the same through llama.cpp as through peft?

A LoRA from `selfinstruct finetune` runs three ways: llama.cpp with `adapter.gguf`
(`--backend embedded --adapter`), transformers with the peft adapter, and llama.cpp on the
merged GGUF (`selfinstruct export merged`). Their greedy answers are compared on SuperNI
prompts. llama.cpp runs the quantized GGUF and transformers its fp32 dequantization, so the
base model itself already differs a little between the two; that agreement is measured in
the same run and is the ceiling to compare with.

Prints, for each pair: the share of identical answers and the mean share of each answer
(in characters) that both give before they first differ; then the tuned pair's figures as a
ratio of the base pair's.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_adapter.py --finetune runs/loop/ft/gen-400
     [--prompts 36] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SELFINSTRUCT_CACHE_DIR", str(REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from selfinstruct.backends import make_backend  # noqa: E402
from selfinstruct.config import BackendConfig, GenerationParams, cache_dir  # noqa: E402
from selfinstruct.evaluate.superni import build_prompt, load_tasks  # noqa: E402
from selfinstruct.llm.types import CompletionRequest  # noqa: E402
from selfinstruct.train.merge import export_merged  # noqa: E402

TASKS = REPO.parent / "shared" / "data" / "superni_test" / "tasks"


def prompts(count: int) -> list[str]:
    tasks = load_tasks(TASKS)
    per_task = -(-count // len(tasks))
    chosen = [build_prompt(t, inst[1]) for t in tasks for inst in t.instances[:per_task]]
    return chosen[:count]


def answers(config: BackendConfig, texts: list[str], max_tokens: int) -> list[str]:
    began = time.perf_counter()
    backend = make_backend(config, cache_dir())
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=())
    try:
        # One at a time: batching can move llama.cpp's logits a little (README, "Resuming").
        out = [backend.complete(CompletionRequest(text, params), 600).text for text in texts]
    finally:
        backend.close()
    label = config.kind + (f" + {Path(config.adapter_path).name}" if config.adapter_path else "")
    label += f" ({Path(config.model_path).name})" if config.model_path else ""
    print(f"  {label}: {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return out


def agreement(a: list[str], b: list[str]) -> tuple[float, float]:
    """(share of identical answers, mean share of the longer answer before the first difference)."""
    same = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    shared = []
    for x, y in zip(a, b, strict=True):
        prefix = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        shared.append(prefix / max(len(x), len(y), 1))
    return same, sum(shared) / len(shared)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--finetune", type=Path, required=True, help="a `selfinstruct finetune` output (LoRA)"
    )
    parser.add_argument("--prompts", type=int, default=36)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    merged = export_merged(args.finetune, None, cache_dir(), log=lambda line: print(line, file=sys.stderr))
    runs = {
        "llama.cpp base": BackendConfig(kind="embedded", concurrency=1),
        "transformers base": BackendConfig(kind="transformers", concurrency=1),
        "llama.cpp + adapter.gguf": BackendConfig(
            kind="embedded", concurrency=1, adapter_path=str(args.finetune / "adapter.gguf")
        ),
        "transformers + peft": BackendConfig(
            kind="transformers", concurrency=1, adapter_path=str(args.finetune / "adapter")
        ),
        "llama.cpp merged GGUF": BackendConfig(kind="embedded", concurrency=1, model_path=str(merged.gguf)),
    }
    got = {name: answers(config, texts, args.max_tokens) for name, config in runs.items()}
    pairs = [
        ("llama.cpp base", "transformers base"),
        ("llama.cpp + adapter.gguf", "transformers + peft"),
        ("llama.cpp merged GGUF", "transformers + peft"),
        ("llama.cpp + adapter.gguf", "llama.cpp merged GGUF"),
        ("llama.cpp + adapter.gguf", "llama.cpp base"),
    ]
    print(f"{len(texts)} SuperNI prompts, greedy, {args.max_tokens} tokens, {args.finetune}")
    print("| pair | identical answers | shared beginning |\n|---|---|---|")
    figures = {}
    for a, b in pairs:
        figures[(a, b)] = agreement(got[a], got[b])
        same, shared = figures[(a, b)]
        print(f"| {a} vs {b} | {same:.0%} | {shared:.0%} |")
    base, tuned = figures[pairs[0]], figures[pairs[1]]
    print(
        f"tuned pair / base pair: identical {tuned[0] / max(base[0], 1e-9):.2f}x, "
        f"shared beginning {tuned[1] / max(base[1], 1e-9):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
