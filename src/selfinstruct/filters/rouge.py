"""The ROUGE-L novelty filter: exactly rouge-score's keep/drop decision, without its O(N^2) cost.

Self-Instruct keeps a candidate instruction only if its ROUGE-L F-measure against every
instruction already in the pool is <= 0.7. The reference scores the candidate against the
whole pool with a pure-Python LCS. `RougeNoveltyIndex` gives the same decision, float for
float, but scores only the few pool items that could possibly exceed the threshold.

Why the pruning is lossless. Let the candidate have `lc` tokens and a pool item `lp`, with
an LCS of length L. Then F = 2L / (lc + lp) (the harmonic mean of L/lc and L/lp). Two
bounds on L are cheap to compute:
  * length bound: L <= min(lc, lp);
  * overlap bound: an LCS is a common sub-multiset, so L <= sum over tokens t of
    min(count of t in the candidate, count of t in the item).
If 2 * bound / (lc + lp) <= threshold then F <= threshold, so the item cannot reject the
candidate and needs no LCS. The bounds are compared with a margin of 1e-9, far wider than
the rounding error of the float expression, so rounding can never prune an item whose
exact score is over the threshold. The final decision always uses rouge-score's own float
expression on the real LCS, so a boundary case such as LCS 7 of 10 + 10 tokens
(2*0.7*0.7/1.4, which is not exactly 0.7) comes out exactly as rouge-score has it.

Which items to look at (prefix filtering). Any item that rejects the candidate shares at
least `t_min` token occurrences with it, where `t_min` is the smallest overlap for which
some item length makes F exceed the threshold (the best case is an item of length o, fully
contained in the candidate: 2o / (lc + o) > threshold). By pigeonhole, such an item must
contain one of ANY `lc - t_min + 1` of the candidate's token occurrences: missing all of
them leaves an overlap of at most `t_min - 1`. So the index probes only the inverted lists
of those occurrences, choosing the rarest tokens (shortest lists) first; the common words
("a", "the") fall into the part that is never probed. Tokens the pool has never seen are
the rarest of all and have empty lists, which is correct: they cannot be shared.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from typing import Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

TokenizerName = Literal["rouge", "unicode"]
TextOrTokens = str | Sequence[str]

# Bounds are compared against `threshold - _MARGIN`: an item is skipped only when even its
# real-valued upper bound is clearly at or below the threshold (see the module docstring).
_MARGIN = 1e-9

# rouge-score 0.1.2 lowercases, replaces every run of [^a-z0-9] with a space, splits and
# keeps the [a-z0-9]+ tokens: the same thing as finding the [a-z0-9]+ runs of the
# lowercased text. Lowercasing first matters: "İ".lower() is "i" + a combining dot, and the
# Kelvin sign lowercases to an ASCII "k".
_ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")

# Scripts written without spaces between words: each character is its own token, so that
# ROUGE-L compares them character by character. CJK ideographs (with extensions and
# compatibility forms), hiragana, katakana, Hangul syllables, Thai, Lao, Myanmar and Khmer.
_NO_SPACE_SCRIPT_RE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7a3\uf900-\ufaff\U00020000-\U0003134f]"
)


def rouge_tokenize(text: str) -> list[str]:
    """rouge-score's default tokenizer without stemming (ASCII letters and digits only)."""
    return _ROUGE_TOKEN_RE.findall(text.lower())


@cache
def _unicode_word_re() -> re.Pattern[str]:
    """Words = runs of letters, digits and combining marks (built once, on first use).

    `\\w` alone would split Indic words at every vowel sign, since combining marks are not
    alphanumeric; so the marks of the BMP, the SMP and the variation selectors are added.
    """
    marks = "".join(
        chr(c)
        for c in (*range(0x300, 0x20000), *range(0xE0100, 0xE01F0))
        if unicodedata.category(chr(c)).startswith("M")
    )
    return re.compile(rf"(?:[^\W_]|[{re.escape(marks)}])+")


def unicode_tokenize(text: str) -> list[str]:
    """A tokenizer for any language: casefolded, NFKC-normalised words and CJK/Thai characters."""
    text = unicodedata.normalize("NFKC", text.casefold())
    text = _NO_SPACE_SCRIPT_RE.sub(r" \g<0> ", text)
    return _unicode_word_re().findall(text)


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"rouge": rouge_tokenize, "unicode": unicode_tokenize}


def _fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """rouge-score's `_score_lcs` + `scoring.fmeasure`, operation for operation."""
    precision = lcs / prediction_len
    recall = lcs / target_len
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l_fmeasure(target_tokens: Sequence[str], prediction_tokens: Sequence[str]) -> float:
    """The ROUGE-L F-measure, bit-identical to rouge-score's.

    Tokens are mapped to small integers first: rapidfuzz compares other objects by hash,
    and a hash collision, however unlikely, would lengthen the LCS.
    """
    if not target_tokens or not prediction_tokens:
        return 0.0
    ids: dict[str, int] = {}
    a = [ids.setdefault(t, len(ids)) for t in target_tokens]
    b = [ids.setdefault(t, len(ids)) for t in prediction_tokens]
    return _fmeasure(LCSseq.similarity(a, b), len(a), len(b))


def _fmeasure_array(lcs: np.ndarray, target_len: int, prediction_lens: np.ndarray) -> np.ndarray:
    """`_fmeasure` over arrays; numpy's float64 ops round exactly as Python's do (no fusing)."""
    precision = lcs / prediction_lens
    recall = lcs / target_len
    total = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * precision * recall / total
    return np.where(total > 0, f, 0.0)


class _Buffer:
    """A contiguous numpy array that grows by doubling (amortised O(1) appends)."""

    def __init__(self, dtype: type, capacity: int = 1024) -> None:
        self._data = np.zeros(capacity, dtype=dtype)
        self.size = 0

    def extend(self, values: Sequence[int]) -> None:
        end = self.size + len(values)
        if end > len(self._data):
            grown = np.zeros(max(end, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : end] = values
        self.size = end

    def view(self) -> np.ndarray:
        return self._data[: self.size]


class RougeNoveltyIndex:
    """A growing pool of texts that answers "is this text novel?" exactly as rouge-score would.

    A text is novel iff its ROUGE-L F-measure against every pool item is <= `threshold`.
    Methods take a string or a list of tokens from `tokenize` (to tokenise only once).
    Thread-safe: every method holds one lock, so `add_if_novel` is atomic.
    Set `keep_texts=False` to save memory when `similarity_stats` is not needed.
    """

    def __init__(
        self, threshold: float = 0.7, tokenizer: TokenizerName = "rouge", *, keep_texts: bool = True
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer!r}; known: {sorted(TOKENIZERS)}")
        self.threshold = float(threshold)
        self.tokenize = TOKENIZERS[tokenizer]
        self._lock = threading.RLock()
        # Token ids start at 1: 0 stands for any query token the pool has never seen.
        self._vocab: dict[str, int] = {}
        self._postings: list[array[int]] = [array("i")]  # token id -> ids of the items containing it
        # All items' token ids, concatenated; item i is tokens[starts[i]:starts[i + 1]].
        self._tokens = _Buffer(np.int32)
        # For each token occurrence: which occurrence of that token it is in its item (1st,
        # 2nd, ...), capped at 255. The overlap bound counts an occurrence of rank k as
        # shared iff the query has >= k copies of the token; capping only overcounts, so
        # the bound stays an upper bound.
        self._ranks = _Buffer(np.uint8)
        self._starts = _Buffer(np.int64)
        self._starts.extend([0])
        self._lengths = _Buffer(np.int32)
        self._stamp = np.zeros(1024, dtype=np.int32)  # scratch for _distinct
        self._range = np.arange(1024, dtype=np.int32)
        self._query_counts = np.zeros(1024, dtype=np.int32)  # scratch, all zero between calls
        self._texts: list[str] | None = [] if keep_texts else None
        self._sequences: list[list[int]] | None = None  # built by the first similarity_stats

    def __len__(self) -> int:
        return self._starts.size - 1

    def _as_tokens(self, text: TextOrTokens) -> Sequence[str]:
        return self.tokenize(text) if isinstance(text, str) else text

    def add(self, text: TextOrTokens) -> None:
        """Put a text into the pool (no novelty check)."""
        with self._lock:
            self._add(text, self._as_tokens(text))

    def _add(self, text: TextOrTokens, tokens: Sequence[str]) -> None:
        item = len(self)
        ids = [self._vocab.setdefault(t, len(self._vocab) + 1) for t in tokens]
        while len(self._postings) <= len(self._vocab):
            self._postings.append(array("i"))
        seen: dict[int, int] = {}
        ranks = []
        for t in ids:
            seen[t] = k = seen.get(t, 0) + 1
            ranks.append(min(k, 255))
        for t in seen:
            self._postings[t].append(item)
        self._tokens.extend(ids)
        self._ranks.extend(ranks)
        self._starts.extend([self._tokens.size])
        self._lengths.extend([len(ids)])
        if self._texts is not None:
            self._texts.append(text if isinstance(text, str) else " ".join(text))
        if self._sequences is not None:
            self._sequences.append(ids)

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

    def _first_match(self, tokens: Sequence[str]) -> int | None:
        """The first pool item found whose F-measure exceeds the threshold, or None."""
        lc = len(tokens)
        if lc == 0 or len(self) == 0:
            return None  # F is 0 against everything, and the threshold is >= 0
        vocab, postings = self._vocab, self._postings
        ids = [vocab.get(t, 0) for t in tokens]
        limit = self.threshold - _MARGIN
        # Smallest overlap o for which an item of the best length (o) could exceed the limit:
        # 2o / (lc + o) > limit  <=>  o > limit * lc / (2 - limit).
        t_min = max(1, int(limit * lc / (2 - limit)) + 1)
        rarest_first = sorted(ids, key=lambda t: (len(postings[t]), t))
        probe = {t for t in rarest_first[: lc - t_min + 1] if t}
        if not probe:
            return None
        hits = np.concatenate([np.frombuffer(postings[t], dtype=np.int32) for t in probe])
        candidates = self._distinct(hits)
        lengths = self._lengths.view()[candidates]
        total_len = lengths + lc
        keep = np.minimum(lengths, lc) * 2 / total_len > limit  # length bound
        candidates, lengths, total_len = candidates[keep], lengths[keep], total_len[keep]
        if len(candidates) == 0:
            return None
        begin = self._starts.view()[candidates]
        bound = self._overlap(ids, begin, lengths) * 2 / total_len
        promising = np.flatnonzero(bound > limit)  # overlap bound
        if len(promising) == 0:
            return None
        # The most similar-looking items first: the likeliest to end the search early.
        promising = promising[np.argsort(-bound[promising], kind="stable")]
        flat = self._tokens.view()
        for j, b, n in zip(promising.tolist(), begin[promising].tolist(), lengths[promising].tolist(), strict=True):
            lcs = LCSseq.similarity(ids, flat[b : b + n].tolist())
            if _fmeasure(lcs, lc, n) > self.threshold:
                return int(candidates[j])
        return None

    def _distinct(self, items: np.ndarray) -> np.ndarray:
        """Each item id once (in no particular order), without np.unique's sort."""
        # Write each position into the stamp of its item: for a repeated item the last write
        # wins, so exactly one of its positions reads its own number back.
        positions = self._arange(len(items))
        stamp = self._stamp
        if len(stamp) < len(self):
            stamp = self._stamp = np.zeros(2 * len(self), dtype=np.int32)
        stamp[items] = positions
        return items[stamp[items] == positions]

    def _arange(self, n: int) -> np.ndarray:
        if len(self._range) < n:
            self._range = np.arange(2 * n, dtype=np.int32)
        return self._range[:n]

    def _overlap(self, ids: list[int], begin: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Multiset overlap (sum of min counts) between the query and each given item."""
        if len(self._query_counts) <= len(self._vocab):
            self._query_counts = np.zeros(2 * len(self._vocab) + 2, dtype=np.int32)
        counts: dict[int, int] = {}
        for t in ids:
            counts[t] = counts.get(t, 0) + 1
        keys = list(counts)
        qc = self._query_counts
        qc[keys] = list(counts.values())
        try:
            # Gather every token occurrence of every item into one flat array.
            ends = np.cumsum(lengths)
            offsets = ends - lengths
            index = np.repeat(begin - offsets, lengths)
            index += self._arange(len(index))
            shared = self._ranks.view()[index] <= qc[self._tokens.view()[index]]
            return np.add.reduceat(shared, offsets, dtype=np.int32)  # every segment is non-empty
        finally:
            qc[keys] = 0

    def similarity_stats(self, text: TextOrTokens, k: int = 10) -> tuple[list[tuple[str, float]], float]:
        """The k most similar pool texts with their F-measures, and the mean F over the pool.

        Computed as the reference does: every pool item scored, the top k taken with
        `np.argsort(scores)[-k:][::-1]`, the mean with `np.mean`. 0.0 for an empty pool.
        """
        with self._lock:
            if self._texts is None:
                raise RuntimeError("similarity_stats needs an index built with keep_texts=True")
            if len(self) == 0:
                return [], 0.0
            if self._sequences is None:
                starts, flat = self._starts.view().tolist(), self._tokens.view().tolist()
                self._sequences = [flat[a:b] for a, b in zip(starts, starts[1:], strict=False)]
            tokens = self._as_tokens(text)
            if not tokens:
                scores = np.zeros(len(self))
            else:
                ids = [self._vocab.get(t, 0) for t in tokens]
                lcs = process.cdist([ids], self._sequences, scorer=LCSseq.similarity, dtype=np.int64)[0]
                lengths = np.maximum(self._lengths.view(), 1)  # an empty item has lcs 0, so F 0
                scores = _fmeasure_array(lcs, len(ids), lengths)
            top = np.argsort(scores)[-k:][::-1] if k > 0 else []
            return [(self._texts[i], float(scores[i])) for i in top], float(np.mean(scores))
