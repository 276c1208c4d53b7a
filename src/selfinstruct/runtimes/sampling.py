"""How an in-process runtime picks each next token, and the per-request rules around it.

Both runtimes (the embedded llama.cpp decoder and the transformers backend) get raw logits
from their model and choose tokens here, in numpy, so a preset means the same thing on
both and the same logits with the same seed give the same token:
- `penalize`: repeat_penalty (llama.cpp's) then presence/frequency (OpenAI's);
- `choose_token`: argmax at temperature 0, else temperature then nucleus (top_p) sampling;
- `request_seed` / `seeded_rng`: each request draws from its own generator, seeded by the
  request, so its draws do not depend on what ran before it or beside it;
- `fit_to_window`: a prompt must leave MIN_ANSWER_TOKENS of the context window for the
  answer; max_tokens is lowered to the room left, and the completion says so;
- `top_logprobs`: what a request with `top_logprobs` gets back for each token, from the
  model's own distribution (before penalties and temperature), as a server reports it.

Each runtime's identity (its DECODER_VERSION) stands for these exact draws: a change that
alters them needs new decoder versions, or answers stored under the old ones would be
taken for the new sampler's (test_sampling.py pins a sequence of draws).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from selfinstruct.config import GenerationParams
from selfinstruct.errors import BackendError

if TYPE_CHECKING:
    from selfinstruct.llm.types import CompletionRequest

# llama.cpp's repeat penalty looks back over this many tokens (its default), prompt included.
REPEAT_LAST_N = 64
# A prompt must leave at least this many tokens of the context window for the answer.
MIN_ANSWER_TOKENS = 16
# Nucleus sampling first looks only at tokens within this many nats of the best one; it
# widens (up to the whole vocabulary) until the shortlist holds the top_p mass.
SHORTLIST_GAPS = (8.0, 16.0, float("inf"))


def penalize(
    logits: np.ndarray, generated: Sequence[int], recent: Sequence[int], params: GenerationParams
) -> np.ndarray:
    """Logits after the repetition penalties, in llama.cpp's order (repeat, then the others).

    - `repeat_penalty` (llama.cpp): each distinct token of `recent` (the last REPEAT_LAST_N
      tokens of prompt + answer) has its logit divided by the penalty if positive, else
      multiplied by it.
    - presence/frequency (OpenAI): `logit -= presence * (count > 0) + frequency * count`,
      counting every token generated so far (the prompt is not counted).
    Returns `logits` itself when no penalty applies, else a penalised copy.
    """
    repeat = 1.0 if params.repeat_penalty is None else params.repeat_penalty
    use_repeat = repeat != 1.0 and len(recent) > 0
    use_counts = (params.presence_penalty != 0.0 or params.frequency_penalty != 0.0) and len(generated) > 0
    if not (use_repeat or use_counts):
        return logits
    out = np.array(logits, dtype=np.float32, copy=True)
    if use_repeat:
        ids = np.unique(np.asarray(recent, dtype=np.int64))
        values = out[ids]
        out[ids] = np.where(values > 0, values / repeat, values * repeat)
    if use_counts:
        ids, counts = np.unique(np.asarray(generated, dtype=np.int64), return_counts=True)
        out[ids] -= params.presence_penalty + params.frequency_penalty * counts
    return out


def recent_tokens(prompt: Sequence[int], generated: Sequence[int], n: int = REPEAT_LAST_N) -> list[int]:
    """The last `n` tokens of prompt + answer (what repeat_penalty looks at)."""
    return [*prompt[-n:], *generated[-n:]][-n:]


def choose_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """The next token: argmax at temperature 0, else temperature then nucleus (top_p) sampling.

    The nucleus is the smallest set of most probable tokens whose mass reaches `top_p`
    (ties broken by token id). Sorting a 262k vocabulary every step would cost more than the
    model, so only a shortlist is sorted: all tokens within a gap of the best one. That set
    is a prefix of the full ordering, so when it holds `top_p` of the mass, the nucleus lies
    inside it and the result is exactly that of a full sort. One `rng.random()` per call.
    """
    if temperature <= 0.0:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    best = float(scaled.max())
    if top_p >= 1.0:  # the whole vocabulary: no need to order it
        weights = np.exp(scaled.astype(np.float64) - best)
        cumulative = np.cumsum(weights)
        return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    total = float(np.exp(scaled - best).sum(dtype=np.float64))
    for gap in SHORTLIST_GAPS:
        ids = np.flatnonzero(scaled >= best - gap)
        weights = np.exp(scaled[ids].astype(np.float64) - best)
        if weights.sum() >= top_p * total or gap == float("inf"):
            break
    order = np.argsort(-weights, kind="stable")  # ids ascend, so ties keep the lower id first
    cumulative = np.cumsum(weights[order])
    size = min(int(np.searchsorted(cumulative, top_p * total)) + 1, len(order))
    pick = int(np.searchsorted(cumulative[:size], rng.random() * cumulative[size - 1], side="right"))
    return int(ids[order[min(pick, size - 1)]])


def request_seed(request: CompletionRequest) -> int:
    """The request's own seed, or one derived from the request itself.

    Deriving it (rather than drawing one) keeps an unseeded request reproducible whatever
    ran before it or beside it.
    """
    if request.params.seed is not None:
        return request.params.seed
    blob = f"{request.sample_index}\0{request.prompt}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def seeded_rng(seed: int) -> np.random.Generator:
    """A request's own generator: the same seed always gives the same draws."""
    return np.random.default_rng(seed % 2**64)


def fit_to_window(
    prompt_tokens: int, n_ctx: int, params: GenerationParams
) -> tuple[GenerationParams, dict[str, Any]]:
    """`params` with max_tokens lowered to the room the prompt leaves in the context window,
    and the Completion `extra` that records a lowering ({} when there was none).

    A prompt that leaves fewer than MIN_ANSWER_TOKENS is a BackendError (not retried).
    """
    room = n_ctx - prompt_tokens
    if room < MIN_ANSWER_TOKENS:
        raise BackendError(
            f"prompt too long: {prompt_tokens} tokens leave {max(room, 0)} of the "
            f"{n_ctx}-token context window for the answer (need {MIN_ANSWER_TOKENS}); "
            "raise backend.n_ctx or shorten the prompt"
        )
    max_tokens = min(params.max_tokens, room)
    extra = {"max_tokens_lowered_to": max_tokens} if max_tokens < params.max_tokens else {}
    return params.with_(max_tokens=max_tokens), extra


def top_logprobs(logits: np.ndarray, k: int, chosen: int) -> list[tuple[int, float]]:
    """(id, log-probability under softmax(logits)) of the `k` most likely tokens, most likely
    first (ties by id), then of `chosen` (the token sampled) when it is not among them.

    One logsumexp over the vocabulary (Gemma 3 has ~262k entries): a whole log-softmax would
    write a second vocabulary-sized array to read k values from it.
    """
    x = np.asarray(logits, dtype=np.float32)
    best = float(x.max())
    log_total = best + math.log(float(np.exp(x - best).sum(dtype=np.float64)))
    k = min(k, x.size)
    ids = np.argpartition(-x, k - 1)[:k] if k < x.size else np.arange(x.size)
    ids = ids[np.lexsort((ids, -x[ids]))]
    if chosen not in ids:
        ids = np.append(ids, chosen)
    return [(int(i), float(x[i]) - log_total) for i in ids]
