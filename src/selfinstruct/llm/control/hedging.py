"""When to hedge a request that runs long: from the latencies seen so far, within a budget.

A request that has not answered after `factor` x the recent 95th-percentile latency of its
stage is probably stuck (a hung connection, a lost packet, an overloaded replica). Waiting
for its timeout would hold up everything that waits on it, so the engine sends the same
request again beside it and takes whichever good answer comes first ("The Tail at Scale",
Dean and Barroso, 2013). The extra requests are capped at `budget` of the requests sent,
so a slow server is not hit twice as hard. A call still running at `give_up` x that delay
(6 x the p95 by default) is taken for lost and sent again through the retry loop, as a
timeout would be, without waiting for the timeout; the per-request timeout stays the hard
limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.threads import run_in_daemon_thread
from selfinstruct.llm.types import StreamAborted

T = TypeVar("T")
# How often a waiting race looks at a delay not known yet, and at the abort event.
_IDLE_CHECK_S = 0.25


@dataclass(frozen=True)
class HedgePolicy:
    budget: float = 0.05  # hedges per request sent, at most (0 = never hedge)
    min_samples: int = 20  # latencies seen before the first hedge
    quantile: float = 0.95
    factor: float = 2.0  # hedge after factor x the quantile
    min_delay_s: float = 0.05
    # Past give_up x the hedge delay a call is taken for lost (a hung connection): it is
    # abandoned and the request goes back to the retry loop, budget or not. The backend
    # timeout stays the hard limit for everything else.
    give_up: float = 3.0

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
        """Seconds after which a call is hedged; None before the first latency is known."""
        with self._lock:
            if self._cached is not None and self._cached[0] == policy:
                return self._cached[1]
            delay = None
            if len(self._values) >= policy.min_samples:
                ordered = sorted(self._values)
                at = ordered[min(len(ordered) - 1, int(policy.quantile * len(ordered)))]
                delay = max(policy.min_delay_s, policy.factor * at)
            elif self._values:
                # Too few for a percentile, yet a request stuck at a stage's start must not
                # wait for its timeout (everything after it may wait on it): twice the
                # delay the slowest answer so far would give.
                delay = max(policy.min_delay_s, 2 * policy.factor * max(self._values))
            self._cached = (policy, delay)
            return delay


def _not_timed() -> None:
    """`sent` of a hedge: only the first attempt's start is timed."""


def race(
    attempt: Callable[[threading.Event, Callable[[], None]], T],
    delay: Callable[[], float | None],
    may_hedge: Callable[[], bool],
    hedge_won: Callable[[], None],
    abort: threading.Event,
    give_up: float = 3.0,
    max_attempts: int = 3,
    dismissed: threading.Event | None = None,
) -> T:
    """`attempt(abandoned, sent)` on a daemon thread, and twins of it while it runs long.

    When the newest attempt still running has gone `delay()` seconds without an answer
    (the first one counted from its `sent()`, once admitted: time spent waiting for a slot
    or for the Retry-After gate is not the server's) and `may_hedge()`, one more is started
    beside it, up to `max_attempts` at once. A twin that fails fast leaves the older ones
    running and the next twin due at once; one that hangs as well gets a twin of its own
    in turn. `delay()` is asked again while they run (None = not known yet), so the very
    first requests of a stage are hedged too once others have answered, and a refusal of
    the budget is asked again a moment later (the budget grows with the requests sent).

    The first result wins. A retryable error is raised only when every attempt failed or
    the first ran past `give_up` x the delay, any other error at once. `abandoned` is set
    when the race is over, so that a late loser knows nobody waits for it.

    `abort` ends the race at once (StreamAborted), unless `dismissed` is set too: nobody
    waits for the answer then, but it is still worth storing, so the attempts running go
    on (the caller starts no twin once `abort` is set).
    """
    abandoned = threading.Event()
    sent_at: list[float] = []  # when the first attempt went out
    # Set by whatever the loop must look at: an attempt that ended, the first one sent.
    changed = threading.Event()

    def first_sent() -> None:
        sent_at.append(time.monotonic())
        changed.set()

    def start(sent: Callable[[], None]) -> Future[T]:
        future: Future[T] = run_in_daemon_thread(attempt, abandoned, sent)
        future.add_done_callback(lambda _: changed.set())
        return future

    first = start(first_sent)
    running = [first]
    twin_started: dict[Future[T], float] = {}
    error: BaseException | None = None
    try:
        while running:
            changed.clear()  # before looking: whatever happens from here on wakes the wait below
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
            if abort.is_set() and not (dismissed is not None and dismissed.is_set()):
                raise StreamAborted
            timeout = _IDLE_CHECK_S
            after = delay() if sent_at else None
            if after is not None:
                now = time.monotonic()
                elapsed = now - sent_at[0]
                if elapsed >= give_up * after:
                    raise RetryableBackendError(
                        f"no answer after {elapsed:.1f} s ({give_up:g} x the hedge delay of {after:.2f} s); "
                        "taken for lost",
                        kind="lost",
                    )
                newest = max(twin_started.get(a, sent_at[0]) for a in running)
                if now - newest < after:
                    timeout = min(timeout, newest + after - now)
                elif len(running) < max_attempts and may_hedge():
                    twin = start(_not_timed)
                    running.append(twin)
                    twin_started[twin] = now
                    timeout = min(timeout, after)
                timeout = min(timeout, max(0.0, give_up * after - elapsed))
            # Wakes when an attempt ends or the first is sent, when the next twin is due, or now
            # and then to look at the delay (still unknown at a stage's start), the budget and
            # the abort event.
            changed.wait(timeout)
    finally:
        abandoned.set()
    assert error is not None
    raise error
