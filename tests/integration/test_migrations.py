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
    assert migrate.current(db_url) == migrate.head() == "0015"
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
    assert (migrate.SCRIPT_LOCATION / "versions" / "0004_dead_letters_work_orders.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0005_order_lines_claims.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0006_rate_limits.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0007_jobs.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0008_biller_registry.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0009_posting_routes.py").is_file()
    assert (migrate.SCRIPT_LOCATION / "versions" / "0010_staff_sessions.py").is_file()


def test_0004_lets_postings_go_dead_and_downgrade_turns_them_back_to_stuck(db_url):
    import datetime as dt

    from sqlalchemy import insert, select, text

    from selfpay.adapters.db import tables as t

    migrate.upgrade(db_url)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(t.orders).values(
                order_no="SP1", idempotency_key="k", request_hash="h", biller="ELEC",
                account="1", bill_ids=[], amount_fen=1, channel="fake", status="paid",
                action={}, bill_lines=[], created_at=now, updated_at=now, expires_at=now))
            conn.execute(insert(t.postings).values(
                order_no="SP1", created_at=now, next_attempt_at=now, status="dead",
                dead_at=now))
        with engine.connect() as conn:
            cfg = migrate.alembic_config(db_url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003")
            conn.commit()
            assert conn.execute(text("SELECT status FROM postings")).scalar_one() == "stuck"
            assert "work_orders" not in inspect(conn).get_table_names()
        migrate.upgrade(db_url)
        with engine.connect() as conn:
            assert conn.execute(select(t.postings.c.status)).scalar_one() == "stuck"
    finally:
        engine.dispose()
    assert _diff(db_url) == []


def test_0005_gives_old_orders_the_bill_lines_their_history_recorded(db_url):
    """Orders made before 0005 kept their priced bills only in the `created` event; the
    upgrade copies them to orders.bill_lines, which receipts now read."""
    import datetime as dt
    import json

    from sqlalchemy import text

    from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
    from selfpay.services.receipts import load_receipt

    migrate.upgrade(db_url, "0004")
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            for no, bills in (("SPOLD1", [[7, "2026-09", 10000], [8, "2026-10", 5050]]),
                              ("SPOLD2", None)):
                conn.execute(text(
                    "INSERT INTO orders (order_no, idempotency_key, request_hash, biller, "
                    "account, bill_ids, amount_fen, channel, status, action, created_at, "
                    "updated_at, expires_at) VALUES (:no, :no, 'h', 'ELEC', '0012345678', "
                    ":ids, 15050, 'sandbox', 'posted', '{}', :now, :now, :now)"),
                    {"no": no, "ids": json.dumps([7, 8]), "now": now})
                if bills is not None:
                    conn.execute(text(
                        "INSERT INTO order_events (order_no, at, kind, from_status, "
                        "to_status, detail) VALUES (:no, :now, 'state', '', 'created', :d)"),
                        {"no": no, "now": now, "d": json.dumps({"bills": bills})})
        migrate.upgrade(db_url)
        receipt = load_receipt(SqlAlchemyUnitOfWork(engine), "SPOLD1")
        assert receipt is not None
        assert [(x.bill_id, x.period, x.amount_fen) for x in receipt.lines] == [
            (7, "2026-09", 10000), (8, "2026-10", 5050)]
        bare = load_receipt(SqlAlchemyUnitOfWork(engine), "SPOLD2")
        assert bare is not None and bare.lines == ()
    finally:
        engine.dispose()
    assert _diff(db_url) == []



def test_processes_starting_at_once_on_a_fresh_database_migrate_it_once(db_url):
    """serve, worker and agent each migrate at start; started together they must not
    trip over each other's CREATE TABLEs (three processes, as on a real start)."""
    import subprocess
    import sys

    code = "import sys; from selfpay.adapters.db.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert migrate.current(db_url) == migrate.head()
    assert _diff(db_url) == []
