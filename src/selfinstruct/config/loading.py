"""Typed configuration: presets, YAML overrides and CLI flags all end up here, validated.

A run is declared by one `RunConfig`. It is built from a preset (package data under
`presets/`), deep-merged with an optional user YAML file and then with CLI flags, and
validated before anything runs. Unknown keys are errors, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfinstruct.errors import ConfigError, SelfInstructError

PRESETS = ("selfinstruct-2022", "alpaca-2023")
DEFAULT_PRESET = "selfinstruct-2022"


# Above this many instructions, similarity_stats is off unless asked for (BootstrapConfig).
SIMILARITY_STATS_AUTO_MAX = 20_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationParams(Strict):
    """Sampling parameters of one request, mapped faithfully onto each backend."""

    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0.0, le=2.0)
    top_p: float = Field(ge=0.0, le=1.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # llama.cpp's multiplicative repetition penalty; OpenAI-compatible servers get it as an
    # extra body field (llama.cpp's server understands it, others ignore it). None = off.
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    stop: tuple[str, ...] = ()
    # Per-request sampling seed; the stages derive it per step so that resume is exact.
    seed: int | None = None

    def with_(self, **changes: Any) -> GenerationParams:
        return self.model_copy(update=changes)


def _url_without_credentials(value: str) -> str:
    # A URL is written to config.yaml, names the endpoint in the summary and in every error
    # message, and shows in `ps`: a secret in it would end up in all of them. Refused rather
    # than stripped and sent as basic auth: a later stage command reads the URL back from
    # config.yaml, which would then lack the credentials.
    parts = urlsplit(value)
    if parts.username is None and parts.password is None:
        return value
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    raise ValueError(
        f"credentials in the URL are not accepted, they would be stored and logged: use {bare} "
        "and give the key with --api-key-file (backend.api_key_file) or OPENAI_API_KEY"
    )


class EndpointConfig(Strict):
    """One OpenAI-compatible server among several that serve the same model."""

    url: str
    # Its share of the work: requests go where (in flight + 1) / weight is lowest.
    weight: float = Field(default=1.0, gt=0)
    # Its own ceiling of requests in flight; None = backend.concurrency.
    concurrency: int | None = Field(default=None, ge=1, le=1024)

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        return _url_without_credentials(value)


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


class BackendConfig(Strict):
    kind: Literal["embedded", "openai", "transformers"] = "embedded"
    # Model name sent to an OpenAI-compatible server; for the embedded backend a label only.
    model: str = "gemma-3-270m"
    # OpenAI-compatible: base URL up to and including /v1; no user:password@ (see _no_credentials).
    base_url: str = "https://api.openai.com/v1"
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
    # Where the API key is read from; OPENAI_API_KEY only when this is unset (a key file
    # named for this endpoint beats an ambient OpenAI key). The key is never stored anywhere.
    api_key_file: str | None = None
    # Embedded: a GGUF path; default = the packaged Gemma 3 270M, assembled into the cache.
    model_path: str | None = None
    # A LoRA adapter from `selfinstruct finetune` applied to model_path. Transformers: the
    # adapter directory. Embedded: a GGUF adapter file (finetune writes adapter.gguf), or the
    # adapter directory, written as a GGUF adapter into the cache once.
    adapter_path: str | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    concurrency: int = Field(default=8, ge=1, le=1024)
    # Embedded: a prompt that starts like an earlier one reads only the rest from the model
    # (the KV cache of the shared prefix is reused). Answers are the same either way.
    prefix_cache: bool = True
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    # First backoff delay; later ones double (with jitter) up to 30 s.
    retry_base_s: float = Field(default=0.5, gt=0)
    # A request to a server that runs past 2x its stage's recent p95 latency gets a twin
    # (the first good answer wins), at most this share of the requests sent; 0 = never.
    hedge_budget: float = Field(default=0.05, ge=0.0, le=1.0)
    # Optional price per 1K tokens (input, output) for cost accounting.
    price_per_1k_input: float | None = Field(default=None, ge=0)
    price_per_1k_output: float | None = Field(default=None, ge=0)
    # Who sends the stateless stages' requests (classification, instances, relabel,
    # evaluation): this process ("local"), or a Ray Data job ("ray", the `ray` extra). The
    # bootstrap always runs here: each prompt depends on the answers before it.
    executor: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()
    # The stateless stages through the provider's Batch API (files + batches, 24 h window),
    # priced at batch_discount off (OpenAI: 50 %); polled every batch_poll_s seconds.
    batch: bool = False
    batch_discount: float = Field(default=0.5, ge=0.0, le=1.0)
    batch_poll_s: float = Field(default=30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        return _url_without_credentials(value)

    @field_validator("endpoints", mode="before")
    @classmethod
    def _endpoint_urls(cls, value: Any) -> Any:
        # `endpoints: [http://a/v1, http://b/v1]` is short for a list of {url: ...}.
        if isinstance(value, list | tuple):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    def endpoint_list(self) -> tuple[EndpointConfig, ...]:
        """The servers behind this backend: `endpoints`, or else `base_url` alone."""
        return self.endpoints or (EndpointConfig(url=self.base_url),)

    def chat_prompts(self) -> bool:
        """Whether the stages talk to this backend with chat prompts (prompts/chat.yaml)."""
        return self.kind == "openai" and self.api == "chat"


class BootstrapConfig(Strict):
    """Stage 1: instruction bootstrap (method.md 1.1)."""

    num_instructions: int = Field(default=100, ge=1)
    in_context: int = Field(default=8, ge=1)
    machine_in_context: int = Field(default=2, ge=0)
    # The reference builds prompts in rounds of 5 from the pool as it stood at the round's start.
    prompts_per_round: int = Field(default=5, ge=1)
    # Pipelining: prompt k is built from the pool as it stood after the first k - window
    # prompts were filtered, so up to window + 1 prompts can be in flight while the answers
    # are still filtered in prompt order. It does not depend on the concurrency, so the
    # output does not either. None = the reference's rounds of `prompts_per_round`.
    window: int | None = Field(default=64, ge=0)
    classification_seeds_only: bool = False
    # Stop after this many rounds' worth of prompts in a row (max_idle_rounds x
    # prompts_per_round) that accept nothing new (a stuck model).
    max_idle_rounds: int = Field(default=20, ge=1)
    # Keep `most_similar` (top-k) and `avg_similarity_score` per instruction. Each is a full
    # comparison against the pool (the mean needs every score), so a run of N pays about
    # 0.1 us x N^2 of CPU on a thread of its own: 10 s for 10K, 4-5 min for 52K. None = on
    # up to SIMILARITY_STATS_AUTO_MAX instructions, off above (see similarity_stats_on).
    similarity_stats: bool | None = None
    most_similar_k: int = Field(default=10, ge=1)
    generation: GenerationParams

    def similarity_stats_on(self) -> bool:
        if self.similarity_stats is not None:
            return self.similarity_stats
        return self.num_instructions <= SIMILARITY_STATS_AUTO_MAX


class ClassifyConfig(Strict):
    """Stage 2: classification identification (method.md 1.2)."""

    generation: GenerationParams


class InstancesConfig(Strict):
    """Stage 3: instance generation (method.md 1.3)."""

    max_instances: int = Field(default=5, ge=1)
    generation: GenerationParams
    # The reference uses a shorter budget when the batch holds a classification task.
    max_tokens_classification: int = Field(default=300, ge=1)


# The instruction rule filters, in the order the reference applies them (filters/heuristics.py).
# Their names are the keys of `filters.enabled` and of the funnel; "rouge" is the novelty filter.
FILTER_NAMES = (
    "empty",
    "too_short",
    "too_long",
    "blacklist",
    "forbidden_prefix",
    "punctuation_start",
    "non_ascii_start",
)


class FilterConfig(Strict):
    """Instruction filters (method.md 1.1); each one can be switched off and is counted."""

    min_words: int = Field(default=4, ge=0)  # reference: drop if <= 3 words
    max_words: int = Field(default=150, ge=1)  # reference: drop if > 150 words
    blacklist: tuple[str, ...] = ()
    forbidden_prefixes: tuple[str, ...] = ("Write a program",)
    rouge_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    tokenizer: Literal["rouge", "unicode"] = "rouge"
    enabled: dict[str, bool] = Field(default_factory=dict)

    @field_validator("enabled")
    @classmethod
    def _known_filters(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(FILTER_NAMES) - {"rouge"})
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; known: {[*FILTER_NAMES, 'rouge']}")
        return value

    def is_enabled(self, name: str) -> bool:
        return self.enabled.get(name, True)


class FinetuneDataConfig(Strict):
    """Stage 4 (`selfinstruct prepare`, stages/prepare.py): instance filters and the fine-tuning data
    (method.md 1.4)."""

    max_instances_per_task: int = Field(default=5, ge=1)
    include_seed_tasks: bool = False
    input_noise_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    # Cap on instructions kept in the fine-tuning data (the paper's data-size curves).
    max_instructions: int | None = Field(default=None, ge=1)


class CompatConfig(Strict):
    """Reference quirks (method.md section 5). Off = the sensible behaviour."""

    # Python's str.capitalize(): lower-cases everything after the first character.
    python_capitalize: bool = False
    # Drop every instruction of a response cut by max_tokens, not just the last one.
    drop_whole_response_on_length: bool = False
    # Drop all of a task's instances when two share an input but differ in output.
    purge_task_on_conflict: bool = False


class RunConfig(Strict):
    preset: str = DEFAULT_PRESET
    pipeline: Literal["self-instruct", "alpaca"] = "self-instruct"
    seed: int = 42
    seed_tasks: str | None = None  # None = the package's own 175 seed tasks
    backend: BackendConfig = BackendConfig()
    bootstrap: BootstrapConfig
    classify: ClassifyConfig
    instances: InstancesConfig
    filters: FilterConfig = FilterConfig()
    # Stage 4's section keeps its name, though the stage is `prepare` (stages/prepare.py): users'
    # YAML files and the config.yaml recorded in existing runs say `finetune_data:`.
    finetune_data: FinetuneDataConfig = FinetuneDataConfig()
    compat: CompatConfig = CompatConfig()
    # Prompt files (package data names or paths) to use instead of the preset's.
    prompts: dict[str, str] = Field(default_factory=dict)


def cache_dir() -> Path:
    """Where models are assembled and converted: $SELFINSTRUCT_CACHE_DIR or ~/.cache/selfinstruct."""
    return Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or Path.home() / ".cache" / "selfinstruct")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` into `base` recursively (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_user_file(path: Path, error: type[SelfInstructError] = ConfigError) -> str:
    """A text file the user wrote: UTF-8, with or without the BOM that Windows editors put first.

    A file that is not UTF-8 or cannot be read raises `error` in one line.
    """
    try:
        return path.read_text("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def read_yaml_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except Exception as exc:  # the parser failing on bad text is bad text too
        # PyYAML's constructors raise plain Python errors on some text it scans fine: `!!int`
        # (IndexError), `!!int abc` or `2001-13-45` (ValueError), an integer of 5000 digits,
        # 10,000 nested brackets (RecursionError).
        raise ConfigError(f"{source}: not valid YAML ({type(exc).__name__}: {exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    text = resources.files("selfinstruct.presets").joinpath(f"{name}.yaml").read_text("utf-8")
    return read_yaml_mapping(text, f"preset {name}")


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve preset < YAML file < overrides into a validated RunConfig."""
    user: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        user = read_yaml_mapping(read_user_file(path), str(path))
    preset_name = (overrides or {}).get("preset") or user.get("preset") or preset or DEFAULT_PRESET
    if not isinstance(preset_name, str):
        raise ConfigError(f"{config_file}: preset: must be one of {', '.join(PRESETS)}")
    data = deep_merge(load_preset(preset_name), user)
    data["preset"] = preset_name
    if config_file is not None:
        # The file on its own first: a wrong value in it is reported even where a flag
        # overrides it (the file is wrong, and will be used without that flag).
        validate_config(absolute_paths(data), str(config_file))
    data = deep_merge(data, overrides or {})
    return validate_config(absolute_paths(data), "flags")


def absolute_paths(data: dict[str, Any]) -> dict[str, Any]:
    """The config with its file paths made absolute (relative ones are taken from the CWD).

    A run directory records its resolved config, and later stage commands read it back,
    possibly from another directory: a relative seed file would then be looked for there.
    Names that are not paths (a packaged prompt, the `embedded` model) stay as they are.
    """

    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        try:
            return str(Path(value).expanduser().absolute())
        except RuntimeError:  # ~someone, who has no home here: left as written, reported when opened
            return value

    out = dict(data)
    out["seed_tasks"] = absolute(out.get("seed_tasks"))
    if isinstance(out.get("backend"), dict):
        backend = dict(out["backend"])
        for key in ("api_key_file", "adapter_path", "model_path"):
            if key in backend and backend[key] != "embedded":
                backend[key] = absolute(backend[key])
        out["backend"] = backend
    if isinstance(out.get("prompts"), dict):
        out["prompts"] = {
            family: value if not isinstance(value, str) or _is_packaged_prompt(value) else absolute(value)
            for family, value in out["prompts"].items()
        }
    if out["seed_tasks"] is None:
        out.pop("seed_tasks")
    return out


def _is_packaged_prompt(name: str) -> bool:
    """A prompt file shipped in the package (`classify.yaml`), which prompts/ prefers to a path."""
    return "/" not in name and resources.files("selfinstruct.prompts").joinpath(name).is_file()


def validate_config(data: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{source}: {where}: {err['msg']}{more}") from None


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what a run directory records)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
