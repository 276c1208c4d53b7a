"""`backend.executor: ray`: a stage's pending requests as a Ray Data job through `ray.data.llm`.

Two processors of Ray Data LLM do the sending:

* **http** (`HttpRequestProcessorConfig`): workers post the same JSON bodies the local
  engine would (`OpenAIBackend.request_body`) to the OpenAI-compatible endpoints; rows are
  dealt to the endpoints in proportion to their weights, one processor per endpoint, and
  the answers are parsed here by the same `parse_answer`, so they are stored byte for byte
  as the local engine stores them;
* **vllm** (`vLLMEngineProcessorConfig`): each worker loads `ray.model_source` in-process
  (a GPU cluster's way); the request's parameters become vLLM sampling parameters.

Rows come back to this process as the job streams them (`iter_rows`) and each answer is
handed to the engine, which stores it at once (base.py): a driver killed mid-job
loses only the rows in flight, and the next run sends only what the store lacks. A row
the job could not answer (its retries spent, the job failed) is reported failed and goes
to `failed.jsonl`, as with the local engine.

Ray is imported only here, and only when this executor is chosen (the `ray` extra).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError, ConfigError, RetryableBackendError
from selfinstruct.llm.control.routing import Route, Router
from selfinstruct.llm.executors.base import Answered, Failed, Retried
from selfinstruct.llm.openai import wire
from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.openai.endpoint_pool import EndpointPool
from selfinstruct.llm.types import Backend, Completion, CompletionRequest

INSTALL_HINT = "pip install 'selfinstruct[ray]'"


class RayExecutor:
    name = "ray"
    price_factor = 1.0  # the online price: the same requests, sent from elsewhere
    shows_progress = False

    def __init__(self, config: BackendConfig, backend: Backend) -> None:
        self._config = config
        self._ray = config.ray
        # Per key, the route of the pool's router its row was dealt to: each endpoint's
        # answers are counted there, as the local engine counts them (the summary's endpoints).
        self._route_of: dict[str, Route] = {}
        self._router: Router | None = None
        if self._ray.processor == "http":
            # The servers and their weights, as the backend holds them (endpoint_pool.py).
            if isinstance(backend, EndpointPool):
                self._servers = [(e.client, e.config.weight) for e in backend.endpoints]
                self._router = backend.router
            elif isinstance(backend, OpenAIBackend):
                self._servers = [(backend, 1.0)]
            else:
                raise BackendError(
                    "--executor ray sends HTTP requests: it needs --backend openai (or ray.processor: vllm)"
                )
        elif not self._ray.model_source:
            raise BackendError("ray.processor vllm needs ray.model_source: the model each worker loads")
        self._api = config.api
        self._ray_module = import_ray()

    def execute(
        self,
        stage: str,
        pending: Sequence[tuple[str, CompletionRequest]],
        answered: Answered,
        failed: Failed,
        retried: Retried,  # unused: Ray's workers retry a row themselves, out of sight
    ) -> None:
        if not pending:
            return
        self._start_ray()
        by_key = dict(pending)
        try:
            for row in self._rows_back(pending):
                key = row["key"]
                try:
                    completion = self._completion(row, by_key[key])
                except RetryableBackendError as exc:
                    self._tally(key, answered=False)
                    failed(key, f"{self.name}: {exc}", 1)
                    continue
                self._tally(key, answered=True)
                answered(key, completion)
        except BackendError:
            raise
        except Exception as exc:  # the job failed (a row's retries spent, workers lost)
            reason = _first_line(str(exc)) or type(exc).__name__
            for key in by_key:
                failed(key, f"{self.name} job failed: {reason}", 1)  # the engine skips answered ones

    def close(self) -> None:
        """Ray stays up for the process's next stage; a Ray this process started ends with it."""

    def _tally(self, key: str, answered: bool) -> None:
        route = self._route_of.pop(key, None)
        if self._router is not None and route is not None:
            self._router.tally(route, answered)

    # -- the job ---------------------------------------------------------------------------

    def _start_ray(self) -> None:
        ray = self._ray_module
        if ray.is_initialized():
            return
        import ray.data

        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": "ERROR",
        }
        if self._ray.address:
            options["address"] = self._ray.address
        ray.init(**options)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the engine shows one bar for the stage
        context.print_on_execution_start = False

    def _rows_back(self, pending: Sequence[tuple[str, CompletionRequest]]) -> Iterator[dict[str, Any]]:
        if self._ray.processor == "vllm":
            return iter(self._vllm_dataset(pending).iter_rows())
        return iter(self._http_dataset(pending).iter_rows())

    def _http_dataset(self, pending: Sequence[tuple[str, CompletionRequest]]) -> Any:
        import ray.data
        from ray.data.llm import HttpRequestProcessorConfig

        shares = deal_by_weight(len(pending), [weight for _, weight in self._servers])
        routes = {r.name: r for r in self._router.routes} if self._router is not None else {}
        datasets = []
        start = 0
        for (member, _), count in zip(self._servers, shares, strict=True):
            rows: list[dict[str, Any]] = []
            path = ""
            route = routes.get(member.base_url)
            for key, request in pending[start : start + count]:
                path, body = member.request_body(request)  # one route per API: the same for all
                rows.append({"key": key, "payload": body})
                if route is not None:
                    self._route_of[key] = route
            start += count
            if not rows:
                continue
            config = HttpRequestProcessorConfig(
                url=member.base_url + path,
                headers=member.headers(),
                max_retries=self._ray.max_retries,
                concurrency=self._ray.concurrency,
                batch_size=self._ray.batch_size,
                # Workers wait on the network: a sliver of a CPU each, so many fit on a small machine.
                http_request_stage={"num_cpus": 0.05},
            )
            processor = _build(config, postprocess=_http_row)
            datasets.append(processor(ray.data.from_items(rows, override_num_blocks=self._blocks(len(rows)))))
        return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]

    def _vllm_dataset(self, pending: Sequence[tuple[str, CompletionRequest]]) -> Any:
        import ray.data

        rows = [{"key": key, **vllm_input(request)} for key, request in pending]
        processor = _build(vllm_processor_config(self._config), postprocess=_vllm_row)
        return processor(ray.data.from_items(rows, override_num_blocks=self._blocks(len(rows))))

    def _blocks(self, rows: int) -> int:
        """Blocks to cut the rows into: a worker takes a block at a time, so one block would
        keep every worker but one idle; a few per worker let the fast ones take more."""
        return max(1, min(rows, 4 * self._ray.concurrency, -(-rows // self._ray.batch_size)))

    # -- rows back into completions --------------------------------------------------------

    def _completion(self, row: dict[str, Any], request: CompletionRequest) -> Completion:
        if self._ray.processor == "vllm":
            return vllm_completion(row, request.params.max_tokens)
        data = json.loads(row["body"])
        if isinstance(data, dict) and data.get("error") and not data.get("choices"):
            # A refusal the worker did not retry (a 4xx, a 500): its body, not an answer.
            # (Rows of one block share a schema, so an answer has "error": None and an
            # error body "choices": None.)
            error = data["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise RetryableBackendError(f"the server answered an error: {_first_line(str(message))}")
        return parse_answer(row["body"].encode("utf-8"), self._api)


def deal_by_weight(count: int, weights: Sequence[float]) -> list[int]:
    """`count` rows split in proportion to `weights` (largest remainders; sums to count)."""
    total = sum(weights)
    exact = [count * w / total for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: count - sum(shares)]:
        shares[i] += 1
    return shares


def vllm_processor_config(config: BackendConfig) -> Any:
    """The `vLLMEngineProcessorConfig` that `backend.ray` describes."""
    from ray.data.llm import vLLMEngineProcessorConfig

    ray_config = config.ray
    extra: dict[str, Any] = {}
    if ray_config.placement_group_config is not None:
        extra["placement_group_config"] = dict(ray_config.placement_group_config)
    return vLLMEngineProcessorConfig(
        model_source=ray_config.model_source or config.model,
        engine_kwargs=dict(ray_config.engine_kwargs),
        concurrency=ray_config.concurrency,
        batch_size=ray_config.batch_size,
        # Engine metrics go through Ray Serve, which the ray extra does not install.
        log_engine_metrics=False,
        **extra,
        # The prompts are sent as they are (the stages render them); chat requests carry
        # messages, which the engine's own chat template renders.
        chat_template_stage=config.api == "chat",
        # vLLM tokenizes the prompt and detokenizes its answer itself; those stages would
        # only add workers (each a CPU, which a small machine may not have to spare).
        tokenize_stage=False,
        detokenize_stage=False,
        should_continue_on_error=True,  # a failed row comes back with its error, the rest go on
    )


def vllm_input(request: CompletionRequest) -> dict[str, Any]:
    """A request as a vLLM processor row: the prompt (or messages) and sampling parameters."""
    row: dict[str, Any] = {"sampling_params": wire.sampling(request.params, "vllm")}
    if request.messages:
        row["messages"] = wire.messages(request)
    else:
        row["prompt"] = request.prompt
    return row


def vllm_completion(row: dict[str, Any], max_tokens: int) -> Completion:
    """A vLLM processor's output row as a Completion (a row with an error: retryable).

    The processor's rows carry no finish reason: an answer as long as `max_tokens` was cut.
    """
    error = row.get("__inference_error__") or ""
    if error:
        raise RetryableBackendError(_first_line(str(error)), kind="server")
    generated = int(row.get("num_generated_tokens") or 0)
    return Completion(
        text=str(row.get("generated_text") or ""),
        finish_reason="length" if generated >= max_tokens else "stop",
        prompt_tokens=int(row.get("num_input_tokens") or 0),
        completion_tokens=generated,
    )


def _http_row(row: dict[str, Any]) -> dict[str, Any]:
    # Back to the driver as JSON text, in one column, whatever the answers' shapes.
    return {"key": row["key"], "body": json.dumps(row["http_response"], ensure_ascii=False)}


def _vllm_row(row: dict[str, Any]) -> dict[str, Any]:
    fields = (
        "generated_text",
        "num_input_tokens",
        "num_generated_tokens",
        "__inference_error__",
    )
    return {"key": row["key"], **{f: row.get(f) for f in fields if f in row}}


def _build(config: Any, postprocess: Any) -> Any:
    import ray.data.llm as llm

    # Renamed in Ray 2.53 (build_llm_processor -> build_processor); either may be present.
    build = getattr(llm, "build_processor", None) or getattr(llm, "build_llm_processor")  # noqa: B009
    return build(config, postprocess=postprocess)


def import_ray() -> Any:
    """The ray module, or BackendError naming the extra to install."""
    # Ray's own usage report would try the network; and a missing extra is one line.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data.llm
    except ImportError as exc:
        raise BackendError(f"--executor ray needs {exc.name or 'ray'}: {INSTALL_HINT}") from None
    return ray


def check_ray_address(configured: str | None) -> None:
    """Refuse (ConfigError) a Ray cluster address that nothing answers at, before anything is
    written: `ray.init()` would fail only at the first stateless stage, after the bootstrap.

    The address is the one `ray.init()` will use: backend.ray.address, else $RAY_ADDRESS
    (which also replaces "auto"); none or "local" starts Ray on this machine, unchecked.
    "auto" is resolved the way Ray resolves it. The check greets the cluster's gRPC port
    and hangs up: nothing is started, on this machine or the cluster.
    """
    named, source = _ray_address(configured)
    if named is None or named == "local":
        return
    address = named
    if named == "auto":
        try:
            found = _running_cluster()
        except _CannotTell:
            return  # ray.init() finds it, or fails, itself
        if found is None:
            raise ConfigError(
                f"{source}=auto: no Ray cluster is running on this machine; start one "
                f"(ray start --head), or unset {source} and --executor ray starts Ray for the run"
            )
        address = found
    host, port = _host_and_port(address)
    if not host or not port.isdigit():
        raise ConfigError(f"{source}={named}: not a Ray address (host:port, ray://host:port, auto or local)")
    silent = _no_grpc_server_at(host.strip("[]"), int(port))
    if silent is not None:
        raise ConfigError(
            f"{source}={named}: no Ray cluster answers at {host}:{port} ({silent}); start one "
            f"(ray start --head), or unset {source} and --executor ray starts Ray for the run"
        )


def _no_grpc_server_at(host: str, port: int) -> str | None:
    """Why no gRPC server (Ray's GCS, its client server) answers at host:port, or None.

    HTTP/2's client preface and an empty SETTINGS frame; a gRPC server answers with its own
    SETTINGS frame. More than a TCP connection: a proxy or another service may accept that.
    """
    try:
        with socket.create_connection((host, port), timeout=_ADDRESS_CHECK_S) as conn:
            conn.sendall(_HTTP2_PREFACE)
            reply = b""
            while len(reply) < 9:  # a frame header: length (3), type (1), flags (1), stream (4)
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return (exc.strerror or str(exc) or type(exc).__name__).lower()
    if len(reply) < 9 or reply[3] != _HTTP2_SETTINGS:
        return "what listens there is not a Ray cluster"
    return None


_HTTP2_SETTINGS = 0x4
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, _HTTP2_SETTINGS, 0, 0, 0, 0, 0])
_ADDRESS_CHECK_S = 5.0


def _ray_address(configured: str | None) -> tuple[str | None, str]:
    """The address `ray.init()` will connect to and where it was set (a key or a variable)."""
    if configured not in (None, "", "auto"):
        return configured, "backend.ray.address"
    environment = os.environ.get("RAY_ADDRESS", "").strip()
    if environment:
        return environment, "RAY_ADDRESS"
    return (configured or None), "backend.ray.address"


class _CannotTell(Exception):
    """This Ray cannot resolve "auto" without connecting (its internals moved)."""


def _running_cluster() -> str | None:
    """The host:port of the cluster "auto" names (the latest `ray start` here), or None."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:
        raise _CannotTell from None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None
    except Exception as exc:
        raise _CannotTell from exc


def _host_and_port(address: str) -> tuple[str, str]:
    """A GCS address (host:port) or a Ray Client one (ray://host[:port], 10001 by default)."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    host, colon, port = rest.rpartition(":")
    if client and (not colon or "]" in port):  # ray://head, ray://[::1]
        return rest, "10001"
    return host, port


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""
