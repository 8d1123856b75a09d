"""The payload of an account's QR code: a URL that carries only the biller code, the
account number and a short MAC with a key id.

    HTTPS://PAY.EXAMPLE.CN/Q/ELEC/0012345678/1B6Z4KQ2M7XHAP
                              biller account  ^ key id, then 13 base32 chars = 64-bit MAC

Everything is upper case so the whole URL fits the QR alphanumeric mode (0-9 A-Z
$%*+-./: and space): a 10-digit account under a short host gives version 3 at level M.
The web tier serves /Q/... as well as /q/...; browsers lower-case only the host.

The MAC is HMAC-SHA256(key[kid], "selfpay-qr/v1|kid|biller|account") truncated to 64
bits. Verification recomputes the canonical payload and compares whole strings in
constant time, so any change of any character is refused (no case folding, no decoding
that could ignore a padding bit). Old key ids stay valid while their key is configured;
removing a key retires every code printed with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field

from selfpay.domain.accounts import ACCOUNT_RE, BILLER_RE
from selfpay.domain.errors import InvalidCode

KEY_ID_RE = re.compile(r"^[0-9A-Z]$")
MAC_CHARS = 13  # 13 base32 characters carry the 64-bit truncated MAC
_TAG_RE = re.compile(r"^[0-9A-Z][A-Z2-7]{13}$")
_ALNUM_URL_RE = re.compile(r"^[0-9A-Z$%*+\-./:]+$")
MIN_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class CodeRef:
    biller: str
    account: str
    key_id: str


@dataclass(frozen=True, slots=True)
class QrKeyring:
    """MAC keys by one-character key id; `active` signs new codes, all others still verify."""

    keys: dict[str, bytes] = field(repr=False)  # secrets: never in a log line
    active: str

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("the QR keyring holds no key")
        for kid, key in self.keys.items():
            if not KEY_ID_RE.match(kid):
                raise ValueError(f"QR key id must be one character 0-9 or A-Z: {kid!r}")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"QR key {kid!r} is shorter than {MIN_KEY_BYTES} bytes")
        if self.active not in self.keys:
            raise ValueError(f"active QR key id {self.active!r} is not in the keyring")


def code_base(public_base_url: str) -> str:
    """'https://pay.example.cn/' -> 'HTTPS://PAY.EXAMPLE.CN/Q/' (alphanumeric-mode safe)."""
    base = public_base_url.strip().rstrip("/").upper() + "/Q/"
    if not _ALNUM_URL_RE.match(base):
        raise ValueError(
            "public base URL must use only letters, digits and $%*+-./: so that codes "
            f"stay in the QR alphanumeric mode: {public_base_url!r}"
        )
    return base


def mac_tag(keyring: QrKeyring, biller: str, account: str, key_id: str | None = None) -> str:
    kid = keyring.active if key_id is None else key_id
    key = keyring.keys[kid]
    msg = f"selfpay-qr/v1|{kid}|{biller}|{account}".encode()
    digest = hmac.new(key, msg, hashlib.sha256).digest()[:8]
    return kid + base64.b32encode(digest).decode("ascii")[:MAC_CHARS]


def make_payload(base: str, keyring: QrKeyring, biller: str, account: str) -> str:
    """`base` is what code_base() returned; biller and account are already normalized."""
    if not BILLER_RE.match(biller):
        raise ValueError(f"not a normalized biller code: {biller!r}")
    if not ACCOUNT_RE.match(account):
        raise ValueError(f"not a normalized account number: {account!r}")
    return f"{base}{biller}/{account}/{mac_tag(keyring, biller, account)}"


def verify_parts(keyring: QrKeyring, biller: str, account: str, tag: str) -> CodeRef:
    """Check the three path parts of a code URL; raise InvalidCode with the reason."""
    if not BILLER_RE.match(biller) or not ACCOUNT_RE.match(account):
        raise InvalidCode(key="err.code.malformed_parts")
    if not _TAG_RE.match(tag):
        raise InvalidCode(key="err.code.malformed_tag")
    kid = tag[0]
    if kid not in keyring.keys:
        raise InvalidCode(key="err.code.unknown_key", kid=kid)
    if not hmac.compare_digest(tag, mac_tag(keyring, biller, account, kid)):
        raise InvalidCode(key="err.code.altered")
    return CodeRef(biller=biller, account=account, key_id=kid)


def verify_payload(base: str, keyring: QrKeyring, payload: str) -> CodeRef:
    """Verify a whole scanned payload against this deployment's base URL."""
    if not payload.startswith(base):
        raise InvalidCode(key="err.code.foreign")
    parts = payload[len(base) :].split("/")
    if len(parts) != 3:
        raise InvalidCode(key="err.code.malformed")
    # base matched exactly and the three parts are checked exactly, so the whole
    # payload is the canonical one: no second comparison is needed.
    return verify_parts(keyring, parts[0], parts[1], parts[2])
