"""failed.jsonl: the requests that still failed after every retry, one JSON line each.

A failed request is never stored, so the next run sends it again; this log says which ones
failed and why, for the user (the CLI names the file) and for the run's summary. Each line
is synced before the engine goes on: a crash never loses the reason of a failure it counted.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from selfinstruct.files import append_line
from selfinstruct.llm.types import CompletionRequest

# Enough of the prompt to recognise it; the whole prompt is in the store's metadata of a success.
PROMPT_HEAD_CHARS = 200


class FailureLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, stage: str, key: str, request: CompletionRequest, reason: str, attempts: int) -> None:
        line = json.dumps(
            {
                "stage": stage,
                "key": key,
                "reason": reason,
                "attempts": attempts,
                "prompt_head": request.prompt[:PROMPT_HEAD_CHARS],
            },
            ensure_ascii=False,
        )
        with self._lock:
            append_line(self.path, line)
