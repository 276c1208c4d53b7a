"""What an export reads from a run directory: its Alpaca triples, config and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError
from selfinstruct.records import Triple
from selfinstruct.rundir import ALPACA_FILE, CONFIG_FILE, FINETUNE_DIR, SUMMARY_FILE


def read_triples(run: Path) -> list[Triple]:
    """The run's fine-tuning triples, from finetuning_data/alpaca_data.json."""
    source = run / FINETUNE_DIR / ALPACA_FILE
    if not source.is_file():
        raise InputFileError(f"{source}: not found; run `selfinstruct prepare --out {run}` first")
    try:
        rows = json.loads(source.read_text("utf-8"))
        return [Triple.from_json(row) for row in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{source}: not a list of instruction/input/output records ({exc})") from None


def read_config(run: Path) -> dict[str, Any]:
    """The run's resolved config.yaml; empty when there is none (a reference batch dir)."""
    import yaml

    path = run / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputFileError(f"{path}: not readable YAML ({exc})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: not a mapping of config sections")
    return data


def read_summary(run: Path) -> dict[str, Any]:
    """The run's summary.json (its funnel); empty when there is none."""
    path = run / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputFileError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: not a JSON object")
    return data
