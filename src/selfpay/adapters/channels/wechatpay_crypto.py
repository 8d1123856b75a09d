"""The cryptography of WeChat Pay API v3, on `cryptography` primitives.

- Requests are signed over `METHOD\\nPATH_WITH_QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n` with the
  merchant's RSA key (PKCS#1 v1.5, SHA-256, base64).
- Responses and notifications are verified over `TIMESTAMP\\nNONCE\\nRAW_BODY\\n` with the
  platform public key that `Wechatpay-Serial` names: a "WeChat Pay public key"
  (`PUB_KEY_ID_...`) or a platform certificate (its serial in upper-case hex).
- Notification resources are AES-GCM encrypted with the APIv3 key: base64 of
  ciphertext || 16-byte tag, a 12-byte nonce and optional associated data.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SIGNATURE_SCHEME = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"  # WeChat's deliberate bad-signature probes
_NONCE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class DecryptionFailed(ValueError):
    """The resource could not be decrypted (wrong key, tampered data, bad encoding)."""


def request_message(method: str, path_with_query: str, timestamp: str, nonce: str,
                    body: str) -> str:
    """The string a merchant signs for one API request. GET requests have body ''."""
    return f"{method.upper()}\n{path_with_query}\n{timestamp}\n{nonce}\n{body}\n"


def response_message(timestamp: str, nonce: str, body: bytes) -> bytes:
    """The bytes WeChat signs in a response or a notification: the raw body, untouched."""
    return timestamp.encode("ascii") + b"\n" + nonce.encode("ascii") + b"\n" + body + b"\n"


def jsapi_message(appid: str, timestamp: str, nonce: str, package: str) -> str:
    """What `paySign` signs for WeixinJSBridge getBrandWCPayRequest."""
    return f"{appid}\n{timestamp}\n{nonce}\n{package}\n"


def new_nonce(length: int = 32) -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


def rsa_sign(key: rsa.RSAPrivateKey, message: str | bytes) -> str:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def authorization(*, mchid: str, serial_no: str, key: rsa.RSAPrivateKey, method: str,
                  path_with_query: str, timestamp: str, nonce: str, body: str) -> str:
    """The `Authorization` header value of one request."""
    signature = rsa_sign(key, request_message(method, path_with_query, timestamp, nonce, body))
    return (
        f'{SIGNATURE_SCHEME} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{timestamp}",serial_no="{serial_no}"'
    )


def aes_gcm_decrypt(key: bytes, nonce: str, associated_data: str, ciphertext_b64: str) -> bytes:
    """Decrypt a notification resource. The key is normally the 32-byte APIv3 key; 16 and
    24 bytes are accepted too (WeChat's published test vector uses a 16-byte key)."""
    try:
        data = base64.b64decode(ciphertext_b64, validate=True)
        return AESGCM(key).decrypt(
            nonce.encode("utf-8"), data, associated_data.encode("utf-8") or None
        )
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise DecryptionFailed(f"cannot decrypt the resource: {type(exc).__name__}") from exc


def aes_gcm_encrypt(key: bytes, nonce: str, associated_data: str, plaintext: bytes) -> str:
    data = AESGCM(key).encrypt(nonce.encode("utf-8"), plaintext,
                               associated_data.encode("utf-8") or None)
    return base64.b64encode(data).decode("ascii")


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the merchant key is not an RSA private key")
    return key


def load_public_key(pem: bytes, serial: str) -> rsa.RSAPublicKey:
    """A platform key from PEM: a public key ("WeChat Pay public key" mode) or a
    platform certificate, whose serial must then be `serial`."""
    if b"BEGIN CERTIFICATE" in pem:
        cert = x509.load_pem_x509_certificate(pem)
        cert_serial = f"{cert.serial_number:X}"
        if cert_serial.lstrip("0") != serial.upper().lstrip("0"):
            raise ValueError(
                f"platform certificate serial is {cert_serial}, configured as {serial}")
        key: object = cert.public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"platform key {serial} is not an RSA public key")
    return key


def parse_platform_keys(spec: str, base_dir: Path | None = None) -> dict[str, rsa.RSAPublicKey]:
    """`SERIAL=path.pem,SERIAL2=path2.pem` -> {serial: key}. Several serials at once let
    keys rotate: WeChat names the one it used in `Wechatpay-Serial`."""
    keys: dict[str, rsa.RSAPublicKey] = {}
    for item in spec.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        serial, sep, path = item.partition("=")
        serial, path = serial.strip(), path.strip()
        if not sep or not serial or not path:
            raise ValueError("platform keys must look like 'SERIAL=path/to/key.pem,...'")
        file = Path(path).expanduser()
        if base_dir is not None and not file.is_absolute():
            file = base_dir / file
        try:
            pem = file.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read platform key {serial} from {file}: {exc}") from exc
        keys[serial] = load_public_key(pem, serial)
    return keys
