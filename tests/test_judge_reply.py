"""quality/judge_reply.py: a judge's four answers, read as expected values where log-probabilities allow."""

from __future__ import annotations

import math
import re

import pytest

from selfinstruct.llm.types import TokenLogprobs
from selfinstruct.quality.judge_reply import parse_reply, read_verdict

REPLY = "Valid task: yes\nAppropriate input: yes\nCorrect output: no\nScore: 4"


def tokens(text: str, alternatives: dict[str, dict[str, float]]) -> tuple[TokenLogprobs, ...]:
    """`text` cut before each run of spaces ("Score:", " 4"), each piece certain, except the
    first piece of each text named in `alternatives`, which gets those probabilities."""
    left = dict(alternatives)
    out = []
    for piece in re.findall(r"\s*\S+", text):
        top = left.pop(piece, {piece: 1.0})
        out.append(TokenLogprobs(piece, {t: math.log(p) for t, p in top.items()}))
    assert "".join(t.token for t in out) == text and not left
    return tuple(out)


# -- parsing ----------------------------------------------------------------------------------


def test_reads_the_four_answers() -> None:
    parsed = parse_reply(REPLY)
    assert parsed is not None
    assert [a.value for a in parsed.answers().values()] == ["yes", "yes", "no", "4"]
    assert REPLY[parsed.score.start] == "4"


@pytest.mark.parametrize(
    "text",
    [
        "valid task: YES\nappropriate input:no\nCORRECT OUTPUT :   Yes\nscore:2",
        "**Valid task:** yes\n**Appropriate input:** no\n**Correct output:** yes\n**Score:** 2",
        "Here is my review.\n- Valid task: Yes.\n- Appropriate  input: No\n- Correct output: yes\n- Score: 2/5",
        "Valid task: yes\nAppropriate input: no\nCorrect output: yes\nOverall score: 2 out of 5\nThanks!",
    ],
)
def test_case_spacing_markdown_and_prose_around_do_not_matter(text: str) -> None:
    parsed = parse_reply(text)
    assert parsed is not None
    assert [a.value for a in parsed.answers().values()] == ["yes", "no", "yes", "2"]


@pytest.mark.parametrize(
    "text",
    [
        "Valid task: yes\nAppropriate input: yes\nCorrect output: no",  # no score
        "Valid task: yes\nCorrect output: no\nScore: 4",  # no input answer
        "Valid task: maybe\nAppropriate input: yes\nCorrect output: no\nScore: 4",
        "Valid task: yes\nAppropriate input: yes\nCorrect output: no\nScore: 6",
        "Valid task: yes\nAppropriate input: yes\nCorrect output: no\nScore: 0",
        "Valid task: yes\nAppropriate input: yes\nCorrect output: no\nScore: 4.5",
        "Valid task: yes\nAppropriate input: yes\nCorrect output: no\nScore: 45",
        "Valid task: yesterday\nAppropriate input: yes\nCorrect output: no\nScore: 4",
        "The valid task: yes, appropriate input: yes, correct output: no, score: 4",  # not at line starts
        "",
    ],
)
def test_a_missing_or_out_of_range_answer_is_no_verdict(text: str) -> None:
    assert parse_reply(text) is None
    assert read_verdict(text) is None


# -- the verdict ------------------------------------------------------------------------------


def test_without_logprobs_the_answers_written_are_the_verdict() -> None:
    verdict = read_verdict(REPLY)
    assert verdict is not None
    assert (verdict.valid_task, verdict.appropriate_input, verdict.correct_output) == (1.0, 1.0, 0.0)
    assert (verdict.score, verdict.score_from) == (4.0, "answer")


def test_the_score_is_the_expected_value_over_the_score_tokens_renormalised() -> None:
    logprobs = tokens(REPLY, {" 4": {" 4": 0.5, " 3": 0.3, "5": 0.1, " maybe": 0.1}})
    verdict = read_verdict(REPLY, logprobs)
    assert verdict is not None and verdict.score_from == "logprobs"
    # " 4" and "5" both read as scores; " maybe" does not count.
    assert verdict.score == pytest.approx((4 * 0.5 + 3 * 0.3 + 5 * 0.1) / 0.9)
    assert (verdict.valid_task, verdict.appropriate_input, verdict.correct_output) == (1.0, 1.0, 0.0)


def test_each_question_is_the_probability_of_yes_summed_over_its_spellings() -> None:
    logprobs = tokens(REPLY, {" no": {" no": 0.5, " yes": 0.2, " Yes": 0.1, " perhaps": 0.2}})
    verdict = read_verdict(REPLY, logprobs)
    assert verdict is not None
    assert verdict.correct_output == pytest.approx(0.3 / 0.8)
    assert verdict.valid_task == 1.0


def test_logprobs_that_do_not_spell_the_reply_fall_back_to_the_answers() -> None:
    logprobs = tokens(REPLY.replace("Score: 4", "Score: 3"), {" 3": {" 3": 0.6, " 4": 0.4}})
    verdict = read_verdict(REPLY, logprobs)
    assert verdict is not None and (verdict.score, verdict.score_from) == (4.0, "answer")


def test_an_answer_token_that_is_not_the_answer_alone_falls_back_to_the_answers() -> None:
    text = REPLY.replace("Score: 4", "Score: 4.")
    glued = [*tokens(REPLY, {})[:-1], TokenLogprobs(" 4.", {" 4.": -0.1, " 3.": -2.0})]
    verdict = read_verdict(text, glued)
    assert verdict is not None and (verdict.score, verdict.score_from) == (4.0, "answer")


def test_too_few_logprobs_fall_back_to_the_answers() -> None:
    logprobs = tokens(REPLY, {})[:5]  # the answers after the first line have none
    verdict = read_verdict(REPLY, logprobs)
    assert verdict is not None and verdict.score_from == "answer"


def test_a_completion_judges_tokens_start_after_the_label_the_prompt_wrote() -> None:
    generated = REPLY.removeprefix("Valid task:")
    logprobs = tokens(generated, {" yes": {" yes": 0.9, " no": 0.1}})
    verdict = read_verdict(REPLY, logprobs, offset=len("Valid task:"))
    assert verdict is not None and verdict.score_from == "logprobs"
    assert verdict.valid_task == pytest.approx(0.9)
    assert verdict.appropriate_input == 1.0  # its " yes" is the second: certain
