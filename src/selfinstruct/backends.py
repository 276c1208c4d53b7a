"""Choosing a backend from the config, and the request engine around it.

`make_backend` is the one place that picks a backend: an HTTP client (llm/openai/client.py,
or llm/openai/endpoint_pool.py for several servers; llm/anthropic/client.py for Anthropic's
Messages API) or an in-process runtime (runtimes/).
Each backend module is imported only when chosen, so that an unused heavy dependency
(llama_cpp, torch) is never loaded and `selfinstruct --help` stays fast. This lives above
both llm/ and runtimes/: the runtimes import llm.types, so the factory inside llm/ would
make the two packages import each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError
from selfinstruct.llm.types import Backend
from selfinstruct.rundir import FAILED_FILE, STORE_FILE

if TYPE_CHECKING:
    from selfinstruct.llm.engine import RequestEngine
    from selfinstruct.llm.executors.base import Executor

__all__ = ["build_engine", "make_backend", "start_backend"]


def make_backend(config: BackendConfig, cache_dir: Path) -> Backend:
    """The backend the config asks for; `cache_dir` holds the assembled default model."""
    if config.kind == "openai":
        endpoints = config.endpoint_list()
        if len(endpoints) > 1:
            from selfinstruct.llm.openai.endpoint_pool import EndpointPool

            return EndpointPool(config)
        from selfinstruct.llm.openai.client import OpenAIBackend

        return OpenAIBackend(config.model_copy(update={"base_url": endpoints[0].url}))
    if config.kind == "anthropic":  # one URL: BackendConfig.conflict refuses several
        from selfinstruct.llm.anthropic.client import AnthropicBackend

        return AnthropicBackend(config)
    if config.kind == "transformers":
        try:
            from selfinstruct.runtimes.transformers_backend import TransformersBackend
        except ModuleNotFoundError as exc:
            raise BackendError(
                f"the transformers backend needs {exc.name}: pip install torch==2.13.0 "
                "&& pip install transformers==5.23.0 peft==0.21.2"
            ) from None
        return TransformersBackend.from_config(config, cache_dir)
    from selfinstruct.models.files import default_model_path
    from selfinstruct.runtimes.embedded import EmbeddedBackend

    model_path = Path(config.model_path).expanduser() if config.model_path else default_model_path(cache_dir)
    return EmbeddedBackend(config, model_path, cache_dir)


def start_backend(config: BackendConfig, cache_dir: Path) -> Backend:
    """Make the backend and check it answers (a bad key or a dead server fails here, at once)."""
    if config.executor == "ray":  # a missing extra or cluster is found before any server is contacted
        from selfinstruct.llm.executors.ray import check_ray_address, import_ray

        import_ray()
        check_ray_address(config.ray.address)
    backend = make_backend(config, cache_dir)
    backend.check()
    return backend


def build_engine(
    config: BackendConfig, folder: Path, backend: Backend, progress: bool = True
) -> RequestEngine:
    """A request engine whose store and failure log live in `folder` (a run or evaluation dir)."""
    from selfinstruct.llm.control.hedging import HedgePolicy
    from selfinstruct.llm.control.retry import RetryPolicy
    from selfinstruct.llm.engine import RequestEngine
    from selfinstruct.llm.store import ResponseStore

    executor: Executor | None = None
    if config.batch:  # not with executor ray: build_config refuses that (BackendConfig.conflict)
        from selfinstruct.llm.executors.batch import BatchExecutor

        executor = BatchExecutor(config, backend, folder, progress)
    elif config.executor == "ray":
        from selfinstruct.llm.executors.ray import RayExecutor

        executor = RayExecutor(config, backend)
    return RequestEngine(
        backend=backend,
        store=ResponseStore(folder / STORE_FILE),
        failed_log=folder / FAILED_FILE,
        concurrency=config.concurrency,
        max_retries=config.max_retries,
        timeout_s=config.timeout_s,
        price_per_1k_input=config.price_per_1k_input,
        price_per_1k_output=config.price_per_1k_output,
        cache_price_factors=(config.cache_read_price_factor, config.cache_write_price_factor),
        progress=progress,
        retry_policy=RetryPolicy(max_retries=config.max_retries, base_s=config.retry_base_s),
        hedge=HedgePolicy(budget=config.hedge_budget),
        executor=executor,
    )
