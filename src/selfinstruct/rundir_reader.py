"""Reading a run directory's bookkeeping files, config.yaml and summary.json: one reader, one error policy.

The pipeline reads its own summary (to add a stage's counts) and the output mode its
config.yaml records; the analysis report and `export hf` read those of any run directory,
also a batch dir of the reference code. They all read through here, so a file is judged the
same way everywhere:

- a missing file reads as empty ({}): a fresh run has no summary yet, a reference batch dir
  has neither file;
- a file that is there but cannot be read, is not UTF-8, not valid JSON / YAML, or not a
  mapping at the top level is a `RunFileError` (an InputFileError) naming the file, one line.

config.yaml comes back as a plain mapping, not validated as a RunConfig: a report should
open runs of older versions too. (A command that continues a run validates it: build_config.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfinstruct.errors import RunFileError
from selfinstruct.rundir import CONFIG_FILE, SUMMARY_FILE


def read_summary(run: Path) -> dict[str, Any]:
    """The run's summary.json (the funnel and the request accounting); {} when there is none."""
    path = run / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: also text that is not UTF-8
        raise RunFileError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: not a JSON object")
    return data


def read_run_config(run: Path) -> dict[str, Any]:
    """The run's resolved config.yaml as a plain mapping; {} when there is none."""
    # Imported here: config brings pydantic and PyYAML, and the CLI's parser imports a module
    # that uses this one (exports.dataset_card) before any command runs.
    from selfinstruct.config import read_user_file, read_yaml_mapping

    path = run / CONFIG_FILE
    if not path.is_file():
        return {}
    return read_yaml_mapping(read_user_file(path, RunFileError), str(path), RunFileError)


def config_section(config: dict[str, Any], key: str) -> dict[str, Any]:
    """A section of an unvalidated config (`backend`, `filters`, ...); {} when absent or not a mapping."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def recorded_backend(run: Path) -> dict[str, Any] | None:
    """The `backend` section of the config.yaml of `run` (what the output mode was settled
    for), or None when the file cannot be read: probing the server again is always safe."""
    try:
        return config_section(read_run_config(run), "backend")
    except RunFileError:
        return None
