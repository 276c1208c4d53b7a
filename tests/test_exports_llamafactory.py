"""LLaMA-Factory's dataset_info.json: written by `prepare` and by `selfinstruct export llamafactory`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RunFactory
from servers.scripted_answers import ScriptedModel

from selfinstruct.cli import main
from selfinstruct.exports import write_exports
from selfinstruct.records import Triple

TRIPLES = [Triple("Add the numbers.", "2 and 3", "5"), Triple("Name a colour.", "", "Teal")]


def records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text("utf-8")
    return json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]


def check_entry_matches_its_file(folder: Path, entry: dict[str, Any]) -> None:
    """What LLaMA-Factory reads from an entry is really in the file it names."""
    rows = records(folder / entry["file_name"])
    assert rows
    columns = entry["columns"]
    if entry["formatting"] == "alpaca":
        assert set(columns) == {"prompt", "query", "response"}
        assert all(set(columns.values()) <= set(row) for row in rows)
        return
    assert entry["formatting"] == "sharegpt"
    tags = entry["tags"]
    for row in rows:
        messages = row[columns["messages"]]
        roles = [m[tags["role_tag"]] for m in messages]
        assert all(isinstance(m[tags["content_tag"]], str) for m in messages)
        turns = [r for r in roles if r != tags.get("system_tag")]
        assert turns == [tags["user_tag"], tags["assistant_tag"]]


def test_prepare_writes_an_entry_per_export_file(tmp_path: Path, make_run: RunFactory) -> None:
    out = tmp_path / "my run"
    make_run(out, ScriptedModel()).run_all()
    folder = out / "finetuning_data"
    info = json.loads((folder / "dataset_info.json").read_text("utf-8"))
    assert {name: entry["file_name"] for name, entry in info.items()} == {
        "selfinstruct_my_run_alpaca": "alpaca_data.json",
        "selfinstruct_my_run_sharegpt": "sharegpt.jsonl",
        "selfinstruct_my_run_openai": "openai_messages.jsonl",
    }
    for entry in info.values():
        check_entry_matches_its_file(folder, entry)


def test_the_openai_entry_reads_a_system_message_as_the_system_prompt(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "finetuning_data"
    write_exports(folder, TRIPLES, system="Be brief.")
    info = json.loads((folder / "dataset_info.json").read_text("utf-8"))
    entry = info["selfinstruct_run_openai"]
    assert entry["tags"]["system_tag"] == "system"
    check_entry_matches_its_file(folder, entry)


def test_export_llamafactory_writes_the_index_for_an_older_run(tmp_path: Path) -> None:
    folder = tmp_path / "old" / "finetuning_data"
    write_exports(folder, TRIPLES)
    (folder / "dataset_info.json").unlink()  # as a run prepared before the file existed
    (folder / "openai_messages.jsonl").unlink()
    assert main(["export", "llamafactory", str(tmp_path / "old")]) == 0
    info = json.loads((folder / "dataset_info.json").read_text("utf-8"))
    assert sorted(info) == ["selfinstruct_old_alpaca", "selfinstruct_old_sharegpt"]  # only what is there
    for entry in info.values():
        check_entry_matches_its_file(folder, entry)


def test_export_llamafactory_of_a_run_without_data_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "llamafactory", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"run `selfinstruct prepare --out {tmp_path}` first" in lines[0]
    assert list(tmp_path.iterdir()) == []
