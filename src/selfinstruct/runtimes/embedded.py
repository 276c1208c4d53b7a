"""The default backend: a GGUF model run in-process by llama.cpp, with batched decoding.

Requests from the engine's threads go to one `BatchDecoder` (llama_batch.py), which decodes
up to `min(backend.concurrency, 16)` of them together, one llama.cpp step for all; with
`concurrency: 1` it decodes one request at a time. A prompt that starts like an earlier
one reads only the rest (prefix_cache.py; `backend.prefix_cache: false` turns this off);
each completion says how many prompt tokens came from the cache,
`extra["prompt_tokens_reused"]`. The decoder is imported lazily, so that
the CLI starts fast (and works without llama_cpp) when this backend is unused.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError
from selfinstruct.llm.base import Completion, CompletionRequest
from selfinstruct.models.files import model_fingerprint
from selfinstruct.runtimes.sampling import fit_to_window, request_seed

# Part of the identity: sampling is our own (numpy, sampling.py), so answers stored by
# an earlier decoder are not taken for this one's. batched-2: a full-size sliding-window
# KV cache (which prefix reuse needs to be exact) moves the logits of contexts past 1024
# tokens a little (by up to ~4 over 250 tokens; the same greedy tokens where measured).
# Prefix reuse itself changes no answer, so it is not part of the identity.
DECODER_VERSION = "batched-2"


class EmbeddedBackend:
    """Completes prompts with a local GGUF model (plain completion, no chat template)."""

    def __init__(self, config: BackendConfig, model_path: Path) -> None:
        self._path = Path(model_path)
        if not self._path.is_file():
            raise BackendError(f"model file not found: {self._path}")
        self._n_ctx = config.n_ctx
        self._identity = {
            "kind": "embedded",
            "model": self._path.name,
            "size": self._path.stat().st_size,
            "fingerprint": model_fingerprint(self._path),
            "decoder": DECODER_VERSION,
        }
        try:
            from selfinstruct.runtimes.llama_batch import BatchDecoder
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("llama_cpp"):
                raise
            raise BackendError(
                "the embedded backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'"
            ) from None
        with _captured_stderr() as captured:
            try:
                self._decoder = BatchDecoder(
                    self._path,
                    n_ctx=config.n_ctx,
                    slots=config.concurrency,
                    n_threads=config.n_threads or os.cpu_count() or 1,
                    prefix_cache=config.prefix_cache,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                detail = _last_line(captured()) or str(exc)
                raise BackendError(f"cannot load model {self._path}: {detail}") from None

    def identity(self) -> dict[str, Any]:
        # Name, size and sampled-content fingerprint: stable when the cache dir moves.
        return dict(self._identity)

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt occupies in the context window (BOS included)."""
        return len(self._decoder.tokenize(prompt))

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        tokens = self._decoder.tokenize(request.prompt)
        params, extra = fit_to_window(len(tokens), self._n_ctx, request.params)
        # The timeout counts this request's share of the decode steps it is part of, from
        # the moment it has a slot: sharing the model with others is not the model being slow.
        future = self._decoder.submit(tokens, params, request_seed(request), timeout)
        generation = future.result()  # raises RetryableBackendError on timeout
        return Completion(
            text=generation.text,
            finish_reason=generation.finish_reason,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            extra={**extra, "prompt_tokens_reused": generation.prompt_tokens_reused},
        )

    def close(self) -> None:
        decoder = getattr(self, "_decoder", None)
        if decoder is not None:
            decoder.close()


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Any]:
    """Swallow what llama.cpp prints while loading (one line even with verbose=False).

    It writes both from C to fd 2 and through a Python log callback to `sys.stderr`, so
    both are redirected; yields a function returning what was captured, for error messages.
    """
    python_side = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink, contextlib.redirect_stderr(python_side):
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)

        def captured() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", "replace") + python_side.getvalue()

        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
