"""The DMZ/intranet bridge through each transport: embedded (a table), ActiveMQ and
RabbitMQ (STOMP), with the built-in ledger behind the agent.

The brokers are started by scripts/brokers.sh (ActiveMQ under .brokers/, RabbitMQ's
STOMP plugin on the machine's server). A closed broker port skips its tests with the
reason, unless SELFPAY_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import asyncio
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
from pathlib import Path

import pytest

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.bridge import build_billing, build_transport_factory
from selfpay.adapters.bridge.agent import BridgeAgent
from selfpay.adapters.bridge.client import BridgeBillingSystem, LoopThread
from selfpay.adapters.bridge.stomp import StompTransport, tls_context
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.config import Settings
from selfpay.domain.accounts import PaymentPosting
from selfpay.domain.errors import AccountNotFound
from selfpay.services.bridge_ports import Transport, TransportError
from selfpay.services.ports import BillingSystemError
from support.bridge import (
    AMQ,
    interrupt_broker,
    port_open,
    run_async,
    transport_overrides,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = ("ELEC", "0012345678")  # owes 2026-09 ¥100.00 and 2026-10 ¥50.50 (conftest)

pytestmark = pytest.mark.slow


_port_open = port_open
_unavailable = unavailable
_spec = transport_overrides


class Bridge:
    """Settings of one test's bridge (unique queue names) and helpers to build both
    sides of it. The DMZ side's settings hold no ledger database and no billing URL."""

    def __init__(self, kind: str, overrides: dict[str, object], tmp: Path) -> None:
        self.kind = kind
        self.tag = uuid.uuid4().hex[:10]
        self.settings = Settings(
            data_dir=tmp / "dmz", bridge_request_queue=f"selfpay.test.{self.tag}.requests",
            bridge_timeout_s=2.0, bridge_posting_timeout_s=3.0, **overrides)  # type: ignore[arg-type]
        self.dmz_engine = None
        if kind == "embedded":
            upgrade(self.settings.sqlalchemy_url)
            self.dmz_engine = make_engine(self.settings.sqlalchemy_url)
        self.closers: list[Callable[[], None]] = []

    def transport(self) -> Transport:
        """What `selfpay agent` would build from the same settings (TLS included)."""
        return build_transport_factory(self.settings, engine=self.dmz_engine)()

    def client(self, **kw: object) -> BridgeBillingSystem:
        settings = self.settings.model_copy(update=kw)
        c = build_billing(settings, engine=self.dmz_engine)
        assert isinstance(c, BridgeBillingSystem)
        self.closers.append(c.close)
        return c

    def agent(self, billing: object) -> AgentRunner:
        a = AgentRunner(self.transport, billing, self.settings.bridge_request_queue)
        self.closers.append(a.stop)
        return a

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        if self.dmz_engine is not None:
            self.dmz_engine.dispose()


class AgentRunner:
    """A BridgeAgent on an event loop thread of its own."""

    def __init__(self, factory: Callable[[], Transport], billing: object, queue: str) -> None:
        self._loop = LoopThread("test-agent")
        self._stop: asyncio.Event | None = None
        self.agent: BridgeAgent | None = None
        started = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            async with factory() as transport:
                self.agent = BridgeAgent(transport, billing, request_queue=queue,  # type: ignore[arg-type]
                                         prefetch=4, workers=2)
                started.set()
                await self.agent.run(self._stop)

        self._done = self._loop.submit(main())
        assert started.wait(15), "agent did not start"

    def stop(self) -> None:
        if self._loop.loop.is_closed():
            return
        if self._stop is not None:
            self._loop.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._done.result(15)
        finally:
            self._loop.close()


def _bridge(kind: str, brokers: dict[str, str], tmp_path: Path) -> Iterator[Bridge]:
    dmz_url = f"sqlite:///{tmp_path / 'dmz.db'}"
    b = Bridge(kind, _spec(kind, brokers, dmz_url), tmp_path)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(params=["embedded", "activemq", "rabbitmq"])
def bridge(request: pytest.FixtureRequest, brokers: dict[str, str],
           tmp_path: Path) -> Iterator[Bridge]:
    yield from _bridge(request.param, brokers, tmp_path)


@pytest.fixture(params=["activemq", "rabbitmq"])
def broker_bridge(request: pytest.FixtureRequest, brokers: dict[str, str],
                  tmp_path: Path) -> Iterator[Bridge]:
    """Only the real brokers: for tests that kill or restart what sits between the zones
    (embedded has no broker, and its agent shares the web tier's database)."""
    yield from _bridge(request.param, brokers, tmp_path)


@pytest.fixture
def ledger(uow_factory, seeded) -> LedgerBillingSystem:  # noqa: ARG001 - seeded: data
    return LedgerBillingSystem(uow_factory)


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The intranet's ledger: SQLite here (the ledger itself is tested on both)."""
    return f"sqlite:///{tmp_path_factory.mktemp('intranet') / 'ledger.db'}"


def _posting(pid: str, amount: int = 10000) -> PaymentPosting:
    return PaymentPosting(pid, *ACCOUNT, amount_fen=amount, channel="sandbox",
                          channel_txn_id=f"T-{pid}", paid_at=dt.datetime.now(dt.UTC))


def _ledger_payments(uow_factory, pid: str) -> int:
    with uow_factory() as uow:
        return 1 if uow.payments.get(pid) is not None else 0


def _post_until_done(client: BridgeBillingSystem, posting: PaymentPosting,
                     *, give_up_s: float = 40.0):
    """What the DMZ outbox does: retry with the same payment id until acknowledged."""
    end = time.monotonic() + give_up_s
    while True:
        try:
            return client.post_payment(posting)
        except BillingSystemError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def _summary_when_back(client: BridgeBillingSystem, *, give_up_s: float = 30.0):
    """A query right after a broker restart may time out while the client reconnects;
    what matters is that it answers again, and with what."""
    end = time.monotonic() + give_up_s
    while True:
        try:
            return client.account_summary(*ACCOUNT)
        except BillingSystemError:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


# --- request / reply -------------------------------------------------------------------

def test_a_query_and_a_posting_go_through_the_bridge(bridge: Bridge, ledger) -> None:
    bridge.agent(ledger)
    client = bridge.client()
    summary = client.account_summary(*ACCOUNT)
    assert summary.masked_name == "张*丰"
    assert summary.total_due_fen == 15050
    result = client.post_payment(_posting("P-1", 15050))
    assert not result.duplicate and result.surplus_fen == 0
    assert client.post_payment(_posting("P-1", 15050)).duplicate
    assert client.account_summary(*ACCOUNT).total_due_fen == 0
    with pytest.raises(AccountNotFound):
        client.account_summary("ELEC", "404")
    assert client.ping() < 2.0


def test_replies_find_their_own_requester_with_several_instances_and_agents(
        bridge: Bridge, ledger) -> None:
    for _ in range(2):
        bridge.agent(ledger)
    clients = [bridge.client() for _ in range(3)]
    accounts = [ACCOUNT, ("WATER", "W-001"), ("ELEC", "0099999999")]
    due = {a: clients[0].account_summary(*a).total_due_fen for a in accounts}

    def ask(i: int) -> tuple[tuple[str, str], str, int]:
        acct = accounts[i % 3]
        s = clients[i % len(clients)].account_summary(*acct)
        return acct, f"{s.biller}/{s.account}", s.total_due_fen

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(ask, range(90)))
    for acct, got, fen in answers:
        assert got == f"{acct[0]}/{acct[1]}" and fen == due[acct]
    assert sum(c.requester.late_replies for c in clients) == 0


def test_an_async_billing_adapter_is_awaited_on_the_agents_loop(bridge: Bridge, ledger,
                                                                uow_factory) -> None:
    ran_on: set[str] = set()

    class AsyncLedger:  # an AsyncBillingSystem, as the HTTP adapter's async twin is
        async def account_summary(self, biller, account):
            ran_on.add(threading.current_thread().name)
            await asyncio.sleep(0)
            return ledger.account_summary(biller, account)

        async def post_payment(self, posting):
            ran_on.add(threading.current_thread().name)
            return ledger.post_payment(posting)

    runner = bridge.agent(AsyncLedger())
    client = bridge.client()
    assert client.account_summary(*ACCOUNT).total_due_fen == 15050
    assert not client.post_payment(_posting("P-async", 15050)).duplicate
    assert client.post_payment(_posting("P-async", 15050)).duplicate
    with pytest.raises(AccountNotFound):
        client.account_summary("ELEC", "404")
    assert _ledger_payments(uow_factory, "P-async") == 1
    assert runner.agent is not None and runner.agent.awaits_billing
    assert ran_on == {"test-agent"}  # the agent's loop thread: no worker thread hop


# --- outages ---------------------------------------------------------------------------

def test_a_query_times_out_quickly_and_the_cache_covers_a_short_outage(
        bridge: Bridge, ledger) -> None:
    agent = bridge.agent(ledger)
    client = bridge.client(bridge_timeout_s=1.0)
    fresh = client.account_summary(*ACCOUNT)
    agent.stop()
    t0 = time.monotonic()
    assert client.account_summary(*ACCOUNT) == fresh  # from the DMZ cache
    assert time.monotonic() - t0 < 2.5
    assert client.cached_at(*ACCOUNT) is not None
    # a page may show that copy; pricing an order may not (bills may be settled since)
    with pytest.raises(BillingSystemError, match="billing system unavailable, try later"):
        client.account_summary(*ACCOUNT, fresh=True)
    t0 = time.monotonic()
    with pytest.raises(BillingSystemError, match="billing system unavailable, try later"):
        client.account_summary("WATER", "W-001")  # never asked before: nothing to show
    assert time.monotonic() - t0 < 2.5
    # a posting for the account invalidates what the cache remembers of it
    with pytest.raises(BillingSystemError):
        client.post_payment(_posting("P-outage"))
    assert client.cached_at(*ACCOUNT) is None


def test_a_failing_billing_system_is_retried_by_the_caller_and_posts_once(
        bridge: Bridge, ledger, uow_factory) -> None:
    class Flaky:
        failures = 3

        def account_summary(self, biller, account, *, fresh=False):
            return ledger.account_summary(biller, account, fresh=fresh)

        def post_payment(self, posting):
            if self.failures:
                self.failures -= 1
                raise BillingSystemError("CIS database is down")
            return ledger.post_payment(posting)

    bridge.agent(Flaky())
    client = bridge.client()
    with pytest.raises(BillingSystemError, match="unavailable"):
        client.post_payment(_posting("P-flaky"))
    result = _post_until_done(client, _posting("P-flaky"))
    assert result.payment_id == "P-flaky"
    assert _ledger_payments(uow_factory, "P-flaky") == 1


def test_an_agent_killed_mid_stream_and_restarted_loses_and_doubles_nothing(
        broker_bridge: Bridge, seeded, db_url, uow_factory) -> None:  # noqa: ARG001
    bridge = broker_bridge
    env = {**os.environ, "SELFPAY_DATABASE_URL": db_url, "SELFPAY_DATA_DIR": str(
        Path(db_url.removeprefix("sqlite:///")).parent)}
    s = bridge.settings
    env.update({
        "SELFPAY_TRANSPORT": s.transport, "SELFPAY_BROKER_KIND": s.broker_kind,
        "SELFPAY_BROKER_URLS": s.broker_urls, "SELFPAY_BROKER_USER": s.broker_user,
        "SELFPAY_BROKER_PASSWORD": s.broker_password.get_secret_value(),
        "SELFPAY_BROKER_VHOST": s.broker_vhost,
        "SELFPAY_BRIDGE_REQUEST_QUEUE": s.bridge_request_queue, "SELFPAY_AGENT_PREFETCH": "4",
    })
    agent_cmd = [sys.executable, "-m", "selfpay.entrypoints.cli", "agent"]
    client = bridge.client()

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(agent_cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    proc = spawn()
    try:
        ids = [f"P-kill-{i}" for i in range(30)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(_post_until_done, client, _posting(pid, 100)) for pid in ids]
            end = time.monotonic() + 30
            while sum(_ledger_payments(uow_factory, p) for p in ids) < 3:
                assert time.monotonic() < end, "the agent posted nothing"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)  # mid-stream: some posted, some in flight
            proc.wait(10)
            time.sleep(0.5)
            proc = spawn()
            results = [f.result() for f in futures]
    finally:
        proc.terminate()
        proc.wait(15)
    assert [r.payment_id for r in results] == ids
    assert sum(_ledger_payments(uow_factory, pid) for pid in ids) == len(ids)
    with uow_factory() as uow:
        assert uow.accounts.get(*ACCOUNT).balance_fen == 0  # 30 × 1.00 went to the bills
        bills = uow.bills.open_for(*ACCOUNT)
    assert sum(b.paid_fen for b in bills) == 3000


def test_the_broker_restarted_or_disconnected_mid_stream_loses_and_doubles_nothing(
        broker_bridge: Bridge, ledger, uow_factory) -> None:
    bridge = broker_bridge
    bridge.agent(ledger)
    client = bridge.client()
    ids = [f"P-broker-{i}" for i in range(10)]

    def outage() -> None:
        time.sleep(0.4)
        interrupt_broker(bridge.kind)

    with ThreadPoolExecutor(max_workers=5) as pool:
        cut = pool.submit(outage)
        futures = [pool.submit(_post_until_done, client, _posting(pid, 100), give_up_s=60)
                   for pid in ids]
        cut.result()
        results = [f.result() for f in futures]
    assert [r.payment_id for r in results] == ids
    assert sum(_ledger_payments(uow_factory, pid) for pid in ids) == len(ids)
    assert _summary_when_back(client).total_due_fen == 15050 - 1000


# --- zones and TLS -----------------------------------------------------------------------

def test_the_dmz_side_is_built_without_any_address_of_the_billing_system(
        bridge: Bridge, ledger) -> None:
    s = bridge.settings
    assert s.billing_http_url == ""
    # the DMZ's database (if any) holds no ledger: the answers come through the agent
    bridge.agent(ledger)
    client = bridge.client()
    assert client.account_summary(*ACCOUNT).total_due_fen == 15050
    if s.transport == "embedded":
        from sqlalchemy import inspect

        assert bridge.dmz_engine is not None
        with bridge.dmz_engine.connect() as conn:
            assert conn.execute(__import__("sqlalchemy").text(
                "select count(*) from accounts")).scalar() == 0
            assert "bridge_messages" in inspect(conn).get_table_names()


TLS_PORTS = {"activemq": 61615, "rabbitmq": 61612}  # scripts/brokers.sh: mutual-TLS STOMP


def _tls_bridge(kind: str, tmp_path: Path, *, user: str, password: str) -> Bridge:
    port = TLS_PORTS[kind]
    if not _port_open(port):
        _unavailable(f"{kind} stomp+ssl port {port} closed (scripts/brokers.sh start)")
    t = AMQ / "tls"  # one test CA signed both brokers' certificates and the client's
    overrides = {
        "transport": "stomp", "broker_kind": kind, "broker_urls": f"stomp+ssl://127.0.0.1:{port}",
        "broker_vhost": "selfpay" if kind == "rabbitmq" else "", "broker_user": user,
        "broker_password": password, "broker_ca_file": str(t / "ca.pem"),
        "broker_cert_file": str(t / "client.pem"), "broker_key_file": str(t / "client.key"),
    }
    return Bridge(kind, overrides, tmp_path)


@pytest.mark.parametrize("kind", ["activemq", "rabbitmq"])
@pytest.mark.parametrize("login", ["password", "certificate"])
def test_mutual_tls_with_a_password_or_the_certificate_as_the_login(
        kind, login, brokers, ledger, tmp_path) -> None:
    """With no user the client certificate is the login: ActiveMQ's JAAS maps its
    subject to a user, RabbitMQ takes its CN (selfpay-client) as the user name."""
    user, password = ("", "")
    if login == "password":
        user, password = ((brokers["SELFPAY_BROKER_USER"], brokers["SELFPAY_BROKER_PASSWORD"])
                          if kind == "activemq" else ("guest", "guest"))
    b = _tls_bridge(kind, tmp_path, user=user, password=password)
    try:
        b.agent(ledger)
        client = b.client()
        assert client.account_summary(*ACCOUNT).total_due_fen == 15050
        assert not client.post_payment(_posting(f"P-tls-{kind}-{login}", 15050)).duplicate
    finally:
        b.close()


def test_activemq_refuses_a_wrong_password_on_the_plain_connector(brokers, tmp_path) -> None:
    if not _port_open(61614):
        _unavailable("ActiveMQ STOMP port 61614 closed (scripts/brokers.sh start)")

    async def attempt() -> None:
        async with StompTransport("stomp://127.0.0.1:61614", kind="activemq",
                                  login=brokers["SELFPAY_BROKER_USER"], passcode="wrong",
                                  connect_timeout_s=2):
            pass

    with pytest.raises(TransportError):
        run_async(attempt)


def test_without_a_client_certificate_rabbitmq_refuses_the_tls_connection(tmp_path) -> None:
    port = TLS_PORTS["rabbitmq"]
    if not _port_open(port):
        _unavailable(f"RabbitMQ stomp+ssl port {port} closed (scripts/brokers.sh start)")
    ctx = tls_context(ca_file=str(AMQ / "tls" / "ca.pem"))  # trusts the broker, shows no cert

    async def attempt() -> None:
        async with StompTransport(f"stomp+ssl://127.0.0.1:{port}", kind="rabbitmq",
                                  login="guest", passcode="guest", vhost="selfpay",
                                  ssl_context=ctx, connect_timeout_s=2):
            pass

    with pytest.raises(TransportError):
        run_async(attempt)
