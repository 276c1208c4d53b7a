"""executors/base.py: an executor's outcomes reach the engine exactly once per pending request."""

from __future__ import annotations

from collections.abc import Sequence

from selfinstruct.config import GenerationParams
from selfinstruct.llm.executors.base import Answered, Failed, Retried, hand_over
from selfinstruct.llm.types import Completion, CompletionRequest

PARAMS = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)


class Careless:
    """Reports an answer twice, one for a key never asked, a failure and a retry after an answer, and skips one."""

    name = "careless"
    price_factor = 1.0
    shows_progress = False

    def execute(
        self,
        stage: str,
        pending: Sequence[tuple[str, CompletionRequest]],
        answered: Answered,
        failed: Failed,
        retried: Retried,
    ) -> None:
        (k1, _), (k2, _), _skipped = pending
        retried(k2, "expired")
        retried("not-asked", "expired")
        answered(k1, Completion("one", "stop"))
        answered(k1, Completion("one again", "stop"))
        failed(k1, "too late", 1)
        answered("not-asked", Completion("stray", "stop"))
        retried(k1, "after its answer")
        failed(k2, "refused", 2)

    def close(self) -> None: ...


def test_each_pending_request_is_settled_once_and_the_unreported_ones_fail() -> None:
    pending = {key: CompletionRequest(key, PARAMS) for key in ("a", "b", "c")}
    accepted: list[tuple[str, str]] = []
    rejected: list[tuple[str, str, int]] = []
    retried: list[tuple[str, str]] = []
    hand_over(
        Careless(),
        "classify",
        pending,
        lambda key, completion: accepted.append((key, completion.text)),
        lambda key, reason, attempts: rejected.append((key, reason, attempts)),
        lambda key, reason: retried.append((key, reason)),
    )
    assert retried == [("b", "expired")]  # neither a key not asked for nor one already answered
    assert accepted == [("a", "one")]
    assert rejected == [("b", "refused", 2), ("c", "careless: no result came back", 1)]
