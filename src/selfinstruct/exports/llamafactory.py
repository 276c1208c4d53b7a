"""LLaMA-Factory's `dataset_info.json` for a run's finetuning_data/.

LLaMA-Factory finds a dataset by name in the `dataset_info.json` of its `dataset_dir`; each
entry names a file in that folder and says which keys hold the prompt and the answer. With
this file, `dataset_dir: RUN/finetuning_data` and `dataset: selfinstruct_<run>_alpaca` train
on the run's data as it is, no copying or conversion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError
from selfinstruct.files import write_atomic
from selfinstruct.rundir import (
    ALPACA_FILE,
    DATASET_INFO_FILE,
    FINETUNE_DIR,
    OPENAI_MESSAGES_FILE,
    SHAREGPT_FILE,
)

# Per export file: the entry's suffix and how LLaMA-Factory reads its records (the keys are
# those that formats.py writes).
ENTRIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "alpaca",
        ALPACA_FILE,
        {
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        },
    ),
    (
        "sharegpt",
        SHAREGPT_FILE,
        {
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        },
    ),
    (
        # OpenAI's chat layout: LLaMA-Factory reads it as sharegpt with other tag names; a
        # leading system message becomes the system prompt.
        "openai",
        OPENAI_MESSAGES_FILE,
        {
            "formatting": "sharegpt",
            "columns": {"messages": "messages"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        },
    ),
)


def entry_prefix(run: Path) -> str:
    """`selfinstruct_<run directory's name>`, kept to characters that are safe in a
    LLaMA-Factory `dataset:` list (comma-separated) and in a YAML value."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.resolve().name).strip("_.-")
    return f"selfinstruct_{name}" if name else "selfinstruct"


def dataset_info(folder: Path) -> dict[str, dict[str, Any]]:
    """The entries for the export files that `folder` (a run's finetuning_data/) holds."""
    prefix = entry_prefix(folder.resolve().parent)
    return {
        f"{prefix}_{suffix}": {"file_name": file_name, **spec}
        for suffix, file_name, spec in ENTRIES
        if (folder / file_name).is_file()
    }


def write_dataset_info(folder: Path) -> Path:
    """Write `folder`/dataset_info.json; an error if no export file is there to point at."""
    entries = dataset_info(folder)
    if not entries:
        run = folder.parent
        raise InputFileError(
            f"{folder}: no {ALPACA_FILE}, {SHAREGPT_FILE} or {OPENAI_MESSAGES_FILE}; "
            f"run `selfinstruct prepare --out {run}` first"
        )
    path = folder / DATASET_INFO_FILE
    write_atomic(path, json.dumps(entries, ensure_ascii=False, indent=2) + "\n")
    return path


def write_run_dataset_info(run: Path) -> Path:
    """`selfinstruct export llamafactory RUN`: (re)write the index of RUN's export files."""
    return write_dataset_info(run / FINETUNE_DIR)
