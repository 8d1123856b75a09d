"""Runs services.worker.run_once on a background thread of a web instance: one thread
for postings, reconciliation, messages and work orders."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from selfpay.services.devices import Devices
from selfpay.services.payments import Payments
from selfpay.services.ports import Notifier
from selfpay.services.work_orders import WorkOrders
from selfpay.services.worker import run_once

log = logging.getLogger(__name__)


class WorkerThread:
    """Calls run_once every `interval_s` seconds (reconciling every `reconcile_interval_s`)
    until stop(). wake() starts the next round at once, e.g. right after a payment
    notification, so that posting does not wait for the interval."""

    def __init__(self, payments: Payments, notifier: Notifier, *,
                 work_orders: WorkOrders | None = None, devices: Devices | None = None,
                 interval_s: float = 1.0,
                 reconcile_interval_s: float = 15.0, name: str = "selfpay-worker",
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._payments = payments
        self._notifier = notifier
        self._work_orders = work_orders
        self._devices = devices
        self._interval = interval_s
        self._reconcile_interval = reconcile_interval_s
        self._name = name
        self._monotonic = monotonic
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.rounds = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current round and end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():  # pragma: no cover - a billing call hanging past its timeout
            log.warning("worker thread did not stop within %.0f s", timeout)

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        next_reconcile = self._monotonic()
        while not self._stopping.is_set():
            reconcile = self._monotonic() >= next_reconcile
            if reconcile:
                next_reconcile = self._monotonic() + self._reconcile_interval
            try:
                counts = run_once(self._payments, self._notifier,
                                  work_orders=self._work_orders, reconcile=reconcile,
                                  devices=self._devices)
            except Exception:  # noqa: BLE001 - run_once isolates its steps; belt and braces
                log.exception("worker round failed")
                counts = {}
            self.rounds += 1
            if max(counts.values(), default=0) >= 20:
                continue  # more may be waiting: go on at once
            self._wake.wait(self._interval)
            self._wake.clear()  # a wake() during the round above has been served now
