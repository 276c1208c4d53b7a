"""PromptScorer: prompt log-probabilities on the real Gemma model, against llama-cpp-python's own Llama."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fixtures.llama_reference import reference_llama, reference_log_probs
from servers.llama_server import model_path_for_tests

from selfinstruct.runtimes.llama_scorer import SCORE_CHUNK, PromptScorer, load_scorer, log_probs_at

# The scorer sums exp() in float32 where the reference's log-softmax is float64 throughout:
# they differ by ~5e-8 nats per token where measured. A position read off by one, or a call
# cut differently, moves tokens by 0.1 to several nats.
PER_TOKEN_TOLERANCE = 1e-6

LONG_TEXT = " ".join(
    f"Step {i}: stir the pot, taste the sauce, and write down what changed since step {i - 1}."
    for i in range(1, 13)
)


def test_log_probs_at_equals_a_full_log_softmax_even_for_large_logits() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.normal(0, 8, size=(70, 1000)) + 1e4).astype(np.float32)  # 70 rows: three blocks
    targets = rng.integers(0, 1000, size=70)
    wide = logits.astype(np.float64)
    full = wide - (
        wide.max(1, keepdims=True) + np.log(np.exp(wide - wide.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    expected = full[np.arange(70), targets]
    assert np.abs(log_probs_at(logits, targets) - expected).max() < 1e-5
    assert np.all(np.isfinite(log_probs_at(logits, targets)))


@pytest.fixture(scope="module")
def scorer() -> Iterator[PromptScorer]:
    built = load_scorer(model_path_for_tests(), n_ctx=1024, n_threads=1)
    yield built
    built.close()


@pytest.mark.model
def test_log_probs_equal_llama_cpp_python_evaluating_each_sequence_whole(scorer: PromptScorer) -> None:
    start = scorer.start_tokens()
    cases = [
        (start + scorer.tokenize("Name a colour.\n"), scorer.tokenize(" red")),  # one target token
        (start, scorer.tokenize("The sea is wide and blue.")),  # the BOS alone as context
        (start + scorer.tokenize("Summarise the steps.\n"), scorer.tokenize(LONG_TEXT)),  # crosses chunks
        (start + scorer.tokenize(LONG_TEXT + "\n"), scorer.tokenize("Taste as you go.")),  # long context
    ]
    assert len(cases[2][0]) + len(cases[2][1]) > 2 * SCORE_CHUNK
    assert len(cases[3][0]) > SCORE_CHUNK
    with reference_llama(model_path_for_tests()) as reference:
        for context, target in cases:
            ours = scorer.target_log_probs(context, target)
            expected = reference_log_probs(reference, context, target)
            assert ours.shape == (len(target),)
            assert np.abs(ours - expected).max() < PER_TOKEN_TOLERANCE, (len(context), len(target))


@pytest.mark.model
def test_a_sequences_log_probs_do_not_depend_on_what_was_scored_before(scorer: PromptScorer) -> None:
    start = scorer.start_tokens()
    context, target = (
        start + scorer.tokenize("Write a poem about the sea.\n"),
        scorer.tokenize("Waves roll in."),
    )
    first = scorer.target_log_probs(context, target)
    scorer.target_log_probs(start, scorer.tokenize(LONG_TEXT))
    assert scorer.target_log_probs(context, target).tobytes() == first.tobytes()


@pytest.mark.model
def test_tokens_of_data_text_never_become_control_tokens(scorer: PromptScorer) -> None:
    assert scorer.start_tokens() and len(scorer.tokenize("<eos>")) > 1
    assert scorer.tokenize("") == []


@pytest.mark.model
def test_an_empty_context_or_target_or_a_sequence_past_the_window_is_refused(scorer: PromptScorer) -> None:
    start = scorer.start_tokens()
    with pytest.raises(ValueError, match="not scorable"):
        scorer.target_log_probs([], scorer.tokenize("text"))
    with pytest.raises(ValueError, match="not scorable"):
        scorer.target_log_probs(start, [])
    with pytest.raises(ValueError, match="not scorable"):
        scorer.target_log_probs(start, scorer.tokenize(LONG_TEXT * 4))
