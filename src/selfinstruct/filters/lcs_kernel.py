"""The bit-parallel LCS of `RougeNoveltyIndex` (numba): a query against pool items, in machine words.

A query of `lc` tokens becomes one bit mask per distinct token (its positions, 64 to a word,
sparse: only the words that are not zero). Each item token then updates a bit vector V with
Hyyro's rule V' = (V + (V & M)) | (V & ~M), and the LCS is the count of V's zero bits: one
word operation per item token when the query has at most 64 tokens, a carry chain over the
words when it has more. `novelty_kernel.py` calls it for the few items its bounds leave;
`pool_f_scores` scores a query against the whole pool (the similarity stats).

Each function is compiled once, on first use (numba, cached in __pycache__). The kernel's
compiled functions include these, and numba checks only the caller's own file for changes:
after editing this file, delete the kernel's cache (filters/__pycache__/*.nb[ic]).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True)
def popcount(x: np.uint64) -> int:
    x = x - ((x >> _ONE) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True)
def query_masks(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The query's bit masks: per distinct token, the 64-bit words of its positions that are not zero.

    Returns (table, rows, starts, word_of, bits): a small hash table from token id to its row
    (a power-of-two size over twice the query length, so it stays in L1 cache; looked up by
    multiplicative hashing, probing linearly), and row r's words in word_of/bits[starts[r]:
    starts[r + 1]], in order. Sparse, so a long query needs memory for its length only.
    """
    lc = len(tokens)
    size = 16
    while size < 2 * lc:
        size *= 2
    table = np.full(size, -1, dtype=np.int64)
    rows = np.empty(size, dtype=np.int64)
    row_of = np.empty(lc, dtype=np.int64)
    distinct = 0
    for p in range(lc):
        h = slot_of(table, tokens[p])
        if table[h] < 0:
            table[h], rows[h] = tokens[p], distinct
            distinct += 1
        row_of[p] = rows[h]
    last = np.full(distinct, -1, dtype=np.int64)  # per row, its last word so far
    starts = np.zeros(distinct + 1, dtype=np.int64)
    for p in range(lc):
        if last[row_of[p]] != p >> 6:
            last[row_of[p]] = p >> 6
            starts[row_of[p] + 1] += 1
    for r in range(distinct):
        starts[r + 1] += starts[r]
    word_of = np.empty(starts[distinct], dtype=np.int64)
    bits = np.zeros(starts[distinct], dtype=np.uint64)
    filled = starts[:distinct].copy()
    last[:] = -1
    for p in range(lc):
        r = row_of[p]
        if last[r] != p >> 6:
            last[r] = p >> 6
            word_of[filled[r]] = p >> 6
            filled[r] += 1
        bits[filled[r] - 1] |= _ONE << np.uint64(p & 63)
    return table, rows, starts, word_of, bits


@njit(cache=True)
def slot_of(table: np.ndarray, token: int) -> int:
    """Where the token is in the table, or the empty slot where it would go."""
    mask = len(table) - 1
    h = ((token * 0x9E3779B1) >> 7) & mask
    while table[h] >= 0 and table[h] != token:
        h = (h + 1) & mask
    return h


@njit(cache=True)
def lcs_length(
    masks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], lc: int, item: np.ndarray
) -> int:
    """LCS length by Hyyro's bit-parallel rule V' = (V + (V & M)) | (V & ~M); zeros of V count.

    One machine word when the query has at most 64 tokens, else a carry chain over words.
    A token the query lacks has M = 0 and leaves V as it is.
    """
    table, rows, starts, word_of, bits = masks
    words = (lc + 63) // 64
    if words == 1:
        v = _ALL
        for t in item:
            h = slot_of(table, t)
            if table[h] >= 0:
                u = v & bits[starts[rows[h]]]
                v = (v + u) | (v ^ u)
        return lc - popcount(v & ((_ALL >> np.uint64(64 - lc)) if lc < 64 else _ALL))
    vs = np.full(words, _ALL, dtype=np.uint64)
    for t in item:
        h = slot_of(table, t)
        if table[h] < 0:
            continue
        k, end = starts[rows[h]], starts[rows[h] + 1]
        carry = np.uint64(0)
        for w in range(words):
            m = np.uint64(0)
            if k < end and word_of[k] == w:
                m = bits[k]
                k += 1
            elif carry == 0:
                continue  # no match bits and no carry: this word stays as it is
            x = vs[w]
            u = x & m
            total = x + u
            high = total < x
            total2 = total + carry
            carry = np.uint64(1) if (high or total2 < total) else np.uint64(0)
            vs[w] = total2 | (x ^ u)
    zeros = 0
    for w in range(words):
        bits_in_word = min(64, lc - 64 * w)
        x = ~vs[w]
        if bits_in_word < 64:
            x &= (_ONE << np.uint64(bits_in_word)) - _ONE
        zeros += popcount(x)
    return zeros


@njit(cache=True, nogil=True)
def pool_f_scores(tokens: np.ndarray, items: int, s_start: np.ndarray, lengths: np.ndarray,
                  s_tok: np.ndarray, dense: np.ndarray) -> np.ndarray:  # fmt: skip
    """ROUGE-L F of the query against each of the first `items` pool items.

    The arithmetic of rouge_score (and of numpy over the LCS array, as this was computed
    before), operation for operation: precision = lcs / item length (1 for an empty item,
    whose lcs is 0), recall = lcs / query length, F = 2 * precision * recall / (precision +
    recall), 0 where both are 0. No fastmath, so the same float64 bits.

    `dense`: zeros, one per token id of the pool (and of the query), left as found. A query
    of at most 64 tokens puts its masks there, so that each item token is one load and four
    word operations, with no lookup and no branch (a token the query lacks has mask 0 and
    leaves V as it is): 5x faster than the hash table over a 26K pool. A longer query takes
    the sparse masks of `lcs_length`.
    """
    out = np.zeros(items, dtype=np.float64)
    lc = len(tokens)
    if lc == 0:
        return out
    if lc <= 64:
        for p in range(lc):
            dense[tokens[p]] |= _ONE << np.uint64(p)
        keep = (_ALL >> np.uint64(64 - lc)) if lc < 64 else _ALL
    else:
        masks = query_masks(tokens)
    for item in range(items):
        start, length = s_start[item], lengths[item]
        if lc <= 64:
            v = _ALL
            for j in range(start, start + length):
                u = v & dense[s_tok[j]]
                v = (v + u) | (v ^ u)
            lcs = lc - popcount(v & keep)
        else:
            lcs = lcs_length(masks, lc, s_tok[start : start + length])
        if lcs == 0:
            continue
        precision = lcs / max(length, 1)
        recall = lcs / lc
        out[item] = 2 * precision * recall / (precision + recall)
    if lc <= 64:
        for p in range(lc):
            dense[tokens[p]] = 0
    return out
