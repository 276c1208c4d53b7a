"""User-oriented evaluation: loading, prompts, ratings and store-backed re-runs (grade parsing: test_grades)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from selfinstruct.backends import build_engine
from selfinstruct.config import BackendConfig
from selfinstruct.errors import InputFileError
from selfinstruct.evaluate.user_oriented import (
    UserTask,
    evaluate_user_oriented,
    judge_prompt,
    load_user_tasks,
    response_prompt,
)
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest


class FixedModel(BackendBase):
    def __init__(self, answer: str, name: str) -> None:
        self.answer, self.name, self.calls = answer, name, 0
        self.lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"kind": self.name}

    def close(self) -> None:
        pass

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        with self.lock:
            self.calls += 1
        # Cut at the request's stop strings, as a server does.
        cuts = [self.answer.find(stop) for stop in request.params.stop if stop in self.answer]
        return Completion(self.answer[: min(cuts, default=len(self.answer))], "stop")


def test_loads_the_252_real_instructions(shared_data: Path) -> None:
    tasks = load_user_tasks(shared_data / "user_oriented_instructions.jsonl")
    assert len(tasks) == 252 and all(t.reference for t in tasks)


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"instruction": "x", "instances": []}) + "\n")
    with pytest.raises(InputFileError, match=rf"{path}:1: needs"):
        load_user_tasks(path)


def test_prompts_use_the_plain_training_format() -> None:
    assert response_prompt(UserTask("1", "Add.", "2 3", "5")) == "Add.\nInput: 2 3\nOutput:"
    assert response_prompt(UserTask("1", "Say hi.", "", "hi")) == "Say hi.\nOutput:"
    assert "Assistant's response: (empty)" in judge_prompt(UserTask("1", "Say hi.", "", "hi"), "")


def test_a_response_keeps_its_blank_lines_and_loses_the_task_it_ran_on_into(tmp_path: Path) -> None:
    tasks = [UserTask("1", "Name two colors.", "", "Red\n\nBlue")]
    responder = FixedModel(" Red\n\nBlue\n\nName two colors.\nOutput: Green", "responder")
    rows, metrics = evaluate_user_oriented(build_engine(BackendConfig(), tmp_path, responder, False), tasks)
    assert rows[0]["response"] == "Red\n\nBlue"
    assert metrics["rougeL"] == 100.0


def test_ratings_are_counted_and_a_new_judge_only_rates(tmp_path: Path) -> None:
    tasks = [UserTask(str(i), f"Task {i}.", "", "answer") for i in range(3)]
    responder = FixedModel(" answer", "responder")
    engine = build_engine(BackendConfig(), tmp_path, responder, progress=False)
    rows, metrics = evaluate_user_oriented(
        engine, tasks, build_engine(BackendConfig(), tmp_path, FixedModel(" B", "j1"), False)
    )
    assert metrics["rougeL"] == 100.0
    assert metrics["ratings"] == {"A": 0, "B": 3, "C": 0, "D": 0, "unparsed": 0}
    assert all(r["grade"] == "B" for r in rows)

    responder_again = FixedModel(" other", "responder")
    judge2 = FixedModel("D", "j2")
    _, metrics = evaluate_user_oriented(
        build_engine(BackendConfig(), tmp_path, responder_again, False),
        tasks,
        build_engine(BackendConfig(), tmp_path, judge2, False),
    )
    assert responder_again.calls == 0 and judge2.calls == 3
    assert metrics["ratings_percent"]["D"] == 100.0
