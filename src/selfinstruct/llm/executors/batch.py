"""`--batch`: the stateless stages through a provider's Batch API, at its discount, resumably.

For a stage's pending requests (base.py) it writes one batch request per store key (the
`custom_id`), cuts them into batches within the provider's limits, makes one batch of each,
polls them with a progress bar, and hands each answer to the engine, which stores it. Lines
a batch did not run (it expired, was cancelled or failed) and lines that failed with a 5xx,
a 429 or an overloaded API go into a new batch, up to `max_retries` more rounds; a request
the API refused (a 400) fails at once.

The providers (OpenAI's files and batches, Anthropic's Message Batches) differ only in what
`BatchApi` (batch_api.py) hides. Nothing is paid for twice, whatever stops the process,
because every step is written to `RUN/batches.jsonl` (batch_journal.py) before it is taken:

* `prepared` (the requests' ref and keys) before any batch is made;
* `creating` before each create is sent, and `created` (the batch id) before waiting: a run
  stopped while polling, or started again hours later, polls the same batches. A create
  whose answer was lost (a crash, a dropped connection) may have gone through: before
  sending it again, the API is asked for the batch it made (`find`);
* `collected` once its answers are stored: its keys are then answered from the store.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.batch_api import BatchApi, BatchState, split_within
from selfinstruct.llm.executors.base import Answered, Failed, Retried
from selfinstruct.llm.executors.batch_journal import BatchJournal, JournalBatch
from selfinstruct.llm.types import Backend, CompletionRequest
from selfinstruct.rundir import BATCHES_FILE

T = TypeVar("T")


def batch_api_for(config: BackendConfig, backend: Backend) -> BatchApi:
    """The Batch API of the provider that `backend` talks to."""
    from selfinstruct.llm.anthropic.batches import MessageBatches
    from selfinstruct.llm.anthropic.client import AnthropicBackend
    from selfinstruct.llm.openai.batches import OpenAIBatches
    from selfinstruct.llm.openai.client import OpenAIBackend

    if isinstance(backend, OpenAIBackend):
        return OpenAIBatches(backend, config.api)
    if isinstance(backend, AnthropicBackend):
        return MessageBatches(backend)
    raise BackendError("--batch needs --backend openai or anthropic with one --base-url (the provider's API)")


class BatchExecutor:
    name = "batch"
    shows_progress = True  # it polls for hours, and shows that

    def __init__(
        self,
        config: BackendConfig,
        backend: Backend,
        folder: Path,
        progress: bool = True,
        api: BatchApi | None = None,
    ) -> None:
        self._api = api or batch_api_for(config, backend)
        self._journal_path = folder / BATCHES_FILE
        self._poll_s = config.batch_poll_s
        self._rounds = config.max_retries + 1
        self._progress = progress
        # The lines of the batches prepared by this process (a resumed one rebuilds them).
        self._lines: dict[str, list[bytes]] = {}
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
            batches += self._prepare(stage, new, journal)
            for entry in batches:
                if entry.batch_id is None:
                    self._create(entry, journal, todo)
            for entry, state in self._wait(stage, batches):
                seen = set()
                for outcome in self._retrying(partial(self._api.results, state)):
                    seen.add(outcome.key)
                    if outcome.key not in todo:
                        continue  # stored since, or not asked for in this invocation
                    if outcome.completion is not None:
                        answered(outcome.key, outcome.completion)
                    elif not outcome.retryable:  # a 400: sending it again would fail again
                        failed(outcome.key, f"batch: {outcome.reason}", round_ + 1)
                    else:
                        reasons[outcome.key] = outcome.reason or "failed"
                        continue
                    del todo[outcome.key]
                for key in entry.keys:
                    if key in todo and key not in seen:  # e.g. the batch failed validation
                        reasons[key] = f"batch {state.status} without running it"
                journal.collected(entry)
        for key in todo:
            failed(
                key, f"batch: {reasons.get(key, 'not answered')} (after {self._rounds} rounds)", self._rounds
            )

    def close(self) -> None:
        self._api.close()

    # -- steps -----------------------------------------------------------------------------

    def _prepare(
        self, stage: str, new: list[tuple[str, CompletionRequest]], journal: BatchJournal
    ) -> list[JournalBatch]:
        keys = [key for key, _ in new]
        lines = [self._api.line(key, request) for key, request in new]
        made = []
        start = 0
        for chunk in split_within(lines, self._api.max_requests, self._api.max_bytes):
            ref = self._retrying(partial(self._api.prepare, stage, chunk))
            self._lines[ref] = chunk
            made.append(journal.prepared(stage, ref, keys[start : start + len(chunk)]))
            start += len(chunk)
        return made

    def _create(self, entry: JournalBatch, journal: BatchJournal, todo: dict[str, CompletionRequest]) -> None:
        lines = self._lines.pop(entry.ref, None)
        fresh = lines is not None  # prepared by this process: no create was sent before
        if lines is None:  # prepared by a run that stopped: the same requests, as far as still owed
            lines = [self._api.line(key, todo[key]) for key in entry.keys if key in todo]
        for attempt in range(_ATTEMPTS):
            try:
                batch_id = None
                if attempt or not fresh:  # an earlier create may have gone through, its answer lost
                    batch_id = self._api.find(entry.ref, entry.tried, journal.batch_ids())
                if batch_id is None:
                    journal.creating(entry, time.time(), len(lines))
                    batch_id = self._api.create(entry.ref, entry.stage, lines)
            except RetryableBackendError:
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(_backoff(attempt))
                continue
            journal.created(entry, batch_id)
            return

    def _wait(self, stage: str, batches: list[JournalBatch]) -> Iterator[tuple[JournalBatch, BatchState]]:
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
                    state = self._retrying(partial(self._api.poll, entry.batch_id))
                    if state.ended:
                        waiting.remove(entry)
                        done_before += len(entry.keys)
                        yield entry, state
                    else:
                        progress += state.done
                bar.n = min(total, done_before + progress)
                bar.refresh()
                if waiting:
                    time.sleep(self._poll_s)
        finally:
            bar.close()

    def _retrying(self, call: Callable[[], T]) -> T:
        """An API call, tried again after a transient failure (a 5xx, a dropped connection)."""
        for attempt in range(_ATTEMPTS):
            try:
                return call()
            except RetryableBackendError:
                if attempt == _ATTEMPTS - 1:
                    raise
                time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")


_ATTEMPTS = 5


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2**attempt)
