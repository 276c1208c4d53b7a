"""SuperNI evaluation: task loading, the prompt, scoring and aggregation, bad task files."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fixtures.superni_tasks import task_file

from selfinstruct.backends import build_engine
from selfinstruct.config import BackendConfig
from selfinstruct.errors import InputFileError
from selfinstruct.evaluate.superni import build_prompt, evaluate_superni, load_task, load_tasks
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest


class EchoModel(BackendBase):
    """Answers with the last input word: right for some instances, wrong for others."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.prompts: list[str] = []

    def identity(self) -> dict[str, Any]:
        return {"kind": "echo"}

    def close(self) -> None:
        pass

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        with self.lock:
            self.prompts.append(request.prompt)
        last_input = request.prompt.rsplit("Input: ", 1)[1].split("\n")[0].rstrip(".")
        return Completion(" " + last_input.split()[-1], "stop")


def test_loads_the_real_test_subset(shared_data: Path) -> None:
    tasks = load_tasks(shared_data / "superni_test" / "tasks")
    assert len(tasks) == 18 and all(len(t.instances) == 100 for t in tasks)
    assert len({t.category for t in tasks}) == 12


def test_prompt_is_definition_then_the_instance(tmp_path: Path) -> None:
    task = load_task(task_file(tmp_path, "t", "Math", [("q", ["a"])]))
    prompt = build_prompt(task, "What is 3+3")
    assert prompt == (
        "Definition: Answer the t question.\n\nNow complete the following example -\nInput: What is 3+3.\nOutput:"
    )
    assert " Positive Example 2 -\nInput: 1+1.\n Output: 2.\n\n" in build_prompt(task, "x", n_positive=2)


def test_scores_per_task_category_and_overall(tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    task_file(tasks_dir, "a", "Cat1", [("say blue", ["blue"]), ("say red", ["green"])])  # EM 50
    task_file(tasks_dir, "b", "Cat2", [("say sun", ["Sun."])])  # EM 100
    engine = build_engine(BackendConfig(), tmp_path / "eval", EchoModel(), progress=False)
    predictions, metrics = evaluate_superni(engine, load_tasks(tasks_dir))
    assert [p["prediction"] for p in predictions] == ["blue", "red", "sun"]
    assert metrics["per_task"]["a"]["exact_match"] == 50.0
    assert metrics["per_task"]["b"]["exact_match"] == 100.0
    assert metrics["per_category"]["Cat1"]["exact_match"] == 50.0
    assert metrics["overall"]["exact_match"] == 75.0  # mean over tasks, not instances
    assert metrics["overall"]["instances"] == 3
    assert metrics["overall"]["pooled"]["exact_match"] == pytest.approx(200 / 3, abs=1e-3)  # 2 of 3 instances


def test_table_labels_the_mean_of_task_means_and_the_pooled_score(tmp_path: Path) -> None:
    from selfinstruct.evaluate.superni import format_table

    task_file(tmp_path, "a", "Cat1", [("say blue", ["blue"]), ("say red", ["green"])])
    task_file(tmp_path, "b", "Cat2", [("say sun", ["Sun."])])
    engine = build_engine(BackendConfig(), tmp_path / "eval", EchoModel(), progress=False)
    lines = format_table(evaluate_superni(engine, load_tasks(tmp_path))[1]).splitlines()
    assert lines[-2].startswith("overall, mean of 2 task means") and lines[-2].split()[-2] == "75.00"
    assert lines[-1].startswith("overall, pooled over 3 instances") and lines[-1].split()[-2] == "66.67"


def test_rerun_scores_from_the_store_without_calling_the_model(tmp_path: Path) -> None:
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    task_file(tasks_dir, "a", "Cat1", [("say blue", ["blue"])])
    evaluate_superni(
        build_engine(BackendConfig(), tmp_path / "ev", EchoModel(), False), load_tasks(tasks_dir)
    )
    model = EchoModel()
    evaluate_superni(build_engine(BackendConfig(), tmp_path / "ev", model, False), load_tasks(tasks_dir))
    assert model.prompts == []


def test_missing_task_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="task directory not found"):
        load_tasks(tmp_path / "nope")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{oops", "invalid JSON"),
        (json.dumps({"Definition": ["d"], "Instances": []}), "Instances"),
        (json.dumps({"Instances": [{"input": "x", "output": ["y"]}]}), "Definition"),
        (json.dumps({"Definition": ["d"], "Instances": [{"input": "x", "output": [1]}]}), "Instances'[0]"),
    ],
)
def test_malformed_task_file_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError) as info:
        load_tasks(tmp_path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_unknown_task_name_is_reported(tmp_path: Path) -> None:
    task_file(tmp_path, "a", "Cat1", [("q", ["a"])])
    with pytest.raises(InputFileError, match="no task file for zzz"):
        load_tasks(tmp_path, ["zzz"])
