"""Orders for staff: a list with filters, one order's full history, and the payment
health figures of the dashboard. Read-only; every role may look."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from selfpay.adapters.db import tables
from selfpay.bootstrap import Container
from selfpay.domain.accounts import mask_name
from selfpay.domain.orders import Order, OrderStatus
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.admin.qr import billers_of
from selfpay.entrypoints.web.deps import ContainerDep, Viewer, render
from selfpay.services.ports import Message, Posting

router = APIRouter(prefix="/admin", include_in_schema=False)
STUCK = "stuck"  # a filter value beside the order states: orders whose posting is stuck
SUCCESS = frozenset({OrderStatus.PAID.value, OrderStatus.POSTED.value})
SETTLED = SUCCESS | {OrderStatus.FAILED.value, OrderStatus.CLOSED.value,
                     OrderStatus.DISPUTED.value}
FLAG_WINDOW = dt.timedelta(days=7)  # flags shown on the dashboard


@dataclass(frozen=True, slots=True)
class PaymentHealth:
    by_status: dict[str, int]  # today's orders (site time zone) by status
    total: int
    success_rate: float | None  # paid or posted, of today's orders that are settled
    stuck: list[Posting]
    stuck_total: int
    pending_postings: int
    dead: list[Posting]
    dead_total: int
    disputed: list[Order]  # money taken that is not posted: staff refund it
    disputed_total: int
    flagged: list[Order]  # flagged in the last FLAG_WINDOW (late, paid twice, ...)
    flagged_total: int


def payment_health(container: Container, now: dt.datetime) -> PaymentHealth:
    """One GROUP BY over today's orders, and the stuck postings. A read model: it reads
    the payment tables directly, like the dashboard's open-bills chart."""
    zone = ZoneInfo(container.settings.timezone)
    local = now.astimezone(zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(dt.UTC)
    o = tables.orders.c
    stmt = select(o.status, func.count()).where(o.created_at >= start).group_by(o.status)
    with container.engine.connect() as conn:
        counts = {str(s): int(n) for s, n in conn.execute(stmt)}
    by_status = {s.value: counts.get(s.value, 0) for s in OrderStatus}
    settled = sum(by_status[s] for s in SETTLED)
    ok = sum(by_status[s] for s in SUCCESS)
    with container.uow_factory() as uow:
        stuck = uow.postings.list(status=STUCK, limit=10)
        pending = uow.postings.list(status="pending", limit=1).total
        dead = uow.postings.list(status="dead", limit=10)
        disputed = uow.orders.search(status=OrderStatus.DISPUTED.value, limit=10)
        flagged = uow.orders.flagged_since(now - FLAG_WINDOW, limit=10)
    return PaymentHealth(
        by_status=by_status, total=sum(by_status.values()),
        success_rate=(ok / settled) if settled else None,
        stuck=stuck.items, stuck_total=stuck.total, pending_postings=pending,
        dead=dead.items, dead_total=dead.total,
        disputed=disputed.items, disputed_total=disputed.total,
        flagged=flagged.items, flagged_total=flagged.total,
    )


def _channels(container: Container) -> list[str]:
    names = set(getattr(container, "channels", None) or {})
    return sorted(names | {"sandbox", "wechatpay"})


@router.get("/orders", name="orders")
def orders(
    request: Request, container: ContainerDep, user: Viewer, q: str = "", status: str = "",
    biller: str = "", channel: str = "", page: int = 1,
) -> Response:
    q, biller, channel = q.strip()[:64], biller.strip().upper()[:8], channel.strip()[:32]
    statuses = [s.value for s in OrderStatus]
    status = status if status in (*statuses, STUCK) else ""
    page = max(page, 1)
    offset = (page - 1) * PAGE_SIZE
    postings: dict[str, Posting] = {}
    with container.uow_factory() as uow:
        if status == STUCK:
            stuck = uow.postings.list(status=STUCK, limit=PAGE_SIZE, offset=offset)
            found = [uow.orders.get(p.order_no) for p in stuck.items]
            items = [x for x in found if x is not None]
            total = stuck.total
            postings = {p.order_no: p for p in stuck.items}
        else:
            result = uow.orders.search(query=q, status=status, biller=biller, channel=channel,
                                       limit=PAGE_SIZE, offset=offset)
            items, total = result.items, result.total
            for order in items:
                if order.status in (OrderStatus.PAID, OrderStatus.POSTED):
                    posting = uow.postings.get(order.order_no)
                    if posting is not None:
                        postings[order.order_no] = posting
    return render(request, "admin/orders.html", {
        "items": items, "postings": postings, "pager": pages(total, page), "q": q,
        "status": status, "statuses": [*statuses, STUCK], "biller": biller,
        "channel": channel, "channels": _channels(container),
        "billers": billers_of(container, include_disabled=True),
    })


def receipt_messages(messages: list[Message], order_no: str) -> list[Message]:
    return [m for m in messages if order_no in m.subject or order_no in m.body]


@router.get("/orders/{order_no}", name="order")
def order_detail(request: Request, order_no: str, container: ContainerDep,
                 user: Viewer) -> Response:
    with container.uow_factory() as uow:
        order = uow.orders.get(order_no[:32])
        if order is None:
            return render(request, "error.html", {"status": 404, "message": order_no[:32]},
                          status_code=404)
        history = uow.orders.history(order.order_no)
        notifications = uow.notifications.for_order(order.order_no)
        posting = uow.postings.get(order.order_no)
        # Messages carry no order number column; receipts name it in subject or body.
        messages = receipt_messages(uow.messages.list(kind="receipt", limit=500).items,
                                    order.order_no)
        account = uow.accounts.get(order.biller, order.account)
        biller = uow.billers.get(order.biller)
    payload = make_payload(container.code_base, container.keyring, order.biller, order.account)
    return render(request, "admin/order.html", {
        "o": order, "history": history, "notifications": notifications, "posting": posting,
        "messages": messages, "biller": biller,
        "masked_name": mask_name(account.name) if account else "",
        "account_path": "/" + payload.split("/", 3)[3],
    })
