"""The sandbox channel: a simulated payment platform for the demo and the tests.

It lives in the app's process but behaves like an outside platform: it keeps its own
trades (table sandbox_trades), shows a cashier page (sandbox_web.py), and tells the app
about payments only by HTTP POSTs to the order's notify_url, signed like this:

    Sandbox-Timestamp: unix seconds     Sandbox-Nonce: random
    Sandbox-Signature: base64(HMAC-SHA256(key, f"{timestamp}\\n{nonce}\\n" + RAW_BODY + "\\n"))
    key = HMAC-SHA256(settings.secret_key, "selfpay-sandbox")

Each delivery (table sandbox_deliveries) is re-sent on RETRY_DELAYS_S until the app
answers 2xx. A scripted payment may ask for several deliveries of the same notification
(same id, same body) and a delay, as real channels redeliver and arrive late.

Deliveries are sent by `deliver_due()`; `start()`/`stop()` run it on a background
thread (the sandbox router's lifespan does that for the web app).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import Engine, Row, and_, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from selfpay.adapters.db.engine import READ_ONLY, make_engine
from selfpay.adapters.db.tables import sandbox_deliveries as deliveries_t
from selfpay.adapters.db.tables import sandbox_trades as trades_t
from selfpay.services.ports import (
    ChannelError,
    ChannelNotification,
    ChannelQuery,
    NotificationRejected,
    NotifyAnswer,
    PaymentRequest,
)

if TYPE_CHECKING:
    from selfpay.config import Settings

log = logging.getLogger(__name__)

SANDBOX_MERCHANT_ID = "sandbox-merchant"
RETRY_DELAYS_S: tuple[float, ...] = (1, 2, 5, 15, 30, 60, 120, 300, 600)  # then 600 s apart
MAX_DELIVERY_ATTEMPTS = 40  # about 5 hours; then the delivery is given up (last_status says)
DELIVERY_TIMEOUT_S = 5.0
MAX_CLOCK_SKEW_S = 300
MAX_REPEAT = 10
DELIVERY_ROUND = 64  # deliveries per round of the thread
DELIVERY_CONCURRENCY = 32  # sent at once: a real platform notifies many merchants in parallel
CLAIM_LEASE = dt.timedelta(seconds=30)  # a claimed delivery is not sent again meanwhile
HEADER_TIMESTAMP = "Sandbox-Timestamp"
HEADER_NONCE = "Sandbox-Nonce"
HEADER_SIGNATURE = "Sandbox-Signature"

QUERY_STATES = {"NOTPAY": "pending", "SUCCESS": "paid", "PAYERROR": "failed", "CLOSED": "closed"}
NOTIFY_OUTCOMES = {"SUCCESS": "paid", "PAYERROR": "failed"}


class SandboxTradeNotFound(ChannelError):
    pass


class SandboxConflict(ChannelError):
    """The trade's state refuses the request (paid already, closed)."""


@dataclass(frozen=True, slots=True)
class SandboxTrade:
    order_no: str
    amount_fen: int
    description: str
    notify_url: str
    return_url: str
    state: str  # NOTPAY | SUCCESS | PAYERROR | CLOSED
    txn_id: str
    created_at: dt.datetime
    paid_at: dt.datetime | None
    attempt: int = 0  # the merchant's attempt number of the live prepay, echoed back


@dataclass(frozen=True, slots=True)
class SandboxDelivery:
    id: int
    order_no: str
    notification_id: str
    due_at: dt.datetime
    attempts: int
    acked: bool
    last_status: str


@dataclass(frozen=True, slots=True)
class PayResult:
    order_no: str
    state: str
    txn_id: str
    notification_id: str
    deliveries: int
    due_at: dt.datetime


def sandbox_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode("utf-8"), b"selfpay-sandbox", hashlib.sha256).digest()


def sign(key: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    message = f"{timestamp}\n{nonce}\n".encode("ascii") + body + b"\n"
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode("ascii")


def signed_headers(key: bytes, body: bytes, *, timestamp: int, nonce: str = "") -> dict[str, str]:
    nonce = nonce or secrets.token_hex(16)
    return {HEADER_TIMESTAMP: str(timestamp), HEADER_NONCE: nonce,
            HEADER_SIGNATURE: sign(key, str(timestamp), nonce, body)}


def build(settings: Settings, *, engine: Engine | None = None) -> SandboxChannel:
    """Entry point `selfpay.channels: sandbox`. Refused in production: anyone who can
    reach the cashier can mark an order paid. Pass the app's engine to share its pool;
    otherwise the channel opens (and dispose() closes) its own."""
    if settings.env == "production":
        raise ValueError("the sandbox channel is for demos and tests; it is refused when "
                         "SELFPAY_ENV=production")
    secret = settings.secret_key.get_secret_value()
    if not secret:
        raise ValueError("the sandbox channel needs SELFPAY_SECRET_KEY (its signing key)")
    owns = engine is None
    return SandboxChannel(engine or make_engine(settings.sqlalchemy_url), secret_key=secret,
                          public_base_url=settings.public_base_url, owns_engine=owns)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class SandboxChannel:
    """PaymentChannel `sandbox`, plus what its cashier and its delivery worker need."""

    name = "sandbox"
    merchant_id = SANDBOX_MERCHANT_ID

    def __init__(self, engine: Engine, *, secret_key: str, public_base_url: str,
                 http: httpx.Client | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow,
                 retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
                 poll_interval_s: float = 0.5, owns_engine: bool = False) -> None:
        if not retry_delays_s:
            raise ValueError("retry_delays_s must not be empty")
        self._engine = engine
        self._owns_engine = owns_engine
        self._key = sandbox_key(secret_key)
        self.public_base_url = public_base_url.rstrip("/")
        self._http = http
        self._owns_http = http is None
        self._clock = clock
        self._retry_delays = tuple(retry_delays_s)
        self._poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def cashier_url(self, order_no: str) -> str:
        return f"{self.public_base_url}/sandbox/pay/{order_no}"

    # --- PaymentChannel ----------------------------------------------------------

    def create_payment(self, request: PaymentRequest) -> dict[str, Any]:
        if type(request.amount_fen) is not int or request.amount_fen <= 0:
            raise ChannelError(f"amount must be a positive number of fen: {request.amount_fen}")
        values = {"amount_fen": request.amount_fen, "description": request.description[:128],
                  "notify_url": request.notify_url, "return_url": request.return_url,
                  "state": "NOTPAY", "attempt": request.attempt}
        try:
            with self._engine.begin() as conn:
                row = conn.execute(select(trades_t).where(
                    trades_t.c.order_no == request.order_no).with_for_update()).first()
                if row is None:
                    conn.execute(insert(trades_t).values(
                        order_no=request.order_no, created_at=self._clock(), txn_id="", **values))
                else:
                    if row.amount_fen != request.amount_fen:
                        raise ChannelError(f"{request.order_no}: order number reused with "
                                           "another amount")
                    if row.state == "SUCCESS":
                        raise SandboxConflict(f"{request.order_no}: ORDERPAID")
                    if row.state == "CLOSED":
                        raise SandboxConflict(f"{request.order_no}: ORDERCLOSED")
                    conn.execute(update(trades_t).where(
                        trades_t.c.order_no == request.order_no).values(**values))
        except SQLAlchemyError as exc:
            raise ChannelError(f"sandbox unavailable: {type(exc).__name__}") from exc
        url = self.cashier_url(request.order_no)
        if request.mode == "native":  # a second phone scans it and opens the cashier
            return {"kind": "code_url", "code_url": url}
        return {"kind": "redirect", "url": url}

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification:
        h = {k.lower(): v for k, v in headers.items()}
        timestamp = h.get(HEADER_TIMESTAMP.lower(), "")
        nonce = h.get(HEADER_NONCE.lower(), "")
        signature = h.get(HEADER_SIGNATURE.lower(), "")
        if not (timestamp and nonce and signature):
            raise NotificationRejected("signature headers missing")
        if not (timestamp.isascii() and timestamp.isdigit() and nonce.isascii()):
            raise NotificationRejected("bad timestamp or nonce")
        expected = sign(self._key, timestamp, nonce, body)
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8")):
            raise NotificationRejected("bad signature")
        if abs(self._clock().timestamp() - int(timestamp)) >= MAX_CLOCK_SKEW_S:
            raise NotificationRejected("timestamp more than 5 minutes off")
        try:
            data = json.loads(body)
            outcome = NOTIFY_OUTCOMES[data["trade_state"]]
            amount = data["amount_fen"]
            order_no = data["order_no"]
            notification_id = data["id"]
            paid_at = dt.datetime.fromisoformat(data["paid_at"]) if data.get("paid_at") else None
            attempt = int(data["attempt"]) if data.get("attempt") else None
        except (ValueError, KeyError, TypeError) as exc:
            raise NotificationRejected(f"malformed notification: {type(exc).__name__}") from exc
        if data.get("merchant_id") != SANDBOX_MERCHANT_ID:
            raise NotificationRejected("notification for another merchant")
        if type(amount) is not int or not isinstance(order_no, str) or not isinstance(
                notification_id, str):
            raise NotificationRejected("malformed notification fields")
        return ChannelNotification(
            notification_id=notification_id, order_no=order_no, outcome=outcome,
            amount_fen=amount, channel_txn_id=str(data.get("txn_id") or ""), paid_at=paid_at,
            merchant_id=SANDBOX_MERCHANT_ID, raw=data, attempt=attempt,
        )

    def answer(self, ok: bool, message: str = "") -> NotifyAnswer:
        if ok:
            return NotifyAnswer(200, b'{"code":"SUCCESS"}')
        body = json.dumps({"code": "FAIL", "message": (message or "FAIL")[:200]},
                          ensure_ascii=False).encode("utf-8")
        return NotifyAnswer(400, body)

    def query(self, order_no: str) -> ChannelQuery:
        trade = self.trade(order_no)
        if trade is None:
            return ChannelQuery(state="unknown")
        paid = trade.state == "SUCCESS"
        return ChannelQuery(state=QUERY_STATES[trade.state],
                            amount_fen=trade.amount_fen if paid else 0,
                            channel_txn_id=trade.txn_id if paid else "",
                            paid_at=trade.paid_at if paid else None,
                            attempt=trade.attempt or None)

    def close(self, order_no: str) -> None:
        try:
            with self._engine.begin() as conn:
                row = conn.execute(select(trades_t.c.state).where(
                    trades_t.c.order_no == order_no).with_for_update()).first()
                if row is None or row.state == "CLOSED":
                    return  # nothing to close
                if row.state == "SUCCESS":
                    raise SandboxConflict(f"{order_no}: ORDERPAID, cannot close (query it)")
                conn.execute(update(trades_t).where(trades_t.c.order_no == order_no)
                             .values(state="CLOSED"))
        except SQLAlchemyError as exc:
            raise ChannelError(f"sandbox unavailable: {type(exc).__name__}") from exc

    def collect_with_code(self, request: PaymentRequest, auth_code: str) -> ChannelQuery:
        """The sandbox's payment code (付款码): 18 digits beginning with 13 (a test code
        no real wallet issues). Its last four digits script the outcome, as a real
        wallet's balance or password prompt would: 0000 fails (insufficient funds),
        9999 waits for the customer to confirm on the phone (pending; pay it on the
        sandbox page or by script), anything else is paid at once. A paid code also
        schedules the notification, as real channels send one after micropay too."""
        code = auth_code.strip()
        if not (len(code) == 18 and code.isascii() and code.isdigit() and
                code.startswith("13")):
            return ChannelQuery(state="failed")  # AUTH_CODE_INVALID: declined, no trade
        self.create_payment(request)
        if code.endswith("9999"):
            return self.query(request.order_no)
        self.pay(request.order_no, "fail" if code.endswith("0000") else "success")
        return self.query(request.order_no)

    # --- the cashier's side ------------------------------------------------------

    def trade(self, order_no: str) -> SandboxTrade | None:
        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            row = conn.execute(select(trades_t).where(trades_t.c.order_no == order_no)).first()
        return None if row is None else _trade(row)

    def recent_trades(self, limit: int = 20) -> list[SandboxTrade]:
        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            rows = conn.execute(select(trades_t).order_by(trades_t.c.created_at.desc())
                                .limit(limit)).all()
        return [_trade(r) for r in rows]

    def deliveries(self, order_no: str) -> list[SandboxDelivery]:
        with self._engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            rows = conn.execute(select(deliveries_t).where(deliveries_t.c.order_no == order_no)
                                .order_by(deliveries_t.c.id)).all()
        return [SandboxDelivery(id=r.id, order_no=r.order_no, notification_id=r.notification_id,
                                due_at=_aware(r.due_at), attempts=r.attempts, acked=bool(r.acked),
                                last_status=r.last_status) for r in rows]

    def pay(self, order_no: str, outcome: str, *, repeat: int = 1,
            delay_s: float = 0.0) -> PayResult:
        """The payer pays (outcome 'success') or the payment fails ('fail'). Schedules
        `repeat` deliveries of one notification after `delay_s`. Paying a paid trade
        again re-sends its notification (same id): a late duplicate."""
        if outcome not in ("success", "fail"):
            raise ValueError("outcome must be 'success' or 'fail'")
        if not 1 <= repeat <= MAX_REPEAT:
            raise ValueError(f"repeat must be 1..{MAX_REPEAT}")
        if not 0 <= delay_s <= 3600:
            raise ValueError("delay_s must be 0..3600")
        now = self._clock()
        due_at = now + dt.timedelta(seconds=delay_s)
        with self._engine.begin() as conn:
            row = conn.execute(select(trades_t).where(
                trades_t.c.order_no == order_no).with_for_update()).first()
            if row is None:
                raise SandboxTradeNotFound(f"no sandbox trade {order_no}")
            trade = _trade(row)
            if trade.state == "CLOSED":
                raise SandboxConflict(f"{order_no}: the trade is closed")
            if outcome == "success":
                if trade.state != "SUCCESS":
                    txn_id = f"SBT{now:%Y%m%d}{secrets.token_hex(8).upper()}"
                    conn.execute(update(trades_t).where(trades_t.c.order_no == order_no)
                                 .values(state="SUCCESS", txn_id=txn_id, paid_at=now))
                    trade = _replace_paid(trade, txn_id, now)
                notification_id = f"N{trade.txn_id}"
            else:
                if trade.state == "SUCCESS":
                    raise SandboxConflict(f"{order_no}: already paid, cannot fail")
                conn.execute(update(trades_t).where(trades_t.c.order_no == order_no)
                             .values(state="PAYERROR"))
                notification_id = f"NF{now:%Y%m%d}{secrets.token_hex(8).upper()}"
            body = _notification_body(trade, outcome, notification_id, now)
            conn.execute(insert(deliveries_t), [
                {"order_no": order_no, "notification_id": notification_id, "body": body,
                 "due_at": due_at, "attempts": 0, "acked": False, "last_status": ""}
                for _ in range(repeat)
            ])
        self._wake.set()
        return PayResult(order_no=order_no, state="SUCCESS" if outcome == "success" else
                         "PAYERROR", txn_id=trade.txn_id if outcome == "success" else "",
                         notification_id=notification_id, deliveries=repeat, due_at=due_at)

    # --- deliveries --------------------------------------------------------------

    def deliver_due(self, *, limit: int = 20) -> int:
        """Send every delivery that is due now, up to DELIVERY_CONCURRENCY at once;
        returns how many were sent (answered or not). Safe to call from several workers:
        each delivery is claimed first."""
        now = self._clock()
        with self._engine.begin() as conn:
            due = conn.execute(
                select(deliveries_t.c.id, deliveries_t.c.attempts, deliveries_t.c.body,
                       trades_t.c.notify_url)
                .join(trades_t, trades_t.c.order_no == deliveries_t.c.order_no)
                .where(deliveries_t.c.acked.is_(False),
                       deliveries_t.c.attempts < MAX_DELIVERY_ATTEMPTS,
                       deliveries_t.c.due_at <= now)
                .order_by(deliveries_t.c.due_at, deliveries_t.c.id).limit(limit)
            ).all()
        claimed = [item for item in due if self._claim(item.id, item.attempts, now)]
        if len(claimed) <= 1:
            for item in claimed:
                self._send(item.id, item.attempts, item.notify_url, item.body.encode("utf-8"))
            return len(claimed)
        with ThreadPoolExecutor(min(DELIVERY_CONCURRENCY, len(claimed)),
                                thread_name_prefix="sandbox-notify") as pool:
            for future in [pool.submit(self._send, item.id, item.attempts, item.notify_url,
                                       item.body.encode("utf-8")) for item in claimed]:
                future.result()
        return len(claimed)

    def _claim(self, delivery_id: int, attempts: int, now: dt.datetime) -> bool:
        with self._engine.begin() as conn:
            result = conn.execute(
                update(deliveries_t)
                .where(and_(deliveries_t.c.id == delivery_id, deliveries_t.c.acked.is_(False),
                            deliveries_t.c.attempts == attempts, deliveries_t.c.due_at <= now))
                .values(due_at=now + CLAIM_LEASE)
            )
            return result.rowcount == 1

    def _send(self, delivery_id: int, attempts: int, url: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json",
                   **signed_headers(self._key, body, timestamp=int(self._clock().timestamp()))}
        try:
            response = self._client().post(url, content=body, headers=headers)
            status, ok = str(response.status_code), response.is_success
        except httpx.HTTPError as exc:
            status, ok = type(exc).__name__, False
        attempts += 1
        if not ok and attempts >= MAX_DELIVERY_ATTEMPTS:
            status = f"gave up: {status}"
        delay = self._retry_delays[min(attempts - 1, len(self._retry_delays) - 1)]
        with self._engine.begin() as conn:
            conn.execute(update(deliveries_t).where(deliveries_t.c.id == delivery_id).values(
                attempts=attempts, acked=ok, last_status=status[:64],
                due_at=self._clock() + dt.timedelta(seconds=delay)))
        log.info("sandbox delivery %s to %s: %s", delivery_id, url, status)

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=DELIVERY_TIMEOUT_S)
            return self._http

    # --- the worker thread -------------------------------------------------------

    def start(self) -> None:
        """Run deliver_due() on a background thread until stop()."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="selfpay-sandbox-deliveries",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = DELIVERY_TIMEOUT_S + 5) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.deliver_due(limit=DELIVERY_ROUND) >= DELIVERY_ROUND:
                    continue  # more may be due: a full round must not wait for the poll
            except Exception:  # noqa: BLE001 - the worker must outlive one bad round
                log.exception("sandbox delivery round failed")
                time.sleep(self._poll_interval_s)
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()

    def dispose(self) -> None:
        """Stop the worker and close what this channel opened."""
        self.stop()
        with self._lock:
            http, self._http = self._http, None
        if http is not None and self._owns_http:
            http.close()
        if self._owns_engine:
            self._engine.dispose()


def _trade(row: Row[Any]) -> SandboxTrade:
    return SandboxTrade(
        order_no=row.order_no, amount_fen=int(row.amount_fen), description=row.description,
        notify_url=row.notify_url, return_url=row.return_url, state=row.state,
        txn_id=row.txn_id, created_at=_aware(row.created_at),
        paid_at=_aware(row.paid_at) if row.paid_at is not None else None,
        attempt=int(row.attempt or 0),
    )


def _replace_paid(trade: SandboxTrade, txn_id: str, paid_at: dt.datetime) -> SandboxTrade:
    return SandboxTrade(trade.order_no, trade.amount_fen, trade.description, trade.notify_url,
                        trade.return_url, "SUCCESS", txn_id, trade.created_at, paid_at,
                        trade.attempt)


def _notification_body(trade: SandboxTrade, outcome: str, notification_id: str,
                       now: dt.datetime) -> str:
    paid = outcome == "success"
    return json.dumps({
        "id": notification_id,
        "create_time": (trade.paid_at if paid and trade.paid_at else now).isoformat(),
        "event_type": "TRANSACTION.SUCCESS" if paid else "TRANSACTION.FAIL",
        "merchant_id": SANDBOX_MERCHANT_ID,
        "order_no": trade.order_no,
        "trade_state": "SUCCESS" if paid else "PAYERROR",
        "amount_fen": trade.amount_fen,
        "txn_id": trade.txn_id if paid else "",
        "paid_at": trade.paid_at.isoformat() if paid and trade.paid_at else None,
        "attempt": trade.attempt,
    }, ensure_ascii=False, separators=(",", ":"))
