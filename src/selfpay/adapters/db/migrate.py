"""Run the Alembic migrations from code: no alembic.ini is needed at runtime."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from selfpay.adapters.db.engine import make_engine, normalize_url

SCRIPT_LOCATION = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url:
        # configparser interpolation: a literal % in a password must be doubled
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


# Any constant: every selfpay process that migrates takes this lock first.
MIGRATION_LOCK = 0x5E1F9A7


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to `revision`. Safe when several processes start at once on a fresh
    database (serve, worker and agent all migrate): on PostgreSQL they take turns under
    an advisory lock, and the later ones find the schema done."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                             {"key": MIGRATION_LOCK})
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
