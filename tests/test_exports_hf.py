"""`selfinstruct export hf`: a dataset folder that `datasets` loads offline, with a card the Hub reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RunFactory
from servers.scripted_answers import ScriptedModel

from selfinstruct.cli import main
from selfinstruct.exports.dataset_card import size_category

DATA_FILE = "data/train-00000-of-00001.parquet"


@pytest.fixture
def run(tmp_path: Path, make_run: RunFactory) -> Path:
    """A run directory after `prepare`, made by the pipeline on the scripted model."""
    out = tmp_path / "demo run"
    make_run(out, ScriptedModel()).run_all()
    return out


def card_of(folder: Path) -> tuple[dict[str, Any], str]:
    text = (folder / "README.md").read_text("utf-8")
    assert text.startswith("---\n")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_the_folder_loads_offline_with_the_alpaca_files_rows(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", "hf", str(run)]) == 0
    folder = run / "finetuning_data" / "hf_dataset"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md",
        DATA_FILE,
    ]
    import datasets

    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    alpaca = json.loads((run / "finetuning_data" / "alpaca_data.json").read_text("utf-8"))
    assert list(loaded) == ["train"]
    assert loaded["train"].column_names == ["instruction", "input", "output"]
    assert loaded["train"].to_list() == alpaca and len(alpaca) > 0


def test_the_card_has_the_fields_the_hub_reads_and_the_runs_facts(run: Path) -> None:
    assert main(["export", "hf", str(run), "--license", "cc-by-4.0"]) == 0
    meta, body = card_of(run / "finetuning_data" / "hf_dataset")
    rows = len(json.loads((run / "finetuning_data" / "alpaca_data.json").read_text("utf-8")))
    assert meta["license"] == "cc-by-4.0"
    assert meta["language"] == ["en"] and meta["task_categories"] == ["text-generation"]
    assert {"self-instruct", "synthetic"} <= set(meta["tags"])
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}
    ]
    info = meta["dataset_info"]
    assert info["features"] == [{"name": c, "dtype": "string"} for c in ("instruction", "input", "output")]
    assert [(s["name"], s["num_examples"]) for s in info["splits"]] == [("train", rows)]
    summary = json.loads((run / "summary.json").read_text("utf-8"))
    assert "arXiv:2212.10560" in body and "`gemma-3-270m` (backend `embedded`)" in body
    accepted = summary["funnel"]["bootstrap"]["accepted"]
    assert f"| instructions (stage 1) | {summary['funnel']['bootstrap']['generated']} | {accepted} |" in body
    assert 'load_dataset("path/to/this/folder")' in body


def test_without_a_license_the_card_says_unknown_and_why(run: Path) -> None:
    assert main(["export", "hf", str(run)]) == 0
    meta, body = card_of(run / "finetuning_data" / "hf_dataset")
    assert meta["license"] == "unknown"
    assert "--license ID" in body


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (52_002, "10K<n<100K"), (10**9, "1B<n<10B")],
)
def test_size_category_is_the_hubs_bucket(rows: int, bucket: str) -> None:
    assert size_category(rows) == bucket


def test_a_second_export_replaces_the_first_whole(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    assert main(["export", "hf", str(run), "--out", str(out)]) == 0
    (out / "data" / "stale.parquet").write_bytes(b"old")
    assert main(["export", "hf", str(run), "--out", str(out), "--license", "mit"]) == 0
    assert sorted(p.name for p in out.rglob("*")) == ["README.md", "data", "train-00000-of-00001.parquet"]
    assert card_of(out)[0]["license"] == "mit"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no build leftovers


def test_a_folder_holding_other_files_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["export", "hf", str(run), "--out", str(out)]) == 2
    assert "holds other files than a dataset folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_run_without_data_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "finetuning_data").mkdir()
    assert main(["export", "hf", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"run `selfinstruct prepare --out {tmp_path}` first" in lines[0]
    assert list((tmp_path / "finetuning_data").iterdir()) == []


def test_a_malformed_summary_is_one_line_and_writes_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run / "summary.json").write_text("{not json", encoding="utf-8")
    assert main(["export", "hf", str(run)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "summary.json: not readable JSON" in lines[0]
    assert not (run / "finetuning_data" / "hf_dataset").exists()


def test_without_pyarrow_the_error_says_what_to_install(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    assert main(["export", "hf", str(run)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'selfinstruct[hf]'" in lines[0]
    assert not (run / "finetuning_data" / "hf_dataset").exists()


def test_a_license_that_is_not_an_id_is_refused_by_the_parser(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "hf", str(run), "--license", "all rights: reserved"])
    assert exit_.value.code == 2
    assert "is not a license id" in capsys.readouterr().err


def test_with_the_seed_tasks_the_card_says_which_rows_people_wrote(
    tmp_path: Path, make_run: RunFactory, shared_data: Path
) -> None:
    from selfinstruct.records import Triple
    from selfinstruct.seeds import load_seed_tasks
    from selfinstruct.stages.prepare import seed_triples

    out = tmp_path / "seeded"
    make_run(out, ScriptedModel(), finetune_data={"include_seed_tasks": True}).run_all()
    assert main(["export", "hf", str(out)]) == 0
    _, body = card_of(out / "finetuning_data" / "hf_dataset")
    rows = [
        Triple.from_json(r) for r in json.loads((out / "finetuning_data" / "alpaca_data.json").read_text())
    ]
    seeds = seed_triples(load_seed_tasks(shared_data / "seed_tasks.jsonl"))
    assert rows[-len(seeds) :] == seeds and len(rows) > len(seeds)  # the seed rows are the last ones
    n, k = len(rows), len(seeds)
    assert (
        f"the last {k} of the {n} rows (rows {n - k + 1} to {n}) are the instances of the seed tasks of "
        "`seed_tasks.jsonl`, human-written seeds, not written by the model" in body
    )
    assert f"The {n - k} other rows (all but the last {k}, the seed tasks') were written by a model" in body
    assert "Every output was written by a model" not in body


def test_without_the_seed_tasks_the_card_says_every_row_is_the_models(run: Path) -> None:
    assert main(["export", "hf", str(run)]) == 0
    _, body = card_of(run / "finetuning_data" / "hf_dataset")
    assert "seed tasks not included" in body
    assert "Every output was written by a model and none was checked by a person" in body
