"""The packaged seed tasks: the paper's schema, its mix of task types, and originality."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from rouge_score import rouge_scorer

SEED_PATH = Path(__file__).parents[1] / "src/selfinstruct/seeds/seed_tasks.jsonl"
EXPECTED_KEYS = ["id", "name", "instruction", "instances", "is_classification"]
# The bootstrap stage drops instructions containing these whole words (method.md §1.1, filter 2).
BLACKLIST = [
    "image", "images", "graph", "graphs", "picture", "pictures",
    "file", "files", "map", "maps", "draw", "plot", "go to",
]  # fmt: skip


@pytest.fixture(scope="module")
def seed_lines() -> list[str]:
    return SEED_PATH.read_text(encoding="utf-8").split("\n")


@pytest.fixture(scope="module")
def seeds(seed_lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in seed_lines if line]


@pytest.fixture(scope="module")
def scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _is_empty_input_task(task: dict[str, Any]) -> bool:
    return all(instance["input"] == "" for instance in task["instances"])


def _heuristic_rejection(instruction: str) -> str | None:
    """Why the bootstrap's heuristic filters would drop this instruction, or None if it passes."""
    n_words = len(instruction.split())
    if n_words <= 3 or n_words > 150:
        return f"{n_words} words"
    for word in BLACKLIST:
        if re.search(rf"\b{word}\b", instruction, flags=re.IGNORECASE):
            return f"blacklisted word {word!r}"
    if instruction.startswith("Write a program"):
        return "starts with 'Write a program'"
    first = instruction[0]
    if first in string.punctuation or not first.isascii() or not first.isalnum():
        return f"starts with {first!r}"
    return None


def test_file_has_175_lines_and_ends_with_a_single_newline(seed_lines: list[str]) -> None:
    # split("\n") of "a\nb\n" is ["a", "b", ""]: exactly one trailing empty piece means one final newline.
    assert seed_lines[-1] == ""
    assert len(seed_lines) - 1 == 175
    assert all(line.strip() for line in seed_lines[:-1])


def test_every_record_has_the_paper_schema_with_keys_in_order(seeds: list[dict[str, Any]]) -> None:
    for task in seeds:
        assert list(task) == EXPECTED_KEYS, task.get("id")
        assert isinstance(task["instruction"], str) and task["instruction"] == task["instruction"].strip()
        assert isinstance(task["is_classification"], bool)
        assert isinstance(task["instances"], list) and 1 <= len(task["instances"]) <= 3, task["id"]
        for instance in task["instances"]:
            assert list(instance) == ["input", "output"], task["id"]
            assert isinstance(instance["input"], str)
            assert isinstance(instance["output"], str) and instance["output"].strip(), task["id"]


def test_ids_run_from_zero_and_names_are_unique_snake_case(seeds: list[dict[str, Any]]) -> None:
    assert [task["id"] for task in seeds] == [f"seed_task_{i}" for i in range(175)]
    names = [task["name"] for task in seeds]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", name) for name in names)


def test_at_least_25_tasks_are_classification(seeds: list[dict[str, Any]]) -> None:
    assert sum(task["is_classification"] for task in seeds) >= 25


def test_between_25_and_35_percent_of_tasks_have_empty_input(seeds: list[dict[str, Any]]) -> None:
    share = sum(_is_empty_input_task(task) for task in seeds) / len(seeds)
    assert 0.25 <= share <= 0.35, share


def test_every_instruction_passes_the_bootstrap_heuristic_filters(seeds: list[dict[str, Any]]) -> None:
    rejected = {task["id"]: why for task in seeds if (why := _heuristic_rejection(task["instruction"]))}
    assert rejected == {}


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Summarize this text.", "3 words"),
        ("Describe the image below in detail.", "blacklisted word 'image'"),
        ("Write a program that sorts numbers.", "starts with 'Write a program'"),
        ('"Quote" the sentence back to me please.', "starts with '\"'"),
    ],
)
def test_heuristic_check_rejects_what_the_bootstrap_would_drop(instruction: str, reason: str) -> None:
    # Guards the guard: the filter test above is only meaningful if this check can reject something.
    assert _heuristic_rejection(instruction) == reason


def test_no_instruction_is_a_near_copy_of_a_paper_seed(
    seeds: list[dict[str, Any]], shared_data: Path, scorer: rouge_scorer.RougeScorer
) -> None:
    paper_lines = (shared_data / "seed_tasks.jsonl").read_text(encoding="utf-8").splitlines()
    paper = [json.loads(line)["instruction"] for line in paper_lines if line]
    assert len(paper) == 175
    too_close = {}
    for task in seeds:
        score, nearest = max((scorer.score(p, task["instruction"])["rougeL"].fmeasure, p) for p in paper)
        if score >= 0.5:
            too_close[task["id"]] = (round(score, 3), nearest)
    assert too_close == {}
