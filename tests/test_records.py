"""Records and their files: Triple from JSON, and one wording for a bad JSONL line everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct.dedup import dedup_file
from selfinstruct.errors import InputFileError, SeedFileError
from selfinstruct.records import Triple, iter_jsonl, json_object_line, write_jsonl
from selfinstruct.seeds import load_seed_tasks


def test_triple_from_json_takes_an_optional_input() -> None:
    assert Triple.from_json({"instruction": "I", "output": "O"}) == Triple("I", "", "O")
    assert Triple.from_json({"instruction": "I", "input": "x", "output": "O", "extra": 1}) == Triple(
        "I", "x", "O"
    )


def test_triple_from_json_strips_only_when_asked() -> None:
    record = {"instruction": " I \n", "input": "\tx ", "output": " O"}
    assert Triple.from_json(record) == Triple(" I \n", "\tx ", " O")
    assert Triple.from_json(record, strip=True) == Triple("I", "x", "O")


def test_triple_from_json_rejects_missing_and_non_string_fields() -> None:
    with pytest.raises(KeyError):
        Triple.from_json({"instruction": "I"})
    with pytest.raises(TypeError):
        Triple.from_json({"instruction": "I", "output": 3})


def test_triple_round_trips_through_json() -> None:
    triple = Triple("Name a colour.", "", "Blue.")
    assert Triple.from_json(triple.to_json()) == triple


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"text"', "expected a JSON object, got str"),
    ],
)
def test_a_bad_line_is_reported_in_the_same_words_by_every_reader(
    tmp_path: Path, line: str, message: str
) -> None:
    good = '{"id": "a", "name": "a", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}], "is_classification": false}'
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    expected = f"{path}:2: {message}"

    with pytest.raises(InputFileError) as run_file:
        list(iter_jsonl(path))
    with pytest.raises(SeedFileError) as seed_file:
        load_seed_tasks(path)
    with pytest.raises(InputFileError) as dedup_input:
        dedup_file(path, tmp_path / "out.jsonl", progress=False)
    assert str(run_file.value) == str(seed_file.value) == str(dedup_input.value) == expected


def test_json_object_line_raises_the_error_type_asked_for() -> None:
    with pytest.raises(SeedFileError, match=r"^f\.jsonl:7: not valid JSON"):
        json_object_line("{", "f.jsonl", 7, SeedFileError)
    assert json_object_line('{"a": 1}\n', "f.jsonl", 1) == {"a": 1}


def test_iter_jsonl_skips_blank_lines_and_numbers_lines_from_one(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"a": 1}])
    path.write_text(path.read_text() + "\n  \n" + '{"b": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"b": 2})]
