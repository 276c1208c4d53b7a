"""The whole run directory on a scripted in-process model: files, funnel, exact resume.

The scripted model answers each stage's prompt deterministically from the request's seed,
so these tests pin the pipeline's own logic; tests/e2e_* run the same code on real models.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import RunFactory
from servers.scripted_answers import WORDS, ScriptedModel

from selfinstruct.config import build_config
from selfinstruct.errors import RequestsFailedError, RunFileError
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.pipeline import Run
from selfinstruct.rundir import BOOKKEEPING_FILES, INSTANCES_FILE, INSTRUCTIONS_FILE, SUMMARY_FILE


def snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in BOOKKEEPING_FILES
    }


class AlpacaModel(ScriptedModel):
    """Answers the alpaca-2023 prompt with two new tasks (tokens: words, as the scripted model)."""

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        rng = random.Random(request.params.seed)
        words = " ".join(rng.sample(WORDS, 6))
        other = " ".join(rng.sample(WORDS, 6))
        text = (
            f" Describe {words}.\n4. Input:\n<noinput>\n4. Output:\nIt is fine.\n###\n"
            f"5. Instruction: Sort {other} now.\n5. Input:\n{words}\n5. Output:\nsorted"
        )
        return Completion(text, "stop", len(request.prompt.split()), len(text.split()))


def test_run_writes_every_stage_file_and_the_funnel_adds_up(tmp_path: Path, make_run: RunFactory) -> None:
    run = make_run(tmp_path / "run", ScriptedModel())
    summary = run.run_all()
    out = tmp_path / "run"
    for name in (
        INSTRUCTIONS_FILE,
        "is_clf_or_not_gemma-3-270m_template_1.jsonl",
        INSTANCES_FILE,
        "finetuning_data/all_generated_instances.jsonl",
        "finetuning_data/alpaca_data.json",
        "finetuning_data/sharegpt.jsonl",
        "finetuning_data/openai_messages.jsonl",
        "finetuning_data/dataset_info.json",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    boot = summary["funnel"]["bootstrap"]
    assert boot["accepted"] == 12
    assert boot["generated"] == boot["accepted"] + sum(boot["rejected"].values())
    assert len((out / INSTRUCTIONS_FILE).read_text().splitlines()) == 12
    assert list(out.glob("finetuning_data/gpt3_finetuning_data_*.jsonl"))


def test_rerun_replays_stored_responses_without_calling_the_model(
    tmp_path: Path, make_run: RunFactory
) -> None:
    out = tmp_path / "run"
    first = make_run(out, ScriptedModel())
    first.run_all()
    before = snapshot(out)
    model = ScriptedModel()
    second = make_run(out, model)
    second.run_all()
    assert model.calls == 0
    assert snapshot(out) == before


def test_a_run_that_fails_midway_resumes_to_identical_output(tmp_path: Path, make_run: RunFactory) -> None:
    # Same directory name: dataset_info.json names its entries after the run directory.
    reference = tmp_path / "reference" / "run"
    make_run(reference, ScriptedModel(), n=20).run_all()

    out = tmp_path / "resumed" / "run"
    for fail_after in (4, 9, 15):
        with pytest.raises(RequestsFailedError):
            make_run(out, ScriptedModel(fail_after=fail_after), n=20).run_all()
    make_run(out, ScriptedModel(), n=20).run_all()
    assert snapshot(out) == snapshot(reference)


def test_transient_failures_are_retried_and_do_not_change_the_result(
    tmp_path: Path, make_run: RunFactory
) -> None:
    steady, flaky_out = tmp_path / "a" / "run", tmp_path / "b" / "run"  # one run name (dataset_info.json)
    make_run(steady, ScriptedModel(), n=15).run_all()
    flaky = ScriptedModel(transient_every=3)
    make_run(flaky_out, flaky, n=15, backend={"max_retries": 5, "retry_base_s": 0.01}).run_all()
    # The bootstrap stops waiting once it has its target, so a blipped request may never be retried;
    # every request that was answered after blipping must have failed twice first.
    blipped = {key: n for key, n in flaky.answered_after.items() if flaky.order[key] % 3 == 0}
    assert len(blipped) >= 5 and set(blipped.values()) == {2}
    assert flaky.blips >= 2 * len(blipped)
    assert snapshot(steady) == snapshot(flaky_out)


def test_concurrency_does_not_change_the_output(tmp_path: Path, make_run: RunFactory) -> None:
    serial, parallel = tmp_path / "c1" / "run", tmp_path / "c8" / "run"  # one run name (dataset_info.json)
    make_run(serial, ScriptedModel(), n=15, backend={"concurrency": 1}).run_all()
    make_run(parallel, ScriptedModel(), n=15, backend={"concurrency": 8}).run_all()
    assert snapshot(serial) == snapshot(parallel)


def test_alpaca_preset_runs_one_stage(tmp_path: Path, make_run: RunFactory) -> None:
    run = make_run(tmp_path / "alp", AlpacaModel(), n=6, preset="alpaca-2023")
    summary = run.run_all()
    assert summary["funnel"]["bootstrap"]["accepted"] == 6
    assert "classify" not in summary["funnel"]
    import json

    rows = json.loads((tmp_path / "alp/finetuning_data/alpaca_data.json").read_text())
    assert len(rows) == 6 and {r["input"] == "" for r in rows} == {True, False}


PRICED = {"price_per_1k_input": 1.0, "price_per_1k_output": 2.0, "retry_base_s": 0.01}


def test_the_projection_of_a_finished_run_is_what_every_stage_cost(
    tmp_path: Path, make_run: RunFactory
) -> None:
    summary = make_run(tmp_path / "run", ScriptedModel(), n=6, backend=PRICED).run_all()
    assert summary["funnel"]["bootstrap"]["accepted"] == 6  # all N: nothing to scale
    projection, requests = summary["projection"], summary["requests"]
    assert {name: stage["basis"] for name, stage in projection["stages"].items()} == {
        "bootstrap": "seen",
        "classify": "seen",
        "instances": "seen",
    }
    for name, stage in projection["stages"].items():
        spent = requests[name]
        assert (stage["prompt_tokens"], stage["completion_tokens"]) == (
            spent["prompt_tokens"],
            spent["completion_tokens"],
        )
        assert stage["cost"] == pytest.approx(spent["cost"]) and stage["cost"] > 0
    cost = sum(s["cost"] for s in requests.values())
    assert projection["projected_cost"] == pytest.approx(cost) == projection["projected_online_cost"]
    assert projection["instructions"] == 6 and "projection" not in summary["funnel"]["bootstrap"]


def test_after_the_bootstrap_the_projection_estimates_every_later_stage(
    tmp_path: Path, make_run: RunFactory
) -> None:
    out = tmp_path / "run"
    run = make_run(out, ScriptedModel(), n=20, backend=PRICED)
    run.bootstrap()
    early = json.loads((out / SUMMARY_FILE).read_text())["projection"]
    run.classify()
    run.instances()
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["funnel"]["bootstrap"]["accepted"] == 20
    stages, spent = early["stages"], summary["requests"]
    assert stages["bootstrap"]["basis"] == "seen"
    for name in ("classify", "instances"):
        estimate = stages[name]
        assert estimate["basis"] == "estimated" and estimate["requests"] == 20  # one per instruction
        # Prompt tokens: the stage's own prompts at the run's tokens per character.
        assert estimate["prompt_tokens"] == pytest.approx(spent[name]["prompt_tokens"], rel=0.15)
        # Answers at their max_tokens: an upper bound.
        assert estimate["completion_tokens"] >= spent[name]["completion_tokens"]
    # The whole run, not the bootstrap alone (about a tenth of it here), and never below what it cost.
    cost = sum(s["cost"] for s in spent.values())
    assert stages["bootstrap"]["cost"] < 0.2 * cost
    assert cost <= early["projected_cost"] < 2 * cost
    assert summary["projection"]["projected_cost"] == pytest.approx(cost)


def test_a_stage_run_by_an_earlier_command_keeps_its_figures(tmp_path: Path, make_run: RunFactory) -> None:
    out = tmp_path / "run"
    make_run(out, ScriptedModel(), n=6, backend=PRICED).bootstrap()
    bootstrap = json.loads((out / SUMMARY_FILE).read_text())["projection"]["stages"]["bootstrap"]
    make_run(
        out, ScriptedModel(), n=6, backend=PRICED
    ).classify()  # a new invocation: `selfinstruct classify`
    projection = json.loads((out / SUMMARY_FILE).read_text())["projection"]
    assert projection["stages"]["bootstrap"] == bootstrap
    assert [projection["stages"][s]["basis"] for s in ("classify", "instances")] == ["seen", "estimated"]


def test_the_alpaca_pipeline_projects_its_one_stage(tmp_path: Path, make_run: RunFactory) -> None:
    summary = make_run(tmp_path / "alp", AlpacaModel(), n=6, preset="alpaca-2023", backend=PRICED).run_all()
    projection = summary["projection"]
    assert list(projection["stages"]) == ["alpaca"]
    cost = summary["requests"]["alpaca"]["cost"]
    assert projection["projected_cost"] == pytest.approx(cost) and cost > 0


def test_relabel_replaces_outputs_with_the_teachers_and_keeps_the_tasks(
    tmp_path: Path, make_run: RunFactory
) -> None:
    class Teacher(ScriptedModel):
        def identity(self) -> dict[str, Any]:
            return {"kind": "scripted", "model": "teacher"}

        def complete(self, request: CompletionRequest, timeout: float) -> Completion:
            first_line = request.prompt.split("\n", 1)[0]
            return Completion(f" better answer to: {first_line}", "stop")

    source = tmp_path / "run"
    make_run(source, ScriptedModel()).run_all()
    before = [json.loads(line) for line in (source / "finetuning_data/all_generated_instances.jsonl").open()]
    cfg = build_config(config_file=source / "config.yaml")
    teacher = Run(tmp_path / "relabelled", cfg, progress=False, log=lambda _: None, backend=Teacher())
    teacher.open()
    entry = teacher.relabel(source)
    after = [
        json.loads(line)
        for line in (tmp_path / "relabelled/finetuning_data/all_generated_instances.jsonl").open()
    ]
    assert [(r["instruction"], r["input"]) for r in after] == [(r["instruction"], r["input"]) for r in before]
    assert all(r["output"] == f"better answer to: {r['instruction']}" for r in after)
    assert entry["finetuning_rows"] == len(after) > 0


def test_a_corrupt_summary_stops_a_stage_before_it_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / SUMMARY_FILE).write_text("{not json", encoding="utf-8")
    run = Run(out, build_config(), progress=False, log=lambda _: None, backend=ScriptedModel())
    with pytest.raises(RunFileError, match=r"summary\.json: not readable JSON"), run.opened():
        run.bootstrap()
    assert not (out / INSTRUCTIONS_FILE).exists()
    assert (out / SUMMARY_FILE).read_text(encoding="utf-8") == "{not json"  # left for the user to see
