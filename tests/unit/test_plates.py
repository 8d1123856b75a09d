"""Chinese licence plates: ordinary and new-energy forms, and the account number rule."""

from __future__ import annotations

import pytest

from selfpay.domain.accounts import ACCOUNT_RE
from selfpay.domain.plates import (
    PROVINCES,
    InvalidPlate,
    account_plate,
    is_new_energy,
    normalize_plate,
    plate_account,
)


@pytest.mark.parametrize(("raw", "plate"), [
    ("粤B12345", "粤B12345"),
    ("粤 b·12345", "粤B12345"),          # spaces, the middle dot, lower case
    ("粤Ｂ１２３４５", "粤B12345"),       # full-width
    ("京AD12345", "京AD12345"),          # small new-energy, battery electric
    ("沪AFA1234", "沪AFA1234"),          # D/F, then a letter, 4 digits
    ("苏E12345D", "苏E12345D"),          # large new-energy: 5 digits then D/F
    ("川A9Z8Y7", "川A9Z8Y7"),
])
def test_good_plates_are_normalized(raw: str, plate: str) -> None:
    assert normalize_plate(raw) == plate


@pytest.mark.parametrize(("raw", "key"), [
    ("", "err.plate.province"),
    ("B12345", "err.plate.province"),       # no province
    ("港B12345", "err.plate.province"),     # not a mainland province abbreviation
    ("粤I12345", "err.plate.invalid"),      # I is never used
    ("粤B1O345", "err.plate.invalid"),      # nor O
    ("粤B1234", "err.plate.invalid"),       # too short
    ("粤B1234567", "err.plate.invalid"),    # too long
    ("粤BA12345", "err.plate.invalid"),     # 6 characters must follow the new-energy rule
    ("粤BDA12B4", "err.plate.invalid"),     # small new-energy: digits after the 2nd place
    ("粤B12345A", "err.plate.invalid"),     # large new-energy ends in D or F only
    ("粤B1234学", "err.plate.invalid"),     # special plates are not taken here
])
def test_bad_plates_are_refused_with_a_reason(raw: str, key: str) -> None:
    with pytest.raises(InvalidPlate) as caught:
        normalize_plate(raw)
    assert caught.value.key == key


def test_new_energy_plates_have_eight_characters() -> None:
    assert is_new_energy(normalize_plate("京AD12345"))
    assert not is_new_energy(normalize_plate("京A12345"))


@pytest.mark.parametrize(("plate", "account"), [
    ("粤B12345", "GD-B12345"), ("京AD12345", "BJ-AD12345"), ("沪A12345D", "SH-A12345D"),
    ("蒙K0A123", "NM-K0A123"),
])
def test_a_plate_maps_to_an_account_number_and_back(plate: str, account: str) -> None:
    assert plate_account(plate) == account
    assert ACCOUNT_RE.match(account)
    assert account_plate(account) == plate


def test_every_province_has_its_own_two_letter_code() -> None:
    codes = list(PROVINCES.values())
    assert len(PROVINCES) == 31 and len(set(codes)) == 31
    assert all(len(c) == 2 and c.isascii() and c.isupper() for c in codes)
    assert account_plate("0012345678") is None and account_plate("GD-I12345") is None
