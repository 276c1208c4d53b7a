"""The paper's evidence, reproducible: generate -> score -> select -> fine-tune -> evaluate on SuperNI.

One command runs the whole loop on the embedded model (Gemma 3 270M base), every model
served through llama.cpp (the tuned ones as GGUF LoRA adapters on the same GGUF base):

1. `selfinstruct run -n N`: N instructions bootstrapped from the 175 seed tasks.
2. `selfinstruct score --method ifd` (the embedded model as scorer) and, unless --no-judge,
   `selfinstruct score --method judge` (SmolLM2-135M-Instruct behind llama.cpp's server, over
   completions, by default; or the backend of --judge-config).
3. Training sets, each a folder laid out like a run:
   - `seeds`: the control, the 175 seed tasks alone;
   - `seeds+ifd-topP` for each P in --ifd-tops, `seeds+judge-minX` (--judge-min; not trained
     when the judge scores no row that high), `seeds+judge-topP` (--judge-tops) and
     `seeds+ifd-topP-diverseT` (--diverse-top, --diverse): `selfinstruct select` with the seeds
     added, the rows chosen by score;
   - `seeds+all`: the seeds and every generated row (what `prepare` writes with
     `finetune_data.include_seed_tasks: true`), 2 epochs;
   - `gen-K` for each K in --sizes (none by default): the first K generated instructions alone,
     the paper's data-size curve (its Figure 6).
4. `selfinstruct finetune` on each (LoRA, loss on the completion only). The control and every
   selected set train for the same --steps, so that a gain is the data's, not more training;
   `seeds+all` and the curve train 2 epochs.
5. `selfinstruct evaluate superni` for the base and every tuned model: zero-shot, greedy.
6. The control and the best selected set are trained again with the other --train-seeds, so
   that a gain can be told from noise (mean ± standard deviation).
7. OUT/results.md (and results.json): the table, the seeds table, the per-category changes,
   and what generating and scoring cost.

Every step is a `selfinstruct` command that resumes from its own store or checkpoint, so an
interrupted experiment continues where it stopped when run again with the same arguments.

Run: PYTHONPATH=src .venv/bin/python benchmarks/loop_superni.py --out runs/loop
     [--n 400] [--steps 240] [--ifd-tops 10,25,50] [--train-seeds 42,43,44] [--sizes 50,100,200,400]
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
sys.path.insert(0, str(REPO / "benchmarks"))

from loop_results import results_text, scores, seed_summary  # noqa: E402
from loop_servers import judge_server  # noqa: E402

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
from selfinstruct.scores import read_scores  # noqa: E402
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


def fixed_sets(run: Path, sizes: list[int], out: Path, combined: bool) -> dict[str, dict[str, Any]]:
    """Write OUT/data/<name>/finetuning_data/ for the sets no score chooses: the control, the
    curve and the seeds with every generated row; returns what each holds."""
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
    seeds = load_seed_tasks(config.seed_tasks)
    sets: dict[str, dict[str, Any]] = {}
    sets["seeds"] = _write_set(
        out / "data" / "seeds", finetune_data_from_triples([], seeds, with_seeds, templates), 0, len(seeds)
    )
    for size in sorted(set(min(k, len(order)) for k in sizes)):
        chosen = set(order[:size])
        subset = [t for t in triples if t.instruction in chosen]
        sets[f"gen-{size}"] = _write_set(
            out / "data" / f"gen-{size}",
            finetune_data_from_triples(subset, [], with_seeds, templates),
            size,
            0,
        )
    if combined:
        sets["seeds+all"] = _write_set(
            out / "data" / "seeds+all",
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


def selected_set(run: Path, out: Path, name: str, select: list[str], n_seeds: int) -> dict[str, Any]:
    """`selfinstruct select` with the seeds added, into OUT/data/<name>; what it holds."""
    folder = out / "data" / name
    selfinstruct("select", str(run), *select, "--include-seed-tasks", "--out", str(folder))
    funnel = json.loads((folder / SUMMARY_FILE).read_text())["funnel"]["select"]
    data_file = next((folder / FINETUNE_DIR).glob("gpt3_finetuning_data_*.jsonl"))
    rows = int(data_file.stem.rsplit("_", 1)[1])
    triples = [
        Triple.from_json(r)
        for r in read_records(folder / FINETUNE_DIR / GENERATED_INSTANCES_FILE, *TRIPLE_FIELDS)
    ]
    return {
        "dir": folder,
        "generated_instructions": len({t.instruction for t in triples}),
        "generated_rows": funnel["rows"]["selected"],
        "seed_tasks": n_seeds,
        "rows": rows,
        "selection": " ".join(select),
    }


# -- the experiment ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "loop")
    parser.add_argument("--n", type=int, default=400, help="instructions to generate")
    parser.add_argument("--steps", type=int, default=240, help="steps of the control and every selected set")
    parser.add_argument("--ifd-tops", default="10,25,50", help="seeds + the top P%% by IFD, for each P")
    parser.add_argument("--judge-min", type=float, default=4.0, help="seeds + the rows the judge scores >= X")
    parser.add_argument("--judge-tops", default="25", help="seeds + the top P%% by the judge, for each P")
    parser.add_argument(
        "--diverse-top", type=float, default=50, help="seeds + the top P%% by IFD, kept diverse"
    )
    parser.add_argument(
        "--diverse", type=float, default=0.5, help="... with ROUGE-L below TAU to every kept row"
    )
    parser.add_argument("--train-seeds", default="42,43,44", help="the control and the best set, once each")
    parser.add_argument("--sizes", default="", help="the data-size curve: first K generated instructions")
    parser.add_argument("--tasks", type=Path, default=TASKS, help="SuperNI task folder")
    parser.add_argument("--max-instances", type=int, default=100, help="instances per task")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--no-combined", action="store_true", help="skip seeds + all generated")
    parser.add_argument("--no-judge", action="store_true", help="skip the judge and its row")
    parser.add_argument(
        "--judge-config", type=Path, help="the judge's backend (default: SmolLM2 on llama.cpp)"
    )
    parser.add_argument(
        "--run-config", type=Path, help="a config file for `selfinstruct run` (tests: a tiny one)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    out: Path = args.out
    began = time.perf_counter()
    train_seeds = [int(s) for s in args.train_seeds.split(",")]
    run = out / "run"
    config = ["--config", str(args.run_config)] if args.run_config else []
    selfinstruct("run", "--out", str(run), "-n", str(args.n), *config)
    selfinstruct("score", str(run), "--method", "ifd")

    # The sets IFD chooses first: their rows are in the table before the judge has scored.
    sets = fixed_sets(run, [int(k) for k in args.sizes.split(",") if k], out, combined=not args.no_combined)
    n_seeds = sets["seeds"]["seed_tasks"]
    selections = [
        (f"seeds+ifd-top{p:g}", ["--by", "ifd", "--top", f"{p:g}%"]) for p in _numbers(args.ifd_tops)
    ]
    if args.diverse_top:
        name = f"seeds+ifd-top{args.diverse_top:g}-diverse{args.diverse:g}"
        selections.append(
            (name, ["--by", "ifd", "--top", f"{args.diverse_top:g}%", "--diverse", f"{args.diverse:g}"])
        )
    for name, select in selections:
        sets[name] = selected_set(run, out, name, select, n_seeds)
    selected = [name for name, _ in selections]

    train = ["--base", "embedded", "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    evaluate = ["evaluate", "superni", "--tasks", str(args.tasks), "--max-instances", str(args.max_instances)]
    rows: list[dict[str, Any]] = []
    notes: list[str] = []  # rows the loop could not train, and why
    repeated: dict[str, list[dict[str, Any]]] = {}

    def write_results() -> None:
        """The tables so far: written after every model, so an unfinished loop shows what it has."""
        seeds = seed_summary(repeated, train_seeds)
        text = results_text(args, rows, seeds, run, json.loads((run / SUMMARY_FILE).read_text()), notes)
        text += f"\nWall time: {time.perf_counter() - began:.0f} s (steps already done are read back, not redone).\n"
        write_atomic(out / "results.md", text)
        settings = {k: str(v) for k, v in vars(args).items()}
        write_json(out / "results.json", {"settings": settings, "rows": rows, "seeds": seeds})

    def train_and_evaluate(name: str, seed: int) -> dict[str, Any]:
        """Fine-tune and evaluate one set with one training seed; its scores."""
        tag = name if seed == train_seeds[0] else f"{name}@seed{seed}"
        fixed = ["--steps", str(args.steps)] if name == "seeds" or name in selected else ["--epochs", "2"]
        ft = out / "ft" / tag
        selfinstruct(
            "finetune", str(sets[name]["dir"]), "--out", str(ft), *train, *fixed, "--seed", str(seed)
        )
        selfinstruct(*evaluate, "--out", str(out / "eval" / tag), "--adapter", str(ft / "adapter.gguf"))
        steps = json.loads((ft / "metrics.json").read_text())["total_steps"]
        return {
            "model": f"+ LoRA ({name})",
            **_describe(sets[name]),
            "steps": steps,
            **scores(out / "eval" / tag),
        }

    def add_row(name: str) -> None:
        if sets[name]["rows"] == 0:
            print(f"loop: {name} has no training rows; skipped", file=sys.stderr)
            return
        rows.append(train_and_evaluate(name, train_seeds[0]))
        write_results()

    selfinstruct(*evaluate, "--out", str(out / "eval" / "base"))
    rows.append({"model": "Gemma 3 270M base", "data": "-", **scores(out / "eval" / "base")})
    for name in ["seeds", *selected, *(n for n in sets if n not in selected and n != "seeds")]:
        add_row(name)

    if not args.no_judge:
        if args.judge_config:
            selfinstruct("score", str(run), "--method", "judge", "--config", str(args.judge_config))
        else:
            with judge_server(out / "judge-server.log") as base_url:
                # Over completions: SmolLM2 answered in the judge's format far more often than over
                # chat (README, "Scoring rows").
                judge = ["--backend", "openai", "--base-url", base_url, "--model", "smollm2"]
                selfinstruct("score", str(run), "--method", "judge", *judge)
        judged = [s.score for s in read_scores(run, "judge").values()]
        judge_sets = [
            (f"seeds+judge-top{p:g}", ["--by", "judge", "--top", f"{p:g}%"])
            for p in _numbers(args.judge_tops)
        ]
        if any(score >= args.judge_min for score in judged):
            name = f"seeds+judge-min{args.judge_min:g}"
            judge_sets.insert(0, (name, ["--by", "judge", "--min-score", f"{args.judge_min:g}"]))
        else:  # a weak judge's expected scores can all sit in the middle of the scale
            notes.append(
                f"seeds+judge-min{args.judge_min:g}: not trained, the judge scored no row >= {args.judge_min:g} "
                f"(its {len(judged)} scores span {min(judged, default=0):.2f}-{max(judged, default=0):.2f})."
            )
        for name, select in judge_sets:
            sets[name] = selected_set(run, out, name, select, n_seeds)
            selected.append(name)
            add_row(name)

    # The control and the best selected set, once per training seed.
    by_name = {row["model"][len("+ LoRA (") : -1]: row for row in rows[1:]}
    done = [n for n in selected if n in by_name]
    best = max(done, key=lambda n: by_name[n]["rougeL"]) if done else None
    for name in ["seeds", *([best] if best else [])]:
        repeated[name] = [by_name[name]]
        for seed in train_seeds[1:]:
            repeated[name].append({**train_and_evaluate(name, seed), "seed": seed})
            write_results()
    write_results()
    print((out / "results.md").read_text())
    return 0


def _numbers(text: str) -> list[float]:
    return [float(p) for p in text.split(",") if p]


def _describe(info: dict[str, Any]) -> dict[str, Any]:
    parts = [f"{info['seed_tasks']} seed tasks"] if info["seed_tasks"] else []
    if "selection" in info:
        parts.append(
            f"{info['generated_rows']} rows of {info['generated_instructions']} generated instructions ({info['selection']})"
        )
    elif info["generated_instructions"]:
        parts.append(f"{info['generated_instructions']} generated instructions")
    return {"data": " + ".join(parts), "rows": info["rows"]}


if __name__ == "__main__":
    sys.exit(main())
