"""The request engine: lookup -> send -> store, for every request a stage makes.

For each request it (1) answers from the store when the store holds the answer, (2) sends
the rest, (3) commits every answer to the store before handing it back, and (4) records a
request that still fails in `failed.jsonl` without storing it, so the next run simply
sends it again. Who does what:

- sending concurrently: `RequestStream` (stream.py), worker threads that each run
  `_serve` for one request, in order of submission; a batch (`run`) is a stream too;
- sending one request until it is answered: `Sender` (control/attempt.py): retries,
  admission slots, routes, hedged twins;
- sending a stage elsewhere: an `Executor` (executors/), handed the requests the store
  lacks; its answers come back through the same `_accept` and `_reject` as local ones;
- the counts: `Accounting` (accounting.py); the store: `ResponseStore` (store.py).

A fatal `BackendError` stops new work, lets in-flight calls settle, then propagates. Every
call is bounded by the timeout, so a stuck request costs one slot for that long and never
blocks the rest.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from selfinstruct.errors import BackendError, RequestsFailedError
from selfinstruct.llm.accounting import Accounting, StageBooks
from selfinstruct.llm.control.admission import AdmissionController
from selfinstruct.llm.control.attempt import GaveUp, Sender
from selfinstruct.llm.control.hedging import HedgePolicy
from selfinstruct.llm.control.retry import RetryPolicy
from selfinstruct.llm.control.routing import Routed, Router
from selfinstruct.llm.executors.base import Executor, hand_over
from selfinstruct.llm.failures import FailureLog
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.stream import RequestStream
from selfinstruct.llm.types import Backend, Completion, CompletionRequest, params_json


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
        cache_price_factors: tuple[float, float] = (0.1, 1.25),
        progress: bool = True,
        retry_policy: RetryPolicy | None = None,
        admission: AdmissionController | None = None,
        hedge: HedgePolicy | None = None,
        executor: Executor | None = None,
    ) -> None:
        # `retry_policy`, when given, replaces the default policy built from `max_retries`.
        # `admission`, when given, is shared with other engines that use the same endpoint;
        # by default the engine owns one with `concurrency` as its ceiling. A backend that
        # spans several endpoints (openai/endpoint_pool.py) brings its own router, with one
        # controller per endpoint, and each request is sent where it routes it.
        self.backend = backend
        self.store = store
        self.failed_log = Path(failed_log)
        self.failures = FailureLog(self.failed_log)
        self.timeout_s = timeout_s
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        if isinstance(backend, Routed):
            self.router = backend.router
            self.concurrency = sum(r.admission.max_limit for r in self.router.routes)
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
        self._legacy_identities = list(backend.legacy_identities())
        # Hedging only pays against a remote endpoint; a local model would compete with itself.
        self.hedge = hedge if hedge is not None and backend.hedgeable else HedgePolicy(0.0)
        self.sender = Sender(self.router, self.retry_policy, self.hedge, timeout_s)
        # (read, write): what a prompt-cache token costs, as a share of the input price.
        self.accounting = Accounting(price_per_1k_input, price_per_1k_output, *cache_price_factors)
        # Sends the stateless stages' pending requests elsewhere (a Ray job, a provider's
        # batch); None = here. Only `run` hands requests over: a stage that streams (the
        # bootstrap, whose every prompt depends on the answers before it) is always served here.
        self.executor = executor

    @property
    def admission(self) -> AdmissionController:
        """The first endpoint's admission controller (the only one, unless several endpoints)."""
        return self.router.routes[0].admission

    def key(self, request: CompletionRequest) -> str:
        return request.key(self._identity)

    def lookup(self, key: str, request: CompletionRequest, stage: str) -> Completion | None:
        """The stored answer to `request`, also when an older version keyed it otherwise.

        An answer found under a legacy key (openai/client.py's legacy_identities) is stored
        again under its current key, so it is looked up only once; it is never paid for twice.
        """
        stored = self.store.get(key)
        if stored is not None or not self._legacy_identities or self.store.opened_empty:
            return stored
        for identity in self._legacy_identities:
            stored = self.store.get(request.key(identity))
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
        if self.executor is not None:
            return self._run_on_executor(self.executor, requests, stage, show)
        with self.stream(stage, progress=show, total=len(requests)) as stream:
            futures = [stream.submit(r) for r in requests]
            return [stream.result(f) for f in futures]

    @contextlib.contextmanager
    def stream(self, stage: str, progress: bool = False, total: int | None = None) -> Iterator[RequestStream]:
        """A `RequestStream` for `stage`: submit requests one by one, read answers as they come.

        Leaving the block does not wait for answers the caller never read: those not sent
        are not sent, those at a server are stored when they come (counted as `unwaited`),
        and a local model's are called off (RequestStream.finish). If the block raises,
        nothing more is sent; calls in flight settle first, except after Ctrl-C.
        """
        started = time.monotonic()
        books = self.accounting.stage(stage)
        bar = _progress_bar(total, stage, enabled=progress)

        def looked_up(key: str, stored: Completion | None, duplicate: bool) -> None:
            books.looked_up(stored, duplicate)
            if stored is not None or duplicate:
                bar.update(1)

        def serve(
            key: str, request: CompletionRequest, abort: threading.Event, dismissed: threading.Event
        ) -> Completion | None:
            try:
                return self._serve(key, request, stage, books, abort, dismissed)
            finally:
                bar.update(1)

        stream = RequestStream(
            complete=serve,
            lookup=lambda key, request: self.lookup(key, request, stage),
            key=self.key,
            concurrency=self.concurrency,
            on_submit=looked_up,
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
            books.ended(
                time.monotonic() - started,
                stream.cancelled,
                self.router.limit,
                stopped_waiting=stream.dismissed.is_set(),
            )

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

    # -- one request the store lacks: send it, then store the answer or record the failure --

    def _serve(
        self,
        key: str,
        request: CompletionRequest,
        stage: str,
        books: StageBooks,
        abort: threading.Event,
        dismissed: threading.Event,
    ) -> Completion | None:
        if request.messages and not self.backend.chat:
            abort.set()
            raise BackendError(
                f"{stage}: chat messages need a chat model: --backend openai --api chat "
                f"(the {self._identity.get('kind', 'chosen')} backend completes text prompts)"
            )
        outcome = self.sender.send(request, stage, books, abort, dismissed)
        if isinstance(outcome, GaveUp):
            self._reject(key, request, stage, books, outcome.reason, outcome.attempts)
            return None
        self._accept(key, request, stage, books, outcome)
        return outcome

    def _accept(
        self, key: str, request: CompletionRequest, stage: str, books: StageBooks, completion: Completion
    ) -> None:
        # Durable first, then used: a crash after this line never loses a paid answer.
        self.store.put(key, stage, self._request_meta(request), completion)
        books.answered(completion, request.text_length())

    def _reject(
        self, key: str, request: CompletionRequest, stage: str, books: StageBooks, reason: str, attempts: int
    ) -> None:
        self.failures.record(stage, key, request, reason, attempts)
        books.failed(reason)

    def _run_on_executor(
        self, executor: Executor, requests: Sequence[CompletionRequest], stage: str, show: bool
    ) -> list[Completion | None]:
        """`run` through an executor: the same lookups, books, store and failure log as here."""
        started = time.monotonic()
        books = self.accounting.stage(stage)
        keys = [self.key(r) for r in requests]
        results: dict[str, Completion | None] = {}
        pending: dict[str, CompletionRequest] = {}
        for key, request in zip(keys, requests, strict=True):
            if key in results or key in pending:
                books.looked_up(None, duplicate=True)
                continue
            stored = self.lookup(key, request, stage)
            books.looked_up(stored, duplicate=False)
            if stored is None:
                pending[key] = request
            else:
                results[key] = stored
        books.sent(len(pending))
        books.priced_at(executor.price_factor)  # a provider's batch costs less per token
        bar = _progress_bar(
            len(pending), f"{stage} ({executor.name})", enabled=show and not executor.shows_progress
        )

        def accept(key: str, completion: Completion) -> None:
            self._accept(key, pending[key], stage, books, completion)
            results[key] = completion
            bar.update(1)

        def reject(key: str, reason: str, attempts: int) -> None:
            self._reject(key, pending[key], stage, books, reason, attempts)
            results[key] = None
            bar.update(1)

        try:
            hand_over(executor, stage, pending, accept, reject, lambda key, reason: books.retried())
        finally:
            bar.close()
            books.ended(time.monotonic() - started)
        return [results[key] for key in keys]

    def _request_meta(self, request: CompletionRequest) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "prompt": request.prompt,
            "params": params_json(request.params),
            "sample_index": request.sample_index,
            "backend": self._identity,
        }
        if request.messages:
            meta["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.response_schema is not None:
            meta["response_schema"] = json.loads(request.response_schema)
        return meta


def _progress_bar(total: int | None, stage: str, enabled: bool) -> Any:
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=stage, unit="req", file=sys.stderr, disable=not show, dynamic_ncols=True)
