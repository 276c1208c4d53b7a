"""Zero-shot SuperNI evaluation (method.md 1.8): task definition as the prompt, greedy decoding.

Task files are in the official SuperNI JSON format (Definition, Categories, Positive
Examples, Instances). The prompt follows Tk-Instruct's encoding: "Definition: ...", then
optionally k positive examples, then "Now complete the following example -", the input and
"Output:". Scores are per task, per category and overall, two ways: `overall` is the mean of
the task means (each task counts the same), `overall.pooled` the mean over all instances
(each instance counts the same, as Tk-Instruct reports it). They differ when tasks have
different instance counts.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct.config import GenerationParams
from selfinstruct.errors import InputFileError
from selfinstruct.evaluate.metrics import best_over_references, mean_percent
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.types import CompletionRequest

GREEDY = GenerationParams(max_tokens=64, temperature=0.0, top_p=1.0, stop=("\n",))


@dataclass(frozen=True)
class SuperNITask:
    name: str
    definition: str
    category: str
    positive_examples: tuple[tuple[str, str], ...]
    instances: tuple[tuple[str, str, tuple[str, ...]], ...]  # (id, input, references)


def _fail(path: Path, what: str) -> InputFileError:
    return InputFileError(f"{path}: not a SuperNI task file ({what})")


def load_task(path: Path) -> SuperNITask:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _fail(path, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(path, "top level is not an object")
    definition = data.get("Definition")
    if isinstance(definition, list):  # v2 files hold a list; Tk-Instruct uses the first entry
        definition = definition[0] if definition else None
    if not isinstance(definition, str) or not definition.strip():
        raise _fail(path, "missing 'Definition'")
    categories = data.get("Categories") or ["Uncategorized"]
    positives = []
    for n, ex in enumerate(data.get("Positive Examples") or []):
        if (
            not isinstance(ex, dict)
            or not isinstance(ex.get("input"), str)
            or not isinstance(ex.get("output"), str)
        ):
            raise _fail(path, f"'Positive Examples'[{n}] needs string input and output")
        positives.append((ex["input"], ex["output"]))
    instances = []
    raw_instances = data.get("Instances")
    if not isinstance(raw_instances, list) or not raw_instances:
        raise _fail(path, "missing or empty 'Instances'")
    for n, inst in enumerate(raw_instances):
        refs = inst.get("output") if isinstance(inst, dict) else None
        if isinstance(refs, str):
            refs = [refs]
        if (
            not isinstance(inst, dict)
            or not isinstance(inst.get("input"), str)
            or not isinstance(refs, list)
            or not refs
            or not all(isinstance(r, str) for r in refs)
        ):
            raise _fail(path, f"'Instances'[{n}] needs a string input and a list of string outputs")
        instances.append((str(inst.get("id", f"{path.stem}-{n}")), inst["input"], tuple(refs)))
    return SuperNITask(path.stem, definition, str(categories[0]), tuple(positives), tuple(instances))


def load_tasks(folder: Path, names: list[str] | None = None) -> list[SuperNITask]:
    if not folder.is_dir():
        raise InputFileError(f"{folder}: task directory not found")
    paths = sorted(folder.glob("*.json"))
    if names:
        wanted = set(names)
        missing = wanted - {p.stem for p in paths}
        if missing:
            raise InputFileError(f"{folder}: no task file for {', '.join(sorted(missing))}")
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        raise InputFileError(f"{folder}: no *.json task files")
    return [load_task(p) for p in paths]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text and text[-1] in string.punctuation else text + "."


def build_prompt(task: SuperNITask, instance_input: str, n_positive: int = 0) -> str:
    parts = [f"Definition: {_sentence(task.definition)}\n\n"]
    for n, (ex_in, ex_out) in enumerate(task.positive_examples[:n_positive], start=1):
        parts.append(f" Positive Example {n} -\nInput: {_sentence(ex_in)}\n Output: {_sentence(ex_out)}\n\n")
    # Ends in "Output:" (no trailing space): a decoder-only model then writes " answer".
    parts.append(f"Now complete the following example -\nInput: {_sentence(instance_input)}\nOutput:")
    return "".join(parts)


def evaluate_superni(
    engine: RequestEngine,
    tasks: list[SuperNITask],
    n_positive: int = 0,
    max_instances: int = 100,
    params: GenerationParams = GREEDY,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predictions (one record per instance) and metrics (overall, per task, per category)."""
    items = [(task, inst) for task in tasks for inst in task.instances[:max_instances]]
    requests = [CompletionRequest(build_prompt(task, inst[1], n_positive), params) for task, inst in items]
    completions = engine.complete_all(requests, stage="superni")
    predictions = []
    for (task, (inst_id, inst_input, refs)), completion in zip(items, completions, strict=True):
        prediction = completion.text.strip()
        em, rl = best_over_references(prediction, refs)
        predictions.append(
            {"task": task.name, "category": task.category, "id": inst_id, "input": inst_input,
             "prediction": prediction, "references": list(refs), "exact_match": em, "rougeL": rl}
        )  # fmt: skip
    return predictions, aggregate(predictions)


def aggregate(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for p in predictions:
        by_task.setdefault(p["task"], []).append(p)
    per_task = {
        name: {
            "category": rows[0]["category"],
            "instances": len(rows),
            "exact_match": mean_percent([r["exact_match"] for r in rows]),
            "rougeL": mean_percent([r["rougeL"] for r in rows]),
        }
        for name, rows in sorted(by_task.items())
    }
    per_category: dict[str, dict[str, Any]] = {}
    for name, row in per_task.items():
        per_category.setdefault(row["category"], {"tasks": []})["tasks"].append(name)
    for cat in per_category.values():
        rows = [per_task[t] for t in cat["tasks"]]
        cat["exact_match"] = round(sum(r["exact_match"] for r in rows) / len(rows), 4)
        cat["rougeL"] = round(sum(r["rougeL"] for r in rows) / len(rows), 4)
    overall = {
        "tasks": len(per_task),
        "instances": len(predictions),
        "exact_match": round(sum(r["exact_match"] for r in per_task.values()) / max(len(per_task), 1), 4),
        "rougeL": round(sum(r["rougeL"] for r in per_task.values()) / max(len(per_task), 1), 4),
        "pooled": {
            "exact_match": mean_percent([p["exact_match"] for p in predictions]),
            "rougeL": mean_percent([p["rougeL"] for p in predictions]),
        },
    }
    return {"overall": overall, "per_category": dict(sorted(per_category.items())), "per_task": per_task}


def format_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'task':<58} {'category':<30} {'EM':>7} {'ROUGE-L':>8}"]
    for name, row in metrics["per_task"].items():
        lines.append(
            f"{name[:58]:<58} {row['category'][:30]:<30} {row['exact_match']:7.2f} {row['rougeL']:8.2f}"
        )
    lines.append("")
    for name, row in metrics["per_category"].items():
        lines.append(f"{'category: ' + name:<89} {row['exact_match']:7.2f} {row['rougeL']:8.2f}")
    o = metrics["overall"]
    label = f"overall, mean of {o['tasks']} task means"
    lines.append(f"{label:<89} {o['exact_match']:7.2f} {o['rougeL']:8.2f}")
    label = f"overall, pooled over {o['instances']} instances"
    lines.append(f"{label:<89} {o['pooled']['exact_match']:7.2f} {o['pooled']['rougeL']:8.2f}")
    return "\n".join(lines)
