"""A base model's continuation -> instances: the reference's text rules (method.md 1.4).

The rules follow the reference so that the same model text yields
the same instances. Field prefixes such as "Sentence:" stay in the input (stage 4's noise
augmentation strips them half of the time).
"""

from __future__ import annotations

import re
from typing import TypeVar

from selfinstruct.records import Instance

EXAMPLE_MARK = re.compile(r"Example\s?\d*\.?")
OUTPUT_MARK = re.compile(r"Output\s*\d*\s*:")
INPUT_MARK = re.compile(r"Input\s*\d*\s*:")
LEADING_INPUT_MARK = re.compile(r"^Input\s*\d*\s*:")
T = TypeVar("T")


def parse_input_output(text: str) -> Instance:
    """One example: the input before the first "Output:", the output up to the next marker."""
    if OUTPUT_MARK.search(text):
        pieces = OUTPUT_MARK.split(text)
        task_input, output = pieces[0].strip(), pieces[1].strip()
    else:
        task_input, output = "", text.strip()
    # A model that runs on into a second input/output pair: keep only the first output.
    if INPUT_MARK.search(output):
        output = INPUT_MARK.split(output)[0].strip()
    task_input = LEADING_INPUT_MARK.sub("", task_input).strip()
    return Instance(input=task_input, output=output)


def parse_generation_instances(raw: str, finish_reason: str) -> list[Instance]:
    """Input-first text: "Example 1 / <input> / Output: ..." blocks, or a bare "Output: ..."."""
    raw = raw.strip()
    if EXAMPLE_MARK.search(raw):
        chunks = [c.strip() for c in EXAMPLE_MARK.split(raw) if c.strip()]
        instances = [parse_input_output(chunk) for chunk in chunks]
    elif OUTPUT_MARK.search(raw):
        instances = [parse_input_output(raw)]
    else:
        return []
    return drop_truncated(instances, finish_reason)


def parse_classification_instances(raw: str, finish_reason: str) -> list[Instance]:
    """Output-first text: "Class label: <label>" lines, each followed by an input of that class."""
    if "Class label:" not in raw:
        return []
    instances = []
    for chunk in raw.split("Class label:")[1:]:
        label, _, rest = chunk.strip().partition("\n")
        instances.append(Instance(input=rest.strip(), output=label.strip()))
    return drop_truncated(instances, finish_reason)


def drop_truncated(parsed: list[T], finish_reason: str) -> list[T]:
    """Text cut by max_tokens leaves its last instance (or block) unfinished: without it."""
    return parsed[:-1] if finish_reason == "length" else parsed
