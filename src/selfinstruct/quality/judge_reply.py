"""A judge's reply -> its verdict on one row: three yes/no answers and an overall score 1-5.

The judge is asked for four lines (prompts/quality_judge.yaml, prompts/chat.yaml):

    Valid task: yes
    Appropriate input: yes
    Correct output: no
    Score: 2

`parse_reply` finds them: labels in any case and spacing, anywhere in the reply but each at
the start of a line (after markdown such as `**` or `- `), the first of each kept. A reply
without all four, or with a score outside 1-5, is no verdict (None): the caller counts it as
a failure and writes no score, never a guess.

`read_verdict` then reads each answer's probability where the judge gave token
log-probabilities (DEITA's expected-value score): the token that wrote the answer, and its
alternatives at that position, give
- a yes/no: p("yes") / (p("yes") + p("no")), each summed over the texts that read so
  ("Yes", " yes", ...);
- the score: sum(k * p(k)) / sum(p(k)) over the texts that read "1" .. "5".
That is steadier than the one token sampled: a judge torn between 3 and 4 gives about 3.5,
not whichever won. When any answer cannot be read this way (no log-probabilities, or the
answer's token is not the answer alone, such as "Yes." in one token), every answer is the
parsed one (yes = 1, no = 0), and the verdict says so: score_from "answer".
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from selfinstruct.llm.types import TokenLogprobs

QUESTIONS = ("valid_task", "appropriate_input", "correct_output")
SCORES = ("1", "2", "3", "4", "5")

_LINE_START = r"^[ \t>*_#-]*"
_SEPARATOR = r"[ \t*_]*:[ \t*_]*"
_YES_NO = r"(yes|no)\b"
_FIELDS = {
    "valid_task": re.compile(_LINE_START + r"valid[ \t]*task" + _SEPARATOR + _YES_NO, re.I | re.M),
    "appropriate_input": re.compile(
        _LINE_START + r"appropriate[ \t]*input" + _SEPARATOR + _YES_NO, re.I | re.M
    ),
    "correct_output": re.compile(_LINE_START + r"correct[ \t]*output" + _SEPARATOR + _YES_NO, re.I | re.M),
    # A whole number: "4", "4/5" and "4 out of 5" are 4; "4.5", "45" and "0" are no score.
    "score": re.compile(
        _LINE_START + r"(?:overall[ \t]*)?score" + _SEPARATOR + r"(\d+)(?![\d.,]\d)", re.I | re.M
    ),
}


@dataclass(frozen=True)
class Answer:
    """One field of the reply: the value written ("yes", "no", "1".."5") and where it starts."""

    value: str
    start: int


@dataclass(frozen=True)
class ParsedReply:
    valid_task: Answer
    appropriate_input: Answer
    correct_output: Answer
    score: Answer

    def answers(self) -> dict[str, Answer]:
        return {name: getattr(self, name) for name in (*QUESTIONS, "score")}


@dataclass(frozen=True)
class Verdict:
    """A row's ratings: each question a probability of yes (0-1), the score 1-5."""

    valid_task: float
    appropriate_input: float
    correct_output: float
    score: float
    score_from: str  # "logprobs" or "answer"

    def details(self) -> dict[str, float | str]:
        return {
            "valid_task": self.valid_task,
            "appropriate_input": self.appropriate_input,
            "correct_output": self.correct_output,
            "score_from": self.score_from,
        }


def parse_reply(text: str) -> ParsedReply | None:
    """The four answers in `text`, or None when one is missing or the score is not 1-5."""
    found: dict[str, Answer] = {}
    for name, pattern in _FIELDS.items():
        match = pattern.search(text)
        if match is None:
            return None
        found[name] = Answer(match.group(1).lower().lstrip("0") or "0", match.start(1))
    if found["score"].value not in SCORES:
        return None
    return ParsedReply(**found)


def read_verdict(text: str, logprobs: Sequence[TokenLogprobs] = (), offset: int = 0) -> Verdict | None:
    """The verdict of a reply, from its log-probabilities where they can be read (see the
    module doc), else from its answers; None for a reply `parse_reply` rejects.

    `offset`: where the generated tokens start in `text` (a completion judge's reply is read
    with the start of its answer line, which the prompt wrote, in front).
    """
    parsed = parse_reply(text)
    if parsed is None:
        return None
    answers = parsed.answers()
    read = {name: _expected(text, logprobs, offset, answer, name) for name, answer in answers.items()}
    if all(value is not None for value in read.values()):
        values = {name: float(value) for name, value in read.items() if value is not None}
        return Verdict(**values, score_from="logprobs")
    return Verdict(
        **{name: 1.0 if answers[name].value == "yes" else 0.0 for name in QUESTIONS},
        score=float(parsed.score.value),
        score_from="answer",
    )


def _expected(
    text: str, logprobs: Sequence[TokenLogprobs], offset: int, answer: Answer, name: str
) -> float | None:
    """The answer's expected value from the alternatives at the token that wrote it, or None."""
    token = _token_at(text, logprobs, offset, answer.start)
    if token is None or _reads_as(token.token) != answer.value:
        return None
    mass: dict[str, float] = {}
    for alternative, logprob in token.top.items():
        reading = _reads_as(alternative)
        if reading in (SCORES if name == "score" else ("yes", "no")):
            mass[reading] = mass.get(reading, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if not total > 0.0:
        return None
    if name == "score":
        return sum(int(k) * p for k, p in mass.items()) / total
    return mass.get("yes", 0.0) / total


def _token_at(
    text: str, logprobs: Sequence[TokenLogprobs], offset: int, position: int
) -> TokenLogprobs | None:
    """The generated token whose text covers `position` of `text`, if the tokens up to it
    spell out the text exactly (else they do not belong to it, and none is)."""
    start = offset
    for token in logprobs:
        end = start + len(token.token)
        if text[start:end] != token.token:
            return None
        if start <= position < end:
            return token
        start = end
    return None


def _reads_as(token: str) -> str:
    return token.strip().lower()
