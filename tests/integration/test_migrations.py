from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from selfpay.adapters.db import migrate
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.tables import metadata


def _diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            # SQLite reflects '' server defaults in a form alembic cannot compare, so
            # server defaults are compared on PostgreSQL only.
            opts = {"compare_type": True,
                    "compare_server_default": conn.dialect.name == "postgresql"}
            return compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_tables_of_tables_py(db_url):
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head() == "0003"
    assert _diff(db_url) == []


def test_upgrade_is_repeatable_and_downgrade_removes_everything(db_url):
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            cfg = migrate.alembic_config(db_url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            conn.commit()
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert _diff(db_url) == []


def test_migrations_ship_inside_the_package():
    assert (migrate.SCRIPT_LOCATION / "env.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0001_initial.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0002_payments.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0003_bridge.py").is_file()
