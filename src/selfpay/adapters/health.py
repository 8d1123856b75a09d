"""Readiness checks for /readyz: the database, Redis and the broker, each answered fast.

The database is asked over a connection of its own (no pool): a web process whose pool is
busy is still ready, and a probe must never wait behind customer requests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool

from selfpay.adapters.db.engine import make_engine

TIMEOUT_S = 2


class Health:
    def __init__(self, *, database_url: str, app_engine: Engine, redis_url: str,
                 billing: Any) -> None:
        if app_engine.dialect.name == "postgresql":
            self._engine = make_engine(database_url, poolclass=NullPool,
                                       connect_args={"connect_timeout": TIMEOUT_S})
            self._owns = True
        else:
            self._engine, self._owns = app_engine, False
        self._redis: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S / 4,
                                               socket_connect_timeout=TIMEOUT_S / 4)
        self._billing = billing

    def check(self) -> dict[str, str]:
        """'ok' or why not, by part; only the parts this site uses."""
        parts: dict[str, str] = {}
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            parts["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            parts["database"] = f"unavailable: {type(exc).__name__}"
        if self._redis is not None:
            try:
                self._redis.ping()
                parts["redis"] = "ok"
            except Exception as exc:  # noqa: BLE001
                parts["redis"] = f"unavailable: {type(exc).__name__}"
        broker_ready = getattr(self._billing, "broker_ready", None)
        if callable(broker_ready):
            parts["broker"] = "ok" if broker_ready() else "not connected"
        return parts

    def close(self) -> None:
        if self._owns:
            self._engine.dispose()
        if self._redis is not None:
            self._redis.close()
