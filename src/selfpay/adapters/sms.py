"""SMS gateways (the SmsGateway port): a generic HTTP gateway with signed requests, and
the terminal, which is the demo's phone.

The HTTP gateway (SELFPAY_SMS_GATEWAY=http) is whatever the site puts in front of its
SMS provider: a relay of its own, or a provider that accepts this contract.

    POST {SELFPAY_SMS_URL}
    Content-Type: application/json; charset=utf-8
    X-Selfpay-Timestamp: 1793520000      Unix time in seconds
    X-Selfpay-Nonce: 5f0c...e1           32 hexadecimal digits, new for every request
    X-Selfpay-Signature: v1=<64 hex>

    {"id": "selfpay-msg-42-1793519990", "to": "13812345678",
     "text": "【缴费】您的查询验证码是 123456，5 分钟内有效。…", "sender": "【缴费】"}

- Signature: "v1=" + hex(HMAC-SHA256(key, timestamp + "\\n" + nonce + "\\n" + body)),
  where timestamp and nonce are the header values as ASCII and body is the exact bytes
  of the request body (UTF-8 JSON). The key is SELFPAY_SMS_KEY, or the content of the
  file SELFPAY_SMS_KEY_FILE without surrounding white space, as UTF-8 bytes.
- The gateway should recompute the HMAC over the raw body before parsing it, compare in
  constant time, refuse a timestamp more than 300 s from its clock, and refuse a nonce
  it has seen in the last 10 minutes (a replay).
- "id" is the same on every try of one message: a gateway that keeps the ids of the
  last day drops the repeat sent after a worker died between "accepted" and "sent".
  "sender" is SELFPAY_SMS_SENDER, "" when unset.
- Answers: any 2xx means accepted. 400 or 422 with the JSON body {"error":
  "invalid_number"} (or "invalid_recipient", "blacklisted") means this number can
  never get it: the message fails for good. Anything else (401 or 403 for a bad
  signature, 429, 5xx, a timeout, a refused connection) is retried with back-off by the
  worker, five tries in all.

Neither the text nor the key ever reaches a log line or an error message: errors name
the gateway's host, the HTTP status and the gateway's error word, nothing it echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sys
import time
from collections.abc import Callable, Generator
from typing import TextIO

import httpx

from selfpay.services.ports import MessageUndeliverable, NotifierError

SIGNATURE_VERSION = "v1"
TIMESTAMP_HEADER = "X-Selfpay-Timestamp"
NONCE_HEADER = "X-Selfpay-Nonce"
SIGNATURE_HEADER = "X-Selfpay-Signature"
# the gateway's error words that mean "this number, never": fail, do not retry
NUMBER_REFUSED = frozenset({"invalid_number", "invalid_recipient", "blacklisted"})
_ERROR_WORD = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def signature(key: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    """The X-Selfpay-Signature value of a request."""
    mac = hmac.new(key, f"{timestamp}\n{nonce}\n".encode("ascii") + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


class HmacSignature(httpx.Auth):
    """Signs each request (timestamp, nonce, raw body); the key never shows in repr."""

    requires_request_body = True

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def __repr__(self) -> str:
        return "HmacSignature('**********')"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        timestamp = str(int(self._clock()))
        nonce = secrets.token_hex(16)
        request.headers[TIMESTAMP_HEADER] = timestamp
        request.headers[NONCE_HEADER] = nonce
        request.headers[SIGNATURE_HEADER] = signature(self._key, timestamp, nonce,
                                                      request.content)
        yield request


class HttpSmsGateway:
    """The generic HTTP SMS gateway of the module docstring."""

    def __init__(self, *, url: str, key: bytes, sender: str = "", timeout_s: float = 10.0,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.sender = sender
        self.timeout_s = timeout_s
        self._host = httpx.URL(url).host
        self._client = httpx.Client(timeout=timeout_s, auth=HmacSignature(key, clock=clock),
                                    transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"HttpSmsGateway(url={self.url!r})"

    def close(self) -> None:
        self._client.close()

    def send(self, phone: str, text: str, *, ref: str) -> None:
        body = json.dumps({"id": ref, "to": phone, "text": text, "sender": self.sender},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        where = f"SMS gateway {self._host}"
        try:
            response = self._client.post(
                self.url, content=body,
                headers={"Content-Type": "application/json; charset=utf-8"})
        except httpx.TimeoutException as exc:
            raise NotifierError(f"{where}: no answer within {self.timeout_s:g} s "
                                f"({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # refused, reset, name not found, TLS
            raise NotifierError(f"{where}: {type(exc).__name__}: {_reason(exc)}") from None
        if response.is_success:
            return
        word = _error_word(response)
        said = f"HTTP {response.status_code}" + (f" {word}" if word else "")
        if response.status_code in (400, 422) and word in NUMBER_REFUSED:
            raise MessageUndeliverable(f"{where} refused the number: {said}")
        if response.status_code in (401, 403):
            said += " (is SELFPAY_SMS_KEY the gateway's key?)"
        raise NotifierError(f"{where}: {said}")


def _reason(exc: httpx.HTTPError) -> str:
    """The OS's words for a failed connection ("Connection refused"), not httpx's message,
    which may quote the request."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return "connection failed"


def _error_word(response: httpx.Response) -> str:
    """The gateway's {"error": WORD}, if it is one short word; never its other text."""
    try:
        doc = response.json()
    except ValueError:
        return ""
    word = doc.get("error") if isinstance(doc, dict) else None
    return word if isinstance(word, str) and _ERROR_WORD.fullmatch(word) else ""


class TerminalSmsGateway:
    """The demo's phone: each SMS is printed where `selfpay demo` runs (standard output,
    not the log). Settings refuse it in production."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def send(self, phone: str, text: str, *, ref: str) -> None:
        stream = self._stream or sys.stdout
        print(f"[演示短信 / demo SMS] → {phone}: {text}", file=stream, flush=True)
