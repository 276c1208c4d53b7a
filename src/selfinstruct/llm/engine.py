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

import json
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfinstruct.errors import BackendError, RequestsFailedError, RetryableBackendError
from selfinstruct.llm.admission import AdmissionCancelled, AdmissionController, Outcome
from selfinstruct.llm.base import Backend, Completion, CompletionRequest
from selfinstruct.llm.store import ResponseStore

_PROMPT_HEAD_CHARS = 200


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

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        rng = self.rng or random
        if retry_after is not None:
            # Add a little jitter so that clients told the same time do not return together.
            return min(retry_after, self.retry_after_cap_s) + rng.uniform(0, self.base_s)
        return rng.uniform(0, min(self.cap_s, self.base_s * 2 ** (retry_number - 1)))


@dataclass
class StageStats:
    """What one stage cost.

    Without a fatal error, requests == cached + duplicates + sent and sent == succeeded + failed.
    Token counts are for answers received in this process; `cached_*_tokens` are those of
    answers replayed from the store (paid for by an earlier run).
    """

    requests: int = 0
    cached: int = 0  # answered from the store, not sent
    duplicates: int = 0  # same key as another request of the same batch, sent once
    sent: int = 0
    succeeded: int = 0
    failed: int = 0  # gave up after every retry (listed in failed.jsonl)
    cancelled: int = 0  # not finished because a fatal error stopped the batch
    retries: int = 0
    throttled: int = 0  # answers saying the endpoint is saturated (429, 503, timeout)
    throttle_events: int = 0  # of those, the ones that cut the concurrency limit
    concurrency_limit: int = 0  # the admission limit when the stage's latest batch ended
    prompt_tokens: int = 0
    prompt_tokens_reused: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    elapsed_s: float = 0.0
    last_failure: str | None = None


class _Abort(Exception):
    """Raised inside a worker when a fatal error elsewhere has stopped the batch."""


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
    ) -> None:
        # `retry_policy`, when given, replaces the default policy built from `max_retries`.
        # `admission`, when given, is shared with other engines that use the same endpoint;
        # by default the engine owns one with `concurrency` as its ceiling.
        self.backend = backend
        self.store = store
        self.failed_log = Path(failed_log)
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self.admission = admission or AdmissionController(
            self.concurrency, retry_after_cap_s=self.retry_policy.retry_after_cap_s
        )
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.progress = progress
        self._identity = backend.identity()
        self._stats: dict[str, StageStats] = {}
        self._stats_lock = threading.Lock()
        self._log_lock = threading.Lock()

    def key(self, request: CompletionRequest) -> str:
        return request.key(self._identity)

    def run(
        self, requests: Sequence[CompletionRequest], stage: str, progress: bool | None = None
    ) -> list[Completion | None]:
        """Completions in request order; None where a request failed after every retry.

        `progress=False` hides this batch's bar (a stage that shows its own progress).
        """
        started = time.monotonic()
        with self._stats_lock:
            stats = self._stats.setdefault(stage, StageStats())
        keys = [self.key(r) for r in requests]
        results: list[Completion | None] = [None] * len(requests)
        stored = self.store.get_many(keys)
        pending: dict[str, list[int]] = {}  # key -> positions asking for it, first one sent
        for i, key in enumerate(keys):
            if key in stored:
                results[i] = stored[key]
            else:
                pending.setdefault(key, []).append(i)
        with self._stats_lock:
            stats.requests += len(requests)
            stats.cached += sum(1 for k in keys if k in stored)
            for key in keys:
                if key in stored:
                    stats.cached_prompt_tokens += stored[key].prompt_tokens
                    stats.cached_completion_tokens += stored[key].completion_tokens
            stats.duplicates += sum(len(ix) - 1 for ix in pending.values())
        try:
            if pending:
                show = self.progress if progress is None else progress and self.progress
                for key, completion in self._send_all(requests, pending, stage, stats, show).items():
                    for i in pending[key]:
                        results[i] = completion
        finally:
            with self._stats_lock:
                stats.elapsed_s += time.monotonic() - started
                stats.concurrency_limit = self.admission.limit
        return results

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
        out: dict[str, dict[str, Any]] = {}
        with self._stats_lock:
            for stage, stats in self._stats.items():
                entry = asdict(stats)
                if self._priced:
                    entry["cost"] = self._cost(stats.prompt_tokens, stats.completion_tokens)
                out[stage] = entry
        return out

    def project(self, stage: str, done_units: int, total_units: int) -> dict[str, Any]:
        """Cost so far and projected for the whole stage, from its cost per unit so far.

        A unit is whatever the caller counts towards the stage's goal (instructions
        accepted, tasks classified); the engine cannot know the total, the pipeline can.
        The per-unit figure includes answers replayed from the store, so a resumed run
        projects the full run's cost, not only what is left. Cost keys are None without
        prices; per-unit and projected figures are None before the first unit is done.
        """
        if done_units < 0 or total_units < 0:
            raise ValueError(f"unit counts must not be negative ({done_units}, {total_units})")
        with self._stats_lock:
            stats = self._stats.get(stage, StageStats())
            spent_tokens = (stats.prompt_tokens, stats.completion_tokens)
            all_tokens = (
                stats.prompt_tokens + stats.cached_prompt_tokens,
                stats.completion_tokens + stats.cached_completion_tokens,
            )
        scale = total_units / done_units if done_units else None
        projected_tokens = None if scale is None else [round(t * scale) for t in all_tokens]
        result: dict[str, Any] = {
            "stage": stage,
            "done_units": done_units,
            "total_units": total_units,
            "tokens_so_far": sum(all_tokens),
            "projected_tokens": None if projected_tokens is None else sum(projected_tokens),
            "cost_this_run": None,
            "cost_so_far": None,
            "cost_per_unit": None,
            "projected_cost": None,
            "projected_remaining_cost": None,
        }
        if self._priced:
            so_far = self._cost(*all_tokens)
            result["cost_this_run"] = self._cost(*spent_tokens)
            result["cost_so_far"] = so_far
            if scale is not None:
                result["cost_per_unit"] = so_far / done_units
                result["projected_cost"] = so_far * scale
                result["projected_remaining_cost"] = max(0.0, so_far * scale - so_far)
        return result

    @property
    def _priced(self) -> bool:
        return self.price_per_1k_input is not None or self.price_per_1k_output is not None

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / 1000 * (self.price_per_1k_input or 0.0) + completion_tokens / 1000 * (
            self.price_per_1k_output or 0.0
        )

    # -- sending ---------------------------------------------------------------------------

    def _send_all(
        self,
        requests: Sequence[CompletionRequest],
        pending: dict[str, list[int]],
        stage: str,
        stats: StageStats,
        show_progress: bool,
    ) -> dict[str, Completion]:
        abort = threading.Event()
        done: dict[str, Completion] = {}
        bar = _progress_bar(len(pending), stage, enabled=show_progress)

        def work(key: str, request: CompletionRequest) -> None:
            if abort.is_set():
                raise _Abort
            completion = self._complete_with_retries(key, request, stage, stats, abort)
            if completion is not None:
                done[key] = completion
            bar.update(1)

        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(pending)), thread_name_prefix="llm")
        try:
            futures = [pool.submit(work, key, requests[ix[0]]) for key, ix in pending.items()]
            wait(futures, return_when=FIRST_EXCEPTION)
            # A fatal error: queued work will see `abort` and skip; in-flight calls finish
            # (and store what they got) before the error propagates.
            abort.set()
            wait(futures)
        except BaseException:  # Ctrl-C while waiting: stop queued work, keep what finished
            abort.set()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            raise
        pool.shutdown(wait=True)
        bar.close()
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        with self._stats_lock:
            stats.cancelled += sum(1 for e in errors if isinstance(e, _Abort))
        fatal = [e for e in errors if not isinstance(e, _Abort)]
        if fatal:
            raise fatal[0]
        return done

    def _complete_with_retries(
        self,
        key: str,
        request: CompletionRequest,
        stage: str,
        stats: StageStats,
        abort: threading.Event,
    ) -> Completion | None:
        with self._stats_lock:
            stats.sent += 1
        retries = 0
        while True:
            try:
                # Waits for a slot under the adaptive limit and for the Retry-After gate; the
                # call's outcome (success, overload, other failure) adjusts both.
                with self.admission.admit(cancel=abort) as ticket:
                    completion = self.backend.complete(request, self.timeout_s)
            except AdmissionCancelled:
                raise _Abort from None
            except RetryableBackendError as exc:
                if ticket.outcome is Outcome.OVERLOAD:
                    with self._stats_lock:
                        stats.throttled += 1
                        stats.throttle_events += ticket.cut_limit
                if not self.retry_policy.allows_retry(retries):
                    self._record_failure(key, request, stage, str(exc), retries + 1, stats)
                    return None
                retries += 1
                with self._stats_lock:
                    stats.retries += 1
                # Event.wait doubles as an interruptible sleep: a fatal error elsewhere ends it.
                if abort.wait(self.retry_policy.delay(retries, exc.retry_after)):
                    raise _Abort from None
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

    def _request_meta(self, request: CompletionRequest) -> dict[str, Any]:
        return {
            "prompt": request.prompt,
            "params": request.params.model_dump(mode="json"),
            "sample_index": request.sample_index,
            "backend": self._identity,
        }

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


def _progress_bar(total: int, stage: str, enabled: bool) -> Any:
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=stage, unit="req", file=sys.stderr, disable=not show, dynamic_ncols=True)
