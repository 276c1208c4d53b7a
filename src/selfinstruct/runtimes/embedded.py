"""The default backend: a GGUF model run in-process by llama.cpp, with batched decoding.

Requests from the engine's threads go to one `BatchDecoder` (llama_decoder.py), which decodes
up to `min(backend.concurrency, 16)` of them together, one llama.cpp step for all; with
`concurrency: 1` it decodes one request at a time, and no more at once than the tokens
in flight allow (llama_decoder.MAX_TOKENS_IN_FLIGHT); a request nobody waits for any more
is called off (`complete_cancellable`). A prompt that starts like an earlier
one reads only the rest (prefix_cache.py; `backend.prefix_cache: false` turns this off);
each completion says how many prompt tokens came from the cache,
`extra["prompt_tokens_reused"]`. A request with `top_logprobs` gets the log-probabilities of
each generated token (sampling.top_logprobs). The decoder is imported lazily, so that
the CLI starts fast (and works without llama_cpp) when this backend is unused.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.config import cache_dir as default_cache_dir
from selfinstruct.errors import BackendError
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest
from selfinstruct.models.digest import file_sha256
from selfinstruct.runtimes.sampling import fit_to_window, request_seed

# Part of the identity: sampling is our own (numpy, sampling.py), so answers stored by
# an earlier decoder are not taken for this one's. batched-2: a full-size sliding-window
# KV cache (which prefix reuse needs to be exact) moves the logits of contexts past 1024
# tokens a little (by up to ~4 over 250 tokens; the same greedy tokens where measured).
# Prefix reuse itself changes no answer, so it is not part of the identity. batched-3:
# batch-invariant logits (llama.cpp's tiled K-quant kernel off, no 1-token prompt reads),
# which move the logits of calls of 8 or more rows a little.
DECODER_VERSION = "batched-3"


def embedded_identity(
    model_path: Path, config: BackendConfig, cache_dir: Path, adapter: Path | None = None
) -> dict[str, Any]:
    """What the embedded model's answers depend on: part of every stored answer's key.

    - the model file's full SHA-256 (not its location: a moved cache keeps its answers);
    - the decoder (DECODER_VERSION) and llama.cpp's version, whose kernels make the logits;
    - n_ctx: a prompt that leaves less room than max_tokens has max_tokens lowered to fit;
    - the GGUF LoRA adapter's SHA-256, when there is one (absent otherwise, so that answers
      stored before adapters existed keep their keys);
    - `tiled_mm`, only when GGML_CPU_TILED_MM=1 turned llama.cpp's tiled kernel back on.
    Not prefix_cache (reuse changes no answer), n_threads, or the slot count: the logits
    are batch-invariant (llama_decoder.py), so which requests share a batch, and how many
    may, changes no answer.
    """
    identity = {
        "kind": "embedded",
        "model": model_path.name,
        "size": model_path.stat().st_size,
        "sha256": file_sha256(model_path, cache_dir),
        "decoder": DECODER_VERSION,
        "llama_cpp": _llama_cpp_version(),
        "n_ctx": config.n_ctx,
    }
    if adapter is not None:
        identity["adapter_sha256"] = file_sha256(adapter, cache_dir)
    if os.environ.get("GGML_CPU_TILED_MM", "0") != "0":  # other logits in calls of 8+ rows (llama_context.py)
        identity["tiled_mm"] = True
    return identity


def gguf_adapter(adapter_path: str | None, model_path: Path, cache_dir: Path) -> Path | None:
    """The GGUF adapter file to load: the file given, or a peft adapter directory written as
    one into `cache_dir/adapters/` (once; named by the directory's weights and the model)."""
    if not adapter_path:
        return None
    path = Path(adapter_path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise BackendError(f"{path}: adapter not found")
    from selfinstruct.models.gguf_lora import adapter_for_model, is_peft_adapter
    from selfinstruct.models.huggingface import weights_fingerprint

    if not is_peft_adapter(path):
        raise BackendError(f"{path}: not a GGUF adapter file or a LoRA adapter directory")
    name = f"{weights_fingerprint(path)}-{file_sha256(model_path, cache_dir)[:16]}.gguf"
    target = Path(cache_dir) / "adapters" / name
    if not target.is_file():
        try:
            adapter_for_model(path, model_path, target)
        except ModuleNotFoundError as exc:
            raise BackendError(
                f"converting {path} to a GGUF adapter needs {exc.name}: pip install gguf==0.19.0 safetensors"
            ) from None
    return target


def _llama_cpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None  # the backend then refuses to start anyway


class EmbeddedBackend(BackendBase):
    """Completes prompts with a local GGUF model (plain completion, no chat template), and an optional
    GGUF LoRA adapter on it."""

    def __init__(self, config: BackendConfig, model_path: Path, cache_dir: Path | None = None) -> None:
        # `cache_dir` keeps the model's digest (models/digest.py); default: config.cache_dir().
        self._path = Path(model_path)
        if not self._path.is_file():
            raise BackendError(f"model file not found: {self._path}")
        self._n_ctx = config.n_ctx
        cache_dir = cache_dir or default_cache_dir()
        self._adapter = gguf_adapter(config.adapter_path, self._path, cache_dir)
        self._identity = embedded_identity(self._path, config, cache_dir, self._adapter)
        try:
            from selfinstruct.runtimes.llama_decoder import BatchDecoder
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("llama_cpp"):
                raise
            raise BackendError(
                "the embedded backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'"
            ) from None
        with captured_stderr() as captured:
            try:
                self._decoder = BatchDecoder(
                    self._path,
                    n_ctx=config.n_ctx,
                    slots=config.concurrency,
                    n_threads=config.n_threads or os.cpu_count() or 1,
                    prefix_cache=config.prefix_cache,
                    adapter=self._adapter,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                detail = last_line(captured()) or str(exc)
                raise BackendError(f"cannot load model {self._path}: {detail}") from None

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def count_tokens(self, prompt: str) -> int:
        """Tokens the prompt occupies in the context window (BOS included)."""
        return len(self._decoder.tokenize(prompt))

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        return self.complete_cancellable(request, timeout, None)

    def complete_cancellable(
        self, request: CompletionRequest, timeout: float, cancel: threading.Event | None
    ) -> Completion:
        """`complete`; once `cancel` is set, the request leaves the decoder (StreamAborted)."""
        tokens = self._decoder.tokenize(request.prompt)
        params, extra = fit_to_window(len(tokens), self._n_ctx, request.params)
        # The timeout counts this request's share of the decode steps it is part of, from
        # the moment it has a slot: sharing the model with others is not the model being slow.
        future = self._decoder.submit(tokens, params, request_seed(request), timeout, cancel)
        generation = future.result()  # raises RetryableBackendError on timeout
        return Completion(
            text=generation.text,
            finish_reason=generation.finish_reason,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            extra={**extra, "prompt_tokens_reused": generation.prompt_tokens_reused},
            logprobs=generation.logprobs,
        )

    def close(self) -> None:
        decoder = getattr(self, "_decoder", None)
        if decoder is not None:
            decoder.close()


@contextlib.contextmanager
def captured_stderr() -> Iterator[Any]:
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


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
