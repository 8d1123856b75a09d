from __future__ import annotations

from decimal import Decimal

import pytest

from selfpay.domain.accounts import (
    AccountSummary,
    Bill,
    mask_name,
    mask_phone,
    normalize_account,
    normalize_biller,
)
from selfpay.domain.errors import InvalidAccountNumber, InvalidBillerCode


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        (12345678.0, "12345678"),
        (1.2345678901e10, "12345678901"),
        ("  ００１２３ ", "00123"),
        ("\u30000012345678\u3000", "0012345678"),
        ("0012345678", "0012345678"),
        ("w-001", "W-001"),
        (42, "42"),
        (Decimal("100"), "100"),
    ],
)
def test_account_numbers_normalize_and_keep_leading_zeros(raw, number):
    assert normalize_account(raw) == number


@pytest.mark.parametrize(
    "raw", ["001 23", "", "   ", None, True, 1.5, -3, "A" * 33, "12_3", "12.0", "张三"]
)
def test_bad_account_numbers_are_refused(raw):
    with pytest.raises(InvalidAccountNumber):
        normalize_account(raw)


def test_biller_codes():
    assert normalize_biller(" elec ") == "ELEC"
    for bad in ["", "1ELEC", "TOOLONGCODE", "E-1", 5]:
        with pytest.raises(InvalidBillerCode):
            normalize_biller(bad)


def test_names_and_phones_are_masked():
    assert mask_name("张三丰") == "张*丰"
    assert mask_name("张三") == "张*"
    assert mask_name("Alice Smith") == "A*********h"
    assert mask_name("张") == "*"
    assert mask_name("") == ""
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("12345") == "*****"


def test_total_due_is_what_the_open_bills_still_owe_whatever_the_balance():
    bills = (Bill(1, "E", "1", "2026-09", 1000, None, paid_fen=200),
             Bill(2, "E", "1", "2026-10", 500, None))
    assert AccountSummary("E", "1", "*", 300, bills).total_due_fen == 1300
    assert AccountSummary("E", "1", "*", 5000, bills).total_due_fen == 1300
