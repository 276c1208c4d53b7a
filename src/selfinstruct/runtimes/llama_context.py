"""One GGUF model and one llama.cpp context on it: what the decoder and the scorer share.

`LlamaContext` loads the model, makes a context of `n_seq` sequences with `n_ctx` cells
each, optionally puts a GGUF LoRA adapter on it, and offers the two calls both users
make: `decode` (one llama_decode call over explicit (sequence, token, position, logits?)
entries) and `logits` (the logits row of one entry of the last call). The settings that
make the logits reproducible are chosen here, once, so that the generating decoder
(llama_decoder.py) and the prompt scorer (llama_scorer.py) read the same numbers.

`n_outputs` is how many entries of one call may ask for logits: the decoder needs one per
sequence (one next token each), the scorer one per scored token. Each row costs n_vocab
floats of memory up front (~1 MB for Gemma 3's 262K vocabulary).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Batch invariance (issue 25): llama.cpp's CPU backend multiplies the K-quant weights
# (Gemma 3 270M's attn_output and ffn_down) with a tiled kernel when a call has 8 or more
# rows and with a per-row dot product below that, and the two sum in different orders: a
# sequence decoded beside 7 others got other logits (by up to 1.75) than alone. With the
# tiled kernel off, every sequence's logits are the same bits alone, beside 1 to 7 others,
# in any slots (measured; the other weights, Q5_0 and Q8_0, take kernels that sum alike at
# every row count). ggml reads the switch once per process, at its first matrix product,
# so it is set when this module is imported. Cost, measured: a 512-token prompt read 13%
# slower, decode steps no slower. GGML_CPU_TILED_MM=1 in the environment gives the tiled
# kernel back (and batch-dependent logits: the embedded identity then says so); the
# benchmark of the two (benchmarks/bench_batch_invariance.py) uses it.
os.environ.setdefault("GGML_CPU_TILED_MM", "0")

import llama_cpp
import numpy as np
from llama_cpp._internals import LlamaModel

# The longest batch one llama_decode call takes (n_batch = n_ubatch).
N_BATCH = 512

# (sequence id, token, position, wants logits)
Entry = tuple[int, int, int, bool]


class LlamaContext:
    """A loaded GGUF model with one context of `n_seq` sequences of `n_ctx` cells each."""

    def __init__(
        self,
        model_path: Path,
        n_ctx: int,
        n_seq: int,
        n_outputs: int,
        n_threads: int,
        adapter: Path | None = None,
    ) -> None:
        # llama.cpp logs every graph it builds; keep errors only (as Llama(verbose=False) does).
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        self.n_ctx = n_ctx
        model_params = llama_cpp.llama_model_default_params()
        # Fewer batch-dependent sums without the CPU "repack" buffers: with them, 4 prompts
        # decoded in lockstep drifted from their solo logits by 0.5 within 5 tokens; without
        # them, they stayed bit-identical over 16 tokens. Measured: no slower here.
        model_params.use_extra_bufts = False
        self._model = LlamaModel(path_model=str(model_path), params=model_params, verbose=False)
        self._ctx: Any = None  # ctypes handles, None once freed
        self._batch: Any = None
        self.vocab = self._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx * n_seq  # split evenly: one stream of n_ctx cells per sequence
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_seq_max = n_seq
        params.n_outputs_max = n_outputs
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        # Cells stay in position order only with a full-size sliding-window cache, and reuse is
        # exact only then (prefix_cache.py). Costs: KV memory for n_ctx cells in every layer
        # (18 KB a cell for Gemma 3 270M: 0.6 GB at n_ctx 4096 x 8 slots, was 0.2 GB), and
        # decoding at 1400-1700 tokens of context 0-25% slower (attention reads all cells).
        # Kept on with prefix_cache off too, so that the switch never changes an answer.
        params.swa_full = True
        self._ctx = llama_cpp.llama_init_from_model(self._model.model, params)
        if self._ctx is None:
            self._model.close()
            raise ValueError("llama.cpp could not create a context")
        if llama_cpp.llama_n_ctx_seq(self._ctx) < n_ctx:
            self.close()
            raise ValueError(f"llama.cpp gave each sequence fewer than {n_ctx} cells")
        if adapter is not None:
            self._apply_adapter(adapter)
        self.memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)

    def _apply_adapter(self, adapter: Path) -> None:
        """Put a GGUF LoRA adapter on the context at full scale (llama.cpp frees it with the model)."""
        handle = llama_cpp.llama_adapter_lora_init(self._model.model, str(adapter).encode())
        if not handle:
            self.close()
            raise ValueError(f"llama.cpp could not load the LoRA adapter {adapter}")
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)
        scales = (ctypes.c_float * 1)(1.0)
        if llama_cpp.llama_set_adapters_lora(self._ctx, adapters, 1, scales) != 0:
            self.close()
            raise ValueError(f"llama.cpp could not apply the LoRA adapter {adapter}")

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        """The model's tokens for `text`; `special`: spellings of control tokens become them."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def decode(self, entries: Sequence[Entry]) -> int:
        """One llama_decode call over at most N_BATCH entries; llama.cpp's status (0 = done)."""
        batch = self._batch
        assert batch is not None and 0 < len(entries) <= N_BATCH
        batch.n_tokens = len(entries)
        for n, (sequence, token, position, wants_logits) in enumerate(entries):
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, position, 1
            batch.seq_id[n][0] = sequence
            batch.logits[n] = wants_logits
        return int(llama_cpp.llama_decode(self._ctx, batch))

    def logits(self, row: int) -> np.ndarray:
        """The logits of entry `row` of the last decode call (a view: valid until the next call)."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def output_logits(self, rows: int) -> np.ndarray:
        """The logits of every entry of the last call that asked for them, in batch order:
        a (rows, n_vocab) view, valid until the next call."""
        pointer = llama_cpp.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self.n_vocab))

    def bos(self) -> int | None:
        """The model's beginning-of-sequence token, or None if it has none."""
        token = int(llama_cpp.llama_vocab_bos(self.vocab))
        return token if token >= 0 else None

    def forget(self, sequence: int, keep: int = 0) -> None:
        """Drop the sequence's cells from position `keep` on."""
        llama_cpp.llama_memory_seq_rm(self.memory, sequence, keep, -1)

    def close(self) -> None:
        """Free the batch, the context and the model (once; later calls do nothing)."""
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        self._model.close()
