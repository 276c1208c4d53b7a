"""Table 1 and the length distributions, checked against counts made by hand."""

from __future__ import annotations

from pathlib import Path

from fixtures.analysis_run import CAPITAL, POEM, SENTIMENT, STORY, TABLE1, make_run

from selfinstruct.analysis.run_reader import read_run
from selfinstruct.analysis.stats import dataset_stats, length_distributions, summarize_lengths, word_count
from selfinstruct.records import Triple


def test_table1_of_the_hand_made_run(tmp_path: Path) -> None:
    data = read_run(make_run(tmp_path))
    stats = dataset_stats(data.instructions, data.classification, data.triples)
    assert stats.to_json() == TABLE1


def test_before_stage3_the_table_counts_stage1_instructions_and_has_no_instances() -> None:
    stats = dataset_stats([POEM, STORY], {POEM: False}, None)
    assert stats.instructions == 2
    assert stats.classification_instructions == 0
    assert stats.non_classification_instructions == 1
    assert stats.unknown_classification == 1
    assert stats.instances is None and stats.instances_with_empty_input is None
    assert stats.avg_output_words is None and stats.avg_input_words is None
    assert stats.avg_instruction_words == (6 + 8) / 2


def test_without_classification_answers_the_split_is_unknown() -> None:
    stats = dataset_stats([CAPITAL], {}, [Triple(CAPITAL, "", "Paris")])
    assert stats.classification_instructions is None
    assert stats.non_classification_instructions is None
    assert stats.unknown_classification == 1


def test_words_are_whitespace_separated() -> None:
    assert word_count("  Write a\tpoem\nabout it.  ") == 5
    assert word_count("") == 0


def test_length_distributions_skip_empty_inputs(tmp_path: Path) -> None:
    data = read_run(make_run(tmp_path))
    lengths = length_distributions(data.instructions, data.triples)
    assert lengths == {"instruction": [6, 7, 6], "input": [4, 6], "output": [6, 3, 1, 1, 1]}
    assert SENTIMENT in data.instructions


def test_length_summary_has_median_of_even_and_odd_lists() -> None:
    assert summarize_lengths([6, 3, 1, 1, 1]) == {"count": 5, "mean": 2.4, "median": 1, "max": 6}
    assert summarize_lengths([4, 6]) == {"count": 2, "mean": 5.0, "median": 5.0, "max": 6}
    assert summarize_lengths([]) == {"count": 0, "mean": None, "median": None, "max": None}
