"""ROUGE-L as rouge-score computes it: its tokenizer (and one for any language), its F-measure.

Every function here is bit-identical to rouge-score 0.1.2 for the same tokens, so the novelty
index built on them (`novelty_index.py`) makes exactly the reference's keep/drop decisions.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache
from typing import Literal

from rapidfuzz.distance import LCSseq

TokenizerName = Literal["rouge", "unicode"]
TextOrTokens = str | Sequence[str]

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


def fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
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
    return fmeasure(LCSseq.similarity(a, b), len(a), len(b))
