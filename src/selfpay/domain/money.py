"""Money is an integer number of fen. Amounts are parsed exactly and only formatted for display."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from selfpay.domain.errors import CurrencyMismatch, InvalidAmount

_YUAN = re.compile(r"^(?P<int>\d{1,12})(?:\.(?P<frac>\d{0,2}))?$")
_FULLWIDTH = str.maketrans("０１２３４５６７８９．，", "0123456789.,")


@dataclass(frozen=True, slots=True, order=True)
class Money:
    fen: int
    currency: str = "CNY"

    def __post_init__(self) -> None:
        if type(self.fen) is not int:  # bool and float are refused on purpose
            raise TypeError(f"Money.fen must be int, not {type(self.fen).__name__}")

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} + {other.currency}")
        return Money(self.fen + other.fen, self.currency)

    def __sub__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} - {other.currency}")
        return Money(self.fen - other.fen, self.currency)

    def __str__(self) -> str:
        return format_fen(self.fen)


def format_fen(fen: int) -> str:
    """12345 -> '¥123.45'; -5 -> '-¥0.05'."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def parse_yuan(value: object) -> int:
    """Parse an amount in yuan (up to two decimals) into fen, exactly.

    Accepts str ('12.34', '¥1,234.5', full-width digits), int, and Decimal. A float
    (what spreadsheet readers hand back for numeric cells) is taken through its
    shortest repr, '12.34', never through float arithmetic, and refused if that repr
    has more than two decimals.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidAmount(key="err.amount.invalid", value=repr(value))
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidAmount(key="err.amount.invalid", value=repr(value))
        text = repr(value)
        if "e" in text or "E" in text:
            try:
                text = format(Decimal(text), "f")
            except InvalidOperation as exc:  # pragma: no cover - repr of a finite float
                raise InvalidAmount(key="err.amount.invalid", value=repr(value)) from exc
        if text.endswith(".0"):
            text = text[:-2]
    elif isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidAmount(key="err.amount.invalid", value=repr(value))
    text = text.translate(_FULLWIDTH).strip().removeprefix("¥").removeprefix("￥").strip()
    text = text.replace(",", "")
    m = _YUAN.match(text)
    if m is None:
        raise InvalidAmount(key="err.amount.format", value=str(value))
    frac = (m.group("frac") or "").ljust(2, "0")
    return int(m.group("int")) * 100 + int(frac)
