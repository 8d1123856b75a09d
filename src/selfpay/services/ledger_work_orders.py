"""The built-in ledger's work-order desk (the billing side): it accepts a work order
exactly once per ticket number, and billing-side staff move it along
(accepted -> in_progress -> done | rejected)."""

from __future__ import annotations

import datetime as dt

from selfpay.domain.accounts import normalize_account, normalize_biller
from selfpay.domain.errors import AccountNotFound, InvalidInput, NotFound
from selfpay.domain.work_orders import WorkOrderKind, clean_description, is_ticket_no
from selfpay.services.ports import (
    DuplicateKey,
    LedgerWorkOrder,
    UnitOfWork,
    WorkOrderRequest,
    WorkOrderResult,
)

LEDGER_STATES = ("accepted", "in_progress", "done", "rejected")
_NEXT = {"accepted": {"in_progress", "done", "rejected"},
         "in_progress": {"done", "rejected"}, "done": set(), "rejected": set()}
REF_PREFIX = "LWO-"


class WorkOrderNotFound(NotFound):
    pass


class WorkOrderConflict(InvalidInput):
    """A ticket number that was already used for another account or kind."""


def _result(order: LedgerWorkOrder, *, duplicate: bool = False) -> WorkOrderResult:
    return WorkOrderResult(ticket_no=order.ticket_no, ref=f"{REF_PREFIX}{order.id}",
                           status=order.status, note=order.note, duplicate=duplicate)


def _same(order: LedgerWorkOrder, biller: str, account: str, kind: str) -> WorkOrderResult:
    if (order.biller, order.account, order.kind) != (biller, account, kind):
        raise WorkOrderConflict(f"ticket {order.ticket_no} is another work order")
    return _result(order, duplicate=True)


def submit(uow: UnitOfWork, request: WorkOrderRequest, now: dt.datetime) -> WorkOrderResult:
    """Store the work order as `accepted`; a repeat of its ticket number stores nothing
    and returns what the first one stored, with duplicate=True."""
    if not is_ticket_no(request.ticket_no):
        raise InvalidInput(f"not a ticket number: {request.ticket_no[:32]!r}")
    biller = normalize_biller(request.biller)
    account = normalize_account(request.account)
    try:
        kind = WorkOrderKind(request.kind).value
    except ValueError:
        raise InvalidInput(f"unknown kind of work order: {request.kind[:32]!r}") from None
    description = clean_description(request.description)
    with uow:
        stored = uow.ledger_work_orders.by_ticket(request.ticket_no)
        if stored is not None:
            return _same(stored, biller, account, kind)
        if uow.accounts.get(biller, account) is None:
            raise AccountNotFound(key="err.account.unknown", biller=biller, account=account)
        order = LedgerWorkOrder(
            id=None, ticket_no=request.ticket_no, biller=biller, account=account, kind=kind,
            description=description, contact_phone=request.contact_phone[:32],
            status="accepted", created_at=now, updated_at=now,
        )
        try:
            uow.ledger_work_orders.add(order)
        except DuplicateKey:
            uow.rollback()
        else:
            uow.commit()
            return _result(order)
    with uow:  # a concurrent twin won the insert: answer what it stored
        stored = uow.ledger_work_orders.by_ticket(request.ticket_no)
    if stored is None:  # pragma: no cover - the unique key said it exists
        raise DuplicateKey(request.ticket_no)
    return _same(stored, biller, account, kind)


def _id_of(ref: str) -> int:
    digits = ref.removeprefix(REF_PREFIX)
    if not digits.isdigit() or len(digits) > 12:
        raise WorkOrderNotFound(f"no work order {ref[:32]!r}")
    return int(digits)


def status(uow: UnitOfWork, ref: str) -> WorkOrderResult:
    with uow:
        order = uow.ledger_work_orders.get(_id_of(ref))
    if order is None:
        raise WorkOrderNotFound(f"no work order {ref[:32]!r}")
    return _result(order)


def set_status(uow: UnitOfWork, ref: str, new_status: str, *, note: str = "",
               now: dt.datetime) -> WorkOrderResult:
    """What billing-side staff do: move a work order along (never back)."""
    if new_status not in LEDGER_STATES:
        raise InvalidInput(f"unknown work order status {new_status[:32]!r}")
    with uow:
        order = uow.ledger_work_orders.get(_id_of(ref), for_update=True)
        if order is None:
            raise WorkOrderNotFound(f"no work order {ref[:32]!r}")
        if new_status != order.status:
            if new_status not in _NEXT[order.status]:
                raise InvalidInput(f"a work order that is {order.status} cannot become "
                                   f"{new_status}")
            order.status = new_status
            order.note = note.strip()[:500]
            order.updated_at = now
            uow.ledger_work_orders.save(order)
            uow.commit()
    return _result(order)
