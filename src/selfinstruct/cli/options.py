"""The flags shared by several commands, and the config key each one sets.

A flag that overrides the config is declared once here, with its config key; `overrides()`
turns whichever of them a command has into a nested config mapping.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfinstruct.errors import ConfigError

if TYPE_CHECKING:
    from selfinstruct.config import BackendConfig

# config.PRESETS, spelled out so that `--help` needs no pydantic (a test keeps them equal).
PRESETS = ["selfinstruct-2022", "alpaca-2023"]


@dataclass(frozen=True)
class ConfigFlag:
    """A command-line flag that sets one config key (dotted path)."""

    names: tuple[str, ...]
    dest: str
    key: str
    options: dict[str, Any] = field(default_factory=dict)
    # The backends that read this flag; () = every one (see check_backend_flags).
    backends: tuple[str, ...] = ()

    def add_to(self, group: argparse._ActionsContainer) -> None:
        group.add_argument(*self.names, dest=self.dest, **self.options)


# The run's parameters; a stage command gets those its stage reads (parser.STAGE_COMMANDS).
RUN_FLAGS = {
    flag.dest: flag
    for flag in (
        ConfigFlag(
            ("--seed-tasks",),
            "seed_tasks",
            "seed_tasks",
            {"metavar": "PATH", "help": "seed file in the paper's JSONL schema"},
        ),
        ConfigFlag(
            ("--num-instructions", "-n"),
            "num_instructions",
            "bootstrap.num_instructions",
            {"type": int, "metavar": "N", "help": "instructions to generate"},
        ),
        ConfigFlag(("--seed",), "seed", "seed", {"type": int, "help": "random seed of the run"}),
        ConfigFlag(
            ("--include-seed-tasks",),
            "include_seed_tasks",
            "finetune_data.include_seed_tasks",
            {"action": "store_true", "default": None, "help": "add seed tasks to the fine-tuning data"},
        ),
        ConfigFlag(
            ("--max-instructions",),
            "max_instructions",
            "finetune_data.max_instructions",
            {"type": int, "metavar": "N", "help": "keep at most N instructions in the fine-tuning data"},
        ),
    )
}

# The model backend: every command that calls a model.
BACKEND_FLAGS = (
    ConfigFlag(
        ("--backend",),
        "backend",
        "backend.kind",
        {
            "choices": ["embedded", "openai", "anthropic", "transformers"],
            "help": "embedded llama.cpp model, an OpenAI-compatible server, Anthropic's Messages API (Claude), "
            "or a Hugging Face model (transformers)",
        },
    ),
    ConfigFlag(
        ("--model",),
        "model",
        "backend.model",
        {"help": "model name (sent to the server; a label for the embedded model)"},
    ),
    ConfigFlag(
        ("--model-path",),
        "model_path",
        "backend.model_path",
        {
            "metavar": "PATH",
            "help": "embedded: a GGUF file instead of the packaged Gemma 3 270M; "
            "transformers: a Hugging Face model directory, or 'embedded' (the default)",
        },
        backends=("embedded", "transformers"),
    ),
    ConfigFlag(
        ("--adapter",),
        "adapter",
        "backend.adapter_path",
        {
            "metavar": "PATH",
            "help": "a LoRA adapter from `selfinstruct finetune`: embedded: its adapter.gguf (or the "
            "adapter directory); transformers: the adapter directory",
        },
        backends=("embedded", "transformers"),
    ),
    ConfigFlag(
        ("--base-url",),
        "base_url",
        "backend.base_url",
        {
            "metavar": "URL",
            "action": "append",
            "help": "openai: base URL, e.g. http://127.0.0.1:8080/v1; give it again for more servers "
            "with the same model (each request goes to the least busy one); anthropic: default "
            "https://api.anthropic.com/v1",
        },
        backends=("openai", "anthropic"),
    ),
    ConfigFlag(
        ("--executor",),
        "executor",
        "backend.executor",
        {
            "choices": ["local", "ray"],
            "help": "who sends the stateless stages' requests: this process, or a Ray Data job "
            "(backend.ray in the config; the `ray` extra)",
        },
    ),
    ConfigFlag(
        ("--batch",),
        "batch",
        "backend.batch",
        {
            "action": "store_true",
            "default": None,
            "help": "openai, anthropic: send the stateless stages through the provider's Batch API (half "
            "price, up to 24 h; resumable: a re-run polls the same batches)",
        },
        backends=("openai", "anthropic"),
    ),
    ConfigFlag(
        ("--api",),
        "api",
        "backend.api",
        {"choices": ["completions", "chat"], "help": "openai: the endpoint to use"},
        backends=("openai",),
    ),
    ConfigFlag(
        ("--output-mode",),
        "output_mode",
        "backend.output_mode",
        {
            "choices": ["auto", "json_schema", "json_object", "text"],
            "help": "openai --api chat: how answers come back; auto = probe the server once",
        },
        backends=("openai",),
    ),
    ConfigFlag(
        ("--api-key-file",),
        "api_key_file",
        "backend.api_key_file",
        {
            "metavar": "PATH",
            "help": "openai, anthropic: file holding the API key; used instead of $OPENAI_API_KEY "
            "($ANTHROPIC_API_KEY)",
        },
        backends=("openai", "anthropic"),
    ),
    ConfigFlag(
        ("--concurrency",),
        "concurrency",
        "backend.concurrency",
        {"type": int, "metavar": "N", "help": "requests in flight at once"},
    ),
)

PRESET_FLAG = ConfigFlag(("--preset",), "preset", "preset", {"choices": PRESETS, "help": "parameter preset"})
ALL_FLAGS = (PRESET_FLAG, *RUN_FLAGS.values(), *BACKEND_FLAGS)


def add_run_options(p: argparse.ArgumentParser, run_flags: tuple[str, ...], model: bool) -> None:
    """--out, the configuration group with `run_flags` (names in RUN_FLAGS), and, for a command
    that calls a model, the backend group and --no-progress (only model requests show progress)."""
    unknown = set(run_flags) - set(RUN_FLAGS)
    assert not unknown, f"not in RUN_FLAGS: {sorted(unknown)}"
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run directory (created if missing)"
    )
    g = p.add_argument_group("configuration (preset < --config file < flags)")
    PRESET_FLAG.add_to(g)
    g.add_argument("--config", type=Path, metavar="YAML", help="YAML file overriding the preset")
    for name, flag in RUN_FLAGS.items():  # always in the same order
        if name in run_flags:
            flag.add_to(g)
    if model:
        add_backend_options(p)
        add_no_progress(p)


def add_backend_options(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("model backend")
    for flag in BACKEND_FLAGS:
        flag.add_to(b)


def add_no_progress(p: argparse.ArgumentParser, text: str = "no progress bars") -> None:
    p.add_argument("--no-progress", action="store_true", help=text)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags given on the command line, as a nested config mapping."""
    o: dict[str, Any] = {}
    for flag in ALL_FLAGS:
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        node = o
        *parents, leaf = flag.key.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    # --base-url is a list (given once per server): the config splits it (config/backend.py).
    return o


def check_backend_flags(args: argparse.Namespace, backend: BackendConfig) -> None:
    """Refuse a backend flag that the chosen backend would ignore (`--adapter` with an HTTP
    server would otherwise evaluate the server's model under the adapter's name)."""
    kind = backend.kind
    for flag in BACKEND_FLAGS:
        if flag.backends and kind not in flag.backends and getattr(args, flag.dest, None) is not None:
            raise ConfigError(
                f"{flag.names[0]} applies to --backend {' or '.join(flag.backends)}, not to the {kind} backend"
            )
    # Only chat requests carry a response format (llm/openai/output_modes.py).
    if getattr(args, "output_mode", None) is not None and backend.api != "chat":
        raise ConfigError(f"--output-mode applies to --api chat, not to --api {backend.api}")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def percentage(text: str) -> float:
    """An argparse type: a share above 0 and at most 100, written "25%" or "25"."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = math.nan
    if not 0 < value <= 100:  # false for nan too
        raise argparse.ArgumentTypeError(
            f"must be a percentage above 0 and at most 100, such as 25%, got {text!r}"
        )
    return value


def similarity(text: str) -> float:
    """An argparse type: a ROUGE-L threshold above 0 and at most 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a ROUGE-L F-measure above 0 and at most 1, got {text!r}")
    return value


def finite_number(text: str) -> float:
    """An argparse type: a number that is not inf or nan."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def backend_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": overrides(args).get("backend", {})}


def progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


def config_with_other_model(run: Path, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """RUN's config with another model as its backend, as `relabel` (a teacher) and `score
    --method judge` (a judge) take one: RUN/config.yaml, then --config (a YAML with that
    model's `backend:` section), then the backend flags. Returns the config and what was given
    over the run's (the output mode decision reads it)."""
    from selfinstruct.config import build_config, deep_merge, read_user_file, read_yaml_mapping
    from selfinstruct.errors import InputFileError
    from selfinstruct.rundir import CONFIG_FILE

    run_config = run / CONFIG_FILE
    if not run_config.is_file():
        raise InputFileError(f"{run_config}: not found; is {run} a run directory?")
    other: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise InputFileError(f"{args.config}: config file not found")
        other = read_yaml_mapping(read_user_file(args.config), str(args.config))
    given = deep_merge(other, backend_overrides(args))
    config = build_config(config_file=run_config, overrides=_own_server(given, run))
    check_backend_flags(args, config.backend)
    return config, given


# What names the run's server and how it is reached: not carried over to a model of another kind.
_SERVER_KEYS = ("base_url", "endpoints", "api", "output_mode", "api_key_file")


def _own_server(given: dict[str, Any], run: Path) -> dict[str, Any]:
    """`given`, where it names another backend kind than the run's, with the server settings it
    leaves out at their defaults: a Claude judge of a run made against a vLLM server must not
    send the Anthropic key to that server, nor read the run's OpenAI key file."""
    from selfinstruct.config import BackendConfig
    from selfinstruct.rundir_reader import recorded_backend

    backend = given.get("backend", {})
    recorded = recorded_backend(run) or {}
    if "kind" not in backend or backend["kind"] == recorded.get("kind"):
        return given
    defaults = {key: BackendConfig.model_fields[key].default for key in _SERVER_KEYS if key not in backend}
    return {**given, "backend": {**defaults, **backend}}
