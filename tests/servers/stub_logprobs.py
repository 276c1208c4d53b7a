"""Token log-probabilities as the loopback stub (openai_stub.py) sends them, in both APIs' shapes.

A request that asks for them (`logprobs` in its body) gets them for the text it is answered
with: those scripted for its prompt (`OpenAIStub.reply(prompt, text, logprobs=...)`: one
(token, {text: logprob}) per token, the tokens making up the text), else the text cut into
words, each certain (logprob 0) and alone. `OpenAIStub.send_logprobs = False` plays a server
that never sends any.
"""

from __future__ import annotations

import re
from typing import Any

Tokens = list[tuple[str, dict[str, float]]]


def plain_tokens(text: str) -> Tokens:
    """The text cut before each run of spaces: every piece certain."""
    return [(piece, {piece: 0.0}) for piece in re.findall(r"\s*\S+|\s+$", text)]


def logprobs_block(tokens: Tokens, api: str, asked: int) -> dict[str, Any]:
    """`choices[0].logprobs` for `tokens`, at most `asked` alternatives each (the most likely)."""

    def top(alternatives: dict[str, float]) -> list[tuple[str, float]]:
        return sorted(alternatives.items(), key=lambda item: -item[1])[:asked]

    if api == "chat":
        content = [
            {
                "token": token,
                "logprob": alternatives.get(token, -30.0),
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": p, "bytes": None} for t, p in top(alternatives)],
            }
            for token, alternatives in tokens
        ]
        return {"content": content, "refusal": None}
    offsets, at = [], 0
    for token, _ in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "tokens": [token for token, _ in tokens],
        "token_logprobs": [alternatives.get(token, -30.0) for token, alternatives in tokens],
        "top_logprobs": [dict(top(alternatives)) for _, alternatives in tokens],
        "text_offset": offsets,
    }


def asked_top(body: dict[str, Any], api: str) -> int:
    """How many alternatives the request asks for (0: none)."""
    if api == "chat":
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    return int(body.get("logprobs") or 0)
