"""The chat fine-tuning file for OpenAI's API: only examples the API accepts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfinstruct.exports.formats import openai_record
from selfinstruct.files import write_atomic
from selfinstruct.records import Triple, dumps

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
