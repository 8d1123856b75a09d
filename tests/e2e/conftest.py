"""A real server for browser tests: uvicorn in a thread on a free 127.0.0.1 port, on a
migrated temporary data dir with demo data and an admin user; and Debian's chromium
driven by Python playwright (never `playwright install`)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.entrypoints.web.app import create_app
from selfpay.services import users
from selfpay.services.demo import seed_demo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-pass-1"


@dataclass
class LiveServer:
    url: str
    container: Container
    data_dir: Path
    username: str = ADMIN_USER
    password: str = ADMIN_PASSWORD


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("live")
    # The codes point at this very server, so a decoded payload opens its public page.
    settings = load_settings(data_dir=data_dir, public_base_url=url, env="development")
    upgrade(settings.sqlalchemy_url)
    container = bootstrap(settings)
    with container.uow_factory() as uow:
        seed_demo(uow, accounts_per_biller=20, today=dt.date(2026, 11, 15))
    users.create_user(container.uow_factory(), container.hasher, username=ADMIN_USER,
                      password=ADMIN_PASSWORD, role="admin",
                      now=dt.datetime.now(dt.UTC))
    config = uvicorn.Config(create_app(container=container), log_level="warning", ws="none",
                            lifespan="off", http="h11", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(url=url, container=container, data_dir=data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        container.close()


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("SELFPAY_REQUIRE_SERVERS") == "1":
            pytest.fail(reason + " and SELFPAY_REQUIRE_SERVERS=1")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def playwright_session(chromium_path: Path) -> Iterator[Any]:
    """The one Playwright of the run: a second sync_playwright() while this one runs is
    refused ("Sync API inside the asyncio loop"), so modules that need a browser with
    flags of their own launch it from this."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_session: Any, chromium_path: Path) -> Iterator[object]:
    launched = playwright_session.chromium.launch(executable_path=str(chromium_path),
                                                  headless=True, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()
