"""Which LCS lengths can put a pair over the threshold: the exact tables the novelty index prunes with.

A candidate of `lc` tokens and an item of `lp` tokens with an LCS of L have F = 2L / (lc + lp).
rouge-score's float F exceeds the threshold t only if 2L > limit * (lc + lp) exactly, with
limit = t - MARGIN: a margin far wider than the float rounding of F, so nothing over the
threshold is ruled out. A match therefore needs L >= alpha(lc + lp), the smallest integer over
limit * n / 2, computed here in exact integer arithmetic (the limit as a fraction). The kernel
then finds the least LCS that really is over, with rouge-score's own float expression
(novelty_kernel.least_lcs), starting from alpha.

Prefix filtering (novelty_index.py) lists a text under the first `prefix[length]` elements of
its rarity order: enough that any partner it can match shares one of them.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

# Bounds are compared against `threshold - MARGIN` (see the module docstring).
MARGIN = 1e-9

Int64Array = np.ndarray[Any, np.dtype[np.int64]]


def exact_limit(threshold: float) -> tuple[int, int]:
    """`threshold - MARGIN` as an exact fraction (numerator, denominator): alpha is computed in integers."""
    limit = Fraction(threshold - MARGIN)
    return limit.numerator, limit.denominator


def match_tables(limit: tuple[int, int], size: int) -> tuple[Int64Array, Int64Array]:
    """alpha(n) for n < 2 * size, and the prefix length of every text length < size.

    alpha(n) is the least integer L with 2L > limit * n (and >= 1): no LCS below it
    can match. A text's prefix must hold length - alpha + 1 elements for every partner
    length that can match at all; alpha grows with the partner's length, so the shortest
    such partner decides. p - alpha(length + p) never decreases with p: bisection finds it.
    """
    numerator, denominator = limit
    n = np.arange(2 * size + 1, dtype=object)
    alpha = np.maximum(((n * numerator) // (2 * denominator) + 1).astype(np.int64), 1)
    prefix = np.zeros(size, dtype=np.int64)
    for length in range(1, size):
        if length < alpha[2 * length]:
            continue  # no partner can match
        low, high = 1, length  # the shortest partner p with p >= alpha(length + p)
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if middle >= alpha[length + middle] else (middle + 1, high)
        prefix[length] = length - int(alpha[length + low]) + 1
    return alpha, prefix
