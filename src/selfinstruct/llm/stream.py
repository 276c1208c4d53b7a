"""Requests sent as they are submitted, answered through futures: the engine's one way of sending.

A batch (`RequestEngine.run`) submits all its requests at once; the bootstrap submits a few
at a time and reads the answers in prompt order while later prompts are still in flight.
Both go through a `RequestStream`:

- a request whose answer is stored is answered at once, without a thread;
- a request with the same key as one already in flight shares its future (sent once);
- the rest run on worker threads (4 per unit of concurrency; the admission controller
  decides how many of them may call the backend at a moment, the others wait there or in
  a retry's backoff).

The workers are daemon threads (threads.py): after Ctrl-C the process exits at once
instead of waiting for calls in flight, which a hung connection would hold until its
timeout. An answer is stored only once complete, so nothing half-written is left.

A fatal error in one request (`BackendError`) stops the stream: queued requests are not
sent, in-flight ones settle (and store what they got), and the error reaches the caller
from `result()`.

A caller that is done before reading every answer (the bootstrap, once it has its N
instructions) is not kept waiting for the rest: `finish` then dismisses them. Requests
not sent yet are not sent (no call, retry or twin starts); calls already at a server run
on and store their answer when it comes, for a later, bigger run; a local model calls its
sequences off, which would otherwise hold the CPU that the next stage needs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, wait

from selfinstruct.llm.threads import DaemonPool, WakingEvent
from selfinstruct.llm.types import Completion, CompletionRequest, StreamAborted

WORKERS_PER_SLOT = 4


# (key, request, abort event, dismissed event) -> the stored completion, or None after every
# retry failed.
CompleteFn = Callable[[str, CompletionRequest, threading.Event, threading.Event], Completion | None]
# (key, request) -> the stored completion, if any.
LookupFn = Callable[[str, CompletionRequest], Completion | None]


class RequestStream:
    def __init__(
        self,
        complete: CompleteFn,
        lookup: LookupFn,
        key: Callable[[CompletionRequest], str],
        concurrency: int,
        on_submit: Callable[[str, Completion | None, bool], None],
        hedged: bool = False,
    ) -> None:
        self._complete = complete
        self._lookup = lookup
        self._key = key
        self._on_submit = on_submit  # (key, stored answer or None, duplicate?) for the accounting
        self.concurrency = max(1, concurrency)
        # Calls that run long get twins (a remote server): a caller reading answers in order
        # may want more requests queued, to keep the server busy while one waits for its twin.
        self.hedged = hedged
        # Set: send nothing more (a fatal error, the caller's failure, or dismissal).
        self.abort = WakingEvent()
        # Set when the caller stopped waiting for answers it never read (see the module doc).
        self.dismissed = threading.Event()
        self._read: set[Future[Completion | None]] = set()
        # More workers than calls allowed at once: a request waiting out its retry backoff
        # holds a worker but no admission slot, and must not keep others from being sent.
        self._pool = DaemonPool(WORKERS_PER_SLOT * self.concurrency)
        self._in_flight: dict[str, Future[Completion | None]] = {}
        self.cancelled = 0

    def submit(self, request: CompletionRequest) -> Future[Completion | None]:
        """A future of the request's completion (None if it failed after every retry)."""
        key = self._key(request)
        shared = self._in_flight.get(key)
        if shared is not None:
            self._on_submit(key, None, True)
            return shared
        stored = self._lookup(key, request)
        self._on_submit(key, stored, False)
        if stored is not None:
            answered: Future[Completion | None] = Future()
            answered.set_result(stored)
            return answered
        future = self._pool.submit(self._work, key, request)
        self._in_flight[key] = future
        return future

    def result(self, future: Future[Completion | None]) -> Completion | None:
        """The future's completion; a fatal error anywhere in the stream is raised here."""
        self._read.add(future)
        try:
            return future.result()
        except StreamAborted:
            self._raise_fatal()
            raise

    def finish(self) -> None:
        """The caller is done: dismiss the answers it never read that are still to come."""
        if any(f not in self._read and not f.done() for f in self._in_flight.values()):
            self.dismiss()
        else:
            self._pool.shutdown(wait=True)

    def dismiss(self) -> None:
        """Stop waiting: send nothing more; calls running finish on their own (or, on a local
        model, are called off)."""
        self.dismissed.set()
        self.abort.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stop(self, interrupted: bool) -> None:
        """The caller failed: send nothing more. In-flight calls settle first, except on Ctrl-C."""
        self.abort.set()
        self._pool.shutdown(wait=not interrupted, cancel_futures=True)

    def _work(self, key: str, request: CompletionRequest) -> Completion | None:
        if self.abort.is_set():
            raise StreamAborted
        return self._complete(key, request, self.abort, self.dismissed)

    def _raise_fatal(self) -> None:
        futures = list(self._in_flight.values())
        wait(futures)
        errors: list[BaseException] = [e for e in (f.exception() for f in futures if not f.cancelled()) if e]
        self.cancelled = sum(isinstance(e, StreamAborted) for e in errors) + sum(
            f.cancelled() for f in futures
        )
        fatal = [e for e in errors if not isinstance(e, StreamAborted)]
        if fatal:
            raise fatal[0]
