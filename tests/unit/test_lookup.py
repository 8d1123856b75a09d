"""The SMS look-up rules, without a database: codes, hashes, throttling, tries."""

from __future__ import annotations

import datetime as dt

import pytest

from selfpay.services.lookup import (
    CodeExpired,
    CodeLocked,
    CodeWrong,
    InvalidPhone,
    SmsRules,
    check_code,
    hash_code,
    new_code,
    normalize_phone,
    wait_before_resend,
)
from selfpay.services.ports import SmsCode

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
SECRET = b"k" * 32
RULES = SmsRules()


def row(code: str = "123456", *, sent: dt.datetime = NOW, tries: int = 0,
        used: bool = False) -> SmsCode:
    return SmsCode(phone="13812345678", code_hash=hash_code(SECRET, "13812345678", code),
                   expires_at=sent + RULES.ttl, sent_at=sent, tries=tries, used=used)


@pytest.mark.parametrize("raw", ["13812345678", "+86 138 1234 5678", "0086-138-1234-5678",
                                 "１３８１２３４５６７８", " 138-1234-5678 "])
def test_phone_numbers_are_normalized(raw: str) -> None:
    assert normalize_phone(raw) == "13812345678"


@pytest.mark.parametrize("raw", ["", "12345", "23812345678", "138123456789", "1381234567a"])
def test_other_text_is_not_a_phone_number(raw: str) -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone(raw)


def test_codes_are_six_digits_and_vary() -> None:
    codes = {new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 150


def test_the_hash_is_keyed_and_bound_to_the_phone() -> None:
    h = hash_code(SECRET, "13812345678", "123456")
    assert "123456" not in h
    assert h != hash_code(b"x" * 32, "13812345678", "123456")
    assert h != hash_code(SECRET, "13900000000", "123456")


def test_the_right_code_passes_in_time() -> None:
    check_code(row(), hash_code(SECRET, "13812345678", "123456"), NOW + RULES.ttl / 2, RULES)


def test_a_wrong_code_says_how_many_tries_are_left() -> None:
    with pytest.raises(CodeWrong) as info:
        check_code(row(tries=1), hash_code(SECRET, "13812345678", "000000"), NOW, RULES)
    assert info.value.tries_left == 3


def test_five_wrong_tries_lock_even_the_right_code() -> None:
    with pytest.raises(CodeLocked):
        check_code(row(tries=5), hash_code(SECRET, "13812345678", "123456"), NOW, RULES)


def test_a_code_expires_after_five_minutes_and_is_good_once() -> None:
    good = hash_code(SECRET, "13812345678", "123456")
    with pytest.raises(CodeExpired):
        check_code(row(), good, NOW + dt.timedelta(minutes=5), RULES)
    with pytest.raises(CodeExpired):
        check_code(row(used=True), good, NOW, RULES)
    with pytest.raises(CodeExpired):
        check_code(None, good, NOW, RULES)


def test_resend_waits_a_minute() -> None:
    assert wait_before_resend(None, NOW, RULES) == 0
    assert wait_before_resend(row(), NOW + dt.timedelta(seconds=1), RULES) == 59
    assert wait_before_resend(row(), NOW + dt.timedelta(seconds=59, microseconds=1), RULES) == 1
    assert wait_before_resend(row(), NOW + dt.timedelta(seconds=60), RULES) == 0
