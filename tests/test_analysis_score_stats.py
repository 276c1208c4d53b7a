"""The report's numbers from score files: the judge's Table 2, the histograms, best and worst rows."""

from __future__ import annotations

import pytest
from fixtures.analysis_run import JUDGE_SCORES, TABLE2, TRIPLES

from selfinstruct.analysis.score_stats import (
    best_and_worst,
    histogram,
    histogram_bins,
    judge_says_yes,
    summarize_scores,
    table2_estimate,
)
from selfinstruct.records import Triple
from selfinstruct.scores import Score

QUESTIONS = ("valid_task", "appropriate_input", "correct_output")


def judged(overall: float, *answers: float | None, n: int = 0) -> Score:
    details = {q: a for q, a in zip(QUESTIONS, answers, strict=False) if a is not None}
    return Score(Triple(f"task {n}", "", f"answer {n}"), overall, "judge.gguf", details)


def fixture_scores() -> list[Score]:
    return [
        Score(Triple.from_json(t), j[0], "judge.gguf", dict(zip(QUESTIONS, j[1:], strict=True)))
        for t, j in zip(TRIPLES, JUDGE_SCORES, strict=True)
    ]


def test_table2_estimate_counts_yes_at_one_half_and_all_three_for_all_valid() -> None:
    table = table2_estimate(fixture_scores())
    assert {k: (v["yes"], v["rated"]) for k, v in table.items()} == TABLE2
    assert table["valid_task"]["share"] == 0.8 and table["all_valid"]["share"] == 0.4
    assert {k: v["paper"] for k, v in table.items()} == {
        "valid_task": 0.92,
        "appropriate_input": 0.79,
        "correct_output": 0.58,
        "all_valid": 0.54,
    }


def test_a_question_the_judge_did_not_answer_is_left_out_of_its_share_and_of_all_valid() -> None:
    scores = [
        judged(4, 0.9, 0.9, 0.9, n=1),
        judged(2, 0.9, None, 0.1, n=2),
        judged(1, float("nan"), 0.2, 0.2, n=3),
    ]
    table = table2_estimate(scores)
    assert (table["valid_task"]["yes"], table["valid_task"]["rated"]) == (2, 2)
    assert (table["appropriate_input"]["yes"], table["appropriate_input"]["rated"]) == (1, 2)
    assert (table["all_valid"]["yes"], table["all_valid"]["rated"]) == (1, 1)
    assert judge_says_yes(judged(3, 0.5), "valid_task") is True
    assert judge_says_yes(judged(3, 0.4999), "valid_task") is False


def test_table2_of_no_rows_has_no_shares() -> None:
    table = table2_estimate([])
    assert all(v["share"] is None and v["rated"] == 0 for v in table.values())


def test_best_is_highest_first_worst_lowest_first_and_ties_keep_file_order() -> None:
    scores = [judged(v, n=i) for i, v in enumerate([3.0, 5.0, 1.0, 5.0, 2.0, 1.0, 4.0])]
    best, worst = best_and_worst(scores, n=3)
    assert [(s.score, s.triple.instruction) for s in best] == [
        (5.0, "task 1"),
        (5.0, "task 3"),
        (4.0, "task 6"),
    ]
    assert [(s.score, s.triple.instruction) for s in worst] == [
        (1.0, "task 2"),
        (1.0, "task 5"),
        (2.0, "task 4"),
    ]
    assert best_and_worst([], n=3) == ([], [])


def test_histogram_folds_values_outside_into_the_end_bins() -> None:
    counts = histogram([-1.0, 0.0, 0.24, 0.25, 0.99, 1.0, 7.0, float("nan")], 0.0, 1.0, 4)["counts"]
    assert counts == [3, 1, 0, 3]


def test_judge_histogram_is_its_scale_in_quarters_and_ifd_keeps_one_in_view() -> None:
    assert histogram_bins("judge", [2.0, 9.0]) == (1.0, 5.0, 16)
    assert histogram_bins("ifd", [0.2, 0.4]) == (0.0, 1.5, 30)
    # The long tail past the 99th percentile is folded, not stretched over.
    assert histogram_bins("ifd", [0.5] * 98 + [40.0, 2.31]) == (0.0, 2.4, 30)


def test_summary_of_a_method_counts_unscored_rows_and_ifd_at_least_one() -> None:
    rows = [Triple.from_json(t) for t in TRIPLES]
    ifd = {t: Score(t, v, "gpt2.gguf") for t, v in zip(rows[:4], [0.5, 1.2, 0.3, 1.0], strict=True)}
    summary = summarize_scores("ifd", ifd, rows)
    assert summary["rows"] == 4 and summary["unscored"] == 1 and summary["at_least_one"] == 2
    assert summary["scorers"] == ["gpt2.gguf"]
    assert (summary["min"], summary["median"], summary["max"], summary["mean"]) == (0.3, 0.75, 1.2, 0.75)
    assert [r["score"] for r in summary["best"]] == [0.5, 0.3]  # below 1 only, as select takes them
    assert summary["best"][0] == {**rows[0].to_json(), "score": 0.5}
    assert [r["score"] for r in summary["worst"]] == [0.3, 0.5, 1.0, 1.2]
    assert sum(summary["histogram"]["counts"]) == 4 and "table2" not in summary


@pytest.mark.parametrize("triples", [None, []])
def test_summary_of_the_judge_has_table2_and_no_unscored_count_without_triples(
    triples: list[Triple] | None,
) -> None:
    scores = {s.triple: s for s in fixture_scores()}
    summary = summarize_scores("judge", scores, triples)
    assert summary["unscored"] == (None if triples is None else 0)
    assert summary["table2"]["all_valid"]["yes"] == 2 and "at_least_one" not in summary
