"""`selfinstruct select`: which rows are kept, in what order, and the folder the set is written to.

Each run here is made by hand (config.yaml, the kept triples, a score file), so the set each
option must give is known in advance. Bad input and the commands that read the folder
(finetune, export) are in test_select_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RunFactory
from fixtures.scored_run import files, make_scored_run, select, selected
from servers.scripted_answers import ScriptedModel
from test_exports_llamafactory import check_entry_matches_its_file

from selfinstruct.cli import main
from selfinstruct.config import build_config
from selfinstruct.filters.rouge import rouge_l_fmeasure, rouge_tokenize
from selfinstruct.prompts import FinetuneTemplates, load_prompt
from selfinstruct.quality.select import SelectOptions, top_quota
from selfinstruct.records import Triple
from selfinstruct.scores import Score, write_scores
from selfinstruct.seeds import load_seed_tasks
from selfinstruct.stages.prepare import finetune_data_from_triples, seed_triples


def t(n: int, instruction: str | None = None) -> Triple:
    return Triple(instruction or f"Task number {n}: spell the word {'x' * n}.", "", f"answer {n}")


def assert_funnel_adds_up(rows: dict[str, int]) -> None:
    assert rows["triples"] == sum(v for k, v in rows.items() if k != "triples")


# -- which rows ------------------------------------------------------------------------------


def test_top_takes_the_best_share_rounded_up_with_ties_in_file_order(tmp_path: Path) -> None:
    scores = [3.0, 5.0, 4.0, 4.0, 1.0, 4.0, 2.0, 2.0, 1.0, 3.0]
    run = make_scored_run(tmp_path / "run", [(t(n), s) for n, s in enumerate(scores)])
    entry = select(run, "--by", "judge", "--top", "25%")
    # 25% of 10 is 2.5 -> 3 rows: the 5, then the first two of the three 4s in the file.
    assert selected(run / "selections" / "judge-top25") == [t(1), t(2), t(3)]
    assert entry["rows"] == {"triples": 10, "unscored": 0, "beyond_top": 7, "selected": 3}
    assert (entry["by"], entry["top"], entry["min_score"], entry["diverse"]) == ("judge", 25.0, None, None)
    assert entry["scorer"] == "scorer.gguf" and entry["source"] == str(run.resolve())


def test_top_accepts_a_plain_number_as_a_percentage(tmp_path: Path) -> None:
    run = make_scored_run(tmp_path / "run", [(t(n), float(n)) for n in range(4)])
    select(run, "--by", "judge", "--top", "50")
    assert selected(run / "selections" / "judge-top50") == [t(2), t(3)]


def test_the_quota_is_exact_arithmetic_rounded_up() -> None:
    assert top_quota(10, 30) == 3  # not 4 from 10/100*30 = 3.0000000000000004
    assert top_quota(33.3, 1000) == 333
    assert top_quota(0.1, 5) == 1  # a small set still gives a row
    assert top_quota(100, 7) == 7


def test_min_score_keeps_every_row_at_or_above_it_and_counts_the_unscored(tmp_path: Path) -> None:
    scores = [4.0, 3.9, None, 5.0, 4.5, None, 1.0]
    run = make_scored_run(tmp_path / "run", [(t(n), s) for n, s in enumerate(scores)])
    entry = select(run, "--by", "judge", "--min-score", "4")
    assert selected(run / "selections" / "judge-min4") == [t(0), t(3), t(4)]  # file order
    assert entry["rows"] == {"triples": 7, "unscored": 2, "below_min_score": 2, "selected": 3}


def test_ifd_at_or_above_1_is_dropped_but_counts_in_the_share_of_top(tmp_path: Path) -> None:
    scores = [0.5, 1.0, 0.9, 1.4, 0.7, 0.2]
    run = make_scored_run(tmp_path / "run", [(t(n), s) for n, s in enumerate(scores)], method="ifd")
    entry = select(run, "--by", "ifd", "--top", "50%")
    # 50% of the 6 scored rows is 3: the three highest IFDs below 1.
    assert selected(run / "selections" / "ifd-top50") == [t(0), t(2), t(4)]
    assert entry["rows"] == {"triples": 6, "unscored": 0, "ifd_at_least_1": 2, "beyond_top": 1, "selected": 3}
    entry = select(run, "--by", "ifd", "--min-score", "0", "--out", str(tmp_path / "all"))
    assert selected(tmp_path / "all") == [t(0), t(2), t(4), t(5)]
    assert entry["rows"]["ifd_at_least_1"] == 2


SEA = "Write a short poem about the sea"
SEA_AGAIN = "Write a short poem about the sea at night"
FRENCH = "Translate the sentence into French"
SUM = "Add up the numbers in the list"


def test_diverse_keeps_a_row_only_if_unlike_every_row_kept_before(tmp_path: Path) -> None:
    assert rouge_l_fmeasure(rouge_tokenize(SEA), rouge_tokenize(SEA_AGAIN)) > 0.8  # hand-made: similar
    rows = [(t(0, SUM), 3.0), (t(1, SEA_AGAIN), 4.5), (t(2, FRENCH), 4.0), (t(3, SEA), 5.0)]
    run = make_scored_run(tmp_path / "run", rows)
    entry = select(run, "--by", "judge", "--top", "50%", "--diverse", "0.7")
    # Best first: SEA kept, SEA_AGAIN too like it, FRENCH kept -> the quota of 2 is filled; SUM not reached.
    assert selected(run / "selections" / "judge-top50-diverse0.7") == [t(2, FRENCH), t(3, SEA)]
    assert entry["rows"] == {"triples": 4, "unscored": 0, "beyond_top": 1, "too_similar": 1, "selected": 2}
    assert entry["diverse"] == 0.7
    select(run, "--by", "judge", "--top", "50%", "--out", str(tmp_path / "plain"))
    assert selected(tmp_path / "plain") == [t(1, SEA_AGAIN), t(3, SEA)]  # without --diverse


def test_diverse_keeps_a_row_exactly_at_tau_and_compares_only_with_rows_kept(tmp_path: Path) -> None:
    # ROUGE-L of rows 0 and 1: 0.5 exactly; of 1 and 2: 0.75; of 0 and 2: 0.25.
    rows = [
        (t(0, "alpha beta gamma delta"), 3.0),
        (t(1, "alpha beta omega sigma"), 2.0),
        (t(2, "kappa beta omega sigma"), 1.0),
    ]
    run = make_scored_run(tmp_path / "run", rows)
    select(run, "--by", "judge", "--min-score", "0", "--diverse", "0.5", "--out", str(tmp_path / "at"))
    assert selected(tmp_path / "at") == [rows[0][0], rows[1][0]]  # 0.5 is at most 0.5; row 2 is like row 1
    entry = select(
        run, "--by", "judge", "--min-score", "0", "--diverse", "0.49", "--out", str(tmp_path / "u")
    )
    # Row 1 is dropped, so row 2 is compared with row 0 alone, not with the dropped row 1.
    assert selected(tmp_path / "u") == [rows[0][0], rows[2][0]]
    assert entry["rows"]["too_similar"] == 1


def test_diverse_keeps_one_instance_of_an_instruction_its_best(tmp_path: Path) -> None:
    same = [Triple(SEA, "", "Waves."), Triple(SEA, "", "Salt and foam."), Triple(FRENCH, "Hi", "Salut")]
    run = make_scored_run(tmp_path / "run", list(zip(same, [2.0, 4.0, 1.0], strict=True)))
    entry = select(run, "--by", "judge", "--min-score", "0", "--diverse", "0.9")
    assert selected(run / "selections" / "judge-min0-diverse0.9") == same[1:]
    assert_funnel_adds_up(entry["rows"])


def test_default_folder_names_say_the_settings() -> None:
    assert SelectOptions("ifd", top=25).folder_name() == "ifd-top25"
    assert SelectOptions("judge", min_score=4.5).folder_name() == "judge-min4.5"
    assert SelectOptions("ifd", top=12.5, diverse=0.7).folder_name() == "ifd-top12.5-diverse0.7"


# -- the folder ------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path) -> Path:
    rows = [
        (Triple(f"Instruction {n}: {w}", "an input" if n % 2 else "", f"out {n}"), n / 10)
        for n, w in enumerate(["sort", "count", "name", "list", "spell", "rhyme", "sum", "join"])
    ]
    return make_scored_run(tmp_path / "demo", rows, method="ifd")


def test_the_folder_holds_what_prepare_would_write_for_the_chosen_triples(run: Path) -> None:
    entry = select(run, "--by", "ifd", "--top", "50%")
    folder = run / "selections" / "ifd-top50"
    chosen = selected(folder)
    assert [c.output for c in chosen] == ["out 4", "out 5", "out 6", "out 7"]
    config = build_config(config_file=run / "config.yaml")
    templates = load_prompt("finetune_templates", "finetune_templates.yaml", FinetuneTemplates)
    expected = finetune_data_from_triples(chosen, [], config, templates)
    data = folder / "finetuning_data"
    lines = (data / f"gpt3_finetuning_data_{len(expected.rows)}.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == expected.rows
    alpaca = json.loads((data / "alpaca_data.json").read_text("utf-8"))
    assert [Triple.from_json(r) for r in alpaca] == chosen
    assert (folder / "config.yaml").read_text("utf-8") == (run / "config.yaml").read_text("utf-8")
    assert entry["training_triples"] == 4 and entry["finetuning_rows"] == len(expected.rows)
    assert sorted(p.name for p in data.iterdir()) == sorted(
        [
            "all_generated_instances.jsonl",
            f"gpt3_finetuning_data_{len(expected.rows)}.jsonl",
            "alpaca_data.json",
            "sharegpt.jsonl",
            "openai_messages.jsonl",
            "dataset_info.json",
        ]
    )


def test_every_file_loads_in_datasets_as_dataset_info_describes_it(run: Path, tmp_path: Path) -> None:
    import datasets

    select(run, "--by", "ifd", "--top", "50%")
    data = run / "selections" / "ifd-top50" / "finetuning_data"
    info = json.loads((data / "dataset_info.json").read_text("utf-8"))
    assert sorted(info) == [f"selfinstruct_ifd-top50_{s}" for s in ("alpaca", "openai", "sharegpt")]
    chosen = selected(data.parent)
    for entry in info.values():
        check_entry_matches_its_file(data, entry)
        loaded = datasets.load_dataset(
            "json", data_files=str(data / entry["file_name"]), cache_dir=str(tmp_path / "hf-cache")
        )["train"]
        assert len(loaded) == len(chosen)
        if entry["formatting"] == "alpaca":
            assert [Triple.from_json(r) for r in loaded.to_list()] == chosen
        else:
            messages = [row[entry["columns"]["messages"]] for row in loaded.to_list()]
            assert [m[-1][entry["tags"]["content_tag"]] for m in messages] == [c.output for c in chosen]


def test_seed_tasks_are_added_when_asked_and_left_out_when_not(tmp_path: Path) -> None:
    rows = [(t(n), float(n)) for n in range(4)]
    run = make_scored_run(tmp_path / "run", rows, finetune_data={"include_seed_tasks": True})
    seeds = seed_triples(load_seed_tasks(None))
    entry = select(run, "--by", "judge", "--top", "50%", "--out", str(tmp_path / "with"))
    alpaca = json.loads((tmp_path / "with" / "finetuning_data" / "alpaca_data.json").read_text("utf-8"))
    assert [Triple.from_json(r) for r in alpaca] == [t(2), t(3), *seeds]  # as the run's config says
    assert selected(tmp_path / "with") == [t(2), t(3)]  # the generated rows only, as prepare writes it
    assert entry["include_seed_tasks"] is True and entry["training_triples"] == 2 + len(seeds)
    entry = select(run, "--by", "judge", "--top", "50%", "--no-seed-tasks", "--out", str(tmp_path / "alone"))
    assert entry["training_triples"] == 2
    config = build_config(config_file=tmp_path / "alone" / "config.yaml")
    assert config.finetune_data.include_seed_tasks is False  # what `finetune` and `export hf` read


def test_the_same_selection_twice_gives_identical_files(run: Path, tmp_path: Path) -> None:
    flags = ("--by", "ifd", "--top", "75%", "--diverse", "0.6", "--include-seed-tasks")
    select(run, *flags, "--out", str(tmp_path / "a" / "sel"))
    select(run, *flags, "--out", str(tmp_path / "b" / "sel"))
    first = files(tmp_path / "a" / "sel")
    assert first == files(tmp_path / "b" / "sel")
    select(run, *flags, "--out", str(tmp_path / "a" / "sel"))  # again into the earlier selection
    assert files(tmp_path / "a" / "sel") == first


def test_a_new_selection_replaces_an_earlier_one_in_the_same_folder(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sel"
    select(run, "--by", "ifd", "--top", "50%", "--out", str(out))
    (out / "finetuning_data" / "hf_dataset").mkdir()  # an export of the earlier rows: goes with them
    (out / "finetune").mkdir()  # not select's: stays
    entry = select(run, "--by", "ifd", "--top", "25%", "--out", str(out))
    assert entry["top"] == 25.0 and len(selected(out)) == 2
    assert not (out / "finetuning_data" / "hf_dataset").exists() and (out / "finetune").is_dir()
    assert len(list((out / "finetuning_data").glob("gpt3_finetuning_data_*.jsonl"))) == 1
    assert not list(out.glob(".*"))  # no building or old folder left behind


def test_a_failed_write_leaves_no_folder_and_an_earlier_selection_as_it_was(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sel"
    select(run, "--by", "ifd", "--top", "50%", "--out", str(out))
    before = files(out)

    def disk_full(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("selfinstruct.quality.selection_folder.write_exports", disk_full)
    with pytest.raises(OSError):
        main(["select", str(run), "--by", "ifd", "--top", "25%", "--out", str(out)])
    assert files(out) == before and not list(out.glob(".*"))
    with pytest.raises(OSError):
        main(["select", str(run), "--by", "ifd", "--top", "25%"])
    assert not (run / "selections").exists()  # made by that call, so removed with it


def test_a_pipeline_run_with_every_other_row_scored(tmp_path: Path, make_run: RunFactory) -> None:
    out = tmp_path / "run"
    make_run(out, ScriptedModel()).run_all()
    kept = selected(out)  # the run's own all_generated_instances.jsonl
    write_scores(out, "ifd", (Score(r, 0.01 * n, "gpt2") for n, r in enumerate(kept) if n % 2 == 0))
    entry = select(out, "--by", "ifd", "--top", "100%", "--diverse", "1")
    assert selected(out / "selections" / "ifd-top100-diverse1") == kept[::2]
    assert entry["rows"] == {
        "triples": len(kept),
        "unscored": len(kept) // 2,
        "ifd_at_least_1": 0,
        "beyond_top": 0,
        "too_similar": 0,
        "selected": len(kept[::2]),
    }
