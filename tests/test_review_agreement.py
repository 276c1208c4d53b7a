"""The judge's agreement with the person, on hand-made ratings whose answers are counted by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from selfinstruct.analysis.review.agreement import cohen_kappa, judge_agreement, ranks, spearman
from selfinstruct.analysis.review.ratings import format_summary, summarize
from selfinstruct.records import Triple
from selfinstruct.scores import Score


def row(name: str) -> Triple:
    return Triple(f"Task {name}.", "", f"Answer {name}.")


def judged(name: str, overall: float, valid: float, input_ok: float, output_ok: float) -> Score:
    details = {"valid_task": valid, "appropriate_input": input_ok, "correct_output": output_ok}
    return Score(row(name), overall, "judge.gguf", details)


def rated(
    name: str, valid: bool | None, input_ok: bool | None, output_ok: bool | None, grade: str | None
) -> Any:
    # As ratings.jsonl holds it: the answers and a copy of the item (here with stray whitespace,
    # which the score files' triples do not have).
    triple = row(name)
    return {
        "item": name,
        "valid": valid,
        "input_ok": input_ok,
        "output_ok": output_ok,
        "grade": grade,
        "instruction": f" {triple.instruction}",
        "input": triple.input,
        "output": f"{triple.output}\n",
    }


# The judge: yes/no at 0.5.            valid  input  output
JUDGE = {
    s.triple: s
    for s in (
        judged("A", 4.5, 0.9, 0.8, 0.7),  # yes    yes    yes
        judged("B", 2.0, 0.9, 0.3, 0.2),  # yes    no     no
        judged("C", 3.0, 0.4, 0.9, 0.6),  # no     yes    yes
        judged("D", 1.0, 0.1, 0.5, 0.5),  # no     yes    yes
        judged("F", 5.0, 0.9, 0.9, 0.9),
    )
}
LATEST = {
    "A": rated("A", True, True, True, "A"),
    "B": rated("B", True, True, False, "C"),
    "C": rated("C", True, None, True, "B"),  # input not answered
    "D": rated("D", False, True, False, "D"),
    "E": rated("E", True, True, True, "A"),  # the judge did not score E
    "F": rated("F", None, None, None, None),  # answers cleared: not rated
}


def test_agreement_per_question_with_kappa_counted_by_hand() -> None:
    agreement = judge_agreement(LATEST, JUDGE)
    assert agreement["rows"] == 4 and agreement["judge"] == ["judge.gguf"]
    questions = agreement["questions"]
    # valid: A yes/yes, B yes/yes, C yes/no, D no/no. Chance: 3/4 * 2/4 + 1/4 * 2/4 = 1/2.
    assert questions["valid"] == {
        "rows": 4,
        "agree": 3,
        "share": 0.75,
        "kappa": 0.5,
        "judge_field": "valid_task",
    }
    # input: A, B (disagree), D; the person always said yes, so agreement is all chance: kappa 0.
    assert questions["input_ok"] | {"judge_field": None} == {
        "rows": 3,
        "agree": 2,
        "share": 0.6667,
        "kappa": 0.0,
        "judge_field": None,
    }
    # output: A yes/yes, B no/no, C yes/yes, D no/yes.
    assert (questions["output_ok"]["agree"], questions["output_ok"]["kappa"]) == (3, 0.5)
    # All three answered by the person: A (all yes both), B (not), D (not) -> 3 of 3.
    assert agreement["all_valid"] == {"rows": 3, "agree": 3, "share": 1.0, "kappa": 1.0}
    # Grades A, C, B, D as 4, 2, 3, 1 against 4.5, 2.0, 3.0, 1.0: the same order.
    assert agreement["overall"]["rows"] == 4 and agreement["overall"]["spearman"] == 1.0


def test_no_rated_rows_gives_counts_of_zero_and_no_shares() -> None:
    for latest in ({}, {"F": LATEST["F"]}, {"E": LATEST["E"]}):
        agreement = judge_agreement(latest, JUDGE)
        assert agreement["rows"] == 0
        for entry in (*agreement["questions"].values(), agreement["all_valid"]):
            assert entry["rows"] == 0 and entry["share"] is None and entry["kappa"] is None
        assert agreement["overall"]["rows"] == 0 and agreement["overall"]["spearman"] is None


def test_a_judge_answer_that_is_missing_leaves_that_question_only() -> None:
    judge = {row("A"): Score(row("A"), 4.0, "j", {"valid_task": 0.8})}
    agreement = judge_agreement({"A": rated("A", True, True, True, "A")}, judge)
    assert agreement["questions"]["valid"]["rows"] == 1 and agreement["questions"]["input_ok"]["rows"] == 0
    assert agreement["all_valid"]["rows"] == 0 and agreement["overall"]["rows"] == 1


def test_ranks_share_the_mean_rank_of_ties() -> None:
    assert ranks([10, 30, 20, 30, 10]) == [1.5, 4.5, 3.0, 4.5, 1.5]


@pytest.mark.parametrize(
    ("xs", "ys", "rho"),
    [
        ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7], 8 / math.sqrt(95)),  # scipy.stats.spearmanr: 0.8207826816681233
        ([1, 2, 3], [3, 2, 1], -1.0),
        ([4, 3, 2, 1], [1.0, 4.5, 2.0, 3.0], -0.4),
    ],
)
def test_spearman_matches_the_rank_correlation_worked_by_hand(
    xs: list[float], ys: list[float], rho: float
) -> None:
    assert spearman(xs, ys) == round(rho, 4)


def test_spearman_is_undefined_for_fewer_than_two_rows_or_a_constant_side() -> None:
    assert spearman([], []) is None and spearman([3], [4.0]) is None
    assert spearman([4, 4, 4], [1.0, 2.0, 3.0]) is None
    with pytest.raises(ValueError):
        spearman([1, 2], [1.0])


def test_kappa_is_undefined_when_both_always_say_the_same_thing() -> None:
    assert cohen_kappa([(True, True), (True, True)]) is None
    assert cohen_kappa([(True, False), (False, True)]) == -1.0


def test_summary_carries_the_agreement_only_with_judge_scores_and_prints_it() -> None:
    assert summarize(LATEST)["agreement"] is None
    summary = summarize(LATEST, JUDGE)
    assert summary["agreement"]["rows"] == 4
    text = format_summary(summary)
    assert "agreement with the judge (judge.gguf), 4 rated row(s) scored:" in text
    assert "valid task          75.0%  on 4 rows (kappa 0.50)" in text
    assert "grade vs overall   Spearman 1.000 on 4 rows" in text
    assert "agreement" not in format_summary(summarize(LATEST))
    assert "—  on 0 rows" in format_summary(summarize({}, JUDGE))
