"""The novelty index makes exactly rouge-score's keep/drop decisions, one by one or in batches."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from rouge_cases import (
    BOUNDARY,
    SCORER,
    brute_force_novelty,
    candidate_stream,
    perturb,
    reference_f,
    tokens_with_lcs,
)
from rouge_score import rouge_scorer

from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.filters.rouge import rouge_l_fmeasure


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


def test_similarity_stats_equal_brute_force(shared_data: Path) -> None:
    pool = candidate_stream(shared_data, 300, seed=9, max_words=25)
    pool.insert(5, "")
    index = RougeNoveltyIndex(0.7)
    for text in pool:
        index.add(text)
    words = [w for text in pool[:40] for w in text.lower().split() if w.isalpha()]
    # Up to 64 tokens a query's masks go in one word (the dense path), past it in several.
    edges = [" ".join(words[:63]), " ".join(words[:64]), " ".join(words[:65]), " ".join(words[:200])]
    for query in [
        pool[10],
        perturb(random.Random(2), pool[20]),
        "Tell me a joke about databases.",
        "...",
        *edges,
    ]:
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


# --- batches, long texts, memory ---------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 63, 64, 700, 4000])
def test_a_batch_is_decided_as_one_text_after_another(shared_data: Path, batch: int) -> None:
    # Near-duplicates often follow their source closely, so many pairs fall in the same batch;
    # from 64 texts on, two threads search the pool first and the batch's own texts after.
    stream = candidate_stream(shared_data, 4000, seed=11)
    index = RougeNoveltyIndex(0.7)
    ours = [
        novel
        for start in range(0, len(stream), batch)
        for novel in index.add_novel(stream[start : start + batch])
    ]
    assert ours == brute_force_novelty(stream, 0.7)
    assert index._meta[4] > 256  # the rarity order was refrozen on the way (pool doubled past 256)
    assert index._texts == [text for text, novel in zip(stream, ours, strict=True) if novel]


def test_texts_longer_than_one_machine_word_are_decided_exactly() -> None:
    # Over 64 tokens the LCS runs over several 64-bit words with a carry between them.
    rng = random.Random(3)
    words = [f"w{i}" for i in range(400)]
    stream: list[str] = []
    for _ in range(300):
        if stream and rng.random() < 0.5:
            tokens = rng.choice(stream).split()
            for _ in range(rng.randint(1, 40)):
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            stream.append(" ".join(tokens))
        else:
            stream.append(" ".join(rng.choices(words, k=rng.randint(60, 200))))
    expected = brute_force_novelty(stream, 0.7)
    assert 0.2 < sum(expected) / len(expected) < 0.9
    index = RougeNoveltyIndex(0.7)
    assert index.add_novel(stream) == expected


def test_a_text_of_over_65535_tokens_is_still_compared_exactly() -> None:
    # A posting keeps the item's length in 16 bits; longer items are marked and checked in full.
    long_text = " ".join(f"w{i % 40}" for i in range(70_000))
    index = RougeNoveltyIndex(0.7)
    index.add(long_text)
    index.add("a short instruction of a few words")
    near = long_text.replace("w7 w8", "w7 x8", 5000)
    assert rouge_l_fmeasure(near.split(), long_text.split()) > 0.7
    assert not index.is_novel(near)
    assert index.is_novel(" ".join(f"w{i % 40}" for i in range(30_000)))  # F = 60,000 / 100,000


def test_ids_of_texts_that_stay_out_of_the_pool_are_given_back() -> None:
    # Memory follows the pool, not the input: a dropped or only checked text's new words leave
    # no trace in the vocabulary.
    index = RougeNoveltyIndex(0.7)
    index.add_novel([f"write a poem about the river number {i}" for i in range(300)])
    vocabulary = len(index._ids)
    dropped = [f"write a poem about the river number 7 unseen{i}" for i in range(500)]
    assert index.add_novel(dropped) == [False] * 500
    for i in range(200):
        assert index.is_novel(f"completely new words here zz{i} yy{i}")
    assert len(index._ids) == vocabulary
    assert index.add_if_novel("completely new words here zz1 yy1")
    assert len(index._ids) == vocabulary + 6


def test_long_texts_of_distinct_words_get_their_exact_scores() -> None:
    # The query's bit masks are sparse (each position sets one bit), so a long text of distinct
    # words costs memory for its length only.
    rng = random.Random(8)
    base = [f"w{i}" for i in range(6000)]
    variant = base[:]
    for _ in range(1500):
        variant[rng.randrange(len(variant))] = f"x{rng.randrange(10**6)}"
    index = RougeNoveltyIndex(0.7)
    index.add(" ".join(base))
    score = index.similarity_stats(" ".join(variant))[0][0][1]
    assert score == rouge_l_fmeasure(base, variant)
    assert 0.6 < score < 0.9
    assert index.is_novel(" ".join(variant)) == (score <= 0.7)


def test_streamed_batches_are_decided_as_one_text_after_another(shared_data: Path) -> None:
    # The next batch is tokenised while the current one is searched; ids handed out for a batch
    # that the next one already uses must survive until that one is decided.
    stream = candidate_stream(shared_data, 3000, seed=12)
    stream += [f"{text} unseen{i}" for i, text in enumerate(stream[:600])]  # new words, often dropped
    batches = [stream[start : start + 250] for start in range(0, len(stream), 250)]
    index = RougeNoveltyIndex(0.7)
    ours = [novel for decisions in index.add_novel_batches(batches) for novel in decisions]
    assert ours == brute_force_novelty(stream, 0.7)
    kept = [text for text, novel in zip(stream, ours, strict=True) if novel]
    assert index._texts == kept
    vocabulary = {t for text in kept for t in index.tokenize(text)}
    assert {key for key in index._ids if isinstance(key, str)} == vocabulary


def test_a_stream_closed_early_leaves_the_index_as_its_decided_batches_made_it() -> None:
    batches = [[f"write about topic{b} number {i} now{b}" for i in range(100)] for b in range(5)]
    index = RougeNoveltyIndex(0.7)
    decisions = index.add_novel_batches(batches)
    first = next(decisions)  # the second batch is prepared by now, not yet decided
    decisions.close()
    assert len(index) == sum(first) == 1
    assert index.is_novel("write about topic1 number 5 now1")  # the second batch never reached the pool
    assert "now1" not in index._ids and "topic1" not in index._ids  # nor its words the vocabulary
    assert index.add_if_novel("a new text after the stream")
