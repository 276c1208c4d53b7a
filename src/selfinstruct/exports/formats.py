"""The three record shapes of a run's fine-tuning data: Alpaca JSON, ShareGPT, OpenAI messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfinstruct.exports.llamafactory import write_dataset_info
from selfinstruct.files import write_atomic
from selfinstruct.records import Triple, dumps
from selfinstruct.rundir import ALPACA_FILE, OPENAI_MESSAGES_FILE, SHAREGPT_FILE


def user_turn(triple: Triple) -> str:
    """The instruction, then the input (if any) after a blank line: one user message."""
    return f"{triple.instruction}\n\n{triple.input}" if triple.input else triple.instruction


def alpaca_record(triple: Triple) -> dict[str, str]:
    return {"instruction": triple.instruction, "input": triple.input, "output": triple.output}


def sharegpt_record(triple: Triple) -> dict[str, Any]:
    return {
        "conversations": [
            {"from": "human", "value": user_turn(triple)},
            {"from": "gpt", "value": triple.output},
        ]
    }


def openai_record(triple: Triple, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": user_turn(triple)},
        {"role": "assistant", "content": triple.output},
    ]
    return {"messages": messages}


def write_exports(folder: Path, triples: Iterable[Triple], system: str | None = None) -> dict[str, Path]:
    """Write the three export files and LLaMA-Factory's index of them; returns their paths by format.

    `folder` is a run's finetuning_data/: the index names its entries after the run directory.
    """
    items = list(triples)
    paths = {
        "alpaca": folder / ALPACA_FILE,
        "sharegpt": folder / SHAREGPT_FILE,
        "openai": folder / OPENAI_MESSAGES_FILE,
    }
    write_atomic(
        paths["alpaca"], json.dumps([alpaca_record(t) for t in items], ensure_ascii=False, indent=4) + "\n"
    )
    write_atomic(paths["sharegpt"], (dumps(sharegpt_record(t)) + "\n" for t in items))
    write_atomic(paths["openai"], (dumps(openai_record(t, system)) + "\n" for t in items))
    write_dataset_info(folder)
    return paths
