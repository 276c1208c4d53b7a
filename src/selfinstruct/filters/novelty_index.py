"""`RougeNoveltyIndex`: rouge-score's keep/drop decision against a growing pool, without its O(N^2) cost.

Self-Instruct keeps a candidate only if its ROUGE-L F-measure against every item already in
the pool is <= the threshold (0.7). The reference scores each candidate against the whole
pool. This index gives the same decision, float for float, but computes an LCS only for the
few items that could exceed the threshold, and finds those few without scanning the pool:
a prefix-filtered inverted index, as in set-similarity joins (AllPairs, PPJoin).

Why an item can be ruled out (lossless; the exact arithmetic is in novelty_bounds.py). A
candidate of `lc` tokens and an item of `lp` tokens can be over the threshold only with an
LCS of at least alpha(lc + lp). An LCS is a common sub-multiset of tokens, so it is at most
their multiset overlap. Treating the k-th occurrence of a token as its own element ("the",
"the#2") turns each text into a set, and the overlap into the size of an intersection.

Prefix filtering. Order all elements by how rare they are in the pool (a single global order)
and sort each text's elements by it. If two sets share >= alpha elements, the first
|x| - alpha + 1 elements of x and the first |y| - alpha + 1 of y share one (pigeonhole). So the
index lists each item only under the elements of its prefix (the rarest ~46% at 0.7), and a
candidate probes only the lists of its own prefix. Common words sit at the end of both
prefixes and are never looked at. Elements in no pool item come first in the order; no list
holds them, so they only use up a candidate's prefix.

Bounds before any LCS (novelty_kernel.py). Each posting carries the item's length and the
element's position j in the item's order. Met first at position i of the candidate, an item
can share at most 1 + min(lc - 1 - i, lp - 1 - j) elements: if that is below alpha, the
posting is skipped unread (PPJoin's positional filter). For an item found under h probed
elements, the last at (i, j): every shared element before it in the order is among the h, and
those after it number at most min(lc - 1 - i, lp - 1 - j). Then a 128-bit signature of the
item's tokens (one hash bit per token): a candidate token on a bit the item lacks is not in
the item. Only the items whose bounds reach the least matching LCS for their two lengths get
an LCS (bit-parallel, lcs_kernel.py; best bound first), and the search stops at the first
item over the threshold. That least LCS comes from rouge-score's own float expression, so boundary cases come
out as rouge-score has them: an LCS of 7 between 7 and 13 tokens gives 2*P*R/(P+R) =
0.7000000000000001, over 0.7, though 2*7/20 is 0.7.

The order is refrozen (and the lists rebuilt) each time the pool doubles, so it follows the
pool's real frequencies at a cost of O(pool) amortised work; elements new since the last
freeze count as rarest. Texts go through in batches: two threads search the pool for the
batch's halves, then the batch is decided in order against its own earlier texts, so the
decisions are those of one text after another. Ids handed to the words of a text that stays
out are given back: memory is O(pool), whatever the input's size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np

from selfinstruct.filters import lcs_kernel
from selfinstruct.filters import novelty_kernel as kernel
from selfinstruct.filters.novelty_bounds import Int64Array, exact_limit, match_tables
from selfinstruct.filters.rouge import TOKENIZERS, TextOrTokens, TokenizerName

_FIRST_FREEZE = 256  # pool size at which the rarity order is first frozen; again at each doubling
_PARALLEL_FROM = 64  # candidates in a batch from which two threads search the pool


class RougeNoveltyIndex:
    """A growing pool of texts that answers "is this text novel?" exactly as rouge-score would.

    A text is novel iff its ROUGE-L F-measure against every pool item is <= `threshold`.
    Methods take a string, or the tokens from `tokenize` (to tokenise only once).
    `add_novel` decides a whole batch in order, as `add_if_novel` on each would, but faster.
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
        self._limit = exact_limit(self.threshold)
        self._alpha: Int64Array = np.zeros(0, dtype=np.int64)  # lc + lp -> least LCS that can match
        self._prefix: Int64Array = np.zeros(0, dtype=np.int64)  # length -> elements probed / listed
        # Token and element ids share one space from 1: tokens by their text, a repeated
        # token's k-th occurrence by (token id, k). Ids that no pool item uses are given back.
        self._ids: dict[str | tuple[int, int], int] = {}
        self._free_ids: list[int] = []
        self._next_id = 1
        self._meta = np.array([0, 0, 0, 0, _FIRST_FREEZE], dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.int64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._p_start = np.zeros(0, dtype=np.int64)
        self._p_len = np.zeros(0, dtype=np.int64)
        self._p_cap = np.zeros(0, dtype=np.int64)
        self._p_data = np.zeros(4096, dtype=np.int64)
        self._s_start = np.zeros(0, dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._sigs = np.zeros((0, 2), dtype=np.uint64)  # item -> 128-bit signature of its tokens
        self._scratch = [_Scratch(), _Scratch()]  # one per searching thread
        self._s_tok = np.zeros(0, dtype=np.int32)
        self._s_elem = np.zeros(0, dtype=np.int32)
        self._texts: list[str] | None = [] if keep_texts else None

    def __len__(self) -> int:
        return int(self._meta[kernel.ITEMS])

    def tokenize(self, text: str) -> list[str]:
        """The index's tokenizer; its output can be passed to every method instead of the text."""
        return self._tokenizer(text)

    def add(self, text: TextOrTokens) -> None:
        """Put a text into the pool (no novelty check)."""
        self._run([text], kernel.ADD)

    def is_novel(self, text: TextOrTokens) -> bool:
        """True iff the ROUGE-L F-measure against every pool item is <= threshold."""
        return self._run([text], kernel.CHECK)[0]

    def add_if_novel(self, text: TextOrTokens) -> bool:
        """Add the text if it is novel; return whether it was added."""
        return self._run([text], kernel.ADD_IF_NOVEL)[0]

    def add_novel(self, texts: Iterable[TextOrTokens]) -> list[bool]:
        """`add_if_novel` on each text in order (each one sees those added before it)."""
        return self._run(list(texts), kernel.ADD_IF_NOVEL)

    def add_novel_batches(self, batches: Iterable[Sequence[TextOrTokens]]) -> Iterator[list[bool]]:
        """`add_novel` on each batch in turn, yielding its decisions.

        While the compiled search decides one batch (in two threads), this thread tokenises the
        next one, so the Python part of the work no longer leaves a core idle. The index is
        locked until the generator is exhausted or closed.
        """
        mode = kernel.ADD_IF_NOVEL
        with self._lock:
            running: tuple[_Batch, Future[None]] | None = None  # being decided in the pipeline thread
            waiting: _Batch | None = None  # prepared, not yet handed over
            try:
                for texts in batches:
                    waiting = self._prepare(list(texts))
                    if running is not None:
                        (batch, future), running = running, None
                        future.result()
                        yield self._finish(batch, mode, following=waiting)
                    running, waiting = (waiting, _pipeline_thread().submit(self._decide, waiting, mode)), None
                if running is not None:
                    (batch, future), running = running, None
                    future.result()
                    yield self._finish(batch, mode, following=None)
            finally:  # closed early or failed: leave the index as the decided batches made it
                if running is not None:
                    running[1].result()
                    self._finish(running[0], mode, following=waiting)
                if waiting is not None:
                    self._give_back(waiting, following=None)

    # -- one batch through the kernel: prepare (Python), decide (compiled), finish ------------

    def _run(self, texts: list[TextOrTokens], mode: int) -> list[bool]:
        with self._lock:
            batch = self._prepare(texts)
            self._decide(batch, mode)
            return self._finish(batch, mode, following=None)

    def _prepare(self, texts: list[TextOrTokens]) -> _Batch:
        """Tokenise the batch and map its tokens to ids, handing out ids to new ones."""
        batch = _Batch(texts)
        offsets, tokens, elements = [0], [], []
        for text in texts:
            tids, eids = self._ids_of(
                self._tokenizer(text) if isinstance(text, str) else text, batch.new_keys
            )
            tokens += tids
            elements += eids
            offsets.append(len(tokens))
            batch.longest = max(batch.longest, len(tids))
        batch.offsets = np.array(offsets, dtype=np.int64)
        batch.tokens, batch.elements = np.array(tokens, dtype=np.int32), np.array(elements, dtype=np.int32)
        batch.out = np.ones(len(texts), dtype=np.int8)
        return batch

    def _decide(self, batch: _Batch, mode: int) -> None:
        """Run the kernels on a prepared batch: batch.out[q] = 1 for each text found novel.

        Touches the arrays only, never the vocabulary, so the next batch can be prepared meanwhile.
        """
        if not batch.texts:
            return
        self._make_room(len(batch.texts), len(batch.tokens), batch.longest)
        q_off, q_tok, q_elem, out = batch.offsets, batch.tokens, batch.elements, batch.out
        searched = 0
        if mode != kernel.ADD and len(batch.texts) >= _PARALLEL_FROM and len(self):
            self._search_in_parallel(q_off, q_tok, q_elem, out)
            searched = len(self)
        first, status, one = 0, kernel.NEED_ROOM, self._scratch[0]
        while status != kernel.DONE:
            first, status = kernel.run_batch(
                mode, first, searched, q_off, q_tok, q_elem, out, self.threshold, self._alpha, self._prefix,
                self._keys, self._counts, self._p_start, self._p_len, self._p_cap, self._p_data,
                self._s_start, self._lengths, self._s_tok, self._s_elem, self._sigs, self._meta,
                one.state, one.touched,
            )  # fmt: skip
            if status == kernel.NEED_ROOM:
                self._p_data = _grown(self._p_data, 2 * len(self._p_data))
            elif status == kernel.FREEZE:
                self._p_data = kernel.rebuild(
                    self._keys, self._counts, len(self._keys), self._p_start, self._p_len, self._p_cap,
                    self._s_start, self._lengths, self._s_elem, self._meta, self._prefix,
                )  # fmt: skip

    def _give_back(self, batch: _Batch, following: _Batch | None) -> None:
        """Free the ids handed out for the batch that no pool item took.

        An id that the following (already prepared) batch uses stays taken; it is looked at
        again when that batch finishes.
        """
        in_use: set[int] = set()
        if following is not None:
            in_use = set(np.unique(np.concatenate([following.tokens, following.elements])).tolist())
        for key in batch.new_keys:
            taken = self._ids[key]
            if taken in in_use:
                following.new_keys.append(key)  # type: ignore[union-attr]
            elif self._counts[taken] == 0:
                self._free_ids.append(self._ids.pop(key))

    def _finish(self, batch: _Batch, mode: int, following: _Batch | None) -> list[bool]:
        """Give back the ids no pool item took, keep the added texts, return the decisions."""
        self._give_back(batch, following)
        added = batch.out.astype(bool).tolist()
        if self._texts is not None and mode != kernel.CHECK:
            self._texts += [_text(t) for t, was_added in zip(batch.texts, added, strict=True) if was_added]
        return added

    def _search_in_parallel(self, q_off: Int64Array, q_tok: Any, q_elem: Any, out: Any) -> None:
        """Search every candidate against the pool as it is, half of them in each of two threads."""

        def half(first: int) -> None:
            scratch = self._scratch[first]
            kernel.search_batch(
                first, 2, q_off, q_tok, q_elem, out, self.threshold, self._alpha, self._prefix, self._keys,
                self._p_start, self._p_len, self._p_data, self._s_start, self._lengths, self._s_tok, self._sigs,
                self._meta, scratch.state, scratch.touched,
            )  # fmt: skip

        other = _helper_thread().submit(half, 1)
        half(0)
        other.result()

    def _ids_of(
        self, tokens: Sequence[str], new_keys: list[str | tuple[int, int]]
    ) -> tuple[list[int], list[int]]:
        """Token ids (for the LCS) and element ids (for the lists), handing out ids as needed."""
        ids = self._ids
        tids = [ids.get(t, 0) for t in tokens]
        if 0 in tids:
            tids = [
                tid or ids.get(t) or self._new_id(t, new_keys) for t, tid in zip(tokens, tids, strict=True)
            ]
        if len(set(tids)) == len(tids):
            return tids, tids  # no repeats (the usual case): each token is its own element
        seen: dict[int, int] = {}
        elements = []
        for tid in tids:
            k = seen[tid] = seen.get(tid, -1) + 1
            key = (tid, k)
            elements.append(tid if k == 0 else ids.get(key) or self._new_id(key, new_keys))
        return tids, elements

    def _new_id(self, key: str | tuple[int, int], new_keys: list[str | tuple[int, int]]) -> int:
        if self._free_ids:
            new = self._free_ids.pop()
        else:
            new, self._next_id = self._next_id, self._next_id + 1
        self._ids[key] = new
        new_keys.append(key)
        return new

    def _make_room(self, texts: int, tokens: int, longest: int) -> None:
        """Grow every array for a batch of `texts` candidates holding `tokens` tokens in all."""
        ids = self._next_id
        if len(self._keys) < ids:
            size = max(2 * ids, 1024)
            start = len(self._keys)
            self._keys = _grown(self._keys, size)
            self._keys[start:] = np.arange(start, size)  # count 0 at the last freeze: the id alone
            for name in ("_counts", "_p_start", "_p_len", "_p_cap"):
                setattr(self, name, _grown(getattr(self, name), size))
        items = int(self._meta[kernel.ITEMS]) + texts
        if len(self._lengths) < items:
            size = max(2 * items, 1024)
            for name in ("_s_start", "_lengths", "_sigs"):
                setattr(self, name, _grown(getattr(self, name), size))
            for scratch in self._scratch:
                scratch.state, scratch.touched = _grown(scratch.state, size), _grown(scratch.touched, size)
        used = int(self._meta[kernel.S_USED]) + tokens
        if len(self._s_tok) < used:
            self._s_tok, self._s_elem = _grown(self._s_tok, 2 * used), _grown(self._s_elem, 2 * used)
        if len(self._prefix) <= longest:
            self._alpha, self._prefix = match_tables(self._limit, 2 * longest + 1)

    # -- scores against the whole pool ---------------------------------------------------

    def similarity_stats(
        self, text: TextOrTokens, k: int = 10, pool_size: int | None = None
    ) -> tuple[list[tuple[str, float]], float]:
        """The k most similar pool texts with their F-measures, and the mean F over the pool.

        Computed as the reference does: every pool item scored, the top k taken with
        `np.argsort(scores)[-k:][::-1]`, the mean with `np.mean`. 0.0 for an empty pool.
        `pool_size` limits the pool to its first items (the pool as it was when it had that
        many). Only taking the arrays holds the lock: items never change once added, and a
        growing array is a new copy, so adding can go on in another thread meanwhile.
        """
        with self._lock:
            if self._texts is None:
                raise RuntimeError("similarity_stats needs an index built with keep_texts=True")
            n = len(self) if pool_size is None else min(pool_size, len(self))
            if n == 0:
                return [], 0.0
            tokens = self._tokenizer(text) if isinstance(text, str) else text
            query = np.array([self._ids.get(t, 0) for t in tokens], dtype=np.int32)  # 0: in no item
            s_start, lengths, s_tok = self._s_start[:n], self._lengths[:n].copy(), self._s_tok
            texts = self._texts  # only ever appended to: items below n stay as they are
            ids = self._next_id  # every id handed out is below it; 0 is a token in no item
        dense = np.zeros(ids, dtype=np.uint64)  # the kernel's scratch (calloc: pages touched only where used)
        scores = lcs_kernel.pool_f_scores(query, n, s_start, lengths, s_tok, dense)
        top: list[int] = np.argsort(scores)[-k:][::-1].tolist() if k > 0 else []
        return [(texts[i], float(scores[i])) for i in top], float(np.mean(scores))


class _Batch:
    """A batch of texts on its way through the index: their ids (flat, with offsets), the keys
    of the ids handed out for it, and the decisions."""

    def __init__(self, texts: list[TextOrTokens]) -> None:
        self.texts = texts
        self.new_keys: list[str | tuple[int, int]] = []
        self.longest = 0
        self.offsets = self.tokens = self.elements = self.out = np.zeros(0, dtype=np.int64)


class _Scratch:
    """One searching thread's working arrays (see novelty_kernel)."""

    def __init__(self) -> None:
        self.state = np.zeros(0, dtype=np.int64)
        self.touched = np.zeros(0, dtype=np.int64)


@cache
def _pipeline_thread() -> ThreadPoolExecutor:
    """Where `add_novel_batches` decides a batch while the caller's thread prepares the next."""
    return ThreadPoolExecutor(1, thread_name_prefix="novelty-batch")


@cache
def _helper_thread() -> ThreadPoolExecutor:
    """The second searching thread (the kernels release the GIL), started on first use."""
    return ThreadPoolExecutor(1, thread_name_prefix="novelty-search")


def _grown(array: np.ndarray[Any, Any], size: int) -> np.ndarray[Any, Any]:
    """A copy of the array with room for `size` rows (zeros after the old ones)."""
    bigger = np.zeros((size, *array.shape[1:]), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


def _text(text: TextOrTokens) -> str:
    return text if isinstance(text, str) else " ".join(text)
