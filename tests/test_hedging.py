"""Hedging: the delay from the latencies seen, the budget, and the race between two attempts."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.control.hedging import HedgePolicy, LatencyWindow, race
from selfinstruct.llm.types import StreamAborted

FAST = HedgePolicy(min_samples=4, factor=2.0, quantile=0.95, min_delay_s=0.01)


def test_no_delay_before_the_first_latency_then_a_cautious_one_until_a_percentile_is_known() -> None:
    window = LatencyWindow()
    assert window.hedge_delay(FAST) is None
    for seconds in (0.1, 0.3, 0.2):
        window.add(seconds)
    assert window.hedge_delay(FAST) == pytest.approx(2 * 2 * 0.3)  # twice the factor, on the slowest
    window.add(0.1)  # min_samples reached: factor x the 95th percentile
    assert window.hedge_delay(FAST) == pytest.approx(2 * 0.3)


def test_the_delay_follows_the_95th_percentile_and_has_a_floor() -> None:
    window = LatencyWindow()
    for i in range(100):
        window.add(0.01 * (i + 1))  # 0.01 .. 1.00 s
    assert window.hedge_delay(FAST) == pytest.approx(2 * 0.96)
    tiny = LatencyWindow()
    for _ in range(10):
        tiny.add(0.0001)
    assert tiny.hedge_delay(FAST) == 0.01


def test_the_budget_caps_hedges_per_request_sent() -> None:
    policy = HedgePolicy(budget=0.05)
    assert not policy.allows(hedged=0, sent=19)  # 1 hedge would be 5.3 %
    assert policy.allows(hedged=0, sent=20)
    assert not policy.allows(hedged=1, sent=39)
    assert policy.allows(hedged=1, sent=40)
    assert not HedgePolicy(budget=0.0).allows(hedged=0, sent=10**6)


class Attempts:
    """Scripted attempts: each call takes the next (seconds, result or exception); the last repeats."""

    def __init__(self, *plan: tuple[float, Any]) -> None:
        self.plan = list(plan)
        self.calls = 0
        self.abandoned: list[threading.Event] = []
        self.lock = threading.Lock()

    def __call__(self, abandoned: threading.Event, sent: Any) -> Any:
        sent()
        with self.lock:
            seconds, outcome = self.plan[min(self.calls, len(self.plan) - 1)]
            self.calls += 1
        self.abandoned.append(abandoned)
        time.sleep(seconds)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run_race(attempts: Attempts, delay: float | None, allow: bool = True) -> tuple[Any, list[str]]:
    events: list[str] = []

    def may_hedge() -> bool:
        events.append("hedge")
        return allow

    result = race(attempts, lambda: delay, may_hedge, lambda: events.append("won"), threading.Event())
    return result, events


def test_a_stuck_attempt_gets_a_twin_and_the_first_answer_wins() -> None:
    attempts = Attempts((5.0, "late"), (0.01, "twin"))
    started = time.monotonic()
    result, events = run_race(attempts, delay=0.05)
    assert result == "twin" and events == ["hedge", "won"]
    assert time.monotonic() - started < 1.0
    assert attempts.abandoned[0].is_set()  # the stuck one knows nobody waits for it


def test_a_quick_answer_is_never_hedged() -> None:
    result, events = run_race(Attempts((0.01, "quick")), delay=0.5)
    assert result == "quick" and events == []


def test_without_a_known_delay_or_budget_the_attempt_runs_to_its_end() -> None:
    assert run_race(Attempts((0.2, "slow")), delay=None) == ("slow", [])
    result, events = run_race(Attempts((0.2, "slow")), delay=0.1, allow=False)  # would give up at 0.3 s
    assert result == "slow" and events == ["hedge"]


def test_an_attempt_far_past_the_delay_is_taken_for_lost_without_waiting_for_it() -> None:
    attempts = Attempts((30.0, "never"))
    started = time.monotonic()
    with pytest.raises(RetryableBackendError) as info:
        run_race(attempts, delay=0.02)  # twins at 0.02 and 0.04 s, given up at 3 x 0.02 s
    assert info.value.kind == "lost" and time.monotonic() - started < 1.0
    # Never more than three at once, and every one of them knows nobody waits for it.
    assert attempts.calls == 3 and all(event.is_set() for event in attempts.abandoned)


def test_a_twin_that_fails_fast_is_followed_by_another_while_the_first_still_hangs() -> None:
    attempts = Attempts((5.0, "late"), (0.01, RetryableBackendError("twin blip")), (0.01, "third"))
    started = time.monotonic()
    result, events = run_race(attempts, delay=0.05)
    assert result == "third" and events == ["hedge", "hedge", "won"]
    assert time.monotonic() - started < 1.0


def test_a_twin_that_hangs_as_well_gets_a_twin_of_its_own() -> None:
    attempts = Attempts((5.0, "late"), (5.0, "late twin"), (0.01, "third"))
    started = time.monotonic()
    result, events = run_race(attempts, delay=0.05)
    assert result == "third" and events == ["hedge", "hedge", "won"]
    assert time.monotonic() - started < 1.0


def test_a_budget_refused_at_first_is_asked_again_while_the_attempt_runs() -> None:
    answers = iter([False, True])
    events: list[str] = []

    def may_hedge() -> bool:
        events.append("hedge")
        return next(answers, True)

    attempts = Attempts((5.0, "late"), (0.01, "twin"))
    # Refused at 0.2 s, asked again at the next look (0.25 s later), before the give-up at 0.6 s.
    result = race(attempts, lambda: 0.2, may_hedge, lambda: events.append("won"), threading.Event())
    assert result == "twin" and events == ["hedge", "hedge", "won"]


def test_a_retryable_error_is_raised_only_when_every_attempt_failed() -> None:
    first_fails = Attempts((0.3, RetryableBackendError("first")), (0.05, "twin"))
    assert run_race(first_fails, delay=0.05)[0] == "twin"
    every_one_fails = Attempts((0.2, RetryableBackendError("first")), (0.05, RetryableBackendError("twin")))
    with pytest.raises(RetryableBackendError):
        run_race(every_one_fails, delay=0.05)


def test_a_fatal_error_ends_the_race_at_once() -> None:
    with pytest.raises(BackendError):
        run_race(Attempts((5.0, "late"), (0.01, BackendError("bad key"))), delay=0.05)


def test_an_abort_elsewhere_ends_the_wait() -> None:
    abort = threading.Event()
    threading.Timer(0.1, abort.set).start()
    started = time.monotonic()
    with pytest.raises(StreamAborted):
        race(Attempts((5.0, "late")), lambda: None, lambda: False, lambda: None, abort)
    assert time.monotonic() - started < 1.0
