"""`selfinstruct analyze`: the report files, and one clear line for a directory it cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.analysis_run import POEM, SEEDS, TABLE1, TABLE2, make_run, write_jsonl, write_score_files

from selfinstruct.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_analyze_writes_the_page_and_the_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    code, err = run_cli(capsys, "analyze", str(run), "--no-progress")
    assert code == 0
    assert f"{run}/report/index.html" in err
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["table1"] == TABLE1
    assert report["funnel"]["bootstrap"]["generated"] == 10
    assert report["diversity"]["instructions"] == 4
    # Write/poem, classify/sentiment, write/story; "What is ...?" has no verb.
    assert report["diversity"]["with_verb_noun"] == 3
    assert report["diversity"]["top"][0] == {
        "verb": "write",
        "count": 2,
        "nouns": [{"noun": "poem", "count": 1}, {"noun": "story", "count": 1}],
    }
    assert report["overlap"]["closest"][0]["instruction"] == POEM
    assert report["overlap"]["closest"][0]["seed"] == SEEDS[0]
    assert report["lengths"]["output"]["count"] == 5
    page = (run / "report" / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 3
    assert "scores" not in report and "Row scores" not in page  # not scored: the report of before


def test_analyze_of_a_scored_run_adds_the_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    write_score_files(run)
    assert run_cli(capsys, "analyze", str(run), "--no-progress")[0] == 0
    report = json.loads((run / "report" / "report.json").read_text())
    table2 = report["scores"]["judge"]["table2"]
    assert {k: (v["yes"], v["rated"]) for k, v in table2.items()} == TABLE2
    assert report["scores"]["judge"]["scorers"] == ["SmolLM2-135M-judge.gguf"]
    assert [r["score"] for r in report["scores"]["ifd"]["best"]] == [0.9, 0.5, 0.3]  # below 1 only
    assert [r["score"] for r in report["scores"]["judge"]["worst"]] == [1.5, 2.0, 3.0, 4.5, 5.0]
    page = (run / "report" / "index.html").read_text()
    assert "<h2>Row scores</h2>" in page and page.count("data:image/png;base64,") == 5


def test_malformed_score_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    write_jsonl(
        run / "finetuning_data" / "scores_judge.jsonl", [{"instruction": "x", "input": "", "output": "y"}]
    )
    code, err = run_cli(capsys, "analyze", str(run), "--no-progress")
    assert_one_line_error(code, err, "scores_judge.jsonl:1")
    assert not (run / "report").exists()


def test_reference_rule_can_be_chosen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    assert run_cli(capsys, "analyze", str(run), "--verb-rule", "reference")[0] == 0
    diversity = json.loads((run / "report" / "report.json").read_text())["diversity"]
    # "The task is to write a short story." is lost by the reference's first-child walk.
    assert diversity["rule"] == "reference" and diversity["with_verb_noun"] == 2


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("selfinstruct: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_directory_without_instruction_files_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    assert_one_line_error(*run_cli(capsys, "analyze", str(tmp_path)), str(tmp_path), "no run data here")
    assert not (tmp_path / "report").exists()


def test_missing_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run_cli(capsys, "analyze", str(tmp_path / "nope")), "not a directory")


def test_malformed_jsonl_is_one_line_with_path_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path)
    path = run / "finetuning_data" / "all_generated_instances.jsonl"
    path.write_text(path.read_text() + '{"instruction": "x", "output": \n')
    assert_one_line_error(*run_cli(capsys, "analyze", str(run)), f"{path}:6:")
    assert not (run / "report").exists()


def test_missing_seed_file_of_the_run_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    write_jsonl(run / "machine_generated_instructions.jsonl", [{"instruction": POEM}])
    (run / "config.yaml").write_text("seed_tasks: /nowhere/seeds.jsonl\n")
    assert_one_line_error(*run_cli(capsys, "analyze", str(run)), "/nowhere/seeds.jsonl")
