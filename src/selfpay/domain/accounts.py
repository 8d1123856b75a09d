"""Accounts, bills and payments of a biller, as the built-in ledger keeps them.

Account numbers are strings: they keep leading zeros and never pass through a number.
They are restricted to 0-9, A-Z and '-' so that they fit the QR alphanumeric mode and a
URL path unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from selfpay.domain.errors import InvalidAccountNumber, InvalidBillerCode

ACCOUNT_RE = re.compile(r"^[0-9A-Z-]{1,32}$")
BILLER_RE = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")


def normalize_account(raw: object) -> str:
    """Turn a cell or a typed value into an account number string.

    - numeric cells (int, or a float with no fraction, as spreadsheets store them)
      become their digits, without '.0' or an exponent;
    - surrounding spaces (also full-width ones) go, full-width digits and letters
      become ASCII (NFKC), letters are upper-cased;
    - anything else outside 0-9 A-Z '-' is refused.
    Leading zeros survive only when the cell is text: a numeric cell has none to keep.
    """
    if raw is None or isinstance(raw, bool):
        raise InvalidAccountNumber(key="err.account.empty")
    if isinstance(raw, int):
        if raw < 0:
            raise InvalidAccountNumber(key="err.account.negative", value=raw)
        text = str(raw)
    elif isinstance(raw, float):
        if raw != raw or raw in (float("inf"), float("-inf")) or raw < 0 or raw != int(raw):
            raise InvalidAccountNumber(key="err.account.not_whole", value=repr(raw))
        text = format(Decimal(repr(raw)), "f").split(".")[0]
    elif isinstance(raw, Decimal):
        if raw != raw.to_integral_value() or raw < 0:
            raise InvalidAccountNumber(key="err.account.not_whole", value=str(raw))
        text = format(raw.quantize(Decimal(1)), "f")
    elif isinstance(raw, str):
        text = unicodedata.normalize("NFKC", raw).strip().upper()
    else:
        raise InvalidAccountNumber(key="err.account.type", value=type(raw).__name__)
    if not text:
        raise InvalidAccountNumber(key="err.account.empty")
    if not ACCOUNT_RE.match(text):
        raise InvalidAccountNumber(key="err.account.chars", value=_shown(text))
    return text


def _shown(text: str, limit: int = 40) -> str:
    """A refused value as a message quotes it: clipped, so that a pasted page does not
    flood the error."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalize_biller(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidBillerCode(key="err.biller.not_text", value=type(raw).__name__)
    text = unicodedata.normalize("NFKC", raw).strip().upper()
    if not text:
        raise InvalidBillerCode(key="err.biller.empty")
    if not BILLER_RE.match(text):
        raise InvalidBillerCode(key="err.biller.code", value=_shown(raw.strip()))
    return text


def mask_name(name: str) -> str:
    """张三丰 -> 张*丰, 张三 -> 张*, Alice Smith -> A*********h. Shown to the public."""
    name = name.strip()
    if len(name) <= 1:
        return "*" if name else ""
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    """13812345678 -> 138****5678."""
    digits = phone.strip()
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


class BillStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    CANCELLED = "cancelled"


BILLER_KINDS = ("electricity", "water", "gas", "property", "parking", "other")
DEFAULT_ROUTE = "default"  # the billing route of SELFPAY_BILLING (and SELFPAY_TRANSPORT)


@dataclass(frozen=True, slots=True)
class Biller:
    """A service that customers pay (电费, 水费, ...): what the registry keeps of it.

    `route` names the billing route that reaches its billing system (DEFAULT_ROUTE: the
    one configured by SELFPAY_BILLING / SELFPAY_TRANSPORT; others in
    SELFPAY_BILLING_ROUTES). `steps` is the kiosk's step list for this biller (empty:
    the kind's default). A disabled biller keeps its accounts and history but is offered
    to no one."""

    code: str
    name: str
    name_en: str = ""
    kind: str = "other"  # one of BILLER_KINDS
    icon: str = ""  # icon name for kiosk and pages; "" uses the kind's
    display_order: int = 100  # lower first
    elderly: bool = False  # offered in the kiosk's elderly mode
    steps: tuple[str, ...] = ()
    route: str = DEFAULT_ROUTE
    enabled: bool = True


@dataclass(slots=True)
class Account:
    biller: str
    number: str
    name: str
    phone: str = ""
    address: str = ""
    balance_fen: int = 0  # prepaid surplus; never negative in the ledger


@dataclass(slots=True)
class Bill:
    id: int | None
    biller: str
    account: str
    period: str
    amount_fen: int
    due_date: dt.date | None
    status: BillStatus = BillStatus.OPEN
    paid_fen: int = 0

    @property
    def outstanding_fen(self) -> int:
        return self.amount_fen - self.paid_fen

    def is_overdue(self, today: dt.date) -> bool:
        """Still owed after its due date. `today` is the date where the site is
        (Settings.timezone), not the server's: a bill due on the 30th is overdue from
        the 1st, Beijing time, whatever zone the machine runs in."""
        return (self.status is BillStatus.OPEN and self.outstanding_fen > 0
                and self.due_date is not None and self.due_date < today)


@dataclass(frozen=True, slots=True)
class PaymentPosting:
    """A payment to post against an account; `payment_id` makes posting idempotent."""

    payment_id: str
    biller: str
    account: str
    amount_fen: int
    bill_ids: tuple[int, ...] = ()
    channel: str = ""
    channel_txn_id: str = ""
    paid_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class PostingResult:
    payment_id: str
    applied: tuple[tuple[int, int], ...]  # (bill id, fen applied)
    surplus_fen: int  # what stayed on the account as prepaid balance
    balance_fen: int  # account balance after posting
    duplicate: bool = False  # True when this payment id had been posted before


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """What the public sees of an account: masked, with its open bills."""

    biller: str
    account: str
    masked_name: str
    balance_fen: int
    open_bills: tuple[Bill, ...] = field(default_factory=tuple)

    @property
    def total_due_fen(self) -> int:
        """What paying every open bill costs. A prepaid balance is shown beside it but
        not deducted: the billing system applies it when it bills, and an order's amount
        must equal the bills it settles."""
        return sum(b.outstanding_fen for b in self.open_bills)
