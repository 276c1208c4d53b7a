"""The one-stage alpaca prompt: a preamble, numbered `###` seed examples, the next item left open."""

from __future__ import annotations

from fixtures.golden_prompts import assert_matches_golden

from selfinstruct.prompts import AlpacaPrompt, load_prompt
from selfinstruct.records import Instance, SeedTask
from selfinstruct.seeds import load_seed_tasks
from selfinstruct.stages.alpaca import parse_alpaca_response, render_alpaca_prompt

TASKS = [
    SeedTask("a", "a", "Reverse the word:", (Instance("cat", "tac"),), False),
    SeedTask("b", "b", "Name a  prime\nnumber.", (Instance("", "7"),), False),
]


def test_renders_numbered_blocks_with_a_marker_for_an_empty_input() -> None:
    assert render_alpaca_prompt("Make new tasks.\n\n", TASKS, "<noinput>") == (
        "Make new tasks.\n"
        "###\n"
        "1. Instruction: Reverse the word\n"
        "1. Input:\n"
        "cat\n"
        "1. Output:\n"
        "tac\n"
        "###\n"
        "2. Instruction: Name a prime number.\n"
        "2. Input:\n"
        "<noinput>\n"
        "2. Output:\n"
        "7\n"
        "###\n"
        "3. Instruction:"
    )


def test_a_continuation_of_the_rendered_prompt_parses_back_into_tasks() -> None:
    text = " Add the numbers.\n3. Input:\n2, 3\n3. Output:\n5\n###\n4. Instruction: Say hi.\n4. Input:\n<noinput>\n4. Output:\nhi"
    candidates = parse_alpaca_response(text, "stop", 3, "<noinput>")
    assert [(c.instruction, c.extra) for c in candidates] == [
        ("Add the numbers.", {"input": "2, 3", "output": "5"}),
        ("Say hi.", {"input": "", "output": "hi"}),
    ]


def test_the_packaged_prompt_renders_as_its_golden_file() -> None:
    prompt = load_prompt("alpaca", "alpaca.yaml", AlpacaPrompt)
    seeds = load_seed_tasks()[:3]
    assert_matches_golden("alpaca.txt", render_alpaca_prompt(prompt.preamble, seeds, prompt.no_input_marker))
