"""Executors: something other than this process's threads that sends a stage's requests.

The request engine always answers what the store holds itself, and always stores what
comes back itself: an executor only gets the requests still pending, each with its store
key, and hands every outcome back through the engine's callbacks, one at a time, as it
arrives. So resume, determinism, `failed.jsonl` and the accounting are the engine's, the
same whoever sent the requests, and an executor interrupted halfway loses only what was
in flight.

An executor handles the stateless stages: those that send a batch at once (`engine.run`),
each request standing alone. A stage whose prompts depend on earlier answers (the
bootstrap, Alpaca's one-stage variant) streams them (`engine.stream`), which always runs
in this process: that choice, not the stage's name, is what keeps it here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from selfinstruct.llm.types import Completion, CompletionRequest

# (key, completion): an answer, to be stored under `key`.
Answered = Callable[[str, Completion], None]
# (key, reason, attempts): a request that failed for good in this invocation.
Failed = Callable[[str, str, int], None]
# (key, reason): a request sent again after a try that failed (a batch's next round).
Retried = Callable[[str, str], None]


class Executor(Protocol):
    name: str  # in messages and the progress bar: "ray", "batch"
    # What its answers cost against the online price (a provider's batch: 1 - its discount).
    price_factor: float
    # It shows its own progress (a batch polls for hours); the engine then shows no bar.
    shows_progress: bool

    def execute(
        self,
        stage: str,
        pending: Sequence[tuple[str, CompletionRequest]],
        answered: Answered,
        failed: Failed,
        retried: Retried,
    ) -> None:
        """Send every pending request and report each one's outcome exactly once, and each
        time it sends one again (what the summary counts as a retry).

        A request it could not report (the job died) is reported failed by the engine.
        """
        ...

    def close(self) -> None: ...


def hand_over(
    executor: Executor,
    stage: str,
    pending: dict[str, CompletionRequest],
    accept: Answered,
    reject: Failed,
    retry: Retried,
) -> None:
    """Send `pending` (store key -> request) through `executor`; every key's outcome reaches
    `accept` or `reject` exactly once, whatever the executor reports, and each time it is
    sent again, `retry`.

    An outcome for a key not asked for, or reported a second time, is dropped: an answer is
    stored once and counted once. So is a retry of a key not asked for or already settled.
    A key the executor never reported is rejected.
    """
    settled: set[str] = set()

    def answered(key: str, completion: Completion) -> None:
        if key in pending and key not in settled:
            settled.add(key)
            accept(key, completion)

    def failed(key: str, reason: str, attempts: int) -> None:
        if key in pending and key not in settled:
            settled.add(key)
            reject(key, reason, attempts)

    def retried(key: str, reason: str) -> None:
        if key in pending and key not in settled:
            retry(key, reason)

    executor.execute(stage, list(pending.items()), answered, failed, retried)
    for key in pending:
        failed(key, f"{executor.name}: no result came back", 1)
