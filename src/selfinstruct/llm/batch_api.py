"""A provider's Batch API, as the batch executor (executors/batch.py) uses it.

Two providers have one, and they differ in how a batch is made:

- OpenAI (openai/batches.py): the requests are uploaded as a JSONL file to `/v1/files`, then
  a batch is made from the file; the batch names its file, so a batch whose id a crash lost
  is found by its file id;
- Anthropic (anthropic/batches.py): the requests travel in the create itself
  (`POST /v1/messages/batches`); a batch names nothing of ours, so a lost one is found by
  its size and the time it was made.

Everything else the executor does the same way for both: the journal, the rounds, the polling
and handing each answer to the engine. `BatchApi` is what it needs of a provider; a request's
`custom_id` is always its store key.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from selfinstruct.errors import BackendError
from selfinstruct.llm.types import Completion, CompletionRequest


@dataclass(frozen=True)
class BatchState:
    """A batch as one poll found it."""

    batch_id: str
    status: str  # the provider's word for it, in messages
    ended: bool  # nothing more will run: its results can be read
    done: int  # requests finished so far (answered or failed), for the progress bar
    raw: dict[str, Any]  # the provider's batch object, for results()


@dataclass(frozen=True)
class LineOutcome:
    """One request's result in an ended batch: an answer, or why there is none."""

    key: str  # its custom_id
    completion: Completion | None
    reason: str | None = None
    # Worth sending again (a 5xx, an overloaded API, a line the batch never ran, a 200 that
    # is no answer); a request the API refused (a 400) would fail again.
    retryable: bool = True


class BatchApi(Protocol):
    max_requests: int  # per batch
    max_bytes: int  # per batch, the lines' bytes

    def line(self, key: str, request: CompletionRequest) -> bytes:
        """`request` as one request of a batch, its custom_id `key`."""
        ...

    def prepare(self, stage: str, lines: Sequence[bytes]) -> str:
        """What the journal knows these lines by until their batch exists (its `ref`)."""
        ...

    def create(self, ref: str, stage: str, lines: Sequence[bytes]) -> str:
        """Make the batch of `lines` (prepared as `ref`); its id."""
        ...

    def find(self, ref: str, tried: Sequence[tuple[float, int]], claimed: Collection[str]) -> str | None:
        """The id of a batch made for `ref` whose answer was lost, or None. `tried`: (wall
        clock, requests) of each create sent for it; `claimed`: batch ids that belong to
        other entries of the journal."""
        ...

    def poll(self, batch_id: str) -> BatchState: ...

    def results(self, state: BatchState) -> list[LineOutcome]:
        """Every result of an ended batch, in any order; a request it does not mention was
        not run."""
        ...

    def close(self) -> None: ...


def split_within(lines: Sequence[bytes], max_requests: int, max_bytes: int) -> list[list[bytes]]:
    """The lines in order, cut into batches within both limits; one line over max_bytes is an error."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if len(line) > max_bytes:
            raise BackendError(f"one batch request is {len(line)} bytes, over the batch limit of {max_bytes}")
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        batches.append(current)
    return batches
