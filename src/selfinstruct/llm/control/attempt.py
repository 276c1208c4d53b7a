"""Sending one request until it is answered or fails for good: retries, tries, slots, twins.

`Sender.send` is everything that happens between "this request is not in the store" and
"here is its answer", in one place, top to bottom:

1. **retries** (`send`): a try that failed in a way another may fix is tried again after
   the `RetryPolicy`'s pause, up to its limit, preferring a route that did not just fail it;
2. **a try** (`_try`): one call, and past the stage's hedge delay a twin of it on the next
   free route (hedging.py's `race`); the first good answer wins;
3. **a call** (`_call`): an admission slot on the route the `Router` picks (its adaptive
   limit, Retry-After gate and breaker), then the backend's `complete`; the outcome adjusts
   that route's limit, gate and breaker.

It stores nothing and logs nothing: the engine stores the answer, or records the failure,
with what `send` returns. It counts what only it sees in the stage's books: each call as
it is admitted (a request's first as sent, later ones as retries, twins as hedges, so
that the counts are what a server received), and refusals.

A request whose stream is dismissed (nobody waits for its answer any more) starts no
call, retry or twin; a call already running goes on and its answer is returned (the
engine stores it), except on a backend that can call a running call off (a local model,
`CancellableBackend`), which is told to.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.accounting import StageBooks
from selfinstruct.llm.control.admission import AdmissionCancelled, Outcome, outcome_of
from selfinstruct.llm.control.hedging import HedgePolicy, LatencyWindow, race
from selfinstruct.llm.control.retry import RetryPolicy
from selfinstruct.llm.control.routing import Route, RoutedTicket, Router
from selfinstruct.llm.types import CancellableBackend, Completion, CompletionRequest, StreamAborted


@dataclass(frozen=True)
class GaveUp:
    """A request that failed after every retry: why (the last error), and how many calls it took."""

    reason: str
    attempts: int


@dataclass
class _Job:
    """One request on its way: what every try and call of it needs."""

    request: CompletionRequest
    stage: str
    books: StageBooks
    abort: threading.Event  # set when the stream sends nothing more (a fatal error, or dismissed)
    dismissed: threading.Event  # set when nobody waits for the answer any more
    window: LatencyWindow  # the stage's recent latencies (its hedge delay)
    failed_on: list[Route] = field(default_factory=list)  # routes that failed it: a retry goes elsewhere
    calls: int = 0  # first calls and retries admitted so far (twins not counted)


class _Abandoned(Exception):
    """A call whose twin answered first failed afterwards; nobody waits for it."""


# What a call still running at the end of its race tells its endpoint's breaker.
_OUTRUN = RetryableBackendError("still running when its race ended", kind="lost")


class Sender:
    def __init__(
        self, router: Router, retry_policy: RetryPolicy, hedge: HedgePolicy, timeout_s: float
    ) -> None:
        self.router = router
        self.retry_policy = retry_policy
        self.hedge = hedge
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._latencies: dict[str, LatencyWindow] = {}  # per stage
        self._hedges_started: dict[str, int] = {}  # per stage, counted against the budget

    def send(
        self,
        request: CompletionRequest,
        stage: str,
        books: StageBooks,
        abort: threading.Event,
        dismissed: threading.Event | None = None,
    ) -> Completion | GaveUp:
        """The answer, or `GaveUp` once the retry policy allows no more tries.

        Raises `BackendError` (fatal: `abort` is set for the other requests) and
        `StreamAborted` (another request's fatal error ended this one's wait, or the stream
        was dismissed before an answer came).
        """
        with self._lock:
            window = self._latencies.setdefault(stage, LatencyWindow())
        job = _Job(request, stage, books, abort, dismissed or threading.Event(), window)
        retries = 0
        while True:
            try:
                return self._try(job)
            except RetryableBackendError as exc:
                if job.dismissed.is_set():  # nobody waits for it: no retry, and no failure to record
                    raise StreamAborted from None
                if not self.retry_policy.allows_retry(retries):
                    return GaveUp(str(exc), retries + 1)
                retries += 1
                # A refusal backs off only while refusals are a pattern; a stray 503 from a
                # server that answers the rest is a glitch (its Retry-After still holds).
                overload = outcome_of(exc) is Outcome.OVERLOAD and self.router.overloaded()
                # Event.wait doubles as an interruptible sleep: a fatal error elsewhere ends it.
                if abort.wait(self.retry_policy.delay(retries, exc.retry_after, overload)):
                    raise StreamAborted from None
            except BackendError:
                abort.set()  # fatal: the stream sends nothing more
                raise

    # -- one try: a call, and a twin when it runs long ----------------------------------

    def _try(self, job: _Job) -> Completion:
        if self.hedge.budget <= 0:
            return self._call(job)

        def may_hedge() -> bool:
            # Counted against the budget when decided; in `hedged` once really sent.
            if job.abort.is_set():
                return False
            tries = job.books.tries()
            with self._lock:
                started = self._hedges_started.get(job.stage, 0)
                allowed = self.hedge.allows(started, tries)
                self._hedges_started[job.stage] = started + allowed
            return allowed

        held: list[RoutedTicket] = []  # the admission slots of this race's calls
        calls = itertools.count()
        lost: RetryableBackendError | None = None
        try:
            return race(
                lambda abandoned, sent: self._call(
                    job, abandoned=abandoned, held=held, is_hedge=next(calls) > 0, sent=sent
                ),
                lambda: job.window.hedge_delay(self.hedge),
                may_hedge,
                job.books.hedge_won,
                job.abort,
                self.hedge.give_up,
                dismissed=job.dismissed,
            )
        except RetryableBackendError as exc:
            lost = exc if exc.kind == "lost" else None
            raise
        finally:
            # An abandoned call may hang until its timeout; its slot is given back now, or a
            # few hung connections would hold every slot. A call still running when its race
            # ended (a twin answered, or it was taken for lost) counts against its endpoint's
            # breaker as lost: a hung server never answers, not even with an error, and a
            # healthy one answers enough others in between never to open it.
            for ticket in list(held):
                if not ticket.ticket.released:
                    self.router.release(ticket, Outcome.FAILURE, lost or _OUTRUN)
                if lost is not None:
                    job.failed_on.append(ticket.route)

    # -- one call: a slot on a route, then the backend ----------------------------------

    def _call(
        self,
        job: _Job,
        abandoned: threading.Event | None = None,
        held: list[RoutedTicket] | None = None,
        is_hedge: bool = False,
        sent: Callable[[], None] | None = None,
    ) -> Completion:
        """One backend call under admission control (a slot under an endpoint's adaptive
        limit, its Retry-After gate and its breaker); its outcome adjusts all three."""
        try:
            with self.router.admit(cancel=job.abort, avoid=job.failed_on) as ticket:
                if held is not None:
                    held.append(ticket)
                if abandoned is not None and abandoned.is_set():
                    if is_hedge:  # never sent: its share of the budget goes back
                        with self._lock:
                            self._hedges_started[job.stage] -= 1
                    raise _Abandoned("admitted after its race was over")
                if is_hedge:
                    job.books.hedged()
                else:
                    (job.books.retried if job.calls else job.books.sent)()
                    job.calls += 1
                if sent is not None:
                    sent()
                started = time.monotonic()
                backend = ticket.route.backend
                try:
                    if ticket.route.cancellable:
                        completion = cast(CancellableBackend, backend).complete_cancellable(
                            job.request, self.timeout_s, job.dismissed
                        )
                    else:
                        completion = backend.complete(job.request, self.timeout_s)
                except RetryableBackendError as exc:
                    if abandoned is not None and abandoned.is_set():
                        # Its twin already answered: a timeout here is not the endpoint's load.
                        raise _Abandoned(str(exc)) from None
                    job.failed_on.append(ticket.route)
                    raise
        except AdmissionCancelled:
            raise StreamAborted from None
        except RetryableBackendError:
            if ticket.outcome is Outcome.OVERLOAD:
                job.books.throttled(ticket.cut_limit)
            raise
        job.window.add(time.monotonic() - started)
        return completion
