"""Stage 1 pieces: the numbered-list prompt, response parsing and in-context sampling."""

from __future__ import annotations

import random

from selfinstruct.config import CompatConfig
from selfinstruct.stages.bootstrap import (
    capitalize_first,
    parse_bootstrap_response,
    render_bootstrap_prompt,
    sample_in_context,
)

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
