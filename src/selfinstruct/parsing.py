"""Stored model text -> records: stage 2's answers and stage 3's instances (method.md 1.2, 1.4).

Pure functions, shared by stage 4 (which filters what they parse) and the analysis (which
reads any run directory). The rules follow the reference so that the same model text yields
the same instances. Field prefixes such as "Sentence:" stay in the input (stage 4's noise
augmentation strips them half of the time).
"""

from __future__ import annotations

import re
from typing import Any

from selfinstruct.records import Instance

YES = frozenset({"Yes", "yes", "YES"})

EXAMPLE_MARK = re.compile(r"Example\s?\d*\.?")
OUTPUT_MARK = re.compile(r"Output\s*\d*\s*:")
INPUT_MARK = re.compile(r"Input\s*\d*\s*:")
LEADING_INPUT_MARK = re.compile(r"^Input\s*\d*\s*:")


def is_classification_answer(raw: str) -> bool:
    """Stage 2's raw answer means yes. Anything else, an empty answer included, is no."""
    return raw.strip() in YES


def instances_of_record(record: dict[str, Any]) -> tuple[list[Instance], str]:
    """Parse one stage-3 record (or take the instance of a one-stage alpaca record).

    Returns the instances and the finish reason of the response they came from.
    """
    if "raw_instances" not in record:
        return [Instance(record.get("input", ""), record.get("output", ""))], "stop"
    finish = str((record.get("instance_metadata") or {}).get("finish_reason", "stop"))
    raw = record["raw_instances"] or ""
    if is_classification_answer(str(record.get("is_classification", ""))):
        return parse_classification_instances(raw, finish), finish
    return parse_generation_instances(raw, finish), finish


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
    return _drop_truncated(instances, finish_reason)


def parse_classification_instances(raw: str, finish_reason: str) -> list[Instance]:
    """Output-first text: "Class label: <label>" lines, each followed by an input of that class."""
    if "Class label:" not in raw:
        return []
    instances = []
    for chunk in raw.split("Class label:")[1:]:
        label, _, rest = chunk.strip().partition("\n")
        instances.append(Instance(input=rest.strip(), output=label.strip()))
    return _drop_truncated(instances, finish_reason)


def _drop_truncated(instances: list[Instance], finish_reason: str) -> list[Instance]:
    # Text cut by max_tokens leaves its last instance unfinished.
    return instances[:-1] if finish_reason == "length" else instances
