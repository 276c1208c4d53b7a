"""The paper's evidence, reproducible: generate -> fine-tune -> evaluate on SuperNI, with controls.

One command runs the whole loop on the embedded model (Gemma 3 270M base), every model
served through llama.cpp (the tuned ones as GGUF LoRA adapters on the same GGUF base):

1. `selfinstruct run -n N`: N instructions bootstrapped from the 175 seed tasks.
2. Training sets, built from the run's kept triples exactly as `prepare` encodes them:
   - `gen-K` for each K in --sizes: the triples of the first K generated instructions (in
     the order the pool grew), like the paper's data-size curve (its Figure 6);
   - `seeds`: the 175 seed tasks alone, trained for as many steps as the largest `gen-K`,
     so that a gain over it is not just the answer format that any fine-tuning teaches;
   - `seeds+gen-K`: the seeds and every generated instruction together (what `prepare`
     writes with `finetune_data.include_seed_tasks: true`), 2 epochs.
3. `selfinstruct finetune` on each (LoRA, 2 epochs, loss on the completion only).
4. `selfinstruct evaluate superni` for the base and every tuned model: zero-shot, greedy.
5. One table, OUT/results.md (and results.json), with SuperNI both as the mean of the task
   means and pooled over instances (Tk-Instruct pools), each labelled.

Every step is a `selfinstruct` command that resumes from its own store or checkpoint, so an
interrupted experiment continues where it stopped when run again with the same arguments.

Run: PYTHONPATH=src .venv/bin/python benchmarks/loop_superni.py --out runs/loop
     [--n 400] [--sizes 50,100,200,400] [--max-instances 100] [--tasks ../shared/data/superni_test/tasks]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

from selfinstruct.config import build_config  # noqa: E402
from selfinstruct.exports import write_exports  # noqa: E402
from selfinstruct.files import write_atomic  # noqa: E402
from selfinstruct.prompts import FinetuneTemplates, load_prompt  # noqa: E402
from selfinstruct.records import Triple, read_records, write_json, write_jsonl  # noqa: E402
from selfinstruct.rundir import (  # noqa: E402
    CONFIG_FILE,
    FINETUNE_DIR,
    GENERATED_INSTANCES_FILE,
    SUMMARY_FILE,
    TRIPLE_FIELDS,
    finetune_data_file,
)
from selfinstruct.seeds import load_seed_tasks  # noqa: E402
from selfinstruct.stages.prepare import finetune_data_from_triples  # noqa: E402

TASKS = REPO.parent / "shared" / "data" / "superni_test" / "tasks"


def selfinstruct(*args: str) -> None:
    """One CLI command as a user runs it; its output goes to this script's stderr."""
    began = time.perf_counter()
    command = [sys.executable, "-m", "selfinstruct", *args, "--no-progress"]
    print(f"$ selfinstruct {' '.join(args)}", file=sys.stderr, flush=True)
    result = subprocess.run(command, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0:
        sys.exit(f"loop: `selfinstruct {args[0]}` failed with exit code {result.returncode}")
    print(f"  ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)


# -- training sets ----------------------------------------------------------------------------


def training_sets(run: Path, sizes: list[int], out: Path) -> dict[str, dict[str, Any]]:
    """Write OUT/data/<name>/finetuning_data/ for each training set; returns what each holds."""
    config = build_config(config_file=run / CONFIG_FILE)
    templates = load_prompt(
        "finetune_templates",
        config.prompts.get("finetune_templates", "finetune_templates.yaml"),
        FinetuneTemplates,
    )
    triples = [
        Triple.from_json(r)
        for r in read_records(run / FINETUNE_DIR / GENERATED_INSTANCES_FILE, *TRIPLE_FIELDS)
    ]
    order = list(dict.fromkeys(t.instruction for t in triples))  # generation order
    # Seeds go into a set only where they are passed (the curve's sets get none).
    with_seeds = config.model_copy(
        update={"finetune_data": config.finetune_data.model_copy(update={"include_seed_tasks": True})}
    )
    sets: dict[str, dict[str, Any]] = {}
    for size in sorted(set(min(k, len(order)) for k in sizes)):
        chosen = set(order[:size])
        subset = [t for t in triples if t.instruction in chosen]
        sets[f"gen-{size}"] = _write_set(
            out / "data" / f"gen-{size}",
            finetune_data_from_triples(subset, [], with_seeds, templates),
            size,
            0,
        )
    seeds = load_seed_tasks(config.seed_tasks)
    sets["seeds"] = _write_set(
        out / "data" / "seeds", finetune_data_from_triples([], seeds, with_seeds, templates), 0, len(seeds)
    )
    # Does the generated data add anything to the seeds? Both together, trained 2 epochs.
    sets[f"seeds+gen-{len(order)}"] = _write_set(
        out / "data" / f"seeds+gen-{len(order)}",
        finetune_data_from_triples(triples, seeds, with_seeds, templates),
        len(order),
        len(seeds),
    )
    return sets


def _write_set(folder: Path, data: Any, generated: int, seeds: int) -> dict[str, Any]:
    data_dir = folder / FINETUNE_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("gpt3_finetuning_data_*.jsonl"):
        old.unlink()
    write_jsonl(data_dir / finetune_data_file(len(data.rows)), data.rows)
    write_exports(data_dir, data.training)
    return {"dir": folder, "generated_instructions": generated, "seed_tasks": seeds, "rows": len(data.rows)}


# -- results ----------------------------------------------------------------------------------


def scores(eval_dir: Path) -> dict[str, float]:
    overall = json.loads((eval_dir / "superni_metrics.json").read_text())["overall"]
    return {
        "rougeL": overall["rougeL"],
        "rougeL_pooled": overall["pooled"]["rougeL"],
        "exact_match": overall["exact_match"],
        "exact_match_pooled": overall["pooled"]["exact_match"],
        "tasks": overall["tasks"],
        "instances": overall["instances"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    lines = [
        f"SuperNI test subset: {first['tasks']} tasks, {first['instances']} instances, zero-shot, greedy, "
        "through llama.cpp. ROUGE-L and exact match in %; 'task mean' = the mean of the task means, "
        "'pooled' = the mean over all instances (as Tk-Instruct reports).",
        "",
        "| model | training data | rows | steps | ROUGE-L task mean | ROUGE-L pooled | EM task mean | EM pooled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['data']} | {row.get('rows', '-')} | {row.get('steps', '-')} | "
            f"{row['rougeL']:.2f} | {row['rougeL_pooled']:.2f} | {row['exact_match']:.2f} | {row['exact_match_pooled']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "loop")
    parser.add_argument("--n", type=int, default=400, help="instructions to generate")
    parser.add_argument("--sizes", default="50,100,200,400", help="generated instructions per training set")
    parser.add_argument("--tasks", type=Path, default=TASKS, help="SuperNI task folder")
    parser.add_argument("--max-instances", type=int, default=100, help="instances per task")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--no-combined", action="store_true", help="skip the seeds + all generated model (the tiny test does)"
    )
    parser.add_argument(
        "--run-config", type=Path, help="a config file for `selfinstruct run` (tests: a tiny one)"
    )
    args = parser.parse_args()
    sizes = [int(k) for k in args.sizes.split(",")]
    out: Path = args.out
    began = time.perf_counter()

    run = out / "run"
    selfinstruct(
        "run",
        "--out",
        str(run),
        "-n",
        str(args.n),
        *(["--config", str(args.run_config)] if args.run_config else []),
    )
    sets = training_sets(run, sizes, out)
    if args.no_combined:
        sets = {name: info for name, info in sets.items() if not name.startswith("seeds+")}
    train = [
        "--base",
        "embedded",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
    ]
    for name in [n for n, info in sets.items() if info["rows"] == 0]:
        print(f"loop: {name} has no training rows; skipped", file=sys.stderr)
        del sets[name]
    curve = sorted((n for n in sets if n.startswith("gen-")), key=lambda n: sets[n]["generated_instructions"])
    steps: dict[str, int] = {}
    for name in [*curve, *(n for n in sets if n.startswith("seeds+"))]:
        selfinstruct("finetune", str(sets[name]["dir"]), "--out", str(out / "ft" / name), *train)
        steps[name] = json.loads((out / "ft" / name / "metrics.json").read_text())["total_steps"]
    # The control: the seeds alone for as many steps as the largest generated set had.
    steps["seeds"] = steps[curve[-1]]
    selfinstruct(
        "finetune",
        str(sets["seeds"]["dir"]),
        "--out",
        str(out / "ft" / "seeds"),
        *train,
        "--steps",
        str(steps["seeds"]),
    )

    evaluate = ["evaluate", "superni", "--tasks", str(args.tasks), "--max-instances", str(args.max_instances)]
    selfinstruct(*evaluate, "--out", str(out / "eval" / "base"))
    rows = [{"model": "Gemma 3 270M base", "data": "-", **scores(out / "eval" / "base")}]
    for name in ["seeds", *curve, *(n for n in steps if n.startswith("seeds+"))]:
        selfinstruct(
            *evaluate, "--out", str(out / "eval" / name), "--adapter", str(out / "ft" / name / "adapter.gguf")
        )
        info = sets[name]
        parts = [f"{info['seed_tasks']} seed tasks"] if info["seed_tasks"] else []
        parts += (
            [f"{info['generated_instructions']} generated instructions"]
            if info["generated_instructions"]
            else []
        )
        rows.append(
            {
                "model": f"+ LoRA ({name})",
                "data": " + ".join(parts),
                "rows": info["rows"],
                "steps": steps[name],
                **scores(out / "eval" / name),
            }
        )

    summary = json.loads((run / SUMMARY_FILE).read_text())
    funnel = summary["funnel"]["bootstrap"]
    text = (
        f"# Self-Instruct on Gemma 3 270M: SuperNI\n\n"
        f"Generated: {funnel['accepted']} instructions from {funnel['generated']} candidates "
        f"(`selfinstruct run -n {args.n}` on the embedded model).\n\n"
        + table(rows)
        + f"\nWall time: {time.perf_counter() - began:.0f} s (steps already done are read back, not redone).\n"
    )
    write_atomic(out / "results.md", text)
    write_json(out / "results.json", {"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
