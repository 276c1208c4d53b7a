"""Where a base model's answer to a plain task prompt ends (parsing.plain_answer)."""

from __future__ import annotations

import pytest

from selfinstruct.parsing.plain_answer import ANSWER_STOPS, PlainAnswer, plain_answer

INSTRUCTION = "Translate the sentence into French."


@pytest.mark.parametrize(
    "continuation",
    [
        " Red\n\nBlue\n\nYellow",
        "\n1. Eat vegetables.\n\n2. Sleep eight hours.\n\n3. Walk every day.",
        " Dear Sam,\n\nCome to dinner on Friday.\n\nBest,\nAlex",
        "\n```python\ndef square(x):\n    return x * x\n\n\nprint(square(3))\n```",
        "\ndef add(a, b):\n    return a + b\n\n\ndef double(x):\n    return 2 * x",
        " - milk\n- eggs\n\n  - free-range\n- bread",
        " First paragraph.\n\n\n\nSecond paragraph after several blank lines.",
    ],
)
def test_an_answer_with_blank_lines_lists_or_code_is_kept_whole(continuation: str) -> None:
    assert plain_answer(continuation, INSTRUCTION) == PlainAnswer(continuation.strip(), ended=False)


@pytest.mark.parametrize(
    ("continuation", "answer"),
    [
        (" J'aime les pommes.\nInput: I like pears.\nOutput: J'aime les poires.", "J'aime les pommes."),
        (" J'aime les pommes.\n\nInput: I like pears.", "J'aime les pommes."),
        (" J'aime les pommes.\nOutput: J'aime les poires.", "J'aime les pommes."),
        (" Oui.\n\nInstruction: Write a poem.\nOutput: Roses...", "Oui."),
        (" Oui.\n\n### Instruction:\nWrite a poem.", "Oui."),
        (" Oui.\n\nTask: Write a poem.\nOutput:", "Oui."),
        (" Oui.\nTask : Write a poem.", "Oui."),
        (" Line one.\n\nLine two.\n\nInput: next", "Line one.\n\nLine two."),
    ],
)
def test_the_answer_ends_where_a_new_task_field_starts(continuation: str, answer: str) -> None:
    assert plain_answer(continuation, INSTRUCTION) == PlainAnswer(answer, ended=True)


@pytest.mark.parametrize(
    ("continuation", "answer"),
    [
        # What Gemma 3 270M wrote for this task, up to the "\nInput:" stop.
        (" I want to eat 1000 apples.\n\nTranslate the sentence into French.", "I want to eat 1000 apples."),
        (" J'aime.\n\nTranslate the sentence into French.\nJ'aime.\n\nTranslate", "J'aime."),
        (" J'aime.\nTranslate   the sentence\ninto French.", "J'aime."),  # any spacing
        (" J'aime.\n\n  Translate the sentence into French. Input: x", "J'aime."),
        (" Translate the sentence into French.", ""),  # only the instruction again: no answer
    ],
)
def test_the_answer_ends_where_the_instruction_is_repeated(continuation: str, answer: str) -> None:
    assert plain_answer(continuation, INSTRUCTION) == PlainAnswer(answer, ended=True)


@pytest.mark.parametrize(
    "continuation",
    [
        " Translate the text, then read it aloud.",  # a line that only begins like the instruction
        " Translate the sentence.",  # a prefix of the instruction, not all of it
        " The output: 42, the input: 6 times 7.",  # the words, not at a line's start
        "\n    Input: indented, part of the answer",
        " Task 1: gather data\nTask 2: clean it",  # numbered tasks are a plan, not a new task
        " Steps:\n1. Output: the result",
    ],
)
def test_lines_that_only_look_like_a_new_task_are_kept(continuation: str) -> None:
    assert plain_answer(continuation, INSTRUCTION) == PlainAnswer(continuation.strip(), ended=False)


def test_fenced_code_is_never_cut() -> None:
    code = "```\nInput: 3\nOutput: 9\nTranslate the sentence into French.\n```"
    text = f" Example:\n{code}\n\nDone."
    assert plain_answer(text, INSTRUCTION) == PlainAnswer(text.strip(), ended=False)
    assert plain_answer(f"{text}\nInput: next", INSTRUCTION) == PlainAnswer(text.strip(), ended=True)
    tilde = " ~~~\nTask: inside\n~~~\nTask: outside"
    assert plain_answer(tilde, INSTRUCTION) == PlainAnswer("~~~\nTask: inside\n~~~", ended=True)


def test_an_unclosed_fence_keeps_the_rest() -> None:
    text = " ```python\nprint(1)\nInput: still code"
    assert plain_answer(text, INSTRUCTION) == PlainAnswer(text.strip(), ended=False)


@pytest.mark.parametrize("continuation", ["", "   ", "\n\n", "\nInput: x", "Output: y"])
def test_no_answer_before_a_new_task_is_empty(continuation: str) -> None:
    assert plain_answer(continuation, INSTRUCTION).text == ""


def test_an_empty_instruction_repeats_nothing() -> None:
    assert plain_answer(" a\n\nb", "  ") == PlainAnswer("a\n\nb", ended=False)


def test_the_stops_do_not_cut_at_a_blank_line_and_are_few_enough_for_openai() -> None:
    assert all("\n\n" not in stop for stop in ANSWER_STOPS)
    assert len(ANSWER_STOPS) <= 4  # OpenAI's completions API refuses more
    # Whatever a stop cuts, the parser would have cut there too (or it is the end-of-text marker).
    for stop in ANSWER_STOPS:
        if stop.startswith("\n"):
            assert plain_answer(f" answer{stop} rest", INSTRUCTION) == PlainAnswer("answer", ended=True)
