"""Work orders (DMZ side): a customer reports a meter fault, an outage or a change of
contact details; the ticket is stored here first (the durable outbox) and the worker
sends it to the billing system's WorkOrderDesk, over the bridge in production.

Like postings (payments.py): the row is claimed for a lease in one transaction, the
billing call is made outside any transaction, the outcome is written afterwards. A
crash in between only repeats the call, which the billing side answers as a duplicate
(idempotent by ticket number), so it is accepted there exactly once. Transient failures
back off (2 s doubling, at most 10 min); after `dead_after` of them, or a refusal for
good (unknown account, invalid), the ticket is `failed` and shown to staff. Open
tickets are polled (`work_order_status`) every `poll_every` for news, which only ever
moves them forwards.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfpay.domain.accounts import normalize_account, normalize_biller
from selfpay.domain.errors import InvalidInput, NotFound
from selfpay.domain.work_orders import (
    OPEN_AT_BILLING,
    TERMINAL,
    WorkOrderStatus,
    advance,
    clean_description,
    new_ticket_no,
    parse_kind,
    status_from_billing,
)
from selfpay.services.lookup import normalize_phone
from selfpay.services.ports import (
    DuplicateKey,
    Page,
    UnitOfWork,
    WorkOrder,
    WorkOrderDesk,
    WorkOrderRequest,
    WorkOrderResult,
)

log = logging.getLogger(__name__)
W = WorkOrderStatus
LEASE = dt.timedelta(seconds=60)
BACKOFF = dt.timedelta(seconds=2)
BACKOFF_CAP = dt.timedelta(minutes=10)
POLL_EVERY = dt.timedelta(seconds=30)
DAY = dt.timedelta(days=1)


class TooManyWorkOrders(InvalidInput):
    """The account reported as many work orders as it may in a day."""


@dataclass(frozen=True, slots=True)
class ReportWorkOrder:
    biller: str
    account: str
    kind: str
    description: str
    contact_phone: str


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _clip(text: str, size: int = 1000) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


class WorkOrders:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        billing: object,
        clock: Callable[[], dt.datetime] = _utcnow,
        dead_after: int = 20,
        poll_every: dt.timedelta = POLL_EVERY,
        lease: dt.timedelta = LEASE,
        per_account_per_day: int = 10,
    ) -> None:
        """`billing` is the BillingSystem; work orders need its optional WorkOrderDesk
        capability. Without it they wait, queued, and staff see them."""
        self._uow_factory = uow_factory
        self._desk = billing if isinstance(billing, WorkOrderDesk) else None
        self._clock = clock
        self._dead_after = dead_after
        self._poll_every = poll_every
        self._lease = lease
        self._per_day = per_account_per_day

    @property
    def enabled(self) -> bool:
        return self._desk is not None

    # --- the customer ---------------------------------------------------------------

    def report(self, cmd: ReportWorkOrder) -> WorkOrder:
        """Validate and store a new ticket (queued, due now). Raises InvalidInput
        (InvalidPhone, InvalidDescription, UnknownWorkOrderKind, TooManyWorkOrders)."""
        kind = parse_kind(cmd.kind)
        biller = normalize_biller(cmd.biller)
        account = normalize_account(cmd.account)
        description = clean_description(cmd.description)
        phone = normalize_phone(cmd.contact_phone)
        now = self._clock()
        for _ in range(3):
            order = WorkOrder(
                id=None, ticket_no=new_ticket_no(), biller=biller, account=account,
                kind=kind, description=description, contact_phone=phone, status=W.QUEUED,
                created_at=now, updated_at=now, next_attempt_at=now,
            )
            with self._uow_factory() as uow:
                if uow.work_orders.count_since(biller, account, now - DAY) >= self._per_day:
                    raise TooManyWorkOrders(key="wo.too_many_today")
                try:
                    uow.work_orders.add(order)
                except DuplicateKey:  # pragma: no cover - a ticket number drawn twice
                    uow.rollback()
                    continue
                uow.commit()
            log.info("work order %s (%s) reported for %s %s", order.ticket_no, kind.value,
                     biller, account)
            return order
        raise DuplicateKey("could not draw a free ticket number")  # pragma: no cover

    def get(self, ticket_no: str) -> WorkOrder | None:
        with self._uow_factory() as uow:
            return uow.work_orders.get(ticket_no[:32])

    def of_tickets(self, ticket_nos: Sequence[str], *, biller: str = "",
                   account: str = "") -> list[WorkOrder]:
        """The tickets named (those a browser holds), newest first, optionally only
        those of one account."""
        with self._uow_factory() as uow:
            found = uow.work_orders.by_tickets([t[:32] for t in ticket_nos][:50])
        return [o for o in found
                if (not biller or o.biller == biller) and (not account or o.account == account)]

    def search(self, *, status: str = "", limit: int = 50,
               offset: int = 0) -> Page[WorkOrder]:
        with self._uow_factory() as uow:
            return uow.work_orders.list(status=status, limit=limit, offset=offset)

    def nudge(self, ticket_no: str) -> None:
        """Ask the billing side about an open ticket at the next round (after billing
        staff changed it) instead of at its next poll."""
        with self._uow_factory() as uow:
            order = uow.work_orders.get(ticket_no, for_update=True)
            if order is not None and order.status in OPEN_AT_BILLING:
                order.next_attempt_at = self._clock()
                uow.work_orders.save(order)
                uow.commit()

    # --- the worker -----------------------------------------------------------------

    def run_round(self, limit: int = 20) -> dict[str, int]:
        """Submit due tickets, then ask about open ones; how many of each changed."""
        return {"submitted": self.dispatch(limit), "updated": self.poll(limit)}

    def _claim(self, statuses: Sequence[str], lease: dt.timedelta, limit: int,
               *, submitting: bool) -> list[WorkOrder]:
        now = self._clock()
        with self._uow_factory() as uow:
            claimed = uow.work_orders.due(now, statuses, limit=limit)
            for order in claimed:
                # Held for the lease: other workers skip it; a crash only delays it.
                if submitting:
                    order.attempts += 1
                    order.status = W.SUBMITTED
                order.next_attempt_at = now + lease
                uow.work_orders.save(order)
            uow.commit()
        return claimed

    def dispatch(self, limit: int = 20) -> int:
        """Send due tickets to the billing side; returns how many it accepted."""
        if self._desk is None:
            return 0
        claimed = self._claim((W.QUEUED.value, W.SUBMITTED.value), self._lease, limit,
                              submitting=True)
        sent = 0
        for order in claimed:
            request = WorkOrderRequest(
                ticket_no=order.ticket_no, biller=order.biller, account=order.account,
                kind=order.kind.value, description=order.description,
                contact_phone=order.contact_phone, created_at=order.created_at,
            )
            try:
                result = self._desk.submit_work_order(request)
            except (InvalidInput, NotFound) as exc:
                self._failed(order, exc, permanent=True)
            except Exception as exc:  # noqa: BLE001 - every other failure is retried
                self._failed(order, exc, permanent=False)
            else:
                if self._apply(order.ticket_no, result, submitted=True):
                    sent += 1
        return sent

    def poll(self, limit: int = 20) -> int:
        """Ask the billing side about open tickets; returns how many changed."""
        if self._desk is None:
            return 0
        claimed = self._claim([s.value for s in OPEN_AT_BILLING], self._poll_every, limit,
                              submitting=False)
        changed = 0
        for order in claimed:
            try:
                result = self._desk.work_order_status(order.billing_ref or order.ticket_no)
            except Exception as exc:  # noqa: BLE001 - asked again at the next poll
                log.warning("work order %s: no news from billing: %s", order.ticket_no, exc)
                continue
            if self._apply(order.ticket_no, result, submitted=False):
                changed += 1
        return changed

    def _apply(self, ticket_no: str, result: WorkOrderResult, *, submitted: bool) -> bool:
        reported = status_from_billing(result.status)
        if reported is None:
            log.warning("work order %s: unknown status %r from billing", ticket_no,
                        result.status)
            reported = W.ACCEPTED if submitted else None
        with self._uow_factory() as uow:
            order = uow.work_orders.get(ticket_no, for_update=True)
            if order is None:  # pragma: no cover - tickets are never deleted
                return False
            before = (order.status, order.note, order.billing_ref)
            if submitted and order.status in (W.QUEUED, W.SUBMITTED):
                order.status = W.ACCEPTED  # the billing side has it now
            if reported is not None:
                order.status = advance(order.status, reported)
            order.billing_ref = result.ref[:64] or order.billing_ref
            if result.note:
                order.note = _clip(result.note, 500)
            now = self._clock()
            order.last_error = "" if submitted else order.last_error
            order.next_attempt_at = None if order.status in TERMINAL else now + self._poll_every
            changed = (order.status, order.note, order.billing_ref) != before
            if changed:
                order.updated_at = now
            uow.work_orders.save(order)
            uow.commit()
        if changed:
            log.info("work order %s is %s", ticket_no, order.status.value)
        return changed or submitted

    def _failed(self, claimed: WorkOrder, exc: Exception, *, permanent: bool) -> None:
        error = _clip(f"{type(exc).__name__}: {exc}", 2000)
        with self._uow_factory() as uow:
            order = uow.work_orders.get(claimed.ticket_no, for_update=True)
            if order is None or order.status is not W.SUBMITTED:
                return  # another worker got an answer meanwhile
            now = self._clock()
            order.last_error = error
            order.updated_at = now
            if permanent or order.attempts >= self._dead_after:
                order.status = W.FAILED
                order.next_attempt_at = None
                log.error("work order %s failed%s: %s", order.ticket_no,
                          "" if permanent else f" after {order.attempts} attempts", error)
            else:
                order.status = W.QUEUED
                order.next_attempt_at = now + min(BACKOFF * 2 ** max(order.attempts - 1, 0),
                                                  BACKOFF_CAP)
                log.warning("work order %s not delivered (attempt %d): %s", order.ticket_no,
                            order.attempts, error)
            uow.work_orders.save(order)
            uow.commit()
