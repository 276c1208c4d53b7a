"""The circuit breaker: closed -> open after failures in a row -> one probe -> closed or open again."""

from __future__ import annotations

import pytest

from selfinstruct.llm.control.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kw: float) -> CircuitBreaker:
    return CircuitBreaker(failures_to_open=3, cooldown_s=2.0, max_cooldown_s=8.0, clock=clock, **kw)  # type: ignore[arg-type]


def fail(b: CircuitBreaker, kind: str = "connection", times: int = 1) -> None:
    for _ in range(times):
        b.record(kind, succeeded=False, probe=b.admitted())


def test_opens_after_failures_in_a_row_and_lets_nothing_through() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, times=2)
    assert b.allows() and b.state is BreakerState.CLOSED
    fail(b)
    assert b.state is BreakerState.OPEN and not b.allows()
    assert b.times_opened == 1
    assert b.seconds_to_probe() == pytest.approx(2.0)


def test_a_success_between_failures_resets_the_count() -> None:
    b = breaker(Clock())
    fail(b, times=2)
    b.record(None, succeeded=True, probe=False)
    fail(b, times=2)
    assert b.state is BreakerState.CLOSED


@pytest.mark.parametrize("kind", ["rate_limit", "overloaded", "garbled", "no_content"])
def test_load_and_bad_bodies_are_not_outages(kind: str) -> None:
    # A 429 or a 503 is the admission controller's business; a garbled body came from a live server.
    b = breaker(Clock())
    fail(b, kind, times=10)
    assert b.state is BreakerState.CLOSED


@pytest.mark.parametrize("kind", ["connection", "timeout", "server", "lost"])
def test_outage_kinds_open_it(kind: str) -> None:
    b = breaker(Clock())
    fail(b, kind, times=3)
    assert b.state is BreakerState.OPEN


def test_after_the_cooldown_exactly_one_probe_goes_out() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, times=3)
    clock.now += 2.0
    assert b.state is BreakerState.HALF_OPEN and b.allows()
    assert b.admitted() is True
    assert not b.allows()  # the probe is out: nothing else
    assert b.admitted() is False


def test_a_good_probe_closes_it() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, times=3)
    clock.now += 2.0
    b.record(None, succeeded=True, probe=b.admitted())
    assert b.state is BreakerState.CLOSED and b.allows()


def test_a_failed_probe_opens_it_again_for_twice_as_long_up_to_the_cap() -> None:
    clock = Clock()
    b = breaker(clock)
    fail(b, times=3)
    waits = []
    for _ in range(4):
        clock.now += b.seconds_to_probe()
        fail(b)  # the probe fails
        waits.append(b.seconds_to_probe())
    assert waits == [4.0, 8.0, 8.0, 8.0]
    assert b.times_opened == 5
    clock.now += 8.0
    b.record(None, succeeded=True, probe=b.admitted())
    fail(b, times=3)
    assert b.seconds_to_probe() == 2.0  # a recovery resets the cooldown


def test_a_probe_with_no_verdict_lets_the_next_one_through() -> None:
    # An abandoned hedge ends without an answer to judge by.
    clock = Clock()
    b = breaker(clock)
    fail(b, times=3)
    clock.now += 2.0
    b.record(None, succeeded=False, probe=b.admitted())
    assert b.state is BreakerState.HALF_OPEN and b.allows()


def test_a_late_answer_from_before_it_opened_closes_it() -> None:
    b = breaker(Clock())
    fail(b, times=3)
    b.record(None, succeeded=True, probe=False)
    assert b.state is BreakerState.CLOSED
