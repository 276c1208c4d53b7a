"""A small hand-made run directory, and the numbers a person counts from it by hand.

Shared by the analysis and review tests (imported, it holds no tests of its own).
Stage 1 generated four instructions; "The task is to write a short story." lost all its
instances in stage 4, so Table 1 counts the other three.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POEM = "Write a poem about the sea."  # 6 words
SENTIMENT = "Classify the sentiment of the movie review."  # 7 words
CAPITAL = "What is the capital of France?"  # 6 words
STORY = "The task is to write a short story."  # no instance survives stage 4
INJECTION = '<script>window.__pwned=1;document.title="pwned"</script><img src=x onerror="window.__pwned=2">'

SEEDS = [
    "Write a poem about the ocean.",
    "Classify the sentiment of the sentence.",
    "Name the capital city of the given country.",
]

TRIPLES = [
    {"instruction": POEM, "input": "", "output": "The sea is wide and blue."},  # 6 words
    {"instruction": POEM, "input": "", "output": "Waves roll in."},  # 3
    {"instruction": SENTIMENT, "input": "I loved this film.", "output": "positive"},  # 4 / 1
    {"instruction": SENTIMENT, "input": "The plot was dull and slow.", "output": "negative"},  # 6 / 1
    {"instruction": CAPITAL, "input": "", "output": "Paris"},  # 1
]

SUMMARY = {
    "funnel": {
        "bootstrap": {"generated": 10, "rejected": {"rouge_similarity": 5, "too_short": 1}, "accepted": 4},
        "classify": {"instructions": 4, "classification": 1},
        "prepare": {
            "tasks": 4,
            "instances": {"generated": 7, "rejected": {"empty_output": 2}, "accepted": 5},
            "training_triples": 5,
            "finetuning_rows": 5,
        },
    }
}

# Counted by hand from the records above.
TABLE1 = {
    "instructions": 3,
    "classification_instructions": 1,
    "non_classification_instructions": 2,
    "unknown_classification": 0,
    "instances": 5,
    "instances_with_empty_input": 3,
    "avg_instruction_words": round(19 / 3, 2),
    "avg_input_words": 5.0,  # (4 + 6) / 2, non-empty inputs only
    "avg_output_words": 2.4,  # (6 + 3 + 1 + 1 + 1) / 5
    "generated_instructions": 4,
}


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def make_run(root: Path, *, with_config: bool = True, triples: list[dict[str, Any]] | None = None) -> Path:
    """The full layout: config with its own seeds, stages 1, 2 and 4, summary.json."""
    run = root / "run"
    instructions = [POEM, SENTIMENT, CAPITAL, STORY]
    write_jsonl(run / "machine_generated_instructions.jsonl", [{"instruction": i} for i in instructions])
    answers = {POEM: " No", SENTIMENT: " Yes", CAPITAL: "no", STORY: "No"}
    write_jsonl(
        run / "is_clf_or_not_test-model_template_1.jsonl",
        [{"instruction": i, "is_classification": a} for i, a in answers.items()],
    )
    write_jsonl(run / "finetuning_data" / "all_generated_instances.jsonl", triples or TRIPLES)
    (run / "summary.json").write_text(json.dumps(SUMMARY), encoding="utf-8")
    if with_config:
        seeds = root / "my_seeds.jsonl"
        write_jsonl(
            seeds,
            [
                {
                    "id": f"s{n}",
                    "name": f"seed {n}",
                    "instruction": text,
                    "instances": [{"input": "", "output": "x"}],
                    "is_classification": False,
                }
                for n, text in enumerate(SEEDS)
            ],
        )
        (run / "config.yaml").write_text(
            f"seed_tasks: {seeds}\nbackend:\n  model: test-model\nfilters:\n  tokenizer: rouge\n",
            encoding="utf-8",
        )
    return run
