"""device_orders: the kiosk an order was made at, and the once-only report of its outcome.

Kept apart from the unit of work: the kiosk router writes one row when it creates an
order and claims the row once when a status poll first sees the order settled. The claim
is one conditional UPDATE (outcome = '' -> ok | failed), so two polls racing on two
server processes report the outcome once between them.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from selfpay.adapters.db.tables import device_orders


class KioskOrders:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, order_no: str, device_id: str, now: dt.datetime) -> None:
        """Remember the order's device; a replay of the same order changes nothing."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(device_orders).values(
                    order_no=order_no, device_id=device_id, created_at=now, outcome=""))
        except IntegrityError:
            pass  # recorded by the first call of this intent

    def device_of(self, order_no: str) -> str | None:
        with self._engine.connect() as conn:
            found = conn.execute(select(device_orders.c.device_id).where(
                device_orders.c.order_no == order_no)).scalar_one_or_none()
        return None if found is None else str(found)

    def claim_outcome(self, order_no: str, *, ok: bool, now: dt.datetime) -> bool:
        """True for the one caller that gets to report this order's outcome."""
        with self._engine.begin() as conn:
            result = conn.execute(update(device_orders).where(
                device_orders.c.order_no == order_no, device_orders.c.outcome == "",
            ).values(outcome="ok" if ok else "failed", reported_at=now))
        return bool(result.rowcount == 1)

    def outcome(self, order_no: str) -> str | None:
        with self._engine.connect() as conn:
            found = conn.execute(select(device_orders.c.outcome).where(
                device_orders.c.order_no == order_no)).scalar_one_or_none()
        return None if found is None else str(found)
