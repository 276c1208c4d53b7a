"""Prompt log-probabilities from a GGUF model: how likely given tokens are after a given context.

Prefill only, no sampling: `PromptScorer.target_log_probs(context, target)` reads
context + target through the model and returns log p(target[i] | context, target[:i]) for
every i, in nats (IFD, quality/ifd.py, is built on it). The logits of position p predict
the token at p + 1, so the rows read are those of the last context token up to the
second-to-last target token. The last token is read too (without logits), so that the
calls are cut exactly as when the whole sequence is evaluated (llama-cpp-python's
`Llama.eval` with n_batch = SCORE_CHUNK): llama.cpp's kernels sum a little differently
in calls of other sizes (one token moved by 0.14 nats where measured), and with the same
cuts and kernels the numbers agree to ~1e-7 (tests/test_llama_scorer.py).

A sibling of the generating decoder (llama_decoder.py), on the same `LlamaContext`
settings, but without its thread and slots: one sequence, read in calls of SCORE_CHUNK
tokens cut from its start, whatever was scored before. So a row's log-probabilities never
depend on the other rows, which makes a resumed `score` byte-identical to an uninterrupted
one. Packing several rows into one llama_decode call was measured and did not pay on
2 cores (10 rows, 20 sequences of 824 tokens in all, 1 thread: 6.1-7.8 s packed 8 to a
call, 6.5-6.9 s one at a time; no faster with 2 threads either), and it moves the numbers
(by up to 0.13 nats on a token where measured), so it is not done.

The cost is the output layer: every scored position needs all n_vocab logits (262K for
Gemma 3, whose output layer is 168M of its 270M weights). Reading them is one logsumexp
per row (`log_probs_at`), not a full log-softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfinstruct.errors import BackendError
from selfinstruct.runtimes.llama_context import LlamaContext

# Part of every stored score's key (scorer_identity): a change to how the calls are cut moves
# the numbers a little, so scores stored by another version are not taken for this one's.
SCORER_VERSION = "solo-128"
# Tokens per llama_decode call. Each call may ask for logits at all of them: the context keeps
# SCORE_CHUNK rows of n_vocab floats (128 MB for Gemma 3). Measured: as fast as 512 a call.
SCORE_CHUNK = 128
# Rows of logits turned into log-probabilities at once (a temporary copy of 32 MB for Gemma 3).
_LSE_BLOCK = 32


def log_probs_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log softmax(logits[i])[targets[i]] for each row i, as float64.

    One logsumexp per row: logit - (max + log sum exp(logits - max)); the full log-softmax
    over the vocabulary is never formed.
    """
    result = np.empty(len(targets), np.float64)
    for start in range(0, len(targets), _LSE_BLOCK):
        block = logits[start : start + _LSE_BLOCK]
        peak = block.max(axis=1)
        shifted = np.subtract(block, peak[:, None])
        np.exp(shifted, out=shifted)
        lse = peak.astype(np.float64) + np.log(shifted.sum(axis=1, dtype=np.float64))
        chosen = block[np.arange(len(block)), targets[start : start + _LSE_BLOCK]]
        result[start : start + len(block)] = chosen.astype(np.float64) - lse
    return result


class PromptScorer:
    """A GGUF model that scores token sequences: prompt log-probabilities, one sequence at a time."""

    def __init__(self, model_path: Path, n_ctx: int, n_threads: int) -> None:
        self.n_ctx = n_ctx
        self._llama = LlamaContext(model_path, n_ctx, n_seq=1, n_outputs=SCORE_CHUNK, n_threads=n_threads)

    def tokenize(self, text: str) -> list[int]:
        """The tokens of `text` as data: no BOS, and spellings of control tokens stay text."""
        return self._llama.tokenize(text, add_bos=False, special=False)

    def start_tokens(self) -> list[int]:
        """What a sequence starts with: the model's BOS token ([] when it has none)."""
        bos = self._llama.bos()
        return [] if bos is None else [bos]

    def target_log_probs(self, context: Sequence[int], target: Sequence[int]) -> np.ndarray:
        """log p(target[i] | context + target[:i]) for each i (nats, float64).

        `context` must hold at least one token (the BOS) and context + target must fit n_ctx.
        """
        ids = [*context, *target]
        if not context or not target or len(ids) > self.n_ctx:
            raise ValueError(
                f"{len(context)} context + {len(target)} target tokens: not scorable in {self.n_ctx}"
            )
        first = len(context) - 1  # the position whose logits predict target[0]
        last = len(ids) - 1  # the last token predicts nothing asked for
        result = np.empty(len(target), np.float64)
        try:
            for start in range(0, len(ids), SCORE_CHUNK):
                end = min(start + SCORE_CHUNK, len(ids))
                scored = range(max(start, first), min(end, last))
                entries = [(0, ids[p], p, p in scored) for p in range(start, end)]
                status = self._llama.decode(entries)
                if status != 0:
                    raise BackendError(f"llama_decode returned {status} while scoring {len(ids)} tokens")
                if scored:
                    logits = self._llama.output_logits(len(scored))
                    targets = np.asarray([ids[p + 1] for p in scored])
                    result[scored.start - first : scored.stop - first] = log_probs_at(logits, targets)
        finally:
            self._llama.forget(0)
        return result

    def close(self) -> None:
        self._llama.close()


def load_scorer(model_path: Path, n_ctx: int, n_threads: int) -> PromptScorer:
    """A PromptScorer on `model_path`, loaded quietly; BackendError (one line) when llama.cpp cannot."""
    from selfinstruct.runtimes.embedded import captured_stderr, last_line

    with captured_stderr() as captured:
        try:
            return PromptScorer(model_path, n_ctx, n_threads)
        except (ValueError, RuntimeError, OSError) as exc:
            detail = last_line(captured()) or str(exc)
            raise BackendError(f"cannot load the scorer model {model_path}: {detail}") from None


def scorer_identity(model_path: Path, n_ctx: int, cache_dir: Path) -> dict[str, Any]:
    """What a scorer's numbers depend on: part of the key of every stored score.

    The model file's full SHA-256 (not its location), this scorer's version (SCORER_VERSION:
    how calls are cut), llama.cpp's version (its kernels make the logits) and n_ctx (the size
    of the cache the attention runs over). Not the thread count: it does not change the sums.
    """
    import importlib.metadata

    from selfinstruct.models.digest import file_sha256

    return {
        "kind": "llama_scorer",
        "model": model_path.name,
        "size": model_path.stat().st_size,
        "sha256": file_sha256(model_path, cache_dir),
        "scorer": SCORER_VERSION,
        "llama_cpp": importlib.metadata.version("llama-cpp-python"),
        "n_ctx": n_ctx,
    }
