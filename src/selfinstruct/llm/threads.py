"""Daemon threads for the request layer: pools of them, and an event that wakes its waiters.

Calls to a model may hang until their timeout. `ThreadPoolExecutor`'s threads are joined
when the interpreter exits, so after Ctrl-C a process would wait for every hung call;
these threads are daemons, and the process exits at once. Nothing is lost by that: an
answer is stored only once complete.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class DaemonPool:
    """A minimal thread pool of daemon threads (ThreadPoolExecutor's are joined at exit)."""

    def __init__(self, max_workers: int, name: str = "llm") -> None:
        self._max = max(1, max_workers)
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            elif len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            _settle(*job)
            with self._lock:
                self._idle += 1


# The calls of every race (control/hedging.py): one thread per call running at once, reused.
# No bound: a twin must start beside calls that hang, never queue behind them.
_calls = DaemonPool(max_workers=1 << 20, name="llm-call")


def run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run `fn` at once on an idle daemon thread (a new one if none is idle), which never
    holds up the process's exit. Starting a thread per call cost ~0.1 ms of CPU each."""
    return _calls.submit(fn, *args)


def _new_pool_in_child() -> None:
    # A forked child has none of its parent's threads: the pool's idle count would be a lie.
    global _calls
    _calls = DaemonPool(max_workers=1 << 20, name="llm-call")


os.register_at_fork(after_in_child=_new_pool_in_child)


class WakingEvent(threading.Event):
    """An event that also notifies the conditions watching it when it is set.

    A stream's abort event, watched by the admission controllers its requests wait in: they
    wait without a timeout and are woken when it is set, instead of looking at it ten times
    a second (with four waiting workers per slot that polling cost ~0.3 ms of CPU per request).
    """

    def __init__(self) -> None:
        super().__init__()
        self._watchers: list[threading.Condition] = []
        self._watchers_lock = threading.Lock()

    def watch(self, condition: threading.Condition) -> None:
        """Notify `condition` (all its waiters) when this event is set; once per condition."""
        with self._watchers_lock:
            if not any(w is condition for w in self._watchers):
                self._watchers.append(condition)

    def set(self) -> None:
        super().set()
        with self._watchers_lock:
            watchers = list(self._watchers)
        for condition in watchers:
            with condition:
                condition.notify_all()


def _settle(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run `fn(*args)` into `future`, unless it was cancelled first."""
    if future.set_running_or_notify_cancel():
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
