"""Verb-noun structure: hand-picked instructions parsed by the real spaCy pipeline, and the summary."""

from __future__ import annotations

import pytest

from selfinstruct.analysis.diversity import extract_verb_nouns, summarize_verb_nouns

CASES = {
    # instruction: (rule "closest", rule "reference")
    "Write a poem about the sea.": (("write", "poem"), ("write", "poem")),
    "Can you write a poem about the sea?": (("write", "poem"), ("write", "poem")),
    "Please suggest three names for a bakery.": (("suggest", "name"), ("suggest", "name")),
    "List the planets. Then sort them by size.": (("list", "planet"), ("list", "planet")),
    # A pronoun object is not a noun: the verb is found, the structure is not.
    "Tell me whether the sentence is positive.": (("tell", None), ("tell", None)),
    # No verb at all.
    "What is the capital of France?": ((None, None), (None, None)),
    # The ROOT is "is"; its first child is "task", so the reference's walk never reaches "write".
    "The task is to write a poem about autumn.": (("write", "poem"), (None, None)),
    "Is it possible to translate this sentence into French?": (("translate", "sentence"), (None, None)),
}


@pytest.mark.parametrize("rule", ["closest", "reference"])
def test_verb_and_direct_object_noun_of_hand_picked_instructions(rule: str) -> None:
    instructions = list(CASES)
    pairs = extract_verb_nouns(instructions, rule)  # type: ignore[arg-type]
    column = 0 if rule == "closest" else 1
    assert dict(zip(instructions, pairs, strict=True)) == {i: c[column] for i, c in CASES.items()}


def test_lemmas_are_lowercased_base_forms() -> None:
    assert extract_verb_nouns(["Writes poems.", "REWRITE the sentences below."]) == [
        ("write", "poem"),
        ("rewrite", "sentence"),
    ]


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown verb rule"):
        extract_verb_nouns(["Write a poem."], "nearest")  # type: ignore[arg-type]


def test_summary_takes_top_verbs_then_top_nouns_with_alphabetical_ties() -> None:
    pairs = (
        [("write", "poem")] * 3
        + [("write", "story")] * 2
        + [("write", "essay"), ("write", "letter"), ("write", "code")]
        + [("give", "example")] * 2
        + [("list", "fruit")] * 2
        + [("tell", None), (None, None)]
    )
    summary = summarize_verb_nouns(pairs, top_verbs=2, top_nouns=4)
    assert summary["instructions"] == 14
    assert summary["with_verb"] == 13
    assert summary["with_verb_noun"] == 12
    assert summary["share_verb_noun"] == round(12 / 14, 4)
    assert summary["distinct_verbs"] == 3
    assert summary["distinct_pairs"] == 7
    # "give" and "list" tie at 2: alphabetical order decides.
    assert [v["verb"] for v in summary["top"]] == ["write", "give"]
    assert summary["top"][0] == {
        "verb": "write",
        "count": 8,
        "nouns": [
            {"noun": "poem", "count": 3},
            {"noun": "story", "count": 2},
            {"noun": "code", "count": 1},
            {"noun": "essay", "count": 1},
        ],
    }


def test_summary_of_nothing() -> None:
    summary = summarize_verb_nouns([])
    assert summary["share_verb_noun"] is None and summary["top"] == []
