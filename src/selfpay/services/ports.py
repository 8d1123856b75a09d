"""Ports: the interfaces the core owns. Adapters implement them; only bootstrap builds them.

Repositories are reached through a UnitOfWork: `with uow: ...; uow.commit()`. Leaving
the block without commit() rolls back, so a failed use case writes nothing. Entering a
unit of work that is already open joins it: the inner block rolls back only when an
exception leaves it, and the outer block's commit() decides; so a use case may say
`with uow:` whether or not its caller opened the block.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

from selfpay.domain.accounts import (
    Account,
    AccountSummary,
    Bill,
    Biller,
    PaymentPosting,
    PostingResult,
)
from selfpay.domain.devices import Alarm, Device, MaintenanceTask
from selfpay.domain.errors import DomainError
from selfpay.domain.messages import LOG_LANG, translate
from selfpay.domain.orders import Order, OrderStatus
from selfpay.domain.work_orders import WorkOrderKind, WorkOrderStatus


class BillingSystemError(Exception):
    """The billing system could not answer (unreachable, timed out, refused)."""


class BillingSystem(Protocol):
    """The provider's billing system: the built-in ledger, an HTTP/JSON system, or a
    client that reaches it over the DMZ/intranet bridge."""

    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:
        """Masked holder, prepaid balance and open bills. Raises AccountNotFound.

        An adapter may answer a page from a recent copy while the billing system is
        unreachable (the bridge's cache); `fresh=True` never does: it is what an order is
        priced from, and a copy could charge bills settled meanwhile."""
        ...

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        """Apply a payment. Idempotent by payment_id: a repeat returns the first result
        with duplicate=True and changes nothing."""
        ...


@dataclass(frozen=True, slots=True)
class WorkOrderRequest:
    """A work order as the billing system receives it; `ticket_no` is its idempotency
    key (a repeat returns the first answer with duplicate=True)."""

    ticket_no: str
    biller: str
    account: str
    kind: str  # meter_fault | outage | contact_change
    description: str
    contact_phone: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class WorkOrderResult:
    """The billing side's answer: its own reference and its word for the status (see
    domain.work_orders.status_from_billing), with an optional note for the customer."""

    ticket_no: str
    ref: str
    status: str
    note: str = ""
    duplicate: bool = False


@runtime_checkable
class WorkOrderDesk(Protocol):
    """An OPTIONAL capability of a BillingSystem: it takes work orders. The built-in
    ledger, the HTTP/JSON adapter and the bridge client have it; a plug-in may not
    (then work orders wait in the DMZ outbox and are shown to staff)."""

    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        """Idempotent by ticket_no. Raises InvalidInput / NotFound when refused for good,
        BillingSystemError when it may be retried."""
        ...

    def work_order_status(self, ref: str) -> WorkOrderResult:
        """The current status of the work order the billing side calls `ref`."""
        ...


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...
    def verify(self, password_hash: str, password: str) -> bool: ...
    def needs_rehash(self, password_hash: str) -> bool: ...


T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int


@dataclass(slots=True)
class User:
    id: int | None
    username: str
    password_hash: str
    role: str  # admin | operator | auditor
    active: bool = True
    created_at: dt.datetime | None = None


@dataclass(slots=True)
class AuditEntry:
    id: int | None
    at: dt.datetime
    actor: str
    action: str  # e.g. qr.make, qr.batch, qr.batch.download, import.accounts, user.login
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    ip: str = ""


@dataclass(slots=True)
class RowError:
    """What is wrong with one row of a sheet (an import, a QR batch), or with the sheet
    (row 0). It is stored and read later, maybe by someone reading another language, so
    it keeps its message key and values: localized() says it in the reader's language.
    `message` is the English (logs, the record), and all an error stored before errors
    had keys holds. The row number is not part of the message: pages show it in a column
    of its own, the command line before the message."""

    row: int  # 1-based row number as the user sees it in the sheet; 0: the whole sheet
    message: str
    key: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def keyed(cls, row: int, key: str, /, **params: Any) -> Self:
        values = {k: _storable(v) for k, v in params.items()}
        return cls(row, translate(LOG_LANG, key, **values), key, values)

    @classmethod
    def of(cls, row: int, error: DomainError) -> Self:
        """The row's error as `error` says it (a plain-sentence error stays one)."""
        key = error.key or error.default_key
        if not key:
            return cls(row, str(error))
        return cls.keyed(row, key, **error.params)

    def localized(self, lang: str) -> str:
        return translate(lang, self.key, **self.params) if self.key else self.message


def _storable(value: object) -> object:
    """A value as JSON keeps it: numbers, text and lists of them; anything else as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_storable(v) for v in items]
    return str(value)


@dataclass(slots=True)
class ImportRun:
    id: int | None
    kind: str  # accounts | bills
    filename: str
    actor: str
    at: dt.datetime
    status: str  # imported | rejected | partial
    total_rows: int
    imported: int
    skipped: int
    errors: list[RowError] = field(default_factory=list)


@dataclass(slots=True)
class QrBatch:
    id: int | None
    actor: str
    created_at: dt.datetime
    source_filename: str
    count: int
    sha256: str
    size_bytes: int
    stored_path: str  # relative to the data dir
    billers: str = ""  # comma-separated biller codes in the batch
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LedgerPayment:
    payment_id: str
    biller: str
    account: str
    amount_fen: int
    surplus_fen: int
    balance_after_fen: int
    applied: tuple[tuple[int, int], ...]
    channel: str
    channel_txn_id: str
    paid_at: dt.datetime | None
    posted_at: dt.datetime


class BillerRepository(Protocol):
    def get(self, code: str) -> Biller | None: ...
    def list(self, *, include_disabled: bool = True) -> list[Biller]:
        """In display order, then by code."""
        ...
    def add(self, biller: Biller) -> None:
        """Raises DuplicateKey when the code exists."""
        ...
    def save(self, biller: Biller) -> None: ...


class AccountRepository(Protocol):
    def get(self, biller: str, number: str, *, for_update: bool = False) -> Account | None: ...
    def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...
    def upsert_many(self, accounts: Sequence[Account]) -> tuple[int, int]:
        """Insert new accounts, update name/phone/address of known ones; (inserted, updated)."""
        ...
    def set_balance(self, biller: str, number: str, balance_fen: int) -> None: ...
    def search(
        self, *, query: str = "", biller: str = "", limit: int = 50, offset: int = 0
    ) -> Page[Account]: ...
    def count(self) -> int: ...
    def by_phone(self, phone: str, *, limit: int = 50) -> list[Account]:
        """Accounts whose phone is exactly `phone` (the SMS look-up)."""
        ...


class BillRepository(Protocol):
    def open_for(self, biller: str, account: str, *, for_update: bool = False) -> list[Bill]:
        """Open bills of an account, oldest period first."""
        ...
    def existing_periods(self, keys: Sequence[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """Which (biller, account, period) already have a bill."""
        ...
    def add_many(self, bills: Sequence[Bill]) -> int: ...
    def update_paid(self, bill_id: int, paid_fen: int, status: str) -> None: ...
    def search(
        self, *, query: str = "", biller: str = "", status: str = "", limit: int = 50,
        offset: int = 0,
    ) -> Page[Bill]: ...


class LedgerPaymentRepository(Protocol):
    def get(self, payment_id: str) -> LedgerPayment | None: ...
    def add(self, payment: LedgerPayment) -> None:
        """Unique by payment_id: a concurrent duplicate raises DuplicatePayment."""
        ...


class UserRepository(Protocol):
    def get(self, username: str) -> User | None: ...
    def add(self, user: User) -> int: ...
    def update(self, user: User) -> None: ...
    def list(self) -> list[User]: ...


class StaffSessionRepository(Protocol):
    """Staff sign-ins on the server: the session cookie names one by its random id."""

    def add(self, sid: str, username: str, *, now: dt.datetime,
            expires_at: dt.datetime) -> None: ...
    def live_user(self, sid: str, now: dt.datetime) -> str | None:
        """The user of a session that is neither expired nor ended, else None."""
        ...
    def end(self, sid: str, now: dt.datetime) -> None: ...
    def end_all(self, username: str, now: dt.datetime) -> int: ...


class AuditLog(Protocol):
    def record(self, entry: AuditEntry) -> None: ...
    def list(self, *, actor: str = "", action: str = "", limit: int = 100,
             offset: int = 0) -> Page[AuditEntry]: ...


class ImportRunRepository(Protocol):
    def add(self, run: ImportRun) -> int: ...
    def get(self, run_id: int) -> ImportRun | None: ...
    def list(self, *, limit: int = 50, offset: int = 0) -> Page[ImportRun]: ...


class QrBatchRepository(Protocol):
    def add(self, batch: QrBatch) -> int: ...
    def get(self, batch_id: int) -> QrBatch | None: ...
    def list(self, *, limit: int = 50, offset: int = 0) -> Page[QrBatch]: ...


@dataclass(frozen=True)
class RateLimitOverride:
    """Requests per minute per client that staff set for a route group (0: unlimited)."""

    group: str
    per_minute: int
    updated_by: str
    updated_at: dt.datetime


class RateLimitRepository(Protocol):
    def all(self) -> dict[str, RateLimitOverride]: ...
    def put(self, override: RateLimitOverride) -> None: ...


@dataclass(slots=True)
class Job:
    """A background job (a QR batch, ...) as every process sees it: its progress while
    it runs, its outcome after. The process running it refreshes heartbeat_at; `result`
    holds what the job's page shows (JSON-able)."""

    id: str  # random token
    kind: str  # qr_batch
    owner: str  # username
    filename: str
    created_at: dt.datetime
    updated_at: dt.datetime
    heartbeat_at: dt.datetime
    state: str = "running"  # running | done | failed
    done: int = 0
    total: int = 0
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)


class JobRepository(Protocol):
    def add(self, job: Job) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def update(self, job_id: str, *, now: dt.datetime, done: int | None = None,
               total: int | None = None, state: str | None = None,
               message: str | None = None, result: Mapping[str, Any] | None = None) -> bool:
        """Change a RUNNING job (the given fields, updated_at and heartbeat_at := now);
        False when it is not running (or not there): a finished job stays as it ended."""
        ...
    def delete_older_than(self, before: dt.datetime) -> int:
        """Forget jobs last updated before `before`; how many."""
        ...


class DuplicatePayment(Exception):
    """Raised by LedgerPaymentRepository.add when the payment id is already stored."""


@dataclass(frozen=True, slots=True)
class DeviceCredentials:
    """A kiosk's secret (sealed; '' before enrolment) and its pending enrolment code
    (an HMAC of it, and when it stops working)."""

    secret_sealed: str = ""
    enrol_code_hash: str = ""
    enrol_expires_at: dt.datetime | None = None


class DeviceRepository(Protocol):
    def add(self, device: Device) -> None:
        """Raises DuplicateKey when the device id exists."""
        ...
    def get(self, device_id: str, *, for_update: bool = False) -> Device | None: ...
    def save(self, device: Device) -> None: ...
    def all(self) -> list[Device]: ...
    def credentials(self, device_id: str) -> DeviceCredentials | None: ...
    def set_credentials(self, device_id: str, creds: DeviceCredentials) -> None: ...
    def silent_since(self, before: dt.datetime) -> list[Device]: ...


class AlarmRepository(Protocol):
    def add(self, alarm: Alarm) -> int: ...
    def get(self, alarm_id: int, *, for_update: bool = False) -> Alarm | None: ...
    def save(self, alarm: Alarm) -> None: ...
    def open(self, device_id: str = "", *, limit: int = 200) -> list[Alarm]: ...
    def recent(self, device_id: str, *, limit: int = 20) -> list[Alarm]: ...


class MaintenanceRepository(Protocol):
    def add(self, task: MaintenanceTask) -> int: ...
    def get(self, task_id: int, *, for_update: bool = False) -> MaintenanceTask | None: ...
    def save(self, task: MaintenanceTask) -> None: ...
    def for_device(self, device_id: str) -> list[MaintenanceTask]: ...
    def all(self) -> list[MaintenanceTask]: ...


class UnitOfWork(Protocol):
    billers: BillerRepository
    accounts: AccountRepository
    bills: BillRepository
    payments: LedgerPaymentRepository
    users: UserRepository
    staff_sessions: StaffSessionRepository
    audit: AuditLog
    imports: ImportRunRepository
    batches: QrBatchRepository
    jobs: JobRepository
    orders: OrderRepository
    postings: PostingOutbox
    notifications: NotificationLog
    messages: MessageOutbox
    sms_codes: SmsCodeRepository
    payers: PayerAccounts
    work_orders: WorkOrderRepository
    ledger_work_orders: LedgerWorkOrderRepository
    rate_limits: RateLimitRepository
    devices: DeviceRepository
    alarms: AlarmRepository
    maintenance: MaintenanceRepository

    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


# --- payments ---------------------------------------------------------------------------

class ChannelError(Exception):
    """The payment channel could not be reached or refused the request."""


class NotificationRejected(ChannelError):
    """A notification that failed verification (signature, serial, timestamp, merchant,
    decryption, or the channel's deliberate bad-signature probe). Nothing may change."""


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    order_no: str  # our idempotency key at the channel (out_trade_no)
    amount_fen: int
    description: str
    notify_url: str
    expires_at: dt.datetime
    mode: str  # native | jsapi | h5 | cashier
    payer_openid: str = ""
    client_ip: str = ""
    return_url: str = ""
    attempt: int = 0  # our attempt number; a channel that can echo it back does so


@dataclass(frozen=True, slots=True)
class ChannelNotification:
    """A verified notification. `outcome` is paid | failed | closed."""

    notification_id: str  # the channel's id of this notification (dedupe key)
    order_no: str
    outcome: str
    amount_fen: int
    channel_txn_id: str
    paid_at: dt.datetime | None
    merchant_id: str
    raw: dict[str, Any] = field(default_factory=dict)  # decrypted resource, for history
    # the attempt this report belongs to, when the channel echoes it (None: it cannot
    # tell, so the report is taken as the current attempt's)
    attempt: int | None = None


@dataclass(frozen=True, slots=True)
class ChannelQuery:
    """`state` is paid | pending | closed | failed | unknown (no such trade yet)."""

    state: str
    amount_fen: int = 0
    channel_txn_id: str = ""
    paid_at: dt.datetime | None = None
    attempt: int | None = None  # as in ChannelNotification


@dataclass(frozen=True, slots=True)
class NotifyAnswer:
    """What the channel expects back from its notification call."""

    status_code: int
    body: bytes = b""
    content_type: str = "application/json"


class PaymentChannel(Protocol):
    """A payment channel (sandbox, WeChat Pay v3, Alipay, plug-ins by entry point
    `selfpay.channels`). The order number is the idempotency key at the channel: after a
    timeout, query the same number; never mint a new one."""

    name: str
    merchant_id: str

    def create_payment(self, request: PaymentRequest) -> dict[str, Any]:
        """Prepay. Returns what the client needs: {"kind": "code_url", "code_url": ...} |
        {"kind": "jsapi", "params": {...}} | {"kind": "redirect", "url": ...}.
        Raises ChannelError."""
        ...

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification:
        """Verify (over the raw body bytes) and parse. Raises NotificationRejected."""
        ...

    def answer(self, ok: bool, message: str = "") -> NotifyAnswer: ...

    def query(self, order_no: str) -> ChannelQuery: ...

    def close(self, order_no: str) -> None:
        """Close an unpaid order at the channel. Raises ChannelError if it cannot
        (for example because it was paid meanwhile: query it then)."""
        ...


class CodePayChannel(PaymentChannel, Protocol):
    """A channel that can also take the customer's payment code (付款码, a barcode on the
    customer's phone read by the terminal's scanner: WeChat micropay, Alipay
    face-to-face). A channel says it can by having this method; the kiosk offers the
    scanner only then."""

    def collect_with_code(self, request: PaymentRequest, auth_code: str) -> ChannelQuery:
        """Charge the payment code for `request`. Returns the channel's word at once:
        paid, pending (the customer must confirm on the phone: query it) or failed.
        Raises ChannelError when the channel did not answer (query before trying again:
        the order number is the idempotency key)."""
        ...


def takes_payment_code(channel: PaymentChannel) -> bool:
    return callable(getattr(channel, "collect_with_code", None))


@dataclass(slots=True)
class Message:
    """An SMS, e-mail or receipt to deliver through the Notifier."""

    id: int | None
    kind: str  # sms_code | receipt | alert
    to: str
    subject: str
    body: str
    created_at: dt.datetime
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)  # name, type, data
    status: str = "queued"  # queued | sent | failed
    sent_at: dt.datetime | None = None
    error: str = ""
    attempts: int = 0  # failed deliveries so far
    next_attempt_at: dt.datetime | None = None  # None: as soon as possible
    claim: int = 0  # fencing token of the worker that holds it (see PostingOutbox)
    # The text to deliver when `body` (what staff see) is masked, as a SecretBox token:
    # an SMS code travels only here. Opened by the notifier when it sends; the outbox
    # keeps it only while the message is queued.
    sealed: str = ""


class Notifier(Protocol):
    """Delivers a message (outbox shown in the admin console by default; SMTP; plug-ins).
    Raises NotifierError when delivery failed and may be retried."""

    def send(self, message: Message) -> None: ...


class NotifierError(Exception):
    """Delivery failed and may be retried (the worker keeps the message queued).

    NotifierError
     └── MessageUndeliverable   will never go through as it stands (the gateway says
                                the number is invalid; the sealed text cannot be opened)
    """


class MessageUndeliverable(NotifierError):
    """Retrying cannot help. The notifier marks the message failed before raising, so the
    worker, which keeps the message's status, does not queue it again."""


class SecretBox(Protocol):
    """Authenticated encryption of a short text bound to its recipient: what an outbox row
    carries instead of a secret in clear (an SMS code)."""

    def seal(self, text: str, *, to: str) -> str: ...
    def open(self, token: str, *, to: str) -> str:
        """The text; raises SealBroken for a token not sealed by this box for `to`."""
        ...


class SealBroken(Exception):
    """A sealed token was altered, sealed for another recipient, or under another key."""


class SmsGateway(Protocol):
    """Sends one SMS. `ref` is the same on every try of one message, so that a gateway
    can drop a repeat (a worker that died after the gateway took it). Raises NotifierError
    to be retried, MessageUndeliverable when the gateway refuses the number for good."""

    def send(self, phone: str, text: str, *, ref: str) -> None: ...


@dataclass(slots=True)
class Posting:
    """An outbox row: post order `order_no` to the billing system until acknowledged."""

    order_no: str
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    attempts: int = 0
    # pending | done | stuck (flagged to staff, still retried) | dead (no longer
    # retried: the dead-letter queue, until staff replay it)
    status: str = "pending"
    last_error: str = ""
    done_at: dt.datetime | None = None
    dead_at: dt.datetime | None = None
    claim: int = 0  # fencing token: bumped by every claim


@dataclass(slots=True)
class OrderHistoryEntry:
    order_no: str
    at: dt.datetime
    kind: str
    from_status: str
    to_status: str
    detail: dict[str, Any]


@dataclass(slots=True)
class ReceivedNotification:
    """Every notification call, verified or not, for the history and the audit."""

    id: int | None
    channel: str
    received_at: dt.datetime
    verified: bool
    notification_id: str
    order_no: str
    outcome: str
    error: str
    body_sha256: str


@dataclass(slots=True)
class SmsCode:
    phone: str
    code_hash: str
    expires_at: dt.datetime
    sent_at: dt.datetime
    tries: int = 0
    used: bool = False


@dataclass(frozen=True, slots=True)
class RecentPayment:
    """One line of an account's payment history as the code page shows it."""

    order_no: str
    amount_fen: int
    channel: str
    paid_at: dt.datetime


@dataclass(frozen=True, slots=True)
class BusyOrder:
    """An order that holds bills of an account: open (being paid) or paid."""

    order_no: str
    status: OrderStatus
    bill_ids: tuple[int, ...]


class OrderRepository(Protocol):
    def add(self, order: Order) -> None:
        """Raises DuplicateKey when the idempotency key (or order number) exists."""
        ...
    def get(self, order_no: str, *, for_update: bool = False) -> Order | None: ...
    def by_idempotency_key(self, key: str) -> Order | None: ...
    def save(self, order: Order, *, now: dt.datetime) -> None:
        """Write the order's fields and append its pending events to the history;
        raises StaleOrder when someone else updated it since it was read."""
        ...
    def history(self, order_no: str) -> list[OrderHistoryEntry]: ...
    def unsettled_older_than(self, before: dt.datetime, *, limit: int = 100) -> list[str]:
        """Order numbers of unsettled orders (open, or closed/failed here and not yet
        confirmed by the channel) last touched before `before`, oldest first."""
        ...
    def busy_bills(self, biller: str, account: str) -> list[BusyOrder]:
        """The account's open and paid (not yet posted) orders (one indexed query)."""
        ...
    def paid_since(self, biller: str, account: str, since: dt.datetime) -> list[BusyOrder]:
        """The account's paid or posted orders paid at or after `since`."""
        ...
    def flagged_since(self, since: dt.datetime, *, limit: int = 10) -> Page[Order]:
        """Orders flagged for staff since `since`, newest first, and how many."""
        ...
    def search(self, *, query: str = "", status: str = "", biller: str = "",
               channel: str = "", limit: int = 50, offset: int = 0) -> Page[Order]: ...
    def paid_bill_ids(self, biller: str, account: str) -> set[int]:
        """Bills covered by orders that are paid but not yet posted (not open to pay)."""
        ...
    def recent_paid(self, biller: str, account: str, *, limit: int = 5) -> list[RecentPayment]:
        """The account's latest paid or posted orders, newest first (one indexed query)."""
        ...


class PostingOutbox(Protocol):
    """Outbox rows are claimed one at a time for a lease, under a fencing token:

    - `claim_due` takes the oldest due row that no other worker is claiming (FOR UPDATE
      SKIP LOCKED on PostgreSQL), bumps its attempts and its `claim`, and makes it due
      again only at `lease_until`; the caller commits.
    - `save` writes a row only while it still carries the claim the caller holds. A
      worker whose lease ran out (another worker claimed the row since) gets False and
      must roll back: it cannot overwrite the live claim's outcome.
    """

    def add(self, posting: Posting) -> None: ...
    def claim_due(self, now: dt.datetime, *, lease_until: dt.datetime) -> Posting | None: ...
    def save(self, posting: Posting, *, new_claim: bool = False) -> bool:
        """Write `posting` if its row still has `posting.claim`; `new_claim` also bumps
        the token (a staff replay fences out whatever worker held it before)."""
        ...
    def get(self, order_no: str) -> Posting | None: ...
    def list(self, *, status: str = "", limit: int = 50, offset: int = 0) -> Page[Posting]: ...


class NotificationLog(Protocol):
    def add(self, entry: ReceivedNotification) -> int: ...
    def seen(self, channel: str, notification_id: str) -> bool: ...
    def for_order(self, order_no: str) -> list[ReceivedNotification]: ...


class MessageOutbox(Protocol):
    """Claimed like PostingOutbox: one at a time, for a lease, under a fencing token."""

    def add(self, message: Message, *, wake: bool = True) -> int:
        """Queue a message; `wake` tells waiting workers at commit (not needed when the
        caller is a worker that delivers messages in the same round)."""
        ...
    def queued(self, *, limit: int = 20, now: dt.datetime | None = None) -> list[Message]:
        """Queued messages, oldest first; with `now`, only those due by then."""
        ...
    def claim_due(self, now: dt.datetime, *, lease_until: dt.datetime) -> Message | None: ...
    def save(self, message: Message) -> bool:
        """Write `message` if its row still has `message.claim`."""
        ...
    def list(self, *, kind: str = "", limit: int = 50, offset: int = 0) -> Page[Message]: ...


class SmsCodeRepository(Protocol):
    def get(self, phone: str, *, for_update: bool = False) -> SmsCode | None: ...
    def put(self, code: SmsCode) -> None: ...


class PayerAccounts(Protocol):
    """Accounts a payer (openid or signed browser id) has paid: "my accounts"."""

    def remember(self, payer: str, biller: str, account: str, now: dt.datetime) -> None: ...
    def list(self, payer: str) -> list[tuple[str, str]]: ...


class DuplicateKey(Exception):
    """An insert hit a unique key (idempotency key, order number, notification id)."""


class StaleOrder(Exception):
    """The order changed since it was read (optimistic version check)."""


# --- work orders ------------------------------------------------------------------------

@dataclass(slots=True)
class WorkOrder:
    """A work order in the DMZ database: the customer's ticket and its outbox row.
    `next_attempt_at` is when the worker next talks to the billing side about it (to
    submit it while queued, to ask for news while it is open there)."""

    id: int | None
    ticket_no: str
    biller: str
    account: str
    kind: WorkOrderKind
    description: str
    contact_phone: str
    status: WorkOrderStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    next_attempt_at: dt.datetime | None
    billing_ref: str = ""
    attempts: int = 0
    last_error: str = ""
    note: str = ""  # the billing side's word to the customer


@dataclass(slots=True)
class LedgerWorkOrder:
    """A work order as the built-in ledger (the billing side) keeps it."""

    id: int | None
    ticket_no: str
    biller: str
    account: str
    kind: str
    description: str
    contact_phone: str
    status: str  # accepted | in_progress | done | rejected
    created_at: dt.datetime
    updated_at: dt.datetime
    note: str = ""


class WorkOrderRepository(Protocol):
    def add(self, order: WorkOrder) -> int:
        """Raises DuplicateKey when the ticket number exists."""
        ...
    def get(self, ticket_no: str, *, for_update: bool = False) -> WorkOrder | None: ...
    def save(self, order: WorkOrder) -> None: ...
    def due(self, now: dt.datetime, statuses: Sequence[str], *,
            limit: int = 20) -> list[WorkOrder]:
        """Rows in `statuses` due by `now`, oldest due first, locked for this worker
        (FOR UPDATE SKIP LOCKED on PostgreSQL)."""
        ...
    def by_tickets(self, ticket_nos: Sequence[str]) -> list[WorkOrder]: ...
    def count_since(self, biller: str, account: str, since: dt.datetime) -> int: ...
    def list(self, *, status: str = "", limit: int = 50,
             offset: int = 0) -> Page[WorkOrder]: ...


class LedgerWorkOrderRepository(Protocol):
    def add(self, order: LedgerWorkOrder) -> int:
        """Unique by ticket_no: a concurrent duplicate raises DuplicateKey."""
        ...
    def by_ticket(self, ticket_no: str) -> LedgerWorkOrder | None: ...
    def get(self, order_id: int, *, for_update: bool = False) -> LedgerWorkOrder | None: ...
    def save(self, order: LedgerWorkOrder) -> None: ...
    def list(self, *, limit: int = 50, offset: int = 0) -> Page[LedgerWorkOrder]: ...


# --- cache --------------------------------------------------------------------------------


class CacheUnavailable(Exception):
    """The cache could not be reached. Callers fall back to the source of truth: a cache
    must never break a page."""


class Cache(Protocol):
    """Short-lived shared values by key: JSON-able values only (dicts, lists, str, int,
    bool, None; money as integer fen, times as ISO strings). In-process for one process
    (the demo), Redis for several. Raises CacheUnavailable when it cannot answer."""

    def get(self, key: str) -> Any | None:
        """The value, or None when absent or expired."""
        ...
    def set(self, key: str, value: Any, *, ttl_s: int) -> None: ...
    def delete(self, key: str) -> None: ...


# --- speech (the kiosk's spoken prompts) ---------------------------------------------------


class SpeechUnavailable(Exception):
    """The synthesiser is not installed, or it failed or hung: the kiosk stays silent (a
    spoken prompt helps; it is never needed to pay)."""


class SpeechSynthesiser(Protocol):
    """Text to speech, offline: espeak-ng on this machine (adapters/voice.py)."""

    def synthesise(self, text: str, *, voice: str, speed: int) -> bytes:
        """A WAV file (RIFF, PCM) of `text` spoken by `voice` (e.g. cmn, yue, en-us) at
        `speed` words per minute. Raises SpeechUnavailable."""
        ...
