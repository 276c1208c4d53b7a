"""Stage 1: the numbered-list prompt, response parsing, in-context sampling and the bootstrap loop."""

from __future__ import annotations

import random
from typing import Any

from selfinstruct.config import CompatConfig, build_config
from selfinstruct.llm.base import Completion
from selfinstruct.records import Instance, SeedTask
from selfinstruct.stages.bootstrap import (
    bootstrap_instructions,
    capitalize_first,
    parse_bootstrap_response,
    render_bootstrap_prompt,
    sample_in_context,
)
from selfinstruct.stages.context import PromptSet, StageContext

SENSIBLE = CompatConfig()
REFERENCE = CompatConfig(python_capitalize=True, drop_whole_response_on_length=True)


def test_prompt_is_a_numbered_list_left_open_at_the_next_item() -> None:
    prompt = render_bootstrap_prompt("Header:", ["Say  hi\n twice:", "Count to ten."])
    assert prompt == "Header:\n1. Say hi twice\n2. Count to ten.\n3."


def test_parses_a_continuation_into_separate_instructions() -> None:
    text = " Plan a picnic menu.\n10. Explain   how tides\nwork.\n11 . List three birds.\n12.Not an item"
    items = parse_bootstrap_response(text, "stop", SENSIBLE)
    assert items == ["Plan a picnic menu.", "Explain how tides work.", "List three birds. 12.Not an item"]


def test_truncated_response_loses_only_its_last_item_by_default() -> None:
    text = " Plan a picnic menu.\n10. Explain tides.\n11. Describe the half-writ"
    assert parse_bootstrap_response(text, "length", SENSIBLE) == ["Plan a picnic menu.", "Explain tides."]


def test_reference_mode_drops_the_whole_truncated_response() -> None:
    assert parse_bootstrap_response(" A.\n10. B.\n11. C", "length", REFERENCE) == []


def test_capitalize_keeps_acronyms_unless_reference_mode() -> None:
    assert capitalize_first("write a Python script using SQL") == "Write a Python script using SQL"
    assert capitalize_first("write a Python script using SQL", python_capitalize=True) == (
        "Write a python script using sql"
    )


def test_samples_two_machine_and_six_seed_instructions() -> None:
    seeds = [f"seed {i}" for i in range(20)]
    machine = [f"machine {i}" for i in range(5)]
    chosen = sample_in_context(seeds, machine, total=8, n_machine=2, rng=random.Random(1))
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert sum(c.startswith("machine") for c in chosen) == 2


def test_samples_only_seeds_while_the_machine_pool_is_empty() -> None:
    seeds = [f"seed {i}" for i in range(20)]
    chosen = sample_in_context(seeds, [], total=8, n_machine=2, rng=random.Random(1))
    assert len(chosen) == 8 and all(c.startswith("seed") for c in chosen)


def test_sampling_is_a_function_of_the_rng_seed() -> None:
    seeds = [f"seed {i}" for i in range(20)]
    a = sample_in_context(seeds, ["m"], 8, 2, random.Random(7))
    b = sample_in_context(seeds, ["m"], 8, 2, random.Random(7))
    c = sample_in_context(seeds, ["m"], 8, 2, random.Random(8))
    assert a == b != c


# -- the loop itself ---------------------------------------------------------------------------


class ScriptedEngine:
    """Answers each bootstrap prompt with the next scripted continuation; keeps every prompt."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.rounds: list[list[str]] = []

    def complete_all(self, requests: Any, stage: str, progress: bool | None = None) -> list[Completion]:
        self.rounds.append([r.prompt for r in requests])
        return [Completion(self.answers.pop(0) if self.answers else "", "stop", 10, 10) for _ in requests]

    def project(self, stage: str, done: int, total: int) -> dict[str, Any]:
        return {"projected_cost": None, "projected_tokens": None}


def loop_context(engine: ScriptedEngine, seeds: list[str], n: int) -> StageContext:
    config = build_config(
        overrides={
            "bootstrap": {"num_instructions": n, "prompts_per_round": 2, "max_idle_rounds": 2},
            "filters": {"enabled": {"blacklist": False}},
        }
    )
    tasks = [SeedTask(f"s{i}", f"s{i}", text, (Instance("", "x"),), False) for i, text in enumerate(seeds)]
    return StageContext(config, tasks, PromptSet.load(dict(config.prompts)), engine, progress=False)  # type: ignore[arg-type]


SEEDS = [
    "Write a poem about the sea.",
    "Sort the numbers from small to large.",
    "Name the capital of the country.",
]


def test_rejects_candidates_too_similar_to_a_seed_or_an_earlier_candidate_of_the_same_round() -> None:
    engine = ScriptedEngine(
        [
            # prompt 0 of round 0: a near-copy of a seed, a new task, a near-copy of that new task
            " Write a poem about the sea today.\n10. Explain how the tides work.\n11. Explain how tides work.",
            # prompt 1 of round 0: a near-copy of prompt 0's accepted task, and a new one
            " Explain how the tides work please.\n10. List three birds that cannot fly.",
            " Describe a rainy afternoon in a big city.",
        ]
    )
    result = bootstrap_instructions(loop_context(engine, SEEDS, n=3))
    assert [r["instruction"] for r in result.records] == [
        "Explain how the tides work.",
        "List three birds that cannot fly.",
        "Describe a rainy afternoon in a big city.",
    ]
    assert result.funnel.rejected == {"rouge_similarity": 3}
    assert (result.funnel.generated, result.funnel.accepted) == (6, 3)
    assert result.complete


def test_accepted_machine_instructions_appear_in_later_prompts_only() -> None:
    engine = ScriptedEngine([" Explain how the tides work.", " List three birds that cannot fly.", ""])
    bootstrap_instructions(loop_context(engine, SEEDS, n=3))
    first_round, second_round = engine.rounds[0], engine.rounds[1]
    assert not any("tides" in p or "birds" in p for p in first_round)
    # The pool holds exactly two machine instructions, and each prompt shows two of them.
    for prompt in second_round:
        assert "Explain how the tides work." in prompt and "List three birds that cannot fly." in prompt
        assert sum(seed in prompt for seed in SEEDS) == 3  # and every seed (fewer than 6 exist)


def test_stops_after_rounds_without_anything_new() -> None:
    engine = ScriptedEngine([" Write a poem about the sea."] * 10)
    result = bootstrap_instructions(loop_context(engine, SEEDS, n=5))
    assert not result.complete and result.records == []
    assert len(engine.rounds) == 2  # max_idle_rounds


def test_the_packaged_prompt_renders_as_its_golden_file() -> None:
    from fixtures.golden_prompts import assert_matches_golden

    from selfinstruct.prompts import BootstrapPrompt, load_prompt

    prompt = load_prompt("bootstrap", "bootstrap.yaml", BootstrapPrompt)
    assert_matches_golden("bootstrap.txt", render_bootstrap_prompt(prompt.header, SEEDS))
