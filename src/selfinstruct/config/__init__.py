"""Typed configuration: presets, YAML overrides and CLI flags all end up here, validated.

A run is declared by one `RunConfig`, built by `build_config` from a preset, a user's YAML
file and CLI flags, and validated before anything runs. The modules, one idea each:

- strict: the base of every config model (unknown keys are errors, values frozen);
- generation: `GenerationParams`, the sampling parameters of one request;
- backend: `BackendConfig`, the `backend:` section, its fields grouped by concern;
- run: `RunConfig` and its per-stage sections;
- loading: preset < YAML < flags into a RunConfig, paths made absolute, and back to YAML.

Every name is re-exported here: `from selfinstruct.config import RunConfig, build_config`.
"""

from selfinstruct.config.backend import (
    BackendConfig,
    EndpointConfig,
    ExecutorChoice,
    HttpServer,
    InProcessRuntime,
    ModelChoice,
    Pricing,
    RayConfig,
    RequestPolicy,
)
from selfinstruct.config.generation import GenerationParams
from selfinstruct.config.loading import (
    absolute_paths,
    build_config,
    cache_dir,
    deep_merge,
    dump_config,
    load_preset,
    read_user_file,
    read_yaml_mapping,
    validate_config,
)
from selfinstruct.config.run import (
    DEFAULT_PRESET,
    FILTER_NAMES,
    PRESETS,
    BootstrapConfig,
    ClassifyConfig,
    CompatConfig,
    FilterConfig,
    FinetuneDataConfig,
    InstancesConfig,
    RunConfig,
)
from selfinstruct.config.strict import Strict

__all__ = [
    "DEFAULT_PRESET",
    "FILTER_NAMES",
    "PRESETS",
    "BackendConfig",
    "BootstrapConfig",
    "ClassifyConfig",
    "CompatConfig",
    "EndpointConfig",
    "ExecutorChoice",
    "FilterConfig",
    "FinetuneDataConfig",
    "GenerationParams",
    "HttpServer",
    "InProcessRuntime",
    "InstancesConfig",
    "ModelChoice",
    "Pricing",
    "RayConfig",
    "RequestPolicy",
    "RunConfig",
    "Strict",
    "absolute_paths",
    "build_config",
    "cache_dir",
    "deep_merge",
    "dump_config",
    "load_preset",
    "read_user_file",
    "read_yaml_mapping",
    "validate_config",
]
