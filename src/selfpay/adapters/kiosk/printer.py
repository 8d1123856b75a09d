"""The receipt printer: an ESC/POS printer reached through python-escpos 3.1.

Addresses (the config's "printer"):

    tcp://192.168.1.50:9100  or  192.168.1.50[:9100]    a network printer (raw port 9100)
    usb:0x0416:0x5011                                   USB vendor:product (pip: pyusb)
    serial:/dev/ttyS0  or  serial:COM3@9600             a serial port (pip: pyserial)
    file:/dev/usb/lp0                                   a device file (no status read-back)
    win32:<printer name>                                a Windows printer queue (pywin32)

State comes from the printer's real-time status (DLE EOT n: the printer answers at once,
even mid-job, one byte whose bits 1 and 4 are always set and bits 0 and 7 clear):

    n = 2 (offline cause)   bit 2 cover open, bit 5 stopped at paper end
    n = 4 (paper sensor)    bits 2-3 paper near its end, bits 5-6 paper out

No answer within the timeout (or no connection) is `offline`; an answer that is not a
status byte is `unknown`; a printer that cannot answer at all (file, Windows queue)
is `unknown` too, and is printed to blindly. python-escpos's own `paper_status()` is
not used: it takes no answer for "paper adequate".

A job is sent on the connection its status was read on, and only when the printer can
print it (ok, paper low, or unknown), so a printer out of paper never receives half a
receipt that it would print when someone refills it.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from selfpay.domain.devices import Printer

log = logging.getLogger(__name__)

DLE_EOT = b"\x10\x04"
OFFLINE_CAUSE, PAPER_SENSOR = 2, 4
STATUS_FIXED_MASK, STATUS_FIXED_BITS = 0x93, 0x12  # bits 0,1,4,7: 0,1,1,0 in every answer
COVER_OPEN_BIT, STOPPED_PAPER_END_BIT = 0x04, 0x20  # in the offline-cause answer
PAPER_NEAR_END_BITS, PAPER_END_BITS = 0x0C, 0x60  # in the paper-sensor answer
TIMEOUT_S = 3.0
CANNOT_PRINT = frozenset({Printer.OFFLINE, Printer.PAPER_OUT, Printer.COVER_OPEN})


class PrinterUnavailable(Exception):
    """No printer is configured, its address is malformed, or python-escpos (the
    `kiosk` extra) or the driver its connection needs is not installed."""


class PrintRefused(Exception):
    """The printer cannot print now (`state`: offline, paper out, cover open)."""

    def __init__(self, state: Printer) -> None:
        super().__init__(f"printer {state.value}")
        self.state = state


def decode_status(offline_cause: bytes, paper: bytes) -> Printer:
    """The state from the answers to DLE EOT 2 and DLE EOT 4 (the last byte of each)."""
    if not offline_cause or not paper:
        return Printer.OFFLINE
    cause, sensor = offline_cause[-1], paper[-1]
    if any(b & STATUS_FIXED_MASK != STATUS_FIXED_BITS for b in (cause, sensor)):
        return Printer.UNKNOWN
    if cause & COVER_OPEN_BIT:
        return Printer.COVER_OPEN
    if sensor & PAPER_END_BITS or cause & STOPPED_PAPER_END_BIT:
        return Printer.PAPER_OUT
    if sensor & PAPER_NEAR_END_BITS:
        return Printer.PAPER_LOW
    return Printer.OK


def opener(address: str, *, timeout_s: float = TIMEOUT_S) -> Callable[[], Any]:
    """A function that connects a python-escpos printer for `address` (module docstring)
    and returns it, or raises OSError / escpos's Error when it cannot. PrinterUnavailable
    at once for a bad address or a missing library."""
    try:
        from escpos import printer as escpos_printer
    except ImportError as exc:
        raise PrinterUnavailable("python-escpos is not installed: pip install "
                                 "'selfpay[kiosk]'") from exc
    text = address.strip()
    kind, sep, rest = text.partition(":")
    if not text:
        raise PrinterUnavailable("no printer is configured")
    needs = {"usb": (escpos_printer.Usb, "pyusb"), "serial": (escpos_printer.Serial, "pyserial"),
             "win32": (escpos_printer.Win32Raw, "pywin32")}.get(kind)
    if sep and needs is not None and not needs[0].is_usable():
        raise PrinterUnavailable(f"a {kind} printer needs {needs[1]}: pip install {needs[1]}")
    if kind == "usb" and sep:
        vendor, _, product = rest.partition(":")
        try:
            ids = int(vendor, 16), int(product, 16)
        except ValueError as exc:
            raise PrinterUnavailable(f"not a USB address (usb:VID:PID): {address!r}") from exc
        return lambda: _opened(escpos_printer.Usb(*ids, timeout=int(timeout_s * 1000)))
    if kind == "serial" and sep:
        device, _, baud = rest.partition("@")
        if baud and not baud.isdigit():
            raise PrinterUnavailable(f"not a serial address (serial:DEVICE[@BAUD]): "
                                     f"{address!r}")
        return lambda: _opened(escpos_printer.Serial(devfile=device,
                                                     baudrate=int(baud or 9600),
                                                     timeout=timeout_s))
    if kind == "file" and sep:
        return lambda: _opened(escpos_printer.File(devfile=rest))
    if kind == "win32" and sep:
        return lambda: _opened(escpos_printer.Win32Raw(printer_name=rest))
    host_port = text.removeprefix("tcp://").rstrip("/")
    host, _, port = host_port.rpartition(":") if ":" in host_port else (host_port, "", "")
    if not host or (port and not port.isdigit()):
        raise PrinterUnavailable(f"not a printer address: {address!r}")

    def network() -> Any:
        # Connected here, not by Network.open(): in python-escpos 3.1 that leaves the
        # socket of a refused connection open (a ResourceWarning per heartbeat while
        # the printer is off); create_connection closes it.
        sock = socket.create_connection((host, int(port or 9100)), timeout=timeout_s)
        device = escpos_printer.Network(host, port=int(port or 9100), timeout=timeout_s)
        device.device = sock
        return device

    return network


def _opened(device: Any) -> Any:
    device.open()
    return device


class EscposPrinter:
    """One printer, one connection at a time (many network printers take only one)."""

    def __init__(self, address: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.address = address
        self._make = opener(address, timeout_s=timeout_s)
        self._lock = threading.Lock()

    def status(self) -> Printer:
        with self._lock:
            device = self._connect()
            if device is None:
                return Printer.OFFLINE
            try:
                return self._query(device)
            finally:
                _close(device)

    def print_job(self, job: bytes) -> Printer:
        """Send `job` if the printer can print it; its state then (ok, paper low or
        unknown). PrintRefused when it cannot, or when the connection breaks mid-job."""
        with self._lock:
            device = self._connect()
            if device is None:
                raise PrintRefused(Printer.OFFLINE)
            try:
                state = self._query(device)
                if state in CANNOT_PRINT:
                    raise PrintRefused(state)
                try:
                    device._raw(job)  # the bytes of render_receipt(), as they are
                except (OSError, _escpos_error()) as exc:
                    log.warning("printer %s: the job broke off: %s", self.address, exc)
                    raise PrintRefused(Printer.OFFLINE) from exc
                return state
            finally:
                _close(device)

    def _connect(self) -> Any:
        try:
            return self._make()
        except (OSError, _escpos_error()) as exc:
            log.info("printer %s: no connection: %s", self.address, exc)
            return None

    def _query(self, device: Any) -> Printer:
        try:
            cause = device.query_status(DLE_EOT + bytes([OFFLINE_CAUSE]))
            paper = device.query_status(DLE_EOT + bytes([PAPER_SENSOR])) if cause else b""
        except NotImplementedError:  # a file or a print queue: nothing to read back
            return Printer.UNKNOWN
        except (OSError, _escpos_error()) as exc:  # includes the read timeout
            log.info("printer %s: no status answer: %s", self.address, exc)
            return Printer.OFFLINE
        return decode_status(bytes(cause or b""), bytes(paper or b""))


def _escpos_error() -> type[Exception]:
    from escpos.exceptions import Error

    error: type[Exception] = Error
    return error


def _close(device: Any) -> None:
    try:
        device.close()
    except (OSError, _escpos_error()) as exc:
        log.debug("printer: close: %s", exc)
