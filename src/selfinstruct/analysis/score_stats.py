"""The row scores of `selfinstruct score`, summed up for the report: Table 2, histograms, best and worst rows.

The paper's Table 2 (section 3.3) is experts' answers on 200 random rows of GPT-3's data.
The judge answers the same three questions per row with a probability of "yes" (or a parsed
0/1, see `selfinstruct.scores`); a probability of 0.5 or more counts as yes, and a row is
"all fields valid" when all three do. The estimate is computed here from the score file's
details, so it needs nothing of summary.json. It is only as good as the judge: a model of a
few hundred million parameters answers these questions little better than a coin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from selfinstruct.records import Triple
from selfinstruct.scores import Score

# The judge's detail for each of the paper's questions, and the paper's share of yes.
JUDGE_QUESTIONS: dict[str, str] = {
    "valid_task": "the instruction describes a valid task",
    "appropriate_input": "the input is appropriate for the instruction",
    "correct_output": "the output is a correct and acceptable response",
}
PAPER_TABLE2: dict[str, float] = {
    "valid_task": 0.92,
    "appropriate_input": 0.79,
    "correct_output": 0.58,
    "all_valid": 0.54,
}
PAPER_TABLE2_ROWS = 200  # rows the paper's experts rated
YES_AT = 0.5  # a judge's probability of "yes" at or above this is a yes
SHOWN_ROWS = 5  # best and worst rows per method


def judge_says_yes(score: Score, question: str) -> bool | None:
    """The judge's answer to one question as yes/no; None when the score file has no number for it."""
    value = score.details.get(question)
    if not isinstance(value, int | float) or math.isnan(value):
        return None
    return value >= YES_AT


def table2_estimate(scores: Iterable[Score]) -> dict[str, dict[str, Any]]:
    """Per question and for all three: {yes, rated, share, paper}; share is None with nothing rated."""
    answers = [{q: judge_says_yes(s, q) for q in JUDGE_QUESTIONS} for s in scores]
    table: dict[str, dict[str, Any]] = {}
    for question in JUDGE_QUESTIONS:
        given = [a[question] for a in answers if a[question] is not None]
        table[question] = _share(sum(bool(v) for v in given), len(given), PAPER_TABLE2[question])
    complete = [a for a in answers if all(v is not None for v in a.values())]
    table["all_valid"] = _share(
        sum(all(a.values()) for a in complete), len(complete), PAPER_TABLE2["all_valid"]
    )
    return table


def _share(yes: int, rated: int, paper: float) -> dict[str, Any]:
    return {"yes": yes, "rated": rated, "share": round(yes / rated, 4) if rated else None, "paper": paper}


def best_and_worst(scores: Sequence[Score], n: int = SHOWN_ROWS) -> tuple[list[Score], list[Score]]:
    """The n highest-scored rows, highest first, and the n lowest, lowest first.

    Higher is better as `select --top` reads a score file; ties keep the file's order.
    """
    order = range(len(scores))
    best = sorted(order, key=lambda i: (-scores[i].score, i))[:n]
    worst = sorted(order, key=lambda i: (scores[i].score, i))[:n]
    return [scores[i] for i in best], [scores[i] for i in worst]


def histogram(values: Sequence[float], low: float, high: float, bins: int) -> dict[str, Any]:
    """Counts over `bins` equal bins from low to high; values outside are folded into the end bins."""
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        if not math.isfinite(value):
            continue
        counts[min(bins - 1, max(0, math.floor((value - low) / width)))] += 1
    return {"low": low, "high": high, "bin_width": width, "counts": counts}


def histogram_bins(method: str, values: Sequence[float]) -> tuple[float, float, int]:
    """(low, high, bins): the judge's 1-5 scale in quarters (a parsed whole answer starts a bin); IFD in
    30 bins from 0 to its 99th percentile, at least 1.5 so that 1 is always in view."""
    if method == "judge":
        return 1.0, 5.0, 16
    ordered = sorted(v for v in values if math.isfinite(v))
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)] if ordered else 0.0
    return 0.0, max(1.5, math.ceil(p99 * 10) / 10), 30


def row_json(score: Score) -> dict[str, Any]:
    return {**score.triple.to_json(), "score": round(score.score, 4)}


def summarize_scores(
    method: str, scores: Mapping[Triple, Score], triples: Sequence[Triple] | None
) -> dict[str, Any]:
    """One method's section of report.json: who scored, how many rows, spread, histogram, best and worst."""
    ordered = list(scores.values())
    values = [s.score for s in ordered]
    # IFD's best are the highest below 1, as `select` takes them (Cherry drops IFD >= 1: the
    # instruction did not make the output easier to predict).
    best, _ = best_and_worst([s for s in ordered if method != "ifd" or s.score < 1])
    _, worst = best_and_worst(ordered)
    summary: dict[str, Any] = {
        "scorers": sorted({s.scorer for s in ordered}),
        "rows": len(ordered),
        # Rows of the run's data with no score: failed or not scored yet (a rerun of `score` tries them).
        "unscored": sum(t not in scores for t in triples) if triples is not None else None,
        "mean": round(sum(values) / len(values), 4) if values else None,
        "median": _median(values),
        "min": min(values, default=None),
        "max": max(values, default=None),
        "histogram": histogram(values, *histogram_bins(method, values)),
        "best": [row_json(s) for s in best],
        "worst": [row_json(s) for s in worst],
    }
    if method == "ifd":
        # Cherry drops these: the instruction did not make the output easier to predict.
        summary["at_least_one"] = sum(v >= 1 for v in values)
    if method == "judge":
        summary["table2"] = table2_estimate(ordered)
    return summary


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return round(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2, 4)
