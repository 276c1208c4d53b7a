"""Every stage with a chat model (issue 11): chat prompts go out, chat-shaped answers come back
as clean records, in text and in JSON output mode, with the funnel, the store and resume
working as on the completion path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import RunFactory
from servers.scripted_chat import ScriptedChatModel

from selfinstruct.parsing import instances_of_record
from selfinstruct.rundir import (
    CONFIG_FILE,
    FINETUNE_DIR,
    GENERATED_INSTANCES_FILE,
    INSTANCES_FILE,
    INSTRUCTIONS_FILE,
    REPORT_DIR,
    REPORT_JSON,
    SUMMARY_FILE,
)

OUTPUTS = (INSTRUCTIONS_FILE, INSTANCES_FILE, f"{FINETUNE_DIR}/{GENERATED_INSTANCES_FILE}")
LIST_NUMBER = re.compile(r"^\s*\d+[.)]")


def chat_backend(mode: str) -> dict[str, Any]:
    return {
        "kind": "openai",
        "api": "chat",
        "output_mode": mode,
        "max_retries": 2,
        "retry_base_s": 0.01,
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.mark.parametrize("mode", ["text", "json_object", "json_schema"])
def test_a_chat_model_run_gives_clean_instructions_and_instances(
    tmp_path: Path, make_run: RunFactory, mode: str
) -> None:
    model = ScriptedChatModel()
    run = make_run(tmp_path / "run", model, n=10, backend=chat_backend(mode))
    summary = run.run_all()

    instructions = [r["instruction"] for r in read_jsonl(tmp_path / "run" / INSTRUCTIONS_FILE)]
    assert len(instructions) == 10
    for text in instructions:
        assert not LIST_NUMBER.match(text) and "**" not in text, text
        assert not text.lower().startswith(("sure", "here", "let me")), text
    tasks = read_jsonl(tmp_path / "run" / INSTANCES_FILE)
    assert all(instances_of_record(task)[0] for task in tasks)
    # Classification tasks were asked output-first, and their labels came back as outputs.
    labelled = [t for t in tasks if "happy or sad" in t["instruction"]]
    assert labelled, "the scripted model writes some classification tasks"
    assert all(t["is_classification"] == "Yes" for t in labelled)
    assert all({i.output for i in instances_of_record(t)[0]} == {"Happy", "Sad"} for t in labelled)
    kept = {t["instruction"] for t in read_jsonl(tmp_path / "run" / FINETUNE_DIR / GENERATED_INSTANCES_FILE)}
    assert kept == {t["instruction"] for t in tasks}

    assert summary["generation"] == {"prompt_style": "chat", "output_mode": mode}
    # Only JSON modes ask for a schema; no chat request carries the completion prompts' stops.
    assert all((r.response_schema is not None) == (mode != "text") for r in model.requests)
    assert all(r.messages and not r.params.stop for r in model.requests)


def test_a_chat_run_resumes_from_the_store_and_is_reproducible(tmp_path: Path, make_run: RunFactory) -> None:
    first = make_run(tmp_path / "a", ScriptedChatModel(), n=8, backend=chat_backend("text"))
    first.run_all()
    again = ScriptedChatModel()
    rerun = make_run(tmp_path / "a", again, n=8, backend=chat_backend("text"))
    rerun.run_all()
    assert again.requests == []  # every answer came from the store
    other = make_run(tmp_path / "b", ScriptedChatModel(), n=8, backend=chat_backend("text"))
    other.run_all()
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_classify_record_keeps_the_chat_reply_and_a_plain_answer(
    tmp_path: Path, make_run: RunFactory
) -> None:
    run = make_run(tmp_path / "run", ScriptedChatModel(), n=6, backend=chat_backend("text"))
    run.bootstrap()
    records = run.classify()
    assert {r["is_classification"] for r in records} <= {"Yes", "No"}
    assert all(r["reply"] in ("Yes.", "No, it is not.") for r in records)
    assert all(r["is_classification"] == ("Yes" if r["reply"] == "Yes." else "No") for r in records)


def test_the_output_mode_is_recorded_in_the_run_config_and_the_summary(
    tmp_path: Path, make_run: RunFactory
) -> None:
    run = make_run(tmp_path / "run", ScriptedChatModel(), n=4, backend=chat_backend("json_object"))
    run.bootstrap()
    assert "output_mode: json_object" in (tmp_path / "run" / CONFIG_FILE).read_text()
    assert (
        json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())["generation"]["output_mode"]
        == "json_object"
    )


@pytest.mark.parametrize("mode", ["text", "json_object"])
def test_the_alpaca_variant_with_a_chat_model_keeps_each_task_with_its_instance(
    tmp_path: Path, make_run: RunFactory, mode: str
) -> None:
    model = ScriptedChatModel()
    run = make_run(tmp_path / "run", model, n=6, preset="alpaca-2023", backend=chat_backend(mode))
    records = run.bootstrap()
    assert len(records) == 6
    for record in records:
        assert record["instruction"][0].isupper() and not record["instruction"].startswith("Instruction")
        assert record["output"] and "Output:" not in record["output"]
    assert {model.stage_of(r) for r in model.requests} == {"alpaca"}


def test_relabel_with_a_chat_teacher_asks_the_task_and_keeps_the_reply(
    tmp_path: Path, make_run: RunFactory
) -> None:
    source = make_run(tmp_path / "source", ScriptedChatModel(), n=6, backend=chat_backend("text"))
    source.run_all()
    teacher = ScriptedChatModel()
    run = make_run(tmp_path / "relabelled", teacher, n=6, backend=chat_backend("text"))
    entry = run.relabel(tmp_path / "source")
    assert entry["training_triples"] > 0
    assert {teacher.stage_of(r) for r in teacher.requests} == {"relabel"}
    # The user message is the task itself: its instruction, then its input.
    triples = read_jsonl(tmp_path / "source" / FINETUNE_DIR / GENERATED_INSTANCES_FILE)
    asked = {r.messages[-1].content for r in teacher.requests}
    first = triples[0]
    expected = first["instruction"] + (f"\n\n{first['input']}" if first["input"] else "")
    assert expected in asked


def test_a_server_without_json_schema_support_gets_text_prompts_and_its_replies_are_parsed(
    tmp_path: Path, shared_data: Path
) -> None:
    from servers.openai_stub import OpenAIStub

    from selfinstruct.config import build_config
    from selfinstruct.pipeline import Run

    model = ScriptedChatModel()
    # Refuses every response_format type with a 500, as llama-cpp-python refuses json_schema.
    with OpenAIStub(response_formats=(), chat_model=model) as stub:
        backend = {**chat_backend("auto"), "base_url": stub.base_url}
        config = build_config(
            overrides={"seed_tasks": str(shared_data / "seed_tasks.jsonl"), "backend": backend,
                       "bootstrap": {"num_instructions": 6, "prompts_per_round": 3}}
        )  # fmt: skip
        logged: list[str] = []
        with Run(tmp_path / "run", config, progress=False, log=logged.append).opened() as run:
            summary = run.run_all()
    assert "output_mode: text" in (tmp_path / "run" / CONFIG_FILE).read_text()
    assert any("answers as text" in line for line in logged)
    assert summary["generation"] == {"prompt_style": "chat", "output_mode": "text"}
    assert model.requests and all(r.response_schema is None for r in model.requests)
    tasks = read_jsonl(tmp_path / "run" / INSTANCES_FILE)
    assert len(tasks) == 6 and all(instances_of_record(t)[0] for t in tasks)


def test_the_analysis_and_the_review_sample_read_a_chat_run_as_any_other(
    tmp_path: Path, make_run: RunFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from selfinstruct.analysis.review.sample import sample_items
    from selfinstruct.analysis.run_reader import read_run
    from selfinstruct.cli import main

    run = make_run(tmp_path / "run", ScriptedChatModel(), n=8, backend=chat_backend("json_object"))
    run.run_all()
    run.close()
    data = read_run(tmp_path / "run")
    parsed = sum(len(instances_of_record(t)[0]) for t in read_jsonl(tmp_path / "run" / INSTANCES_FILE))
    assert len(data.instructions) == 8 and len(data.triples) == parsed > 0
    assert any(data.classification.values())  # stage 2's "Yes" of a chat run reads as classification
    assert len(sample_items(data.triples, size=5, seed=1)) == 5
    assert main(["analyze", str(tmp_path / "run"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "run" / REPORT_DIR / REPORT_JSON).read_text())
    assert report["funnel"]["bootstrap"]["accepted"] == 8


def test_a_chat_judge_gets_the_rubric_as_its_system_message_and_its_grades_are_read(tmp_path: Path) -> None:
    from servers.scripted_answers import ScriptedModel

    from selfinstruct.backends import build_engine
    from selfinstruct.config import BackendConfig
    from selfinstruct.evaluate.user_oriented import UserTask, evaluate_user_oriented
    from selfinstruct.prompts import ChatPrompts, load_prompt

    judge = ScriptedChatModel()
    config = BackendConfig(max_retries=0)
    tasks = [UserTask(str(n), f"Name a colour, number {n}.", "", "Blue") for n in range(6)]
    rows, metrics = evaluate_user_oriented(
        build_engine(config, tmp_path / "model", ScriptedModel(), progress=False),
        tasks,
        build_engine(config, tmp_path / "judge", judge, progress=False),
        load_prompt("chat", "chat.yaml", ChatPrompts).judge,
    )
    assert {judge.stage_of(r) for r in judge.requests} == {"judge"}
    assert all(r.messages[-1].content.startswith("Instruction: Name a colour") for r in judge.requests)
    # "A", "Grade: B" and "**C**" are all read as grades.
    assert all(row["grade"] in ("A", "B", "C") for row in rows)
    assert metrics["ratings"]["unparsed"] == 0


def test_a_chat_prompt_file_of_ones_own_replaces_the_packaged_one(
    tmp_path: Path, make_run: RunFactory
) -> None:
    import yaml

    from selfinstruct.prompts import ChatPrompts, load_prompt

    data = load_prompt("chat", "chat.yaml", ChatPrompts).model_dump()
    data["bootstrap"]["text_format"] = "One task per line, numbered, please."
    own = tmp_path / "my_chat.yaml"
    own.write_text(yaml.safe_dump(data), encoding="utf-8")
    model = ScriptedChatModel()
    run = make_run(tmp_path / "run", model, n=3, backend=chat_backend("text"), prompts={"chat": str(own)})
    run.bootstrap()
    assert model.requests
    assert all(r.messages[0].content.endswith("One task per line, numbered, please.") for r in model.requests)


def test_a_chat_prompt_with_an_unknown_field_is_one_line(tmp_path: Path) -> None:
    from selfinstruct.errors import ConfigError
    from selfinstruct.prompts import ChatPrompts, load_prompt

    text = (Path(__file__).parents[1] / "src/selfinstruct/prompts/chat.yaml").read_text("utf-8")
    bad = tmp_path / "chat.yaml"
    bad.write_text(text.replace("Write {new} more,", "Write {many} more,"), encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"chat.yaml: bootstrap: .*final_request: .*unknown field\(s\) \{many\}"
    ) as info:
        load_prompt("chat", str(bad), ChatPrompts)
    assert str(info.value).splitlines() == [str(info.value)]


def test_a_user_message_template_a_stage_does_not_use_is_refused(tmp_path: Path) -> None:
    # The list stages build their user messages from first/next/final_request: a `request`
    # there would be silently ignored.
    from selfinstruct.errors import ConfigError
    from selfinstruct.prompts import ChatPrompts, load_prompt

    text = (Path(__file__).parents[1] / "src/selfinstruct/prompts/chat.yaml").read_text("utf-8")
    bad = tmp_path / "chat.yaml"
    bad.write_text(
        text.replace("bootstrap:\n", 'bootstrap:\n  request: "Task: {new}"\n', 1), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"chat.yaml: bootstrap.request: Extra inputs are not permitted"):
        load_prompt("chat", str(bad), ChatPrompts)
