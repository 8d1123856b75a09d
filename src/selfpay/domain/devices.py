"""Kiosks: the self-service terminals of a site, what they report, and when to alarm.

A device is registered by staff (its id, site, location, the billers it offers, elderly
mode by default, a standby partner), then enrolled: staff issue a one-time enrolment
code, the terminal's `selfpay kiosk-agent` trades it for the device's own secret, and
from then on signs every heartbeat with that secret. Revoking a device refuses it at
once. A heartbeat carries readings; a reading that cannot be true is refused (a
sensor or a forger is wrong), one that crosses a threshold raises an alarm.

    registered -> enrolled -> revoked        (re-enrolling a revoked device is allowed)
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from selfpay.domain.errors import InvalidInput

DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,31}$")
HEARTBEAT_S = 30  # the agent's period
MISSED_BEATS = 3  # offline after this many periods without a heartbeat
TEMP_RANGE_C = (-10.0, 50.0)  # outside: alarm (the terminal's own operating range)
HUMIDITY_MAX_PCT = 90.0  # above: alarm (condensation)
DISK_MIN_FREE_PCT = 5.0
PAYMENT_FAILURES_ALARM = 5  # failed payments in a row on one device


class InvalidDevice(InvalidInput):
    pass


class InvalidReading(InvalidInput):
    """A heartbeat reading that cannot be true: refused whole, logged."""


class DeviceState(StrEnum):
    REGISTERED = "registered"  # known, waiting for its enrolment
    ENROLLED = "enrolled"
    REVOKED = "revoked"


class Ups(StrEnum):
    ONLINE = "online"  # on mains
    ON_BATTERY = "on_battery"
    LOW_BATTERY = "low_battery"
    UNKNOWN = "unknown"  # no UPS, or NUT does not answer


class Printer(StrEnum):
    OK = "ok"
    PAPER_LOW = "paper_low"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class AlarmKind(StrEnum):
    OFFLINE = "offline"
    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    DISK = "disk"
    PAPER_LOW = "paper_low"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    PRINTER_OFFLINE = "printer_offline"
    UPS_ON_BATTERY = "ups_on_battery"
    UPS_LOW = "ups_low"
    PAYMENT_FAILURES = "payment_failures"


def normalize_device_id(raw: object) -> str:
    """'K-0001 ' -> 'k-0001'; 3-32 lower-case letters, digits and dashes."""
    text = raw.strip().lower() if isinstance(raw, str) else ""
    if not DEVICE_ID_RE.match(text):
        raise InvalidDevice(key="err.device.id", value=str(raw)[:40])
    return text


@dataclass(slots=True)
class Device:
    device_id: str
    name: str
    site: str = ""
    location: str = ""
    billers: tuple[str, ...] = ()  # what it offers, in the registry's order; () = all
    elderly_default: bool = False  # starts in elderly mode
    standby: str = ""  # the partner to send customers to while this one is offline
    state: DeviceState = DeviceState.REGISTERED
    created_at: dt.datetime | None = None
    enrolled_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None
    readings: dict[str, Any] = field(default_factory=dict)  # the last heartbeat's
    payment_failures: int = 0  # failed payments in a row

    def online(self, now: dt.datetime) -> bool:
        return (self.state is DeviceState.ENROLLED and self.last_seen_at is not None
                and now - self.last_seen_at < offline_after())


def offline_after() -> dt.timedelta:
    return dt.timedelta(seconds=HEARTBEAT_S * MISSED_BEATS)


@dataclass(frozen=True, slots=True)
class Readings:
    """What a heartbeat reports. None: the terminal cannot read it."""

    app_version: str
    uptime_s: int
    disk_free_pct: float | None = None
    cpu_temp_c: float | None = None
    temp_c: float | None = None
    humidity_pct: float | None = None
    ups: Ups = Ups.UNKNOWN
    ups_charge_pct: float | None = None
    printer: Printer = Printer.UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        return {"app_version": self.app_version, "uptime_s": self.uptime_s,
                "disk_free_pct": self.disk_free_pct, "cpu_temp_c": self.cpu_temp_c,
                "temp_c": self.temp_c, "humidity_pct": self.humidity_pct,
                "ups": self.ups.value, "ups_charge_pct": self.ups_charge_pct,
                "printer": self.printer.value}


def _number(raw: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or not low <= value <= high:
        raise InvalidReading(key="err.device.reading", name=name, value=str(value)[:20])
    return float(value)


def parse_readings(raw: object) -> Readings:
    """A heartbeat's readings, checked against what a terminal can physically report:
    a cabinet at 200 °C or a disk 140 % free is a broken sensor or a forgery."""
    if not isinstance(raw, dict):
        raise InvalidReading(key="err.device.reading", name="readings", value="")
    version = raw.get("app_version", "")
    uptime = raw.get("uptime_s", 0)
    if not isinstance(version, str) or len(version) > 32:
        raise InvalidReading(key="err.device.reading", name="app_version",
                             value=str(version)[:20])
    if isinstance(uptime, bool) or not isinstance(uptime, int) or not 0 <= uptime < 10 ** 9:
        raise InvalidReading(key="err.device.reading", name="uptime_s", value=str(uptime)[:20])
    try:
        ups = Ups(raw.get("ups", "unknown"))
        printer = Printer(raw.get("printer", "unknown"))
    except ValueError as exc:
        raise InvalidReading(key="err.device.reading", name="ups/printer",
                             value=str(exc)[:40]) from exc
    return Readings(
        app_version=version, uptime_s=uptime,
        disk_free_pct=_number(raw, "disk_free_pct", 0, 100),
        cpu_temp_c=_number(raw, "cpu_temp_c", -40, 125),
        temp_c=_number(raw, "temp_c", -40, 85),
        humidity_pct=_number(raw, "humidity_pct", 0, 100),
        ups=ups, ups_charge_pct=_number(raw, "ups_charge_pct", 0, 100),
        printer=printer,
    )


def alarms_for(readings: Readings) -> dict[AlarmKind, str]:
    """The alarms these readings raise, each with a short detail for staff."""
    found: dict[AlarmKind, str] = {}
    low, high = TEMP_RANGE_C
    if readings.temp_c is not None and not low <= readings.temp_c <= high:
        found[AlarmKind.TEMPERATURE] = f"{readings.temp_c:.1f} °C"
    if readings.humidity_pct is not None and readings.humidity_pct > HUMIDITY_MAX_PCT:
        found[AlarmKind.HUMIDITY] = f"{readings.humidity_pct:.0f} %"
    if readings.disk_free_pct is not None and readings.disk_free_pct < DISK_MIN_FREE_PCT:
        found[AlarmKind.DISK] = f"{readings.disk_free_pct:.1f} %"
    printer = {Printer.PAPER_LOW: AlarmKind.PAPER_LOW, Printer.PAPER_OUT: AlarmKind.PAPER_OUT,
               Printer.COVER_OPEN: AlarmKind.COVER_OPEN,
               Printer.OFFLINE: AlarmKind.PRINTER_OFFLINE}.get(readings.printer)
    if printer is not None:
        found[printer] = readings.printer.value
    if readings.ups is Ups.LOW_BATTERY:
        found[AlarmKind.UPS_LOW] = _charge(readings)
    elif readings.ups is Ups.ON_BATTERY:
        found[AlarmKind.UPS_ON_BATTERY] = _charge(readings)
    return found


def _charge(readings: Readings) -> str:
    return f"{readings.ups_charge_pct:.0f} %" if readings.ups_charge_pct is not None else ""


# Alarms a heartbeat can clear (the reading is back in range); offline is cleared by the
# heartbeat itself, payment failures by a payment that goes through.
READING_ALARMS = frozenset(AlarmKind) - {AlarmKind.OFFLINE, AlarmKind.PAYMENT_FAILURES}


@dataclass(slots=True)
class Alarm:
    id: int | None
    device_id: str
    kind: AlarmKind
    detail: str
    raised_at: dt.datetime
    cleared_at: dt.datetime | None = None  # the condition ended (the alarm stays until acked)
    acked_at: dt.datetime | None = None
    acked_by: str = ""
    note: str = ""

    @property
    def open(self) -> bool:
        return self.acked_at is None


@dataclass(slots=True)
class MaintenanceTask:
    """A recurring job on one device (monthly screen cleaning by default)."""

    id: int | None
    device_id: str
    title: str
    period_days: int
    last_done_at: dt.datetime | None
    created_at: dt.datetime
    last_note: str = ""
    last_done_by: str = ""

    def due_at(self) -> dt.datetime:
        return (self.last_done_at or self.created_at) + dt.timedelta(days=self.period_days)

    def overdue(self, now: dt.datetime) -> bool:
        return now >= self.due_at()


DEFAULT_TASKS = (("屏幕清洁 / Screen cleaning", 30),)
