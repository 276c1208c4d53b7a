"""Instruction rule filters: each rule rejects what it should, and can be switched off."""

from __future__ import annotations

import pytest

from selfinstruct.config import FilterConfig, build_config
from selfinstruct.filters.heuristics import check_instruction

FILTERS = build_config("selfinstruct-2022").filters


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Name three fruits", "too_short"),
        ("Name " + "many " * 150 + "fruits.", "too_long"),
        ("Describe the image in detail.", "blacklist"),
        ("Explain how to GO TO the station.", "blacklist"),
        ("Explain how to go\nto the station.", "blacklist"),
        ("Write a program that sorts numbers.", "forbidden_prefix"),
        ("- List four colours of the rainbow.", "punctuation_start"),
        ("Écris un poème sur la mer, s'il te plaît.", "non_ascii_start"),
    ],
)
def test_rejects_instruction_breaking_a_rule(text: str, reason: str) -> None:
    assert check_instruction(text, FILTERS) == reason


@pytest.mark.parametrize(
    "text",
    [
        "Name four fruits, please.",
        "Describe the imagery in this poem.",  # "imagery" is not the whole word "image"
        "Write a poem about programs.",
        "Explain why profiles matter.",
    ],
)
def test_keeps_instruction_passing_every_rule(text: str) -> None:
    assert check_instruction(text, FILTERS) is None


def test_a_switched_off_rule_no_longer_rejects() -> None:
    relaxed = FilterConfig(**{**FILTERS.model_dump(), "enabled": {"blacklist": False}})
    assert check_instruction("Describe the image in detail.", relaxed) is None
    assert check_instruction("Write a program that sorts numbers.", relaxed) == "forbidden_prefix"


def test_word_count_bounds_are_inclusive_as_the_reference() -> None:
    assert check_instruction("one two three four", FILTERS) is None  # > 3 words passes
    assert check_instruction(" ".join(["word"] * 150), FILTERS) is None  # <= 150 passes
