"""Debian's Network UPS Tools for tests: a self-contained upsd + dummy-ups instance on a
free 127.0.0.1 port, started and stopped through scripts/nut.sh.

The simulated UPS `kiosk` reads its variables from <dir>/kiosk.dev; `set()` rewrites
that file and dummy-ups serves the new values within a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "nut.sh"
DAEMONS = (Path("/lib/nut/upsd"), Path("/lib/nut/dummy-ups"))


class NutUnavailable(Exception):
    """NUT is not installed, or the instance did not start (the reason)."""


def installed() -> bool:
    return all(p.exists() for p in DAEMONS)


@dataclass
class NutInstance:
    directory: Path
    port: int
    ups: str = "kiosk"

    @property
    def address(self) -> str:
        return f"{self.ups}@127.0.0.1:{self.port}"

    def set(self, status: str, *, charge: int = 100) -> None:
        """What the simulated UPS reports from now on (replaced whole: never half read)."""
        dev = self.directory / f"{self.ups}.dev"
        tmp = dev.with_suffix(".tmp")
        tmp.write_text(f"ups.status: {status}\nbattery.charge: {charge}\n"
                       "battery.runtime: 1800\ninput.voltage: 228.0\n")
        os.replace(tmp, dev)


@contextmanager
def nut_instance() -> Iterator[NutInstance]:
    """Start an instance of our own (scripts/nut.sh installs NUT first when it is missing
    and we are root); NutUnavailable with the script's words when it cannot."""
    # A short path: the driver's socket lives under it (108 bytes at most on Linux).
    directory = Path(tempfile.mkdtemp(prefix="selfpay-nut-"))
    port = free_port()
    env = {**os.environ, "SELFPAY_NUT_DIR": str(directory), "SELFPAY_NUT_PORT": str(port)}
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True,
                             text=True, timeout=300)
    try:
        if started.returncode != 0:
            raise NutUnavailable(f"scripts/nut.sh start failed: {started.stderr.strip()}")
        yield NutInstance(directory, port)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True,
                       timeout=60)
        shutil.rmtree(directory, ignore_errors=True)
