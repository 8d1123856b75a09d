"""The kiosk agent's client of the selfpay server: enrolment, signed heartbeats, receipts.

    POST /api/v1/devices/{id}/enroll      {"code"} -> {"device_id", "secret", "heartbeat_s"}
    POST /api/v1/devices/{id}/heartbeat   {"readings"}, signed -> {"ok", "raised", "config"}
    GET  /api/v1/orders/{order_no}/receipt                   -> the receipt as data

A heartbeat is signed over its exact body bytes (services/devices.py `signature`), with a
timestamp that must be newer than the last one the server took: two heartbeats within
one second (a retry right after a restart) get consecutive seconds.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from selfpay.services.devices import HEADER_SIGNATURE, HEADER_TIMESTAMP, signature

TIMEOUT_S = 10.0
ORDER_NO_RE = re.compile(r"^[A-Z0-9]{6,32}$")  # what the server issues (web/pay.py)


class ServerError(Exception):
    """The server answered something other than what the request expects."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ServerUnreachable(ServerError):
    """No answer: no route, refused, timed out, TLS failed."""


class DeviceRefused(ServerError):
    """403 device_refused: a bad or spent code, a revoked device, a bad signature."""


class ServerClient:
    def __init__(self, base_url: str, *, timeout_s: float = TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                  transport=transport, follow_redirects=False,
                                  headers={"User-Agent": "selfpay-kiosk-agent"})
        self._clock = clock
        self._last_stamp = 0

    def close(self) -> None:
        self._http.close()

    def enroll(self, device_id: str, code: str) -> dict[str, Any]:
        answer = self._call("POST", f"/api/v1/devices/{device_id}/enroll",
                            json={"code": code.strip()})
        secret = answer.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ServerError("the enrolment answer holds no secret")
        return answer

    def heartbeat(self, device_id: str, secret: str,
                  readings: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps({"readings": dict(readings)}, separators=(",", ":")).encode()
        stamp = max(int(self._clock()), self._last_stamp + 1)
        self._last_stamp = stamp
        headers = {HEADER_TIMESTAMP: str(stamp),
                   HEADER_SIGNATURE: signature(secret, device_id, str(stamp), body),
                   "Content-Type": "application/json"}
        return self._call("POST", f"/api/v1/devices/{device_id}/heartbeat", content=body,
                          headers=headers)

    def receipt(self, order_no: str) -> dict[str, Any]:
        """The receipt of a paid order; ServerError with status 404 (unknown) or 409
        (not paid yet) otherwise."""
        if not ORDER_NO_RE.match(order_no):
            raise ServerError(f"not an order number: {order_no[:40]!r}", status=404,
                              code="order_not_found")
        return self._call("GET", f"/api/v1/orders/{order_no}/receipt")

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:  # transport errors, timeouts, bad URLs
            raise ServerUnreachable(str(exc) or type(exc).__name__) from exc
        try:
            data = r.json()
        except ValueError:
            data = None
        code = str(data.get("code", "")) if isinstance(data, dict) else ""
        if r.status_code == 403 and code == "device_refused":
            raise DeviceRefused("the server refused this terminal", status=403, code=code)
        if r.status_code != 200 or not isinstance(data, dict):
            detail = data.get("detail", "") if isinstance(data, dict) else r.text[:120]
            raise ServerError(f"{method} {path}: HTTP {r.status_code} {detail}".strip(),
                              status=r.status_code, code=code)
        return data
