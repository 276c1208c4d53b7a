"""The ROUGE-L novelty filter gives exactly rouge-score's tokens, scores and keep/drop decisions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer, scoring, tokenize

from selfinstruct.filters import novelty_index
from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.filters.rouge import rouge_l_fmeasure, rouge_tokenize, unicode_tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference_tokens(text: str) -> list[str]:
    return tokenize.tokenize(text, None)


def reference_f(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def real_texts(shared_data: Path) -> list[str]:
    """Instructions, inputs and outputs of the seed and user-oriented tasks, and SuperNI inputs."""
    texts = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for line in (shared_data / name).read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            texts.append(task["instruction"])
            for instance in task["instances"]:
                texts += [instance["input"], instance["output"]]
    for path in sorted((shared_data / "superni_test" / "tasks").glob("*.json")):
        texts += [i["input"] for i in json.loads(path.read_text(encoding="utf-8"))["Instances"]]
    return [t for t in texts if t.strip()]


def perturb(rng: random.Random, text: str) -> str:
    """A near-duplicate: one or two words changed, dropped, inserted or swapped."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        op = rng.randrange(4)
        if op == 0:
            words[i] = rng.choice(["data", "the", "story", "Write", "list", "given"])
        elif op == 1 and len(words) > 1:
            del words[i]
        elif op == 2:
            words.insert(i, rng.choice(["a", "new", "short", "please"]))
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def candidate_stream(shared_data: Path, n: int, seed: int = 0, max_words: int = 40) -> list[str]:
    """n real sentences, about a third of them near-duplicates of earlier ones."""
    rng = random.Random(seed)
    sentences = [t for t in real_texts(shared_data) if 3 <= len(t.split()) <= max_words]
    rng.shuffle(sentences)
    stream: list[str] = []
    for text in sentences:
        if len(stream) >= n:
            break
        stream.append(text)
        if rng.random() < 0.5:
            stream.append(perturb(rng, rng.choice(stream)))
    return stream[:n]


def brute_force_novelty(texts: list[str], threshold: float) -> list[bool]:
    """Keep/drop by scoring every kept item (no pruning); F from rouge-score's own `fmeasure`."""
    vocab: dict[str, int] = {}
    pool: list[str] = []
    decisions = []
    for text in texts:
        ids = [vocab.setdefault(t, len(vocab) + 1) for t in reference_tokens(text)]
        query = "".join(map(chr, ids))
        novel = True
        if ids and pool:
            lcs = process.cdist([query], pool, scorer=LCSseq.similarity, dtype=np.int64)[0]
            lengths = np.array([len(p) for p in pool])
            # Only items within a wide margin of the threshold can matter; those get the exact score.
            for i in np.flatnonzero(2 * lcs / (len(ids) + lengths) > threshold - 1e-6):
                precision, recall = int(lcs[i]) / int(lengths[i]), int(lcs[i]) / len(ids)
                novel = novel and scoring.fmeasure(precision, recall) <= threshold
        decisions.append(novel)
        if novel and ids:
            pool.append(query)
    return decisions


def tokens_with_lcs(lcs: int, target_len: int, prediction_len: int) -> tuple[list[str], list[str]]:
    """Two token lists of the given lengths whose LCS is exactly `lcs`."""
    target = [f"w{i}" for i in range(target_len)]
    prediction = target[:lcs] + [f"x{i}" for i in range(prediction_len - lcs)]
    return target, prediction


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


# (lcs, target length, prediction length): rouge-score's float expression lands just above
# the threshold here, while 2 * lcs / (la + lb) is exactly the threshold.
BOUNDARY = [(7, 7, 13, 0.7), (7, 8, 12, 0.7), (7, 9, 11, 0.7), (4, 5, 11, 0.5), (8, 10, 10, 0.8)]


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


# --- the novelty index --------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.7, 0.5, 0.9])
def test_index_decisions_equal_brute_force_on_real_sentences(shared_data: Path, threshold: float) -> None:
    stream = candidate_stream(shared_data, 2500, seed=int(threshold * 10))
    index = RougeNoveltyIndex(threshold)
    ours = [index.add_if_novel(text) for text in stream]
    expected = brute_force_novelty(stream, threshold)
    assert ours == expected
    assert 0.1 < 1 - sum(expected) / len(expected) < 0.9  # both keep and drop paths are exercised
    assert len(index) == sum(expected)


def test_index_decisions_equal_a_plain_rouge_score_scan(shared_data: Path) -> None:
    stream = candidate_stream(shared_data, 200, seed=3, max_words=20)
    index = RougeNoveltyIndex(0.7)
    pool: list[list[str]] = []
    for text in stream:
        tokens = SCORER._tokenizer.tokenize(text)
        novel = all(rouge_scorer._score_lcs(tokens, p).fmeasure <= 0.7 for p in pool)
        assert index.is_novel(text) == novel, text
        if novel:
            pool.append(tokens)
            index.add(text)
    assert 20 < len(pool) < 190


@pytest.mark.parametrize(("lcs", "la", "lb", "threshold"), BOUNDARY)
def test_index_rejects_a_candidate_whose_rouge_score_float_is_just_over_the_threshold(
    lcs: int, la: int, lb: int, threshold: float
) -> None:
    item, candidate = tokens_with_lcs(lcs, la, lb)
    index = RougeNoveltyIndex(threshold)
    index.add(item)
    assert not index.is_novel(candidate)
    lenient = RougeNoveltyIndex(threshold + 1e-12)
    lenient.add(item)
    assert lenient.is_novel(candidate)


def test_index_keeps_a_candidate_whose_score_equals_the_threshold() -> None:
    index = RougeNoveltyIndex(0.5)
    index.add("apple banana")
    assert rouge_l_fmeasure(["apple", "banana"], ["apple", "cherry"]) == 0.5
    assert index.is_novel("apple cherry")
    strict = RougeNoveltyIndex(0.49)
    strict.add("apple banana")
    assert not strict.is_novel("apple cherry")


def test_index_finds_a_duplicate_made_only_of_words_common_in_the_pool() -> None:
    index = RougeNoveltyIndex(0.7)
    for i in range(300):
        index.add(f"write a story about the topic{i} for the reader")
    index.add("the a of to and")
    assert not index.is_novel("the a of to and")
    assert not index.is_novel("write a story about the topic7 for the reader please")
    assert index.is_novel("write a poem on the mountain at dawn")


def test_index_handles_repeated_tokens_exactly() -> None:
    index = RougeNoveltyIndex(0.7)
    index.add("go go go go stop")
    assert index.is_novel("go stop stop stop stop") == (
        rouge_l_fmeasure(["go"] * 4 + ["stop"], ["go"] + ["stop"] * 4) <= 0.7
    )
    assert not index.is_novel("go go go go go stop")


def test_empty_texts_are_novel_and_never_reject_anything() -> None:
    index = RougeNoveltyIndex(0.7)
    assert index.add_if_novel("!!!")
    assert index.add_if_novel("")
    assert index.add_if_novel("a real instruction")
    assert index.add_if_novel("")
    assert len(index) == 4


def test_threshold_zero_rejects_any_shared_token_and_one_rejects_nothing() -> None:
    zero, one = RougeNoveltyIndex(0.0), RougeNoveltyIndex(1.0)
    for index in (zero, one):
        index.add("write a poem")
    assert not zero.is_novel("read a book")
    assert zero.is_novel("read one book")
    assert one.is_novel("write a poem")


def test_add_if_novel_adds_only_novel_texts() -> None:
    index = RougeNoveltyIndex(0.7)
    assert index.add_if_novel("Write a haiku about autumn leaves.")
    assert not index.add_if_novel("write a haiku about autumn leaves")
    assert len(index) == 1


def test_methods_accept_tokens_instead_of_text() -> None:
    index = RougeNoveltyIndex(0.7)
    tokens = index.tokenize("Summarise the article in two sentences.")
    index.add(tokens)
    assert not index.is_novel("summarise the article in two sentences")
    assert not index.is_novel(tokens)
    assert index.similarity_stats(tokens)[0][0][1] == 1.0


def test_unicode_tokenizer_detects_chinese_near_duplicates_that_the_rouge_tokenizer_cannot() -> None:
    first, second = "请写一首关于秋天的诗", "请写一首关于春天的诗"
    for name, caught in (("unicode", True), ("rouge", False)):
        index = RougeNoveltyIndex(0.7, tokenizer=name)
        index.add(first)
        assert index.is_novel(second) is not caught, name


def test_index_stays_exact_after_switching_to_tuples_for_a_huge_vocabulary(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        novelty_index, "_MAX_CHAR_ID", 50
    )  # as if the vocabulary outgrew one character per token
    stream = candidate_stream(shared_data, 600, seed=5)
    index = RougeNoveltyIndex(0.7)
    assert [index.add_if_novel(t) for t in stream] == brute_force_novelty(stream, 0.7)
    assert index._encode is tuple
    top, _ = index.similarity_stats(stream[0])
    assert top[0][1] == max(reference_f(stream[0], t) for t, _ in top)


def test_similarity_stats_equal_brute_force(shared_data: Path) -> None:
    pool = candidate_stream(shared_data, 300, seed=9, max_words=25)
    pool.insert(5, "")
    index = RougeNoveltyIndex(0.7)
    for text in pool:
        index.add(text)
    for query in [pool[10], perturb(random.Random(2), pool[20]), "Tell me a joke about databases.", "..."]:
        scores = [reference_f(query, text) for text in pool]
        expected_top = [(pool[i], scores[i]) for i in np.argsort(scores)[-10:][::-1]]
        top, mean = index.similarity_stats(query)
        assert top == expected_top
        assert mean == float(np.mean(scores))
        assert len(index.similarity_stats(query, k=3)[0]) == 3


def test_similarity_stats_need_the_texts() -> None:
    index = RougeNoveltyIndex(0.7, keep_texts=False)
    index.add("a text")
    with pytest.raises(RuntimeError, match="keep_texts"):
        index.similarity_stats("a text")
    assert RougeNoveltyIndex(0.7).similarity_stats("anything") == ([], 0.0)


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_index_rejects_a_threshold_outside_zero_to_one(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        RougeNoveltyIndex(threshold)


def test_index_rejects_an_unknown_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        RougeNoveltyIndex(0.7, tokenizer="whitespace")  # type: ignore[arg-type]


def test_similarity_stats_against_a_prefix_of_the_pool_equal_those_of_the_smaller_pool(
    shared_data: Path,
) -> None:
    pool = candidate_stream(shared_data, 200, seed=4, max_words=25)
    whole, prefix = RougeNoveltyIndex(0.7), RougeNoveltyIndex(0.7)
    for i, text in enumerate(pool):
        whole.add(text)
        if i < 120:
            prefix.add(text)
    for query in (pool[150], pool[30], "Summarise the report in two sentences."):
        assert whole.similarity_stats(query, pool_size=120) == prefix.similarity_stats(query)
    assert whole.similarity_stats(pool[150]) != prefix.similarity_stats(pool[150])
