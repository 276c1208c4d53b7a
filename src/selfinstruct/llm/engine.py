"""The request engine: turns a batch of requests into completions, durably and concurrently.

For each batch it (1) answers what the store already holds, (2) sends the rest to the
backend from a thread pool, each call admitted by the endpoint's `AdmissionController`
(adaptive concurrency and the Retry-After gate) and retried on transient failures under a
`RetryPolicy` (when to try again), (3) commits every answer to the store before handing it
back, and (4) records requests that still fail in `failed.jsonl` without storing them, so
the next run simply sends them again. A fatal `BackendError` stops new work, lets
in-flight calls settle, then propagates. Every call is bounded by the timeout, so a stuck
request costs one slot for that long and never blocks the rest.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from selfinstruct.errors import BackendError, RequestsFailedError, RetryableBackendError
from selfinstruct.llm.accounting import Accounting
from selfinstruct.llm.admission import AdmissionCancelled, AdmissionController, Outcome, outcome_of
from selfinstruct.llm.base import Backend, Completion, CompletionRequest
from selfinstruct.llm.executor import STATEFUL_STAGES, Executor
from selfinstruct.llm.hedging import HedgePolicy, LatencyWindow, race
from selfinstruct.llm.retry import RetryPolicy
from selfinstruct.llm.routing import Route, RoutedTicket, Router
from selfinstruct.llm.stats import StageStats
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.stream import RequestStream, StreamAborted

_PROMPT_HEAD_CHARS = 200


class _Abandoned(Exception):
    """A call whose twin answered first failed afterwards; nobody waits for it."""


# What a call still running at the end of its race tells its endpoint's breaker.
_OUTRUN = RetryableBackendError("still running when its race ended", kind="lost")


class RequestEngine:
    """Runs batches of requests against one backend, through one store."""

    def __init__(
        self,
        backend: Backend,
        store: ResponseStore,
        failed_log: Path,
        concurrency: int,
        max_retries: int,
        timeout_s: float,
        price_per_1k_input: float | None = None,
        price_per_1k_output: float | None = None,
        progress: bool = True,
        retry_policy: RetryPolicy | None = None,
        admission: AdmissionController | None = None,
        hedge: HedgePolicy | None = None,
        executor: Executor | None = None,
    ) -> None:
        # `retry_policy`, when given, replaces the default policy built from `max_retries`.
        # `admission`, when given, is shared with other engines that use the same endpoint;
        # by default the engine owns one with `concurrency` as its ceiling. A backend that
        # spans several endpoints (endpoint_pool.py) brings its own router, with one
        # controller per endpoint, and the engine sends each request where it routes it.
        self.backend = backend
        self.store = store
        self.failed_log = Path(failed_log)
        self.timeout_s = timeout_s
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        router = getattr(backend, "router", None)
        if isinstance(router, Router):
            self.router = router
            self.concurrency = sum(r.admission.max_limit for r in router.routes)
        else:
            self.concurrency = max(1, concurrency)
            self.router = Router.single(
                backend,
                admission
                or AdmissionController(
                    self.concurrency, retry_after_cap_s=self.retry_policy.retry_after_cap_s
                ),
            )
        self.progress = progress
        self._identity = backend.identity()
        legacy = getattr(backend, "legacy_identities", None)
        self._legacy_identities: list[dict[str, Any]] = list(legacy()) if callable(legacy) else []
        # Hedging only pays against a remote endpoint; a local model would compete with itself.
        self.hedge = hedge if hedge is not None and getattr(backend, "hedgeable", False) else HedgePolicy(0.0)
        self._latencies: dict[str, LatencyWindow] = {}
        self._hedges_started: dict[str, int] = {}
        self.accounting = Accounting(price_per_1k_input, price_per_1k_output)
        self._stats_lock = self.accounting.lock  # held for every change of a stage's counts
        self._log_lock = threading.Lock()
        # Sends the stateless stages' pending requests elsewhere (a Ray job); None = here.
        self.executor = executor

    @property
    def admission(self) -> AdmissionController:
        """The first endpoint's admission controller (the only one, unless several endpoints)."""
        return self.router.routes[0].admission

    def key(self, request: CompletionRequest) -> str:
        return request.key(self._identity)

    def lookup(self, key: str, request: CompletionRequest, stage: str) -> Completion | None:
        """The stored answer to `request`, also when an older version keyed it otherwise.

        An answer found under a legacy key (openai_compat.legacy_identities) is stored again
        under its current key, so it is looked up only once; it is never paid for twice.
        """
        stored = self.store.get(key)
        if stored is not None or not self._legacy_identities:
            return stored
        for identity in self._legacy_identities:
            legacy_key = request.key(identity)
            stored = self.store.get(legacy_key)
            if stored is not None:
                self.store.put(key, stage, self._request_meta(request), stored)
                return stored
        return None

    def run(
        self, requests: Sequence[CompletionRequest], stage: str, progress: bool | None = None
    ) -> list[Completion | None]:
        """Completions in request order; None where a request failed after every retry.

        `progress=False` hides this batch's bar (a stage that shows its own progress).
        """
        show = self.progress if progress is None else progress and self.progress
        if self.executor is not None and stage not in STATEFUL_STAGES:
            return self._run_on_executor(self.executor, requests, stage, show)
        with self.stream(stage, progress=show, total=len(requests)) as stream:
            futures = [stream.submit(r) for r in requests]
            return [stream.result(f) for f in futures]

    @contextlib.contextmanager
    def stream(self, stage: str, progress: bool = False, total: int | None = None) -> Iterator[RequestStream]:
        """A `RequestStream` for `stage`: submit requests one by one, read answers as they come.

        Leaving the block waits for every request sent (their answers are stored even if the
        caller no longer needs them) and raises a fatal error if one happened. If the block
        raises, nothing more is sent; calls in flight settle first, except after Ctrl-C.
        """
        started = time.monotonic()
        stats = self.accounting.stage(stage)
        bar = _progress_bar(total, stage, enabled=progress)

        def on_submit(key: str, stored: Completion | None, duplicate: bool) -> None:
            with self._stats_lock:
                stats.requests += 1
                if duplicate:
                    stats.duplicates += 1
                elif stored is not None:
                    stats.cached += 1
                    stats.cached_prompt_tokens += stored.prompt_tokens
                    stats.cached_completion_tokens += stored.completion_tokens
            if stored is not None or duplicate:
                bar.update(1)

        stream = RequestStream(
            complete=lambda key, request, abort: self._complete_with_retries(
                key, request, stage, stats, abort
            ),
            lookup=lambda key, request: self.lookup(key, request, stage),
            key=self.key,
            concurrency=self.concurrency,
            on_submit=on_submit,
            on_done=lambda: bar.update(1),
            hedged=self.hedge.budget > 0,
        )
        try:
            yield stream
            stream.finish()
        except BaseException as exc:
            stream.stop(interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        finally:
            bar.close()
            with self._stats_lock:
                stats.cancelled += stream.cancelled
                stats.elapsed_s += time.monotonic() - started
                stats.concurrency_limit = self.router.limit

    def _run_on_executor(
        self, executor: Executor, requests: Sequence[CompletionRequest], stage: str, show: bool
    ) -> list[Completion | None]:
        """`run` through an executor: the store and the accounting stay here (executor.py)."""
        started = time.monotonic()
        stats = self.accounting.stage(stage)
        keys = [self.key(r) for r in requests]
        results: dict[str, Completion | None] = {}
        pending: dict[str, CompletionRequest] = {}
        for key, request in zip(keys, requests, strict=True):
            stats.requests += 1
            if key in results or key in pending:
                stats.duplicates += 1
                continue
            stored = self.lookup(key, request, stage)
            if stored is None:
                pending[key] = request
                continue
            results[key] = stored
            stats.cached += 1
            stats.cached_prompt_tokens += stored.prompt_tokens
            stats.cached_completion_tokens += stored.completion_tokens
        stats.sent += len(pending)
        # A provider's batch costs less per token; the accounting prices it so.
        stats.price_factor = float(getattr(executor, "price_factor", 1.0))
        own_bar = getattr(executor, "shows_progress", False)  # it polls, and shows that
        bar = _progress_bar(len(pending), f"{stage} ({executor.name})", enabled=show and not own_bar)

        def answered(key: str, completion: Completion) -> None:
            if key not in pending or key in results:
                return  # not asked, or reported twice: stored once, counted once
            self.store.put(key, stage, self._request_meta(pending[key]), completion)
            results[key] = completion
            with self._stats_lock:
                stats.succeeded += 1
                stats.prompt_tokens += completion.prompt_tokens
                stats.completion_tokens += completion.completion_tokens
            bar.update(1)

        def failed(key: str, reason: str, attempts: int) -> None:
            if key not in pending or key in results:
                return
            results[key] = None
            self._record_failure(key, pending[key], stage, reason, attempts, stats)
            bar.update(1)

        try:
            executor.execute(stage, list(pending.items()), answered, failed)
            for key in pending:
                failed(key, f"{executor.name}: no result came back", 1)
        finally:
            bar.close()
            with self._stats_lock:
                stats.elapsed_s += time.monotonic() - started
        return [results[key] for key in keys]

    def complete_all(
        self, requests: Sequence[CompletionRequest], stage: str, progress: bool | None = None
    ) -> list[Completion]:
        """Every completion, or RequestsFailedError once all were tried and the good ones stored.

        A caller never goes on with a partial answer: its output would then depend on which
        requests happened to fail, and a re-run (which retries exactly those) could not
        reproduce it.
        """
        results = self.run(requests, stage, progress)
        failed = sum(r is None for r in results)
        if failed:
            raise RequestsFailedError(
                f"{stage}: {failed} of {len(results)} requests failed after retries (see {self.failed_log.name}); "
                "run the same command again to retry only those"
            )
        return [r for r in results if r is not None]

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per stage: counts, tokens, elapsed seconds, and cost when prices are known."""
        return self.accounting.report()

    def project(self, stage: str, done_units: int, total_units: int) -> dict[str, Any]:
        """Cost so far and projected for the whole stage (accounting.py)."""
        return self.accounting.project(stage, done_units, total_units)

    # -- sending ---------------------------------------------------------------------------

    def _complete_with_retries(
        self,
        key: str,
        request: CompletionRequest,
        stage: str,
        stats: StageStats,
        abort: threading.Event,
    ) -> Completion | None:
        if request.messages and not getattr(self.backend, "chat", False):
            abort.set()
            raise BackendError(
                f"{stage}: chat messages need a chat model: --backend openai --api chat "
                f"(the {self._identity.get('kind', 'chosen')} backend completes text prompts)"
            )
        with self._stats_lock:
            stats.sent += 1
        retries = 0
        failed_on: list[Route] = []  # endpoints that failed this request: a retry goes elsewhere
        while True:
            try:
                completion = self._hedged_call(request, stage, stats, abort, failed_on)
            except RetryableBackendError as exc:
                if not self.retry_policy.allows_retry(retries):
                    self._record_failure(key, request, stage, str(exc), retries + 1, stats)
                    return None
                retries += 1
                with self._stats_lock:
                    stats.retries += 1
                # Event.wait doubles as an interruptible sleep: a fatal error elsewhere ends it.
                # A refusal backs off only while refusals are a pattern; a stray 503 from a
                # server that answers the rest is a glitch (its Retry-After still holds).
                overload = outcome_of(exc) is Outcome.OVERLOAD and self.router.overloaded()
                if abort.wait(self.retry_policy.delay(retries, exc.retry_after, overload)):
                    raise StreamAborted from None
                continue
            except BackendError:
                abort.set()
                raise
            # Durable first, then used: a crash after this line never loses a paid answer.
            self.store.put(key, stage, self._request_meta(request), completion)
            with self._stats_lock:
                stats.succeeded += 1
                stats.prompt_tokens += completion.prompt_tokens
                stats.prompt_tokens_reused += int(completion.extra.get("prompt_tokens_reused", 0))
                stats.completion_tokens += completion.completion_tokens
            return completion

    def _hedged_call(
        self,
        request: CompletionRequest,
        stage: str,
        stats: StageStats,
        abort: threading.Event,
        failed_on: list[Route],
    ) -> Completion:
        """One try; past the stage's hedge delay it gets a twin, and the first good answer wins."""
        window = self._latencies.setdefault(stage, LatencyWindow())
        if self.hedge.budget <= 0:
            return self._attempt(request, stage, stats, abort, None, failed_on)

        def may_hedge() -> bool:
            # Counted against the budget when decided; in `hedged` once really sent.
            with self._stats_lock:
                started = self._hedges_started.get(stage, 0)
                allowed = self.hedge.allows(started, stats.sent + stats.retries)
                self._hedges_started[stage] = started + allowed
            return allowed

        def hedge_won() -> None:
            with self._stats_lock:
                stats.hedge_wins += 1

        held: list[RoutedTicket] = []  # the admission slots of this race's attempts
        attempts = itertools.count()
        lost: RetryableBackendError | None = None
        try:
            return race(
                lambda abandoned, sent: self._attempt(
                    request,
                    stage,
                    stats,
                    abort,
                    abandoned,
                    failed_on,
                    held,
                    is_hedge=next(attempts) > 0,
                    sent=sent,
                ),
                lambda: window.hedge_delay(self.hedge),
                may_hedge,
                hedge_won,
                abort,
                self.hedge.give_up,
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
                    failed_on.append(ticket.route)

    def _attempt(
        self,
        request: CompletionRequest,
        stage: str,
        stats: StageStats,
        abort: threading.Event,
        abandoned: threading.Event | None,
        failed_on: list[Route],
        held: list[RoutedTicket] | None = None,
        is_hedge: bool = False,
        sent: Callable[[], None] | None = None,
    ) -> Completion:
        """One backend call under admission control (a slot under an endpoint's adaptive
        limit, its Retry-After gate and its breaker); its outcome adjusts all three."""
        try:
            with self.router.admit(cancel=abort, avoid=failed_on) as ticket:
                if held is not None:
                    held.append(ticket)
                if abandoned is not None and abandoned.is_set():
                    if is_hedge:  # never sent: its share of the budget goes back
                        with self._stats_lock:
                            self._hedges_started[stage] -= 1
                    raise _Abandoned("admitted after its race was over")
                if is_hedge:
                    with self._stats_lock:
                        stats.hedged += 1
                if sent is not None:
                    sent()
                started = time.monotonic()
                try:
                    completion = ticket.route.backend.complete(request, self.timeout_s)
                except RetryableBackendError as exc:
                    if abandoned is not None and abandoned.is_set():
                        # Its twin already answered: a timeout here is not the endpoint's load.
                        raise _Abandoned(str(exc)) from None
                    failed_on.append(ticket.route)
                    raise
        except AdmissionCancelled:
            raise StreamAborted from None
        except RetryableBackendError:
            if ticket.outcome is Outcome.OVERLOAD:
                with self._stats_lock:
                    stats.throttled += 1
                    stats.throttle_events += ticket.cut_limit
            raise
        self._latencies[stage].add(time.monotonic() - started)
        return completion

    def _request_meta(self, request: CompletionRequest) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "prompt": request.prompt,
            "params": request.params.model_dump(mode="json"),
            "sample_index": request.sample_index,
            "backend": self._identity,
        }
        if request.messages:
            meta["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.response_schema is not None:
            meta["response_schema"] = json.loads(request.response_schema)
        return meta

    def _record_failure(
        self, key: str, request: CompletionRequest, stage: str, reason: str, attempts: int, stats: StageStats
    ) -> None:
        line = json.dumps(
            {
                "stage": stage,
                "key": key,
                "reason": reason,
                "attempts": attempts,
                "prompt_head": request.prompt[:_PROMPT_HEAD_CHARS],
            },
            ensure_ascii=False,
        )
        with self._log_lock:
            self.failed_log.parent.mkdir(parents=True, exist_ok=True)
            with self.failed_log.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        with self._stats_lock:
            stats.failed += 1
            stats.last_failure = reason


def _progress_bar(total: int | None, stage: str, enabled: bool) -> Any:
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=stage, unit="req", file=sys.stderr, disable=not show, dynamic_ncols=True)
