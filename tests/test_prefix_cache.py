"""Prompt-prefix reuse: the plans (pure), the count per stage, then the decoder on the real Gemma model.

On the model, the prompts are the packaged few-shot prompts of the classify stage (841
tokens, 827 shared) and of instance generation (892 tokens, 884 shared).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest
from servers.llama_server import model_path_for_tests

from selfinstruct.cli.summary import print_summary
from selfinstruct.config import GenerationParams
from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest
from selfinstruct.prompts import (
    ClassifyPrompt,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
    load_prompt,
)
from selfinstruct.runtimes.llama_decoder import BatchDecoder, Generation
from selfinstruct.runtimes.prefix_cache import MIN_READ, MIN_REUSE, Plan, PrefixCache, common_prefix
from selfinstruct.stages.classify import render_classify_prompt
from selfinstruct.stages.instances import render_classification_prompt, render_generation_prompt

# -- plans (pure) ------------------------------------------------------------------------------


def tokens(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int32)


HEADER = list(range(100, 100 + 2 * MIN_REUSE))  # a shared prefix long enough to reuse


def prompt(*tail: int) -> np.ndarray:
    return tokens(*HEADER, *tail)


def test_common_prefix_counts_the_leading_tokens_two_prompts_share() -> None:
    assert common_prefix(tokens(1, 2, 3), tokens(1, 2, 4, 5)) == 2
    assert common_prefix(tokens(1, 2), tokens(1, 2, 3)) == 2
    assert common_prefix(tokens(), tokens(1)) == 0
    assert common_prefix(tokens(7), tokens(1)) == 0


def test_an_empty_cache_reads_the_whole_prompt() -> None:
    assert PrefixCache(slots=2).plan(0, prompt(1)) == Plan(0, 0)


def test_the_own_slot_is_trimmed_to_the_shared_prefix_and_the_last_two_tokens_are_always_read() -> None:
    cache = PrefixCache(slots=2)
    cache.read(0, [*HEADER, 1, 2, 3])
    assert cache.plan(0, prompt(4, 5)) == Plan(0, len(HEADER))
    # The same prompt again: all but its last MIN_READ = 2 tokens (the last one's logits
    # start the answer; a 1-token read would give its cells other bits).
    assert MIN_READ == 2
    assert cache.plan(0, prompt(1, 2, 3)) == Plan(0, len(HEADER) + 1)


def test_another_slot_is_copied_only_when_it_holds_min_reuse_more_than_the_own_slot() -> None:
    cache = PrefixCache(slots=3)
    cache.read(2, [*HEADER, 1])
    assert cache.plan(0, prompt(1, 5, 6)) == Plan(2, len(HEADER) + 1)
    cache.read(0, HEADER[: len(HEADER) - MIN_REUSE + 2])  # the own slot holds almost as much
    assert cache.plan(0, prompt(1, 5, 6)) == Plan(0, len(HEADER) - MIN_REUSE + 2)


def test_less_than_min_reuse_in_common_is_not_reused() -> None:
    cache = PrefixCache(slots=2)
    cache.read(1, HEADER[: MIN_REUSE - 1])
    cache.read(0, HEADER[: MIN_REUSE - 1])
    assert cache.plan(0, prompt(1)) == Plan(0, 0)


def test_a_request_waits_for_a_leader_reading_a_longer_shared_prefix() -> None:
    cache = PrefixCache(slots=2)
    assert cache.plan(1, prompt(2, 3), leaders=[prompt(1, 3)]) is None
    # Once the leader has read it, its slot is copied.
    cache.read(0, [*HEADER, 1, 3])
    assert cache.plan(1, prompt(2, 3), leaders=[]) == Plan(0, len(HEADER))
    # A leader with little in common is not waited for.
    assert PrefixCache(slots=2).plan(1, prompt(2), leaders=[tokens(*HEADER[:5], 9, 9)]) == Plan(1, 0)


def test_a_disabled_cache_always_reads_the_whole_prompt_and_keeps_nothing() -> None:
    cache = PrefixCache(slots=2, enabled=False)
    cache.read(0, [*HEADER, 1])
    assert cache.plan(0, prompt(1, 2), leaders=[prompt(1, 2)]) == Plan(0, 0)
    assert cache.keep_after(0, failed=False) == 0


def test_a_slot_keeps_its_prompt_unless_it_failed_or_is_too_short_to_reuse() -> None:
    cache = PrefixCache(slots=3)
    for slot in range(3):
        cache.read(slot, HEADER if slot < 2 else HEADER[: MIN_REUSE - 1])
    assert cache.keep_after(0, failed=False) == len(HEADER)
    assert cache.keep_after(1, failed=True) == 0
    assert cache.keep_after(2, failed=False) == 0


def test_took_records_the_copied_cells_only() -> None:
    cache = PrefixCache(slots=2)
    cache.read(0, [*HEADER, 1, 2, 3])
    cache.took(1, Plan(0, len(HEADER) + 1))
    assert cache.held(1) == len(HEADER) + 1
    assert cache.plan(1, prompt(1, 2, 3)) == Plan(1, len(HEADER) + 1)


def test_a_prefix_only_the_own_slot_holds_is_saved_to_an_empty_free_slot_before_it_is_overwritten() -> None:
    cache = PrefixCache(slots=4)
    cache.read(0, [*HEADER, 1])
    other = tokens(*range(500, 500 + 3 * MIN_REUSE))
    assert cache.plan(0, other, free=[1, 2, 3]) == Plan(0, 0, save=3)  # empty, and the highest
    cache.took(0, Plan(0, 0, save=3))
    assert (cache.held(0), cache.held(3)) == (0, len(HEADER) + 1)
    assert cache.plan(1, prompt(1, 2, 3)) == Plan(3, len(HEADER) + 1)


def test_nothing_is_saved_when_another_slot_holds_it_or_no_free_slot_is_expendable() -> None:
    cache = PrefixCache(slots=3)
    other = tokens(*range(500, 500 + 3 * MIN_REUSE))
    cache.read(0, [*HEADER, 1])
    cache.read(1, [*HEADER, 2])  # the same header with another ending: held twice
    assert cache.plan(0, other, free=[2]) == Plan(0, 0)
    cache.read(2, other[:-1])  # the only free slot holds a prefix of its own
    cache.clear(1)
    assert cache.plan(0, tokens(7, *other), free=[1, 2]) == Plan(0, 0, save=1)
    cache.read(1, [9] * 3 * MIN_REUSE)
    assert cache.plan(0, tokens(7, *other), free=[1, 2]) == Plan(0, 0)


# -- counted per stage -------------------------------------------------------------------------


class ReusingBackend(BackendBase):
    """Answers every prompt with its length, saying half of the prompt came from a cache."""

    def identity(self) -> dict[str, Any]:
        return {"kind": "fake-reuse"}

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        n = len(request.prompt)
        return Completion(str(n), "stop", n, 1, extra={"prompt_tokens_reused": n // 2})

    def close(self) -> None:
        pass


def test_the_engine_sums_reused_prompt_tokens_per_stage_and_the_summary_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = GenerationParams(max_tokens=4, temperature=0.0, top_p=1.0)
    with ResponseStore(tmp_path / "responses.sqlite") as store:
        engine = RequestEngine(ReusingBackend(), store, tmp_path / "failed.jsonl", 2, 0, 5.0, progress=False)
        engine.run([CompletionRequest("x" * n, params) for n in (10, 20, 31)], "classify")
        engine.run([CompletionRequest("again", params)], "bootstrap")
        engine.run([CompletionRequest("x" * 10, params)], "classify")  # from the store: not counted again
        stats = engine.stats()
    assert (stats["classify"]["prompt_tokens"], stats["classify"]["prompt_tokens_reused"]) == (
        61,
        5 + 10 + 15,
    )
    assert stats["bootstrap"]["prompt_tokens_reused"] == 2
    print_summary(tmp_path, {"requests": {**stats, "instances": {"sent": 1, "prompt_tokens": 9}}})
    lines = capsys.readouterr().err.splitlines()
    assert "61+3 tokens, reused 30" in lines[1] and "5+1 tokens, reused 2" in lines[2]
    assert "reused" not in lines[3]


# -- on the real model -------------------------------------------------------------------------

N_CTX = 1536
CLASSIFY = GenerationParams(max_tokens=3, temperature=0.0, top_p=1.0)
INSTRUCTIONS = [
    "Decide whether the given number is prime.",
    "Write a limerick about a cat who loves jazz.",
    "Classify the sentiment of the tweet as positive, negative, or neutral.",
    "Give three tips for staying focused while studying.",
    "Tell whether the email is spam or not spam.",
    "Describe your ideal weekend in a short paragraph.",
    "Identify the language of the given sentence: English, French, or German.",
    "Explain why the sky is blue to a six-year-old.",
    "Is the following statement true or false?",
    "Suggest a name for a new coffee shop.",
]


def classify_prompts() -> list[str]:
    packaged = load_prompt("classify", "classify.yaml", ClassifyPrompt)
    return [render_classify_prompt(packaged, text) for text in INSTRUCTIONS]


def instance_prompts() -> list[str]:
    packaged = load_prompt("instances_generation", "instances_generation.yaml", InstancesGenerationPrompt)
    return [render_generation_prompt(packaged, text) for text in INSTRUCTIONS[:3]]


@pytest.fixture(scope="module")
def decoder() -> Iterator[BatchDecoder]:
    built = BatchDecoder(model_path_for_tests(), n_ctx=N_CTX, slots=4, n_threads=2)
    yield built
    built.close()


@pytest.fixture(scope="module")
def plain() -> Iterator[BatchDecoder]:
    """A decoder without the prefix cache: every prompt is read whole."""
    built = BatchDecoder(model_path_for_tests(), n_ctx=N_CTX, slots=4, n_threads=2, prefix_cache=False)
    yield built
    built.close()


@pytest.fixture(scope="module")
def without_reuse(plain: BatchDecoder) -> list[Generation]:
    """Each classify prompt decoded alone, without the prefix cache."""
    return [alone(plain, p) for p in classify_prompts()]


def alone(decoder: BatchDecoder, text: str, params: GenerationParams = CLASSIFY) -> Generation:
    return decoder.submit(decoder.tokenize(text), params, 0, timeout_s=120).result()


def held_cells(decoder: BatchDecoder) -> list[int]:
    """Cells each slot's stream holds (white-box: positions 0..max are all present)."""
    return [llama_cpp.llama_memory_seq_pos_max(decoder._memory, s) + 1 for s in range(decoder.slots)]


@pytest.mark.model
def test_without_reuse_no_prompt_token_is_counted_as_reused(without_reuse: list[Generation]) -> None:
    assert [g.prompt_tokens_reused for g in without_reuse] == [0] * len(INSTRUCTIONS)


@pytest.mark.model
def test_a_second_prompt_with_the_same_header_reads_only_its_own_part(decoder: BatchDecoder) -> None:
    first, second = classify_prompts()[:2]
    shared = common_prefix(np.asarray(decoder.tokenize(first)), np.asarray(decoder.tokenize(second)))
    assert shared > 800
    alone(decoder, first)
    answer = alone(decoder, second)
    assert answer.prompt_tokens_reused == shared
    assert answer.prompt_tokens - answer.prompt_tokens_reused < 20


@pytest.mark.model
def test_greedy_answers_with_reuse_are_those_without_it_one_at_a_time(
    decoder: BatchDecoder, without_reuse: list[Generation]
) -> None:
    # Reuse changes no logit (prefix_cache.py): one request at a time, the answers are equal.
    with_reuse = [alone(decoder, p) for p in classify_prompts()]
    assert sum(g.prompt_tokens_reused > 800 for g in with_reuse) >= len(INSTRUCTIONS) - 1
    assert [g.text for g in with_reuse] == [g.text for g in without_reuse]
    # And they are sane: a Yes/No answer for every instruction.
    assert all(g.text.strip().split()[0].strip(".,") in ("Yes", "No") for g in with_reuse), with_reuse


@pytest.mark.model
def test_greedy_answers_with_reuse_decoded_together_match_those_without(
    decoder: BatchDecoder, without_reuse: list[Generation]
) -> None:
    # Together, 10 requests on 4 slots: they wait for the first to read the header, copy it,
    # and share decode steps. The first token comes from the prompt's logits, which are
    # exact; later ones may flip on near-ties as in any batch (measured: none here).
    with decoder.starting_together():
        futures = [decoder.submit(decoder.tokenize(p), CLASSIFY, 0, 120) for p in classify_prompts()]
    together = [f.result() for f in futures]
    assert [first_token(decoder, g) for g in together] == [first_token(decoder, g) for g in without_reuse]
    same = sum(a.text == b.text for a, b in zip(together, without_reuse, strict=True))
    assert same >= len(INSTRUCTIONS) - 1, [
        (a.text, b.text) for a, b in zip(together, without_reuse, strict=True)
    ]


def first_token(decoder: BatchDecoder, generation: Generation) -> list[int]:
    return decoder.tokenize(generation.text)[1:2]  # after BOS; [] for an empty answer


@pytest.mark.model
def test_concurrent_requests_with_different_headers_get_their_own_answers(decoder: BatchDecoder) -> None:
    params = CLASSIFY.with_(max_tokens=6)
    prompts = [p for pair in zip(classify_prompts()[3:6], instance_prompts(), strict=True) for p in pair]
    expected = [alone(decoder, p, params) for p in prompts]  # one at a time: as without reuse
    futures = [decoder.submit(decoder.tokenize(p), params, 0, 120) for p in prompts]
    answers = [f.result() for f in futures]
    assert all(g.prompt_tokens_reused > 800 for g in answers), [g.prompt_tokens_reused for g in answers]
    assert [first_token(decoder, g) for g in answers] == [first_token(decoder, g) for g in expected]
    same = sum(a.text == b.text for a, b in zip(answers, expected, strict=True))
    assert same >= len(prompts) - 1, [(a.text, b.text) for a, b in zip(answers, expected, strict=True)]


@pytest.mark.model
def test_a_prompt_sharing_nothing_is_read_whole_and_answered_as_alone(decoder: BatchDecoder) -> None:
    alone(decoder, classify_prompts()[0])  # every slot may now hold the classify header
    text = "Monday, Tuesday, Wednesday,"
    answer = alone(decoder, text, CLASSIFY.with_(max_tokens=4))
    assert answer.prompt_tokens_reused == 0
    assert answer.text.startswith(" Thursday"), answer.text


@pytest.mark.model
def test_a_timeout_while_others_reuse_the_header_fails_alone_and_slots_keep_only_prompts(
    decoder: BatchDecoder, without_reuse: list[Generation]
) -> None:
    prompts = classify_prompts()
    doomed = decoder.submit(decoder.tokenize(prompts[0]), CLASSIFY, 0, timeout_s=1e-6)
    others = [decoder.submit(decoder.tokenize(p), CLASSIFY, 0, 120) for p in prompts[1:6]]
    with pytest.raises(RetryableBackendError, match="longer than"):
        doomed.result()
    answers = [f.result() for f in others]
    assert [first_token(decoder, g) for g in answers] == [first_token(decoder, g) for g in without_reuse[1:6]]
    # The slots are free again and hold only the cells of prompt tokens they read, no answer.
    held = held_cells(decoder)
    assert held == [decoder._prefix.held(s) for s in range(decoder.slots)]
    longest = max(len(decoder.tokenize(p)) for p in prompts + instance_prompts())
    assert all(n <= longest for n in held) and max(held) > 800
    again = alone(decoder, prompts[0])
    assert again.text == without_reuse[0].text and again.prompt_tokens_reused > 800


@pytest.mark.model
def test_a_prompt_longer_than_the_sliding_window_keeps_every_cell_and_its_prefix_is_reused_exactly(
    decoder: BatchDecoder, plain: BatchDecoder
) -> None:
    # Gemma 3 attends over a 512-token window in most layers. Its cache for them must keep
    # every cell in position order (swa_full), or a trimmed stream would put the rest of a
    # prompt in other cells: logits off by up to 1.1 (measured with a wrapped window cache).
    packaged = load_prompt(
        "instances_classification", "instances_classification.yaml", InstancesClassificationPrompt
    )
    first, second = (render_classification_prompt(packaged, text) for text in INSTRUCTIONS[:2])
    params = CLASSIFY.with_(max_tokens=40)
    alone(decoder, first, params)
    slot_holding = max(range(decoder.slots), key=decoder._prefix.held)
    assert decoder._prefix.held(slot_holding) > 1400
    assert llama_cpp.llama_memory_seq_pos_min(decoder._memory, slot_holding) == 0  # nothing dropped
    answer = alone(decoder, second, params)
    assert answer.prompt_tokens_reused > 1390
    assert answer.text == alone(plain, second, params).text
