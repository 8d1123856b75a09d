"""`selfpay demo`'s kiosk: one terminal, `demo-kiosk` at 演示小区 offering every biller,
registered once and enrolled in-process on each start, so /kiosk/demo-kiosk works at
once and the console's devices page has something to show.

There is no `selfpay kiosk-agent` in the demo, so a thread stands in for it: it signs a
heartbeat with the demo kiosk's secret every HEARTBEAT_S seconds (healthy readings)
through the same `Devices.heartbeat` the agent's API calls, which keeps the kiosk online.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from selfpay.domain.devices import HEARTBEAT_S, InvalidDevice
from selfpay.domain.errors import DomainError
from selfpay.services.devices import (
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Devices,
    HeartbeatResult,
    signature,
)

log = logging.getLogger(__name__)

DEMO_DEVICE = "demo-kiosk"
DEMO_READINGS = {"app_version": "demo", "uptime_s": 0, "disk_free_pct": 72.0,
                 "cpu_temp_c": 46.0, "temp_c": 24.0, "humidity_pct": 45.0, "ups": "online",
                 "ups_charge_pct": 100.0, "printer": "ok"}


def enrol_demo_kiosk(devices: Devices, *, actor: str = "demo") -> str:
    """Register `demo-kiosk` (first start only) and enrol it with a fresh code; returns
    its new secret (the earlier one stops working, a revoked demo kiosk comes back)."""
    try:
        devices.register(actor=actor, device_id=DEMO_DEVICE, name="演示终端 / Demo kiosk",
                         site="演示小区", location="物业服务中心大厅")
    except InvalidDevice as exc:
        if exc.key != "err.device.exists":
            raise
    code = devices.issue_enrolment_code(DEMO_DEVICE, actor=actor)
    return devices.enroll(DEMO_DEVICE, code)


def beat(devices: Devices, secret: str, *, started: float,
         device_id: str = DEMO_DEVICE) -> HeartbeatResult:
    """One signed heartbeat, as the agent would send it."""
    now = time.time()
    body = json.dumps({"readings": {**DEMO_READINGS,
                                    "uptime_s": int(now - started)}}).encode()
    stamp = str(int(now))
    return devices.heartbeat(device_id, {
        HEADER_TIMESTAMP: stamp, HEADER_SIGNATURE: signature(secret, device_id, stamp, body)},
        body)


class DemoHeartbeat:
    """A daemon thread beating for the demo kiosk until stop()."""

    def __init__(self, devices: Devices, secret: str, every_s: float = HEARTBEAT_S) -> None:
        self._devices = devices
        self._secret = secret
        self._every = every_s
        self._stop = threading.Event()
        self._started = time.time()
        self._thread = threading.Thread(target=self._run, name="demo-kiosk-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():  # never started with --no-serve
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                beat(self._devices, self._secret, started=self._started)
            except DomainError as exc:  # revoked in the console: stop, as the agent would
                log.warning("demo kiosk heartbeat refused (%s); no more heartbeats", exc)
                return
            except Exception:  # a locked SQLite file for a moment: try at the next beat
                log.exception("demo kiosk heartbeat failed")
            if self._stop.wait(self._every):
                return
