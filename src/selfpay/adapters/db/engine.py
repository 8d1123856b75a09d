"""Build the SQLAlchemy Engine for SQLite (embedded, demo) or PostgreSQL (production).

SQLite: the pysqlite driver's own transaction handling is switched off and every
transaction starts with BEGIN IMMEDIATE, so the write lock is taken up front. That is
what gives `for_update=True` its meaning on SQLite (there is no SELECT ... FOR UPDATE),
and it avoids SQLITE_BUSY_SNAPSHOT when a deferred reader later tries to write in WAL
mode. A connection opened with the execution option ``selfpay_read_only=True`` gets a
plain (deferred) BEGIN instead, for pages that only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url

READ_ONLY = "selfpay_read_only"
BUSY_TIMEOUT_MS = 5000


def normalize_url(url: str) -> str:
    """postgresql:// and postgres:// mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


POOL_KEYS = ("pool_size", "max_overflow", "pool_timeout")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """`pool_size`, `max_overflow` and `pool_timeout` (SELFPAY_DB_POOL_*) size the
    PostgreSQL pool of this process; SQLite ignores them."""
    url = normalize_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        for key in POOL_KEYS:
            kwargs.pop(key, None)
        return _sqlite_engine(url, **kwargs)
    if backend == "postgresql" and "poolclass" in kwargs:  # e.g. NullPool: no pool to size
        for key in POOL_KEYS:
            kwargs.pop(key, None)
        return create_engine(url, **kwargs)
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        # Sync routes run on up to 40 threads, plus the worker: a request that waits
        # longer than pool_timeout for a connection fails fast (503) instead of piling up.
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_timeout", 10.0)
        # psycopg prepares a statement after 5 runs and PostgreSQL then may switch to a
        # generic plan; for `number IN (500 params)` right after a bulk import (no
        # statistics yet) that plan is a sequential scan, 50x slower. Plan each time.
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("prepare_threshold", None)
        kwargs["connect_args"] = connect_args
        return create_engine(url, **kwargs)
    raise ValueError(f"unsupported database URL (use sqlite:/// or postgresql://): {url!r}")


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    database = make_url(url).database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module; _on_begin below emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
