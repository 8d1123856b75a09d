"""Two billers, two billing systems, for real: ELEC on the default route (the built-in
ledger in the app's database), GAS on an `http` route to a third-party platform (a local
HTTP/JSON billing service on a ledger of its own, checking its bearer token)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import select

from fakes import FakeChannel
from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.billing.routing import RoutingBillingSystem
from selfpay.adapters.db import tables as t
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.entrypoints.web.app import create_app
from selfpay.services.payments import CreateOrder
from selfpay.services.ports import BillingSystemError
from support.billing_http import billing_service, serving
from support.web import BASE, TestClient

TOKEN = "gas-platform-token-7d1e"
ELEC = ("ELEC", "0012345678")
GAS = ("GAS", "G-000123")


def _database(path: Path) -> tuple[str, SqlAlchemyUnitOfWork]:
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    return url, SqlAlchemyUnitOfWork(engine)


@dataclass
class Platform:
    url: str
    ledger: LedgerBillingSystem
    posted: list[str]


@pytest.fixture
def gas_platform(tmp_path: Path) -> Iterator[Platform]:
    """The gas company's platform: its own database, GAS G-000123 owes ¥88.00."""
    url, uow = _database(tmp_path / "gas-platform.db")
    with uow:
        uow.billers.add(Biller("GAS", "燃气费", "Gas"))
        uow.accounts.upsert_many([Account(*GAS, "赵六", "13700000000")])
        uow.bills.add_many([Bill(None, *GAS, "2026-10", 8800, dt.date(2026, 11, 30))])
        uow.commit()
    engine = make_engine(url)
    ledger = LedgerBillingSystem(lambda: SqlAlchemyUnitOfWork(engine), engine=engine)
    posted: list[str] = []
    with serving(billing_service(ledger, TOKEN, posted)) as base:
        yield Platform(base, ledger, posted)
    ledger.close()


def _site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: Platform, *,
          gas_route: str = "gas-platform", token: str | None = TOKEN
          ) -> tuple[Container, FakeChannel]:
    """The DMZ's database holds the registry (GAS on `gas_route`) and, as the default
    route's built-in ledger, the electricity accounts: ELEC 0012345678 owes ¥150.50."""
    url, uow = _database(tmp_path / "selfpay.db")
    with uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.billers.add(Biller("GAS", "燃气费", "Gas", route=gas_route))
        uow.accounts.upsert_many([Account(*ELEC, "张三丰", "13812345678")])
        uow.bills.add_many([
            Bill(None, *ELEC, "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, *ELEC, "2026-10", 5050, dt.date(2026, 11, 30)),
        ])
        uow.commit()
    if token is None:
        monkeypatch.delenv("GAS_PLATFORM_TOKEN", raising=False)
    else:
        monkeypatch.setenv("GAS_PLATFORM_TOKEN", token)
    settings = load_settings(
        data_dir=tmp_path, public_base_url=BASE, env="development", database_url=url,
        run_worker=False, billing_routes={"gas-platform": {
            "adapter": "http", "url": platform.url, "token_env": "GAS_PLATFORM_TOKEN",
            "timeout_s": 10}})
    channel = FakeChannel()
    return bootstrap(settings, channels={"fake": channel}), channel


def _pay(container: Container, channel: FakeChannel, biller: str, account: str) -> str:
    view = container.payments.create_order(CreateOrder(
        idempotency_key=f"key-{biller}", biller=biller, account=account, channel="fake"))
    container.payments.handle_notification("fake", *channel.notification(view.order_no))
    return view.order_no


def _ledger_payments(uow: SqlAlchemyUnitOfWork) -> list[tuple[str, str, int]]:
    with uow:
        rows = uow.connection.execute(select(
            t.ledger_payments.c.payment_id, t.ledger_payments.c.biller,
            t.ledger_payments.c.amount_fen)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_each_biller_is_paid_into_its_own_billing_system_exactly_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gas_platform: Platform,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    container, channel = _site(tmp_path, monkeypatch, gas_platform)
    try:
        assert isinstance(container.billing, RoutingBillingSystem)
        assert container.billing.account_summary(*GAS).total_due_fen == 8800
        assert container.billing.account_summary(*ELEC).total_due_fen == 15050

        elec_order = _pay(container, channel, *ELEC)
        gas_order = _pay(container, channel, *GAS)
        assert container.payments.dispatch_postings() == 2
        # the channel repeats its notifications; the outbox has nothing more to send
        for order_no in (elec_order, gas_order):
            container.payments.handle_notification("fake", *channel.notification(order_no))
        assert container.payments.dispatch_postings() == 0

        assert container.payments.get(elec_order).status == "posted"
        assert container.payments.get(gas_order).status == "posted"
        assert _ledger_payments(container.uow_factory()) == [(elec_order, "ELEC", 15050)]
        platform_db = gas_platform.ledger._uow_factory()  # type: ignore[attr-defined]
        assert _ledger_payments(platform_db) == [(gas_order, "GAS", 8800)]
        assert gas_platform.posted == [gas_order]
        assert container.billing.account_summary(*GAS).total_due_fen == 0
        assert container.billing.account_summary(*ELEC).total_due_fen == 0
    finally:
        container.close()
    gas_client = container.billing._routes["gas-platform"]._client  # type: ignore[attr-defined]
    assert gas_client.is_closed
    assert TOKEN not in caplog.text and TOKEN not in repr(container.billing)


def test_a_wrong_token_is_refused_by_the_platform_and_other_billers_carry_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gas_platform: Platform) -> None:
    container, channel = _site(tmp_path, monkeypatch, gas_platform, token="wrong")
    try:
        with pytest.raises(BillingSystemError, match="HTTP 401"):
            container.billing.account_summary(*GAS)
        assert container.billing.account_summary(*ELEC).total_due_fen == 15050
    finally:
        container.close()
    assert gas_platform.posted == []


def test_a_missing_token_variable_stops_the_start_naming_route_and_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gas_platform: Platform) -> None:
    with pytest.raises(ValueError, match="'gas-platform'.*GAS_PLATFORM_TOKEN.*not set"):
        _site(tmp_path, monkeypatch, gas_platform, token=None)


def test_a_biller_on_a_route_that_is_not_configured_is_logged_and_the_site_stays_ready(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gas_platform: Platform,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    container, _ = _site(tmp_path, monkeypatch, gas_platform, gas_route="gas-co")
    try:
        assert any("'gas-co' is not configured" in r.getMessage() and "GAS" in r.getMessage()
                   for r in caplog.records if r.name == "selfpay.bootstrap")
        with pytest.raises(BillingSystemError, match="'gas-co' of biller GAS"):
            container.billing.account_summary(*GAS)
        assert container.billing.account_summary(*ELEC).total_due_fen == 15050
        with TestClient(create_app(container=container)) as client:
            assert client.get("/readyz").status_code == 200
        # fixed at run time: the route reaches this process within the TTL
        with container.uow_factory() as uow:
            gas = uow.billers.get("GAS")
            assert gas is not None
            uow.billers.save(replace(gas, route="gas-platform"))
            uow.commit()
        container.billing._read_at -= 31  # type: ignore[attr-defined]  # 31 s later
        assert container.billing.account_summary(*GAS).total_due_fen == 8800
    finally:
        container.close()


def test_without_routes_the_billing_system_is_the_default_one_as_before(
        tmp_path: Path) -> None:
    url, uow = _database(tmp_path / "selfpay.db")
    with uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.commit()
    container = bootstrap(load_settings(data_dir=tmp_path, database_url=url,
                                        env="development", run_worker=False))
    try:
        assert isinstance(container.billing, LedgerBillingSystem)
    finally:
        container.close()
