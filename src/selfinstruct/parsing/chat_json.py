"""A chat reply that is JSON, read tolerantly (issue 11).

A server that constrains the reply to a schema still leaves rough edges: a code fence around
the JSON, raw control characters inside strings (llama-cpp-python's grammar lets a model write
newlines there, which `json.loads` refuses), and, when max_tokens cuts the reply, JSON that
never closes. These functions take what can be taken. Pure functions.
"""

from __future__ import annotations

import json
import re
from typing import Any

FENCE = re.compile(r"^(?:```|~~~)")
_DECODER = json.JSONDecoder(strict=False)


def json_text(reply: str) -> str | None:
    """The reply without code-fence lines when it is JSON-shaped (starts with { or [), else None."""
    lines = reply.strip().splitlines()
    text = "\n".join(line for line in lines if not FENCE.match(line.strip())).strip()
    return text if text.startswith(("{", "[")) else None


def decode(text: str) -> Any:
    """The first JSON value of `text`, control characters in strings allowed; text after the
    value is ignored. Raises json.JSONDecodeError when there is no whole value."""
    try:
        value, _ = _DECODER.raw_decode(text)
    except (ValueError, RecursionError) as exc:  # ValueError: integers of more than 4300 digits
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), text, 0) from None
    return value


def complete_objects(text: str) -> list[dict[str, Any]]:
    """The outermost objects of broken JSON that are whole, in order.

    A reply cut by max_tokens ends inside its last object (and inside every object around
    it): those never close and are left out, and the whole ones before them are kept.
    """
    found: list[tuple[int, int, dict[str, Any]]] = []
    opened: list[int] = []
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            opened.append(index)
        elif char == "}" and opened:
            start = opened.pop()
            try:
                value = decode(text[start : index + 1])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                found.append((start, index, value))
    outermost, end = [], -1
    for start, stop, value in sorted(found, key=lambda item: item[0]):
        if start > end:  # not inside the object kept before
            outermost.append(value)
            end = stop
    return outermost
