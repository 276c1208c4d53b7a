"""Parsing stage 3 text into instances, including malformed and truncated model output."""

from __future__ import annotations

from selfinstruct.parsing.completion import (
    parse_classification_instances,
    parse_generation_instances,
    parse_input_output,
)
from selfinstruct.records import Instance


def test_input_first_examples_are_split_into_pairs() -> None:
    raw = "Example 1\nList: [3, 1]\nOutput: [1, 3]\nExample 2\nList: [2, 0]\nOutput: [0, 2]"
    assert parse_generation_instances(raw, "stop") == [
        Instance("List: [3, 1]", "[1, 3]"),
        Instance("List: [2, 0]", "[0, 2]"),
    ]


def test_a_bare_output_is_one_instance_without_input() -> None:
    assert parse_generation_instances("Output: - tent\n- stove\n", "stop") == [
        Instance("", "- tent\n- stove")
    ]


def test_text_without_any_marker_gives_no_instances() -> None:
    assert parse_generation_instances("I am not sure what you mean.", "stop") == []
    assert parse_classification_instances("Positive\nSentence: fine", "stop") == []


def test_output_running_into_a_second_pair_is_cut() -> None:
    assert parse_input_output("Input: 2+2\nOutput: 4\nInput 2: 3+3") == Instance("2+2", "4")


def test_only_text_between_first_and_second_output_mark_is_kept() -> None:
    assert parse_input_output("x\nOutput: a\nOutput: b") == Instance("x", "a")


def test_truncated_generation_loses_its_last_instance() -> None:
    raw = "Example 1\nList: [3, 1]\nOutput: [1, 3]\nExample 2\nList: [2, 0]\nOutput: [0,"
    assert parse_generation_instances(raw, "length") == [Instance("List: [3, 1]", "[1, 3]")]


def test_output_first_labels_become_outputs_and_inputs_follow() -> None:
    raw = (
        " Positive\nSentence: What a day.\nClass label: Negative\nSentence: Awful.\nmore"
        "\nClass label: Neutral"
    )
    assert parse_classification_instances("Class label:" + raw, "stop") == [
        Instance("Sentence: What a day.", "Positive"),
        Instance("Sentence: Awful.\nmore", "Negative"),
        Instance("", "Neutral"),
    ]


def test_truncated_classification_loses_its_last_instance() -> None:
    raw = "Class label: Yes\nQuestion: Is ice cold?\nClass label: No\nQuestion: Is fi"
    assert parse_classification_instances(raw, "length") == [Instance("Question: Is ice cold?", "Yes")]
