"""Payments: an order for an account's bills, the channel's word that it is paid, and
one posting to the billing system.

Rules this module keeps (DESIGN.md, invariants 2, 3, 4 and 8):

- The amount is computed here from the billing system's open bills; no caller sets it.
- An order is stored (and committed) before the channel is called: a network cut or a
  crash after the prepay leaves a row that the same Idempotency-Key resumes.
- A notification changes nothing unless the channel verified it over the raw bytes;
  then, in ONE transaction with the order row locked, it is deduplicated, checked
  (merchant, amount, state) and applied; `paid` writes the posting outbox row in that
  same transaction. Exactly-once posting starts there.
- Postings are sent by `dispatch_postings` outside any transaction (the billing system
  may be across a network) and marked done afterwards. A crash in between only repeats
  the call, which the billing system answers as a duplicate (idempotent by payment id).
- A posting that failed `dead_after_attempts` times is dead-lettered (status `dead`):
  no longer retried, shown to staff, who may replay it (`replay_posting`). A replay is
  safe even when an earlier attempt did reach the billing system: the payment id is
  the same, so the billing system answers it as a duplicate.
- `reconcile_pending` asks the channel about orders nobody told us about, closes the
  expired ones there and here, and keeps asking about orders closed or failed here
  until the channel confirms it can no longer take money for them.
- One live order per bill: an order for bills that an earlier open order covers closes
  that one at the channel first. A payment that still lands on bills another order
  paid is an overpayment: the order is disputed, never posted, flagged for staff.

Every state change is stamped in the order's history (order_events).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from selfpay.domain.accounts import (
    AccountSummary,
    PaymentPosting,
    PostingResult,
    normalize_account,
    normalize_biller,
)
from selfpay.domain.errors import BillerDisabled, InvalidInput, NotFound
from selfpay.domain.ledger_errors import BillNotOpen
from selfpay.domain.messages import LOG_LANG, translate
from selfpay.domain.money import format_fen
from selfpay.domain.orders import (
    MAX_ATTEMPTS,
    OPEN_STATES,
    ORDER_TTL,
    AlreadyPaid,
    AlreadyPaidElsewhere,
    AmountMismatch,
    AttemptsExhausted,
    Flag,
    IdempotencyConflict,
    InvalidTransition,
    Order,
    OrderEvent,
    OrderLine,
    OrderStatus,
    choose_bills,
    new_order_no,
)
from selfpay.services.ports import (
    AuditEntry,
    BillingSystem,
    ChannelError,
    ChannelNotification,
    ChannelQuery,
    DuplicateKey,
    Message,
    MessageUndeliverable,
    NotificationRejected,
    Notifier,
    NotifierError,
    NotifyAnswer,
    PaymentChannel,
    PaymentRequest,
    Posting,
    ReceivedNotification,
    StaleOrder,
    UnitOfWork,
    takes_payment_code,
)

log = logging.getLogger(__name__)

S = OrderStatus
T = TypeVar("T")

MAX_KEY = 255
QUERY_AFTER = dt.timedelta(minutes=2)  # a pending order nobody told us about is queried
# paid_at is the channel's clock, created_at ours: an order paid up to this long before
# another was created (by the channel's clock) may still have covered its bills (see
# _covering_order). Generous on purpose: an order paid earlier than that cannot hold a
# bill that a later order could still price.
CLOCK_MARGIN = dt.timedelta(days=1)
POSTING_LEASE = dt.timedelta(seconds=60)  # a claimed posting is not retried before this
POSTING_BACKOFF = dt.timedelta(seconds=2)
POSTING_BACKOFF_CAP = dt.timedelta(minutes=10)
MESSAGE_MAX_ATTEMPTS = 5
MESSAGE_BACKOFF = dt.timedelta(seconds=10)
MESSAGE_LEASE = dt.timedelta(seconds=60)
_STALE_RETRIES = 3
BILLER_NAME_TTL_S = 60.0


class OrderNotFound(NotFound):
    pass


class JustPaid(AlreadyPaid):
    """An earlier order for the same bills was paid a moment ago: nothing left to pay."""


class PreviousOrderOpen(ChannelError):
    """An earlier order for the same bills could not be closed at its channel (it did
    not answer): a second order could pay them twice, so none is made. Try again."""

    def __init__(self, *, key: str, order_no: str) -> None:
        self.key = key
        self.params: dict[str, object] = {"order_no": order_no}
        self.order_no = order_no
        super().__init__(translate(LOG_LANG, key, order_no=order_no))

    def localized(self, lang: str) -> str:
        return translate(lang, self.key, **self.params)


class PostingNotDead(InvalidInput):
    """Only a dead-lettered posting can be replayed."""


class UnknownChannel(InvalidInput):
    """A channel name that is not enabled here."""


class ChannelUnavailable(ChannelError):
    """The prepay could not be made. The order is kept: retrying with the same
    Idempotency-Key (or POST .../retry) resumes it."""

    def __init__(self, order_no: str, message: str) -> None:
        super().__init__(message)
        self.order_no = order_no


@dataclass(frozen=True, slots=True)
class CreateOrder:
    idempotency_key: str
    biller: str
    account: str
    channel: str
    bill_ids: tuple[int, ...] = ()
    mode: str = ""  # native | jsapi | h5 | cashier; '' lets the channel choose
    payer: str = ""  # openid or signed browser id: "my accounts" remembers it
    payer_openid: str = ""  # for WeChat JSAPI
    email: str = ""  # receipt address, optional
    client_ip: str = ""
    return_url: str = ""


@dataclass(frozen=True, slots=True)
class OrderView:
    order_no: str
    status: str
    amount_fen: int
    biller: str
    account: str
    bill_ids: tuple[int, ...]
    channel: str
    action: dict[str, Any]
    attempts_left: int
    channel_txn_id: str
    created_at: dt.datetime
    paid_at: dt.datetime | None
    posted_at: dt.datetime | None
    expires_at: dt.datetime
    new: bool = False  # this call created the order (not a replay of its key)
    version: int = 0  # grows with every change (a status poll waits for it to move)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def request_hash(biller: str, account: str, channel: str, bill_ids: tuple[int, ...]) -> str:
    """What one Idempotency-Key is bound to: the same intent hashes the same."""
    canonical = json.dumps([biller, account, channel, sorted(bill_ids)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def view(order: Order, *, new: bool = False) -> OrderView:
    return OrderView(
        order_no=order.order_no, status=order.status.value, amount_fen=order.amount_fen,
        biller=order.biller, account=order.account, bill_ids=order.bill_ids,
        channel=order.channel, action=dict(order.action), attempts_left=order.attempts_left,
        channel_txn_id=order.channel_txn_id, created_at=order.created_at,
        paid_at=order.paid_at, posted_at=order.posted_at, expires_at=order.expires_at,
        new=new, version=order.version,
    )


def _event(order: Order, kind: str, **detail: Any) -> None:
    """A history line that is no transition (notification, query, posting attempt)."""
    order.events.append(OrderEvent(kind, order.status.value, order.status.value, detail))


def _clip(text: str, size: int = 1000) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _check_offered(uow: UnitOfWork, biller: str) -> None:
    """BillerDisabled when the registry has the biller disabled. A code the registry does
    not hold is left to the billing system to answer (it may know billers we do not)."""
    found = uow.billers.get(biller)
    if found is not None and not found.enabled:
        raise BillerDisabled(key="err.biller.disabled")


class Payments:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        billing: BillingSystem,
        channels: Mapping[str, PaymentChannel],
        notify_base_url: str,
        clock: Callable[[], dt.datetime] = _utcnow,
        order_ttl: dt.timedelta = ORDER_TTL,
        flag_after_attempts: int = 6,
        dead_after_attempts: int = 20,
        query_after: dt.timedelta = QUERY_AFTER,
        posting_lease: dt.timedelta = POSTING_LEASE,
        tz: dt.tzinfo = dt.UTC,
        read_uow_factory: Callable[[], UnitOfWork] | None = None,
        record_rejected: Callable[[str], bool] | None = None,
        on_posted: Callable[[str, str], None] | None = None,
    ) -> None:
        """`read_uow_factory`, when given, serves reads that change nothing (order
        status polls, look-ups); on SQLite it need not wait for the write lock.
        `on_posted(biller, account)` is told of each posting once it is committed
        (caches drop the account); its errors are logged, never raised."""
        self._on_posted = on_posted
        self._uow_factory = uow_factory
        self._read_uow = read_uow_factory or uow_factory
        # Notifications that fail verification are junk anyone can post: they are kept
        # for staff only while this budget allows (per channel), so junk cannot fill the
        # database; the rest are counted in the log.
        self._record_rejected = record_rejected or (lambda _channel: True)
        self._unrecorded: dict[str, int] = {}
        self._billing = billing
        self._channels = dict(channels)
        self._base = notify_base_url.rstrip("/")
        self._clock = clock
        self._ttl = order_ttl
        self._flag_after = flag_after_attempts
        self._dead_after = dead_after_attempts
        self._query_after = query_after
        self._lease = posting_lease
        self._tz = tz
        # display names of billers, kept BILLER_NAME_TTL_S in this process: a rename
        # reaches receipts and prepay descriptions within a minute on every process
        self._biller_names: dict[str, tuple[str, float]] = {}

    @property
    def channels(self) -> Mapping[str, PaymentChannel]:
        return self._channels

    # --- orders -------------------------------------------------------------------

    def create_order(self, cmd: CreateOrder) -> OrderView:
        key = cmd.idempotency_key
        if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
            raise InvalidInput(key="err.api.idempotency_key_format", max=MAX_KEY)
        biller = normalize_biller(cmd.biller)
        account = normalize_account(cmd.account)
        self._channel(cmd.channel)
        bill_ids = tuple(cmd.bill_ids)
        if any(type(b) is not int for b in bill_ids):
            raise InvalidInput(key="err.order.bill_ids")
        if cmd.email and ("@" not in cmd.email or len(cmd.email) > 254):
            raise InvalidInput(key="err.order.email", value=cmd.email[:60])
        wanted = request_hash(biller, account, cmd.channel, bill_ids)

        with self._read_uow() as uow:
            existing = uow.orders.by_idempotency_key(key)
            if existing is None or existing.status is S.CREATED:  # a prepay is to be made
                _check_offered(uow, biller)
            busy = uow.orders.busy_bills(biller, account) if existing is None else []
        if existing is not None:
            return self._replay(existing, wanted, cmd)
        # bills of paid orders are not offered again while their posting is on the way
        covered = {b for o in busy if o.status is S.PAID for b in o.bill_ids}

        # The billing system may be across a network: no transaction is open here. The
        # price needs its own word now (fresh), never a copy from an outage.
        summary = self._billing.account_summary(biller, account, fresh=True)
        open_bills = [
            (b.id, b.outstanding_fen) for b in summary.open_bills
            if b.id is not None and b.id not in covered and b.outstanding_fen > 0
        ]
        chosen, amount = choose_bills(open_bills, bill_ids)
        # One live order per bill: an earlier open order for any of these bills is
        # closed at its channel first, so that its stale cashier cannot pay them again.
        for rival in busy:
            if rival.status in OPEN_STATES and set(rival.bill_ids) & set(chosen):
                mine = self._supersede(rival.order_no, key)
                if mine is not None:  # the same key's request got there first
                    return self._replay(mine, wanted, cmd)
        periods = {b.id: b.period for b in summary.open_bills}
        owed = dict(open_bills)
        now = self._clock()
        order = Order(
            order_no=new_order_no(now), idempotency_key=key, request_hash=wanted,
            biller=biller, account=account, bill_ids=chosen, amount_fen=amount,
            channel=cmd.channel, created_at=now, expires_at=now + self._ttl,
            payer=cmd.payer or cmd.payer_openid, email=cmd.email,
            lines=tuple(OrderLine(b, periods.get(b, ""), owed[b]) for b in chosen),
            holder=summary.masked_name,
        )
        order.events.append(OrderEvent("state", "", S.CREATED.value, {
            "amount_fen": amount, "channel": cmd.channel,
            "bills": [[b, periods.get(b, ""), owed[b]] for b in chosen],
        }))
        uow = self._uow_factory()
        twin: Order | None = None
        with uow:
            try:
                uow.orders.add(order)
                uow.commit()
            except DuplicateKey:
                uow.rollback()
                twin = uow.orders.by_idempotency_key(key)
                if twin is None:  # pragma: no cover - an order number drawn twice (80 bits)
                    raise
        if twin is not None:  # a concurrent request with the same key won the insert
            return self._replay(twin, wanted, cmd)
        log.info("order %s created: %s %s %d fen via %s", order.order_no, biller, account,
                 amount, cmd.channel)
        return self._prepay(order, mode=cmd.mode, payer_openid=cmd.payer_openid,
                            client_ip=cmd.client_ip, return_url=cmd.return_url, new=True)

    def _supersede(self, order_no: str, key: str) -> Order | None:
        """Close an open order whose bills a new order is about to take: at the channel,
        then here. Raises JustPaid when it turns out paid (its payment is taken), and
        PreviousOrderOpen when the channel cannot say. Returns the order instead when it
        is this very request's (a twin request with the same key made it meanwhile)."""
        order = self._get(order_no)
        if order.idempotency_key == key:
            return order
        if order.status in (S.PAID, S.POSTED):
            raise JustPaid(key="err.order.just_paid", order_no=order_no)
        if not order.is_open:
            return None
        channel = self._channels.get(order.channel)
        confirmed = order.attempts == 0  # never prepaid: nothing at the channel
        if not confirmed and channel is not None:
            try:
                channel.close(order_no)
                confirmed = True
            except ChannelError as exc:
                try:
                    state = channel.query(order_no)
                except ChannelError as again:
                    raise PreviousOrderOpen(key="err.order.previous_open",
                                            order_no=order_no) from again
                if state.state == "paid":
                    self._take_queried(order_no, state)
                    raise JustPaid(key="err.order.just_paid", order_no=order_no) from exc
                if state.state not in ("closed", "unknown"):
                    raise PreviousOrderOpen(key="err.order.previous_open",
                                            order_no=order_no) from exc
                confirmed = True
        self._close_locally(order_no, "replaced by a new order for the same bills",
                            confirmed=confirmed)
        log.info("order %s closed: a new order takes its bills", order_no)
        return None

    def _replay(self, order: Order, wanted: str, cmd: CreateOrder) -> OrderView:
        if order.request_hash != wanted:
            raise IdempotencyConflict(key="err.order.key_reused")
        if order.status is S.CREATED and self._clock() < order.expires_at:
            # The first call stored the order but its prepay failed or never answered.
            return self._prepay(order, mode=cmd.mode, payer_openid=cmd.payer_openid,
                                client_ip=cmd.client_ip, return_url=cmd.return_url)
        return view(order)

    def retry(self, order_no: str, *, mode: str = "", payer_openid: str = "",
              client_ip: str = "", return_url: str = "") -> OrderView:
        """A new payment attempt on the same order after a failed one."""
        order = self._get(order_no)
        if order.status in (S.PAID, S.POSTED):
            raise AlreadyPaid(key="err.order.already_paid", order_no=order_no)
        if order.failed_attempts >= MAX_ATTEMPTS or order.status is S.FAILED:
            raise AttemptsExhausted(key="err.order.attempts", order_no=order_no,
                                    n=MAX_ATTEMPTS)
        if order.status in (S.CLOSED, S.DISPUTED):
            raise InvalidTransition(key="err.order.closed", order_no=order_no)
        if self._clock() >= order.expires_at:
            raise InvalidTransition(key="err.order.expired", order_no=order_no)
        if order.status is S.PENDING and order.action and (
            not mode or order.action.get("mode", "") == mode
        ):
            return view(order)  # the current attempt is still open
        return self._prepay(order, mode=mode or str(order.action.get("mode", "")),
                            payer_openid=payer_openid, client_ip=client_ip,
                            return_url=return_url)

    def pay_with_code(self, order_no: str, auth_code: str, *, client_ip: str = "") -> OrderView:
        """Charge the customer's payment code (付款码) read by a terminal's scanner, as a
        new attempt on the order. The channel answers at once (paid, failed) or asks the
        customer to confirm on the phone (pending: the reconcile loop and the status
        poll follow it). The amount is the order's, as always."""
        code = auth_code.strip()
        if not (16 <= len(code) <= 24 and code.isascii() and code.isdigit()):
            raise InvalidInput(key="err.order.payment_code")
        order = self._get(order_no)
        channel = self._channel(order.channel)
        if not takes_payment_code(channel):
            raise InvalidInput(key="err.order.no_payment_code", channel=order.channel)
        if order.status in (S.PAID, S.POSTED):
            raise AlreadyPaid(key="err.order.already_paid", order_no=order_no)
        if not order.is_open or order.failed_attempts >= MAX_ATTEMPTS:
            raise InvalidTransition(key="err.order.state", order_no=order_no,
                                    status=order.status.value)
        seen = order.attempts
        if order.status is S.PENDING and order.action:
            # the QR attempt on screen gives way to the scanned code: one live attempt
            self._close_attempt(order_no)
        request = self._payment_request(order, mode="payment_code", attempt=seen + 1,
                                        client_ip=client_ip)

        def start(uow: UnitOfWork) -> bool:
            current = uow.orders.get(order_no, for_update=True)
            assert current is not None
            if current.attempts != seen or not current.is_open:
                return False  # a twin scan (or a payment) moved it on meanwhile
            current.start_attempt({"kind": "payment_code", "mode": "payment_code"})
            uow.orders.save(current, now=self._clock())
            uow.commit()
            return True

        if not self._in_tx(start):
            return self.get(order_no)
        try:
            state = channel.collect_with_code(request, code)  # type: ignore[attr-defined]
        except ChannelError as exc:
            log.warning("payment code for %s at %s: no answer: %s", order_no, order.channel,
                        exc)
            self._note(order_no, "attempt", payment_code_error=_clip(str(exc), 500))
            raise ChannelUnavailable(order_no, f"the payment channel did not answer; the "
                                               f"order is kept ({order_no})") from exc
        if state.state == "paid":
            self._take_queried(order_no, state)
        elif state.state == "failed":
            self._query_failed(order_no, state.attempt)
        return self.get(order_no)

    def _close_attempt(self, order_no: str) -> None:
        """End the open attempt without counting it as failed (the customer chose to pay
        another way); its cashier is closed by the next prepay of the same number."""

        def apply(uow: UnitOfWork) -> None:
            order = uow.orders.get(order_no, for_update=True)
            if order is not None and order.status is S.PENDING and order.action:
                order.action = {}
                _event(order, "attempt", replaced="by a payment code")
                uow.orders.save(order, now=self._clock())
                uow.commit()

        self._in_tx(apply)

    def get(self, order_no: str) -> OrderView:
        return view(self._get(order_no))

    def payable(self, biller: str, account: str) -> AccountSummary:
        """The account as a payer sees it: its open bills, less those that a paid order
        covers while its posting is on the way (they are not offered twice)."""
        with self._read_uow() as uow:
            _check_offered(uow, normalize_biller(biller))
        summary = self._billing.account_summary(biller, account)
        with self._read_uow() as uow:
            covered = uow.orders.paid_bill_ids(summary.biller, summary.account)
        if not covered:
            return summary
        return replace(summary, open_bills=tuple(
            b for b in summary.open_bills if b.id not in covered))

    def _get(self, order_no: str) -> Order:
        with self._read_uow() as uow:
            order = uow.orders.get(order_no)
        if order is None:
            raise OrderNotFound(key="err.order.not_found", order_no=order_no[:32])
        return order

    def _channel(self, name: str) -> PaymentChannel:
        channel = self._channels.get(name)
        if channel is None:
            enabled = ", ".join(sorted(self._channels)) or "none"
            raise UnknownChannel(key="err.order.channel", channel=name[:32], enabled=enabled)
        return channel

    def _biller_name(self, code: str, uow: UnitOfWork | None = None) -> str:
        """The biller's display name; pass the open unit of work when inside one (a
        second connection would wait for the first one's lock on SQLite)."""
        known = self._biller_names.get(code)
        if known is not None and time.monotonic() - known[1] < BILLER_NAME_TTL_S:
            return known[0]
        if uow is None:
            with self._read_uow() as own:
                biller = own.billers.get(code)
        else:
            biller = uow.billers.get(code)
        name = biller.name if biller else code
        self._biller_names[code] = (name, time.monotonic())
        return name

    def _payment_request(self, order: Order, *, mode: str, attempt: int, client_ip: str,
                         payer_openid: str = "", return_url: str = "") -> PaymentRequest:
        """What the channel is asked for one attempt: the order's own amount, always."""
        return PaymentRequest(
            order_no=order.order_no, amount_fen=order.amount_fen,
            description=f"{self._biller_name(order.biller)} {order.account}",
            notify_url=f"{self._base}/api/v1/notify/{order.channel}",
            expires_at=order.expires_at, mode=mode, payer_openid=payer_openid,
            client_ip=client_ip, attempt=attempt,
            # Back to our own status page, which asks the server; never trust the
            # cashier's word that the payment went through.
            return_url=return_url or f"{self._base}/pay/{order.order_no}",
        )

    def _prepay(self, order: Order, *, mode: str, payer_openid: str, client_ip: str,
                return_url: str, new: bool = False) -> OrderView:
        channel = self._channel(order.channel)
        seen_attempts = order.attempts
        request = self._payment_request(order, mode=mode, attempt=seen_attempts + 1,
                                        payer_openid=payer_openid, client_ip=client_ip,
                                        return_url=return_url)
        try:
            action = dict(channel.create_payment(request))
        except ChannelError as exc:
            log.warning("prepay of %s at %s failed: %s", order.order_no, order.channel, exc)
            self._note(order.order_no, "attempt", prepay_failed=_clip(str(exc), 500))
            raise ChannelUnavailable(
                order.order_no,
                f"the payment channel is unavailable, please try again ({order.order_no})",
            ) from exc
        if mode:
            action.setdefault("mode", mode)

        def apply(uow: UnitOfWork) -> Order:
            current = uow.orders.get(order.order_no, for_update=True)
            assert current is not None
            if current.attempts > seen_attempts or not current.is_open:
                # A twin request made this attempt meanwhile, or the order moved on.
                return current
            current.start_attempt(action)
            uow.orders.save(current, now=self._clock())
            uow.commit()
            return current

        current = self._in_tx(apply)
        if current.status in (S.CLOSED, S.FAILED) and current.attempts == seen_attempts:
            # Closed while this prepay was on its way: nobody will see its cashier, and
            # the trade it opened at the channel is closed too (else the reconcile loop
            # does it: the order stays unsettled).
            self._settle_at_channel(order.order_no)
        return view(current, new=new)

    def _note(self, order_no: str, kind: str, **detail: Any) -> None:
        def apply(uow: UnitOfWork) -> None:
            order = uow.orders.get(order_no, for_update=True)
            if order is not None:
                _event(order, kind, **detail)
                uow.orders.save(order, now=self._clock())
                uow.commit()

        self._in_tx(apply)

    def _in_tx(self, fn: Callable[[UnitOfWork], T]) -> T:
        """Run `fn` in a unit of work, again if the order changed under it."""
        for attempt in range(_STALE_RETRIES):
            try:
                with self._uow_factory() as uow:
                    return fn(uow)
            except StaleOrder:
                if attempt == _STALE_RETRIES - 1:
                    raise
                log.info("order changed concurrently; trying again")
        raise AssertionError("unreachable")  # pragma: no cover

    # --- notifications ------------------------------------------------------------

    def handle_notification(self, channel_name: str, headers: Mapping[str, str],
                            body: bytes) -> NotifyAnswer:
        channel = self._channel(channel_name)
        body_sha = hashlib.sha256(body).hexdigest()
        received = self._clock()
        try:
            note = channel.parse_notification(headers, body)
        except NotificationRejected as exc:
            if not self._record_rejected(channel_name):
                skipped = self._unrecorded.get(channel_name, 0) + 1
                self._unrecorded[channel_name] = skipped
                if skipped == 1 or skipped % 1000 == 0:
                    log.warning("rejected %s notifications arrive faster than they are "
                                "kept; %d not recorded so far", channel_name, skipped)
                return channel.answer(False, "verification failed")
            log.warning("rejected a %s notification (sha256 %s): %s", channel_name,
                        body_sha[:16], exc)
            with self._uow_factory() as uow:
                uow.notifications.add(ReceivedNotification(
                    None, channel_name, received, False, "", "", "", _clip(str(exc)), body_sha,
                ))
                uow.commit()
            return channel.answer(False, "verification failed")

        def apply(uow: UnitOfWork) -> NotifyAnswer:
            return self._apply_notification(uow, channel, note, received, body_sha)

        answer = self._in_tx(apply)
        if note.outcome == "failed":
            self._settle_at_channel(note.order_no)  # if that was its last attempt
        return answer

    def _apply_notification(self, uow: UnitOfWork, channel: PaymentChannel,
                            note: ChannelNotification, received: dt.datetime,
                            body_sha: str) -> NotifyAnswer:
        def record(verified: bool, error: str = "") -> None:
            uow.notifications.add(ReceivedNotification(
                None, channel.name, received, verified, note.notification_id, note.order_no,
                note.outcome, _clip(error), body_sha,
            ))

        if note.merchant_id != channel.merchant_id:
            log.warning("%s notification %s names merchant %r, not ours", channel.name,
                        note.notification_id, note.merchant_id)
            record(False, f"merchant {note.merchant_id!r} is not {channel.merchant_id!r}")
            uow.commit()
            return channel.answer(False, "merchant mismatch")
        order = uow.orders.get(note.order_no, for_update=True)
        if order is None or order.channel != channel.name:
            log.warning("%s notification %s for unknown order %r", channel.name,
                        note.notification_id, note.order_no)
            record(True, "unknown order")
            uow.commit()
            return channel.answer(False, "unknown order")
        if uow.notifications.seen(channel.name, note.notification_id):
            record(True, "duplicate")
            uow.commit()
            return channel.answer(True)

        now = self._clock()
        _event(order, "notification", notification_id=note.notification_id,
               outcome=note.outcome, amount_fen=note.amount_fen,
               channel_txn_id=note.channel_txn_id)
        error = ""
        if note.outcome == "paid":
            error = self._take_payment(
                uow, order, channel_txn_id=note.channel_txn_id, amount_fen=note.amount_fen,
                paid_at=note.paid_at or received, now=now, source="notification",
            )
        elif note.outcome == "failed":
            order.attempt_failed(str(note.raw.get("reason", "")) or "payment failed",
                                 attempt=note.attempt)
        elif note.outcome == "closed":
            if order.is_open:
                order.close("closed by the channel", confirmed=True)
            else:
                order.confirm_settled("closed by the channel")
        else:
            error = f"unknown outcome {note.outcome!r}"
        record(not error, error)
        uow.orders.save(order, now=now)
        uow.commit()
        return channel.answer(True)  # flagged ones too: the channel must stop re-sending

    def _take_payment(self, uow: UnitOfWork, order: Order, *, channel_txn_id: str,
                      amount_fen: int, paid_at: dt.datetime, now: dt.datetime,
                      source: str) -> str:
        """mark_paid, and the posting outbox row in the caller's transaction. Returns ''
        or why the payment is not posted: then the order is disputed (another amount,
        or bills another order paid) or flagged (a second transaction), for staff to
        refund; the channel is answered OK all the same, it must stop re-sending."""
        if order.status not in (S.PAID, S.POSTED, S.DISPUTED):
            rival = self._covering_order(uow, order)
            if rival:
                order.dispute(Flag.OVERPAYMENT, channel_txn_id=channel_txn_id,
                              amount_fen=amount_fen, paid_at=paid_at, source=source,
                              bills_paid_by=rival)
                log.error("order %s: overpayment (%s): its bills were paid by %s; %d fen "
                          "to refund (%s)", order.order_no, source, rival, amount_fen,
                          channel_txn_id)
                return f"overpayment: the bills were paid by {rival}"
        try:
            changed = order.mark_paid(channel_txn_id=channel_txn_id, amount_fen=amount_fen,
                                      paid_at=paid_at)
        except AmountMismatch as exc:
            order.dispute(Flag.AMOUNT_MISMATCH, channel_txn_id=channel_txn_id,
                          amount_fen=amount_fen, paid_at=paid_at, source=source,
                          expected_fen=order.amount_fen)
            log.error("order %s: amount mismatch (%s): %s", order.order_no, source, exc)
            return str(exc)
        except AlreadyPaidElsewhere as exc:
            order.flag_for_staff(Flag.PAID_ELSEWHERE, at=now)
            log.error("order %s: paid elsewhere (%s): %s", order.order_no, source, exc)
            _event(order, "note", flag=Flag.PAID_ELSEWHERE.value, source=source,
                   error=str(exc), channel_txn_id=channel_txn_id, amount_fen=amount_fen)
            return str(exc)
        if changed:
            uow.postings.add(Posting(order.order_no, created_at=now, next_attempt_at=now))
            if order.payer:
                uow.payers.remember(order.payer, order.biller, order.account, now)
            log.info("order %s paid (%s, %s)", order.order_no, source, channel_txn_id)
        return ""

    @staticmethod
    def _covering_order(uow: UnitOfWork, order: Order) -> str:
        """Another order that paid any of this order's bills since it was made, or ''.
        (Before it was made, pricing already left out bills that were paid.)"""
        mine = set(order.bill_ids)
        for other in uow.orders.paid_since(order.biller, order.account,
                                           order.created_at - CLOCK_MARGIN):
            if other.order_no != order.order_no and mine & set(other.bill_ids):
                return other.order_no
        return ""

    # --- posting ------------------------------------------------------------------

    def dispatch_postings(self, limit: int = 20) -> int:
        """Post due outbox rows to the billing system; returns how many were posted.

        Rows are claimed one at a time, right before their billing call, so that each
        lease (`posting_lease`, longer than the billing call's own timeout) starts when
        its call does; a claim is a short transaction of its own."""
        posted = 0
        for _ in range(limit):
            now = self._clock()
            with self._uow_factory() as uow:
                posting = uow.postings.claim_due(now, lease_until=now + self._lease)
                order = uow.orders.get(posting.order_no) if posting is not None else None
                uow.commit()
            if posting is None or order is None:
                break
            if self._post_one(posting, order):
                posted += 1
        return posted

    def _post_one(self, posting: Posting, order: Order) -> bool:
        request = PaymentPosting(
            payment_id=order.order_no, biller=order.biller, account=order.account,
            amount_fen=order.amount_fen, bill_ids=order.bill_ids, channel=order.channel,
            channel_txn_id=order.channel_txn_id, paid_at=order.paid_at,
        )
        unallocated = False
        try:
            try:
                result = self._billing.post_payment(request)
            except BillNotOpen:
                # The chosen bills were settled meanwhile (two payers, or a late
                # payment). The money is real: post it to the account, which pays its
                # open bills oldest first and keeps the rest as prepaid balance.
                unallocated = True
                result = self._billing.post_payment(replace(request, bill_ids=()))
        except Exception as exc:  # noqa: BLE001 - every failure is retried with back-off
            self._posting_failed(posting, exc)
            return False
        return self._posting_done(posting, result, unallocated=unallocated)

    def _posting_done(self, claimed: Posting, result: PostingResult, *,
                      unallocated: bool) -> bool:
        def apply(uow: UnitOfWork) -> bool:
            order = uow.orders.get(claimed.order_no, for_update=True)
            posting = uow.postings.get(claimed.order_no)
            if order is None or posting is None or posting.status == "done":
                return False  # another worker finished it
            now = self._clock()
            _event(order, "posting", attempt=claimed.attempts, result="posted",
                   duplicate=result.duplicate, applied=[list(a) for a in result.applied],
                   surplus_fen=result.surplus_fen, bills_settled_meanwhile=unallocated)
            order.mark_posted(posted_at=now, duplicate=result.duplicate)
            posting.status = "done"
            posting.done_at = now
            posting.last_error = ""
            posting.claim = claimed.claim  # the fence: written only under our own claim
            if not uow.postings.save(posting):
                uow.rollback()
                log.warning("posting of %s: lease lost to a newer claim; its outcome is "
                            "left to that one", claimed.order_no)
                return False
            uow.orders.save(order, now=now)
            # the worker that posts delivers messages in this same round: no wake-up
            uow.messages.add(self._receipt(uow, order, result), wake=False)
            uow.commit()
            log.info("order %s posted%s", order.order_no,
                     " (duplicate)" if result.duplicate else "")
            if self._on_posted is not None:
                try:
                    self._on_posted(order.biller, order.account)
                except Exception:
                    log.warning("on_posted(%s) failed", order.order_no, exc_info=True)
            return True

        return self._in_tx(apply)

    def _posting_failed(self, claimed: Posting, exc: Exception) -> None:
        error = _clip(f"{type(exc).__name__}: {exc}", 2000)

        def apply(uow: UnitOfWork) -> None:
            order = uow.orders.get(claimed.order_no, for_update=True)
            posting = uow.postings.get(claimed.order_no)
            if order is None or posting is None or posting.status == "done":
                return
            now = self._clock()
            delay = min(POSTING_BACKOFF * 2 ** max(posting.attempts - 1, 0),
                        POSTING_BACKOFF_CAP)
            was_stuck = posting.status == "stuck"
            posting.next_attempt_at = now + delay
            posting.last_error = error
            if posting.attempts >= self._dead_after:
                posting.status = "dead"  # the dead-letter queue: staff replay it
                posting.dead_at = now
            elif posting.attempts >= self._flag_after:
                posting.status = "stuck"  # shown to staff; still retried
            _event(order, "posting", attempt=posting.attempts, result="failed",
                   error=error, next_attempt_at=posting.next_attempt_at.isoformat(),
                   stuck=posting.status == "stuck", dead=posting.status == "dead")
            posting.claim = claimed.claim  # the fence: written only under our own claim
            if not uow.postings.save(posting):
                uow.rollback()  # a newer claim owns the outcome now
                log.warning("posting of %s failed after its lease was lost: %s",
                            claimed.order_no, error)
                return
            uow.orders.save(order, now=now)
            uow.commit()
            if posting.status == "dead":
                log.error("posting of %s dead-lettered after %d attempts: %s",
                          order.order_no, posting.attempts, error)
            elif posting.status == "stuck" and not was_stuck:
                log.error("posting of %s is stuck after %d attempts: %s", order.order_no,
                          posting.attempts, error)
            else:
                log.warning("posting of %s failed (attempt %d): %s", order.order_no,
                            posting.attempts, error)

        self._in_tx(apply)

    def replay_posting(self, order_no: str, *, actor: str, ip: str = "") -> Posting:
        """Take a dead-lettered posting back into the outbox: pending, attempts reset,
        due now; noted in the order's history and the audit log (one transaction)."""

        def apply(uow: UnitOfWork) -> Posting:
            order = uow.orders.get(order_no, for_update=True)
            posting = uow.postings.get(order_no)
            if order is None or posting is None:
                raise OrderNotFound(key="err.order.not_found", order_no=order_no[:32])
            if posting.status != "dead":
                raise PostingNotDead(key="err.posting.not_dead", order_no=order_no,
                                     status=posting.status)
            now = self._clock()
            previous = posting.attempts
            posting.status = "pending"
            posting.attempts = 0
            posting.next_attempt_at = now
            posting.dead_at = None
            _event(order, "note", posting="replayed", by=actor, attempts_before=previous,
                   last_error=posting.last_error)
            if not uow.postings.save(posting, new_claim=True):  # pragma: no cover
                raise StaleOrder(f"the posting of {order_no} changed meanwhile")
            uow.orders.save(order, now=now)
            uow.audit.record(AuditEntry(
                id=None, at=now, actor=actor, action="posting.replay", target=order_no,
                detail={"attempts_before": previous, "last_error": posting.last_error[:200]},
                ip=ip,
            ))
            uow.commit()
            log.warning("posting of %s replayed by %s after %d attempts", order_no, actor,
                        previous)
            return posting

        return self._in_tx(apply)

    def _receipt(self, uow: UnitOfWork, order: Order, result: PostingResult) -> Message:
        periods = {line.bill_id: line.period for line in order.lines}
        bills = "、".join(
            f"{periods.get(b) or '#' + str(b)} {format_fen(fen)}" for b, fen in result.applied
        ) or "—"
        if result.surplus_fen:
            bills += f"；预存 {format_fen(result.surplus_fen)}"
        name = self._biller_name(order.biller, uow)
        paid_at = order.paid_at or order.posted_at or order.created_at
        link = f"{self._base}/receipt/{order.order_no}"
        body = "\n".join([
            "您的缴费已成功入账，凭证如下：",
            f"订单号：{order.order_no}",
            f"缴费项目：{name}（{order.biller}）",
            f"户号：{order.account}",
            f"金额：{format_fen(order.amount_fen)}",
            f"账单：{bills}",
            f"支付渠道：{order.channel}",
            f"渠道交易号：{order.channel_txn_id}",
            f"支付时间：{paid_at.astimezone(self._tz):%Y-%m-%d %H:%M:%S}",
            f"电子凭证：{link}",
        ])
        return Message(
            id=None, kind="receipt", to=order.email,
            subject=f"缴费凭证 {name} {order.account} {format_fen(order.amount_fen)}",
            body=body, created_at=self._clock(),
        )

    # --- never stuck --------------------------------------------------------------

    def reconcile_pending(self, now: dt.datetime | None = None, *, limit: int = 100) -> int:
        """Query the channel about open orders we heard nothing of, close expired ones,
        and settle orders closed or failed here that the channel has not confirmed.
        Returns how many orders changed."""
        now = now or self._clock()
        with self._uow_factory() as uow:
            order_nos = uow.orders.unsettled_older_than(now - self._query_after, limit=limit)
        changed = 0
        for order_no in order_nos:
            try:
                if self._reconcile_one(order_no, now):
                    changed += 1
            except ChannelError as exc:
                log.warning("reconciling %s: the channel did not answer: %s", order_no, exc)
                self._touch(order_no)  # let the others in the queue have their turn
        return changed

    def _reconcile_one(self, order_no: str, now: dt.datetime) -> bool:
        order = self._get(order_no)
        if order.settled:
            return False
        if not order.is_open:
            return self._settle_at_channel(order_no)
        expired = now >= order.expires_at
        channel = self._channels.get(order.channel)
        if order.status is S.CREATED or channel is None:
            # Never prepaid (no customer can have paid it), or its channel is gone.
            if expired:
                reason = ("expired before a payment was started" if channel is not None
                          else f"expired; channel {order.channel} is not enabled")
                return self._close_locally(order_no, reason, confirmed=channel is not None)
            self._touch(order_no)  # let the others in the queue have their turn
            return False
        state = channel.query(order_no)
        if state.state == "paid":
            return self._take_queried(order_no, state)
        if state.state == "closed":
            return self._close_locally(order_no, "closed at the channel", confirmed=True)
        if state.state == "failed" and order.action:
            changed = self._query_failed(order_no, state.attempt)
            if changed:
                self._settle_at_channel(order_no)  # if that was its last attempt
            return changed
        if not expired:
            self._touch(order_no)
            return False
        try:
            channel.close(order_no)
        except ChannelError as exc:
            # Perhaps it was paid meanwhile: ask again, and take the payment if so.
            again = channel.query(order_no)
            if again.state == "paid":
                return self._take_queried(order_no, again)
            if again.state == "pending":
                log.warning("could not close %s at %s: %s", order_no, order.channel, exc)
                self._touch(order_no)
                return False
        return self._close_locally(order_no, "expired", confirmed=True)

    def _settle_at_channel(self, order_no: str) -> bool:
        """An order closed or failed here: make sure its channel can no longer take money
        for it (close it there), and take the payment if it already did. Until the
        channel confirms, the order stays unsettled and the reconcile loop comes back.
        Errors of the channel are logged, never raised (the loop retries)."""
        order = self._get(order_no)
        if order.settled or order.status not in (S.CLOSED, S.FAILED):
            return False
        channel = self._channels.get(order.channel)
        if channel is None:
            log.warning("order %s: channel %s is not enabled; cannot confirm it is closed "
                        "there", order_no, order.channel)
            self._touch(order_no)
            return False
        try:
            state = channel.query(order_no)
            if state.state not in ("paid", "closed", "unknown"):
                try:
                    channel.close(order_no)
                    state = ChannelQuery(state="closed")
                except ChannelError:
                    state = channel.query(order_no)  # perhaps paid meanwhile
        except ChannelError as exc:
            log.warning("order %s: its channel did not answer; trying later: %s", order_no,
                        exc)
            self._touch(order_no)
            return False
        if state.state == "paid":
            return self._take_queried(order_no, state)
        if state.state in ("closed", "unknown"):
            return self._confirm_settled(order_no, f"{state.state} at the channel")
        self._touch(order_no)
        return False

    def _confirm_settled(self, order_no: str, how: str) -> bool:
        def apply(uow: UnitOfWork) -> bool:
            order = uow.orders.get(order_no, for_update=True)
            if order is None or order.settled:
                return False
            order.confirm_settled(how)
            uow.orders.save(order, now=self._clock())
            uow.commit()
            log.info("order %s %s: %s", order_no, order.status, how)
            return True

        return self._in_tx(apply)

    def _take_queried(self, order_no: str, state: ChannelQuery) -> bool:
        def apply(uow: UnitOfWork) -> bool:
            order = uow.orders.get(order_no, for_update=True)
            if order is None:  # pragma: no cover
                return False
            now = self._clock()
            _event(order, "query", state=state.state, amount_fen=state.amount_fen,
                   channel_txn_id=state.channel_txn_id)
            before = order.status
            self._take_payment(uow, order, channel_txn_id=state.channel_txn_id,
                               amount_fen=state.amount_fen, paid_at=state.paid_at or now,
                               now=now, source="query")
            uow.orders.save(order, now=now)
            uow.commit()
            return order.status is not before

        return self._in_tx(apply)

    def _query_failed(self, order_no: str, attempt: int | None) -> bool:
        def apply(uow: UnitOfWork) -> bool:
            order = uow.orders.get(order_no, for_update=True)
            if order is None or order.status is not S.PENDING or not order.action:
                return False
            _event(order, "query", state="failed", attempt=attempt)
            counted = order.attempt_failed("the channel reports the attempt failed",
                                           attempt=attempt)
            uow.orders.save(order, now=self._clock())
            uow.commit()
            return counted

        return self._in_tx(apply)

    def _close_locally(self, order_no: str, reason: str, *, confirmed: bool) -> bool:
        def apply(uow: UnitOfWork) -> bool:
            order = uow.orders.get(order_no, for_update=True)
            if order is None or not order.is_open:
                return False  # paid (or closed) meanwhile
            order.close(reason, confirmed=confirmed)
            uow.orders.save(order, now=self._clock())
            uow.commit()
            log.info("order %s closed: %s", order_no, reason)
            return True

        return self._in_tx(apply)

    def _touch(self, order_no: str) -> None:
        """Nothing to do yet: stamp the order so that it comes up again only after
        `query_after`, not on every round of the worker (the channel is not asked
        about one order over and over, and the queue rotates)."""

        def apply(uow: UnitOfWork) -> None:
            order = uow.orders.get(order_no, for_update=True)
            if order is not None and not order.settled:
                uow.orders.save(order, now=self._clock())
                uow.commit()

        self._in_tx(apply)

    # --- messages -----------------------------------------------------------------

    def deliver_messages(self, notifier: Notifier, limit: int = 20) -> int:
        """Hand queued messages to the notifier; returns how many were sent.

        Each is claimed on its own for MESSAGE_LEASE (longer than a notifier's own
        timeout) under a fencing token: two workers never send one message twice, and
        a worker whose lease ran out cannot overwrite the outcome of the one that took
        it over."""
        sent = 0
        for _ in range(limit):
            now = self._clock()
            with self._uow_factory() as uow:
                message = uow.messages.claim_due(now, lease_until=now + MESSAGE_LEASE)
                uow.commit()
            if message is None:
                break
            try:
                notifier.send(message)
            except NotifierError as exc:
                message.attempts += 1
                message.error = _clip(f"attempt {message.attempts}: {exc}")
                if message.attempts >= MESSAGE_MAX_ATTEMPTS or isinstance(
                        exc, MessageUndeliverable):
                    message.status = "failed"
                    log.error("message %s to %r failed for good: %s", message.id,
                              message.to, exc)
                else:
                    message.next_attempt_at = self._clock() + MESSAGE_BACKOFF * 2 ** (
                        message.attempts - 1)
                    log.warning("message %s to %r not delivered: %s", message.id,
                                message.to, exc)
            else:
                message.status = "sent"
                message.sent_at = self._clock()
                message.error = ""
                sent += 1
            with self._uow_factory() as uow:
                if uow.messages.save(message):
                    uow.commit()
                else:
                    log.warning("message %s: lease lost to a newer claim", message.id)
        return sent
