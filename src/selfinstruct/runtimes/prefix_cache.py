"""Prompt-prefix reuse for the batched llama.cpp decoder: which KV cells a new prompt takes over.

The prompts of a stage share a long few-shot header: in the packaged prompts, 827 of a
classify prompt's 841 tokens, 884 of 892 for instance generation, 1399 of 1407 for
classification instances. A `PrefixCache` records which prompt tokens each slot's KV
stream holds. A released slot keeps the cells of the prompt it read. A new request reads
only the part of its prompt that no slot holds:
- its own slot holds a long enough prefix: the slot is trimmed to it (free);
- another slot holds at least MIN_REUSE tokens more: that slot's stream is copied into
  its own first (`llama_memory_seq_cp`). Between the per-slot streams, this llama.cpp
  copies the whole stream buffer, every layer's K and V, at the start of the next
  `llama_decode`, and only whole-stream copies are allowed. That is ~74 MB at n_ctx 4096,
  about 15 ms here, against ~1.3 s to read an 841-token header again;
- a request that is still reading its prompt will soon hold more: wait for it. Prompts
  are read one at a time anyway, so waiting costs no throughput, and 8 requests with the
  same header read it once, not 8 times.

Why reuse leaves every answer as it was (measured on Gemma 3 270M, by test_prefix_cache.py):
a prompt's logits are bit-identical whatever chunks it is read in (17 to 512 tokens a
call), and a cell at position p depends only on tokens 0..p. So the first R cells of a
stream that read the same R tokens, and then the rest of the prompt, give the same
logits, bit for bit, as reading the whole prompt. This holds only while a stream's cells
are its positions in order, so the decoder needs a full-size sliding-window cache
(`swa_full`). Without one, the window cache wraps around after n_swa + n_batch cells,
a trimmed stream puts new tokens in other cells, and the logits moved by up to 1.1.
Only prompt cells are reused: generated tokens' cells come from decode steps shared with
other sequences. A prompt is never read in a call of one token (MIN_READ), which takes
another attention kernel: its cells would differ from a whole read's (by up to 1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The least reuse worth a copy, a wait, or a mention: ~50 ms of reading on 2 cores.
MIN_REUSE = 32

# The fewest prompt tokens read after the reused ones (see `plan`), and the fewest in any
# call that reads a prompt (llama_decoder.py cuts its chunks so).
MIN_READ = 2


@dataclass(frozen=True)
class Plan:
    """Where a prompt's first `length` tokens come from: `source` slot's cells (its own: no copy)."""

    source: int
    length: int
    save: int | None = None  # first copy what the own slot holds to this free slot


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """The prompt tokens whose cells each slot holds, at positions 0..n-1, and the plans they allow.

    Bookkeeping only: the decoder makes the llama.cpp calls that keep the slots' cells in step
    (`took` after a copy and trim, `read` after a prompt chunk, `clear` after emptying a slot).
    Disabled, every plan reads the whole prompt.
    """

    def __init__(self, slots: int, enabled: bool = True, min_reuse: int = MIN_REUSE) -> None:
        self.enabled = enabled
        self.min_reuse = min_reuse
        self._held = [np.zeros(0, dtype=np.int32) for _ in range(slots)]

    def held(self, slot: int) -> int:
        """How many prompt tokens' cells `slot` holds."""
        return len(self._held[slot])

    def plan(
        self, slot: int, prompt: np.ndarray, leaders: Sequence[np.ndarray] = (), free: Sequence[int] = ()
    ) -> Plan | None:
        """The cells a prompt about to be read in `slot` should take, or None to wait.

        `leaders` are the prompts other requests are reading now: when one of them will give
        at least MIN_REUSE more tokens than any slot holds today, the answer is to wait.
        At least the prompt's last two tokens are always read: the last one's logits start the
        answer, and a call of one token takes another attention kernel than a call of two or
        more, which would give its cells other bits than a read of the whole prompt (measured).
        When the prompt would overwrite a prefix that only `slot` holds, the plan saves it
        in one of the `free` slots that holds nothing of its own.
        """
        if not self.enabled:
            return Plan(slot, 0)
        limit = max(0, len(prompt) - MIN_READ)
        own = min(common_prefix(self._held[slot], prompt), limit)
        best = Plan(slot, own)
        for other, held in enumerate(self._held):  # a copy must beat the own slot by MIN_REUSE
            length = min(common_prefix(held, prompt), limit)
            if other != slot and length >= own + self.min_reuse and length > best.length:
                best = Plan(other, length)
        if any(min(common_prefix(p, prompt), limit) >= best.length + self.min_reuse for p in leaders):
            return None
        if best.length < self.min_reuse:
            best = Plan(slot, 0)
        if self.held(slot) - (best.length if best.source == slot else 0) >= self.min_reuse and self._unique(
            slot
        ):
            # Empty slots first, then the highest (new requests take the lowest free slot).
            spares = [s for s in free if s not in (slot, best.source) and not self._unique(s)]
            if spares:
                spare = min(spares, key=lambda s: (self.held(s) >= self.min_reuse, -s))
                return Plan(best.source, best.length, save=spare)
        return best

    def _unique(self, slot: int) -> bool:
        """Whether `slot` holds a reusable prefix that no other slot holds (give or take MIN_REUSE)."""
        held = self._held[slot]
        if len(held) < self.min_reuse:
            return False
        return all(
            common_prefix(other, held) < len(held) - self.min_reuse
            for s, other in enumerate(self._held)
            if s != slot
        )

    def took(self, slot: int, plan: Plan) -> None:
        """`plan.save` (if any) now holds what `slot` held, and `slot` the first `plan.length`
        cells of `plan.source` (and nothing else).
        """
        if plan.save is not None:
            self._held[plan.save] = self._held[slot]
        self._held[slot] = self._held[plan.source][: plan.length].copy()

    def read(self, slot: int, tokens: Sequence[int]) -> None:
        """`slot` has read these prompt tokens, right after the ones it held."""
        self._held[slot] = np.concatenate([self._held[slot], np.asarray(tokens, dtype=np.int32)])

    def keep_after(self, slot: int, failed: bool) -> int:
        """How many cells `slot` keeps once its request is over: its prompt's, if they can serve
        a later prompt (not after a failure, nor when shorter than MIN_REUSE), else none.
        """
        if failed or not self.enabled or self.held(slot) < self.min_reuse:
            self.clear(slot)
        return self.held(slot)

    def clear(self, slot: int) -> None:
        self._held[slot] = np.zeros(0, dtype=np.int32)
