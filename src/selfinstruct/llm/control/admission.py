"""Request admission: how many requests one endpoint may have in flight, right now.

A configured `concurrency` is a ceiling, not a promise: a rate-limited API or a saturated
local server answers 429, 503 or stops answering in time. The controller adapts the
number of requests it lets through, the way TCP adapts its window (AIMD):

* additive increase: after about `limit` successes in a row, one more slot, up to the ceiling;
* multiplicative decrease: on an overload signal (429, 503, a timeout) the limit is halved,
  at most once per `decrease_window_s`, and only for a request admitted under the current
  limit, so that one overload answered to a whole burst of in-flight requests counts once;
* a `Retry-After` from the server closes the gate for every caller until that time: new
  requests wait, requests already in flight carry on.

Both reactions wait for a pattern: they happen only while at least `pattern_share` (30 %)
of the last `pattern_window` (50) answers were overload signals (an answer that carried a
Retry-After counts as one). A saturated server refuses a large share of what it is sent
(a client at twice its slots sees about half its requests refused; an exhausted rate limit
refuses all of them), and on a fresh controller the first signal is already 100 %. A
server that refuses a random few (a 503 from one busy replica behind a load balancer, a
burst limit tripped once) is not saturated: halving the limit for each would run the whole
job at a fraction of the server's speed. The refused request itself still waits (its
Retry-After, or the retry policy's backoff) before it is tried again.

The controller knows nothing of HTTP or retries: the backend classifies failures (the
`kind` of a `RetryableBackendError`), the engine's `RetryPolicy` decides when a failed
request is tried again, and this module decides only when a request may start.
One controller per endpoint: the engine owns one for its backend; engines that share an
endpoint may share one controller.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.threads import WakingEvent

# Failure kinds that mean "the endpoint has more than it can handle" (see RetryableBackendError.kind).
OVERLOAD_KINDS = frozenset({"rate_limit", "overloaded", "timeout"})
# How often a caller waiting with a plain cancel event looks at it (a WakingEvent notifies).
_CANCEL_POLL_S = 0.1


class Outcome(enum.Enum):
    SUCCESS = "success"
    OVERLOAD = "overload"  # 429, 503, timeout: back off
    FAILURE = "failure"  # anything else (a 500, a garbled body): says nothing about capacity


def outcome_of(exc: BaseException | None) -> Outcome:
    """How a backend call that raised `exc` (None: it returned) counts for admission."""
    if exc is None:
        return Outcome.SUCCESS
    overload = isinstance(exc, RetryableBackendError) and exc.kind in OVERLOAD_KINDS
    return Outcome.OVERLOAD if overload else Outcome.FAILURE


class AdmissionCancelled(Exception):
    """A caller's cancel event was set while it waited for admission."""


@dataclass
class Ticket:
    """One admitted request; `release` fills in what its outcome did to the limit."""

    epoch: int  # the number of decreases before it was admitted
    outcome: Outcome | None = None
    cut_limit: bool = False  # this request's overload halved the limit
    released: bool = False  # its slot is free again (a second release does nothing)


class AdmissionController:
    """An AIMD concurrency limit in [1, max_limit] plus a shared Retry-After gate."""

    def __init__(
        self,
        max_limit: int,
        *,
        decrease_factor: float = 0.5,
        decrease_window_s: float = 1.0,
        retry_after_cap_s: float = 300.0,
        pattern_share: float = 0.3,
        pattern_window: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_limit < 1:
            raise ValueError(f"max_limit must be at least 1, not {max_limit}")
        if not 0 < decrease_factor < 1:
            raise ValueError(f"decrease_factor must be in (0, 1), not {decrease_factor}")
        if not 0 < pattern_share <= 1 or pattern_window < 1:
            raise ValueError(
                f"pattern_share must be in (0, 1] and pattern_window at least 1, not {pattern_share}, {pattern_window}"
            )
        self.max_limit = max_limit
        self.decrease_factor = decrease_factor
        self.decrease_window_s = decrease_window_s
        # A misconfigured proxy saying "come back in an hour" should not silently stall a run.
        self.retry_after_cap_s = retry_after_cap_s
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        # Start at the ceiling: the user's setting is the best first guess, and a
        # self-hosted server that never throttles should never be slowed down.
        self._limit = max_limit
        self._in_flight = 0
        self._successes = 0  # in a row, under the current limit
        self._epoch = 0
        self._last_cut: float | None = None
        self._gate_until = float("-inf")
        self.pattern_share = pattern_share
        # The last answers, True for an overload signal; failures that say nothing of the
        # server's load (a 500, a dropped connection) are not in it.
        self._recent: deque[bool] = deque(maxlen=pattern_window)
        self._recent_overloads = 0
        self.throttle_events = 0  # decreases of the limit (overload episodes)
        self.overloads = 0  # overload answers, counted one by one

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def overloaded(self) -> bool:
        """Whether overload signals are a pattern now (see the module's docstring)."""
        with self._cond:
            return self._overloaded_locked()

    def gate_closed_for(self) -> float:
        """Seconds until the Retry-After gate opens again (0 when it is open)."""
        with self._cond:
            return max(0.0, self._gate_until - self._clock())

    # -- admission -------------------------------------------------------------------------

    def try_acquire(self) -> Ticket | None:
        """A ticket if a request may start now, else None (gate closed or limit reached)."""
        with self._cond:
            return self._admit_locked()

    def acquire(self, cancel: threading.Event | None = None) -> Ticket:
        """Wait until a request may start; `cancel` set while waiting raises AdmissionCancelled."""
        # A WakingEvent wakes this wait when it is set; another event is looked at now and then.
        poll = cancel is not None and not isinstance(cancel, WakingEvent)
        if isinstance(cancel, WakingEvent):
            cancel.watch(self._cond)
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise AdmissionCancelled
                ticket = self._admit_locked()
                if ticket is not None:
                    return ticket
                # Woken by a release (a free slot) or by the gate's own deadline.
                timeout: float | None = None
                gate_left = self._gate_until - self._clock()
                if gate_left > 0:
                    timeout = gate_left
                if poll:
                    timeout = _CANCEL_POLL_S if timeout is None else min(timeout, _CANCEL_POLL_S)
                self._cond.wait(timeout)

    def release(self, ticket: Ticket, outcome: Outcome, retry_after: float | None = None) -> None:
        """End an admitted request and let its outcome adjust the limit and the gate."""
        with self._cond:
            if ticket.released:  # given up early (an abandoned call): its end changes nothing
                return
            ticket.released = True
            self._in_flight -= 1
            ticket.outcome = outcome
            now = self._clock()
            told_to_wait = retry_after is not None and retry_after > 0
            if outcome is Outcome.OVERLOAD or told_to_wait:
                self._record(True)
            elif outcome is Outcome.SUCCESS:
                self._record(False)
            overloaded = self._overloaded_locked()
            if told_to_wait and overloaded:
                assert retry_after is not None
                self._gate_until = max(self._gate_until, now + min(retry_after, self.retry_after_cap_s))
            if outcome is Outcome.OVERLOAD:
                self.overloads += 1
                ticket.cut_limit = overloaded and self._maybe_decrease(ticket, now)
            elif outcome is Outcome.SUCCESS and ticket.epoch == self._epoch:
                # Successes of requests admitted before the last decrease say nothing about
                # the new limit; they are not counted towards raising it.
                self._successes += 1
                if self._successes >= self._limit and self._limit < self.max_limit:
                    self._limit += 1
                    self._successes = 0
            free = self._limit - self._in_flight
            if free > 0:
                self._cond.notify(free)

    @contextmanager
    def admit(self, cancel: threading.Event | None = None) -> Iterator[Ticket]:
        """`with controller.admit(): call()`: waits for a slot, releases it with the call's outcome.

        An exception from the body is classified by `outcome_of`; its `retry_after`
        attribute, when present, closes the gate.
        """
        ticket = self.acquire(cancel)
        try:
            yield ticket
        except BaseException as exc:
            self.release(ticket, outcome_of(exc), retry_after_of(exc))
            raise
        self.release(ticket, Outcome.SUCCESS)

    # -- internals (called with the lock held) ---------------------------------------------

    def _admit_locked(self) -> Ticket | None:
        if self._clock() < self._gate_until or self._in_flight >= self._limit:
            return None
        self._in_flight += 1
        return Ticket(epoch=self._epoch)

    def _overloaded_locked(self) -> bool:
        return bool(self._recent) and self._recent_overloads >= self.pattern_share * len(self._recent)

    def _record(self, overload: bool) -> None:
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._recent_overloads -= 1
        self._recent.append(overload)
        self._recent_overloads += overload

    def _maybe_decrease(self, ticket: Ticket, now: float) -> bool:
        if ticket.epoch != self._epoch:
            return False  # admitted under a limit that was already cut: the same episode
        if self._last_cut is not None and now - self._last_cut < self.decrease_window_s:
            return False
        self._limit = max(1, int(self._limit * self.decrease_factor))
        self._epoch += 1
        self._last_cut = now
        self._successes = 0
        self.throttle_events += 1
        return True


def retry_after_of(exc: BaseException | None) -> float | None:
    """The seconds a refusal asked the client to wait (its Retry-After), if it said."""
    value = exc.retry_after if isinstance(exc, RetryableBackendError) else None
    return float(value) if isinstance(value, int | float) else None
