"""The durable response store: every model answer a run has received, keyed by request.

The store is the truth a run resumes from: a request whose key is here is never sent
again, and stages re-parse stored answers without calling the model. SQLite in WAL mode
with synchronous=FULL, so a `put` that returned survives a crash or a power cut.
One connection, guarded by a lock, serves all the engine's worker threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError
from selfinstruct.llm.base import Completion

STORE_FILE_NAME = "responses.sqlite"
_COLUMNS = ["key", "stage", "request_json", "completion_json", "created"]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    request_json TEXT NOT NULL,
    completion_json TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_STAGE_INDEX = "CREATE INDEX IF NOT EXISTS responses_stage ON responses(stage)"
# SQLite caps the number of bound parameters per statement; look keys up in chunks.
_LOOKUP_CHUNK = 500


class ResponseStore:
    """Model responses keyed by `CompletionRequest.key(identity)`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise InputFileError(f"{self.path}: cannot open the response store ({exc})") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute(_STAGE_INDEX)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(responses)")]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise InputFileError(f"{self.path}: not a response store ({exc})") from None
        if columns != _COLUMNS:
            self._db.close()
            raise InputFileError(f"{self.path}: not a response store (unexpected columns {columns})")

    def get(self, key: str) -> Completion | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        unique = list(dict.fromkeys(keys))
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(unique), _LOOKUP_CHUNK):
                chunk = unique[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, completion_json FROM responses WHERE key IN ({marks})", chunk
                )
                for key, blob in rows:
                    found[key] = Completion.from_json(json.loads(blob))
        return found

    def put(self, key: str, stage: str, request_meta: dict[str, Any], completion: Completion) -> None:
        """Store one response; committed (and synced) before this returns.

        `request_meta` is the prompt, parameters and backend identity, for people reading
        the store; it must never hold a secret. A key stored already keeps its first answer.
        """
        row = (
            key,
            stage,
            json.dumps(request_meta, ensure_ascii=False, sort_keys=True),
            json.dumps(completion.to_json(), ensure_ascii=False),
            time.time(),
        )
        with self._lock:
            # Autocommit mode: the single INSERT is its own transaction, durable on return.
            self._db.execute(
                "INSERT INTO responses (key, stage, request_json, completion_json, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                row,
            )

    def count(self, stage: str | None = None) -> int:
        with self._lock:
            if stage is None:
                (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
            else:
                (n,) = self._db.execute("SELECT COUNT(*) FROM responses WHERE stage = ?", (stage,)).fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
