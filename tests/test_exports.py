"""Exports: Alpaca JSON, ShareGPT and OpenAI messages carry the same triples."""

from __future__ import annotations

import json
from pathlib import Path

from selfinstruct.exports import write_exports
from selfinstruct.records import Triple

TRIPLES = [Triple("Add the numbers.", "2 and 3", "5"), Triple("Name a colour.", "", "Teal")]


def test_writes_three_formats_with_the_same_content(tmp_path: Path) -> None:
    paths = write_exports(tmp_path, TRIPLES)
    alpaca = json.loads(paths["alpaca"].read_text("utf-8"))
    assert alpaca == [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Name a colour.", "input": "", "output": "Teal"},
    ]
    share = [json.loads(line) for line in paths["sharegpt"].read_text("utf-8").splitlines()]
    assert share[0]["conversations"] == [
        {"from": "human", "value": "Add the numbers.\n\n2 and 3"},
        {"from": "gpt", "value": "5"},
    ]
    openai = [json.loads(line) for line in paths["openai"].read_text("utf-8").splitlines()]
    assert openai[1]["messages"] == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Teal"},
    ]
    assert all(m["content"] for row in openai for m in row["messages"])


def test_openai_validation_names_the_problem() -> None:
    from selfinstruct.exports import openai_record_problem

    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    assert openai_record_problem(good) is None
    assert "role" in str(openai_record_problem({"messages": [{"role": "bot", "content": "x"}]}))
    assert "empty content" in str(
        openai_record_problem(
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]}
        )
    )
    assert "last message" in str(openai_record_problem({"messages": [{"role": "user", "content": "Hi"}]}))


def test_openai_finetuning_file_holds_only_valid_examples(tmp_path: Path) -> None:
    from selfinstruct.exports import openai_record_problem, write_openai_finetuning_file

    written, skipped = write_openai_finetuning_file(
        tmp_path / "ft.jsonl", [*TRIPLES, Triple("Say nothing.", "", "")], system="Be brief."
    )
    assert (written, skipped) == (2, 1)
    rows = [json.loads(line) for line in (tmp_path / "ft.jsonl").read_text("utf-8").splitlines()]
    assert all(openai_record_problem(r) is None for r in rows)
    assert rows[0]["messages"][0] == {"role": "system", "content": "Be brief."}
