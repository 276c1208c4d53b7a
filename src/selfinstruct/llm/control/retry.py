"""When to try a failed request again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class RetryPolicy:
    """When to try again and how long to wait: exponential backoff with full jitter.

    Per request only; how many requests may be in flight (and the Retry-After gate that
    holds back every new request) is the `AdmissionController`'s job.
    """

    max_retries: int
    base_s: float = 0.5
    cap_s: float = 30.0
    # A server's Retry-After is honoured, but never beyond this (a misconfigured proxy
    # saying "come back in an hour" should not silently stall a run).
    retry_after_cap_s: float = 300.0
    rng: random.Random | None = None

    def allows_retry(self, retries_done: int) -> bool:
        return retries_done < self.max_retries

    def delay(self, retry_number: int, retry_after: float | None = None, overload: bool = True) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry).

        Exponential backoff is for a server that says it has too much to do (429, 503, a
        timeout: `overload`). A glitch that says nothing of its load (a 500, a dropped
        connection, a garbled body, a call taken for lost) is retried after a short jittered
        pause, a tenth of the backoff's, which does not grow.
        """
        rng = self.rng or random
        if retry_after is not None:
            # Add a little jitter so that clients told the same time do not return together.
            return min(retry_after, self.retry_after_cap_s) + rng.uniform(0, self.base_s)
        if not overload:
            return rng.uniform(0, self.base_s / 10)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (retry_number - 1)))
