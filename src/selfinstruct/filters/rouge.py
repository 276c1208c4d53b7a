"""The ROUGE-L novelty filter: exactly rouge-score's keep/drop decision, without its O(N^2) cost.

Self-Instruct keeps a candidate instruction only if its ROUGE-L F-measure against every
instruction already in the pool is <= 0.7. The reference scores the candidate against the
whole pool with a pure-Python LCS. `RougeNoveltyIndex` gives the same decision, float for
float, but computes an LCS only for the few pool items that could exceed the threshold.

Why skipping an item is safe (lossless). Let the candidate have `lc` tokens, a pool item
`lp`, and their LCS length L. Then F = 2L / (lc + lp): the harmonic mean of L/lc and L/lp.
Any upper bound U >= L with 2U / (lc + lp) <= threshold proves F <= threshold. Two bounds:
  * length bound: L <= min(lc, lp);
  * multiset overlap bound: an LCS is a common sub-multiset of tokens, so
    L <= sum over tokens t of min(count of t in the candidate, count of t in the item).
Bounds are compared with `threshold - 1e-9`, a margin far wider than the rounding error of
these float expressions, so rounding can never skip an item whose exact score is over the
threshold. The decision itself always uses rouge-score's float expression on the real LCS,
so boundary cases come out as rouge-score has them: for an LCS of 7 between 7 and 13 tokens
its 2*P*R/(P+R) is 0.7000000000000001, so the pair counts as over 0.7, while 2*7/20 is 0.7.

Which items to look at (prefix filter over an inverted index). Since 2o / (lc + o) grows
with o, an item can only reject the candidate if they share at least `t_min` token
occurrences, the smallest o with 2o / (lc + o) > threshold (the best case: an item of
length o that the candidate contains). By pigeonhole, such an item contains one of ANY
`lc - t_min + 1` of the candidate's token occurrences (missing all of them leaves at most
`t_min - 1`). The index probes the inverted lists of that many occurrences, rarest tokens
first, so the common words ("a", "the") are in the part never probed. Tokens the pool has
never seen are the rarest of all, with empty lists: correctly, they cannot be shared.

The overlap bound comes for free from the same lists: counting how often each item appears
in the probed lists gives h >= the overlap on the probed occurrences, and the unprobed ones
add at most `t_min - 1`, so overlap <= h + t_min - 1. (Computing the exact multiset overlap
per item would cost as much as rapidfuzz's bit-parallel LCS of a short sentence, which is
why it is not done separately.) Items pass both bounds before any LCS is computed, and the
search stops at the first item over the threshold.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from itertools import chain
from typing import Literal, cast

from rapidfuzz.distance import LCSseq

TokenizerName = Literal["rouge", "unicode"]
TextOrTokens = str | Sequence[str]

# Bounds are compared against `threshold - _MARGIN` (see the module docstring).
_MARGIN = 1e-9

# rouge-score 0.1.2 lowercases, replaces every run of [^a-z0-9] with a space, splits and
# keeps the [a-z0-9]+ tokens: the same as finding the [a-z0-9]+ runs of the lowercased
# text. Lowercasing first matters: "İ".lower() is "i" + a combining dot, and the Kelvin
# sign lowercases to an ASCII "k".
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
    """rouge-score's `_score_lcs` + `scoring.fmeasure`, operation for operation.

    Symmetric in the two lengths, bit for bit: 2*p is exact, and float * and + commute.
    """
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


# Item token sequences are stored as strings, one character per token id: compact, and
# the fastest input for rapidfuzz. Past this many distinct tokens, ids no longer fit in a
# character and the index switches to tuples of ints (exact too, about half as fast).
_MAX_CHAR_ID = 0x10FFFF


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
        # Token ids start at 1; 0 stands for every query token that the pool has never seen.
        self._vocab: dict[str, int] = {}
        self._postings: list[list[int]] = [[]]  # token id -> the items containing it, in order
        self._sequences: list[str | tuple[int, ...]] = []  # item -> its token ids, encoded
        # item -> max(its token count, 1), as machine integers: similarity_stats reads them
        # as one numpy array without a pass over the pool in Python.
        self._lengths = array("q")
        self._encode: Callable[[list[int]], str | tuple[int, ...]] = _chars
        self._texts: list[str] | None = [] if keep_texts else None

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

    def _add(self, text: TextOrTokens, tokens: Sequence[str]) -> None:
        item = len(self._sequences)
        vocab = self._vocab
        ids = [vocab.setdefault(t, len(vocab) + 1) for t in tokens]
        if len(vocab) > _MAX_CHAR_ID and self._encode is _chars:
            self._sequences = [tuple(map(ord, cast(str, s))) for s in self._sequences]
            self._encode = tuple
        postings = self._postings
        postings.extend([] for _ in range(len(vocab) + 1 - len(postings)))
        for t in dict.fromkeys(ids):
            postings[t].append(item)
        self._sequences.append(self._encode(ids))
        self._lengths.append(max(len(ids), 1))
        if self._texts is not None:
            self._texts.append(text if isinstance(text, str) else " ".join(text))

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
        if lc == 0 or not self._sequences:
            return None  # F is 0 against everything, and the threshold is >= 0
        vocab, postings = self._vocab, self._postings
        ids = [vocab.get(t, 0) for t in tokens]
        limit = self.threshold - _MARGIN
        # t_min - 1 = the largest o with 2o / (lc + o) <= limit, i.e. o <= limit * lc / (2 - limit).
        t_min = max(1, int(limit * lc / (2 - limit)) + 1)
        probed = sorted(ids, key=lambda t: (len(postings[t]), t))[: lc - t_min + 1]
        # An item's count here is at most the overlap on the probed occurrences (a token
        # probed k times has its list chained k times); unprobed ones add at most t_min - 1.
        shared = Counter(chain.from_iterable(postings[t] for t in probed if t))
        unprobed = t_min - 1
        query = self._encode(ids)
        sequences, threshold = self._sequences, self.threshold
        for item, count in shared.items():  # items of the rarest lists come first
            sequence = sequences[item]
            lp = len(sequence)
            if 2 * min(count + unprobed, lp, lc) / (lc + lp) <= limit:
                continue  # overlap and length bounds: F <= threshold without an LCS
            if _fmeasure(LCSseq.similarity(query, sequence), lc, lp) > threshold:
                return item
        return None

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
        import numpy as np  # here only: the novelty check itself does not need numpy
        from rapidfuzz import process

        with self._lock:
            if self._texts is None:
                raise RuntimeError("similarity_stats needs an index built with keep_texts=True")
            n = len(self._sequences) if pool_size is None else min(pool_size, len(self._sequences))
            if n == 0:
                return [], 0.0
            tokens = self._as_tokens(text)
            query = self._encode([self._vocab.get(t, 0) for t in tokens]) if tokens else None
            sequences = self._sequences[:n]
            lengths = np.frombuffer(self._lengths[:n], dtype=np.int64)  # a copy: the index may grow
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
