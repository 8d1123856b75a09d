"""The kiosk agent: reads the terminal, sends a signed heartbeat every period, prints
receipts on request.

Nothing that goes wrong outside stops it: a probe that fails gives no reading (None, or
`unknown` for the UPS and the printer), a reading the server would refuse as impossible
is dropped before sending (logged), and a heartbeat the server does not take (down,
unreachable, refused) is logged and simply sent again next period with fresh readings.
The period is the server's `config.heartbeat_s` once it has answered, HEARTBEAT_S until
then.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import selfpay
from selfpay.adapters.kiosk import nut, probes
from selfpay.adapters.kiosk.config import MAX_PERIOD_S, MIN_PERIOD_S, AgentConfig
from selfpay.adapters.kiosk.printer import EscposPrinter, PrinterUnavailable, PrintRefused
from selfpay.adapters.kiosk.receipt import render_receipt
from selfpay.adapters.kiosk.server import ServerClient, ServerError
from selfpay.domain.devices import InvalidReading, Printer, Readings, Ups, parse_readings

log = logging.getLogger(__name__)
T = TypeVar("T")

OPTIONAL_READINGS = ("disk_free_pct", "cpu_temp_c", "temp_c", "humidity_pct",
                     "ups_charge_pct")


@dataclass(frozen=True, slots=True)
class BeatOutcome:
    ok: bool
    at: dt.datetime
    raised: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()
    error: str = ""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class KioskAgent:
    def __init__(self, config: AgentConfig, *, server: ServerClient, data_dir: Path,
                 printer: EscposPrinter | None = None, nut_address: nut.NutAddress | None = None,
                 sensors: list[tuple[str, Callable[[], Any]]] | None = None,
                 thermal_root: Path = probes.THERMAL,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.config = config
        self.server = server
        self.printer = printer
        self.nut_address = nut_address
        self.period_s = config.heartbeat_s
        self._data_dir = data_dir
        self._sensors = sensors if sensors is not None else probes.load_sensors()
        self._thermal_root = thermal_root
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: Readings | None = None
        self._read_at: dt.datetime | None = None
        self._beat: BeatOutcome | None = None

    @classmethod
    def from_config(cls, config: AgentConfig, *, data_dir: Path,
                    printer_timeout_s: float = 3.0) -> KioskAgent:
        """The agent with the printer and UPS its config names (either may be absent)."""
        printer = None
        if config.printer:
            try:
                printer = EscposPrinter(config.printer, timeout_s=printer_timeout_s)
            except PrinterUnavailable as exc:
                log.error("printer %r: %s", config.printer, exc)
        address = nut.parse_address(config.nut) if config.nut else None
        return cls(config, server=ServerClient(config.server), data_dir=data_dir,
                   printer=printer, nut_address=address)

    # --- readings -------------------------------------------------------------------

    def read(self) -> Readings:
        """Everything the terminal can read now; what it cannot is None / unknown."""
        temp, humidity = probes.read_sensors(self._sensors)
        no_ups: tuple[Ups, float | None] = (Ups.UNKNOWN, None)
        ups, charge = _guard("UPS", self._read_ups, no_ups)
        raw: dict[str, Any] = {
            "app_version": selfpay.__version__[:32], "uptime_s": probes.uptime_s(),
            "disk_free_pct": _guard("disk", lambda: probes.disk_free_pct(self._data_dir),
                                    None),
            "cpu_temp_c": _guard("CPU temperature",
                                 lambda: probes.cpu_temp_c(self._thermal_root), None),
            "temp_c": temp, "humidity_pct": humidity,
            "ups": ups.value, "ups_charge_pct": charge,
            "printer": _guard("printer", self.printer_state, Printer.UNKNOWN).value,
        }
        readings = checked(raw)
        with self._lock:
            self._readings, self._read_at = readings, self._clock()
        return readings

    def _read_ups(self) -> tuple[Ups, float | None]:
        if self.nut_address is None:
            return Ups.UNKNOWN, None
        return nut.read_ups(self.nut_address)

    def printer_state(self) -> Printer:
        if self.printer is None:
            return Printer.UNKNOWN
        return self.printer.status()

    def status(self) -> dict[str, Any]:
        """The last readings and heartbeat, for GET /status."""
        with self._lock:
            readings, read_at, beat = self._readings, self._read_at, self._beat
        return {
            "device_id": self.config.device_id,
            "readings": readings.as_dict() if readings else None,
            "read_at": read_at.isoformat() if read_at else None,
            "heartbeat": None if beat is None else {
                "ok": beat.ok, "at": beat.at.isoformat(), "raised": list(beat.raised),
                "cleared": list(beat.cleared), "error": beat.error},
            "heartbeat_s": self.period_s,
        }

    # --- heartbeat ------------------------------------------------------------------

    def beat(self) -> BeatOutcome:
        """Read, send, and take the server's period; never raises for the server."""
        readings = self.read()
        try:
            answer = self.server.heartbeat(self.config.device_id, self.config.secret,
                                           readings.as_dict())
        except ServerError as exc:
            log.warning("heartbeat not taken (sent again in %d s): %s", self.period_s, exc)
            outcome = BeatOutcome(False, self._clock(), error=str(exc)[:200])
        else:
            self._take_period(answer.get("config"))
            outcome = BeatOutcome(True, self._clock(), tuple(answer.get("raised") or ()),
                                  tuple(answer.get("cleared") or ()))
            if outcome.raised:
                log.warning("the server raised alarms: %s", ", ".join(outcome.raised))
        with self._lock:
            self._beat = outcome
        return outcome

    def _take_period(self, config: object) -> None:
        period = config.get("heartbeat_s") if isinstance(config, dict) else None
        if isinstance(period, int) and not isinstance(period, bool):
            self.period_s = min(max(period, MIN_PERIOD_S), MAX_PERIOD_S)

    def run(self, stop: threading.Event) -> None:
        """Heartbeats until `stop` is set: the first at once, then one per period."""
        while not stop.is_set():
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - the loop outlives any one bad round
                log.exception("heartbeat round failed; next in %d s", self.period_s)
            stop.wait(self.period_s)

    # --- receipts ------------------------------------------------------------------

    def print_receipt(self, order_no: str) -> Printer:
        """Fetch the order's receipt and print it. ServerError when the server has none
        (yet) or cannot be reached; PrinterUnavailable with no usable printer;
        PrintRefused when the printer cannot print (nothing of the receipt is sent)."""
        if self.printer is None:
            raise PrinterUnavailable("no printer is configured")
        receipt = self.server.receipt(order_no)
        job = render_receipt(receipt, timezone=self.config.timezone,
                             line_chars=self.config.line_chars)
        try:
            state = self.printer.print_job(job)
        except PrintRefused as exc:
            self._note_printer(exc.state)
            raise
        self._note_printer(state)
        return state

    def _note_printer(self, state: Printer) -> None:
        """What a print job found out about the printer goes into the last readings."""
        with self._lock:
            if self._readings is not None:
                self._readings = replace(self._readings, printer=state)


def _guard(what: str, read: Callable[[], T], fallback: T) -> T:
    """`read()`, or `fallback` when it raises: the probes end in drivers and libraries
    (pyusb, pyserial, the kernel's sysfs) whose every error we cannot list, and one
    reading must never cost the heartbeat."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - logged with its traceback, reading dropped
        log.exception("reading the %s failed", what)
        return fallback


def checked(raw: dict[str, Any]) -> Readings:
    """The readings, without those the server would refuse as impossible (a broken
    sensor must not cost the heartbeat, and with it the UPS and printer readings)."""
    values = dict(raw)
    for _ in range(len(OPTIONAL_READINGS) + 1):
        try:
            return parse_readings(values)
        except InvalidReading as exc:
            name = exc.params.get("name")
            if name not in OPTIONAL_READINGS:
                raise
            log.warning("dropped an impossible reading %s=%r", name, values[name])
            values[str(name)] = None
    return parse_readings(values)
