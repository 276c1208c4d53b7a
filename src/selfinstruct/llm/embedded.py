"""The default backend: a GGUF model run in-process by llama-cpp-python.

One `Llama` instance per backend object. It is not thread-safe, so calls are serialised
by a lock; the request engine may still submit concurrently, the calls just queue here.
`llama_cpp` is imported lazily so that the CLI starts fast when this backend is unused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.base import Completion, CompletionRequest
from selfinstruct.llm.model_files import model_fingerprint

# A prompt must leave at least this many tokens of the context window for the answer.
MIN_ANSWER_TOKENS = 16
# llama.cpp reads this seed value as "pick a random seed", so it is never passed through.
_LLAMA_RANDOM_SEED = 0xFFFFFFFF


class EmbeddedBackend:
    """Completes prompts with a local GGUF model (plain completion, no chat template)."""

    def __init__(self, config: BackendConfig, model_path: Path) -> None:
        self._path = Path(model_path)
        if not self._path.is_file():
            raise BackendError(f"model file not found: {self._path}")
        self._n_ctx = config.n_ctx
        self._lock = threading.Lock()
        self._identity = {
            "kind": "embedded",
            "model": self._path.name,
            "size": self._path.stat().st_size,
            "fingerprint": model_fingerprint(self._path),
        }
        try:
            from llama_cpp import Llama, StoppingCriteriaList
        except ImportError:
            raise BackendError(
                "the embedded backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'"
            ) from None
        self._stopping_list = StoppingCriteriaList
        with _captured_stderr() as captured:
            try:
                self._llm = Llama(
                    model_path=str(self._path),
                    n_ctx=config.n_ctx,
                    n_threads=config.n_threads or os.cpu_count() or 1,
                    seed=0,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                detail = _last_line(captured()) or str(exc)
                raise BackendError(f"cannot load model {self._path}: {detail}") from None

    def identity(self) -> dict[str, Any]:
        # Name, size and sampled-content fingerprint: stable when the cache dir moves.
        return dict(self._identity)

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt occupies in the context window (as create_completion counts them)."""
        with self._lock:
            return self._count_tokens(prompt)

    def _count_tokens(self, prompt: str) -> int:
        return len(self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        params = request.params
        with self._lock:
            prompt_tokens = self._count_tokens(request.prompt)
            room = self._n_ctx - prompt_tokens
            if room < MIN_ANSWER_TOKENS:
                raise BackendError(
                    f"prompt too long: {prompt_tokens} tokens leave {max(room, 0)} of the "
                    f"{self._n_ctx}-token context window for the answer (need {MIN_ANSWER_TOKENS}); "
                    "raise backend.n_ctx or shorten the prompt"
                )
            max_tokens = min(params.max_tokens, room)
            # The deadline starts once the model is ours: waiting for the lock is not the
            # model being slow.
            deadline = time.monotonic() + timeout
            timed_out = False

            def past_deadline(_ids: Any, _logits: Any) -> bool:
                nonlocal timed_out
                timed_out = time.monotonic() > deadline
                return timed_out

            # Without a reset, the prompt-prefix cache changes what a seeded sample gives.
            # Greedy decoding doesn't depend on it, and its prompts (classification and instance
            # few-shot prompts) share a long prefix: keeping the cache saves re-reading it.
            if params.temperature > 0:
                self._llm.reset()
            result = self._llm.create_completion(
                request.prompt,
                max_tokens=max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                # Disable llama.cpp's extra truncations (top_k <= 0 and min_p 0 are no-ops)
                # so that only temperature and top_p shape sampling, as with OpenAI.
                top_k=0,
                min_p=0.0,
                typical_p=1.0,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                repeat_penalty=1.0 if params.repeat_penalty is None else params.repeat_penalty,
                stop=list(params.stop),
                seed=_sampling_seed(request),
                stopping_criteria=self._stopping_list([past_deadline]),
            )
        if timed_out:
            raise RetryableBackendError(f"generation took longer than {timeout:g} s")
        choice = result["choices"][0]  # type: ignore[index]
        usage = result.get("usage") or {}  # type: ignore[union-attr]
        extra = {"max_tokens_lowered_to": max_tokens} if max_tokens < params.max_tokens else {}
        return Completion(
            text=choice["text"],
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens", prompt_tokens)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            extra=extra,
        )

    def close(self) -> None:
        with self._lock:
            llm = getattr(self, "_llm", None)
            if llm is not None:
                llm.close()
                self._llm = None  # type: ignore[assignment]


def _sampling_seed(request: CompletionRequest) -> int:
    """The request's seed as llama.cpp's uint32, or one derived from the request itself.

    Without a seed, llama-cpp-python would draw one from the state left by earlier calls,
    so the same request could give different text depending on call order.
    """
    seed = request.params.seed
    if seed is None:
        blob = f"{request.sample_index}\0{request.prompt}".encode()
        seed = int.from_bytes(hashlib.sha256(blob).digest()[:4], "big")
    seed &= 0xFFFFFFFF
    return seed - 1 if seed == _LLAMA_RANDOM_SEED else seed


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
