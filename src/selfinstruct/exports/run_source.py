"""What an export reads from a run directory: its Alpaca triples (config and summary: `rundir_reader`)."""

from __future__ import annotations

import json
from pathlib import Path

from selfinstruct.errors import InputFileError
from selfinstruct.records import Triple
from selfinstruct.rundir import ALPACA_FILE, FINETUNE_DIR


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
