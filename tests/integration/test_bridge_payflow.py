"""Issue 4's proof end to end: the customer's pay flow over real HTTP through a DMZ web
tier that knows only the broker (or the embedded queue), to an intranet agent whose
ledger lives in a database of its own.

Each test serves `create_app` with uvicorn (payments worker and sandbox sender on),
pays orders with the API and the sandbox's script API (every notification sent twice),
and checks the intranet ledger: one payment per order, the amounts of the orders, the
bills paid. Then the same with the broker restarted, the agent killed, and the billing
system failing, each while several orders are in flight.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.bridge.agent_thread import AgentThread
from selfpay.adapters.bridge.client import BridgeBillingSystem
from selfpay.adapters.bridge.embedded import EmbeddedTransport
from selfpay.adapters.bridge.stomp import StompTransport
from selfpay.adapters.db import tables as t
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import Settings, load_settings
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.app import create_app
from selfpay.entrypoints.web.i18n import translate
from selfpay.services.bridge_ports import Transport
from selfpay.services.ports import BillingSystemError
from support import free_port, serve_asgi
from support.bridge import interrupt_broker, transport_overrides

pytestmark = pytest.mark.slow
ACCOUNTS = [f"00{n:08d}" for n in range(1, 9)]  # ELEC, one open bill each


def _seed_intranet(url: str) -> Engine:
    upgrade(url)
    engine = make_engine(url)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.accounts.upsert_many([Account("ELEC", a, "张三丰", "13812345678")
                                  for a in ACCOUNTS])
        uow.bills.add_many([Bill(None, "ELEC", a, "2026-10", 1000 + 111 * i,
                                 dt.date(2026, 11, 30)) for i, a in enumerate(ACCOUNTS)])
        uow.commit()
    return engine


class Flaky:
    """The ledger, failing its first `failures` postings (the CIS database is down)."""

    def __init__(self, ledger: LedgerBillingSystem, failures: int) -> None:
        self.ledger = ledger
        self.failures = failures
        self.lock = threading.Lock()

    def account_summary(self, biller: str, account: str, *, fresh: bool = False) -> Any:
        return self.ledger.account_summary(biller, account, fresh=fresh)

    def post_payment(self, posting: Any) -> Any:
        with self.lock:
            if self.failures:
                self.failures -= 1
                raise BillingSystemError("CIS database is down")
        return self.ledger.post_payment(posting)


@dataclass
class Zones:
    kind: str
    settings: Settings  # the DMZ's: no ledger database, no billing address
    container: Container
    url: str
    http: httpx.Client
    intranet: Engine
    intranet_url: str
    agents: list[AgentThread] = field(default_factory=list)

    @property
    def billing(self) -> BridgeBillingSystem:
        assert isinstance(self.container.billing, BridgeBillingSystem)
        return self.container.billing

    def transport(self) -> Transport:
        s = self.settings
        if self.kind == "embedded":
            return EmbeddedTransport(self.container.engine)
        return StompTransport(s.broker_urls, kind=s.broker_kind, login=s.broker_user,
                              passcode=s.broker_password.get_secret_value(),
                              vhost=s.broker_vhost)

    def ledger(self) -> LedgerBillingSystem:
        return LedgerBillingSystem(lambda: SqlAlchemyUnitOfWork(self.intranet))

    def start_agent(self, billing: Any = None) -> AgentThread:
        agent = AgentThread(self.transport, billing or self.ledger(),
                            request_queue=self.settings.bridge_request_queue, prefetch=4,
                            workers=2)
        agent.start()
        assert agent.consuming, "the agent did not subscribe"
        self.agents.append(agent)
        return agent

    def agent_process(self) -> Callable[[], subprocess.Popen[bytes]]:
        """`selfpay agent` on the intranet database, as a subprocess factory."""
        s = self.settings
        env = {**os.environ, "SELFPAY_DATABASE_URL": self.intranet_url,
               "SELFPAY_DATA_DIR": str(Path(self.intranet_url.removeprefix("sqlite:///")).parent),
               "SELFPAY_TRANSPORT": s.transport, "SELFPAY_BROKER_KIND": s.broker_kind,
               "SELFPAY_BROKER_URLS": s.broker_urls, "SELFPAY_BROKER_USER": s.broker_user,
               "SELFPAY_BROKER_PASSWORD": s.broker_password.get_secret_value(),
               "SELFPAY_BROKER_VHOST": s.broker_vhost, "SELFPAY_AGENT_PREFETCH": "4",
               "SELFPAY_BRIDGE_REQUEST_QUEUE": s.bridge_request_queue}
        cmd = [sys.executable, "-m", "selfpay.entrypoints.cli", "agent"]
        return lambda: subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)

    # --- the customer's side -------------------------------------------------------------

    def order(self, account: str) -> dict[str, Any]:
        """Look the account up, order its bills, pay in the sandbox (notified twice)."""
        r = self.http.get(f"/api/v1/billers/ELEC/accounts/{account}")
        r.raise_for_status()
        due = r.json()["total_due_fen"]
        key = uuid.uuid4().hex
        body = {"biller": "ELEC", "account": account, "channel": "sandbox"}
        r = self.http.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})
        assert r.status_code in (200, 201), r.text
        order = r.json()
        assert order["amount_fen"] == due
        again = self.http.post("/api/v1/orders", json=body, headers={"Idempotency-Key": key})
        assert again.json()["order_no"] == order["order_no"]
        r = self.http.post(f"/sandbox/api/orders/{order['order_no']}/pay",
                           json={"outcome": "success", "repeat": 2})
        assert r.status_code == 200, r.text
        return order

    def wait_posted(self, orders: list[dict[str, Any]], within_s: float = 40.0) -> None:
        end = time.monotonic() + within_s
        waiting = {o["order_no"] for o in orders}
        while waiting:
            for no in sorted(waiting):
                if self.http.get(f"/api/v1/orders/{no}").json()["status"] == "posted":
                    waiting.discard(no)
            assert time.monotonic() < end, f"not posted within {within_s} s: {waiting}"
            time.sleep(0.1)

    def assert_ledger_matches(self, orders: list[dict[str, Any]]) -> None:
        """One ledger payment per order, of its amount and account; the bills paid."""
        lp, b = t.ledger_payments.c, t.bills.c
        with self.intranet.connect() as conn:
            rows = conn.execute(select(lp.payment_id, lp.account, lp.amount_fen)).all()
            bills = {r.account: (r.status, r.paid_fen, r.amount_fen)
                     for r in conn.execute(select(b.account, b.status, b.paid_fen, b.amount_fen))}
            total = conn.execute(select(func.sum(lp.amount_fen))).scalar()
        assert sorted((r.payment_id, r.account, r.amount_fen) for r in rows) == sorted(
            (o["order_no"], o["account"], o["amount_fen"]) for o in orders)
        assert total == sum(o["amount_fen"] for o in orders)
        for o in orders:
            status, paid, amount = bills[o["account"]]
            assert (status, paid) == ("paid", amount)


@pytest.fixture
def zones(request: pytest.FixtureRequest, brokers: dict[str, str],
          tmp_path: Path) -> Iterator[Zones]:
    kind = request.param
    port = free_port()
    dmz_dir = tmp_path / "dmz"
    settings = load_settings(
        data_dir=dmz_dir, env="development", public_base_url=f"http://127.0.0.1:{port}",
        enabled_channels="sandbox", run_worker=True, worker_interval_s=0.1,
        bridge_request_queue=f"selfpay.test.{uuid.uuid4().hex[:10]}.requests",
        bridge_timeout_s=1.5, bridge_posting_timeout_s=3.0,
        **transport_overrides(kind, brokers, f"sqlite:///{dmz_dir / 'dmz.db'}"),  # type: ignore[arg-type]
    )
    dmz_dir.mkdir(exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    intranet_url = f"sqlite:///{tmp_path / 'intranet.db'}"
    intranet = _seed_intranet(intranet_url)
    container = bootstrap(settings)
    try:
        with serve_asgi(create_app(container=container), lifespan="on", port=port) as url, \
                httpx.Client(base_url=url, timeout=10) as http:
            z = Zones(kind, settings, container, url, http, intranet, intranet_url)
            try:
                yield z
            finally:
                for agent in z.agents:
                    agent.stop()
    finally:
        container.close()
        intranet.dispose()


ALL = pytest.mark.parametrize("zones", ["embedded", "activemq", "rabbitmq"], indirect=True)
BROKERS = pytest.mark.parametrize("zones", ["activemq", "rabbitmq"], indirect=True)


def _pay_all(z: Zones, accounts: list[str]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(z.order, accounts))


@ALL
def test_a_customer_pays_through_the_dmz_and_the_agent_posts_exactly_once(zones: Zones) -> None:
    z = zones
    assert z.settings.billing_http_url == "" and "intranet" not in z.settings.sqlalchemy_url
    with z.container.engine.connect() as conn:  # the DMZ's database holds no ledger
        assert conn.execute(select(func.count()).select_from(t.accounts)).scalar() == 0
    z.start_agent()
    orders = _pay_all(z, ACCOUNTS[:3])
    z.wait_posted(orders)
    z.assert_ledger_matches(orders)
    r = z.http.get(f"/api/v1/billers/ELEC/accounts/{ACCOUNTS[0]}")
    assert r.json()["total_due_fen"] == 0  # the posting invalidated the DMZ's cache
    assert z.billing.requester.late_replies == 0


@BROKERS
def test_the_broker_restarted_mid_stream_loses_and_doubles_no_posting(zones: Zones) -> None:
    z = zones
    z.start_agent()
    orders = _pay_all(z, ACCOUNTS[:2])
    with ThreadPoolExecutor(max_workers=1) as pool:
        cut = pool.submit(interrupt_broker, z.kind)
        # the rest are paid while the broker goes away; their postings wait in the outbox
        for account in ACCOUNTS[2:6]:
            try:
                orders.append(z.order(account))
            except (httpx.HTTPError, AssertionError):
                pass  # the look-up or order met the outage (503): the customer tries again
        cut.result()
    for account in ACCOUNTS[2:6]:
        if not any(o["account"] == account for o in orders):
            orders.append(_retry(lambda a=account: z.order(a)))
    z.wait_posted(orders, within_s=60)
    z.assert_ledger_matches(orders)


@BROKERS
def test_the_agent_killed_and_restarted_loses_and_doubles_no_posting(zones: Zones) -> None:
    z = zones
    spawn = z.agent_process()
    proc = spawn()
    try:
        orders = _pay_all(z, ACCOUNTS[:2])
        z.wait_posted(orders[:1])
        orders += _pay_all(z, ACCOUNTS[2:6])  # in flight when it dies
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = spawn()
        z.wait_posted(orders, within_s=60)
    finally:
        proc.terminate()
        proc.wait(15)
    z.assert_ledger_matches(orders)


@ALL
def test_a_billing_system_failing_for_a_while_posts_every_order_once(zones: Zones) -> None:
    z = zones
    flaky = Flaky(z.ledger(), failures=5)
    z.start_agent(flaky)
    orders = _pay_all(z, ACCOUNTS[:4])
    z.wait_posted(orders, within_s=60)
    assert flaky.failures == 0
    z.assert_ledger_matches(orders)


@ALL
def test_a_query_times_out_with_the_unavailable_page_and_the_cache_covers_a_short_outage(
        zones: Zones) -> None:
    z = zones
    agent = z.start_agent()
    seen, unseen = ACCOUNTS[0], ACCOUNTS[1]
    fresh = z.http.get(f"/api/v1/billers/ELEC/accounts/{seen}")
    assert fresh.status_code == 200
    agent.stop()

    t0 = time.monotonic()
    r = z.http.get(f"/api/v1/billers/ELEC/accounts/{unseen}")
    assert r.status_code == 503 and r.json()["retryable"] is True
    assert time.monotonic() - t0 < 3.0
    page = make_payload(z.container.code_base, z.container.keyring, "ELEC", unseen)
    path = "/" + page.split("/", 3)[3]
    t0 = time.monotonic()
    r = z.http.get(path)
    assert r.status_code == 503 and time.monotonic() - t0 < 3.0
    assert translate("zh-CN", "public.unavailable_text") in r.text  # "... try later"

    t0 = time.monotonic()
    cached = z.http.get(f"/api/v1/billers/ELEC/accounts/{seen}")  # from the DMZ cache
    assert cached.status_code == 200 and cached.json() == fresh.json()
    assert time.monotonic() - t0 < 3.0
    page = make_payload(z.container.code_base, z.container.keyring, "ELEC", seen)
    assert z.http.get("/" + page.split("/", 3)[3]).status_code == 200


def _retry(fn: Callable[[], dict[str, Any]], within_s: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + within_s
    while True:
        try:
            return fn()
        except (httpx.HTTPError, AssertionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.5)
