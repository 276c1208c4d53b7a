"""Overlap with the seeds: the highest ROUGE-L equals rouge-score's, and the histogram bins."""

from __future__ import annotations

import pytest
from fixtures.analysis_run import CAPITAL, POEM, SEEDS, SENTIMENT, STORY
from rouge_score import rouge_scorer

from selfinstruct.analysis.overlap import histogram, max_overlap_with_seeds, summarize_overlap


def test_highest_rouge_l_matches_rouge_score_exactly() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    instructions = [POEM, SENTIMENT, CAPITAL, STORY, "Completely unrelated words here.", "!!!"]
    overlaps = max_overlap_with_seeds(instructions, SEEDS)
    for overlap in overlaps:
        expected = {seed: scorer.score(seed, overlap.instruction)["rougeL"].fmeasure for seed in SEEDS}
        assert overlap.score == max(expected.values())
        if overlap.score > 0:
            assert expected[overlap.closest_seed] == overlap.score
    # By hand: "write a poem about the" is the LCS of 6-token texts: F = 5/6.
    assert overlaps[0].score == pytest.approx(5 / 6)
    assert overlaps[0].closest_seed == "Write a poem about the ocean."
    assert overlaps[-1].score == 0.0


def test_histogram_bins_are_twentieths_with_one_in_the_last_bin() -> None:
    counts = histogram([0.0, 0.049, 0.05, 0.5, 0.99, 1.0])
    assert len(counts) == 20
    assert counts[0] == 2 and counts[1] == 1 and counts[10] == 1 and counts[19] == 2
    assert sum(counts) == 6


def test_summary_lists_the_closest_instructions_first() -> None:
    summary = summarize_overlap(max_overlap_with_seeds([STORY, POEM, CAPITAL], SEEDS), n_examples=2)
    assert summary["instructions"] == 3
    assert [c["instruction"] for c in summary["closest"]] == [POEM, CAPITAL]
    assert summary["max"] == pytest.approx(5 / 6)
    assert sum(summary["histogram"]) == 3
