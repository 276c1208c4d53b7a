"""AdmissionController: AIMD concurrency limit and the shared Retry-After gate (fake clock)."""

from __future__ import annotations

import random
import threading
import time

import pytest

from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.control.admission import (
    AdmissionCancelled,
    AdmissionController,
    Outcome,
    Ticket,
    outcome_of,
)
from selfinstruct.llm.threads import WakingEvent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def controller(clock: FakeClock, max_limit: int = 8, **kw: float) -> AdmissionController:
    return AdmissionController(max_limit, clock=clock, **kw)


def take(ctl: AdmissionController, n: int) -> list[Ticket]:
    tickets = [ctl.try_acquire() for _ in range(n)]
    assert all(t is not None for t in tickets), f"could not admit {n}"
    return [t for t in tickets if t is not None]


def settle(ctl: AdmissionController, outcome: Outcome, n: int) -> None:
    """Admit and release n requests, one after another, each with `outcome`."""
    for _ in range(n):
        ctl.release(take(ctl, 1)[0], outcome)


# -- the limit -----------------------------------------------------------------------------


def test_starts_at_the_ceiling_and_admits_no_more(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=3)
    take(ctl, 3)
    assert ctl.limit == 3 and ctl.in_flight == 3
    assert ctl.try_acquire() is None


def test_a_release_frees_a_slot(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=2)
    first, _ = take(ctl, 2)
    ctl.release(first, Outcome.SUCCESS)
    assert ctl.try_acquire() is not None


def test_an_overload_halves_the_limit(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    (ticket,) = take(ctl, 1)
    ctl.release(ticket, Outcome.OVERLOAD)
    assert ctl.limit == 4 and ticket.cut_limit and ctl.throttle_events == 1


def test_a_burst_of_429s_from_one_overload_cuts_the_limit_once(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    tickets = take(ctl, 8)
    for ticket in tickets:  # every in-flight request comes back 429 at the same moment
        ctl.release(ticket, Outcome.OVERLOAD)
    assert ctl.limit == 4
    assert ctl.throttle_events == 1 and ctl.overloads == 8
    assert [t.cut_limit for t in tickets] == [True] + [False] * 7


def test_new_overloads_within_the_window_do_not_cut_again(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=16, decrease_window_s=1.0)
    settle(ctl, Outcome.OVERLOAD, 1)
    assert ctl.limit == 8
    clock.advance(0.5)
    settle(ctl, Outcome.OVERLOAD, 1)  # admitted under the new limit, but too soon
    assert ctl.limit == 8
    clock.advance(0.6)
    settle(ctl, Outcome.OVERLOAD, 1)
    assert ctl.limit == 4 and ctl.throttle_events == 2


def test_an_overload_of_a_request_admitted_before_the_last_cut_does_not_cut_again(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=16, decrease_window_s=1.0)
    early, late = take(ctl, 2)
    ctl.release(early, Outcome.OVERLOAD)
    clock.advance(5)  # long after the window: still the same episode for `late`
    ctl.release(late, Outcome.OVERLOAD)
    assert ctl.limit == 8 and not late.cut_limit


def test_the_limit_never_drops_below_one(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=4)
    for _ in range(10):
        settle(ctl, Outcome.OVERLOAD, 1)
        clock.advance(2)
    assert ctl.limit == 1
    assert ctl.try_acquire() is not None


def test_the_limit_grows_by_one_after_as_many_successes_as_the_limit(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=16)
    settle(ctl, Outcome.OVERLOAD, 1)
    assert ctl.limit == 8
    settle(ctl, Outcome.SUCCESS, 7)
    assert ctl.limit == 8
    settle(ctl, Outcome.SUCCESS, 1)
    assert ctl.limit == 9
    settle(ctl, Outcome.SUCCESS, 9)
    assert ctl.limit == 10


def test_the_limit_never_exceeds_the_ceiling(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=4)
    for _ in range(50):
        settle(ctl, Outcome.SUCCESS, 4)
    assert ctl.limit == 4
    take(ctl, 4)
    assert ctl.try_acquire() is None


def test_successes_of_requests_admitted_before_a_cut_do_not_raise_the_limit(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    tickets = take(ctl, 8)
    ctl.release(tickets[0], Outcome.OVERLOAD)  # 8 -> 4
    for ticket in tickets[1:]:  # seven old successes: more than the new limit
        ctl.release(ticket, Outcome.SUCCESS)
    assert ctl.limit == 4


def test_other_failures_neither_cut_nor_raise_the_limit(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    settle(ctl, Outcome.OVERLOAD, 1)
    settle(ctl, Outcome.SUCCESS, 3)
    settle(ctl, Outcome.FAILURE, 20)
    assert ctl.limit == 4 and ctl.throttle_events == 1
    settle(ctl, Outcome.SUCCESS, 1)  # the run of successes was not broken by the failures
    assert ctl.limit == 5


def test_stray_overloads_among_successes_neither_cut_the_limit_nor_close_the_gate(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=16)
    settle(ctl, Outcome.SUCCESS, 50)
    for _ in range(20):  # one refusal in ten answers, each with a Retry-After
        settle(ctl, Outcome.SUCCESS, 9)
        ctl.release(take(ctl, 1)[0], Outcome.OVERLOAD, retry_after=1.0)
        clock.advance(2.0)
        assert ctl.gate_closed_for() == 0
    assert ctl.limit == 16 and ctl.throttle_events == 0 and ctl.overloads == 20
    assert not ctl.overloaded()


def test_refusals_that_become_a_pattern_cut_the_limit_and_close_the_gate(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=16)
    settle(ctl, Outcome.SUCCESS, 50)
    cuts_at = None
    for i in range(1, 40):  # now every other answer is a refusal (a client at twice the slots)
        settle(ctl, Outcome.SUCCESS, 1)
        ctl.release(take(ctl, 1)[0], Outcome.OVERLOAD, retry_after=1.0)
        if ctl.throttle_events and cuts_at is None:
            cuts_at = i
            assert ctl.limit == 8 and ctl.gate_closed_for() == pytest.approx(1.0)
        clock.advance(2.0)
    # 30 % of the last 50: 15 refusals among 50 answers, that is the 15th refusal here.
    assert cuts_at == 15 and ctl.overloaded()


def test_the_limit_stays_within_one_and_the_ceiling_under_any_sequence(clock: FakeClock) -> None:
    rng = random.Random(7)
    ctl = controller(clock, max_limit=12)
    held: list[Ticket] = []
    for _ in range(5000):
        if held and rng.random() < 0.5:
            ticket = held.pop(rng.randrange(len(held)))
            outcome = rng.choice([Outcome.SUCCESS] * 6 + [Outcome.OVERLOAD, Outcome.FAILURE])
            ctl.release(ticket, outcome, retry_after=rng.choice([None, None, 0.5]))
        else:
            ticket = ctl.try_acquire()
            if ticket is not None:
                held.append(ticket)
        clock.advance(rng.uniform(0, 0.3))
        assert 1 <= ctl.limit <= 12
        assert ctl.in_flight == len(held)
    # Admission only ever let in what the limit allowed at that moment.
    assert len(held) <= 12


# -- the Retry-After gate ------------------------------------------------------------------


def test_retry_after_closes_the_gate_for_new_requests_until_that_time(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    first, second = take(ctl, 2)
    ctl.release(first, Outcome.OVERLOAD, retry_after=2.0)
    assert ctl.try_acquire() is None  # slots are free, but the gate is closed
    assert ctl.gate_closed_for() == pytest.approx(2.0)
    ctl.release(second, Outcome.SUCCESS)  # an in-flight request still finishes normally
    assert ctl.in_flight == 0
    clock.advance(1.9)
    assert ctl.try_acquire() is None
    clock.advance(0.2)
    assert ctl.try_acquire() is not None and ctl.gate_closed_for() == 0


def test_retry_after_without_overload_still_closes_the_gate(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    (ticket,) = take(ctl, 1)
    ctl.release(ticket, Outcome.FAILURE, retry_after=1.0)
    assert ctl.try_acquire() is None and ctl.limit == 8


def test_a_shorter_retry_after_does_not_reopen_the_gate_early(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    a, b = take(ctl, 2)
    ctl.release(a, Outcome.OVERLOAD, retry_after=5.0)
    ctl.release(b, Outcome.OVERLOAD, retry_after=1.0)
    clock.advance(2)
    assert ctl.try_acquire() is None


def test_retry_after_is_capped(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8, retry_after_cap_s=30.0)
    ctl.release(take(ctl, 1)[0], Outcome.OVERLOAD, retry_after=3600)
    assert ctl.gate_closed_for() == pytest.approx(30.0)


def test_no_retry_after_means_no_gate(clock: FakeClock) -> None:
    ctl = controller(clock, max_limit=8)
    settle(ctl, Outcome.OVERLOAD, 1)
    assert ctl.try_acquire() is not None


# -- blocking acquire and the context manager (real clock, real threads) -------------------


def test_acquire_waits_for_a_free_slot() -> None:
    ctl = AdmissionController(1)
    held = ctl.acquire()
    admitted = threading.Event()

    def second() -> None:
        ctl.release(ctl.acquire(), Outcome.SUCCESS)
        admitted.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not admitted.wait(0.2)
    ctl.release(held, Outcome.SUCCESS)
    assert admitted.wait(2)
    thread.join()


def test_acquire_waits_for_the_gate_to_reopen() -> None:
    ctl = AdmissionController(4)
    ctl.release(ctl.acquire(), Outcome.OVERLOAD, retry_after=0.3)
    started = time.monotonic()
    ctl.release(ctl.acquire(), Outcome.SUCCESS)
    assert time.monotonic() - started >= 0.29


def test_a_cancel_event_ends_the_wait() -> None:
    ctl = AdmissionController(1)
    ctl.acquire()
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(AdmissionCancelled):
        ctl.acquire(cancel)
    assert time.monotonic() - started < 1.0
    assert ctl.in_flight == 1


def test_a_waking_cancel_event_ends_the_wait_without_polling() -> None:
    """A stream's abort event (WakingEvent) wakes the waiters when it is set: they sleep until
    then, instead of waking ten times a second to look (four waiting workers per slot made
    that polling cost ~0.3 ms of CPU per request)."""
    ctl = AdmissionController(1)
    ctl.acquire()
    waits: list[float | None] = []
    real_wait = ctl._cond.wait

    def counted_wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return real_wait(timeout)

    ctl._cond.wait = counted_wait  # type: ignore[method-assign]
    cancel = WakingEvent()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(AdmissionCancelled):
        ctl.acquire(cancel)
    assert time.monotonic() - started > 0.45
    assert waits == [None]  # one wait, with no timeout, ended by the event
    assert ctl.in_flight == 1


def test_admit_releases_with_the_outcome_of_the_call() -> None:
    ctl = AdmissionController(8, decrease_window_s=0)
    with ctl.admit() as ok:
        pass
    assert ok.outcome is Outcome.SUCCESS
    with pytest.raises(RetryableBackendError), ctl.admit() as limited:
        raise RetryableBackendError("HTTP 429", retry_after=0.05, kind="rate_limit")
    assert limited.outcome is Outcome.OVERLOAD and ctl.limit == 4
    assert ctl.gate_closed_for() > 0
    with pytest.raises(RetryableBackendError), ctl.admit() as broken:
        raise RetryableBackendError("HTTP 500", kind="server")
    assert broken.outcome is Outcome.FAILURE and ctl.limit == 4
    assert ctl.in_flight == 0


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, Outcome.SUCCESS),
        (RetryableBackendError("429", kind="rate_limit"), Outcome.OVERLOAD),
        (RetryableBackendError("503", kind="overloaded"), Outcome.OVERLOAD),
        (RetryableBackendError("slow", kind="timeout"), Outcome.OVERLOAD),
        (RetryableBackendError("500", kind="server"), Outcome.FAILURE),
        (RetryableBackendError("reset", kind="connection"), Outcome.FAILURE),
        (RetryableBackendError("{bad", kind="garbled"), Outcome.FAILURE),
        (RetryableBackendError("unclassified"), Outcome.FAILURE),
        (BackendError("bad key"), Outcome.FAILURE),
    ],
)
def test_outcome_of_classifies_by_error_kind(exc: BaseException | None, expected: Outcome) -> None:
    assert outcome_of(exc) is expected


@pytest.mark.parametrize(
    "kw",
    [
        {"max_limit": 0},
        {"max_limit": 4, "decrease_factor": 1.0},
        {"max_limit": 4, "pattern_share": 0.0},
        {"max_limit": 4, "pattern_window": 0},
    ],
)
def test_rejects_a_meaningless_configuration(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdmissionController(**kw)  # type: ignore[arg-type]
