"""`--batch`: the stateless stages through a provider's Batch API, at its discount, resumably.

For a stage's pending requests (base.py) it writes one JSONL line per request
(custom_id = the store key), uploads files within the provider's limits, creates one batch
per file, polls them with a progress bar, and hands each answer to the engine, which stores
it. Lines a batch did not run (it expired, was cancelled or failed) and lines that failed
with a 5xx or 429 go into a new batch, up to `max_retries` more rounds; a 400 fails at once.

Nothing is paid for twice, whatever stops the process, because every step is written to
`RUN/batches.jsonl` (fsynced) before the next one starts:

* `uploaded` (the file id and its keys) before the batch is created: a run that died between
  upload and create finds the file there, asks the provider whether a batch was made from
  it (the create may have gone through before the crash) and creates one only if not;
* `created` (the batch id) before waiting: a run stopped while polling, or started again
  hours later, polls the same batches instead of sending the requests again;
* `collected` once its answers are stored: its keys are then answered from the store.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.files import append_line
from selfinstruct.llm.executors.base import Answered, Failed, Retried
from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.openai.batches import TERMINAL, BatchClient, batch_line, read_results, split_into_files
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.types import Backend, CompletionRequest
from selfinstruct.rundir import BATCHES_FILE


@dataclass
class JournalBatch:
    stage: str
    file_id: str
    keys: list[str]
    batch_id: str | None = None
    collected: bool = False


@dataclass
class BatchJournal:
    """RUN/batches.jsonl: append-only, one event per line, synced before the next step."""

    path: Path
    batches: dict[str, JournalBatch] = field(default_factory=dict)  # by file id

    def __post_init__(self) -> None:
        if not self.path.exists():
            return
        for raw in self.path.read_text("utf-8").splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # a line cut by a crash: its step is done again
            self._apply(event)

    def open_for(self, stage: str) -> list[JournalBatch]:
        return [b for b in self.batches.values() if b.stage == stage and not b.collected]

    def uploaded(self, stage: str, file_id: str, keys: list[str]) -> JournalBatch:
        return self._write({"event": "uploaded", "stage": stage, "file_id": file_id, "keys": keys})

    def created(self, entry: JournalBatch, batch_id: str) -> None:
        self._write({"event": "created", "file_id": entry.file_id, "batch_id": batch_id})

    def collected(self, entry: JournalBatch) -> None:
        self._write({"event": "collected", "file_id": entry.file_id})

    def _write(self, event: dict[str, Any]) -> JournalBatch:
        append_line(self.path, json.dumps(event))
        return self._apply(event)

    def _apply(self, event: dict[str, Any]) -> JournalBatch:
        if event["event"] == "uploaded":
            entry = JournalBatch(event["stage"], event["file_id"], list(event["keys"]))
            self.batches[entry.file_id] = entry
            return entry
        entry = self.batches[event["file_id"]]
        if event["event"] == "created":
            entry.batch_id = event["batch_id"]
        elif event["event"] == "collected":
            entry.collected = True
        return entry


class BatchExecutor:
    name = "batch"
    shows_progress = True  # it polls for hours, and shows that

    def __init__(self, config: BackendConfig, backend: Backend, folder: Path, progress: bool = True) -> None:
        if not isinstance(backend, OpenAIBackend):
            raise BackendError("--batch needs --backend openai with one --base-url (the provider's API)")
        self._backend = backend
        self._api = config.api
        self._client = BatchClient(backend.base_url, backend.headers())
        self._journal_path = folder / BATCHES_FILE
        self._poll_s = config.batch_poll_s
        self._rounds = config.max_retries + 1
        self._progress = progress
        # Accounting: what a batch answer costs against the online price.
        self.price_factor = 1.0 - config.batch_discount

    def execute(
        self,
        stage: str,
        pending: Sequence[tuple[str, CompletionRequest]],
        answered: Answered,
        failed: Failed,
        retried: Retried,
    ) -> None:
        todo = dict(pending)
        reasons: dict[str, str] = {}
        journal = BatchJournal(self._journal_path)
        for round_ in range(self._rounds):
            if not todo:
                return
            batches = [b for b in journal.open_for(stage) if any(k in todo for k in b.keys)]
            covered = {k for b in batches for k in b.keys}
            new = [(k, r) for k, r in todo.items() if k not in covered]
            for key, _ in new if round_ else ():  # a line the last round did not answer, sent again
                retried(key, reasons.get(key, "not answered"))
            batches += self._upload(stage, new, journal)
            for entry in batches:
                if entry.batch_id is None:
                    self._create(entry, journal)
            for entry, status in self._wait(stage, batches):
                for key, kind, value in self._collect(entry, status):
                    if key not in todo:
                        continue  # stored since, or not asked for in this invocation
                    if kind == "answer":
                        answered(key, value)
                    elif kind == "permanent":  # a 400: sending it again would fail again
                        failed(key, f"batch: {value}", round_ + 1)
                    else:
                        reasons[key] = value
                        continue
                    del todo[key]
                journal.collected(entry)
        for key in todo:
            failed(
                key, f"batch: {reasons.get(key, 'not answered')} (after {self._rounds} rounds)", self._rounds
            )

    def close(self) -> None:
        self._client.close()

    # -- steps -----------------------------------------------------------------------------

    def _upload(
        self, stage: str, new: list[tuple[str, CompletionRequest]], journal: BatchJournal
    ) -> list[JournalBatch]:
        if not new:
            return []
        lines, keys = [], []
        for key, request in new:
            path, body = self._backend.request_body(request)
            lines.append(batch_line(key, path, body))
            keys.append(key)
        made = []
        start = 0
        for chunk in split_into_files(lines):
            chunk_keys = keys[start : start + len(chunk)]
            start += len(chunk)
            file_id = self._retrying(lambda c=chunk: self._client.upload(b"".join(c), f"{stage}.jsonl"))
            made.append(journal.uploaded(stage, file_id, chunk_keys))
        return made

    def _create(self, entry: JournalBatch, journal: BatchJournal) -> None:
        # The create may have gone through before a crash lost its answer: ask first.
        found = self._retrying(lambda: self._client.find(entry.file_id))
        if found is None:
            endpoint = "/v1/chat/completions" if self._api == "chat" else "/v1/completions"
            metadata = {"selfinstruct_stage": entry.stage, "selfinstruct_file": entry.file_id}
            found = self._retrying(lambda: self._client.create(entry.file_id, endpoint, metadata))
        journal.created(entry, str(found["id"]))

    def _wait(self, stage: str, batches: list[JournalBatch]) -> Iterator[tuple[JournalBatch, dict[str, Any]]]:
        """Each batch once it has ended, polling every `batch_poll_s`."""
        from tqdm import tqdm

        total = sum(len(b.keys) for b in batches)
        show = self._progress and sys.stderr.isatty()
        bar = tqdm(total=total, desc=f"{stage} (batch)", unit="req", file=sys.stderr, disable=not show)
        waiting = list(batches)
        done_before = 0
        try:
            while waiting:
                progress = 0
                for entry in list(waiting):
                    assert entry.batch_id is not None
                    status = self._retrying(lambda e=entry: self._client.get(str(e.batch_id)))
                    counts = status.get("request_counts") or {}
                    progress += int(counts.get("completed", 0)) + int(counts.get("failed", 0))
                    if status.get("status") in TERMINAL:
                        waiting.remove(entry)
                        done_before += len(entry.keys)
                        yield entry, status
                bar.n = min(total, done_before + progress)
                bar.refresh()
                if waiting:
                    time.sleep(self._poll_s)
        finally:
            bar.close()

    def _collect(self, entry: JournalBatch, status: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
        """(key, "answer", Completion), (key, "permanent", reason) or (key, "retry", reason)."""
        seen: set[str] = set()
        for file_field in ("output_file_id", "error_file_id"):
            file_id = status.get(file_field)
            if not file_id:
                continue
            content = self._retrying(lambda f=file_id: self._client.content(str(f)))
            for line in read_results(content):
                seen.add(line.custom_id)
                if line.body is not None:
                    try:
                        yield line.custom_id, "answer", parse_answer(line.body, self._api)
                    except RetryableBackendError as exc:  # a 200 that is no answer
                        yield line.custom_id, "retry", str(exc)
                else:
                    yield line.custom_id, "retry" if line.retryable else "permanent", line.error or "failed"
        for key in entry.keys:
            if key not in seen:  # the batch failed before running it (e.g. validation)
                yield key, "retry", f"batch {status.get('status')}"

    def _retrying(self, call: Any, attempts: int = 5) -> Any:
        """An API call, tried again after a transient failure (a 5xx, a dropped connection)."""
        for attempt in range(attempts):
            try:
                return call()
            except RetryableBackendError:
                if attempt == attempts - 1:
                    raise
                time.sleep(min(30.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")
