"""benchmarks/loop_results.py: the loop's seeds table and per-category changes, from hand-made rows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from loop_results import category_table, seed_summary, seeds_table


def scored(rouge: float, em: float, **categories: float) -> dict[str, Any]:
    return {
        "rougeL": rouge, "rougeL_pooled": rouge, "exact_match": em, "exact_match_pooled": em,
        "categories": categories,
    }  # fmt: skip


def test_seed_summary_is_the_mean_and_sample_deviation_of_each_metric() -> None:
    summary = seed_summary(
        {"seeds": [scored(30, 10), scored(32, 12), scored(34, 14)], "best": [scored(35, 15)]}, [42, 43, 44]
    )
    assert summary["seeds"]["seeds"] == [42, 43, 44] and summary["seeds"]["runs"] == 3
    assert summary["seeds"]["rougeL"]["mean"] == pytest.approx(32.0)
    assert summary["seeds"]["rougeL"]["sd"] == pytest.approx(2.0)  # sample deviation (n - 1)
    assert summary["seeds"]["exact_match"]["values"] == [10, 12, 14]
    assert summary["best"]["runs"] == 1 and summary["best"]["rougeL"]["sd"] == 0.0


@pytest.mark.parametrize(
    ("best", "verdict"), [([35.0, 36.0, 37.0], "reaches"), ([33.0, 34.0, 35.0], "does not reach")]
)
def test_the_seeds_table_says_whether_the_gap_reaches_three_points(best: list[float], verdict: str) -> None:
    summary = seed_summary(
        {
            "seeds": [scored(v, 0) for v in (30.0, 32.0, 34.0)],
            "seeds+ifd-top10": [scored(v, 0) for v in best],
        },
        [42, 43, 44],
    )
    text = "\n".join(seeds_table(summary))
    assert "| seeds | 3 | 32.00 ± 2.00 |" in text
    gap = sum(best) / 3 - 32.0
    assert f"seeds+ifd-top10 - control: {gap:+.2f} ROUGE-L" in text
    assert f"the issue's goal of +3 {verdict} it" in text


def test_each_category_is_shown_as_a_change_from_the_control() -> None:
    rows = [
        {"model": "Gemma 3 270M base", **scored(10, 0, qa=5.0, tagging=20.0)},
        {"model": "+ LoRA (seeds)", **scored(30, 0, qa=40.0, tagging=50.0)},
        {"model": "+ LoRA (seeds+ifd-top10)", **scored(31, 0, qa=45.5, tagging=48.0)},
    ]
    lines = category_table(rows)
    assert "| category | control | Gemma 3 270M base | seeds+ifd-top10 |" in lines
    assert "| qa | 40.0 | -35.0 | +5.5 |" in lines
    assert "| tagging | 50.0 | -30.0 | -2.0 |" in lines
    assert category_table(rows[:1]) == []  # no control, no table
