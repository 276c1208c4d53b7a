"""Executors: something other than this process's threads that sends a stage's requests.

The request engine always answers what the store holds itself, and always stores what
comes back itself: an executor only gets the requests still pending, each with its store
key, and hands every outcome back through the engine's callbacks, one at a time, as it
arrives. So resume, determinism, `failed.jsonl` and the accounting are the engine's, the
same whoever sent the requests, and an executor interrupted halfway loses only what was
in flight.

An executor handles the stateless stages (each request stands alone). The bootstrap is
never handed over: each of its prompts depends on the answers filtered before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from selfinstruct.llm.base import Completion, CompletionRequest

# The bootstrap's stage name; its requests stay with the engine (see above).
STATEFUL_STAGES = frozenset({"bootstrap"})

# (key, completion): an answer, to be stored under `key`.
Answered = Callable[[str, Completion], None]
# (key, reason, attempts): a request that failed for good in this invocation.
Failed = Callable[[str, str, int], None]


class Executor(Protocol):
    name: str

    def execute(
        self, stage: str, pending: Sequence[tuple[str, CompletionRequest]], answered: Answered, failed: Failed
    ) -> None:
        """Send every pending request and report each one's outcome exactly once.

        A request it could not report (the job died) is reported failed by the engine.
        """
        ...

    def close(self) -> None: ...
