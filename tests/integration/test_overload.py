"""Past capacity the server answers 503 with Retry-After at once, never queues a request
for long nor leaves anything half-done; health stays fast."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from selfpay.domain.accounts import Account, Bill
from selfpay.entrypoints.web.app import create_app
from support.web import TestClient, build_container, code_path

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def test_a_full_connection_pool_gets_a_quick_503_with_retry_after(db_url: str,
                                                                   tmp_path: Path) -> None:
    container = build_container(
        tmp_path, accounts=[Account("ELEC", "0012345678", "张三丰", "")],
        bills=[Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)],
        database_url=db_url, run_worker=False, db_pool_size=1, db_max_overflow=0,
        db_pool_timeout_s=0.3)
    app = create_app(container=container)
    try:
        with TestClient(app) as client:
            held = container.engine.connect()  # every connection of this process is busy
            try:
                started = time.monotonic()
                api = client.post("/api/v1/orders", headers={"Idempotency-Key": "k1"},
                                  json={"biller": "ELEC", "account": "0012345678",
                                        "channel": "sandbox"})
                page = client.get(code_path(container, "ELEC", "0012345678"))
                health = client.get("/healthz")
                ready = client.get("/readyz")  # a probe has a connection of its own
                took = time.monotonic() - started
            finally:
                held.close()
            assert api.status_code == 503 and api.headers["Retry-After"] == "2"
            assert api.json()["code"] == "overloaded" and api.json()["retryable"] is True
            assert page.status_code == 503 and "系统繁忙" in page.text
            assert page.headers["Retry-After"] == "2"
            assert health.status_code == 200
            assert ready.status_code == 200 and ready.text == "database ok\n"
            assert took < 5, f"waited {took:.1f} s instead of failing fast"

            # nothing was half-done: the same key now makes the order, once
            again = client.post("/api/v1/orders", headers={"Idempotency-Key": "k1"},
                                json={"biller": "ELEC", "account": "0012345678",
                                      "channel": "sandbox"})
            assert again.status_code == 201, again.text
            with container.uow_factory() as uow:
                assert uow.orders.search().total == 1
    finally:
        container.close()


@pytest.mark.parametrize("up", [True, False])
def test_readyz_names_the_part_that_is_missing(db_url: str, tmp_path: Path, up: bool,
                                               request: pytest.FixtureRequest) -> None:
    # nothing listens on port 1: Redis is "down"
    url = request.getfixturevalue("redis_url") if up else "redis://127.0.0.1:1/0"
    status, line = (200, "redis ok") if up else (503, "redis unavailable")
    container = build_container(tmp_path, database_url=db_url, run_worker=False,
                                redis_url=url)
    try:
        with TestClient(create_app(container=container)) as client:
            r = client.get("/readyz")
        assert r.status_code == status and line in r.text and "database ok" in r.text
    finally:
        container.close()


class _Bridge:
    def __init__(self, connected: bool) -> None:
        self.connected = connected

    def broker_ready(self) -> bool:
        return self.connected


@pytest.mark.parametrize("connected", [True, False])
def test_readiness_counts_the_broker_link_of_a_bridged_web_tier(db_url: str,
                                                                connected: bool) -> None:
    from selfpay.adapters.db.engine import make_engine
    from selfpay.adapters.health import Health

    engine = make_engine(db_url)
    health = Health(database_url=db_url, app_engine=engine, redis_url="",
                    billing=_Bridge(connected))
    try:
        assert health.check() == {"database": "ok",
                                  "broker": "ok" if connected else "not connected"}
    finally:
        health.close()
        engine.dispose()


class _SlowChannel:
    """The sandbox, slow to answer a prepay: the customer's phone gives up meanwhile."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.prepays = 0
        self.done = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def create_payment(self, request: object) -> object:
        self.prepays += 1
        time.sleep(0.5)
        try:
            return self._inner.create_payment(request)  # type: ignore[attr-defined]
        finally:
            self.done.set()


def test_a_client_that_hangs_up_mid_request_leaves_a_whole_order_that_its_key_resumes(
        db_url: str, tmp_path: Path) -> None:
    from selfpay.bootstrap import bootstrap
    from support import serve_asgi

    base = build_container(
        tmp_path, accounts=[Account("ELEC", "0012345678", "张三丰", "")],
        bills=[Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)],
        database_url=db_url, run_worker=False)
    slow = _SlowChannel(base.channels["sandbox"])
    container = bootstrap(base.settings, channels={"sandbox": slow})
    body = json.dumps({"biller": "ELEC", "account": "0012345678", "channel": "sandbox"})
    try:
        with serve_asgi(create_app(container=container), lifespan="off") as url:
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall((f"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\n"
                              f"Idempotency-Key: gone-1\r\nContent-Type: application/json\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
                time.sleep(0.1)  # the request is in; the phone loses its signal
            assert slow.done.wait(10)
            time.sleep(0.3)
            with container.uow_factory() as uow:
                [order] = uow.orders.search().items
            assert order.status.value == "pending" and order.attempts == 1
            assert order.amount_fen == 5050 and [x.bill_id for x in order.lines] == list(
                order.bill_ids)

            again = httpx.post(f"{url}/api/v1/orders", content=body, timeout=10,
                               headers={"Idempotency-Key": "gone-1",
                                        "Content-Type": "application/json"})
            assert again.status_code == 200, again.text  # the same order, not a new one
            assert again.json()["order_no"] == order.order_no
            with container.uow_factory() as uow:
                assert uow.orders.search().total == 1
            assert slow.prepays == 1  # and no second prepay at the channel
    finally:
        container.close()
        base.close()
