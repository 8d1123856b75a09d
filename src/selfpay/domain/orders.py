"""Orders: one customer intent to pay chosen bills of one account, and its life cycle.

    created -> pending (channel prepay made) -> paid -> posted
    created | pending -> closed | failed
    any state before paid -> disputed (money taken that is not posted: staff decide)

Every change goes through `_move_to`, which checks the one transition table and records
an OrderEvent; services store those events as the order's history. A payment attempt
that fails leaves the order pending for another try, up to MAX_ATTEMPTS; then it fails.

A channel may report money taken for an order we had already closed or failed (a late
payment after the customer paid in a stale cashier). The money is real, so the order
moves to paid and is posted like any other, flagged `late` for staff. But when another
order has paid the same bills meanwhile, it is an overpayment: the order is `disputed`
(never posted) so that staff refund it. A payment of another amount than the order's
is disputed too.

`settled` says the channel has confirmed a terminal state (paid, or closed there), or
that there is none to confirm (no prepay was ever made). An order closed or failed
here before its channel confirmed stays unsettled: the reconcile loop keeps asking.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from selfpay.domain.errors import DomainError, InvalidInput

MAX_ATTEMPTS = 3
ORDER_TTL = dt.timedelta(minutes=30)  # after this a pending order is queried, then closed
_ORDER_NO_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O/1/I: read over the phone


class OrderStatus(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    PAID = "paid"
    POSTED = "posted"
    CLOSED = "closed"
    FAILED = "failed"
    DISPUTED = "disputed"


S = OrderStatus
ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.CREATED: frozenset({S.PENDING, S.CLOSED, S.FAILED, S.DISPUTED}),
    S.PENDING: frozenset({S.PENDING, S.PAID, S.CLOSED, S.FAILED, S.DISPUTED}),
    S.PAID: frozenset({S.POSTED}),
    S.POSTED: frozenset(),
    # A channel can still report a payment after we gave up on the order: see above.
    S.CLOSED: frozenset({S.PAID, S.DISPUTED}),
    S.FAILED: frozenset({S.PAID, S.DISPUTED}),
    S.DISPUTED: frozenset(),  # terminal: staff refund it (or settle it by hand)
}
OPEN_STATES = frozenset({S.CREATED, S.PENDING})


class Flag(StrEnum):
    """What staff must look at on an order (the payment-health page lists them)."""

    LATE = "late"  # paid after it was closed or failed here; posted all the same
    PAID_ELSEWHERE = "paid_elsewhere"  # a second channel transaction: refund that one
    OVERPAYMENT = "overpayment"  # its bills were paid by another order: refund it
    AMOUNT_MISMATCH = "amount_mismatch"  # the channel took another amount: refund it


class OrderError(DomainError):
    default_key = "err.order.conflict"


class InvalidTransition(OrderError):
    pass


class AmountMismatch(OrderError):
    """A channel reports an amount other than the order's: never paid, flagged."""


class AlreadyPaidElsewhere(OrderError):
    """A second channel transaction for an order that is already paid."""


class AttemptsExhausted(OrderError):
    pass


class AlreadyPaid(OrderError):
    """Nothing left to pay: the order is paid (or posted)."""


class NothingToPay(InvalidInput):
    default_key = "err.order.nothing_to_pay"


class IdempotencyConflict(InvalidInput):
    """The same Idempotency-Key with a different request body."""


def new_order_no(now: dt.datetime) -> str:
    """'SP' + UTC date + 16 random characters (80 bits): unique in practice (a unique
    constraint catches the rest), unguessable, and within WeChat's out_trade_no rules
    (6-32 characters of letters and digits)."""
    tail = "".join(secrets.choice(_ORDER_NO_ALPHABET) for _ in range(16))
    return f"SP{now:%Y%m%d}{tail}"


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One line of an order's history."""

    kind: str  # state | attempt | notification | posting | query | note
    from_status: str
    to_status: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrderLine:
    """A bill as the order priced it: what the receipt shows, with no look-up of the
    bills table (which the DMZ does not have behind a bridge)."""

    bill_id: int
    period: str
    amount_fen: int  # what this order pays of the bill


@dataclass(slots=True)
class Order:
    order_no: str
    idempotency_key: str
    request_hash: str
    biller: str
    account: str
    bill_ids: tuple[int, ...]
    amount_fen: int
    channel: str
    created_at: dt.datetime
    expires_at: dt.datetime
    status: OrderStatus = OrderStatus.CREATED
    attempts: int = 0  # prepay attempts made at the channel
    failed_attempts: int = 0
    channel_txn_id: str = ""
    paid_at: dt.datetime | None = None
    posted_at: dt.datetime | None = None
    payer: str = ""  # openid or signed browser id that "my accounts" remembers
    email: str = ""  # receipt address, optional
    action: dict[str, Any] = field(default_factory=dict)  # what the client needs to pay
    version: int = 0  # bumped by the repository on every update (optimistic check)
    lines: tuple[OrderLine, ...] = ()  # the bills priced, in bill_ids order
    holder: str = ""  # the account holder's name, masked, as the order was priced
    settled: bool = False  # the channel confirmed a terminal state (see above)
    flag: str = ""  # a Flag for staff, '' when none
    flagged_at: dt.datetime | None = None
    events: list[OrderEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        if type(self.amount_fen) is not int or self.amount_fen <= 0:
            raise NothingToPay(f"order amount must be a positive number of fen: {self.amount_fen}")

    # --- transitions -------------------------------------------------------------

    def _move_to(self, to: OrderStatus, kind: str = "state", **detail: Any) -> None:
        if to not in ALLOWED[self.status]:
            raise InvalidTransition(f"{self.order_no}: {self.status} -> {to} is not allowed")
        self.events.append(OrderEvent(kind, self.status.value, to.value, detail))
        self.status = to

    def start_attempt(self, action: dict[str, Any]) -> None:
        """A prepay at the channel succeeded: the client can now pay."""
        if self.status not in OPEN_STATES:
            raise InvalidTransition(f"{self.order_no}: cannot pay an order that is {self.status}")
        if self.failed_attempts >= MAX_ATTEMPTS:
            raise AttemptsExhausted(f"{self.order_no}: {MAX_ATTEMPTS} attempts failed")
        self.attempts += 1
        self.action = dict(action)
        self._move_to(S.PENDING, "attempt", attempt=self.attempts)

    def attempt_failed(self, reason: str, *, attempt: int | None = None) -> bool:
        """The channel says an attempt failed. It counts once, and only for the live
        attempt: a late report of an earlier attempt (`attempt` is the number the
        channel echoed, None when it cannot tell) or a repeat changes nothing. After
        MAX_ATTEMPTS the order fails. Returns whether the report counted."""
        if self.status is not S.PENDING or not self.action:
            return False  # settled, or this attempt's failure is already counted
        if attempt is not None and attempt != self.attempts:
            self.events.append(OrderEvent("attempt", "pending", "pending", {
                "stale_failure": reason, "of_attempt": attempt, "live_attempt": self.attempts,
            }))
            return False
        self.failed_attempts += 1
        self.action = {}
        if self.failed_attempts >= MAX_ATTEMPTS:
            self._move_to(S.FAILED, reason=reason, failed_attempts=self.failed_attempts)
        else:
            self.events.append(OrderEvent("attempt", "pending", "pending",
                                          {"failed": reason, "failed_attempts":
                                           self.failed_attempts}))
        return True

    def mark_paid(self, *, channel_txn_id: str, amount_fen: int, paid_at: dt.datetime) -> bool:
        """Record the channel's word that the money is taken. Returns False when this
        exact payment was already recorded (channels redeliver: a repeat is a no-op)."""
        if self.status in (S.PAID, S.POSTED):
            if channel_txn_id == self.channel_txn_id:
                return False
            raise AlreadyPaidElsewhere(
                f"{self.order_no}: paid by {self.channel_txn_id}, reported again by "
                f"{channel_txn_id}"
            )
        if self.status is S.DISPUTED:
            if channel_txn_id == self.channel_txn_id:
                return False  # the disputed payment, told again
            raise AlreadyPaidElsewhere(
                f"{self.order_no}: disputed payment {self.channel_txn_id}, another one "
                f"reported by {channel_txn_id}"
            )
        if type(amount_fen) is not int or amount_fen != self.amount_fen:
            raise AmountMismatch(
                f"{self.order_no}: expected {self.amount_fen} fen, channel says {amount_fen}"
            )
        late = self.status in (S.CLOSED, S.FAILED)
        self._move_to(S.PAID, channel_txn_id=channel_txn_id, late=late)
        self.channel_txn_id = channel_txn_id
        self.paid_at = paid_at
        self.action = {}
        self.settled = True
        if late:
            self.flag_for_staff(Flag.LATE, at=paid_at)
        return True

    def dispute(self, flag: Flag, *, channel_txn_id: str, amount_fen: int,
                paid_at: dt.datetime, **detail: Any) -> None:
        """Money was taken that must not be posted (an overpayment, another amount):
        record it for staff, who refund it. Terminal; the channel's word is final."""
        self._move_to(S.DISPUTED, flag=flag.value, channel_txn_id=channel_txn_id,
                      amount_fen=amount_fen, **detail)
        self.channel_txn_id = channel_txn_id
        self.paid_at = paid_at
        self.action = {}
        self.settled = True
        self.flag_for_staff(flag, at=paid_at)

    def flag_for_staff(self, flag: Flag, *, at: dt.datetime) -> None:
        self.flag = flag.value
        self.flagged_at = at

    def mark_posted(self, *, posted_at: dt.datetime, duplicate: bool) -> None:
        if self.status is S.POSTED:
            return
        self._move_to(S.POSTED, duplicate=duplicate)
        self.posted_at = posted_at

    def close(self, reason: str, *, confirmed: bool) -> None:
        """Closed here. `confirmed`: the channel has closed it too (or refused to know
        it); without a prepay there is nothing at the channel to confirm."""
        self._move_to(S.CLOSED, reason=reason)
        self.action = {}
        self.settled = confirmed or self.attempts == 0

    def confirm_settled(self, how: str) -> None:
        """The channel confirmed that this closed or failed order can no longer be
        paid there."""
        if self.status not in (S.CLOSED, S.FAILED) or self.settled:
            return
        self.settled = True
        self.events.append(OrderEvent("query", self.status.value, self.status.value,
                                      {"settled": how}))

    @property
    def attempts_left(self) -> int:
        return max(MAX_ATTEMPTS - self.failed_attempts, 0)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES


def choose_bills(
    open_bills: list[tuple[int, int]], bill_ids: tuple[int, ...] = ()
) -> tuple[tuple[int, ...], int]:
    """The server computes an order's amount: every open bill, or the chosen ones.

    `open_bills` are (bill id, outstanding fen). Returns (bill ids, amount in fen).
    A chosen id that is not an open bill of the account is refused, never ignored.
    """
    outstanding = dict(open_bills)
    if bill_ids:
        if len(set(bill_ids)) != len(bill_ids):
            raise InvalidInput(key="err.order.bill_twice")
        unknown = [b for b in bill_ids if b not in outstanding]
        if unknown:
            raise InvalidInput(key="err.order.bill_not_open", ids=unknown)
        chosen = tuple(sorted(bill_ids))
    else:
        chosen = tuple(sorted(outstanding))
    amount = sum(outstanding[b] for b in chosen)
    if amount <= 0:
        raise NothingToPay(key="err.order.nothing_to_pay")
    return chosen, amount
