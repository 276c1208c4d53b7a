"""Benchmark: LoRA fine-tuning steps on the embedded Gemma 3 270M at batch 4 x 256 tokens.

Configurations, all on the same model in one process, taking turns step by step (so that
the load of other processes on a shared machine hits them alike):

    ours       the default: bf16 autocast, loss on the completion only, and the LM head run
               only on the positions whose next token is trained (finetune.completion_loss)
    hf-labels  the reference: bf16 autocast, the model's own loss (`model(labels=...)`), which
               computes logits for every position, as transformers' Trainer does
    fp32       ours without autocast
    no-mask    ours with --train-on-prompt: every position trained (what masking saves)
    real-*     ours / hf-labels / no-mask on the seed rows as they are (dynamic padding,
               <= 256 tokens, ~40% prompt): the realistic case, where masking matters most

Rows: the paper's seed tasks (../shared/data), encoded with the package's fine-tuning
templates; for the 4 x 256 configurations each completion is extended with the outputs of
the following seeds until the row reaches 256 tokens (the shape measured in
embedded-model.md: 8.8 s/step bf16, 13.4 s/step fp32, with the HF loss).

Printed per configuration: s/step (median over the rounds, after one warm-up round),
process CPU seconds per step, training tokens/s, tokens and trained tokens per step, peak
RSS during its steps (VmHWM, reset before each step); then speed ratios with their range
over the rounds. First, a check that the two losses agree on the untrained model. Wall times move with the neighbours' load
(printed); with --threads 1 the CPU time per step barely does, so compare those.

Run: .venv/bin/python benchmarks/bench_finetune.py [--rounds 3] [--threads 1] [--configs ours,hf-labels,...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from selfinstruct.prompts import FinetuneTemplates, load_prompt  # noqa: E402
from selfinstruct.seeds import load_seed_tasks  # noqa: E402
from selfinstruct.stages.prepare import encode_triple, seed_triples  # noqa: E402
from selfinstruct.train import sft_data  # noqa: E402

SEEDS = REPO.parent / "shared" / "data" / "seed_tasks.jsonl"
BATCH, LENGTH = 4, 256
# name -> (rows, loss): "long" rows are 4 x 256 tokens, "real" rows are the seed rows as they are.
CONFIGS = {
    "ours": ("long", "ours"),
    "hf-labels": ("long", "hf"),
    "fp32": ("long", "fp32"),
    "no-mask": ("long-no-mask", "ours"),
    "real-ours": ("real", "ours"),
    "real-hf": ("real", "hf"),
    "real-no-mask": ("real-no-mask", "ours"),
}
DEFAULT = "ours,hf-labels,fp32,real-ours,real-hf,real-no-mask"
RATIOS = (
    ("ours", "hf-labels", "4x256: ours vs the HF loss (reference)"),
    ("ours", "fp32", "4x256: bf16 autocast vs fp32"),
    ("ours", "no-mask", "4x256: completion-only loss vs every token"),
    ("real-ours", "real-hf", "seed rows: ours vs the HF loss (reference)"),
    ("real-ours", "real-no-mask", "seed rows: completion-only loss vs every token"),
)


def cache_dir() -> Path:
    return Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or REPO / ".cache")


def seed_rows() -> list[dict[str, str]]:
    templates = load_prompt("finetune_templates", "finetune_templates.yaml", FinetuneTemplates)
    return [encode_triple(t, templates, n, 0.5) for n, t in enumerate(seed_triples(load_seed_tasks(SEEDS)))]


def full_length_examples(
    tokenizer: Any, rows: list[dict[str, str]], n: int, train_on_prompt: bool
) -> list[Any]:
    """`n` rows of exactly LENGTH tokens: a seed's prompt, then its output and the next seeds' outputs."""
    examples = []
    for i in range(n):
        prompt_ids = tokenizer(rows[i]["prompt"])["input_ids"]
        completion_ids: list[int] = []
        j = i
        while len(prompt_ids) + len(completion_ids) < LENGTH:
            text = sft_data.completion_text(rows[j % len(rows)]["completion"]) + "\n"
            completion_ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            j += 1
        example, _ = sft_data.encode_example(
            prompt_ids, completion_ids, tokenizer.eos_token_id, LENGTH, train_on_prompt
        )
        examples.append(example)
    return examples


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after 1 warm-up round)")
    parser.add_argument("--configs", default=DEFAULT, help=f"any of {', '.join(CONFIGS)}")
    parser.add_argument("--threads", type=int, help="torch threads (1 makes CPU s/step robust to neighbours)")
    args = parser.parse_args()
    configs = args.configs.split(",")
    if set(configs) - set(CONFIGS):
        sys.exit(f"unknown configuration(s): {sorted(set(configs) - set(CONFIGS))}")

    import torch

    from selfinstruct.models.huggingface import embedded_hf_dir, load_model, load_tokenizer
    from selfinstruct.train.finetune import FinetuneOptions, _prepare_model, completion_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    base = embedded_hf_dir(cache_dir())
    tokenizer = load_tokenizer(base)
    rows = seed_rows()
    n = BATCH * (args.rounds + 1)
    data = {
        "long": full_length_examples(tokenizer, rows, n, train_on_prompt=False),
        "long-no-mask": full_length_examples(tokenizer, rows, n, train_on_prompt=True),
        "real": sft_data.tokenize_rows(rows, tokenizer, LENGTH)[0],
        "real-no-mask": sft_data.tokenize_rows(rows, tokenizer, LENGTH, train_on_prompt=True)[0],
    }
    torch.manual_seed(0)
    model = _prepare_model(load_model(base), FinetuneOptions())
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)

    def step(config: str, index: int) -> dict[str, float]:
        rows_kind, loss_kind = CONFIGS[config]
        examples = data[rows_kind]
        picked = sft_data.batch_indices(len(examples), BATCH, 0, index)
        batch = {k: torch.tensor(v) for k, v in sft_data.collate([examples[i] for i in picked], 0).items()}
        reset_peak_rss()
        began, cpu = time.perf_counter(), cpu_seconds()
        if loss_kind == "hf":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(**batch, use_cache=False).loss
            n_trained = int((batch["labels"][:, 1:] != sft_data.IGNORE).sum())
        else:
            loss, n_trained = completion_loss(model, batch, bf16_autocast=loss_kind != "fp32")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "seconds": time.perf_counter() - began,
            "cpu": cpu_seconds() - cpu,
            "tokens": int(batch["attention_mask"].sum()),
            "trained": n_trained,
            "peak": peak_rss_gb(),
        }

    # The two losses are one quantity computed two ways: check it on the untrained model.
    check = {k: torch.tensor(v) for k, v in sft_data.collate(data["real"][:BATCH], 0).items()}
    with torch.inference_mode():
        ours_loss = completion_loss(model, check, bf16_autocast=False)[0].item()
        hf_loss = model(**check, use_cache=False).loss.item()
    print(f"loss check (fp32, seed rows, untrained): ours {ours_loss:.5f}, HF {hf_loss:.5f}")
    print(
        f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores); torch threads {torch.get_num_threads()}"
    )
    # Configurations take turns, step by step, so that a neighbour's load hits them alike;
    # round 0 (kernels, allocators) is not counted.
    results: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    for index in range(args.rounds + 1):
        for config in configs:
            record = step(config, index)
            if index:
                results[config].append(record)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    wall = {c: statistics.median(r["seconds"] for r in rs) for c, rs in results.items()}
    cpu = {c: statistics.median(r["cpu"] for r in rs) for c, rs in results.items()}
    for config, records in results.items():
        print(
            f"{config:>12}: {wall[config]:6.2f} s/step  {cpu[config]:6.2f} CPU s/step  "
            f"{sum(r['tokens'] for r in records) / sum(r['seconds'] for r in records):6.1f} tokens/s  "
            f"{statistics.mean(r['tokens'] for r in records):5.0f} tokens "
            f"({statistics.mean(r['trained'] for r in records):4.0f} trained)/step  "
            f"peak RSS {max(r['peak'] for r in records):.2f} GB"
        )
    for fast, slow, label in RATIOS:
        if fast in results and slow in results:
            per_round = [
                s["seconds"] / f["seconds"] for f, s in zip(results[fast], results[slow], strict=True)
            ]
            print(
                f"{label}: {wall[slow] / wall[fast]:.2f}x wall (rounds {min(per_round):.2f}-{max(per_round):.2f}x), "
                f"{cpu[slow] / cpu[fast]:.2f}x CPU time"
            )


if __name__ == "__main__":
    main()
