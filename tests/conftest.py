"""Shared fixtures: a migrated database on SQLite and on PostgreSQL.

`db_url` runs each database test twice: on a SQLite file, and on PostgreSQL in a fresh
schema of a database created for the session (SELFPAY_TEST_POSTGRES_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test, is used only to create it). Without
a reachable server the postgres half is skipped, unless SELFPAY_REQUIRE_SERVERS=1.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, make_url

from selfpay.adapters.db.engine import make_engine, normalize_url
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.domain.accounts import Account, Bill, Biller

REDIS_URL = os.environ.get("SELFPAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "SELFPAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


def _servers_required() -> bool:
    return os.environ.get("SELFPAY_REQUIRE_SERVERS") == "1"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of our own on the test server, dropped at the end of the session."""
    import psycopg

    admin = make_url(normalize_url(POSTGRES_URL)).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable at {admin.render_as_string()}: {exc}"
        if _servers_required():
            pytest.fail(reason + " (SELFPAY_REQUIRE_SERVERS=1)")
        pytest.skip(reason)
    name = f"selfpay_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(normalize_url(POSTGRES_URL)).set(database=name).render_as_string(
            hide_password=False
        )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'selfpay.db'}"
    import psycopg

    base = request.getfixturevalue("postgres_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    request.addfinalizer(drop)
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def uow_factory(engine: Engine) -> Callable[[], SqlAlchemyUnitOfWork]:
    return lambda: SqlAlchemyUnitOfWork(engine)


BILLERS = (
    Biller("ELEC", "电费", "Electricity"),
    Biller("WATER", "水费", "Water"),
    Biller("GAS", "燃气费", "Gas"),
    Biller("PROP", "物业费", "Property fee"),
    Biller("PARK", "停车费", "Parking"),
)


@dataclass(frozen=True)
class Seeded:
    """What `seeded` put in the database; bill ids by (biller, account, period)."""

    bill_ids: dict[tuple[str, str, str], int]


@pytest.fixture
def seeded(uow_factory: Callable[[], SqlAlchemyUnitOfWork]) -> Seeded:
    """Five billers; ELEC 0012345678 (张三丰) owes 2026-09 ¥100.00 and 2026-10 ¥50.50;
    ELEC 0099999999 (李四) owes nothing; WATER W-001 (王五) owes 2026-10 ¥30.00 and
    has ¥5.00 prepaid."""
    with uow_factory() as uow:
        for biller in BILLERS:
            uow.billers.add(biller)
        uow.accounts.upsert_many([
            Account("ELEC", "0012345678", "张三丰", "13812345678", "幸福路 1 号"),
            Account("ELEC", "0099999999", "李四", "13900000000"),
            Account("WATER", "W-001", "王五", "", "", balance_fen=500),
        ])
        uow.bills.add_many([
            Bill(None, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30)),
            Bill(None, "ELEC", "0012345678", "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, "WATER", "W-001", "2026-10", 3000, None),
        ])
        ids = {
            (b.biller, b.account, b.period): b.id or 0
            for biller, account in [("ELEC", "0012345678"), ("WATER", "W-001")]
            for b in uow.bills.open_for(biller, account)
        }
        uow.commit()
    return Seeded(ids)


@pytest.fixture
def redis_url() -> str:
    """The test Redis (SELFPAY_TEST_REDIS_URL, default database 15 on 127.0.0.1); skipped
    when unreachable, unless SELFPAY_REQUIRE_SERVERS=1."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc}"
        if _servers_required():
            pytest.fail(reason + " (SELFPAY_REQUIRE_SERVERS=1)")
        pytest.skip(reason)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis namespace of this test's own, emptied afterwards."""
    name = f"selfpay-test-{uuid.uuid4().hex[:12]}"
    yield name
    if "redis_url" in request.fixturenames:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(f"{name}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
