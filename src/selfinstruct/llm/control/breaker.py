"""A circuit breaker: when an endpoint keeps failing, stop sending to it for a while.

Among several servers, one that has died or hangs would otherwise take its share of every
batch and fail it: each request would spend a retry there, and with hung connections a
whole timeout. The breaker counts failures that say the server itself is in trouble (a
refused or dropped connection, a timeout, a call taken for lost, a 5xx other than 503) in a row:

* closed: requests flow; `failures_to_open` such failures in a row open it;
* open: no request is sent for `cooldown_s` (doubling on every failed probe, up to
  `max_cooldown_s`);
* half-open: after the cooldown, exactly one real request is let through as a probe; its
  success closes the breaker (and resets the cooldown), its failure opens it again.

A 429 or a 503 is not trouble but load: the endpoint's `AdmissionController` handles it.
Any answer, even a refused one, proves the server is up: it resets the count and closes the
breaker (a request sent before it opened may answer late). The breaker
only advises the router (routing.py); it never fails a request by itself.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

# RetryableBackendError kinds that mean the server is down or broken, not busy.
# "lost": a call that ran far past its stage's usual latency (hedging.py), as from a hung server.
TRIP_KINDS = frozenset({"connection", "timeout", "server", "lost"})


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failures_to_open: int = 5,
        cooldown_s: float = 2.0,
        max_cooldown_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures_to_open < 1 or cooldown_s <= 0 or max_cooldown_s < cooldown_s:
            raise ValueError("need failures_to_open >= 1 and 0 < cooldown_s <= max_cooldown_s")
        self.failures_to_open = failures_to_open
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0  # in a row
        self._cooldown_s = cooldown_s
        self._reopen_at = 0.0
        self._probe_out = False  # a half-open probe is in flight
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._advance_locked()
            return self._state

    def seconds_to_probe(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        with self._lock:
            self._advance_locked()
            return max(0.0, self._reopen_at - self._clock()) if self._state is BreakerState.OPEN else 0.0

    def allows(self) -> bool:
        """Whether a request may go to this endpoint now (no side effect)."""
        with self._lock:
            self._advance_locked()
            return self._state is BreakerState.CLOSED or (
                self._state is BreakerState.HALF_OPEN and not self._probe_out
            )

    def admitted(self) -> bool:
        """A request was sent; True if it is the half-open probe (pass that back to `record`)."""
        with self._lock:
            self._advance_locked()
            if self._state is BreakerState.HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            return False

    def record(self, failure_kind: str | None, succeeded: bool, probe: bool) -> bool:
        """One request's end: `succeeded`, or failed with a RetryableBackendError `kind`
        (None: no answer to judge by, e.g. an abandoned hedge). True if this opened it."""
        with self._lock:
            if probe:
                self._probe_out = False
            if succeeded or (failure_kind is not None and failure_kind not in TRIP_KINDS):
                # An answer, even a refusal, proves the server is up.
                self._failures = 0
                self._state = BreakerState.CLOSED
                self._cooldown_s = self.base_cooldown_s
                return False
            if failure_kind is None:
                return False
            self._failures += 1
            if probe:
                self._cooldown_s = min(self.max_cooldown_s, self._cooldown_s * 2)
                return self._open_locked()
            if self._state is BreakerState.CLOSED and self._failures >= self.failures_to_open:
                return self._open_locked()
            return False

    def _open_locked(self) -> bool:
        self._state = BreakerState.OPEN
        self._reopen_at = self._clock() + self._cooldown_s
        self.times_opened += 1
        return True

    def _advance_locked(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() >= self._reopen_at:
            self._state = BreakerState.HALF_OPEN
            self._probe_out = False
