"""Stage 2's prompt: header, `Task:` / question / answer demonstrations, the new task left open."""

from __future__ import annotations

from fixtures.golden_prompts import assert_matches_golden

from selfinstruct.prompts import ClassifyDemo, ClassifyPrompt, load_prompt
from selfinstruct.stages.classify import render_classify_prompt

SMALL = ClassifyPrompt(
    header="Decide whether each task has a fixed set of answers.\n",
    question="Fixed set of answers?",
    demonstrations=(
        ClassifyDemo(task="Sort the list of numbers.", is_classification=False),
        ClassifyDemo(task="  Tell whether the email is spam.\n", is_classification=True),
    ),
)


def test_renders_the_demonstrations_then_leaves_the_answer_to_the_new_task_open() -> None:
    assert render_classify_prompt(SMALL, "  Label the mood of the tweet. ") == (
        "Decide whether each task has a fixed set of answers.\n"
        "\n"
        "Task: Sort the list of numbers.\n"
        "Fixed set of answers? No\n"
        "\n"
        "Task: Tell whether the email is spam.\n"
        "Fixed set of answers? Yes\n"
        "\n"
        "Task: Label the mood of the tweet.\n"
        "Fixed set of answers?"
    )


def test_the_packaged_prompt_renders_as_its_golden_file() -> None:
    prompt = load_prompt("classify", "classify.yaml", ClassifyPrompt)
    text = render_classify_prompt(prompt, "Decide if the review is positive or negative.")
    assert_matches_golden("classify.txt", text)
