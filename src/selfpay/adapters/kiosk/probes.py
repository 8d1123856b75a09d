"""What the terminal can read about itself: uptime, free disk, CPU temperature, and the
cabinet's temperature and humidity from a sensor plug-in.

A sensor plug-in is a package that declares an entry point in the group
`selfpay.sensors`, naming a function (or an object with a `read` method) that returns
`{"temp_c": 24.5, "humidity_pct": 40.0}` (either may be missing or None):

    [project.entry-points."selfpay.sensors"]
    cabinet = "acme_kiosk.sensors:read"

With none installed both readings are None. When several are, the first by name that
answers is taken. A plug-in that raises or answers nonsense costs its readings (logged),
never the heartbeat: it is someone else's code. It is called once per heartbeat, in the
heartbeat's thread, so it should answer within a second or two.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SENSOR_GROUP = "selfpay.sensors"
THERMAL = Path("/sys/class/thermal")


def uptime_s(proc_uptime: Path = Path("/proc/uptime")) -> int:
    """Seconds since boot: /proc/uptime on Linux; elsewhere the monotonic clock, which
    counts from boot on Windows (GetTickCount64) and Linux."""
    try:
        return int(float(proc_uptime.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return max(0, int(time.monotonic()))


def disk_free_pct(path: Path) -> float | None:
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        log.warning("disk usage of %s: %s", path, exc)
        return None
    return round(100.0 * usage.free / usage.total, 1) if usage.total else None


def cpu_temp_c(root: Path = THERMAL) -> float | None:
    """The hottest thermal zone (millidegrees in thermal_zone*/temp), or None where there
    are none (virtual machines, Windows)."""
    found = []
    for zone in sorted(root.glob("thermal_zone*/temp")):
        try:
            found.append(int(zone.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return round(max(found), 1) if found else None


def load_sensors(found: Iterable[EntryPoint] | None = None) -> list[tuple[str, Callable[[], Any]]]:
    """The sensor plug-ins' read functions, by name; one that does not load is logged
    and left out."""
    eps = sorted(entry_points(group=SENSOR_GROUP) if found is None else found,
                 key=lambda ep: ep.name)
    readers: list[tuple[str, Callable[[], Any]]] = []
    for ep in eps:
        try:
            target = ep.load()
        except Exception:  # noqa: BLE001 - a broken plug-in must not stop the agent
            log.exception("sensor plug-in %s (%s) does not load", ep.name, ep.value)
            continue
        read = getattr(target, "read", target)
        if callable(read):
            readers.append((ep.name, read))
        else:
            log.error("sensor plug-in %s (%s) has no read()", ep.name, ep.value)
    return readers


def read_sensors(readers: list[tuple[str, Callable[[], Any]]]
                 ) -> tuple[float | None, float | None]:
    """(temp_c, humidity_pct) from the first plug-in that answers."""
    for name, read in readers:
        try:
            answer = read()
        except Exception:  # noqa: BLE001 - someone else's code (module docstring)
            log.exception("sensor plug-in %s failed", name)
            continue
        if not isinstance(answer, dict):
            log.warning("sensor plug-in %s answered %r, not a dict", name, answer)
            continue
        return _number(answer.get("temp_c")), _number(answer.get("humidity_pct"))
    return None, None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return None
    return float(value)
