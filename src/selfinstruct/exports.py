"""Fine-tuning data in the formats other tools read: Alpaca JSON, ShareGPT, OpenAI messages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfinstruct.records import Triple, dumps, write_atomic
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
    """Write the three export files; returns their paths by format name."""
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
    return paths


ROLES = frozenset({"system", "user", "assistant"})
# OpenAI's fine-tuning API refuses a training file with fewer examples than this.
OPENAI_MIN_EXAMPLES = 10


def openai_record_problem(record: Any) -> str | None:
    """Why a record is not a valid chat fine-tuning example, or None if it is."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        return "needs a 'messages' list"
    messages = record["messages"]
    if not messages:
        return "'messages' is empty"
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"messages[{n}] needs a role of {sorted(ROLES)}"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"messages[{n}] ({message['role']}) has empty content"
    if messages[-1]["role"] != "assistant":
        return "the last message must be the assistant's"
    if not any(m["role"] == "user" for m in messages):
        return "needs a user message"
    return None


def write_openai_finetuning_file(
    path: Path, triples: Iterable[Triple], system: str | None = None
) -> tuple[int, int]:
    """Write only valid chat examples; returns (written, skipped). Empty outputs are skipped."""
    rows, skipped = [], 0
    for triple in triples:
        record = openai_record(triple, system)
        if openai_record_problem(record) is None:
            rows.append(dumps(record) + "\n")
        else:
            skipped += 1
    write_atomic(path, rows)
    return len(rows), skipped
