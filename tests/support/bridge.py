"""The test brokers (scripts/brokers.sh) and the settings that reach them.

ActiveMQ listens for STOMP on 61614 (stomp+ssl on 61615) with the credentials written to
.brokers/activemq/credentials.env; RabbitMQ's STOMP plugin on 61613, vhost `selfpay`. A
closed port skips the test with the reason, unless SELFPAY_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
AMQ = ROOT / ".brokers" / "activemq"
BROKERS_SH = ROOT / "scripts" / "brokers.sh"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def unavailable(reason: str) -> None:
    if os.environ.get("SELFPAY_REQUIRE_SERVERS") == "1":
        pytest.fail(reason + " (SELFPAY_REQUIRE_SERVERS=1)")
    pytest.skip(reason)


def start_brokers() -> dict[str, str]:
    """Start the test brokers once (idempotent), and read ActiveMQ's credentials."""
    if not (port_open(61614) and port_open(61613)):
        subprocess.run([str(BROKERS_SH), "start"], timeout=240, check=False,
                       stdout=subprocess.DEVNULL)
    creds: dict[str, str] = {}
    if (AMQ / "credentials.env").exists():
        for line in (AMQ / "credentials.env").read_text().splitlines():
            k, _, v = line.partition("=")
            creds[k] = v
    return creds


def transport_overrides(kind: str, brokers: dict[str, str], dmz_url: str) -> dict[str, object]:
    """Settings of the DMZ side for `kind` (embedded | activemq | rabbitmq); skips (or
    fails) when the broker's port is closed."""
    if kind == "embedded":
        return {"transport": "embedded", "database_url": dmz_url}
    if kind == "activemq":
        if not port_open(61614):
            unavailable("ActiveMQ STOMP port 61614 closed (scripts/brokers.sh start)")
        return {"transport": "stomp", "broker_kind": "activemq",
                "broker_urls": "stomp://127.0.0.1:61614",
                "broker_user": brokers.get("SELFPAY_BROKER_USER", ""),
                "broker_password": brokers.get("SELFPAY_BROKER_PASSWORD", "")}
    if not port_open(61613):
        unavailable("RabbitMQ STOMP port 61613 closed (scripts/brokers.sh start)")
    return {"transport": "stomp", "broker_kind": "rabbitmq",
            "broker_urls": "stomp://127.0.0.1:61613", "broker_user": "guest",
            "broker_password": "guest", "broker_vhost": "selfpay"}


def interrupt_broker(kind: str) -> None:
    """ActiveMQ: restart the broker. RabbitMQ (the machine's server, slow to restart):
    drop every connection of the test vhost, which is what clients see of a restart."""
    if kind == "activemq":
        subprocess.run([str(BROKERS_SH), "restart", "activemq"], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
    else:
        subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "-p", "selfpay",
                        "selfpay test: dropped connection"], check=True, timeout=60)


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run(make()) on a thread of its own: in the whole suite the main thread
    already runs an event loop (Playwright's sync API, from the browser tests)."""
    box: dict[str, object] = {}

    def main() -> None:
        async def wrapped() -> T:
            return await make()

        try:
            box["value"] = asyncio.run(wrapped())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=main)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]
