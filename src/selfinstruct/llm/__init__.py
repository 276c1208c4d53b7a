"""Model backends and the request engine.

`make_backend` is the one place that picks a backend from the config; each backend module
is imported only when chosen, so that an unused heavy dependency (llama_cpp) is never loaded.
"""

from __future__ import annotations

from pathlib import Path

from selfinstruct.config import BackendConfig
from selfinstruct.llm.base import Backend, Completion, CompletionRequest

__all__ = ["Backend", "Completion", "CompletionRequest", "make_backend"]


def make_backend(config: BackendConfig, cache_dir: Path) -> Backend:
    """The backend the config asks for; `cache_dir` holds the assembled default model."""
    if config.kind == "openai":
        from selfinstruct.llm.openai_compat import OpenAIBackend

        return OpenAIBackend(config)
    from selfinstruct.llm.embedded import EmbeddedBackend
    from selfinstruct.llm.model_files import default_model_path

    model_path = Path(config.model_path).expanduser() if config.model_path else default_model_path(cache_dir)
    return EmbeddedBackend(config, model_path)
