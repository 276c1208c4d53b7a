"""Supervised fine-tuning examples from a run's prompt/completion rows (method.md 1.4-1.5).

The reference fine-tunes GPT-3 with `prompt_loss_weight=0`: only the completion is learned.
Here that means labels of -100 (ignored by the loss) on every prompt token and on padding,
and the completion's literal `<|endoftext|>` marker replaced by the tokenizer's real EOS
token, so the tuned model learns to stop.

The prompt and the completion are tokenized separately and concatenated. Tokenizing the
joined text could merge tokens across the boundary; separately, the prompt tokens are
exactly those the model sees at inference time, and the boundary is exact.

Everything here is pure except `read_rows` / `find_data_file` (file reading) and
`tokenize_rows` (calls the tokenizer).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError
from selfinstruct.randomness import derive_seed
from selfinstruct.records import iter_jsonl
from selfinstruct.rundir import ALPACA_FILE, FINETUNE_DATA_GLOB, FINETUNE_DIR, GENERATED_INSTANCES_FILE

IGNORE = -100  # the label PyTorch's cross-entropy skips
END_MARKER = "<|endoftext|>"


@dataclass(frozen=True)
class Example:
    """One tokenized row: `labels[i]` is the target at position i (IGNORE = no loss)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


@dataclass
class EncodeStats:
    rows: int = 0
    examples: int = 0
    truncated: int = 0  # cut to max_length (the completion loses its end)
    dropped: int = 0  # the prompt alone fills max_length: nothing left to learn


# -- the data file --------------------------------------------------------------------------


def find_data_file(source: Path) -> Path:
    """The fine-tuning JSONL of a run directory (or `source` itself when it is a file)."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise InputFileError(f"{source}: no such run directory")
    files = sorted((source / FINETUNE_DIR).glob(FINETUNE_DATA_GLOB))
    if not files:
        raise InputFileError(
            f"{source}: no fine-tuning data ({FINETUNE_DIR}/{FINETUNE_DATA_GLOB}); "
            f"run `selfinstruct prepare --out {source}` first"
        )
    if len(files) > 1:
        names = ", ".join(f.name for f in files)
        raise InputFileError(f"{source / FINETUNE_DIR}: several fine-tuning files ({names}); pass one as RUN")
    return files[0]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The {prompt, completion} rows of a fine-tuning file; a bad line is named path:line."""
    rows = []
    for lineno, obj in iter_jsonl(path):
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise InputFileError(f"{path}:{lineno}: expected string fields 'prompt' and 'completion'")
        rows.append({"prompt": prompt, "completion": completion})
    if not rows:
        raise InputFileError(f"{path}: no fine-tuning rows")
    return rows


def known_instructions(data_file: Path) -> set[str]:
    """Instructions listed beside the data (alpaca_data.json and/or all_generated_instances.jsonl)."""
    folder = data_file.parent
    found: set[str] = set()
    alpaca = folder / ALPACA_FILE
    if alpaca.is_file():
        with contextlib.suppress(ValueError, TypeError):  # not ours to validate; fall back below
            found |= {r["instruction"] for r in json.loads(alpaca.read_text("utf-8")) if "instruction" in r}
    generated = folder / GENERATED_INSTANCES_FILE
    if generated.is_file():
        found |= {str(r.get("instruction", "")) for _, r in iter_jsonl(generated)}
    return {i.strip() for i in found if i.strip()}


def instruction_of(prompt: str, known: frozenset[str] | set[str] = frozenset()) -> str:
    """The instruction a prompt was built from.

    Every fine-tuning template starts with the instruction (optionally after "Task: ") and
    follows it with a newline or " Output:". The longest such prefix that is a known
    instruction wins; without one (no instruction list beside the data) the first line is
    taken, minus a trailing " Output:".
    """
    text = prompt.removeprefix("Task: ")
    ends = [m.start() for m in re.finditer(r"\n| Output:", text)] + [len(text)]
    for end in sorted(ends, reverse=True):
        if text[:end].strip() in known:
            return text[:end].strip()
    first = text.split("\n", 1)[0]
    return first.removesuffix(" Output:").strip()


def limit_instructions(
    rows: list[dict[str, str]], known: set[str], max_instructions: int | None, seed: int
) -> tuple[list[dict[str, str]], int]:
    """Rows of at most `max_instructions` instructions (a seeded sample), and how many remain."""
    by_row = [instruction_of(r["prompt"], known) for r in rows]
    distinct = sorted(set(by_row))
    if max_instructions is None or len(distinct) <= max_instructions:
        return rows, len(distinct)
    rng = random.Random(derive_seed(seed, "finetune", "instructions"))
    chosen = set(rng.sample(distinct, max_instructions))
    return [r for r, i in zip(rows, by_row, strict=True) if i in chosen], len(chosen)


# -- tokens and labels (pure) ---------------------------------------------------------------


def completion_text(completion: str) -> str:
    """The completion without its end marker (the EOS token is appended as a token)."""
    return completion.removesuffix(END_MARKER)


def encode_example(
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    eos_id: int,
    max_length: int,
    train_on_prompt: bool = False,
) -> tuple[Example | None, str | None]:
    """Concatenate prompt + completion + EOS, cut to `max_length`, and label it.

    Returns (example, None), (example, "truncated"), or (None, "dropped") when no trained
    token would be left. Position 0 is never a target (nothing precedes it).
    """
    ids = [*prompt_ids, *completion_ids, eos_id]
    labels = list(ids) if train_on_prompt else [IGNORE] * len(prompt_ids) + [*completion_ids, eos_id]
    labels[0] = IGNORE
    note = None
    if len(ids) > max_length:
        ids, labels, note = ids[:max_length], labels[:max_length], "truncated"
    if all(label == IGNORE for label in labels):
        return None, "dropped"
    return Example(tuple(ids), tuple(labels)), note


def tokenize_rows(
    rows: Sequence[dict[str, str]], tokenizer: Any, max_length: int, train_on_prompt: bool = False
) -> tuple[list[Example], EncodeStats]:
    """Examples for every row that keeps at least one trained token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputFileError("the base model's tokenizer has no EOS token; cannot mark the end of an answer")
    prompts = tokenizer([r["prompt"] for r in rows], add_special_tokens=True)["input_ids"]
    completions = tokenizer([completion_text(r["completion"]) for r in rows], add_special_tokens=False)[
        "input_ids"
    ]
    stats = EncodeStats(rows=len(rows))
    examples = []
    for prompt_ids, completion_ids in zip(prompts, completions, strict=True):
        example, note = encode_example(prompt_ids, completion_ids, eos, max_length, train_on_prompt)
        if note == "truncated":
            stats.truncated += 1
        if example is None:
            stats.dropped += 1
        else:
            examples.append(example)
    stats.examples = len(examples)
    return examples, stats


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, list[list[int]]]:
    """Right-pad a batch to its longest example: pad tokens get attention 0 and label IGNORE."""
    width = max(len(e.input_ids) for e in examples)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for e in examples:
        pad = width - len(e.input_ids)
        batch["input_ids"].append([*e.input_ids, *[pad_id] * pad])
        batch["attention_mask"].append([1] * len(e.input_ids) + [0] * pad)
        batch["labels"].append([*e.labels, *[IGNORE] * pad])
    return batch


# -- the order of the examples (pure) -------------------------------------------------------


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return -(-n_examples // batch_size)


def batch_indices(n_examples: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The examples of global step `step`: each epoch is its own seeded shuffle.

    A function of the step alone, so a resumed run sees exactly the batches the
    uninterrupted run would have seen, with no data-loader state to save.
    """
    per_epoch = steps_per_epoch(n_examples, batch_size)
    epoch, index = divmod(step, per_epoch)
    order = list(range(n_examples))
    random.Random(derive_seed(seed, "finetune", "epoch", epoch)).shuffle(order)
    return order[index * batch_size : (index + 1) * batch_size]
