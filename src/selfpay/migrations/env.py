"""Alembic environment for selfpay.

Run programmatically by selfpay.adapters.db.migrate (which hands over an open
Connection in config.attributes["connection"]), or by developers with the alembic.ini
at the repository root (URL from -x url=..., SELFPAY_DATABASE_URL, or sqlalchemy.url).
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.tables import metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run(connection: Connection) -> None:
    """Run the migrations on `connection`. On SQLite, foreign keys are checked once at
    the end instead of per statement: changing a CHECK constraint there copies the
    table and drops the old one, which its children reference (SQLite's own procedure
    for schema changes). The PRAGMA only takes effect outside a transaction, so it goes
    to the driver's connection before the migration's transaction begins."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite and not connection.in_transaction():
        connection.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            "PRAGMA foreign_keys=OFF")
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if dangling:
                raise RuntimeError(f"migration left rows without their parent: {dangling[:5]}")
    if sqlite and not connection.in_transaction():
        connection.connection.dbapi_connection.execute(  # type: ignore[union-attr]
            "PRAGMA foreign_keys=ON")


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or os.environ.get("SELFPAY_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set SELFPAY_DATABASE_URL")
    return url


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
