"""What a receipt says about a paid order: public data only (the holder is masked).

The order number is the capability: whoever has it may see this receipt, so it shows
nothing that the account page does not show already."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from selfpay.domain.accounts import Bill, mask_name
from selfpay.domain.orders import Order, OrderStatus
from selfpay.services.ports import UnitOfWork

PAID_STATES = frozenset({OrderStatus.PAID, OrderStatus.POSTED})


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    bill_id: int
    period: str
    amount_fen: int | None  # the bill's amount; None when the order settled part of it


@dataclass(frozen=True, slots=True)
class Receipt:
    order_no: str
    status: str
    biller: str
    biller_name: str
    biller_name_en: str
    account: str
    masked_name: str
    lines: tuple[ReceiptLine, ...]
    amount_fen: int
    channel: str
    channel_txn_id: str
    created_at: dt.datetime
    paid_at: dt.datetime | None
    posted_at: dt.datetime | None

    @property
    def is_paid(self) -> bool:
        return self.status in PAID_STATES


def receipt_of(uow: UnitOfWork, order: Order) -> Receipt:
    """The receipt of `order`, read inside the caller's unit of work."""
    biller = uow.billers.get(order.biller)
    account = uow.accounts.get(order.biller, order.account)
    wanted = set(order.bill_ids)
    found: dict[int | None, Bill] = {}
    if wanted:
        # The bills of this account (any status): settled ones are no longer open.
        page = uow.bills.search(query=order.account, biller=order.biller, limit=1000)
        found = {b.id: b for b in page.items if b.id in wanted and b.account == order.account}
    lines: list[ReceiptLine] = []
    for bill_id in order.bill_ids:
        bill = found.get(bill_id)
        if bill is not None:
            lines.append(ReceiptLine(bill_id, bill.period, bill.amount_fen))
    if lines and sum(x.amount_fen or 0 for x in lines) != order.amount_fen:
        # Partly paid bills: show what the order settled, not the bills' full amounts.
        lines = [ReceiptLine(x.bill_id, x.period, None) for x in lines]
    return Receipt(
        order_no=order.order_no, status=order.status.value, biller=order.biller,
        biller_name=biller.name if biller else order.biller,
        biller_name_en=(biller.name_en or biller.name) if biller else order.biller,
        account=order.account, masked_name=mask_name(account.name) if account else "",
        lines=tuple(lines), amount_fen=order.amount_fen, channel=order.channel,
        channel_txn_id=order.channel_txn_id, created_at=order.created_at,
        paid_at=order.paid_at, posted_at=order.posted_at,
    )


def load_receipt(uow: UnitOfWork, order_no: str) -> Receipt | None:
    with uow:
        order = uow.orders.get(order_no)
        return None if order is None else receipt_of(uow, order)
