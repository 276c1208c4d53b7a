"""The loop's tables (benchmarks/loop_superni.py): the models, the training seeds, the
categories, and what generating and scoring the data cost."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfinstruct.rundir import STORE_FILE

METRICS = ("rougeL", "rougeL_pooled", "exact_match", "exact_match_pooled")


def scores(eval_dir: Path) -> dict[str, Any]:
    metrics = json.loads((eval_dir / "superni_metrics.json").read_text())
    overall = metrics["overall"]
    return {
        "rougeL": overall["rougeL"],
        "rougeL_pooled": overall["pooled"]["rougeL"],
        "exact_match": overall["exact_match"],
        "exact_match_pooled": overall["pooled"]["exact_match"],
        "tasks": overall["tasks"],
        "instances": overall["instances"],
        "categories": {name: row["rougeL"] for name, row in metrics["per_category"].items()},
    }


def seed_summary(repeated: dict[str, list[dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """Mean and sample standard deviation of each metric over the training seeds, per set."""
    summary: dict[str, Any] = {}
    for name, runs in repeated.items():
        entry: dict[str, Any] = {"seeds": seeds[: len(runs)], "runs": len(runs)}
        for key in METRICS:
            values = [run[key] for run in runs]
            entry[key] = {
                "values": values,
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
        summary[name] = entry
    return summary


def model_table(rows: list[dict[str, Any]]) -> list[str]:
    first = rows[0]
    lines = [
        f"SuperNI test subset: {first['tasks']} tasks, {first['instances']} instances, zero-shot, greedy, "
        "through llama.cpp. ROUGE-L and exact match in %; 'task mean' = the mean of the task means, "
        "'pooled' = the mean over all instances (as Tk-Instruct reports). First training seed.",
        "",
        "| model | training data | rows | steps | ROUGE-L task mean | ROUGE-L pooled | EM task mean | EM pooled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['data']} | {row.get('rows', '-')} | {row.get('steps', '-')} | "
            f"{row['rougeL']:.2f} | {row['rougeL_pooled']:.2f} | {row['exact_match']:.2f} | "
            f"{row['exact_match_pooled']:.2f} |"
        )
    return lines


def seeds_table(summary: dict[str, Any]) -> list[str]:
    if not summary:
        return []
    lines = [
        "",
        "The control and the best selected set, once per training seed (mean ± sample standard deviation):",
        "",
        "| set | training seeds | ROUGE-L task mean | EM task mean | ROUGE-L per seed |",
        "|---|---|---|---|---|",
    ]
    for name, entry in summary.items():
        rouge, em = entry["rougeL"], entry["exact_match"]
        per_seed = ", ".join(f"{v:.2f}" for v in rouge["values"])
        lines.append(
            f"| {name} | {entry['runs']} | {rouge['mean']:.2f} ± {rouge['sd']:.2f} | "
            f"{em['mean']:.2f} ± {em['sd']:.2f} | {per_seed} |"
        )
    names = list(summary)
    if len(names) == 2:
        control, best = (summary[n]["rougeL"] for n in names)
        gap = best["mean"] - control["mean"]
        verdict = "reaches" if gap >= 3 else "does not reach"
        lines += [
            "",
            f"{names[1]} - control: {gap:+.2f} ROUGE-L (mean over seeds); the issue's goal of +3 {verdict} it.",
        ]
    return lines


def category_table(rows: list[dict[str, Any]]) -> list[str]:
    """ROUGE-L per category: the control's, and each other model's change from it."""
    control = next((r for r in rows if r["model"] == "+ LoRA (seeds)"), None)
    if control is None:
        return []
    others = [r for r in rows if r is not control]
    names = [r["model"].removeprefix("+ LoRA (").removesuffix(")") for r in others]
    lines = [
        "",
        "ROUGE-L by category: the control's, and each model's change from it (first training seed):",
        "",
        "| category | control | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(others),
    ]
    for category, value in control["categories"].items():
        changes = [f"{r['categories'].get(category, float('nan')) - value:+.1f}" for r in others]
        lines.append(f"| {category} | {value:.1f} | " + " | ".join(changes) + " |")
    return lines


def stored_span(run: Path, stages: tuple[str, ...]) -> tuple[int, float]:
    """(answers, seconds from the first to the last) stored for these stages: what the work
    took, even when a later invocation read every answer back (summary.json's `seconds` are
    the latest invocation's)."""
    marks = ", ".join("?" * len(stages))
    with contextlib.closing(sqlite3.connect(f"file:{run / STORE_FILE}?mode=ro", uri=True)) as db:
        count, first, last = db.execute(
            f"SELECT count(*), min(created), max(created) FROM responses WHERE stage IN ({marks})", stages
        ).fetchone()
    return int(count), float(last - first) if first is not None else 0.0


def cost_lines(run: Path, summary: dict[str, Any]) -> list[str]:
    """What generating the run and scoring its rows took, from the store's timestamps."""
    funnel = summary.get("funnel", {})
    _, generating = stored_span(run, ("bootstrap", "classify", "instances"))
    lines = [
        "",
        f"Generation (bootstrap + classify + instances, first to last stored answer): {generating:.0f} s.",
    ]
    for method in ("ifd", "judge"):
        entry = funnel.get(f"score_{method}")
        rows, seconds = stored_span(run, (f"score_{method}",))
        if entry and rows:
            rate = f"{rows / seconds * 60:.0f} rows/min" if seconds else "-"
            lines.append(
                f"Scoring by {method} ({entry.get('scorer') or entry.get('judge')}): {seconds:.0f} s for "
                f"{rows} rows ({rate}; {entry['scored']} scored)."
            )
    return lines


def results_text(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    seeds: dict[str, Any],
    run: Path,
    summary: dict[str, Any],
    notes: Sequence[str] = (),
) -> str:
    funnel = summary["funnel"]["bootstrap"]
    head = [
        "# Self-Instruct on Gemma 3 270M: SuperNI",
        "",
        f"Generated: {funnel['accepted']} instructions from {funnel['generated']} candidates "
        f"(`selfinstruct run -n {args.n}` on the embedded model). The control and every selected set "
        f"train {args.steps} steps; seeds + all and the curve train 2 epochs.",
        "",
    ]
    body = [*model_table(rows), *notes, *([""] if notes else []), *seeds_table(seeds), *category_table(rows)]
    body += cost_lines(run, summary)
    return "\n".join(head + body) + "\n"
