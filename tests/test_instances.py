"""Stage 3's prompts: input-first for ordinary tasks, output-first (label, then input) for classification."""

from __future__ import annotations

from fixtures.golden_prompts import assert_matches_golden

from selfinstruct.prompts import (
    ClassificationInstanceDemo,
    GenerationInstanceDemo,
    InputOutput,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
    LabelledInput,
    load_prompt,
)
from selfinstruct.stages.instances import render_classification_prompt, render_generation_prompt

GENERATION = InstancesGenerationPrompt(
    header="Write examples for each task.\n",
    demonstrations=(
        GenerationInstanceDemo(task="Name a prime number.", examples=(InputOutput(output="7"),)),
        GenerationInstanceDemo(
            task=" Reverse the word. ",
            examples=(
                InputOutput(input="Word: cat", output="tac"),
                InputOutput(input="Word: dog", output="god"),
            ),
        ),
    ),
)

CLASSIFICATION = InstancesClassificationPrompt(
    header="Write an input for each class label.\n",
    demonstrations=(
        ClassificationInstanceDemo(
            task="Is the number even or odd?",
            examples=(
                LabelledInput(label="Even", input="Number: 4"),
                LabelledInput(label="Odd", input="Number: 9"),
            ),
        ),
        ClassificationInstanceDemo(task="Name a primary colour.", examples=(LabelledInput(label="Red"),)),
    ),
)


def test_generation_prompt_shows_a_lone_output_or_numbered_input_output_examples() -> None:
    assert render_generation_prompt(GENERATION, "  Translate the word into French. ") == (
        "Write examples for each task.\n"
        "\n"
        "Task: Name a prime number.\n"
        "Output: 7\n"
        "\n"
        "Task: Reverse the word.\n"
        "Example 1\n"
        "Word: cat\n"
        "Output: tac\n"
        "Example 2\n"
        "Word: dog\n"
        "Output: god\n"
        "\n"
        "Task: Translate the word into French.\n"
    )


def test_classification_prompt_puts_each_label_before_its_input() -> None:
    assert render_classification_prompt(CLASSIFICATION, "Is the sentence a question?") == (
        "Write an input for each class label.\n"
        "\n"
        "Task: Is the number even or odd?\n"
        "Class label: Even\n"
        "Number: 4\n"
        "Class label: Odd\n"
        "Number: 9\n"
        "\n"
        "Task: Name a primary colour.\n"
        "Class label: Red\n"
        "\n"
        "Task: Is the sentence a question?\n"
    )


def test_the_packaged_generation_prompt_renders_as_its_golden_file() -> None:
    prompt = load_prompt("instances_generation", "instances_generation.yaml", InstancesGenerationPrompt)
    assert_matches_golden(
        "instances_generation.txt",
        render_generation_prompt(prompt, "Summarize the paragraph in one sentence."),
    )


def test_the_packaged_classification_prompt_renders_as_its_golden_file() -> None:
    prompt = load_prompt(
        "instances_classification", "instances_classification.yaml", InstancesClassificationPrompt
    )
    assert_matches_golden(
        "instances_classification.txt",
        render_classification_prompt(prompt, "Decide if the review is positive or negative."),
    )
