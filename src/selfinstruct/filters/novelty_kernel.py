"""The compiled inner loops of `RougeNoveltyIndex` (numba): search, add, rebuild (the LCS: lcs_kernel.py).

`novelty_index.py` explains the method; this file is its arithmetic, over flat arrays that
the index owns and grows. One call runs a whole batch of candidates in input order, so the
per-candidate cost is that of the work itself, not of Python. A call stops early, saying
why, when the postings array is full or the pool reached the size at which the rarity order
is refrozen; the index then grows or rebuilds and calls again from where it stopped.

Layout (ids are token or element ids, items are pool entries, all int64 unless noted):
  keys[id]          sort key: pool count at the last freeze << 32 | id (smaller = rarer)
  counts[id]        pool items containing the element now
  p_start/p_len/p_cap[id]   the element's list: a region of p_data
  p_data            postings, item << 32 | item length << 16 | position in the item's order
  s_start[item], lengths[item]   the item's tokens in s_tok (int32), elements in s_elem (int32)
  meta              [items, s_used, p_used, longest, next_freeze]
  state, touched    one scratch pair per searching thread: per item, its hits so far; the items hit
"""

from __future__ import annotations

import numpy as np
from numba import njit

from selfinstruct.filters import rouge
from selfinstruct.filters.lcs_kernel import lcs_length, popcount, query_masks

ITEMS, S_USED, P_USED, LONGEST, NEXT_FREEZE = range(5)
DONE, NEED_ROOM, FREEZE = range(3)  # why a batch call returned
CHECK, ADD_IF_NOVEL, ADD = range(3)  # what a batch call does with each candidate

KEY_SHIFT = 32
_ONE = np.uint64(1)


# rouge-score's F-measure, the project's own function compiled: numba's float64 arithmetic is
# IEEE, as Python's, so the two agree bit for bit.
fmeasure = njit(cache=True)(rouge.fmeasure)


@njit(cache=True)
def least_lcs(lc: int, lp: int, alpha: np.ndarray, threshold: float) -> int:
    """The least LCS whose F-measure is over the threshold; over min(lc, lp) when none is."""
    need = alpha[lc + lp]
    top = min(lc, lp)
    while need <= top and not fmeasure(need, lc, lp) > threshold:
        need += 1
    return need


@njit(cache=True)
def _bit_of(token: int) -> int:
    """The token's bit in a 128-bit signature (a one-hash Bloom filter of an item's tokens)."""
    return ((token * 0x9E3779B1) >> 11) & 127


@njit(cache=True)
def _missing(absent: np.uint64, on_bit: np.ndarray, word: int) -> int:
    """How many candidate tokens sit on the bits set in `absent` (word 0 or 1 of the signature)."""
    total = 0
    while absent:
        low = absent & (~absent + _ONE)
        total += on_bit[64 * word + popcount(low - _ONE)]
        absent ^= low
    return total


@njit(cache=True)
def _entry(item: int, length: int, j: int) -> int:
    """A posting: item << 32 | its length << 16 | the element's position j in the item's order.

    A position past 0xFFFF is stored as 0xFFFF (a smaller j only loosens a bound); a length
    past 0xFFFF as 0, which turns the checks that need it off for this item.
    """
    return (item << 32) | ((length if length <= 0xFFFF else 0) << 16) | min(j, 0xFFFF)


@njit(cache=True)
def _append(e: int, entry: int, p_start: np.ndarray, p_len: np.ndarray, p_cap: np.ndarray,
            p_data: np.ndarray, meta: np.ndarray) -> None:  # fmt: skip
    """Append to an element's list, moving it to the end of p_data, twice as large, when full."""
    if p_len[e] == p_cap[e]:
        capacity = max(4, 2 * p_cap[e])
        start = meta[P_USED]
        for k in range(p_len[e]):
            p_data[start + k] = p_data[p_start[e] + k]
        p_start[e], p_cap[e] = start, capacity
        meta[P_USED] = start + capacity
    p_data[p_start[e] + p_len[e]] = entry
    p_len[e] += 1


@njit(cache=True, nogil=True)
def search_batch(
    first: int, stride: int, offsets: np.ndarray, q_tok: np.ndarray, q_elem: np.ndarray, out: np.ndarray,
    threshold: float, alpha: np.ndarray, prefix: np.ndarray, keys: np.ndarray,
    p_start: np.ndarray, p_len: np.ndarray, p_data: np.ndarray, s_start: np.ndarray, lengths: np.ndarray,
    s_tok: np.ndarray, sigs: np.ndarray, meta: np.ndarray, state: np.ndarray, touched: np.ndarray,
) -> None:  # fmt: skip
    """out[q] = 1 if candidate q matches no item of the pool as it is, for q = first, first + stride...

    Reads the index only: two threads, each with its own scratch (state, touched),
    can search halves of a batch at once. The batch's own candidates are not seen here.
    """
    items = meta[ITEMS]
    for q in range(first, len(offsets) - 1, stride):
        lo, hi = offsets[q], offsets[q + 1]
        lc = hi - lo
        out[q] = 1
        if lc > 0 and items > 0 and prefix[lc] > 0:
            elements = q_elem[lo:hi]
            order = np.argsort(keys[elements])
            if not _search(0, lc, q_tok[lo:hi], elements, order, threshold, alpha, prefix, p_start, p_len,
                           p_data, s_start, lengths, s_tok, sigs, state, touched):  # fmt: skip
                out[q] = 0


@njit(cache=True)
def run_batch(
    mode: int, first: int, searched: int, offsets: np.ndarray, q_tok: np.ndarray, q_elem: np.ndarray,
    out: np.ndarray, threshold: float, alpha: np.ndarray, prefix: np.ndarray,
    keys: np.ndarray, counts: np.ndarray, p_start: np.ndarray, p_len: np.ndarray, p_cap: np.ndarray,
    p_data: np.ndarray, s_start: np.ndarray, lengths: np.ndarray, s_tok: np.ndarray, s_elem: np.ndarray,
    sigs: np.ndarray, meta: np.ndarray, state: np.ndarray, touched: np.ndarray,
) -> tuple[int, int]:  # fmt: skip
    """Decide candidates first.. in order; out[q] = 1 when novel (and added, unless mode is CHECK).

    Items below `searched` were already searched for (by `search_batch`: out[q] holds the
    answer); only the items added since are searched here. Returns (the candidate to resume
    from, DONE / NEED_ROOM / FREEZE).
    """
    for q in range(first, len(offsets) - 1):
        lo, hi = offsets[q], offsets[q + 1]
        lc = hi - lo
        novel = mode == ADD or out[q] == 1
        if not novel:
            continue  # matched in the pool by search_batch
        tokens, elements = q_tok[lo:hi], q_elem[lo:hi]
        order = np.argsort(keys[elements])
        if mode != ADD and lc > 0 and meta[ITEMS] > searched and prefix[lc] > 0:
            novel = _search(searched, lc, tokens, elements, order, threshold, alpha, prefix, p_start, p_len,
                            p_data, s_start, lengths, s_tok, sigs, state, touched)  # fmt: skip
        out[q] = 1 if novel else 0
        if not novel or mode == CHECK:
            continue
        # Room for the worst case: every listed element moved to a region twice its size.
        listed = prefix[lc]
        room = 0
        for j in range(listed):
            e = elements[order[j]]
            if p_len[e] == p_cap[e]:
                room += max(4, 2 * p_cap[e])
        if meta[P_USED] + room > len(p_data):
            out[q] = 1  # searched again on the next call: no harm, the answer cannot change
            return q, NEED_ROOM
        item, start = meta[ITEMS], meta[S_USED]
        s_start[item], lengths[item] = start, lc
        sigs[item, 0], sigs[item, 1] = 0, 0
        for k in range(lc):
            s_tok[start + k] = tokens[k]
            s_elem[start + k] = elements[k]
            counts[elements[k]] += 1
            bit = _bit_of(tokens[k])
            sigs[item, bit >> 6] |= _ONE << np.uint64(bit & 63)
        meta[ITEMS] = item + 1
        meta[S_USED] = start + lc
        meta[LONGEST] = max(meta[LONGEST], lc)
        if item + 1 >= meta[NEXT_FREEZE]:
            return q + 1, FREEZE  # the rebuild lists this item with all the others
        for j in range(listed):
            _append(elements[order[j]], _entry(item, lc, j), p_start, p_len, p_cap, p_data, meta)
    return len(offsets) - 1, DONE


@njit(cache=True)
def _first_at_least(p_data: np.ndarray, lo: int, hi: int, item: int) -> int:
    """The first index in p_data[lo:hi] (a list, sorted by item) whose item is >= item."""
    while lo < hi:
        middle = (lo + hi) // 2
        if (p_data[middle] >> 32) < item:
            lo = middle + 1
        else:
            hi = middle
    return lo


@njit(cache=True, nogil=True)
def _search(
    searched: int, lc: int, tokens: np.ndarray, elements: np.ndarray, order: np.ndarray, threshold: float,
    alpha: np.ndarray, prefix: np.ndarray, p_start: np.ndarray, p_len: np.ndarray, p_data: np.ndarray,
    s_start: np.ndarray, lengths: np.ndarray, s_tok: np.ndarray, sigs: np.ndarray,
    state: np.ndarray, touched: np.ndarray,
) -> bool:  # fmt: skip
    """True iff no pool item from `searched` on has an F-measure over the threshold with this candidate.

    state[item] = hits << 40 | i << 20 | j of the last hit, zero again when done.
    """
    found = 0
    for i in range(prefix[lc]):
        e = elements[order[i]]
        lo, hi = p_start[e], p_start[e] + p_len[e]
        if searched > 0:
            lo = _first_at_least(p_data, lo, hi, searched)
        room = lc - 1 - i  # candidate elements after this one
        for k in range(lo, hi):
            entry = p_data[k]
            lp = (entry >> 16) & 0xFFFF
            j = entry & 0xFFFF
            # Positional filter: with this as the first shared element, at most 1 + min(room,
            # lp - 1 - j) are shared. If that is short, so is any later first hit; and an item
            # already hit keeps a bound from its earlier hit that is larger still. Skip.
            if lp != 0 and 1 + min(room, lp - 1 - j) < alpha[lc + lp]:
                continue
            item = entry >> 32
            s = state[item]
            if s == 0:
                touched[found] = item
                found += 1
            state[item] = (((s >> 40) + 1) << 40) | (min(i, 0xFFFFF) << 20) | j
    if found == 0:
        return True
    # Signature bound: a candidate token whose bit the item's signature lacks is not in the
    # item, so the overlap is at most lc minus the candidate tokens on such bits.
    on_bit = np.zeros(128, dtype=np.int64)  # candidate tokens per signature bit
    mine = np.zeros(2, dtype=np.uint64)
    for t in tokens:
        bit = _bit_of(t)
        on_bit[bit] += 1
        mine[bit >> 6] |= _ONE << np.uint64(bit & 63)
    # Positional bound: the h hits, plus what can still be shared after the last of them.
    candidates = np.empty(found, dtype=np.int64)
    needs = np.empty(found, dtype=np.int64)
    bounds = np.empty(found, dtype=np.int64)
    kept = 0
    for n in range(found):
        item = touched[n]
        s = state[item]
        state[item] = 0
        lp = lengths[item]
        after = min(lc - 1 - ((s >> 20) & 0xFFFFF), lp - 1 - (s & 0xFFFFF))
        bound = min((s >> 40) + after, lc, lp)
        if bound < alpha[lc + lp]:
            continue
        missing = _missing(mine[0] & ~sigs[item, 0], on_bit, 0) + _missing(
            mine[1] & ~sigs[item, 1], on_bit, 1
        )
        bound = min(bound, lc - missing)
        if bound >= alpha[lc + lp]:
            need = least_lcs(lc, lp, alpha, threshold)
            if bound >= need:
                candidates[kept], needs[kept], bounds[kept] = item, need, -bound
                kept += 1
    if kept == 0:
        return True
    best_first = np.argsort(bounds[:kept], kind="mergesort")
    masks = query_masks(tokens)
    for n in best_first:
        item = candidates[n]
        start = s_start[item]
        if lcs_length(masks, lc, s_tok[start : start + lengths[item]]) >= needs[n]:
            return False
    return True


@njit(cache=True)
def rebuild(
    keys: np.ndarray, counts: np.ndarray, ids: int, p_start: np.ndarray, p_len: np.ndarray, p_cap: np.ndarray,
    s_start: np.ndarray, lengths: np.ndarray, s_elem: np.ndarray, meta: np.ndarray, prefix: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Refreeze the order on today's pool counts and list every item again; returns the new p_data."""
    for e in range(ids):
        keys[e] = (counts[e] << KEY_SHIFT) | e
        p_len[e] = 0
    items = meta[ITEMS]
    orders = []
    for item in range(items):  # count each element's listings first, for exact regions
        elements = s_elem[s_start[item] : s_start[item] + lengths[item]]
        order = np.argsort(keys[elements])
        orders.append(order)
        for j in range(prefix[lengths[item]]):
            p_len[elements[order[j]]] += 1
    used = 0
    for e in range(ids):
        p_start[e] = used
        p_cap[e] = 2 * p_len[e] if p_len[e] > 0 else 0
        used += p_cap[e]
        p_len[e] = 0
    p_data = np.empty(max(2 * used, 1024), dtype=np.int64)
    for item in range(items):
        elements = s_elem[s_start[item] : s_start[item] + lengths[item]]
        order = orders[item]
        for j in range(prefix[lengths[item]]):
            e = elements[order[j]]
            p_data[p_start[e] + p_len[e]] = _entry(item, lengths[item], j)
            p_len[e] += 1
    meta[P_USED] = used
    meta[NEXT_FREEZE] = 2 * items
    return p_data
