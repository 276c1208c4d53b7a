"""Which endpoint takes the next request: least outstanding work, among the healthy ones.

Several servers with the same model behind them (vLLM replicas, llama.cpp servers on
several machines) each get a `Route`: the backend that talks to it, its own
`AdmissionController` (its adaptive limit and its Retry-After gate: one busy server does
not slow the others) and its own `CircuitBreaker` (breaker.py). A request goes to the
route that

1. the breaker allows (closed, or half-open with its one probe not yet out); when every
   breaker is open, all routes are candidates again and the requests fail and retry as
   they would against one dead server: a router never hides an outage by waiting forever;
2. did not just fail this same request (`avoid`), when another route can take it;
3. has the least outstanding work: (requests in flight + 1) / weight, then the route's
   order, so a route with twice the weight carries twice the load;
4. has a free slot under its limit and an open gate; otherwise the next one is tried, and
   when none has, the caller waits for a release, a gate or a breaker to open.

A single route is the common case (one server, or an in-process model): it waits on its
admission controller directly, exactly as before routing existed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.control.admission import (
    AdmissionCancelled,
    AdmissionController,
    Outcome,
    Ticket,
    outcome_of,
    retry_after_of,
)
from selfinstruct.llm.control.breaker import BreakerState, CircuitBreaker
from selfinstruct.llm.threads import WakingEvent
from selfinstruct.llm.types import Backend, CancellableBackend, StreamAborted

# How often a waiting caller looks again without a notification, while a gate or a breaker's
# cooldown is running (it ends without a release), or when its cancel event is a plain one.
_POLL_S = 0.05
# Otherwise every slot is freed by a release through this router, which notifies: this is a
# safety net only. (Polling 20 times a second with four waiting workers per slot cost more
# CPU than sending the requests.)
_IDLE_POLL_S = 1.0


@dataclass(eq=False)
class Route:
    """One endpoint as the router sees it."""

    name: str  # the endpoint's URL, for messages and the summary
    backend: Backend
    admission: AdmissionController
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    weight: float = 1.0
    answered: int = 0  # requests it answered
    errors: int = 0  # retryable failures it returned
    # Asked once here, not per call: isinstance on a Protocol walks its attributes (~65 µs).
    cancellable: bool = field(init=False)

    def __post_init__(self) -> None:
        self.cancellable = isinstance(self.backend, CancellableBackend)


@dataclass
class RoutedTicket:
    """An admitted request: the route it goes to, and that route's admission ticket."""

    route: Route
    ticket: Ticket
    probe: bool = False  # the route's half-open probe

    @property
    def outcome(self) -> Outcome | None:
        return self.ticket.outcome

    @property
    def cut_limit(self) -> bool:
        return self.ticket.cut_limit


class Router:
    def __init__(self, routes: Sequence[Route]) -> None:
        if not routes:
            raise ValueError("a router needs at least one route")
        self.routes = list(routes)
        self._cond = threading.Condition(threading.Lock())

    @classmethod
    def single(cls, backend: Backend, admission: AdmissionController) -> Router:
        return cls([Route(name="", backend=backend, admission=admission)])

    @property
    def limit(self) -> int:
        """Requests that may be in flight now, over the routes a request may go to."""
        open_routes = [r for r in self.routes if r.breaker.allows()] or self.routes
        return sum(r.admission.limit for r in open_routes)

    def overloaded(self) -> bool:
        """Every route a request may go to is overloaded (a refusal should back off)."""
        healthy = [r for r in self.routes if r.breaker.allows()] or self.routes
        return all(r.admission.overloaded() for r in healthy)

    # -- admission -------------------------------------------------------------------------

    def acquire(self, cancel: threading.Event | None = None, avoid: Sequence[Route] = ()) -> RoutedTicket:
        """Wait for a slot on the best route (see the module's docstring)."""
        if len(self.routes) == 1:
            route = self.routes[0]
            return RoutedTicket(route, route.admission.acquire(cancel), route.breaker.admitted())
        poll_cancel = cancel is not None and not isinstance(cancel, WakingEvent)
        if isinstance(cancel, WakingEvent):
            cancel.watch(self._cond)
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    raise AdmissionCancelled
                admitted = self._try_routes(avoid)
                if admitted is not None:
                    return admitted
                # Woken by a release (a free slot); or soon anyway while a gate or a breaker's
                # cooldown runs, which ends without one.
                soon = poll_cancel or any(
                    r.breaker.state is not BreakerState.CLOSED or r.admission.gate_closed_for() > 0
                    for r in self.routes
                )
                self._cond.wait(_POLL_S if soon else _IDLE_POLL_S)

    def release(self, ticket: RoutedTicket, outcome: Outcome, exc: BaseException | None = None) -> None:
        """End an admitted request; its outcome adjusts its route's limit, gate and breaker."""
        if ticket.ticket.released:  # given up early (an abandoned hedge): nothing to learn
            return
        route = ticket.route
        route.admission.release(ticket.ticket, outcome, retry_after_of(exc))
        kind = exc.kind if isinstance(exc, RetryableBackendError) else None
        route.breaker.record(kind, succeeded=outcome is Outcome.SUCCESS, probe=ticket.probe)
        with self._cond:
            if outcome is Outcome.SUCCESS:
                route.answered += 1
            elif exc is not None and not isinstance(exc, StreamAborted):  # a call called off is no error
                route.errors += 1
            # As many waiters as there are free slots now (at least the one just freed), not
            # all of them: with hundreds waiting, waking each at every release cost ~1.5 ms
            # of CPU per request.
            free = sum(max(0, r.admission.limit - r.admission.in_flight) for r in self.routes)
            self._cond.notify(max(1, free))

    @contextmanager
    def admit(
        self, cancel: threading.Event | None = None, avoid: Sequence[Route] = ()
    ) -> Iterator[RoutedTicket]:
        """`with router.admit() as t: t.route.backend.complete(...)`: the call's outcome
        (an exception is classified by `outcome_of`) is released to its route."""
        ticket = self.acquire(cancel, avoid)
        try:
            yield ticket
        except BaseException as exc:
            self.release(ticket, outcome_of(exc), exc)
            raise
        self.release(ticket, Outcome.SUCCESS)

    def tally(self, route: Route, answered: bool) -> None:
        """Count an outcome of a request sent to `route` from elsewhere (a Ray job's row),
        not admitted here: it counts in the summary as the router's own do."""
        with self._cond:
            if answered:
                route.answered += 1
            else:
                route.errors += 1

    def report(self) -> list[dict[str, Any]]:
        """Per route: what it answered and how its breaker fared (the run's summary)."""
        return [
            {
                "url": r.name,
                "weight": r.weight,
                "answered": r.answered,
                "errors": r.errors,
                "breaker_opened": r.breaker.times_opened,
                "breaker": r.breaker.state.value,
                "concurrency_limit": r.admission.limit,
            }
            for r in self.routes
        ]

    # -- internals (called with the lock held) ---------------------------------------------

    def _try_routes(self, avoid: Sequence[Route]) -> RoutedTicket | None:
        candidates = [r for r in self.routes if r.breaker.allows()] or self.routes
        order = sorted(
            range(len(candidates)),
            key=lambda i: (
                candidates[i] in avoid and len(candidates) > 1,
                (candidates[i].admission.in_flight + 1) / candidates[i].weight,
                i,
            ),
        )
        for i in order:
            route = candidates[i]
            ticket = route.admission.try_acquire()
            if ticket is not None:
                return RoutedTicket(route, ticket, route.breaker.admitted())
        return None


@runtime_checkable
class Routed(Protocol):
    """A backend in front of several endpoints (openai/endpoint_pool.py), each a route of its
    own router: the engine sends each request straight to the route it picks."""

    router: Router
