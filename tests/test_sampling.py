"""sampling: the one token sampler of the in-process runtimes (pure, on small arrays).

Penalties, temperature + nucleus sampling, per-request seeds and the context-window check,
and that both runtimes (llama_decoder, transformers_backend) use these functions and define
none of their own. That the transformers backend's draws equal these on the same logits is
checked beside it (test_transformers_backend.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from selfinstruct.config import GenerationParams
from selfinstruct.errors import BackendError
from selfinstruct.llm.types import CompletionRequest
from selfinstruct.runtimes import sampling
from selfinstruct.runtimes.sampling import (
    MIN_ANSWER_TOKENS,
    choose_token,
    fit_to_window,
    penalize,
    recent_tokens,
    request_seed,
    seeded_rng,
    top_logprobs,
)

GREEDY = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
SAMPLED = GenerationParams(max_tokens=8, temperature=1.0, top_p=0.9)
RUNTIMES = Path(sampling.__file__).parent

# -- choose_token: temperature and nucleus sampling --------------------------------------------


def nucleus_by_full_sort(logits: np.ndarray, temperature: float, top_p: float, draw: float) -> int:
    """The definition, done the slow way: sort the whole vocabulary (ties by id), cut at top_p."""
    scaled = (logits / np.float32(temperature)).astype(np.float64)  # scaled in float32, as ours is
    weights = np.exp(scaled - scaled.max())
    order = np.argsort(-weights, kind="stable")
    cumulative = np.cumsum(weights[order])
    size = min(int(np.searchsorted(cumulative, top_p * weights.sum())) + 1, len(order))
    pick = int(np.searchsorted(cumulative[:size], draw * cumulative[size - 1], side="right"))
    return int(order[min(pick, size - 1)])


def full_sort_nucleus(logits: np.ndarray, temperature: float, top_p: float, u: float) -> int:
    """The textbook nucleus sampler (softmax, sort the whole vocabulary) to check the shortlist against."""
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    size = int((cumulative < top_p).sum()) + 1
    kept = probs[order[:size]]
    pick = int(np.searchsorted(np.cumsum(kept), u * float(kept.sum()), side="right"))
    return int(order[min(pick, size - 1)])


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
def test_nucleus_sampling_on_a_shortlist_equals_sorting_the_whole_vocabulary(
    top_p: float, temperature: float
) -> None:
    logits_rng = np.random.default_rng(3)
    for trial in range(5):
        logits = (logits_rng.standard_normal(262_144) * (1 + 3 * trial)).astype(np.float32)
        draw = float(np.random.default_rng(trial).random())
        ours = choose_token(logits, temperature, top_p, np.random.default_rng(trial))
        assert ours == nucleus_by_full_sort(logits, temperature, top_p, draw)


def test_the_shortlist_picks_what_a_full_sort_would() -> None:
    for seed in range(30):
        logits = seeded_rng(seed).standard_normal(5000).astype(np.float32) * (1 + seed % 4)
        for top_p in (0.3, 0.9, 0.999):
            generator = seeded_rng(seed)
            u = float(seeded_rng(seed).random())
            assert choose_token(logits, 0.8, top_p, generator) == full_sort_nucleus(logits, 0.8, top_p, u)


def test_nucleus_reaching_into_a_flat_tail_breaks_ties_by_lowest_token_id() -> None:
    logits = np.zeros(262_144, dtype=np.float32)
    logits[7] = 10.0  # about 8% of the mass; the nucleus must take ~120k tied tokens more
    picks = {choose_token(logits, 1.0, 0.5, np.random.default_rng(s)) for s in range(200)}
    assert max(picks) < 125_000
    assert max(picks) > 50_000  # the tail really is sampled, not just token 7


def test_zero_temperature_is_argmax_and_zero_top_p_keeps_only_the_best_token() -> None:
    logits = np.array([0.1, 2.5, 2.4, -1.0], dtype=np.float32)
    assert choose_token(logits, 0.0, 0.9, np.random.default_rng(0)) == 1
    assert {choose_token(logits, 1.5, 0.0, np.random.default_rng(s)) for s in range(50)} == {1}


def test_temperature_zero_is_the_argmax() -> None:
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert choose_token(logits, 0.0, 0.5, seeded_rng(0)) == 1


def test_nucleus_never_samples_outside_the_top_p_mass() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    draws = {choose_token(logits, 1.0, 0.7, seeded_rng(s)) for s in range(200)}
    assert draws == {0, 1}
    assert {choose_token(logits, 1.0, 0.5, seeded_rng(s)) for s in range(50)} == {0}


def test_top_p_one_samples_every_token_in_proportion_to_its_probability() -> None:
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32))
    rng = np.random.default_rng(11)
    counts = np.bincount([choose_token(logits, 1.0, 1.0, rng) for _ in range(4000)], minlength=4)
    assert np.allclose(counts / 4000, [0.1, 0.2, 0.3, 0.4], atol=0.03)


def test_the_embedded_decoders_draws_are_unchanged() -> None:
    # Recorded with llama_batch's own sampler before it moved here: the embedded backend's
    # identity ("batched-1") promises these exact draws, so stored answers stay valid.
    pinned = {
        (0.7, 0.9, 1.3, 0.5, 0.25): [478, 271, 341, 86, 657, 249, 694, 451, 902, 893, 479, 534],
        (1.0, 1.0, None, 0.0, 0.0): [956, 392, 896, 86, 657, 216, 663, 451, 902, 397, 479, 593],
    }
    for (temperature, top_p, repeat, presence, frequency), expected in pinned.items():
        params = GenerationParams(
            max_tokens=8,
            temperature=temperature,
            top_p=top_p,
            repeat_penalty=repeat,
            presence_penalty=presence,
            frequency_penalty=frequency,
        )
        logits_rng, rng = np.random.default_rng(7), seeded_rng(1234)
        prompt, generated = [3, 1, 4, 1, 5, 9, 2, 6], []
        for _ in range(12):
            logits = (logits_rng.standard_normal(1000) * 3).astype(np.float32)
            adjusted = penalize(logits, generated, recent_tokens(prompt, generated), params)
            generated.append(choose_token(adjusted, temperature, top_p, rng))
        assert generated == expected


# -- penalize: repetition penalties --------------------------------------------------------------


def test_presence_and_frequency_penalties_follow_openai() -> None:
    logits = np.zeros(10, dtype=np.float32)
    params = SAMPLED.with_(presence_penalty=0.5, frequency_penalty=0.25)
    out = penalize(logits, generated=[5, 5, 9], recent=[], params=params)
    assert out[5] == pytest.approx(-(0.5 + 2 * 0.25)) and out[9] == pytest.approx(-(0.5 + 0.25))
    assert np.count_nonzero(out) == 2
    assert not logits.any()  # the model's logits are left alone


def test_presence_and_frequency_penalties_count_generated_tokens_only() -> None:
    logits = np.zeros(4, dtype=np.float32)
    params = GREEDY.with_(presence_penalty=0.5, frequency_penalty=0.25)
    assert penalize(logits, [2, 2, 3], [0, 1, 2, 2, 3], params).tolist() == [0.0, 0.0, -1.0, -0.75]


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits_once_per_token() -> None:
    logits = np.array([2.0, -2.0, 2.0, 1.0], dtype=np.float32)
    out = penalize(logits, generated=[], recent=[0, 1, 1, 3], params=SAMPLED.with_(repeat_penalty=2.0))
    assert out.tolist() == [1.0, -4.0, 2.0, 0.5]


def test_repeat_penalty_leaves_the_input_logits_unchanged() -> None:
    logits = np.array([2.0, -2.0, 1.0, 4.0], dtype=np.float32)
    out = penalize(logits, [], [0, 1, 0], GREEDY.with_(repeat_penalty=2.0))
    assert out.tolist() == [1.0, -4.0, 1.0, 4.0]
    assert logits.tolist() == [2.0, -2.0, 1.0, 4.0]  # the input is not changed


def test_no_penalty_returns_the_logits_uncopied() -> None:
    logits = np.ones(4, dtype=np.float32)
    assert penalize(logits, [1, 2], [1, 2], SAMPLED) is logits


def test_repeat_penalty_looks_back_over_the_last_64_tokens_of_prompt_and_answer() -> None:
    prompt, generated = list(range(100)), [500, 501]
    assert recent_tokens(prompt, generated) == [*range(38, 100), 500, 501]
    assert recent_tokens(prompt, list(range(200, 300))) == list(range(236, 300))
    assert recent_tokens([1, 2], [3], n=2) == [2, 3]


# -- seeds ---------------------------------------------------------------------------------------


def test_a_request_seed_is_its_own_or_derived_from_the_request() -> None:
    assert request_seed(CompletionRequest("Name a fruit:", SAMPLED.with_(seed=42))) == 42
    unseeded = SAMPLED.with_(seed=None)
    # Derived from sample index and prompt (sha256), so the same for every run and runtime.
    assert request_seed(CompletionRequest("Name a fruit:", unseeded, sample_index=3)) == 12340703065960556911
    assert request_seed(CompletionRequest("Name a fruit:", unseeded)) == 14412157823128322841
    assert request_seed(CompletionRequest("Name a vegetable:", unseeded)) != 14412157823128322841


def test_a_seeded_generator_repeats_its_draws_for_any_int_seed() -> None:
    assert seeded_rng(7).random(3).tolist() == seeded_rng(7).random(3).tolist()
    assert seeded_rng(7).random() != seeded_rng(8).random()
    # Negative and oversized seeds are taken modulo 2**64, as the embedded decoder always did.
    assert seeded_rng(-1).random() == np.random.default_rng(2**64 - 1).random()
    assert seeded_rng(2**64 + 5).random() == np.random.default_rng(5).random()


# -- the context window --------------------------------------------------------------------------


def test_a_prompt_that_fits_keeps_its_max_tokens_and_adds_no_extra() -> None:
    params, extra = fit_to_window(100, 256, SAMPLED.with_(max_tokens=50))
    assert params == SAMPLED.with_(max_tokens=50)
    assert extra == {}


def test_max_tokens_is_lowered_to_the_room_left_and_the_completion_says_so() -> None:
    params, extra = fit_to_window(200, 256, SAMPLED.with_(max_tokens=200))
    assert params == SAMPLED.with_(max_tokens=56)
    assert extra == {"max_tokens_lowered_to": 56}
    params, extra = fit_to_window(256 - MIN_ANSWER_TOKENS, 256, SAMPLED.with_(max_tokens=200))
    assert params.max_tokens == MIN_ANSWER_TOKENS and extra == {"max_tokens_lowered_to": MIN_ANSWER_TOKENS}


def test_a_prompt_that_leaves_too_little_room_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match=r"prompt too long: 241 tokens leave 15 of the 256-token context"):
        fit_to_window(256 - MIN_ANSWER_TOKENS + 1, 256, SAMPLED)
    with pytest.raises(BackendError, match=r"prompt too long: 300 tokens leave 0 of the 256-token"):
        fit_to_window(300, 256, SAMPLED)


# -- one sampler for both runtimes ---------------------------------------------------------------


def defined_names(path: Path) -> set[str]:
    """Every function defined anywhere in a module, and every name assigned at its top level."""
    tree = ast.parse(path.read_text("utf-8"))
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    return functions | assigned


def imported_from_sampling(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "selfinstruct.runtimes.sampling"
        for alias in node.names
    }


@pytest.mark.parametrize("runtime", ["llama_decoder.py", "transformers_backend.py", "embedded.py"])
def test_no_runtime_defines_a_sampler_of_its_own(runtime: str) -> None:
    shared = defined_names(RUNTIMES / "sampling.py")
    assert {"penalize", "choose_token", "request_seed", "fit_to_window", "REPEAT_LAST_N"} <= shared
    # Also the names the copies had before there was one sampler.
    former = {"_SHORTLIST_GAPS", "_sampling_seed", "MIN_ANSWER_TOKENS", "REPEAT_LAST_N"}
    assert not defined_names(RUNTIMES / runtime) & (shared | former)


@pytest.mark.parametrize("runtime", ["llama_decoder.py", "transformers_backend.py"])
def test_both_decoders_penalize_and_choose_tokens_with_the_shared_functions(runtime: str) -> None:
    assert {"penalize", "choose_token", "seeded_rng", "recent_tokens"} <= imported_from_sampling(
        RUNTIMES / runtime
    )


# -- top_logprobs: what a request asking for log-probabilities gets ------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


def test_top_logprobs_are_the_k_best_of_a_full_log_softmax_in_order() -> None:
    logits = np.random.default_rng(3).normal(0.0, 4.0, 262_144).astype(np.float32)
    full = _log_softmax(logits)
    best = int(np.argmax(logits))
    top = top_logprobs(logits, 5, best)
    assert [i for i, _ in top] == list(np.argsort(-full, kind="stable")[:5])
    assert [lp for _, lp in top] == pytest.approx([full[i] for i, _ in top], abs=1e-6)


def test_top_logprobs_add_the_chosen_token_last_when_it_is_not_among_them() -> None:
    logits = np.array([0.0, 3.0, 1.0, 3.0, -2.0], dtype=np.float32)
    top = top_logprobs(logits, 2, chosen=4)
    assert [i for i, _ in top] == [1, 3, 4]  # a tie goes to the lower id
    assert top[2][1] == pytest.approx(_log_softmax(logits)[4])
    assert [i for i, _ in top_logprobs(logits, 9, chosen=1)] == [1, 3, 2, 0, 4]
