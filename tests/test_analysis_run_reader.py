"""Reading run directories: this project's layout, the reference's, partial runs, broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.analysis_run import CAPITAL, POEM, SEEDS, SENTIMENT, STORY, make_run, write_jsonl

from selfinstruct.analysis.run_reader import read_run, read_triples
from selfinstruct.errors import InputFileError, SeedFileError
from selfinstruct.records import Triple
from selfinstruct.seeds import load_seed_tasks


def test_reads_every_stage_of_a_full_run(tmp_path: Path) -> None:
    data = read_run(make_run(tmp_path))
    assert data.instructions == [POEM, SENTIMENT, CAPITAL, STORY]
    assert data.classification == {POEM: False, SENTIMENT: True, CAPITAL: False, STORY: False}
    assert data.triples is not None and len(data.triples) == 5
    assert data.triples[2] == Triple(SENTIMENT, "I loved this film.", "positive")
    assert data.sources["instances"] == "finetuning_data/all_generated_instances.jsonl"
    assert data.sources["classification"] == "is_clf_or_not_test-model_template_1.jsonl"
    assert data.summary["funnel"]["bootstrap"]["accepted"] == 4


def test_compares_with_the_seeds_named_in_the_run_config(tmp_path: Path) -> None:
    assert read_run(make_run(tmp_path)).seed_instructions == SEEDS


def test_a_directory_without_config_uses_the_packaged_seeds(tmp_path: Path) -> None:
    data = read_run(make_run(tmp_path, with_config=False))
    assert data.seed_instructions == [t.instruction for t in load_seed_tasks()]
    assert data.sources["seeds"] == "packaged seed tasks"


def test_seed_tasks_argument_overrides_the_config(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    other = tmp_path / "other_seeds.jsonl"
    seed = {"id": "o", "name": "o", "instruction": "Sort the numbers.", "is_classification": False}
    write_jsonl(other, [seed | {"instances": [{"input": "3 1 2", "output": "1 2 3"}]}])
    assert read_run(run, seed_tasks=other).seed_instructions == ["Sort the numbers."]
    with pytest.raises(SeedFileError, match=r"missing\.jsonl: seed file not found"):
        read_run(run, seed_tasks=tmp_path / "missing.jsonl")


def test_reference_layout_with_raw_stage3_instances_is_parsed(tmp_path: Path) -> None:
    # The reference's batch dir after step 3: raw model text, no config, no finetuning_data.
    run = tmp_path / "batch"
    write_jsonl(
        run / "machine_generated_instructions.jsonl", [{"instruction": POEM}, {"instruction": SENTIMENT}]
    )
    write_jsonl(
        run / "machine_generated_instances.jsonl",
        [
            {"instruction": POEM, "raw_instances": "Output: The tide comes in.", "is_classification": " No"},
            {
                "instruction": SENTIMENT,
                "raw_instances": "Class label: positive\nReview: Great.\nClass label: negative\nReview: Bad.",
                "is_classification": " Yes",
            },
        ],
    )
    data = read_run(run)
    assert data.triples == [
        Triple(POEM, "", "The tide comes in."),
        Triple(SENTIMENT, "Review: Great.", "positive"),
        Triple(SENTIMENT, "Review: Bad.", "negative"),
    ]
    assert data.classification == {POEM: False, SENTIMENT: True}
    assert "not yet filtered" in data.sources["instances"]


def test_stage1_alone_has_instructions_but_no_instances(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "machine_generated_instructions.jsonl", [{"instruction": POEM}])
    data = read_run(tmp_path)
    assert data.instructions == [POEM]
    assert data.triples is None
    assert data.classification == {}
    with pytest.raises(InputFileError, match="no instances yet"):
        read_triples(tmp_path)


def test_only_final_data_is_enough(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "finetuning_data" / "all_generated_instances.jsonl",
        [{"instruction": CAPITAL, "input": "", "output": "Paris"}],
    )
    data = read_run(tmp_path)
    assert data.instructions == [CAPITAL]
    assert data.triples == [Triple(CAPITAL, "", "Paris")]


def test_alpaca_one_stage_records_are_instances(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "machine_generated_instructions.jsonl",
        [{"instruction": CAPITAL, "input": "", "output": "Paris"}],
    )
    triples, source = read_triples(tmp_path)
    assert triples == [Triple(CAPITAL, "", "Paris")]
    assert "one-stage" in source


def test_directory_with_no_instruction_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(InputFileError, match="no run data here"):
        read_run(tmp_path)


def test_malformed_line_is_reported_as_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "machine_generated_instructions.jsonl"
    path.write_text(json.dumps({"instruction": POEM}) + "\n{not json\n")
    with pytest.raises(InputFileError, match=rf"{path}:2: not valid JSON"):
        read_run(tmp_path)


def test_record_without_an_instruction_is_reported_as_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "finetuning_data" / "all_generated_instances.jsonl"
    write_jsonl(path, [{"instruction": POEM, "output": "x"}, {"input": "", "output": "y"}])
    with pytest.raises(InputFileError, match=rf"{path}:2: expected a string field 'instruction'"):
        read_run(tmp_path)
