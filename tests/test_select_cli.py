"""`selfinstruct select` on the command line: bad input is one line and writes nothing, and the
folder it writes is taken by `finetune` and `export` as a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.cli_errors import flag_error, one_line_error
from fixtures.scored_run import files, make_scored_run, select, selected
from servers.llama_server import cache_dir_for_tests

from selfinstruct.cli import main
from selfinstruct.records import Triple
from selfinstruct.train import sft_data

ROWS = [
    (Triple("Name the capital of the country.", "France", "Paris"), 0.4),
    (Triple("Give the opposite of the word.", "hot", "cold"), 0.9),
    (Triple("Add the two numbers.", "2 and 3", "5"), 0.6),
    (Triple("Say hello in Spanish.", "", "Hola"), 1.2),
    (Triple("Count the vowels in the word.", "banana", "3"), 0.7),
    (Triple("Spell the word backwards.", "stop", "pots"), None),
]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_scored_run(tmp_path / "demo", ROWS, method="ifd")


@pytest.fixture
def selection(run: Path) -> Path:
    select(run, "--by", "ifd", "--top", "60%")  # 3 of the 5 scored rows: 0.9, 0.7, 0.6
    return run / "selections" / "ifd-top60"


# -- bad input --------------------------------------------------------------------------------


def test_a_run_without_the_methods_scores_is_told_to_score_first(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, "select", str(run), "--by", "judge", "--top", "10%")
    assert f"run `selfinstruct score {run} --method judge` first" in line
    assert not (run / "selections").exists()


def test_a_run_without_kept_triples_is_told_to_prepare_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, "select", str(tmp_path), "--by", "ifd", "--top", "10%")
    assert f"run `selfinstruct prepare --out {tmp_path}` first" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0%", "0", "150%", "100.5", "abc", "nan", "=-5"])
def test_a_bad_percentage_is_refused(run: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    flag = "--top" + value if value.startswith("=") else "--top"
    argv = ["select", str(run), "--by", "ifd", flag] + ([] if value.startswith("=") else [value])
    line = flag_error(capsys, *argv)
    assert "argument --top" in line and "percentage above 0 and at most 100" in line
    assert not (run / "selections").exists()


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "x", "nan"])
def test_a_bad_tau_is_refused(run: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    line = flag_error(capsys, "select", str(run), "--by", "ifd", "--top", "10%", f"--diverse={value}")
    assert "argument --diverse" in line and "above 0 and at most 1" in line


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--by", "perplexity", "--top", "10%"], "invalid choice: 'perplexity'"),
        (["--by", "ifd"], "one of the arguments --top --min-score is required"),
        (["--by", "ifd", "--top", "10%", "--min-score", "0.5"], "not allowed with argument"),
        (["--by", "ifd", "--min-score", "inf"], "must be a number"),
        (["--by", "ifd", "--top", "10", "--include-seed-tasks", "--no-seed-tasks"], "not allowed with"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(
    run: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    assert needle in flag_error(capsys, "select", str(run), *flags)
    assert not (run / "selections").exists()


def test_a_selection_of_no_row_is_refused_and_writes_nothing(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, "select", str(run), "--by", "ifd", "--min-score", "0.95")
    assert (
        "no row selected (6 triples -> 1 unscored, 1 ifd_at_least_1, 4 below_min_score -> 0 selected)" in line
    )
    assert not (run / "selections").exists()


def test_a_non_empty_folder_that_is_not_a_selection_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    line = one_line_error(capsys, "select", str(run), "--by", "ifd", "--top", "10%", "--out", str(other))
    assert f"{other}: not empty and not an earlier selection" in line
    assert files(other) == {"todo.txt": b"mine"}
    line = one_line_error(capsys, "select", str(run), "--by", "ifd", "--top", "10%", "--out", str(run))
    assert "is the run itself" in line


def test_the_funnel_is_one_line_on_stderr(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["select", str(run), "--by", "ifd", "--top", "60%", "--diverse", "0.9"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "select: 6 triples -> 1 unscored, 1 ifd_at_least_1, 1 beyond_top, 0 too_similar -> 3 selected; "
        f"3 fine-tuning rows -> {run / 'selections' / 'ifd-top60-diverse0.9'}"
    ]


# -- the folder as a run, for finetune and export ------------------------------------------------


def test_finetune_finds_the_selected_rows_and_their_instructions(selection: Path) -> None:
    data_file = sft_data.find_data_file(selection)
    assert data_file.parent == selection / "finetuning_data"
    rows = sft_data.read_rows(data_file)
    known = sft_data.known_instructions(data_file)
    chosen = selected(selection)
    assert known == {t.instruction for t in chosen}
    assert sorted(sft_data.instruction_of(r["prompt"], known) for r in rows) == sorted(known)


def test_finetune_checks_its_flags_against_the_selection(
    selection: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, "finetune", str(selection), "--base", str(selection / "no-model"))
    assert "base model not found" in line  # past finding the data: the selection was taken as a run
    assert not (selection / "finetune").exists()


@pytest.mark.model
def test_finetune_trains_a_step_on_the_selection(
    selection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SELFINSTRUCT_CACHE_DIR", str(cache_dir_for_tests()))
    out = tmp_path / "ft"
    argv = ["finetune", str(selection), "--base", "embedded", "--out", str(out), "--no-progress"]
    assert main([*argv, "--steps", "1", "--batch-size", "2", "--max-length", "64"]) == 0
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    assert metrics["completed"] and metrics["step"] == 1
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    args = json.loads((out / "finetune_args.json").read_text("utf-8"))
    assert args["data_file"] == str(sft_data.find_data_file(selection))


def test_export_hf_loads_the_selected_rows_and_its_card_says_how_they_were_chosen(
    selection: Path, tmp_path: Path
) -> None:
    import datasets

    assert main(["export", "hf", str(selection)]) == 0
    folder = selection / "finetuning_data" / "hf_dataset"
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert [Triple.from_json(r) for r in loaded.to_list()] == selected(selection)
    card = (folder / "README.md").read_text("utf-8")
    assert "- Selected: the top 60% of the scored rows by IFD" in card and "from the run `demo`" in card
    assert "| rows selected by score (select) | 6 | 3 | beyond_top 1, ifd_at_least_1 1, unscored 1 |" in card
    assert "| training examples (this dataset) |  | 3 |  |" in card


def test_a_selection_with_the_seed_tasks_has_a_card_that_says_which_rows_people_wrote(run: Path) -> None:
    from selfinstruct.seeds import load_seed_tasks
    from selfinstruct.stages.prepare import seed_triples

    select(run, "--by", "ifd", "--top", "60%", "--include-seed-tasks")
    selection = run / "selections" / "ifd-top60"
    assert main(["export", "hf", str(selection)]) == 0
    card = (selection / "finetuning_data" / "hf_dataset" / "README.md").read_text("utf-8")
    k = len(seed_triples(load_seed_tasks(None)))
    n = 3 + k
    assert (
        f"the last {k} of the {n} rows (rows 4 to {n}) are the instances of the paper's 175 seed tasks, "
        "human-written seeds, not written by the model" in card
    )
    assert f"The 3 other rows (all but the last {k}, the seed tasks') were written by a model" in card


def test_export_llamafactory_rewrites_the_same_index_and_openai_exports_the_rows(selection: Path) -> None:
    data = selection / "finetuning_data"
    written = (data / "dataset_info.json").read_bytes()
    assert main(["export", "llamafactory", str(selection)]) == 0
    assert (data / "dataset_info.json").read_bytes() == written
    assert main(["export", "openai", str(selection)]) == 0
    lines = (data / "openai_finetune.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["messages"][-1]["content"] for line in lines] == [
        t.output for t in selected(selection)
    ]
