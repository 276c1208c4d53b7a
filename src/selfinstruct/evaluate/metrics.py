"""The SuperNI metrics with the Tk-Instruct conventions (method.md 1.8).

ROUGE-L is rouge-score's F-measure with the Porter stemmer and its default tokenizer;
exact match compares answers after lower-casing, removing punctuation and collapsing
whitespace (articles are kept). Each prediction is scored against every reference and the
best score counts. Aggregates are percentages.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, collapse whitespace (Tk-Instruct's normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


@lru_cache(maxsize=1)
def _stemmed_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """rouge-score's ROUGE-L F-measure with stemming (target = reference)."""
    return float(_stemmed_scorer().score(reference, prediction)["rougeL"].fmeasure)


def best_over_references(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """(exact match, ROUGE-L), each the maximum over the references."""
    if not references:
        raise ValueError("an instance needs at least one reference output")
    return (
        max(exact_match(prediction, ref) for ref in references),
        max(rouge_l(prediction, ref) for ref in references),
    )


def mean_percent(values: Sequence[float]) -> float:
    return round(100.0 * sum(values) / len(values), 4) if values else 0.0
