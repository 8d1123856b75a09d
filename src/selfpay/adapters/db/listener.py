"""Wakes a worker loop as soon as work is queued, across processes and machines.

Outbox rows are added in the same transaction as `pg_notify('selfpay_work')`
(payment_repositories.wake_workers); a `selfpay worker` listens on that channel over a
connection of its own and starts its next round at once instead of at the interval. The
interval stays as the fallback (a missed notice only delays work by one interval)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import make_url

from selfpay.adapters.db.engine import normalize_url
from selfpay.adapters.db.payment_repositories import WAKE_CHANNEL

log = logging.getLogger(__name__)


class WakeListener:
    def __init__(self, database_url: str, on_wake: Callable[[], None]) -> None:
        url = make_url(normalize_url(database_url))
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_wake = on_wake
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def supported(database_url: str) -> bool:
        return make_url(normalize_url(database_url)).get_backend_name() == "postgresql"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="selfpay-wake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._on_wake()
            except psycopg.Error as exc:
                log.warning("wake listener lost its connection (%s); polling meanwhile",
                            type(exc).__name__)
                self._stopping.wait(2.0)
