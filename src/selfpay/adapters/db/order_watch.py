"""Tells a waiting status request that its order changed, across processes and machines.

A customer's status page asks `GET /api/v1/orders/{no}?since=<version>&wait_s=25`: the
request waits until the order's version moves past `since` or the time is up (a long
poll), instead of the page asking every second. With a thousand customers paying at
once, that is one request per change instead of one per second each.

On PostgreSQL a trigger (migration 0015) sends `pg_notify('selfpay_order', order_no)` when
an order row is updated; the notice goes out when that transaction commits, from
whichever process made the change. Each web process listens on one connection of its own
(a thread) and wakes the requests waiting for that order on the app's event loop. On
SQLite (the demo, one process) there is nothing to listen to: a waiting request looks
again every `FALLBACK_POLL_S`. A lost notice costs the same delay at most: every waiter
looks again at least that often.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict

from sqlalchemy import make_url

from selfpay.adapters.db.engine import normalize_url

log = logging.getLogger(__name__)

CHANNEL = "selfpay_order"
FALLBACK_POLL_S = 1.0  # SQLite, or PostgreSQL while the listening connection is down


class OrderWatch:
    """`await watch.changed(order_no, timeout)`: returns when a change of that order is
    announced, or after `timeout` (or FALLBACK_POLL_S while no listener runs). The
    caller then reads the order again; a wake-up is a hint, never the state itself."""

    def __init__(self, database_url: str = "") -> None:
        url = make_url(normalize_url(database_url)) if database_url else None
        self._dsn = (url.set(drivername="postgresql").render_as_string(hide_password=False)
                     if url is not None and url.get_backend_name() == "postgresql" else "")
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._dsn:
            self._thread = threading.Thread(target=self._run, name="selfpay-order-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    async def changed(self, order_no: str, timeout: float) -> None:
        if not self._listening.is_set():
            timeout = min(timeout, FALLBACK_POLL_S)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[order_no].add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiters.get(order_no)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._waiters[order_no]

    def _wake(self, order_no: str) -> None:
        with self._lock:
            futures = list(self._waiters.get(order_no, ()))
        loop = self._loop
        if futures and loop is not None:
            loop.call_soon_threadsafe(_resolve, futures)

    def _wake_all(self) -> None:
        """The listener (re)connected: notices may have been missed meanwhile."""
        with self._lock:
            futures = [f for waiting in self._waiters.values() for f in waiting]
        if futures and self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, futures)

    def _run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    self._wake_all()
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._wake(notice.payload)
            except psycopg.Error as exc:
                self._listening.clear()
                log.warning("order watch lost its connection (%s); status requests look "
                            "again every %.0f s meanwhile", type(exc).__name__,
                            FALLBACK_POLL_S)
                self._stopping.wait(2.0)
        self._listening.clear()


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
