"""rouge-score's tokens and F-measure, reproduced bit for bit."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rouge_cases import BOUNDARY, perturb, real_texts, reference_f, reference_tokens, tokens_with_lcs
from rouge_score import rouge_scorer

from selfinstruct.filters.rouge import rouge_l_fmeasure, rouge_tokenize, unicode_tokenize

# --- tokenizers -------------------------------------------------------------------------------

TRICKY = [
    "",
    "   \t\n ",
    "Hello, World!",
    "Don't stop -- it's 3.14, not 3,14; e-mail me@x.org",
    "snake_case and CamelCase and UPPER",
    "İstanbul İİ",  # "İ".lower() is "i" + a combining dot: the "i" survives
    "\u212a is the Kelvin sign; \u212b the Angstrom sign",  # lowercase to ASCII "k" and to "å"
    "Écris un poème sur l'été à Noël",
    "Straße, ﬁle, ＡＢＣ１２３, ½",
    "naïve café résumé coöperate",
    "中文没有空格 日本語のテキスト 한국어 텍스트 ภาษาไทย",
    "emoji 🙂 in 2024 and 1st 2nd 3rd",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u2003em-space",
    "Ǆ ǅ ǆ ΣΑΣ ΌΣΟΣ",
]


@pytest.mark.parametrize("text", TRICKY)
def test_rouge_tokenize_equals_rouge_score_tokenizer(text: str) -> None:
    assert rouge_tokenize(text) == reference_tokens(text)


def test_rouge_tokenize_equals_rouge_score_tokenizer_on_real_texts(shared_data: Path) -> None:
    texts = real_texts(shared_data)
    assert len(texts) > 2000
    assert [rouge_tokenize(t) for t in texts] == [reference_tokens(t) for t in texts]


def test_rouge_tokenizer_keeps_ascii_letters_and_digits_only() -> None:
    assert rouge_tokenize("İstanbul, Écris 3.14!") == ["i", "stanbul", "cris", "3", "14"]
    assert rouge_tokenize("请写一首诗") == []


def test_unicode_tokenize_casefolds_and_normalises() -> None:
    assert unicode_tokenize("Straße ＡＢＣ ﬁle") == ["strasse", "abc", "file"]
    assert unicode_tokenize("Écris un poème, s'il te plaît!") == [
        "écris",
        "un",
        "poème",
        "s",
        "il",
        "te",
        "plaît",
    ]
    assert unicode_tokenize("snake_case 3.14") == ["snake", "case", "3", "14"]


def test_unicode_tokenize_makes_each_cjk_kana_hangul_and_thai_character_a_token() -> None:
    assert unicode_tokenize("写一首诗") == ["写", "一", "首", "诗"]
    assert unicode_tokenize("東京タワーへ") == ["東", "京", "タ", "ワ", "ー", "へ"]
    assert unicode_tokenize("안녕 세상") == ["안", "녕", "세", "상"]
    assert unicode_tokenize("สวัสดี") == ["ส", "ว", "ั", "ส", "ด", "ี"]
    assert unicode_tokenize("GPT-4で要約して") == ["gpt", "4", "で", "要", "約", "し", "て"]


def test_unicode_tokenize_keeps_combining_marks_inside_words() -> None:
    assert unicode_tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


# --- the F-measure ------------------------------------------------------------------------------

HAND_MADE = [
    ("The cat sat on the mat.", "the cat sat on a mat"),
    ("A B C D", "d c b a"),
    ("repeat repeat repeat", "repeat"),
    ("the the the cat", "the cat the"),
    ("", "something"),
    ("something", ""),
    ("!!!", "???"),
    ("Write a poem about the sea.", "Write a poem about the sea."),
    ("one two three four five six seven eight nine ten", "one two three four five six seven x y z"),
]


@pytest.mark.parametrize(("target", "prediction"), HAND_MADE)
def test_fmeasure_is_bit_identical_to_rouge_score_on_hand_made_pairs(target: str, prediction: str) -> None:
    ours = rouge_l_fmeasure(rouge_tokenize(target), rouge_tokenize(prediction))
    assert ours == reference_f(target, prediction)


@pytest.mark.parametrize(("lcs", "la", "lb", "threshold"), BOUNDARY)
def test_fmeasure_reproduces_rouge_score_rounding_at_the_threshold(
    lcs: int, la: int, lb: int, threshold: float
) -> None:
    target, prediction = tokens_with_lcs(lcs, la, lb)
    expected = rouge_scorer._score_lcs(target, prediction).fmeasure
    assert 2 * lcs / (la + lb) == threshold < expected  # the simple formula would keep it
    assert rouge_l_fmeasure(target, prediction) == expected


def test_fmeasure_is_bit_identical_to_rouge_score_on_real_text_pairs(shared_data: Path) -> None:
    rng = random.Random(1)
    short = [t for t in real_texts(shared_data) if len(t.split()) <= 40]
    long = [t for t in real_texts(shared_data) if 70 <= len(t.split()) <= 150]  # > 64 tokens: multi-word LCS
    pairs = [tuple(rng.sample(short, 2)) for _ in range(1500)]
    pairs += [(t, perturb(rng, t)) for t in rng.sample(short, 1500)]
    pairs += [(t, perturb(rng, t)) for t in rng.sample(long, 30)] + [
        tuple(rng.sample(long, 2)) for _ in range(30)
    ]
    mismatches = [
        (a, b)
        for a, b in pairs
        if rouge_l_fmeasure(rouge_tokenize(a), rouge_tokenize(b)) != reference_f(a, b)
    ]
    assert mismatches == []
    assert len({reference_f(a, b) for a, b in pairs}) > 300  # the pairs cover many different scores


def test_fmeasure_does_not_depend_on_argument_order() -> None:
    for lcs, la, lb, _ in BOUNDARY:
        a, b = tokens_with_lcs(lcs, la, lb)
        assert rouge_l_fmeasure(a, b) == rouge_l_fmeasure(b, a)
