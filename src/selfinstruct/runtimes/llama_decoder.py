"""Continuous batching for llama.cpp: several requests decoded together, one weight pass per token.

A `BatchDecoder` owns one llama.cpp context with `slots` sequences (llama_context.py: the
model and context settings it shares with the prompt scorer) and a background thread.
Callers `submit` tokenised prompts from any thread and get a `Future`; meanwhile each request
is a `DecoderSequence` (decoder_sequence.py: its tokens, text and stop rules). Each step, the
thread reads waiting prompts (chunks of up to N_BATCH tokens), then decodes the next token of
every generating sequence in one `llama_decode` call. New requests join at the next step; a
finished one frees its slot at once. Its slot keeps the cells of the prompt it read: a
later prompt that starts the same way reads only the rest (prefix_cache.py; the answers
are unchanged, bit for bit).

Why it is faster: decoding a token is bound by reading the weights, and one read serves
every sequence in the call (on 2 cores, about 2x the tokens/s at 8 sequences).

Each slot has its own KV stream of `n_ctx` cells (`kv_unified=False`): a sequence sees the
same window as alone, and attention reads only its own cells (8 sequences of 900 tokens:
169 tok/s, against 150 with one cache shared by all).

Sampling happens on the decode thread, on each sequence's logits, with sampling.py's
`penalize` and `choose_token` (shared with the transformers backend); each request has its
own seeded generator, so the same logits always give the same draws. The logits themselves
are batch-invariant: a sequence gets the same bits alone and beside any others, in any
slots, because the kernels that sum in another order at some call shapes are avoided
(llama_context.py turns llama.cpp's tiled K-quant kernel off; before, of 8 prompts started
together, 3 kept their solo answer over 32 tokens). A prompt is read in calls of its own,
cut as when alone, and never in a call of one token (a reused prefix leaves at least
MIN_READ tokens to read, and a chunk is cut short rather than leave one token over), so a
prompt's cells are the same bits however much of it was reused.

Timeouts are charged by share: each call's wall time is split between its sequences by
token count, and a request fails when its share passes its budget. Sharing the model, or
waiting for a slot, never makes a request time out.

Two limits keep the first answers coming soon. A waiting request starts only while the
max_tokens of the sequences decoding add up to at most `max_tokens_in_flight` (one always
may): 16 sequences allowed 3,072 tokens each share the model's speed so thinly that none
ends for many minutes. And a request whose `cancel` event is set (nobody waits for its
answer any more) leaves at the next step, queued or decoding, and frees its slot.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import heapq
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path

import llama_cpp
import numpy as np

from selfinstruct.config import GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.types import StreamAborted, TokenLogprobs
from selfinstruct.runtimes.decoder_sequence import DecoderSequence, Generation
from selfinstruct.runtimes.llama_context import N_BATCH, LlamaContext
from selfinstruct.runtimes.prefix_cache import MIN_READ, Plan, PrefixCache
from selfinstruct.runtimes.sampling import choose_token, penalize, recent_tokens, seeded_rng, top_logprobs

# More slots stop paying off on a CPU (embedded-model.md: 131 tok/s at 16, 114 at 8).
# N_BATCH (llama_context.py) is the longest prompt chunk per call, and the prompt tokens read per step.
MAX_SLOTS = 16
# The max_tokens of the sequences decoding at once add up to at most this (one may always
# start). No answer comes back before its sequence ends, and a base model rarely ends
# before max_tokens: n sequences of M tokens decoding together end after n * M / (the
# throughput at n), all at about the same time. Measured here (2 cores, Gemma 3 270M): 60,
# 72, 107, 134 tok/s at 1, 2, 4, 8 sequences. 12,288 lets four of the alpaca preset's
# 3,072-token answers decode at once: the first come back after ~2 minutes (4 x 3,072 /
# 107), at 80 % of the 8-sequence throughput; eight of them together came back after ~3
# minutes on an idle machine, none in 580 s on a busy one. 4,096 (one at a time, 51 s)
# would halve a large alpaca run's throughput. The other presets' requests (1,024 tokens at
# most) fill the default 8 slots.
MAX_TOKENS_IN_FLIGHT = 12288


_LIVE: weakref.WeakSet[BatchDecoder] = weakref.WeakSet()


@atexit.register
def _close_live_decoders() -> None:
    # The decode thread is a daemon; stop it before the interpreter frees what it uses.
    for decoder in list(_LIVE):
        decoder.close()


class BatchDecoder:
    """One llama.cpp context serving up to `slots` sequences at once (see the module doc)."""

    def __init__(
        self,
        model_path: Path,
        n_ctx: int,
        slots: int,
        n_threads: int,
        prefix_cache: bool = True,
        adapter: Path | None = None,
        max_tokens_in_flight: int = MAX_TOKENS_IN_FLIGHT,
    ) -> None:
        self.slots = max(1, min(slots, MAX_SLOTS))
        self.max_tokens_in_flight = max_tokens_in_flight
        self.n_ctx = n_ctx
        # One row of logits per sequence and step (saves ~0.5 GB against one per batch entry).
        self._llama = LlamaContext(
            model_path, n_ctx, n_seq=self.slots, n_outputs=self.slots, n_threads=n_threads, adapter=adapter
        )
        self._memory = self._llama.memory
        self._piece = ctypes.create_string_buffer(64)
        self._cond = threading.Condition()
        self._queue: deque[DecoderSequence] = deque()
        self._active: list[DecoderSequence] = []
        self._free_slots = list(range(self.slots))  # a heap: the lowest free slot goes first
        self._prefix = PrefixCache(self.slots, enabled=prefix_cache)
        self._closing = False
        self.steps_decoded = 0  # llama_decode calls so far (read by tests and benchmarks)
        self.most_decoding = 0  # the most sequences decoding at once so far (read by tests)
        self._thread = threading.Thread(target=self._run, name="llama-decoder", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def tokenize(self, text: str) -> list[int]:
        """Tokens of a prompt as llama-cpp-python's create_completion makes them (BOS first)."""
        return self._llama.tokenize(text, add_bos=True, special=True)

    @contextlib.contextmanager
    def starting_together(self) -> Iterator[None]:
        """Requests submitted inside this block start in the same decode step.

        Decoding pauses for the block. For tests and benchmarks that need a known batch
        composition (the logits do not depend on it, but timings and slots do).
        """
        with self._cond:
            yield

    def submit(
        self,
        prompt_tokens: Sequence[int],
        params: GenerationParams,
        seed: int,
        timeout_s: float,
        cancel: threading.Event | None = None,
    ) -> Future[Generation]:
        """Queue one request; the future gets a `Generation`, a `RetryableBackendError` when
        its share of decode time passes `timeout_s`, a `BackendError` if the decoder closes,
        or `StreamAborted` once `cancel` is set.
        """
        if not prompt_tokens or len(prompt_tokens) + params.max_tokens > self.n_ctx:
            raise ValueError(f"{len(prompt_tokens)} prompt tokens + max_tokens do not fit {self.n_ctx}")
        future: Future[Generation] = Future()
        stops = tuple(s.encode("utf-8") for s in params.stop if s)
        tokens = list(prompt_tokens)
        sequence = DecoderSequence(
            tokens, np.asarray(tokens, np.int32), params, seeded_rng(seed), timeout_s, future, stops, cancel
        )
        with self._cond:
            if self._closing:
                raise BackendError("the embedded model is closed")
            self._queue.append(sequence)
            self._cond.notify()
        return future

    def close(self) -> None:
        """Stop the decode thread (unfinished requests fail) and free the model."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._llama.close()
        _LIVE.discard(self)

    # -- the decode thread -----------------------------------------------------------------

    def _run(self) -> None:
        failure: BaseException = BackendError("the embedded model is closed")
        try:
            while True:
                with self._cond:
                    while not (self._closing or self._queue or self._active):
                        self._cond.wait()
                    if self._closing:
                        break
                    self._admit()
                if self._active:
                    self._step()
        except Exception as exc:  # a bug or a native failure: fail every caller, don't hang them
            failure = BackendError(f"embedded decoder failed: {type(exc).__name__}: {exc}")
        with self._cond:
            self._closing = True
            waiting = [*self._active, *self._queue]
            self._active.clear()
            self._queue.clear()
        for sequence in waiting:
            if not sequence.future.done():
                sequence.future.set_exception(failure)

    def _admit(self) -> None:
        """Start waiting requests, in order, while slots and the token budget allow."""
        for sequence in [s for s in self._queue if s.called_off()]:
            self._queue.remove(sequence)
            if sequence.future.set_running_or_notify_cancel():
                sequence.future.set_exception(StreamAborted("called off before it started"))
        budget = self.max_tokens_in_flight - sum(s.params.max_tokens for s in self._active)
        while self._queue and self._free_slots:
            if self._active and self._queue[0].params.max_tokens > budget:
                break
            sequence = self._queue.popleft()
            if sequence.future.set_running_or_notify_cancel():  # False: the caller gave up
                sequence.slot = heapq.heappop(self._free_slots)
                self._active.append(sequence)
                budget -= sequence.params.max_tokens
        self.most_decoding = max(self.most_decoding, len(self._active))

    def _step(self) -> None:
        """Chunks of waiting prompts (N_BATCH tokens in all), then a token for every generating sequence.

        Each prompt chunk gets a llama_decode call of its own, cut where it would be cut
        alone: mixed with other sequences' tokens, llama.cpp would cut the prompt into pieces
        sized by them, which changes its logits (measured: by ~1).
        """
        for sequence in self._active:
            if sequence.called_off() and sequence.result is None and sequence.error is None:
                sequence.error = StreamAborted("called off: nobody waits for its answer")
        budget = N_BATCH
        for sequence in [s for s in self._active if s.fed < len(s.prompt) and s.error is None]:
            if budget <= 0:
                break
            if not sequence.started:
                leaders = [s.tokens for s in self._active if s.started and s.fed < len(s.prompt)]
                plan = self._prefix.plan(sequence.slot, sequence.tokens, leaders, self._free_slots)
                if plan is None:  # another request is reading the same prefix: take it after
                    continue
                self._take(sequence, plan)
            start, end = sequence.fed, min(len(sequence.prompt), sequence.fed + N_BATCH)
            if 0 < len(sequence.prompt) - end < MIN_READ:  # no 1-token call after this one
                end = len(sequence.prompt) - MIN_READ
            last = len(sequence.prompt) - 1
            self._decode([(sequence, sequence.prompt[p], p, p == last) for p in range(start, end)])
            if sequence.error is None:
                self._prefix.read(sequence.slot, sequence.prompt[start:end])
            sequence.fed = end
            budget -= end - start
        # In slot order: llama.cpp cuts a batch over several KV streams into micro-batches
        # of consecutive sequence ids, so any other order decodes one sequence at a time
        # (measured: half the throughput whenever slots came back in reverse order). For
        # the same reason new requests take the lowest free slot: a gap costs a micro-batch.
        generating = sorted(
            (s for s in self._active if s.pending is not None and s.error is None), key=lambda s: s.slot
        )
        if generating:
            self._decode([(s, s.pending or 0, s.next_position(), True) for s in generating])
        done = [s for s in self._active if s.result or s.error or s.charged_s > s.timeout_s]
        self._release(done)

    def _take(self, sequence: DecoderSequence, plan: Plan) -> None:
        """Give the sequence's slot the planned cells (copies, then a trim) and start after them.

        Copies between streams are whole streams, made in order by the next llama_decode.
        """
        if plan.save is not None:
            llama_cpp.llama_memory_seq_cp(self._memory, sequence.slot, plan.save, -1, -1)
        if plan.source != sequence.slot:
            llama_cpp.llama_memory_seq_cp(self._memory, plan.source, sequence.slot, -1, -1)
        self._llama.forget(sequence.slot, plan.length)
        self._prefix.took(sequence.slot, plan)
        sequence.started = True
        sequence.fed = sequence.reused = plan.length

    def _decode(self, entries: list[tuple[DecoderSequence, int, int, bool]]) -> None:
        """One llama_decode call over (sequence, token, position, wants_logits) entries."""
        started = time.monotonic()
        status = self._llama.decode(
            [(s.slot, token, position, wants) for s, token, position, wants in entries]
        )
        elapsed = time.monotonic() - started
        self.steps_decoded += 1
        for sequence, *_ in entries:  # each sequence's share of the call, by tokens
            sequence.charged_s += elapsed / len(entries)
            if status != 0:
                # 1 = no room in the KV cache (the caller's guard and per-slot streams rule
                # it out); anything else is a native error. Either way, a retry may work.
                sequence.error = RetryableBackendError(
                    f"llama_decode returned {status}", kind="overloaded" if status == 1 else "server"
                )
        if status == 0:
            for row, (sequence, *_, wants_logits) in enumerate(entries):
                if wants_logits:
                    self._sample(sequence, row)

    def _sample(self, sequence: DecoderSequence, row: int) -> None:
        logits = self._llama.logits(row)
        params = sequence.params
        recent = recent_tokens(sequence.prompt, sequence.generated)
        adjusted = penalize(logits, sequence.generated, recent, params)
        token = choose_token(adjusted, params.temperature, params.top_p, sequence.rng)
        is_end = self._llama.is_end(token)
        piece = b"" if is_end else self._token_bytes(token)
        logprobs = None
        if params.top_logprobs and not is_end:
            logprobs = self._logprobs(logits, token, piece, params.top_logprobs)
        sequence.accept(token, piece, is_end, logprobs)

    def _logprobs(self, logits: np.ndarray, token: int, piece: bytes, k: int) -> TokenLogprobs:
        """The k most likely tokens' texts and log-probabilities at this position (the model's
        own, before penalties). Tokens that read the same (special tokens may all read "")
        count as one text: their probabilities add up."""
        top: dict[str, float] = {}
        for candidate, logprob in top_logprobs(logits, k, token):
            text = _text(self._token_bytes(candidate))
            top[text] = float(np.logaddexp(top[text], logprob)) if text in top else logprob
        return TokenLogprobs(_text(piece), top)

    def _token_bytes(self, token: int) -> bytes:
        vocab = self._llama.vocab
        n = llama_cpp.llama_token_to_piece(vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:  # the buffer is too small for this piece
            self._piece = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:n]

    def _release(self, sequences: list[DecoderSequence]) -> None:
        """Resolve these sequences' futures and give back their slots, which keep the cells of
        the prompt they read if a later prompt can reuse them (PrefixCache.keep_after).
        """
        for sequence in sequences:
            # A request called off leaves cells as valid as a finished one's: they are kept.
            failed = sequence.error is not None and not isinstance(sequence.error, StreamAborted)
            keep = self._prefix.keep_after(sequence.slot, failed=failed)
            self._llama.forget(sequence.slot, keep)
            with self._cond:
                self._active.remove(sequence)
                heapq.heappush(self._free_slots, sequence.slot)
            if sequence.result is not None:
                sequence.future.set_result(sequence.result)
            else:
                timeout = RetryableBackendError(
                    f"generation took longer than {sequence.timeout_s:g} s", kind="timeout"
                )
                sequence.future.set_exception(sequence.error or timeout)


def _text(piece: bytes) -> str:
    # A piece may hold part of a multi-byte character: its text then has a U+FFFD in its place.
    return piece.decode("utf-8", errors="replace")
