"""The paper's Table 1 and the length distributions, from plain records.

Counted over the dataset a run ends with: when the run has instances, its instructions are
the distinct instructions that have at least one instance (as the paper counts the final
data: 52,445 instructions with 82,439 instances); before stage 3 they are stage 1's.
Lengths are in words, split on whitespace (`str.split`), the same count the instruction
filters use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from selfinstruct.records import Triple


@dataclass(frozen=True)
class DatasetStats:
    """Table 1. Fields are None where the run does not hold that information yet."""

    instructions: int
    classification_instructions: int | None  # None: no classification answers in the run
    non_classification_instructions: int | None
    unknown_classification: int  # instructions without a classification answer
    instances: int | None  # None: no instances yet (before stage 3)
    instances_with_empty_input: int | None
    avg_instruction_words: float | None
    avg_input_words: float | None  # over non-empty inputs only, as the paper
    avg_output_words: float | None
    generated_instructions: int  # stage 1's count, before instances were filtered

    def to_json(self) -> dict[str, int | float | None]:
        return asdict(self)


def word_count(text: str) -> int:
    return len(text.split())


def dataset_instructions(instructions: Sequence[str], triples: Sequence[Triple] | None) -> list[str]:
    """The instructions Table 1 counts: those with an instance, in first-seen order (see module doc)."""
    if triples is None:
        return list(dict.fromkeys(instructions))
    return list(dict.fromkeys(t.instruction for t in triples))


def dataset_stats(
    instructions: Sequence[str], classification: dict[str, bool], triples: Sequence[Triple] | None
) -> DatasetStats:
    counted = dataset_instructions(instructions, triples)
    known = [classification[i] for i in counted if i in classification]
    has_labels = bool(known)
    inputs = [t.input for t in triples or () if t.input]
    return DatasetStats(
        instructions=len(counted),
        classification_instructions=sum(known) if has_labels else None,
        non_classification_instructions=len(known) - sum(known) if has_labels else None,
        unknown_classification=len(counted) - len(known),
        instances=len(triples) if triples is not None else None,
        instances_with_empty_input=sum(not t.input for t in triples) if triples is not None else None,
        avg_instruction_words=_mean([word_count(i) for i in counted]),
        avg_input_words=_mean([word_count(i) for i in inputs]),
        avg_output_words=_mean([word_count(t.output) for t in triples]) if triples is not None else None,
        generated_instructions=len(dict.fromkeys(instructions)),
    )


def length_distributions(
    instructions: Sequence[str], triples: Sequence[Triple] | None
) -> dict[str, list[int]]:
    """Word counts of the counted instructions, the non-empty inputs and the outputs."""
    counted = dataset_instructions(instructions, triples)
    return {
        "instruction": [word_count(i) for i in counted],
        "input": [word_count(t.input) for t in triples or () if t.input],
        "output": [word_count(t.output) for t in triples or ()],
    }


def summarize_lengths(lengths: Sequence[int]) -> dict[str, float | int | None]:
    """Count, mean, median and max of a length list (None for an empty list)."""
    if not lengths:
        return {"count": 0, "mean": None, "median": None, "max": None}
    ordered = sorted(lengths)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"count": len(ordered), "mean": _mean(ordered), "median": median, "max": ordered[-1]}


def _mean(values: Sequence[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
