"""The UPS, read from Network UPS Tools' daemon (upsd) over its network protocol.

Why a client of our own rather than one from PyPI: the clients there (`nut2`, `PyNUT`)
are unmaintained (last releases 2019 and 2022), and what the agent needs is two lines of
a plain-text protocol (RFC 9271), on TCP port 3493:

    GET VAR kiosk ups.status          ->  VAR kiosk ups.status "OB LB"
    GET VAR kiosk battery.charge      ->  VAR kiosk battery.charge "20"
    LOGOUT                            ->  OK Goodbye

An unknown UPS or variable answers `ERR <reason>`. upsd answers requests in order, so the
agent sends them all at once and reads one line per request.

ups.status is a list of flags: OL on line (mains), OB on battery, LB low battery (and
others: CHRG, RB, ...). LB wins over OB and OL: that is the one to act on.
"""

from __future__ import annotations

import logging
import shlex
import socket
from dataclasses import dataclass

from selfpay.domain.devices import Ups

log = logging.getLogger(__name__)

DEFAULT_PORT = 3493
TIMEOUT_S = 3.0


class NutError(Exception):
    """upsd cannot be reached, or refused a request."""


@dataclass(frozen=True, slots=True)
class NutAddress:
    ups: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        return f"{self.ups}@{self.host}:{self.port}"


def parse_address(text: str) -> NutAddress:
    """'kiosk@127.0.0.1:3493', 'kiosk@localhost' or 'kiosk' (upsc's notation)."""
    ups, _, where = text.strip().partition("@")
    host, _, port = where.rpartition(":") if ":" in where else (where, "", "")
    if not ups or not ups.replace("-", "").replace("_", "").replace(".", "").isalnum() \
            or (port and not port.isdigit()):
        raise ValueError(f"not a NUT address (ups@host[:port]): {text!r}")
    return NutAddress(ups, host or "127.0.0.1", int(port) if port else DEFAULT_PORT)


def get_vars(address: NutAddress, names: list[str], *,
             timeout_s: float = TIMEOUT_S) -> dict[str, str | None]:
    """The values of `names` (None: the UPS does not report that one). NutError when
    upsd cannot be reached or does not know the UPS."""
    request = "".join(f"GET VAR {address.ups} {n}\n" for n in names) + "LOGOUT\n"
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s) as s:
            s.sendall(request.encode("ascii"))
            lines = _read_lines(s, len(names))
    except OSError as exc:
        raise NutError(f"upsd at {address.host}:{address.port}: {exc}") from exc
    values: dict[str, str | None] = {}
    for name, line in zip(names, lines, strict=True):
        try:
            words = shlex.split(line)  # values are double-quoted, with \" and \\ escapes
        except ValueError:  # an unclosed quote: not an answer of upsd's
            words = []
        if words[:3] == ["VAR", address.ups, name] and len(words) == 4:
            values[name] = words[3]
        elif words[:2] == ["ERR", "VAR-NOT-SUPPORTED"]:
            values[name] = None
        else:
            raise NutError(f"upsd answered {line!r} to GET VAR {address.ups} {name}")
    return values


def _read_lines(sock: socket.socket, count: int) -> list[str]:
    buffer = b""
    while buffer.count(b"\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("upsd closed the connection early")
        buffer += chunk
        if len(buffer) > 64 * 1024:
            raise ConnectionError("upsd's answer is too long")
    return buffer.decode("utf-8", "replace").split("\n")[:count]


def ups_state(status: str | None) -> Ups:
    flags = set((status or "").split())
    if "LB" in flags:
        return Ups.LOW_BATTERY
    if "OB" in flags:
        return Ups.ON_BATTERY
    if "OL" in flags:
        return Ups.ONLINE
    return Ups.UNKNOWN


def read_ups(address: NutAddress, *, timeout_s: float = TIMEOUT_S) -> tuple[Ups, float | None]:
    """The UPS's state and battery charge (%); (unknown, None) when upsd does not answer."""
    try:
        found = get_vars(address, ["ups.status", "battery.charge"], timeout_s=timeout_s)
    except NutError as exc:
        log.warning("UPS %s: %s", address, exc)
        return Ups.UNKNOWN, None
    charge: float | None
    try:
        charge = float(found["battery.charge"]) if found["battery.charge"] else None
    except ValueError:
        charge = None
    return ups_state(found["ups.status"]), charge
