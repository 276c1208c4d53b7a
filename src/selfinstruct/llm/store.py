"""The durable response store: every model answer a run has received, keyed by request.

The store is the truth a run resumes from: a request whose key is here is never sent
again, and stages re-parse stored answers without calling the model. SQLite in WAL mode
with synchronous=FULL, so a `put` that returned survives a crash or a power cut.
One connection, guarded by a lock, serves all the engine's worker threads.

Group commit: a synced commit costs a disk flush (1-4 ms on the development machine), so
one commit per answer makes concurrent workers queue behind each other's flushes. Instead,
`put`s that arrive while a commit is being flushed wait together and go into the next
transaction, one flush for all of them (64 writer threads: ~2,000 puts/s with a commit
each, ~9,000 grouped). Every caller still returns only after its own row is committed:
durability per answer is unchanged.
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
from selfinstruct.llm.types import Completion

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
        self._lock = threading.Lock()  # the connection
        # Group commit: rows waiting for the next transaction, and which batch is being
        # written or was written last (a put waits until its batch is committed).
        self._queue = threading.Condition(threading.Lock())
        self._pending: list[tuple[str, str, str, str, float]] = []
        self._batch = 0  # the batch that pending rows will be committed in
        self._committed = -1  # the last batch committed (or failed)
        self._writing = False
        self._failures: dict[int, BaseException] = {}
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
        # A store that was empty when opened holds only rows this version wrote, under the keys
        # it computes: nothing in it can be under an older version's key (engine.lookup).
        self.opened_empty = self._db.execute("SELECT 1 FROM responses LIMIT 1").fetchone() is None
        # Lookups have a connection of their own: in WAL mode a reader never waits for a
        # writer, so a lookup does not queue behind a commit's fsync.
        self._read_lock = threading.Lock()
        self._reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        # Every key in the store, read at the first lookup and kept up to date by put(): a
        # request never sent before (every request of a fresh run) is a miss without a query.
        # A query would release the GIL and, with a hundred request threads about, wait to
        # get it back: about 1.4 ms of the bootstrap's one filtering thread per prompt.
        self._known: set[str] | None = None

    def get(self, key: str) -> Completion | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        with self._read_lock:
            if self._known is None:
                self._known = {key for (key,) in self._reader.execute("SELECT key FROM responses")}
            unique = [key for key in dict.fromkeys(keys) if key in self._known]
            for start in range(0, len(unique), _LOOKUP_CHUNK):
                chunk = unique[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._reader.execute(
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
        with self._queue:
            self._pending.append(row)
            mine = self._batch
            # Wait until our batch is committed, or until no one is writing: then we write
            # everything pending (ours and whatever arrived meanwhile) as the next batch.
            while self._committed < mine and self._writing:
                self._queue.wait()
            if self._committed >= mine:
                self._raise_if_failed(mine)
                return
            rows, self._pending = self._pending, []
            self._batch += 1
            self._writing = True
        failure: BaseException | None = None
        try:
            self._write(rows)
        except BaseException as exc:
            failure = exc
        else:
            with self._read_lock:  # after the commit, so a lookup that finds the key finds the row
                if self._known is not None:
                    self._known.update(row[0] for row in rows)
        with self._queue:
            if failure is not None:
                self._failures[mine] = failure
            self._committed = mine
            self._writing = False
            self._queue.notify_all()
        if failure is not None:
            raise failure

    def _write(self, rows: list[tuple[str, str, str, str, float]]) -> None:
        """One transaction for `rows`, synced to disk before it returns."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO responses (key, stage, request_json, completion_json, created) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _raise_if_failed(self, batch: int) -> None:
        failure = self._failures.get(batch)
        if failure is None:
            return
        # Each waiting caller gets its own exception (one object raised in several threads
        # would share and grow one traceback).
        if isinstance(failure, sqlite3.Error):
            raise type(failure)(*failure.args) from failure
        raise sqlite3.OperationalError(f"the commit of this response failed: {failure!r}") from failure

    def count(self, stage: str | None = None) -> int:
        with self._lock:
            if stage is None:
                (n,) = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()
            else:
                (n,) = self._db.execute("SELECT COUNT(*) FROM responses WHERE stage = ?", (stage,)).fetchone()
        return int(n)

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResponseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
