"""When to hedge a request that runs long: from the latencies seen so far, within a budget.

A request that has not answered after `factor` x the recent 95th-percentile latency of its
stage is probably stuck (a hung connection, a lost packet, an overloaded replica). Waiting
for its timeout would hold up everything that waits on it, so the engine sends the same
request again beside it and takes whichever good answer comes first ("The Tail at Scale",
Dean and Barroso, 2013). The extra requests are capped at `budget` of the requests sent,
so a slow server is not hit twice as hard; the per-request timeout stays the hard limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import TypeVar

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.stream import StreamAborted, run_in_daemon_thread

T = TypeVar("T")
# How often a waiting race looks at a delay not known yet, and at the abort event.
_IDLE_CHECK_S = 0.25


@dataclass(frozen=True)
class HedgePolicy:
    budget: float = 0.05  # hedges per request sent, at most (0 = never hedge)
    min_samples: int = 20  # latencies seen before the first hedge
    quantile: float = 0.95
    factor: float = 2.0
    min_delay_s: float = 0.05

    def allows(self, hedged: int, sent: int) -> bool:
        """One more hedge keeps the hedges within the budget."""
        return self.budget > 0 and hedged + 1 <= self.budget * sent


class LatencyWindow:
    """The latest successful call latencies of one stage (thread-safe)."""

    def __init__(self, size: int = 256) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._cached: tuple[HedgePolicy, float | None] | None = None  # cleared by add()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)
            self._cached = None

    def hedge_delay(self, policy: HedgePolicy) -> float | None:
        """Seconds after which a call is hedged, or None while too few latencies are known."""
        with self._lock:
            if self._cached is not None and self._cached[0] == policy:
                return self._cached[1]
            delay = None
            if len(self._values) >= policy.min_samples:
                ordered = sorted(self._values)
                at = ordered[min(len(ordered) - 1, int(policy.quantile * len(ordered)))]
                delay = max(policy.min_delay_s, policy.factor * at)
            self._cached = (policy, delay)
            return delay


def race(
    attempt: Callable[[threading.Event], T],
    delay: Callable[[], float | None],
    may_hedge: Callable[[], bool],
    hedge_won: Callable[[], None],
    abort: threading.Event,
) -> T:
    """`attempt(abandoned)` on a daemon thread; if it has not ended `delay()` seconds after it
    started and `may_hedge()`, a second one beside it. `delay()` is asked again while the
    first runs (None = not known yet), so the very first requests of a stage are hedged
    too once others have answered. The first result wins; a retryable error is raised only
    when every attempt failed, any other error at once. `abandoned` is set when the race
    is over, so that a late loser knows nobody waits for it.
    """
    abandoned = threading.Event()
    started = time.monotonic()
    first: Future[T] = run_in_daemon_thread(attempt, abandoned)
    running = [first]
    hedged = False
    error: BaseException | None = None
    try:
        while running:
            for ended in [a for a in running if a.done()]:
                running.remove(ended)
                exc = ended.exception()
                if exc is None:
                    if ended is not first:
                        hedge_won()
                    return ended.result()
                if not isinstance(exc, RetryableBackendError):
                    raise exc
                error = exc
            if not running:
                break
            if abort.is_set():
                raise StreamAborted
            timeout = _IDLE_CHECK_S
            if not hedged and running == [first]:
                after = delay()
                if after is not None:
                    left = started + after - time.monotonic()
                    if left <= 0:
                        hedged = True
                        if may_hedge():
                            running.append(run_in_daemon_thread(attempt, abandoned))
                    else:
                        timeout = min(timeout, left)
            # Wakes at an answer, at the hedge time, or now and then to look at the delay
            # (still unknown at a stage's start) and the abort event.
            wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
    finally:
        abandoned.set()
    assert error is not None
    raise error
