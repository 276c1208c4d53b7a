"""Resolving a run's config: preset < user YAML file < CLI flags, validated, paths made absolute.

A run is declared by one `RunConfig` (run.py). It is built from a preset (package data under
`presets/`), deep-merged with an optional user YAML file and then with CLI flags, and
validated before anything runs. Unknown keys are errors, so a typo never silently falls back
to a default. Also here: reading the text and YAML files users write, and where models are
cached.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from selfinstruct.config.run import DEFAULT_PRESET, PRESETS, RunConfig
from selfinstruct.errors import ConfigError, SelfInstructError


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


def read_yaml_mapping(text: str, source: str, error: type[SelfInstructError] = ConfigError) -> dict[str, Any]:
    """YAML text whose top level is a mapping ({} for an empty text); anything else raises
    `error` in one line naming `source` (and the line, where PyYAML knows it)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        # A reader error (a control character) has no `problem` and prints on two lines.
        raise error(f"{where}: not valid YAML ({_one_line(getattr(exc, 'problem', exc))})") from None
    except Exception as exc:  # the parser failing on bad text is bad text too
        # PyYAML's constructors raise plain Python errors on some text it scans fine: `!!int`
        # (IndexError), `!!int abc` or `2001-13-45` (ValueError), an integer of 5000 digits,
        # 10,000 nested brackets (RecursionError).
        raise error(f"{source}: not valid YAML ({type(exc).__name__}: {_one_line(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
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
    config = validate_config(absolute_paths(data), "flags")
    conflict = config.backend.conflict()
    if conflict is not None:
        raise ConfigError(conflict)
    return config


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
        # A key is the user's text: one with a line break is named escaped, on one line.
        where = ".".join(_escaped(str(p)) for p in err["loc"]) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{source}: {where}: {_one_line(err['msg'])}{more}") from None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _escaped(key: str) -> str:
    """`key` as written, or quoted with escapes when it holds a line break or another control character."""
    return key if key.isprintable() else repr(key)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what a run directory records)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
