from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfpay.domain.errors import CurrencyMismatch, InvalidAmount
from selfpay.domain.money import Money, format_fen, parse_yuan


@pytest.mark.parametrize(
    ("value", "fen"),
    [
        ("0.1", 10), ("12.30", 1230), ("12.3", 1230), ("12", 1200), (" 5 ", 500),
        ("¥1,234.5", 123450), ("￥0.01", 1), ("１２.３", 1230), ("0", 0),
        (1234.5, 123450), (0.1, 10), (0.3, 30), (19.99, 1999), (100.0, 10000),
        (12, 1200), (Decimal("7.05"), 705),
    ],
)
def test_amounts_parse_exactly(value, fen):
    assert parse_yuan(value) == fen


@pytest.mark.parametrize(
    "value",
    ["12.345", "1.999", "-1", "", "abc", "1e3", "12.3.4", None, True, float("nan"),
     float("inf"), 0.1 + 0.2, 1.1 * 3, 1e-05, [1]],
)
def test_amounts_that_are_not_exact_yuan_are_refused(value):
    # 0.1 + 0.2 is 0.30000000000000004: refused, never rounded behind the user's back
    with pytest.raises(InvalidAmount):
        parse_yuan(value)


@given(st.integers(min_value=0, max_value=10**12))
def test_parse_inverts_plain_formatting(fen):
    yuan, cents = divmod(fen, 100)
    assert parse_yuan(f"{yuan}.{cents:02d}") == fen
    assert parse_yuan(format_fen(fen)) == fen


@given(st.integers(min_value=0, max_value=10**9))
def test_float_cells_with_two_decimals_are_exact(fen):
    assert parse_yuan(float(f"{fen // 100}.{fen % 100:02d}")) == fen


def test_format_fen():
    assert format_fen(12345) == "¥123.45"
    assert format_fen(-5) == "-¥0.05"
    assert format_fen(123456789) == "¥1,234,567.89"
    assert format_fen(0) == "¥0.00"


def test_money_is_integer_fen_only():
    assert Money(100) + Money(50) == Money(150)
    assert str(Money(1999)) == "¥19.99"
    with pytest.raises(TypeError):
        Money(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(True)  # type: ignore[arg-type]
    with pytest.raises(CurrencyMismatch):
        Money(1) + Money(1, "USD")
