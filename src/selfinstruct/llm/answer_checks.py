"""The checks every provider's answer parser makes on a 200's body, which is untrusted text.

A body of the wrong shape is "garbled" (worth another try, never stored); a token count must
be a whole number of at least 0; a detail quoted in a message is one short line, and a JSON
value is named by its kind rather than repeated whole.
"""

from __future__ import annotations

import json
import math
from typing import Any

from selfinstruct.errors import RetryableBackendError

_DETAIL_LIMIT = 120


def token_count(usage: dict[str, Any], name: str) -> int:
    """`usage[name]` as a token count; 0 when absent or null, "garbled" when not a count."""
    value = usage.get(name)
    if value is None:
        return 0
    # bool is an int in Python, and JSON floats such as 12.0 or NaN come from sloppy servers.
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise garbled(f"usage.{name} is {describe(value)}, not a token count")
    return value


def garbled(detail: str) -> RetryableBackendError:
    return RetryableBackendError(f"malformed response ({detail})", kind="garbled")


def describe(value: Any) -> str:
    """A short rendering of a JSON value for a message: scalars as written, containers by kind."""
    if isinstance(value, (dict, list)):
        return kind_of(value)
    return short(json.dumps(value))


def kind_of(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def short(text: str) -> str:
    """`text` on one line, at most ~120 characters."""
    line = " ".join(text.split())
    return line if len(line) <= _DETAIL_LIMIT else line[: _DETAIL_LIMIT - 3] + "..."
