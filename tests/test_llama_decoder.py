"""BatchDecoder: stop strings (pure) and batched decoding on the real Gemma model.

Its sampling rules (sampling.py) are tested in test_sampling.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import llama_cpp
import numpy as np
import pytest
from servers.llama_server import model_path_for_tests

from selfinstruct.config import GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.types import StreamAborted
from selfinstruct.runtimes.decoder_sequence import Generation, find_stop
from selfinstruct.runtimes.llama_decoder import MAX_TOKENS_IN_FLIGHT, BatchDecoder

GREEDY = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
SAMPLED = GenerationParams(max_tokens=8, temperature=1.0, top_p=0.9)
# Open-ended prompts: their answers can depend on the batch composition (near-ties; see the
# module doc), so they are only compared where the composition is fixed (starting_together).
PROMPTS = [
    "Here is a list of fruits: apple, banana,",
    "The three primary colours are",
    "Steps to boil an egg:\n1.",
    "My favourite season is autumn because",
]
# Clear continuations: no near-ties, so their answers hold whenever each request joins.
SERIES = [
    "Count: 1, 2, 3, 4, 5,",
    "Monday, Tuesday, Wednesday,",
    "January, February, March,",
    "A, B, C, D, E,",
]

# -- stop strings ------------------------------------------------------------------------------


def test_find_stop_returns_the_earliest_stop_after_start() -> None:
    assert find_stop(b"a, b. c,", (b".", b","), 0) == 1
    assert find_stop(b"a, b. c,", (b".", b","), 2) == 4
    assert find_stop(b"abc", (b"x",), 0) == -1


# -- batched decoding on the real model --------------------------------------------------------


@pytest.fixture(scope="module")
def decoder() -> Iterator[BatchDecoder]:
    built = BatchDecoder(model_path_for_tests(), n_ctx=256, slots=4, n_threads=1)
    yield built
    built.close()


def run(decoder: BatchDecoder, prompt: str, params: GenerationParams, seed: int = 0) -> Future[Generation]:
    return decoder.submit(decoder.tokenize(prompt), params, seed, timeout_s=60)


def alone(decoder: BatchDecoder, prompt: str, params: GenerationParams, seed: int = 0) -> Generation:
    return run(decoder, prompt, params, seed).result()


def together(decoder: BatchDecoder, prompts: list[str], params: GenerationParams) -> list[Future[Generation]]:
    with decoder.starting_together():
        return [run(decoder, p, params, seed=i) for i, p in enumerate(prompts)]


@pytest.mark.model
def test_greedy_answers_are_identical_alone_and_decoded_together(decoder: BatchDecoder) -> None:
    solo = [alone(decoder, p, GREEDY, seed=i) for i, p in enumerate(PROMPTS)]
    assert solo[0].text.strip()
    assert [f.result() for f in together(decoder, PROMPTS, GREEDY)] == solo


@pytest.mark.model
def test_batched_greedy_tokens_are_the_argmax_of_a_solo_evaluation_up_to_rounding(
    decoder: BatchDecoder,
) -> None:
    # Where a batched answer differs from a solo one, it must be a near-tie flip, not a
    # wrong context: replay each batched answer through llama-cpp-python's own Llama
    # (teacher forcing) and check every token is within a rounding gap of the best one.
    from llama_cpp import Llama

    prompts = PROMPTS + [f"Note {i}: the best thing about weekends is" for i in range(4)]
    with decoder.starting_together():
        futures = [run(decoder, p, GREEDY.with_(max_tokens=24)) for p in prompts]
    answers = [f.result() for f in futures]
    reference = Llama(
        model_path=str(model_path_for_tests()), n_ctx=256, n_threads=1, logits_all=True, verbose=False
    )
    try:
        for prompt, answer in zip(prompts, answers, strict=True):
            prompt_ids = reference.tokenize(prompt.encode(), special=True)
            answer_ids = reference.tokenize(answer.text.encode(), add_bos=False, special=True)
            reference.reset()
            reference.eval(prompt_ids + answer_ids)
            scores = np.asarray(reference.scores[len(prompt_ids) - 1 : len(prompt_ids) + len(answer_ids) - 1])
            chosen = scores[np.arange(len(answer_ids)), answer_ids]
            assert float((scores.max(axis=1) - chosen).max()) < 1.0, (prompt, answer.text)
    finally:
        reference.close()


@pytest.mark.model
def test_seeded_sample_is_the_same_alone_and_decoded_together(decoder: BatchDecoder) -> None:
    solo = [alone(decoder, p, SAMPLED, seed=i) for i, p in enumerate(PROMPTS)]
    assert [f.result() for f in together(decoder, PROMPTS, SAMPLED)] == solo
    # The seed matters: other seeds give other samples.
    assert len({alone(decoder, PROMPTS[0], SAMPLED, seed=s).text for s in range(1, 4)} | {solo[0].text}) > 1


@pytest.mark.model
def test_stop_strings_and_max_tokens_are_honoured_inside_a_batch(decoder: BatchDecoder) -> None:
    free = alone(decoder, SERIES[1], GREEDY)
    assert free.text.startswith(" Thursday, Friday"), free.text
    stopped = run(decoder, SERIES[1], GREEDY.with_(stop=("zzz", ", Fri")))
    short = run(decoder, SERIES[2], GREEDY.with_(max_tokens=3))
    others = [run(decoder, p, GREEDY) for p in PROMPTS[2:]]
    assert stopped.result().text == " Thursday"
    assert stopped.result().finish_reason == "stop"
    assert short.result().finish_reason == "length" and short.result().completion_tokens == 3
    assert all(f.result().completion_tokens == GREEDY.max_tokens for f in others)


@pytest.mark.model
def test_a_request_joining_mid_generation_gets_its_own_answer(decoder: BatchDecoder) -> None:
    long = GREEDY.with_(max_tokens=40)
    expected_first, expected_late = alone(decoder, SERIES[0], long), alone(decoder, SERIES[1], GREEDY)
    first = run(decoder, SERIES[0], long)
    start = decoder.steps_decoded
    while decoder.steps_decoded < start + 5:  # the first request is generating by now
        time.sleep(0.001)
    late = run(decoder, SERIES[1], GREEDY)
    assert not first.done()
    assert late.result() == expected_late
    assert first.result() == expected_first


@pytest.mark.model
def test_a_timeout_in_one_sequence_leaves_the_others_untouched(decoder: BatchDecoder) -> None:
    expected = [alone(decoder, p, GREEDY) for p in SERIES[1:]]
    doomed = decoder.submit(decoder.tokenize(SERIES[0]), GREEDY, 0, timeout_s=1e-6)
    others = [run(decoder, p, GREEDY) for p in SERIES[1:]]
    with pytest.raises(RetryableBackendError, match="longer than"):
        doomed.result()
    assert [f.result() for f in others] == expected


@pytest.mark.model
def test_more_requests_than_slots_all_finish_and_leave_no_kv_cells_behind(decoder: BatchDecoder) -> None:
    expected = [alone(decoder, p, GREEDY) for p in SERIES]
    futures = [run(decoder, SERIES[i % 4], GREEDY) for i in range(3 * decoder.slots)]
    assert [f.result() for f in futures] == expected * 3
    # Each slot's KV stream is empty again (white-box: -1 means "no cells for this sequence").
    memory = decoder._memory
    assert [llama_cpp.llama_memory_seq_pos_max(memory, s) for s in range(decoder.slots)] == [-1] * 4


@pytest.mark.model
def test_requests_start_only_while_the_max_tokens_decoding_fit_the_budget(decoder: BatchDecoder) -> None:
    expected = [alone(decoder, p, GREEDY) for p in SERIES]
    decoder.max_tokens_in_flight, decoder.most_decoding = 2 * GREEDY.max_tokens, 0
    try:
        results = [f.result() for f in together(decoder, SERIES, GREEDY)]
    finally:
        decoder.max_tokens_in_flight = MAX_TOKENS_IN_FLIGHT
    assert decoder.most_decoding == 2  # of 4 free slots
    assert results == expected


@pytest.mark.model
def test_with_the_alpaca_presets_3072_tokens_four_requests_decode_at_once() -> None:
    # All 16 of them used to share the model at once, and none ended for many minutes.
    own = BatchDecoder(model_path_for_tests(), n_ctx=3200, slots=5, n_threads=1)
    try:
        cancel = threading.Event()
        with own.starting_together():
            futures = [
                own.submit(own.tokenize(p), GREEDY.with_(max_tokens=3072), 0, 600, cancel)
                for p in PROMPTS + SERIES[:1]
            ]
        while own.steps_decoded < 5:
            time.sleep(0.01)
        assert own.most_decoding == 4 == MAX_TOKENS_IN_FLIGHT // 3072
        cancel.set()
        assert all(isinstance(f.exception(timeout=30), StreamAborted) for f in futures)
    finally:
        own.close()


@pytest.mark.model
def test_a_request_called_off_leaves_the_decoder_at_its_next_step(decoder: BatchDecoder) -> None:
    expected = alone(decoder, SERIES[1], GREEDY)
    running, waiting = threading.Event(), threading.Event()
    long = GREEDY.with_(max_tokens=200)
    busy = [decoder.submit(decoder.tokenize(p), long, 0, 60, running) for p in SERIES]  # every slot
    queued = decoder.submit(decoder.tokenize(PROMPTS[0]), long, 0, 60, waiting)
    waiting.set()
    assert isinstance(queued.exception(timeout=30), StreamAborted)  # without ever starting
    assert not any(f.done() for f in busy)
    running.set()
    assert all(isinstance(f.exception(timeout=30), StreamAborted) for f in busy)
    steps = decoder.steps_decoded
    time.sleep(0.2)
    assert decoder.steps_decoded == steps  # nothing is decoding any more
    assert alone(decoder, SERIES[1], GREEDY) == expected  # and the slots serve new requests


@pytest.mark.model
def test_closing_fails_queued_requests_and_refuses_new_ones() -> None:
    own = BatchDecoder(model_path_for_tests(), n_ctx=256, slots=1, n_threads=1)
    tokens = own.tokenize(PROMPTS[0])
    futures = [own.submit(tokens, GREEDY.with_(max_tokens=64), 0, 60) for _ in range(3)]
    own.close()
    assert all(isinstance(f.exception(), BackendError) for f in futures)
    with pytest.raises(BackendError, match="closed"):
        own.submit(tokens, GREEDY, 0, 60)


@pytest.mark.model
def test_a_prompt_that_does_not_fit_the_window_is_refused(decoder: BatchDecoder) -> None:
    with pytest.raises(ValueError, match="do not fit"):
        decoder.submit([2] * 250, GREEDY.with_(max_tokens=10), 0, 60)


# -- log-probabilities ---------------------------------------------------------------------------


class _RecordingDecoder(BatchDecoder):
    """Keeps a copy of the logits each token was sampled from."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.seen: list[np.ndarray] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _sample(self, sequence: object, row: int) -> None:
        self.seen.append(self._llama.logits(row).copy())
        super()._sample(sequence, row)  # type: ignore[arg-type]


@pytest.mark.model
def test_top_logprobs_are_those_of_a_full_log_softmax_of_the_logits_sampled_from() -> None:
    recording = _RecordingDecoder(model_path_for_tests(), n_ctx=256, slots=1, n_threads=1)
    try:
        params = GREEDY.with_(max_tokens=6, top_logprobs=4)
        generation = run(recording, "Rate the answer from 1 to 5.\nScore:", params).result()
        expected = []
        for logits in recording.seen:
            x = logits.astype(np.float64)
            full = x - (x.max() + np.log(np.exp(x - x.max()).sum()))
            best = np.argsort(-full, kind="stable")[:4]
            expected.append(
                {recording._token_bytes(int(i)).decode("utf-8", "replace"): full[i] for i in best}
            )
    finally:
        recording.close()  # the token texts are read above: the vocabulary goes with the model
    assert len(generation.logprobs) == generation.completion_tokens == len(expected) == 6
    assert "".join(t.token for t in generation.logprobs) == generation.text
    for token, top in zip(generation.logprobs, expected, strict=True):
        assert list(token.top) == list(top)  # the same texts, most likely first
        assert list(token.top.values()) == pytest.approx(list(top.values()), abs=1e-5)
        assert token.token == next(iter(token.top))  # greedy: the most likely one was written


@pytest.mark.model
def test_a_request_that_asks_for_no_logprobs_gets_none(decoder: BatchDecoder) -> None:
    assert run(decoder, SERIES[0], GREEDY).result().logprobs == ()
