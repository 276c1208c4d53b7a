"""Batch-invariant logits on the embedded model (issue 25), compared bit for bit.

One sequence's logits, step by step, read alone; beside 7 other sequences (8 rows a call,
where llama.cpp's tiled K-quant kernel used to take over); in slots that are not next to
each other; and after its prompt's prefix was copied from another slot, with the rest read
in a call of its own. Teacher-forced on the solo run's greedy tokens, so every step is
compared, not just the first that differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import llama_cpp
import numpy as np
import pytest
from servers.llama_server import model_path_for_tests

from selfinstruct.config import GenerationParams
from selfinstruct.runtimes.llama_context import N_BATCH, LlamaContext
from selfinstruct.runtimes.llama_decoder import BatchDecoder
from selfinstruct.runtimes.prefix_cache import MIN_READ

pytestmark = pytest.mark.model

STEPS = 6
SLOTS = 9
# The first is long enough that its neighbours attend over more (masked) cells with it.
PROMPTS = [
    "A long report on the harbour follows. " + "The boats came in at dawn and left at dusk. " * 30,
    "The three primary colours are",
    "Steps to boil an egg:\n1.",
    "My favourite season is autumn because",
    "Here is a list of fruits: apple, banana,",
    "Translate into French: good morning",
    "Q: What is the capital of Japan?\nA:",
    "def add(a, b):\n    return",
]


@pytest.fixture(scope="module")
def context() -> Iterator[LlamaContext]:
    ctx = LlamaContext(model_path_for_tests(), n_ctx=1024, n_seq=SLOTS, n_outputs=SLOTS, n_threads=2)
    yield ctx
    ctx.close()


def read_prompt(ctx: LlamaContext, slot: int, tokens: Sequence[int], start: int = 0) -> np.ndarray:
    """Read tokens[start:] into `slot` in one call; the last token's logits."""
    last = len(tokens) - 1
    assert ctx.decode([(slot, tokens[p], p, p == last) for p in range(start, len(tokens))]) == 0
    return ctx.logits(last - start).copy()


def decode_steps(
    ctx: LlamaContext, slots: Sequence[int], prompts: Sequence[Sequence[int]], forced: Sequence[int]
) -> list[np.ndarray]:
    """STEPS decode calls over every slot at once; the first slot is fed `forced`, the others
    their own greedy tokens. The first slot's logits at each step."""
    positions = [len(p) for p in prompts]
    own = [int(forced[0])] * len(slots)
    seen: list[np.ndarray] = []
    for step in range(STEPS):
        feed = [int(forced[step]), *own[1:]]
        entries = [(slot, feed[i], positions[i] + step, True) for i, slot in enumerate(slots)]
        assert ctx.decode(entries) == 0
        rows = ctx.output_logits(len(slots))
        seen.append(rows[0].copy())
        own = [int(np.argmax(rows[i])) for i in range(len(slots))]
    return seen


def clear(ctx: LlamaContext) -> None:
    for slot in range(SLOTS):
        ctx.forget(slot)


def test_a_sequence_gets_the_same_logit_bits_alone_beside_others_and_after_a_prefix_copy(
    context: LlamaContext,
) -> None:
    ctx = context
    tokens = [ctx.tokenize(p, add_bos=True, special=True) for p in PROMPTS]
    target = tokens[0]

    # Alone: the prompt, then greedy steps; their tokens drive every other run.
    clear(ctx)
    solo_prompt = read_prompt(ctx, 0, target)
    forced = [int(np.argmax(solo_prompt))]
    solo: list[np.ndarray] = []
    for step in range(STEPS):
        assert ctx.decode([(0, forced[step], len(target) + step, True)]) == 0
        solo.append(ctx.logits(0).copy())
        forced.append(int(np.argmax(solo[-1])))

    # Beside 7 others (one call of 8 rows a step), then in scattered slots (0, 2, 5, 7).
    for slots in ([0, 1, 2, 3, 4, 5, 6, 7], [0, 2, 5, 7]):
        clear(ctx)
        prompts = [target] + [tokens[1 + i] for i in range(len(slots) - 1)]
        for slot, prompt in zip(slots, prompts, strict=True):
            read_prompt(ctx, slot, prompt)
        together = decode_steps(ctx, slots, prompts, forced)
        for step, (a, b) in enumerate(zip(solo, together, strict=True)):
            assert a.tobytes() == b.tobytes(), (slots, step, float(np.abs(a - b).max()))

    # The prefix copied from slot 0 to slot 8, all but the last MIN_READ tokens, and the
    # rest read in one call: the prompt's logits and the next steps are the solo ones.
    clear(ctx)
    read_prompt(ctx, 0, target)
    keep = len(target) - MIN_READ
    llama_cpp.llama_memory_seq_cp(ctx.memory, 0, 8, -1, -1)
    ctx.forget(8, keep)
    copied_prompt = read_prompt(ctx, 8, target, start=keep)
    assert copied_prompt.tobytes() == solo_prompt.tobytes()
    copied = decode_steps(ctx, [8], [target], forced)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(solo, copied, strict=True))


def test_the_decoder_never_reads_a_prompt_in_a_call_of_one_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # N_BATCH + 1 tokens were read as N_BATCH and 1; now as N_BATCH - 1 and 2.
    decoder = BatchDecoder(model_path_for_tests(), n_ctx=1024, slots=1, n_threads=2)
    try:
        tokens = decoder.tokenize(PROMPTS[0] * 3)[: N_BATCH + 1]
        assert len(tokens) == N_BATCH + 1
        reads: list[int] = []
        real = decoder._llama.decode

        def spy(entries: Sequence[tuple[int, int, int, bool]]) -> int:
            if all(position < len(tokens) for _, _, position, _ in entries):
                reads.append(len(entries))
            return real(entries)

        monkeypatch.setattr(decoder._llama, "decode", spy)
        params = GenerationParams(max_tokens=2, temperature=0.0, top_p=1.0)
        decoder.submit(tokens, params, 0, timeout_s=60).result()
        assert reads == [N_BATCH - 1, MIN_READ]
    finally:
        decoder.close()
