"""RetryPolicy: when a failed call is tried again, and after how long."""

from __future__ import annotations

import random

from selfinstruct.llm.control.retry import RetryPolicy


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_retries=10, base_s=0.5, cap_s=30.0, rng=random.Random(0))
    for retry in range(1, 10):
        ceiling = min(30.0, 0.5 * 2 ** (retry - 1))
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # it spreads over the whole range


def test_retry_after_overrides_backoff_but_is_capped() -> None:
    policy = RetryPolicy(max_retries=3, base_s=0.5, retry_after_cap_s=60, rng=random.Random(0))
    assert 7.0 <= policy.delay(1, retry_after=7.0) <= 7.5
    assert policy.delay(1, retry_after=3600) <= 60.5


def test_retry_budget_is_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    assert [policy.allows_retry(n) for n in range(4)] == [True, True, False, False]


def test_a_glitch_is_retried_at_once_and_only_overload_backs_off_exponentially() -> None:
    policy = RetryPolicy(max_retries=6, base_s=1.0, rng=random.Random(0))
    glitches = [policy.delay(n, overload=False) for n in range(1, 7)]
    assert max(glitches) <= 0.1  # a tenth of the base, never growing
    overloads = [policy.delay(6, overload=True) for _ in range(50)]
    assert max(overloads) > 1.0  # up to base x 2^5
    assert policy.delay(1, retry_after=2.0, overload=False) >= 2.0  # Retry-After always wins
