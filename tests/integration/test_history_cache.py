"""The code page's recent payments through a real Redis, on SQLite and PostgreSQL: a
second read comes from the cache, a posting drops the entry, entries expire, and a Redis
that is gone costs nothing but the cache.

Redis: SELFPAY_TEST_REDIS_URL (default redis://127.0.0.1:6379/15); without it these
tests are skipped, unless SELFPAY_REQUIRE_SERVERS=1 (then they fail). Each test uses a
key prefix of its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import event, update

from fakes import FakeChannel
from selfpay.adapters.db import tables as t
from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.entrypoints.web.app import create_app
from selfpay.services.history import history_key
from selfpay.services.payments import CreateOrder
from support.web import BASE, TestClient, code_path

ACCOUNT = ("ELEC", "0012345678")


def build(tmp_path: Path, db_url: str, **settings: Any) -> tuple[Container, FakeChannel]:
    s = load_settings(data_dir=tmp_path, public_base_url=BASE, env="development",
                      database_url=db_url, **settings)
    upgrade(s.sqlalchemy_url)
    channel = FakeChannel()
    container = bootstrap(s, channels={"fake": channel})
    with container.uow_factory() as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.accounts.upsert_many([Account(*ACCOUNT, "张三丰", "13812345678")])
        uow.bills.add_many([
            Bill(None, *ACCOUNT, "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, *ACCOUNT, "2026-10", 5050, dt.date(2026, 11, 30)),
        ])
        uow.commit()
    return container, channel


def pay_and_post(container: Container, channel: FakeChannel, key: str,
                 bill_ids: tuple[int, ...] = ()) -> str:
    view = container.payments.create_order(CreateOrder(
        idempotency_key=key, biller=ACCOUNT[0], account=ACCOUNT[1], channel="fake",
        bill_ids=bill_ids))
    container.payments.handle_notification("fake", *channel.notification(view.order_no))
    assert container.payments.dispatch_postings() == 1
    return view.order_no


def open_bill(container: Container, period: str) -> int:
    with container.uow_factory() as uow:
        return next(b.id or 0 for b in uow.bills.open_for(*ACCOUNT) if b.period == period)


@pytest.fixture
def site(tmp_path: Path, db_url: str, redis_url: str,
         prefix: str) -> Iterator[tuple[Container, FakeChannel]]:
    container, channel = build(tmp_path, db_url, redis_url=redis_url, redis_prefix=prefix)
    yield container, channel
    container.close()


def test_a_second_read_comes_from_redis_and_a_posting_drops_it(
        site: tuple[Container, FakeChannel], redis_url: str, prefix: str) -> None:
    container, channel = site
    first = pay_and_post(container, channel, "k1", (open_bill(container, "2026-09"),))
    queries: list[str] = []

    @event.listens_for(container.engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "paid_at IS NOT NULL" in statement:
            queries.append(statement)

    assert [p.order_no for p in container.history.recent(*ACCOUNT)] == [first]
    assert len(queries) == 1
    # behind the cache's back: the cached answer is what the second read gets
    with container.uow_factory() as uow:
        uow.connection.execute(update(t.orders).where(t.orders.c.order_no == first)
                               .values(amount_fen=1))
        uow.commit()
    [cached] = container.history.recent(*ACCOUNT)
    assert cached.amount_fen == 10000 and len(queries) == 1

    client = redis.Redis.from_url(redis_url)
    key = f"{prefix}:{history_key(*ACCOUNT)}"
    try:
        assert client.exists(key)
        assert 1790 <= client.ttl(key) <= 1800  # expires after SELFPAY_HISTORY_CACHE_S

        second = pay_and_post(container, channel, "k2", (open_bill(container, "2026-10"),))
        assert not client.exists(key)  # the posting dropped it
        latest = container.history.recent(*ACCOUNT)
        assert [p.order_no for p in latest] == [second, first]
        assert [p.amount_fen for p in latest] == [5050, 1]  # read afresh
        assert len(queries) == 2
    finally:
        client.close()


def test_an_entry_expires_after_its_ttl(tmp_path: Path, db_url: str, redis_url: str,
                                        prefix: str) -> None:
    container, channel = build(tmp_path, db_url, redis_url=redis_url, redis_prefix=prefix,
                               history_cache_s=1)
    try:
        first = pay_and_post(container, channel, "k1")
        assert [p.order_no for p in container.history.recent(*ACCOUNT)] == [first]
        with container.uow_factory() as uow:
            uow.connection.execute(update(t.orders).values(amount_fen=7))
            uow.commit()
        assert container.history.recent(*ACCOUNT)[0].amount_fen == 15050
        client = redis.Redis.from_url(redis_url)
        key = f"{prefix}:{history_key(*ACCOUNT)}"
        client.pexpire(key, 50)  # rather than sleeping out the second
        deadline = dt.datetime.now() + dt.timedelta(seconds=5)
        while client.exists(key) and dt.datetime.now() < deadline:
            pass
        client.close()
        assert container.history.recent(*ACCOUNT)[0].amount_fen == 7
    finally:
        container.close()


def test_the_code_page_lists_recent_payments(site: tuple[Container, FakeChannel]) -> None:
    container, channel = site
    order_no = pay_and_post(container, channel, "k1", (open_bill(container, "2026-09"),))
    with container.uow_factory() as uow:  # 20:30 UTC is 04:30 the next day in Shanghai
        uow.connection.execute(update(t.orders).values(
            paid_at=dt.datetime(2026, 11, 1, 20, 30, tzinfo=dt.UTC)))
        uow.commit()
    client = TestClient(create_app(container=container))
    page = client.get(code_path(container, *ACCOUNT))
    assert page.status_code == 200
    assert "近期缴费" in page.text and "2026-11-02 04:30" in page.text
    assert f'href="/receipt/{order_no}"' in page.text and "¥100.00" in page.text
    assert "¥50.50" in page.text  # still owed
    en = client.get(code_path(container, *ACCOUNT), params={"lang": "en"})
    assert "Recent payments" in en.text and "近期缴费" not in en.text


def test_no_history_no_list(site: tuple[Container, FakeChannel]) -> None:
    container, _ = site
    page = TestClient(create_app(container=container)).get(code_path(container, *ACCOUNT))
    assert page.status_code == 200 and "近期缴费" not in page.text


def test_with_redis_gone_the_code_page_still_shows_payments(
        tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    container, channel = build(tmp_path, db_url, redis_url="redis://127.0.0.1:1/0")
    try:
        order_no = pay_and_post(container, channel, "k1")  # its invalidation fails: logged
        page = TestClient(create_app(container=container)).get(code_path(container, *ACCOUNT))
        assert page.status_code == 200
        assert f'href="/receipt/{order_no}"' in page.text and "¥150.50" in page.text
        assert "history cache unavailable" in caplog.text
    finally:
        container.close()



def test_recent_payments_are_read_off_the_account_paid_index(engine: Any) -> None:
    from sqlalchemy import text

    from selfpay.adapters.db.payment_repositories import SqlAlchemyOrderRepository

    seen: list[tuple[str, Any]] = []
    with engine.connect() as conn:
        def grab(c: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
            seen.append((statement, params))

        event.listen(conn, "before_cursor_execute", grab)
        assert SqlAlchemyOrderRepository(conn).recent_paid(*ACCOUNT) == []
        event.remove(conn, "before_cursor_execute", grab)
        [(sql, params)] = [(q, p) for q, p in seen if "FROM orders" in q]
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET enable_seqscan = off"))  # a tiny table: show the choice
            rows = conn.exec_driver_sql("EXPLAIN " + sql, params)
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
        plan = "\n".join(str(r[-1]) for r in rows)
    assert "ix_orders_account_paid" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # no sort step
