"""Daemon threads for the request layer: a small pool, and a thread per call.

Calls to a model may hang until their timeout. `ThreadPoolExecutor`'s threads are joined
when the interpreter exits, so after Ctrl-C a process would wait for every hung call;
these threads are daemons, and the process exits at once. Nothing is lost by that: an
answer is stored only once complete.
"""

from __future__ import annotations

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


def run_in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run `fn` on a thread of its own that never holds up the process's exit."""
    future: Future[Any] = Future()
    threading.Thread(target=_settle, args=(future, fn, args), name="llm-attempt", daemon=True).start()
    return future


def _settle(future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run `fn(*args)` into `future`, unless it was cancelled first."""
    if future.set_running_or_notify_cancel():
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
