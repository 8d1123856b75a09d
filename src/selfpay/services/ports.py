"""Ports: the interfaces the core owns. Adapters implement them; only bootstrap builds them.

Repositories are reached through a UnitOfWork: `with uow: ...; uow.commit()`. Leaving
the block without commit() rolls back, so a failed use case writes nothing. Entering a
unit of work that is already open joins it: the inner block rolls back only when an
exception leaves it, and the outer block's commit() decides; so a use case may say
`with uow:` whether or not its caller opened the block.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from selfpay.domain.accounts import (
    Account,
    AccountSummary,
    Bill,
    Biller,
    PaymentPosting,
    PostingResult,
)


class BillingSystemError(Exception):
    """The billing system could not answer (unreachable, timed out, refused)."""


class BillingSystem(Protocol):
    """The provider's billing system: the built-in ledger, an HTTP/JSON system, or a
    client that reaches it over the DMZ/intranet bridge."""

    def account_summary(self, biller: str, account: str) -> AccountSummary:
        """Masked holder, prepaid balance and open bills. Raises AccountNotFound."""
        ...

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        """Apply a payment. Idempotent by payment_id: a repeat returns the first result
        with duplicate=True and changes nothing."""
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
    row: int  # 1-based row number as the user sees it in the sheet
    message: str


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
    def list(self) -> list[Biller]: ...
    def add(self, biller: Biller) -> None: ...


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


class DuplicatePayment(Exception):
    """Raised by LedgerPaymentRepository.add when the payment id is already stored."""


class UnitOfWork(Protocol):
    billers: BillerRepository
    accounts: AccountRepository
    bills: BillRepository
    payments: LedgerPaymentRepository
    users: UserRepository
    audit: AuditLog
    imports: ImportRunRepository
    batches: QrBatchRepository

    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
