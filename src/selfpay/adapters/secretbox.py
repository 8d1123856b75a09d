"""SecretBox on AES-256-GCM: how an SMS code travels through the message outbox.

The outbox row shows staff a masked body; the text with the code is sealed here and
opened only by the notifier that sends it. The key is derived from SELFPAY_SECRET_KEY
with HKDF-SHA256 and a purpose label, so it is no other key of the site (the SMS code
HMAC, sessions, CSRF) and needs no setting of its own. The recipient is the associated
data: a token copied onto another row (another phone) does not open.

Token: "v1." + base64url(12-byte random nonce || ciphertext || 16-byte tag), no padding.
A new SELFPAY_SECRET_KEY leaves queued tokens unopenable (SealBroken): they fail for
good, and the customer asks for a new code (codes live minutes).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from selfpay.services.ports import SealBroken

PURPOSE = b"selfpay/message-secret/v1"
_PREFIX = "v1."
_NONCE = 12


def derive_key(secret_key: str, purpose: bytes = PURPOSE) -> bytes:
    """32 bytes for `purpose`, from the site's secret key."""
    if not secret_key:
        raise ValueError("SELFPAY_SECRET_KEY is empty: nothing to derive the message key from")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=purpose).derive(secret_key.encode("utf-8"))


class AesGcmBox:
    """SecretBox with AES-256-GCM; the key never shows in repr."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_secret_key(cls, secret_key: str) -> AesGcmBox:
        return cls(derive_key(secret_key))

    def __repr__(self) -> str:
        return "AesGcmBox('**********')"

    def seal(self, text: str, *, to: str) -> str:
        nonce = os.urandom(_NONCE)
        data = nonce + self._aead.encrypt(nonce, text.encode("utf-8"), _aad(to))
        return _PREFIX + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")

    def open(self, token: str, *, to: str) -> str:
        if not token.startswith(_PREFIX):
            raise SealBroken("not a v1 sealed token")
        raw = token[len(_PREFIX):]
        try:
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            if len(data) <= _NONCE:
                raise SealBroken("sealed token too short")
            plain = self._aead.decrypt(data[:_NONCE], data[_NONCE:], _aad(to))
            return plain.decode("utf-8")
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SealBroken("sealed token does not open with this key for this "
                             "recipient") from exc


def _aad(to: str) -> bytes:
    return f"selfpay-message/v1|{to}".encode()
