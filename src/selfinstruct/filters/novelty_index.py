"""`RougeNoveltyIndex`: rouge-score's keep/drop decision against a growing pool, without its O(N^2) cost.

Self-Instruct keeps a candidate only if its ROUGE-L F-measure against every item already in
the pool is <= the threshold (0.7). The reference scores each candidate against the whole
pool. This index gives the same decision, float for float, but computes an LCS only for the
few items that could exceed the threshold, and finds those few without scanning the pool:
a prefix-filtered inverted index, as in set-similarity joins (AllPairs, PPJoin).

Why an item can be ruled out (lossless). A candidate of `lc` tokens and an item of `lp`
tokens with an LCS of L have F = 2L / (lc + lp). rouge-score's float F exceeds the threshold
t only if 2L > limit * (lc + lp) exactly, with limit = t - 1e-9: a margin far wider than the
float rounding of F. So a match needs L >= alpha(lc + lp), the smallest integer over
limit * n / 2, computed in exact integer arithmetic. An LCS is a common sub-multiset of
tokens, so L <= o, their multiset overlap. Treating the k-th occurrence of a token as its own
element ("the", "the#2") turns each text into a set, and o into the size of an intersection.

Prefix filtering. Order all elements by how rare they are in the pool (a single global order)
and sort each text's elements by it. If two sets share >= alpha elements, the first
|x| - alpha + 1 elements of x and the first |y| - alpha + 1 of y share one (pigeonhole). So the
index lists each item only under the elements of its prefix (the rarest ~46% at 0.7), and a
candidate probes only the lists of its own prefix. Common words sit at the end of both
prefixes and are never looked at. Elements the pool has never seen come first in the order;
no list holds them, so they only use up a candidate's prefix.

Positional bound. For an item found under h of the probed elements, the last of them at
position i in the candidate and j in the item: every shared element before it in the order is
among the h, and those after it number at most min(lc - 1 - i, lp - 1 - j). The item is skipped
unless min(h + that, lc, lp) >= alpha(lc + lp); only the survivors get an LCS (rapidfuzz,
bit-parallel), best bound first, and the search stops at the first item over the threshold.
The decision itself always uses rouge-score's float expression on the real LCS, so boundary
cases come out as rouge-score has them: an LCS of 7 between 7 and 13 tokens gives
2*P*R/(P+R) = 0.7000000000000001, over 0.7, though 2*7/20 is 0.7.

The order is refrozen (and the lists rebuilt) each time the pool doubles, so it follows the
pool's real frequencies at a cost of O(pool) amortised work; elements new since the last
freeze count as rarest. Candidates that are dropped leave nothing behind: memory is O(pool).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, cast

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from selfinstruct.filters.rouge import TOKENIZERS, TextOrTokens, TokenizerName

# Bounds are compared against `threshold - _MARGIN` (see the module docstring).
_MARGIN = 1e-9

# Item token sequences are stored as strings, one character per token id: compact, and
# the fastest input for rapidfuzz. Past this many ids, they no longer fit in a character
# and the index switches to tuples of ints (exact too, about half as fast).
_MAX_CHAR_ID = 0x10FFFF

# A posting is one int64: item << _POSITION_BITS | the element's position in the item's order.
# A position past the mask is stored as the mask: a smaller j only loosens the bound.
_POSITION_BITS = 20
_POSITION_MASK = (1 << _POSITION_BITS) - 1

_FIRST_FREEZE = 256  # pool size at which the rarity order is first frozen; again at each doubling
_KEY_SHIFT = 32  # sort key of an element: its pool count at the last freeze << 32 | its id
_NUMPY_FROM = 48
_SINGLE_CHECKS = 8  # survivors checked one call each before the rest go to rapidfuzz in one batch
_SENTINEL = array(
    "q", [(1 << 51) - 1]
).tobytes()  # a posting past every real item  # postings to scan before numpy is faster than a Python loop


class RougeNoveltyIndex:
    """A growing pool of texts that answers "is this text novel?" exactly as rouge-score would.

    A text is novel iff its ROUGE-L F-measure against every pool item is <= `threshold`.
    Methods take a string, or the tokens from `tokenize` (to tokenise only once).
    Thread-safe: every method holds one lock, so `add_if_novel` is atomic.
    `keep_texts=False` saves memory when `similarity_stats` is not needed.
    """

    def __init__(
        self, threshold: float = 0.7, tokenizer: TokenizerName = "rouge", *, keep_texts: bool = True
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r}; known: {sorted(TOKENIZERS)}")
        self.threshold = float(threshold)
        self._tokenizer = TOKENIZERS[tokenizer]
        self._lock = threading.RLock()
        limit = Fraction(self.threshold - _MARGIN)  # exact: alpha is computed in integers
        self._limit_num, self._limit_den = limit.numerator, limit.denominator
        self._alpha = np.zeros(0, dtype=np.int64)  # lc + lp -> the least LCS that can match
        self._prefix_lengths: dict[
            int, int
        ] = {}  # token count -> how many of its first elements are probed/listed
        # Ids start at 1 and are shared by tokens (str keys, used in the LCS sequences) and by
        # repeated occurrences ((token id, k) keys); 0 stands for anything the pool has not seen.
        self._ids: dict[str | tuple[int, int], int] = {}
        self._counts = array("q", [0])  # element id -> how many pool items contain it
        self._keys: list[int] = [0]  # element id -> its place in the rarity order (smaller = rarer)
        self._postings: list[array[int] | None] = [None]  # element id -> items listing it in their prefix
        self._sequences: list[str | tuple[int, ...]] = []  # item -> its token ids, encoded
        self._lengths = np.zeros(1024, dtype=np.int64)  # item -> its token count
        self._encode: Callable[[list[int]], str | tuple[int, ...]] = _chars
        self._texts: list[str] | None = [] if keep_texts else None
        self._next_freeze = _FIRST_FREEZE
        self._longest = 0  # the most tokens of any item
        self._least: dict[int, np.ndarray[Any, np.dtype[np.int64]]] = {}  # see _least_lcs

    def __len__(self) -> int:
        return len(self._sequences)

    def tokenize(self, text: str) -> list[str]:
        """The index's tokenizer; its output can be passed to every method instead of the text."""
        return self._tokenizer(text)

    def _as_tokens(self, text: TextOrTokens) -> Sequence[str]:
        return self._tokenizer(text) if isinstance(text, str) else text

    def add(self, text: TextOrTokens) -> None:
        """Put a text into the pool (no novelty check)."""
        with self._lock:
            self._add(text, self._as_tokens(text))

    def is_novel(self, text: TextOrTokens) -> bool:
        """True iff the ROUGE-L F-measure against every pool item is <= threshold."""
        with self._lock:
            return self._first_match(self._as_tokens(text)) is None

    def add_if_novel(self, text: TextOrTokens) -> bool:
        """Add the text if it is novel; return whether it was added."""
        with self._lock:
            tokens = self._as_tokens(text)
            if self._first_match(tokens) is not None:
                return False
            self._add(text, tokens)
            return True

    # -- bounds -----------------------------------------------------------------------

    def _alpha_table(self, n: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """alpha(m) for m = 0..n at least: the least integer L with 2L > limit * m, and >= 1."""
        if len(self._alpha) <= n:
            size = max(2 * n + 2, 256)
            m = np.arange(size, dtype=object)
            alpha = (m * self._limit_num) // (2 * self._limit_den) + 1  # Python ints: exact
            self._alpha = np.maximum(alpha.astype(np.int64), 1)
        return self._alpha

    def _prefix_length(self, length: int) -> int:
        """How many of a text's first elements must be probed (or listed) so that no match is missed.

        The prefix must hold length - alpha + 1 elements for every partner length that can
        match at all; alpha grows with the partner's length, so the shortest such partner
        decides. p - alpha(length + p) never decreases with p, so it is found by bisection.
        """
        prefix = self._prefix_lengths.get(length)
        if prefix is None:
            alpha = self._alpha_table(2 * length)
            prefix = 0  # no partner can match: length < alpha(2 * length)
            if length >= alpha[2 * length]:
                low, high = 1, length  # the shortest partner p with p >= alpha(length + p)
                while low < high:
                    middle = (low + high) // 2
                    low, high = (low, middle) if middle >= alpha[length + middle] else (middle + 1, high)
                prefix = length - int(alpha[length + low]) + 1
            self._prefix_lengths[length] = prefix
        return prefix

    # -- adding -----------------------------------------------------------------------

    def _add(self, text: TextOrTokens, tokens: Sequence[str]) -> None:
        item = len(self._sequences)
        ids = self._ids
        tids = [ids.setdefault(t, len(ids) + 1) for t in tokens]
        elements = self._elements(tids, create=True)
        self._grow_tables()
        counts = self._counts
        for e in elements:
            counts[e] += 1
        if len(ids) > _MAX_CHAR_ID and self._encode is _chars:
            self._sequences = [tuple(map(ord, cast(str, s))) for s in self._sequences]
            self._encode = tuple
        self._sequences.append(self._encode(tids))
        if item == len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._lengths[item] = len(tids)
        self._longest = max(self._longest, len(tids))
        if self._texts is not None:
            self._texts.append(text if isinstance(text, str) else " ".join(text))
        if item + 1 >= self._next_freeze:
            self._freeze_order()
        else:
            self._list(item, elements)

    def _elements(self, tids: list[int], create: bool) -> list[int]:
        """The element ids of a text: its token ids, a repeated token's k-th occurrence as (id, k).

        Without `create`, an element the pool has not seen is 0.
        """
        if len(set(tids)) == len(tids):
            return tids  # no repeats (the usual case): each token is its own element
        ids, seen = self._ids, dict[int, int]()
        elements = []
        for tid in tids:
            k = seen[tid] = seen.get(tid, -1) + 1
            if k == 0 or tid == 0:
                elements.append(tid)
            elif create:
                elements.append(ids.setdefault((tid, k), len(ids) + 1))
            else:
                elements.append(ids.get((tid, k), 0))
        return elements

    def _grow_tables(self) -> None:
        """Room in the per-element tables for every id handed out; new elements are the rarest."""
        start, end = len(self._keys), len(self._ids) + 1
        if end > start:
            self._counts.extend([0] * (end - start))
            self._keys.extend(range(start, end))  # count 0 at the last freeze, then the id
            self._postings.extend([None] * (end - start))

    def _list(self, item: int, elements: list[int]) -> None:
        """Add the item to the lists of its prefix elements."""
        elements = sorted(elements, key=self._keys.__getitem__)
        postings, base = self._postings, item << _POSITION_BITS
        for j, e in enumerate(elements[: self._prefix_length(len(elements))]):
            entries = postings[e]
            if entries is None:
                entries = postings[e] = array("q")
            entries.append(base | min(j, _POSITION_MASK))

    def _freeze_order(self) -> None:
        """Re-rank the elements by their pool counts now and rebuild the lists under that order."""
        self._keys = [count << _KEY_SHIFT | e for e, count in enumerate(self._counts)]
        self._postings = [None] * len(self._keys)
        for item, sequence in enumerate(self._sequences):
            tids = [ord(c) for c in sequence] if isinstance(sequence, str) else list(sequence)
            self._list(item, self._elements(tids, create=False))
        self._next_freeze = 2 * len(self._sequences)

    # -- searching --------------------------------------------------------------------

    def _first_match(self, tokens: Sequence[str]) -> int | None:
        """A pool item whose F-measure exceeds the threshold, or None."""
        lc = len(tokens)
        probe_length = self._prefix_length(lc)
        if lc == 0 or not self._sequences or probe_length == 0:
            return None  # F is 0 against an empty text; no length can reach the threshold
        ids = self._ids
        tids = [ids.get(t, 0) for t in tokens]
        known = [e for e in self._elements(tids, create=False) if e]
        unseen = lc - len(known)  # elements no item has come first in the order: nothing to probe
        if unseen >= probe_length:
            return None
        known.sort(key=self._keys.__getitem__)
        postings = self._postings
        probes: list[tuple[int, array[int]]] = []  # (position in the candidate's order, its list)
        for i, e in enumerate(known[: probe_length - unseen], start=unseen):
            entries = postings[e]
            if entries:
                probes.append((i, entries))
        total = sum(len(entries) for _, entries in probes)
        if total == 0:
            return None
        find = self._survivors_numpy if total >= _NUMPY_FROM else self._survivors_python
        items, needs = find(lc, probes, self._least_lcs(lc))
        return self._verify(self._encode(tids), items, needs)

    def _least_lcs(self, lc: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """For each item length lp: the least LCS whose rouge-score F-measure is over the threshold.

        Starts from alpha(lc + lp), which no matching LCS is below, and steps up while
        rouge-score's own float expression (numpy's float64 rounds as Python's) says no.
        A value over min(lc, lp) means that no LCS can match.
        """
        row = self._least.get(lc)
        if row is None or len(row) <= self._longest:
            lp = np.arange(max(2 * self._longest, 64) + 1)
            row = self._alpha_table(lc + len(lp))[lc + lp]
            while True:
                precision, recall = row / np.maximum(lp, 1), row / lc
                with np.errstate(invalid="ignore", divide="ignore"):
                    over = (precision + recall > 0) & (
                        2 * precision * recall / (precision + recall) > self.threshold
                    )
                short = ~over & (row <= np.minimum(lp, lc))
                if not short.any():
                    break
                row = row + short
            self._least[lc] = row
        return row

    def _survivors_python(
        self, lc: int, probes: list[tuple[int, array[int]]], least: np.ndarray[Any, np.dtype[np.int64]]
    ) -> tuple[list[int], list[int]]:
        """The items whose bound reaches the least matching LCS, best bound first, with that LCS.

        Few postings: a plain loop. The bound is min(h + min(lc - 1 - i, lp - 1 - j), lc, lp)
        for the h hits of an item, the last at i in the candidate and j in the item.
        """
        found: dict[int, list[int]] = {}  # item -> [h, i of the last hit, j of the last hit]
        for i, entries in probes:
            for entry in entries:
                state = found.get(entry >> _POSITION_BITS)
                if state is None:
                    found[entry >> _POSITION_BITS] = [1, i, entry & _POSITION_MASK]
                else:
                    state[0] += 1
                    state[1], state[2] = i, entry & _POSITION_MASK
        lengths, passed = self._lengths, []
        for item, (h, i, j) in found.items():
            lp = int(lengths[item])
            bound, need = min(h + min(lc - 1 - i, lp - 1 - j), lc, lp), int(least[lp])
            if bound >= need:
                passed.append((-bound, item, need))
        passed.sort()
        return [item for _, item, _ in passed], [need for _, _, need in passed]

    def _survivors_numpy(
        self, lc: int, probes: list[tuple[int, array[int]]], least: np.ndarray[Any, np.dtype[np.int64]]
    ) -> tuple[list[int], list[int]]:
        """The same as `_survivors_python`, vectorised for long lists.

        Each hit becomes one int64, item << 32 | j << 12 | i, and one sort groups them by
        item. Shared elements come in the same order in both texts, so the largest j of an
        item is its last hit, with its i beside it. An i capped at 4095 only loosens the bound.
        A sentinel after the last item closes the last group.
        """
        hits = np.frombuffer(b"".join([e for _, e in probes] + [_SENTINEL]), dtype=np.int64) << 12
        hits[:-1] |= np.repeat(np.array([min(i, 4095) for i, _ in probes]), [len(e) for _, e in probes])
        hits.sort()
        items = hits >> 32
        last = np.flatnonzero(items[1:] != items[:-1])  # each item's last hit
        count = last.copy()
        count[1:] -= last[:-1]
        count[0] += 1
        unique, final = items[last], hits[last]
        lp = self._lengths[unique]
        after = np.minimum(lc - 1 - (final & 4095), lp - 1 - ((final >> 12) & _POSITION_MASK))
        bound = np.minimum(np.minimum(count + after, lp), lc)
        need = least[lp]
        passed = np.flatnonzero(bound >= need)
        passed = passed[np.argsort(-bound[passed], kind="stable")]
        return cast(list[int], unique[passed].tolist()), cast(list[int], need[passed].tolist())

    def _verify(self, query: str | tuple[int, ...], items: list[int], needs: list[int]) -> int | None:
        """The first item whose LCS with the query reaches its least matching LCS, or None.

        One rapidfuzz call per item while there are few (a duplicate is usually the first);
        past _SINGLE_CHECKS, the rest in one batched call.
        """
        sequences = self._sequences
        for item, need in zip(items[:_SINGLE_CHECKS], needs[:_SINGLE_CHECKS], strict=True):
            if LCSseq.similarity(query, sequences[item], score_cutoff=need) >= need:
                return item
        if len(items) <= _SINGLE_CHECKS:
            return None
        rest = items[_SINGLE_CHECKS:]
        lcs = process.cdist([query], [sequences[i] for i in rest], scorer=LCSseq.similarity, dtype=np.int64)[
            0
        ]
        over = np.flatnonzero(lcs >= needs[_SINGLE_CHECKS:])
        return rest[int(over[0])] if len(over) else None

    # -- scores against the whole pool ---------------------------------------------------

    def similarity_stats(
        self, text: TextOrTokens, k: int = 10, pool_size: int | None = None
    ) -> tuple[list[tuple[str, float]], float]:
        """The k most similar pool texts with their F-measures, and the mean F over the pool.

        Computed as the reference does: every pool item scored, the top k taken with
        `np.argsort(scores)[-k:][::-1]`, the mean with `np.mean`. 0.0 for an empty pool.
        `pool_size` limits the pool to its first items (the pool as it was when it had that
        many); only the copy of that prefix holds the lock, so adding to the index can go on
        in another thread while the scores are computed (rapidfuzz releases the GIL).
        """
        with self._lock:
            if self._texts is None:
                raise RuntimeError("similarity_stats needs an index built with keep_texts=True")
            n = len(self._sequences) if pool_size is None else min(pool_size, len(self._sequences))
            if n == 0:
                return [], 0.0
            tokens = self._as_tokens(text)
            query = self._encode([self._ids.get(t, 0) for t in tokens]) if tokens else None
            sequences = self._sequences[:n]
            lengths = np.maximum(self._lengths[:n], 1)  # a copy: the index may grow
            texts = self._texts  # only ever appended to: items below n stay as they are
        if query is not None:
            lcs = process.cdist([query], sequences, scorer=LCSseq.similarity, dtype=np.int32)[0]
            # An empty item has lcs 0 and so F 0; the max(..., 1) only avoids 0 / 0.
            precision, recall = lcs / lengths, lcs / len(tokens)  # float64, rounded as Python's
            total = precision + recall
            with np.errstate(invalid="ignore"):
                scores = np.where(total > 0, 2 * precision * recall / total, 0.0)
        else:
            scores = np.zeros(n)
        top: list[int] = np.argsort(scores)[-k:][::-1].tolist() if k > 0 else []
        return [(texts[i], float(scores[i])) for i in top], float(np.mean(scores))


def _chars(ids: list[int]) -> str:
    return "".join(map(chr, ids))
