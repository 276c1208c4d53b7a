"""The router: least outstanding work by weight, among the endpoints whose breaker allows it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.control import routing
from selfinstruct.llm.control.admission import AdmissionCancelled, AdmissionController, Outcome
from selfinstruct.llm.control.breaker import BreakerState, CircuitBreaker
from selfinstruct.llm.control.routing import Route, Router
from selfinstruct.llm.threads import WakingEvent


def routes(*weights: float, limit: int = 4) -> list[Route]:
    return [
        Route(name=f"http://e{i}/v1", backend=None, admission=AdmissionController(limit), weight=w)  # type: ignore[arg-type]
        for i, w in enumerate(weights)
    ]


def names(tickets: list) -> list[str]:  # type: ignore[type-arg]
    return [t.route.name for t in tickets]


def test_requests_go_to_the_endpoint_with_the_least_in_flight() -> None:
    router = Router(routes(1, 1, 1))
    tickets = [router.acquire() for _ in range(6)]
    assert (
        sorted(names(tickets))
        == ["http://e0/v1", "http://e0/v1", "http://e1/v1", "http://e1/v1"] + ["http://e2/v1"] * 2
    )
    router.release(tickets[1], Outcome.SUCCESS)  # e1 has one free slot more than the others
    assert router.acquire().route.name == "http://e1/v1"


def test_a_heavier_endpoint_carries_a_larger_share() -> None:
    router = Router(routes(1, 3, limit=8))
    tickets = [router.acquire() for _ in range(8)]
    assert names(tickets).count("http://e1/v1") == 6


def test_a_full_endpoint_is_passed_over_and_all_full_waits_for_a_release() -> None:
    router = Router(routes(1, 1, limit=1))
    first, second = router.acquire(), router.acquire()
    assert {first.route.name, second.route.name} == {"http://e0/v1", "http://e1/v1"}
    got = []
    waiter = threading.Thread(target=lambda: got.append(router.acquire()))
    waiter.start()
    time.sleep(0.15)
    assert not got
    router.release(second, Outcome.SUCCESS)
    waiter.join(2)
    assert got and got[0].route is second.route


def test_a_retry_avoids_the_endpoint_that_failed_it() -> None:
    router = Router(routes(1, 1))
    failed = router.routes[0]
    assert all(router.acquire(avoid=[failed]).route is router.routes[1] for _ in range(4))
    assert router.acquire(avoid=[failed]).route is failed  # the other one is full: better than waiting


def test_an_open_breaker_takes_the_endpoint_out() -> None:
    router = Router(routes(1, 1))
    dead = router.routes[0]
    dead.breaker = CircuitBreaker(failures_to_open=2, cooldown_s=60)
    for _ in range(2):
        ticket = router.acquire(avoid=[router.routes[1]])
        assert ticket.route is dead
        router.release(ticket, Outcome.FAILURE, RetryableBackendError("refused", kind="connection"))
    assert dead.breaker.state is BreakerState.OPEN
    assert {router.acquire().route.name for _ in range(4)} == {"http://e1/v1"}
    assert router.report()[0]["breaker_opened"] == 1 and router.report()[0]["errors"] == 2


def test_when_every_breaker_is_open_requests_still_go_out() -> None:
    # Like one dead server: the requests fail and use up their retries; nothing waits forever.
    router = Router(routes(1, 1))
    for route in router.routes:
        route.breaker = CircuitBreaker(failures_to_open=1, cooldown_s=60)
        ticket = router.acquire(avoid=[r for r in router.routes if r is not route])
        router.release(ticket, Outcome.FAILURE, RetryableBackendError("refused", kind="connection"))
    assert all(r.breaker.state is BreakerState.OPEN for r in router.routes)
    assert router.acquire().route in router.routes


def test_a_closed_gate_on_one_endpoint_sends_work_to_the_other() -> None:
    router = Router(routes(1, 1))
    busy = router.routes[0]
    for i in range(20):  # a pattern of refusals, the last one with Retry-After
        ticket = busy.admission.acquire()
        busy.admission.release(ticket, Outcome.OVERLOAD, retry_after=30 if i == 19 else None)
    assert busy.admission.gate_closed_for() > 0
    assert {router.acquire().route.name for _ in range(4)} == {"http://e1/v1"}
    assert not router.overloaded()  # one endpoint is fine: a refusal there need not back off


def test_a_release_wakes_one_waiter_per_free_slot_and_idle_waiters_do_not_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hundreds of workers may wait for a slot: a release wakes as many as there are free slots,
    and a waiter with nothing to wait for but a release sleeps until one (waking them all at
    every release, and 20 times a second besides, cost ~1.5 ms of CPU per request)."""
    monkeypatch.setattr(routing, "_IDLE_POLL_S", 60.0)  # the safety net stays out of the count
    router = Router(routes(1, 1, limit=1))
    held = [router.acquire(), router.acquire()]
    waits: list[float | None] = []
    real_wait = router._cond.wait

    def counted_wait(timeout: float | None = None) -> bool:
        waits.append(timeout)
        return real_wait(timeout)

    def soon(condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        return condition()

    router._cond.wait = counted_wait  # type: ignore[method-assign]
    got: list[object] = []
    waiters = [threading.Thread(target=lambda: got.append(router.acquire()), daemon=True) for _ in range(10)]
    for thread in waiters:
        thread.start()
    assert soon(lambda: len(waits) == 10)
    time.sleep(0.3)
    assert len(waits) == 10  # one wait each, no polling
    router.release(held.pop(), Outcome.SUCCESS)
    assert soon(lambda: len(got) == 1)
    time.sleep(0.3)
    assert len(got) == 1
    assert len(waits) == 10  # the nine others were not woken to wait again
    cancel = WakingEvent()
    cancelled: list[bool] = []

    def wait_cancelled() -> None:
        with pytest.raises(AdmissionCancelled):
            router.acquire(cancel)
        cancelled.append(True)

    rest = threading.Thread(target=wait_cancelled)
    rest.start()
    assert soon(lambda: len(waits) == 11)
    cancel.set()  # a stream's abort event wakes its waiters at once, not at the next poll
    assert soon(lambda: bool(cancelled))


def test_a_cancelled_wait_raises() -> None:
    router = Router(routes(1, 1, limit=1))
    router.acquire(), router.acquire()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(AdmissionCancelled):
        router.acquire(cancel)


def test_admit_releases_with_the_outcome_of_the_call() -> None:
    router = Router(routes(1))
    with pytest.raises(RetryableBackendError), router.admit() as ticket:
        raise RetryableBackendError("503", kind="overloaded")
    assert ticket.outcome is Outcome.OVERLOAD and router.routes[0].admission.in_flight == 0
    with router.admit():
        pass
    assert router.report()[0]["answered"] == 1
