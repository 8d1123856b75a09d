"""Properties of the signed QR payload (domain.qrcodes), checked with hypothesis."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfpay.domain.errors import InvalidCode
from selfpay.domain.qrcodes import QrKeyring, code_base, make_payload, verify_payload

BASE = code_base("https://pay.example.cn")

billers = st.from_regex(r"[A-Z][A-Z0-9]{0,7}", fullmatch=True)
accounts = st.from_regex(r"[0-9A-Z-]{1,32}", fullmatch=True)
key_ids = st.sampled_from(string.digits + string.ascii_uppercase)
keys = st.binary(min_size=16, max_size=64)


@st.composite
def keyrings(draw: st.DrawFn) -> QrKeyring:
    ring = draw(st.dictionaries(key_ids, keys, min_size=1, max_size=4))
    return QrKeyring(ring, draw(st.sampled_from(sorted(ring))))


@given(biller=billers, account=accounts, keyring=keyrings())
def test_a_made_code_verifies_to_its_biller_and_account(
    biller: str, account: str, keyring: QrKeyring
) -> None:
    payload = make_payload(BASE, keyring, biller, account)
    assert payload == payload.upper()
    ref = verify_payload(BASE, keyring, payload)
    assert (ref.biller, ref.account, ref.key_id) == (biller, account, keyring.active)


@given(biller=billers, account=accounts, old=keys, new=keys)
def test_rotation_keeps_old_codes_valid_until_their_key_is_removed(
    biller: str, account: str, old: bytes, new: bytes
) -> None:
    printed = make_payload(BASE, QrKeyring({"1": old}, "1"), biller, account)
    rotated = QrKeyring({"1": old, "2": new}, "2")
    assert verify_payload(BASE, rotated, printed).key_id == "1"
    fresh = make_payload(BASE, rotated, biller, account)
    assert verify_payload(BASE, rotated, fresh).key_id == "2"
    retired = QrKeyring({"2": new}, "2")
    with pytest.raises(InvalidCode):
        verify_payload(BASE, retired, printed)
    assert verify_payload(BASE, retired, fresh).key_id == "2"


def single_character_changes(payload: str) -> set[str]:
    changed: set[str] = set()
    for i in range(len(payload) + 1):
        for ch in string.printable[:95]:  # every printable ASCII character, space included
            changed.add(payload[:i] + ch + payload[i:])  # insertion
            if i < len(payload):
                changed.add(payload[:i] + ch + payload[i + 1 :])  # substitution
        if i < len(payload):
            changed.add(payload[:i] + payload[i + 1 :])  # deletion
    changed.discard(payload)  # substituting a character by itself changes nothing
    return changed


@settings(max_examples=15, deadline=None)
@given(biller=billers, account=accounts, keyring=keyrings())
def test_every_single_character_change_is_refused(
    biller: str, account: str, keyring: QrKeyring
) -> None:
    payload = make_payload(BASE, keyring, biller, account)
    changes = single_character_changes(payload)
    assert len(changes) > 95 * len(payload)
    for altered in changes:
        with pytest.raises(InvalidCode):
            verify_payload(BASE, keyring, altered)


def test_code_of_another_site_is_refused() -> None:
    keyring = QrKeyring({"1": b"k" * 16}, "1")
    payload = make_payload(code_base("https://other.example.cn"), keyring, "ELEC", "1")
    with pytest.raises(InvalidCode, match="does not belong"):
        verify_payload(BASE, keyring, payload)
