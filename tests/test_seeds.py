"""Seed files: the paper's loads; every kind of malformed line is reported as file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct.errors import SeedFileError
from selfinstruct.seeds import load_seed_tasks

GOOD = {
    "id": "t1",
    "name": "n",
    "instruction": "Do a thing well.",
    "instances": [{"input": "", "output": "x"}],
    "is_classification": False,
}


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_loads_the_papers_seed_file(shared_data: Path) -> None:
    tasks = load_seed_tasks(shared_data / "seed_tasks.jsonl")
    assert len(tasks) == 175
    assert sum(t.is_classification for t in tasks) == 26
    assert sum(not t.instances[0].input for t in tasks) == 50


def test_loads_the_packaged_seeds_by_default() -> None:
    tasks = load_seed_tasks()
    assert len(tasks) == 175
    assert len({t.id for t in tasks}) == 175


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "instruction"}), "missing field 'instruction'"),
        (json.dumps({**GOOD, "is_classification": "no"}), "'is_classification' must be true/false"),
        (json.dumps({**GOOD, "instances": []}), "'instances' is empty"),
        (json.dumps({**GOOD, "instances": [{"input": ""}]}), "missing field 'output'"),
        (json.dumps({**GOOD, "instances": [{"input": 1, "output": "x"}]}), "'input' must be a string"),
        (json.dumps({**GOOD, "instruction": "  "}), "'instruction' is empty"),
    ],
)
def test_rejects_a_malformed_line_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, json.dumps(GOOD), line)
    with pytest.raises(SeedFileError) as info:
        load_seed_tasks(path)
    assert f"{path}:2" in str(info.value)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_rejects_a_duplicate_id_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps(GOOD), json.dumps({**GOOD, "name": "other"}))
    with pytest.raises(SeedFileError, match=r":2: duplicate id 't1' \(first on line 1\)"):
        load_seed_tasks(path)


def test_rejects_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(SeedFileError, match="empty"):
        load_seed_tasks(write(tmp_path, ""))


def test_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SeedFileError, match="not found"):
        load_seed_tasks(tmp_path / "nope.jsonl")
