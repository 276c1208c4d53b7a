"""The token log-probabilities in an OpenAI-compatible answer (asked for by `wire.logprobs_fields`).

The two APIs put them in different shapes, both under `choices[0].logprobs`:

- completions: parallel lists, `tokens[i]`, `token_logprobs[i]` and `top_logprobs[i]`
  (an object, text -> logprob);
- chat: `content[i]` = {token, logprob, top_logprobs: [{token, logprob}, ...]}.

Either becomes one `TokenLogprobs` per generated token; the generated token is added to its
own alternatives when the server left it out. Log-probabilities are extra to the answer: a
server that sends none, or a block that is not one of these shapes (a missing entry, a value
that is not a number), gives none at all, never some, since a reader lines the tokens up with
the text. The answer itself is still good, and whoever asked reads the text instead.
"""

from __future__ import annotations

import math
from typing import Any

from selfinstruct.llm.types import TokenLogprobs


class _Unreadable(Exception):
    """Not one of the two shapes: the answer is kept without log-probabilities."""


def parse_logprobs(choice: dict[str, Any], api: str) -> tuple[TokenLogprobs, ...]:
    """The log-probabilities of `choices[0]` (`choice`), or () when it has none readable."""
    block = choice.get("logprobs")
    if not isinstance(block, dict):
        return ()
    try:
        return _chat(block) if api == "chat" else _completions(block)
    except _Unreadable:
        return ()


def _completions(block: dict[str, Any]) -> tuple[TokenLogprobs, ...]:
    tokens, chosen, tops = block.get("tokens"), block.get("token_logprobs"), block.get("top_logprobs")
    if not (isinstance(tokens, list) and isinstance(chosen, list) and isinstance(tops, list)):
        raise _Unreadable
    if not len(tokens) == len(chosen) == len(tops):
        raise _Unreadable
    out = []
    for token, logprob, top in zip(tokens, chosen, tops, strict=True):
        if not isinstance(token, str) or not isinstance(top, dict):
            raise _Unreadable
        alternatives = {_text(text): _number(value) for text, value in top.items()}
        out.append(_with_own(token, _number(logprob), alternatives))
    return tuple(out)


def _chat(block: dict[str, Any]) -> tuple[TokenLogprobs, ...]:
    content = block.get("content")
    if not isinstance(content, list):
        raise _Unreadable
    out = []
    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("top_logprobs"), list):
            raise _Unreadable
        alternatives: dict[str, float] = {}
        for alternative in entry["top_logprobs"]:
            if not isinstance(alternative, dict):
                raise _Unreadable
            alternatives.setdefault(_text(alternative.get("token")), _number(alternative.get("logprob")))
        out.append(_with_own(_text(entry.get("token")), _number(entry.get("logprob")), alternatives))
    return tuple(out)


def _with_own(token: str, logprob: float, alternatives: dict[str, float]) -> TokenLogprobs:
    alternatives.setdefault(token, logprob)
    return TokenLogprobs(token, alternatives)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _Unreadable
    return value


def _number(value: Any) -> float:
    # bool is an int in Python; a log-probability is at most 0 (a little above: rounding).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Unreadable
    number = float(value)
    if math.isnan(number) or number > 1e-3:
        raise _Unreadable
    return min(number, 0.0)
