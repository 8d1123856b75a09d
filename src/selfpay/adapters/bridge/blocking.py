"""Blocking calls (the billing adapter) on worker threads, results back on one loop.

`loop.run_in_executor` costs, per call, a concurrent Future with its Condition, a
chained asyncio Future and a write to the loop's self-pipe; under load that hand-off
was the largest part of the agent's own work. Here a job is a tuple on a SimpleQueue,
and finished jobs are handed back in batches: one `call_soon_threadsafe` wakes the loop
for every result that completed while it was busy.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

A = TypeVar("A")
R = TypeVar("R")
_Job = tuple[Callable[[Any], Any], Any, "asyncio.Future[Any]"]


class BlockingCalls:
    def __init__(self, workers: int, *, name: str = "selfpay-blocking") -> None:
        self._workers = max(1, workers)
        self._name = name
        self._jobs: SimpleQueue[_Job | None] = SimpleQueue()
        self._done: deque[tuple[asyncio.Future[Any], bool, Any]] = deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    async def run(self, fn: Callable[[A], R], arg: A) -> R:
        """`fn(arg)` on a worker thread; its result or exception, awaited here."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            # daemon: an agent dropped without shutdown() must not keep the process alive
            self._threads = [threading.Thread(target=self._work, name=f"{self._name}_{i}",
                                              daemon=True) for i in range(self._workers)]
            for t in self._threads:
                t.start()
        elif loop is not self._loop:
            raise RuntimeError("BlockingCalls serves one event loop")
        fut: asyncio.Future[R] = loop.create_future()
        self._jobs.put((fn, arg, fut))
        return await fut

    def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while (job := self._jobs.get()) is not None:
            fn, arg, fut = job
            try:
                outcome = (fut, True, fn(arg))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                outcome = (fut, False, exc)
            with self._lock:
                self._done.append(outcome)
                if self._wake_pending:
                    continue  # the loop has not drained the last batch yet: it takes this too
                self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:
                return  # the loop is closed: nobody waits any more

    def _deliver(self) -> None:
        with self._lock:
            batch = list(self._done)
            self._done.clear()
            self._wake_pending = False
        for fut, ok, value in batch:
            if fut.done():
                continue  # its caller was cancelled
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def shutdown(self) -> None:
        """Cancel the calls not started, let running ones finish, join the threads."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except Empty:
                break
            if job is not None:
                job[2].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()
        self._threads = []
