"""SuperNI metrics against hand-computed cases (Tk-Instruct conventions)."""

from __future__ import annotations

import pytest

from selfinstruct.evaluate.metrics import (
    best_over_references,
    exact_match,
    mean_percent,
    normalize_answer,
    rouge_l,
)


def test_normalization_lowercases_strips_punctuation_and_collapses_spaces() -> None:
    assert normalize_answer("  The  Cat, sat!\n") == "the cat sat"


def test_normalization_keeps_articles() -> None:
    assert normalize_answer("A cat") == "a cat"
    assert exact_match("cat", "a cat") == 0.0


def test_exact_match_after_normalization() -> None:
    assert exact_match("Entailment.", "entailment") == 1.0
    assert exact_match("entail", "entailment") == 0.0


def test_rouge_l_hand_computed() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = the cat on the mat = 5 of 6 and 6 tokens.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("", "anything") == 0.0


def test_rouge_l_uses_the_porter_stemmer() -> None:
    # "running dogs" vs "run dog": stems match, so F = 1 (without stemming it would be 0).
    assert rouge_l("running dogs", "run dog") == pytest.approx(1.0)


def test_best_score_over_references_is_kept() -> None:
    em, rl = best_over_references("yes", ["no", "Yes."])
    assert (em, rl) == (1.0, 1.0)
    em, rl = best_over_references("the red house", ["a house", "the red car"])
    assert em == 0.0 and rl == pytest.approx(2 / 3)


def test_mean_is_a_percentage() -> None:
    assert mean_percent([1.0, 0.0, 0.5, 0.5]) == 50.0
    assert mean_percent([]) == 0.0
