"""Repositories of work orders over SQLAlchemy Core: the DMZ's tickets (with their
outbox columns) and the built-in ledger's own copy. Like repositories.py: they use the
unit of work's Connection, never commit, store UTC and read back aware datetimes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from selfpay.adapters.db import tables as t
from selfpay.adapters.db.repositories import (
    _aware,
    _for_update,
    _is_unique_violation,
    _new_id,
    _page,
    _utc,
)
from selfpay.domain.work_orders import WorkOrderKind, WorkOrderStatus
from selfpay.services.ports import DuplicateKey, LedgerWorkOrder, Page, WorkOrder


def _work_order(row: Row[Any]) -> WorkOrder:
    return WorkOrder(
        id=row.id, ticket_no=row.ticket_no, biller=row.biller, account=row.account,
        kind=WorkOrderKind(row.kind), description=row.description,
        contact_phone=row.contact_phone, status=WorkOrderStatus(row.status),
        created_at=_aware(row.created_at), updated_at=_aware(row.updated_at),
        next_attempt_at=None if row.next_attempt_at is None else _aware(row.next_attempt_at),
        billing_ref=row.billing_ref, attempts=row.attempts, last_error=row.last_error,
        note=row.note,
    )


def _mutable(order: WorkOrder) -> dict[str, Any]:
    return {
        "status": order.status.value, "billing_ref": order.billing_ref, "note": order.note,
        "attempts": order.attempts, "next_attempt_at": _utc(order.next_attempt_at),
        "last_error": order.last_error, "updated_at": _utc(order.updated_at),
    }


class SqlAlchemyWorkOrderRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, order: WorkOrder) -> int:
        try:
            result = self._conn.execute(insert(t.work_orders).values(
                ticket_no=order.ticket_no, biller=order.biller, account=order.account,
                kind=order.kind.value, description=order.description,
                contact_phone=order.contact_phone, created_at=_utc(order.created_at),
                **_mutable(order),
            ))
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateKey(order.ticket_no) from exc
            raise
        order.id = _new_id(result)
        return order.id

    def get(self, ticket_no: str, *, for_update: bool = False) -> WorkOrder | None:
        stmt = select(t.work_orders).where(t.work_orders.c.ticket_no == ticket_no)
        row = self._conn.execute(_for_update(stmt, for_update)).first()
        return None if row is None else _work_order(row)

    def save(self, order: WorkOrder) -> None:
        self._conn.execute(update(t.work_orders)
                           .where(t.work_orders.c.ticket_no == order.ticket_no)
                           .values(**_mutable(order)))

    def due(self, now: dt.datetime, statuses: Sequence[str], *,
            limit: int = 20) -> list[WorkOrder]:
        w = t.work_orders.c
        stmt = (select(t.work_orders)
                .where(w.status.in_(list(statuses)), w.next_attempt_at <= _utc(now))
                .order_by(w.next_attempt_at).limit(limit))
        if self._conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return [_work_order(r) for r in self._conn.execute(stmt)]

    def by_tickets(self, ticket_nos: Sequence[str]) -> list[WorkOrder]:
        if not ticket_nos:
            return []
        w = t.work_orders.c
        rows = self._conn.execute(select(t.work_orders)
                                  .where(w.ticket_no.in_(list(ticket_nos)))
                                  .order_by(w.created_at.desc(), w.id.desc()))
        return [_work_order(r) for r in rows]

    def count_since(self, biller: str, account: str, since: dt.datetime) -> int:
        w = t.work_orders.c
        return int(self._conn.execute(
            select(func.count()).select_from(t.work_orders)
            .where(w.biller == biller, w.account == account, w.created_at >= _utc(since))
        ).scalar_one())

    def list(self, *, status: str = "", limit: int = 50, offset: int = 0) -> Page[WorkOrder]:
        w = t.work_orders.c
        stmt = select(t.work_orders)
        if status:
            stmt = stmt.where(w.status == status)
        rows, total = _page(self._conn, stmt, (w.created_at.desc(), w.id.desc()), limit,
                            offset)
        return Page([_work_order(r) for r in rows], total)


def _ledger_work_order(row: Row[Any]) -> LedgerWorkOrder:
    return LedgerWorkOrder(
        id=row.id, ticket_no=row.ticket_no, biller=row.biller, account=row.account,
        kind=row.kind, description=row.description, contact_phone=row.contact_phone,
        status=row.status, created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at), note=row.note,
    )


class SqlAlchemyLedgerWorkOrderRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, order: LedgerWorkOrder) -> int:
        try:
            result = self._conn.execute(insert(t.ledger_work_orders).values(
                ticket_no=order.ticket_no, biller=order.biller, account=order.account,
                kind=order.kind, description=order.description,
                contact_phone=order.contact_phone, status=order.status, note=order.note,
                created_at=_utc(order.created_at), updated_at=_utc(order.updated_at),
            ))
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateKey(order.ticket_no) from exc
            raise
        order.id = _new_id(result)
        return order.id

    def by_ticket(self, ticket_no: str) -> LedgerWorkOrder | None:
        row = self._conn.execute(select(t.ledger_work_orders)
                                 .where(t.ledger_work_orders.c.ticket_no == ticket_no)).first()
        return None if row is None else _ledger_work_order(row)

    def get(self, order_id: int, *, for_update: bool = False) -> LedgerWorkOrder | None:
        if not 0 < order_id <= 2**31 - 1:  # INTEGER key: a larger id is not there
            return None
        stmt = select(t.ledger_work_orders).where(t.ledger_work_orders.c.id == order_id)
        row = self._conn.execute(_for_update(stmt, for_update)).first()
        return None if row is None else _ledger_work_order(row)

    def save(self, order: LedgerWorkOrder) -> None:
        self._conn.execute(update(t.ledger_work_orders)
                           .where(t.ledger_work_orders.c.id == order.id)
                           .values(status=order.status, note=order.note,
                                   updated_at=_utc(order.updated_at)))

    def list(self, *, limit: int = 50, offset: int = 0) -> Page[LedgerWorkOrder]:
        c = t.ledger_work_orders.c
        rows, total = _page(self._conn, select(t.ledger_work_orders),
                            (c.created_at.desc(), c.id.desc()), limit, offset)
        return Page([_ledger_work_order(r) for r in rows], total)
