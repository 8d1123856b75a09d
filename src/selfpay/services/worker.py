"""The background work of a web instance: post paid orders, ask channels about silent
orders, deliver messages, send work orders and fetch their news. Several instances may
run it at once: postings and tickets are claimed (FOR UPDATE SKIP LOCKED on PostgreSQL,
then a lease), and both are idempotent in the billing system (by payment id, by ticket
number), so a race only repeats a harmless call."""

from __future__ import annotations

import logging

from selfpay.services.devices import Devices
from selfpay.services.payments import Payments
from selfpay.services.ports import Notifier
from selfpay.services.work_orders import WorkOrders

log = logging.getLogger(__name__)


def run_once(payments: Payments, notifier: Notifier, *,
             work_orders: WorkOrders | None = None, reconcile: bool = True,
             limit: int = 20, devices: Devices | None = None) -> dict[str, int]:
    """One round; returns how many postings, reconciled orders, messages, work orders
    and offline kiosks it handled. A failing step is logged and does not keep the others
    from running. Kiosks are swept for silence with the reconcile rounds."""
    counts = {"posted": 0, "reconciled": 0, "messages": 0, "submitted": 0, "updated": 0,
              "offline": 0}
    if reconcile and devices is not None:
        try:
            counts["offline"] = len(devices.sweep())
        except Exception:  # noqa: BLE001
            log.exception("device sweep failed")
    try:
        counts["posted"] = payments.dispatch_postings(limit=limit)
    except Exception:  # noqa: BLE001 - isolated: the next round tries again
        log.exception("posting round failed")
    if reconcile:
        try:
            counts["reconciled"] = payments.reconcile_pending()
        except Exception:  # noqa: BLE001
            log.exception("reconcile round failed")
    try:
        counts["messages"] = payments.deliver_messages(notifier, limit=limit)
    except Exception:  # noqa: BLE001
        log.exception("message round failed")
    if work_orders is not None:
        try:
            counts.update(work_orders.run_round(limit))
        except Exception:  # noqa: BLE001
            log.exception("work order round failed")
    return counts
