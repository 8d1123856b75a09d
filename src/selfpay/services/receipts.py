"""What a receipt says about a paid order: public data only (the holder is masked).

The order number is the capability: whoever has it may see this receipt, so it shows
nothing that the account page does not show already."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from selfpay.domain.orders import Order, OrderStatus
from selfpay.services.ports import UnitOfWork

PAID_STATES = frozenset({OrderStatus.PAID, OrderStatus.POSTED})


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    bill_id: int
    period: str
    amount_fen: int | None  # what the order pays of the bill (None: not recorded)


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
    """The receipt of `order`, read inside the caller's unit of work: the bills as the
    order priced them (what it pays of each) and the holder as it was masked then. One
    look-up by primary key (the biller's name); no search of the bills table, whose size
    must not matter here and which a DMZ behind a bridge does not even have."""
    biller = uow.billers.get(order.biller)
    lines = tuple(ReceiptLine(x.bill_id, x.period, x.amount_fen) for x in order.lines)
    return Receipt(
        order_no=order.order_no, status=order.status.value, biller=order.biller,
        biller_name=biller.name if biller else order.biller,
        biller_name_en=(biller.name_en or biller.name) if biller else order.biller,
        account=order.account, masked_name=order.holder,
        lines=lines, amount_fen=order.amount_fen, channel=order.channel,
        channel_txn_id=order.channel_txn_id, created_at=order.created_at,
        paid_at=order.paid_at, posted_at=order.posted_at,
    )


def load_receipt(uow: UnitOfWork, order_no: str) -> Receipt | None:
    with uow:
        order = uow.orders.get(order_no)
        return None if order is None else receipt_of(uow, order)
