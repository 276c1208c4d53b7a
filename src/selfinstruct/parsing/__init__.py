"""Stored model text -> records: stage 1's new instructions, stage 2's answers, stage 3's instances.

Pure functions, shared by the stages (which parse what comes back), stage 4 (which filters
what they parse) and the analysis (which reads any run directory).

- `completion`: a base model's continuation of the prompt, by the reference's text rules.
- `chat_list`: a chat model's list of new instructions (preambles, markdown, JSON).
- `chat_answers`: a chat model's yes/no answer, instances and one-stage tasks (JSON or text).
- `plain_answer`: a base model's answer to one plain task prompt, up to where it starts a next
  task (relabel's teacher, the user-oriented evaluation's responses).
- `chat_blocks`, `chat_json`: what those two share: labelled text blocks under markdown, and JSON
  read tolerantly (code fences, raw newlines in strings, the whole objects of a cut reply).

A stage-3 record says which kind of answer it holds (`instance_metadata.prompt_style`), so
the same run reader works on runs from base and chat models.
"""

from __future__ import annotations

from typing import Any

from selfinstruct.parsing.chat_answers import parse_chat_instances
from selfinstruct.parsing.completion import parse_classification_instances, parse_generation_instances
from selfinstruct.records import Instance

YES = frozenset({"Yes", "yes", "YES"})

__all__ = ["YES", "instances_of_record", "is_classification_answer"]


def is_classification_answer(raw: str) -> bool:
    """Stage 2's stored answer means yes. Anything else, an empty answer included, is no."""
    return raw.strip() in YES


def instances_of_record(record: dict[str, Any]) -> tuple[list[Instance], str]:
    """Parse one stage-3 record (or take the instance of a one-stage alpaca record).

    Returns the instances and the finish reason of the response they came from.
    """
    if "raw_instances" not in record:
        return [Instance(record.get("input", ""), record.get("output", ""))], "stop"
    metadata = record.get("instance_metadata") or {}
    finish = str(metadata.get("finish_reason", "stop"))
    raw = record["raw_instances"] or ""
    classification = is_classification_answer(str(record.get("is_classification", "")))
    if metadata.get("prompt_style") == "chat":
        return parse_chat_instances(raw, classification, finish), finish
    if classification:
        return parse_classification_instances(raw, finish), finish
    return parse_generation_instances(raw, finish), finish
