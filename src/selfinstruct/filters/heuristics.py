"""Rule filters on one generated instruction (method.md 1.1), each switchable and named.

`check_instruction` returns the name of the first rule an instruction breaks, or None.
The names are the keys of `filters.enabled` in the config and of the run's funnel.
"""

from __future__ import annotations

import re
import string
from functools import lru_cache

from selfinstruct.config import FILTER_NAMES, FilterConfig

__all__ = ["FILTER_NAMES", "check_instruction"]


@lru_cache(maxsize=32)
def _blacklist_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    # Escaped, unlike the reference (method.md 5.3); a space in a phrase ("go to") matches
    # any run of whitespace so "go\nto" is caught too.
    alternatives = [r"\s+".join(re.escape(part) for part in word.split()) for word in words]
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


def check_instruction(text: str, config: FilterConfig) -> str | None:
    """The first rule `text` breaks, or None if it passes every enabled rule."""
    on = config.is_enabled
    if not text.strip():
        return "empty" if on("empty") else None
    n_words = len(text.split())
    if on("too_short") and n_words < config.min_words:
        return "too_short"
    if on("too_long") and n_words > config.max_words:
        return "too_long"
    pattern = _blacklist_pattern(tuple(config.blacklist))
    if on("blacklist") and pattern is not None and pattern.search(text):
        return "blacklist"
    if on("forbidden_prefix") and any(text.startswith(p) for p in config.forbidden_prefixes):
        return "forbidden_prefix"
    if on("punctuation_start") and text[0] in string.punctuation:
        return "punctuation_start"
    if on("non_ascii_start") and not text[0].isascii():
        return "non_ascii_start"
    return None
