"""How far the judge of `selfinstruct score --method judge` agrees with the person who rated the sample.

The mapping, question by question (both ask the paper's three questions of one row):

    human (ratings.jsonl)   judge (scores_judge.jsonl details)
    valid      yes/no       valid_task          yes when its probability of yes >= 0.5
    input_ok   yes/no       appropriate_input   "
    output_ok  yes/no       correct_output      "
    all three yes           all three >= 0.5    (rows where the human answered all three)

and overall: the human's grade A/B/C/D as 4/3/2/1 against the judge's overall rating (1-5).

Per question the agreement is the share of rows where the two answers are equal, over the
rows the human answered that the judge scored; Cohen's kappa beside it says how much of that
is more than chance (with 92% valid tasks, two raters who both say "yes" to everything agree
92% of the time). Overall, the grades and the ratings are on different scales, so the
agreement is Spearman's rank correlation, with the number of rows it is computed on.
A row counts by its triple (the ratings file carries a copy of each item), so a rating
stays matched to its score whatever the sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from selfinstruct.analysis.score_stats import judge_says_yes
from selfinstruct.records import Triple
from selfinstruct.scores import Score

# The human's question -> the judge's detail that answers it.
JUDGE_FOR: dict[str, str] = {
    "valid": "valid_task",
    "input_ok": "appropriate_input",
    "output_ok": "correct_output",
}
GRADE_VALUE = {"A": 4, "B": 3, "C": 2, "D": 1}


def judge_agreement(latest: Mapping[str, dict[str, Any]], judge: Mapping[Triple, Score]) -> dict[str, Any]:
    """The agreement on the rated rows that the judge scored (`latest`: item id -> rating record)."""
    # (the person's answers, the judge's yes/no per question) for each rated row the judge scored.
    rows: list[tuple[dict[str, Any], dict[str, bool | None], float]] = []
    for record in latest.values():
        score = judge.get(_triple(record))
        if score is not None and any(record.get(q) is not None for q in (*JUDGE_FOR, "grade")):
            said = {q: judge_says_yes(score, detail) for q, detail in JUDGE_FOR.items()}
            rows.append((record, said, score.score))
    questions: dict[str, dict[str, Any]] = {}
    for question, detail in JUDGE_FOR.items():
        answered = [
            (bool(r[question]), bool(said[question]))
            for r, said, _ in rows
            if r.get(question) is not None and said[question] is not None
        ]
        questions[question] = _binary_agreement(answered) | {"judge_field": detail}
    complete = [
        (all(r[q] for q in JUDGE_FOR), all(said.values()))
        for r, said, _ in rows
        if all(r.get(q) is not None and said[q] is not None for q in JUDGE_FOR)
    ]
    graded = [(GRADE_VALUE[r["grade"]], overall) for r, _, overall in rows if r.get("grade") in GRADE_VALUE]
    return {
        "judge": sorted({s.scorer for s in judge.values()}),
        "rows": len(rows),
        "questions": questions,
        "all_valid": _binary_agreement(complete),
        "overall": {
            "rows": len(graded),
            "spearman": spearman([h for h, _ in graded], [j for _, j in graded]),
            "human": "grade A, B, C, D as 4, 3, 2, 1",
            "judge": "overall rating, 1-5",
        },
    }


def _triple(record: dict[str, Any]) -> Triple:
    """The rated row's triple, stripped as the run's readers give it (a record lacks none: ratings.py writes them)."""
    return Triple(*(str(record.get(f, "")).strip() for f in ("instruction", "input", "output")))


def _binary_agreement(answers: Sequence[tuple[bool, bool]]) -> dict[str, Any]:
    """{rows, agree, share, kappa}: share and kappa are None with no rows; kappa too when chance is 1."""
    rows = len(answers)
    agree = sum(human == judge for human, judge in answers)
    return {
        "rows": rows,
        "agree": agree,
        "share": round(agree / rows, 4) if rows else None,
        "kappa": _round(cohen_kappa(answers)),
    }


def cohen_kappa(answers: Sequence[tuple[bool, bool]]) -> float | None:
    """(observed - chance agreement) / (1 - chance); None when undefined (no rows, or chance is 1)."""
    if not answers:
        return None
    n = len(answers)
    observed = sum(a == b for a, b in answers) / n
    first_yes = sum(a for a, _ in answers) / n
    second_yes = sum(b for _, b in answers) / n
    chance = first_yes * second_yes + (1 - first_yes) * (1 - second_yes)
    if math.isclose(chance, 1.0):
        return None
    return (observed - chance) / (1 - chance)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            result[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's correlation of the ranks (ties averaged, as scipy.stats.spearmanr).

    None with fewer than two rows or when either side is constant (no ranking to compare).
    """
    if len(xs) != len(ys):
        raise ValueError("spearman needs two sequences of the same length")
    if len(xs) < 2:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return _round(sxy / math.sqrt(sxx * syy))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def format_agreement(agreement: dict[str, Any]) -> list[str]:
    """The agreement as lines for the terminal summary."""

    def share(entry: dict[str, Any]) -> str:
        if entry["share"] is None:
            return f"{'—':>6}  on 0 rows"
        kappa = "—" if entry["kappa"] is None else f"{entry['kappa']:.2f}"
        return f"{100 * entry['share']:5.1f}%  on {entry['rows']} rows (kappa {kappa})"

    overall = agreement["overall"]
    rho = "—" if overall["spearman"] is None else f"{overall['spearman']:.3f}"
    labels = {"valid": "valid task", "input_ok": "appropriate input", "output_ok": "correct output"}
    lines = [
        f"agreement with the judge ({', '.join(agreement['judge'])}), {agreement['rows']} rated row(s) scored:"
    ]
    lines += [f"  {labels[q]:<18} {share(entry)}" for q, entry in agreement["questions"].items()]
    lines.append(f"  {'all fields valid':<18} {share(agreement['all_valid'])}")
    lines.append(f"  grade vs overall   Spearman {rho} on {overall['rows']} rows")
    return lines
