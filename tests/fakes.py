"""Small fakes of the ports, for tests (cosmicpython's FakeRepository, httpx's
MockTransport): a payment channel and a notifier that record what they are asked."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selfpay.services.ports import (
    CacheUnavailable,
    ChannelError,
    ChannelNotification,
    ChannelQuery,
    Message,
    NotificationRejected,
    NotifierError,
    NotifyAnswer,
    PaymentRequest,
)

SIGNATURE_HEADER = "x-fake-signature"


@dataclass
class FakeTrade:
    order_no: str
    amount_fen: int
    state: str = "pending"  # pending | paid | closed | failed
    txn_id: str = ""
    paid_at: dt.datetime | None = None
    attempt: int = 0  # the merchant's attempt number of the live prepay


@dataclass
class FakeChannel:
    """A payment channel in memory. Its notifications carry an HMAC of the raw body,
    which parse_notification checks, so a forged one is rejected like a real channel
    would reject a bad signature."""

    name: str = "fake"
    merchant_id: str = "M-FAKE"
    secret: bytes = b"fake-channel-secret"
    fail_prepay: int = 0  # how many of the next prepay calls raise ChannelError
    fail_close: bool = False
    query_error: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    trades: dict[str, FakeTrade] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- the port ---------------------------------------------------------------------

    def create_payment(self, request: PaymentRequest) -> dict[str, Any]:
        with self._lock:
            self.calls.append(("create_payment", request))
            if self.fail_prepay:
                self.fail_prepay -= 1
                raise ChannelError("fake channel: timed out")
            trade = self.trades.setdefault(
                request.order_no, FakeTrade(request.order_no, request.amount_fen)
            )
            if trade.state == "closed":
                raise ChannelError(f"fake channel: {request.order_no} is closed")
            if trade.state == "failed":
                trade.state = "pending"  # a new attempt on the same order number
            trade.attempt = request.attempt
        return {"kind": "redirect", "url": f"https://fake.example/pay/{request.order_no}"}

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification:
        self.calls.append(("parse_notification", body))
        lowered = {k.lower(): v for k, v in headers.items()}
        expected = self.sign(body)
        if not hmac.compare_digest(lowered.get(SIGNATURE_HEADER, ""), expected):
            raise NotificationRejected("fake channel: bad signature")
        data = json.loads(body)
        paid_at = dt.datetime.fromisoformat(data["paid_at"]) if data.get("paid_at") else None
        return ChannelNotification(
            notification_id=data["id"], order_no=data["order_no"], outcome=data["outcome"],
            amount_fen=data["amount_fen"], channel_txn_id=data.get("txn_id", ""),
            paid_at=paid_at, merchant_id=data["merchant_id"], raw=data,
            attempt=data.get("attempt"),
        )

    def answer(self, ok: bool, message: str = "") -> NotifyAnswer:
        if ok:
            return NotifyAnswer(200, b'{"code":"SUCCESS"}')
        body = json.dumps({"code": "FAIL", "message": message}).encode()
        return NotifyAnswer(400, body)

    def query(self, order_no: str) -> ChannelQuery:
        self.calls.append(("query", order_no))
        if self.query_error:
            raise ChannelError("fake channel: query timed out")
        trade = self.trades.get(order_no)
        if trade is None:
            return ChannelQuery("unknown")
        return ChannelQuery(trade.state, trade.amount_fen, trade.txn_id, trade.paid_at,
                            trade.attempt or None)

    def close(self, order_no: str) -> None:
        self.calls.append(("close", order_no))
        trade = self.trades.get(order_no)
        if self.fail_close or (trade is not None and trade.state == "paid"):
            raise ChannelError(f"fake channel: cannot close {order_no}")
        if trade is not None:
            trade.state = "closed"

    def collect_with_code(self, request: PaymentRequest, auth_code: str) -> ChannelQuery:
        """Payment codes: ...0000 declined, ...9999 pending (confirm on the phone), else
        paid at once; `query_error` makes the channel not answer."""
        self.calls.append(("collect_with_code", (request, auth_code)))
        if self.query_error:
            raise ChannelError("fake channel: micropay timed out")
        self.create_payment(request)
        if auth_code.endswith("0000"):
            self.trades[request.order_no].state = "failed"
        elif not auth_code.endswith("9999"):
            self.pay(request.order_no)
        return self.query(request.order_no)

    # --- what a test does as the customer or the channel --------------------------------

    def sign(self, body: bytes) -> str:
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest()

    def pay(self, order_no: str, *, at: dt.datetime | None = None) -> FakeTrade:
        """The customer pays at the channel (no notification is sent)."""
        trade = self.trades[order_no]
        trade.state = "paid"
        trade.txn_id = trade.txn_id or "FT" + uuid.uuid4().hex[:20].upper()
        trade.paid_at = at or dt.datetime.now(dt.UTC)  # the channel's own clock
        return trade

    def notification(
        self, order_no: str, *, outcome: str = "paid", amount_fen: int | None = None,
        txn_id: str | None = None, notification_id: str | None = None,
        merchant_id: str | None = None, forged: bool = False, reason: str = "",
        attempt: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(headers, raw body) of a notification as the channel would send it."""
        trade = self.trades.get(order_no)
        if outcome == "paid" and trade is not None and trade.state != "paid":
            self.pay(order_no)
        data = {
            "id": notification_id or "N" + uuid.uuid4().hex,
            "order_no": order_no,
            "outcome": outcome,
            "amount_fen": amount_fen if amount_fen is not None else (
                trade.amount_fen if trade else 0),
            "txn_id": txn_id if txn_id is not None else (trade.txn_id if trade else ""),
            "paid_at": trade.paid_at.isoformat() if trade and trade.paid_at else None,
            "merchant_id": merchant_id or self.merchant_id,
            "reason": reason,
            # the attempt it reports on: the trade's live one unless told otherwise
            "attempt": attempt if attempt is not None else (trade.attempt if trade else None),
        }
        # Spaces after separators on purpose: verification must use the raw bytes.
        body = json.dumps(data, separators=(", ", ": "), ensure_ascii=False).encode()
        signature = self.sign(body) if not forged else self.sign(body + b" ")
        return {"Content-Type": "application/json", "X-Fake-Signature": signature}, body

    def count(self, call: str) -> int:
        return sum(1 for name, _ in self.calls if name == call)


@dataclass
class FakeNotifier:
    """Records what it delivers; `fail` makes the next N sends raise NotifierError."""

    fail: int = 0
    sent: list[Message] = field(default_factory=list)

    def send(self, message: Message) -> None:
        if self.fail:
            self.fail -= 1
            raise NotifierError("fake notifier: mail server down")
        self.sent.append(message)


@dataclass
class FakeCache:
    """A Cache in a dict, with no expiry of its own: `ttls` records what each set asked
    for; `down` makes every call raise CacheUnavailable, like a Redis that is gone."""

    items: dict[str, Any] = field(default_factory=dict)
    ttls: dict[str, int] = field(default_factory=dict)
    down: bool = False

    def _check(self) -> None:
        if self.down:
            raise CacheUnavailable("fake cache: down")

    def get(self, key: str) -> Any | None:
        self._check()
        return json.loads(json.dumps(self.items[key])) if key in self.items else None

    def set(self, key: str, value: Any, *, ttl_s: int) -> None:
        self._check()
        self.items[key] = json.loads(json.dumps(value))  # JSON-able, or this raises
        self.ttls[key] = ttl_s

    def delete(self, key: str) -> None:
        self._check()
        self.items.pop(key, None)
