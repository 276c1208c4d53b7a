"""`BackendConfig`: the `backend:` section, which model answers and how requests reach it.

Its fields are grouped by concern into small models, one per thing a user decides, and
`BackendConfig` inherits them all. Inheritance keeps the fields flat: the YAML schema is
`backend: {kind: openai, concurrency: 8, max_retries: 2, ...}` as it always was, so users'
files and the `config.yaml` recorded in existing runs load unchanged, and the code reads
`config.backend.concurrency` as before.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from selfinstruct.config.strict import Strict


def _server_url(value: str) -> str:
    """`value` if it can name an OpenAI-compatible server: http(s), a host, a port that is a
    number, no query or fragment, no credentials. Checked here, where the URL is read, so that a
    typo is one line before anything runs (not an HTTP library's traceback at the first request,
    nor a missing-key error for a URL that names no host)."""
    example = "a base URL looks like http://127.0.0.1:8080/v1"
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # "[::1" (Invalid IPv6 URL)
        raise ValueError(f"{value!r} is not a URL ({exc}): {example}") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or not host.isprintable() or " " in host:
        raise ValueError(f"{value!r} is not a URL: {example}")
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{value!r}: the port {port!r} is not a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r}: a base URL has no ?query or #fragment: {example}")
    return _url_without_credentials(value, parts)


def _url_without_credentials(value: str, parts: SplitResult) -> str:
    # A URL is written to config.yaml, names the endpoint in the summary and in every error
    # message, and shows in `ps`: a secret in it would end up in all of them. Refused rather
    # than stripped and sent as basic auth: a later stage command reads the URL back from
    # config.yaml, which would then lack the credentials.
    if parts.username is None and parts.password is None:
        return value
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    raise ValueError(
        f"credentials in the URL are not accepted, they would be stored and logged: use {bare} "
        "and give the key with --api-key-file (backend.api_key_file) or OPENAI_API_KEY (ANTHROPIC_API_KEY)"
    )


def _same_server(url: str) -> tuple[str, str, int | None, str]:
    """What makes two URLs name the same server: case-blind scheme and host, the port
    (the scheme's default when none is written), the path without a trailing slash."""
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.scheme.lower(), parts.hostname or "", parts.port or default_port, parts.path.rstrip("/"))


class EndpointConfig(Strict):
    """One OpenAI-compatible server among several that serve the same model."""

    url: str
    # Its share of the work: requests go where (in flight + 1) / weight is lowest.
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    # Its own ceiling of requests in flight; None = backend.concurrency.
    concurrency: int | None = Field(default=None, ge=1, le=1024)

    @field_validator("url")
    @classmethod
    def _a_server_url(cls, value: str) -> str:
        return _server_url(value)


class RayConfig(Strict):
    """`backend.executor: ray`: where and how the stateless stages' requests run on Ray."""

    # A running cluster ("auto", "ray://head:10001"); None = start Ray on this machine.
    address: str | None = None
    # "http": Ray Data LLM's HTTP request processor, against backend.endpoints;
    # "vllm": its vLLM engine processor, each worker loading model_source in-process.
    processor: Literal["http", "vllm"] = "http"
    # Workers per endpoint (http) or engine replicas (vllm), and rows per batch.
    concurrency: int = Field(default=4, ge=1)
    batch_size: int = Field(default=16, ge=1)
    # http: retries of a 429/5xx/connection failure inside the worker.
    max_retries: int = Field(default=3, ge=0)
    # vllm: the model each worker loads (a Hugging Face id or folder), and vLLM's engine
    # arguments (tensor_parallel_size, max_model_len, ...). It must be the model that
    # backend.model names: its answers are stored under the same keys.
    model_source: str | None = None
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    # vllm: the resources of one replica, e.g. {"bundles": [{"CPU": 1}]} on a cluster without
    # GPUs (by default each replica asks for a GPU). None = Ray's default.
    placement_group_config: dict[str, Any] | None = None


# -- the groups of BackendConfig's fields --------------------------------------------------------


class ModelChoice(Strict):
    """Which backend runs which model (and which LoRA adapter on it)."""

    # "anthropic": Anthropic's Messages API (Claude), with the chat prompts.
    kind: Literal["embedded", "openai", "anthropic", "transformers"] = "embedded"
    # Model name sent to the server; for the embedded backend a label only.
    model: str = "gemma-3-270m"
    # Embedded: a GGUF path; default = the packaged Gemma 3 270M, assembled into the cache.
    # Transformers: a Hugging Face model folder; None or "embedded" = the packaged model, converted.
    model_path: str | None = None
    # A LoRA adapter from `selfinstruct finetune` applied to model_path. Transformers: the
    # adapter directory. Embedded: a GGUF adapter file (finetune writes adapter.gguf), or the
    # adapter directory, written as a GGUF adapter into the cache once.
    adapter_path: str | None = None


OPENAI_URL = "https://api.openai.com/v1"
ANTHROPIC_URL = "https://api.anthropic.com/v1"


class HttpServer(Strict):
    """`kind: openai` or `anthropic`: the server(s), how to talk to them, and the key."""

    # Base URL up to and including /v1; checked by _server_url. `kind: anthropic` without
    # one gets ANTHROPIC_URL (BackendConfig._anthropic_defaults).
    base_url: str = OPENAI_URL
    # Several servers with the same model behind them (vLLM replicas, llama.cpp servers):
    # each request goes to the one with the least outstanding work. When set, base_url is
    # only the first of them (messages, the recorded output mode).
    endpoints: tuple[EndpointConfig, ...] = ()
    api: Literal["completions", "chat"] = "completions"
    # With api: chat, the stages send chat prompts (prompts/chat.yaml) and ask for answers as
    # JSON where the server can constrain them to a schema: "json_schema" (OpenAI's
    # response_format, vLLM), "json_object" (a schema in llama-cpp-python's json_object form)
    # or "text" (parsed from the reply). "auto" probes the server once, at the run's start, and
    # config.yaml records what it found, so later stages and resumes ask the same way.
    output_mode: Literal["auto", "json_schema", "json_object", "text"] = "auto"
    # Where the API key is read from; OPENAI_API_KEY (kind anthropic: ANTHROPIC_API_KEY) only
    # when this is unset (a key file named for this endpoint beats an ambient key). The key
    # is never stored anywhere.
    api_key_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _servers_from_a_url_list(cls, data: Any) -> Any:
        # `base_url` given as a list (`--base-url` more than once, or a YAML list) names every
        # server and replaces `endpoints`: one URL is base_url alone, several are endpoints
        # (base_url then names the first, in messages and the recorded output mode). This is
        # the one place the list is split; `endpoint_list()` joins it back for every reader.
        if isinstance(data, dict) and isinstance(data.get("base_url"), list | tuple):
            urls = list(data["base_url"])
            if not urls:
                return data  # reported by the base_url check
            data = {**data, "base_url": urls[0], "endpoints": urls if len(urls) > 1 else []}
        return data

    @field_validator("base_url")
    @classmethod
    def _a_server_url(cls, value: str) -> str:
        return _server_url(value)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoint_urls(cls, value: Any) -> Any:
        # `endpoints: [http://a/v1, http://b/v1]` is short for a list of {url: ...}.
        if isinstance(value, list | tuple):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("endpoints")
    @classmethod
    def _each_server_once(cls, value: tuple[EndpointConfig, ...]) -> tuple[EndpointConfig, ...]:
        # Twice the same server would get twice the requests and two breakers that disagree;
        # a larger share is what `weight` is for.
        seen: dict[tuple[str, str, int | None, str], str] = {}
        for endpoint in value:
            key = _same_server(endpoint.url)
            if key in seen:
                twice = (
                    f"{endpoint.url} is given twice"
                    if endpoint.url == seen[key]
                    else f"{seen[key]} and {endpoint.url} name the same server"
                )
                raise ValueError(f"{twice}: give each server once (a weight gives one a larger share)")
            seen[key] = endpoint.url
        return value

    def endpoint_list(self) -> tuple[EndpointConfig, ...]:
        """The servers behind this backend: `endpoints`, or else `base_url` alone."""
        return self.endpoints or (EndpointConfig(url=self.base_url),)


class InProcessRuntime(Strict):
    """`kind: embedded` or `transformers`: the model run inside this process."""

    # The context window, in tokens (each embedded slot gets this many KV cells).
    n_ctx: int = Field(default=4096, ge=256)
    # CPU threads for the model; None = every core (embedded) or torch's default (transformers).
    n_threads: int | None = Field(default=None, ge=1)
    # Embedded: a prompt that starts like an earlier one reads only the rest from the model
    # (the KV cache of the shared prefix is reused). Answers are the same either way.
    prefix_cache: bool = True


class RequestPolicy(Strict):
    """How many requests are in flight, how long each may take, and what happens when one fails."""

    # Requests in flight at once (the embedded backend's slots: up to 16 decoded together).
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # First backoff delay; later ones double (with jitter) up to 30 s.
    retry_base_s: float = Field(default=0.5, gt=0)
    # A request to a server that runs past 2x its stage's recent p95 latency gets a twin
    # (the first good answer wins), at most this share of the requests sent; 0 = never.
    hedge_budget: float = Field(default=0.05, ge=0.0, le=1.0)


class Pricing(Strict):
    """What the tokens cost, for the accounting in summary.json; None = not priced."""

    # Price per 1K tokens (input, output).
    price_per_1k_input: float | None = Field(default=None, ge=0)
    price_per_1k_output: float | None = Field(default=None, ge=0)
    # The share taken off the price of requests sent through a provider's Batch API
    # (backend.batch; OpenAI and Anthropic: 50 %).
    batch_discount: float = Field(default=0.5, ge=0.0, le=1.0)
    # What an input token costs, as a share of price_per_1k_input, when the provider's prompt
    # cache serves it (a read) or stores it (a write). The defaults are Anthropic's published
    # multipliers for its 5-minute cache (0.1 and 1.25); OpenAI writes for free (set 1.0) and
    # reads at 0.1 to 0.5 depending on the model (its pricing page).
    cache_read_price_factor: float = Field(default=0.1, ge=0.0)
    cache_write_price_factor: float = Field(default=1.25, ge=0.0)


class ExecutorChoice(Strict):
    """Who sends the stateless stages' requests (classification, instances, relabel, evaluation).

    This process ("local"), or a Ray Data job ("ray", the `ray` extra); or, with `batch`, the
    provider's Batch API (OpenAI's files + batches or Anthropic's Message Batches, 24 h window). The bootstrap always runs here: each
    prompt depends on the answers before it.
    """

    executor: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()
    batch: bool = False
    # How often a submitted batch is polled, in seconds.
    batch_poll_s: float = Field(default=30.0, gt=0)


# The order config.yaml has listed the backend's keys in since before they were grouped: a
# run's config.yaml comes out byte for byte as earlier versions wrote it. Fields added later
# follow these, in BackendConfig's field order.
_RECORDED_ORDER = (
    "kind",
    "model",
    "base_url",
    "endpoints",
    "api",
    "output_mode",
    "api_key_file",
    "model_path",
    "adapter_path",
    "n_ctx",
    "n_threads",
    "concurrency",
    "prefix_cache",
    "timeout_s",
    "max_retries",
    "retry_base_s",
    "hedge_budget",
    "price_per_1k_input",
    "price_per_1k_output",
    "executor",
    "ray",
    "batch",
    "batch_discount",
    "batch_poll_s",
)


# pydantic collects the fields of the bases from the last to the first, so they are listed in
# reverse: the fields read kind, model, ..., executor, ray, batch (validation errors in that order).
class BackendConfig(ExecutorChoice, Pricing, RequestPolicy, InProcessRuntime, HttpServer, ModelChoice):
    """The `backend:` section: every group's fields, flat (see the module doc)."""

    @model_validator(mode="before")
    @classmethod
    def _anthropic_defaults(cls, data: Any) -> Any:
        # The Messages API is a chat API (`api` names an OpenAI endpoint: chat here, always)
        # whose answers are read as text, at Anthropic's URL. A URL left at OpenAI's default
        # (from a run's config.yaml, written by an openai run) is taken for no URL: the
        # Anthropic key must not go to OpenAI.
        if not isinstance(data, dict) or data.get("kind") != "anthropic":
            return data
        data = dict(data)
        if data.get("base_url") in (None, OPENAI_URL):
            data["base_url"] = ANTHROPIC_URL
        data["api"] = "chat"  # `api` picks an OpenAI endpoint; the Messages API is a chat API
        if data.get("output_mode") in (None, "auto"):
            data["output_mode"] = "text"
        return data

    def chat_prompts(self) -> bool:
        """Whether the stages talk to this backend with chat prompts (prompts/chat.yaml)."""
        return self.kind == "anthropic" or (self.kind == "openai" and self.api == "chat")

    def conflict(self) -> str | None:
        """Why these settings cannot run together (each names its flag and its key), or None.

        Not a validator of the model: a config file is validated on its own before the flags
        are merged into it (loading.py), and a file may leave `kind: openai` to `--backend`.
        build_config asks once all are merged, before any command makes a directory.
        """
        if self.batch and self.executor == "ray":
            return (
                "--batch and --executor ray (backend.batch, backend.executor) both send the "
                "stateless stages' requests: choose one"
            )
        if self.kind == "anthropic" and self.output_mode != "text":
            return (
                "--backend anthropic (backend.kind): the Messages API's answers are read as text, "
                f"backend.output_mode: {self.output_mode} does not apply"
            )
        if self.kind == "anthropic" and len(self.endpoints) > 1:
            return f"--backend anthropic (backend.kind) takes one --base-url, not {len(self.endpoints)}"
        if self.batch and self.kind not in ("openai", "anthropic"):
            return (
                "--batch (backend.batch) sends requests through a provider's Batch API: it needs "
                f"--backend openai or anthropic, not the {self.kind} backend"
            )
        if self.batch and len(self.endpoints) > 1:
            return (
                "--batch (backend.batch) sends every request through one provider's Batch API: "
                f"give one --base-url, not {len(self.endpoints)}"
            )
        if self.executor == "ray" and self.ray.processor == "http" and self.kind != "openai":
            return (
                "--executor ray (backend.executor) sends HTTP requests to --base-url: it needs "
                f"--backend openai, not the {self.kind} backend (or backend.ray.processor: vllm)"
            )
        return None

    @model_serializer(mode="wrap")
    def _in_recorded_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: data[key] for key in _RECORDED_ORDER if key in data} | data
