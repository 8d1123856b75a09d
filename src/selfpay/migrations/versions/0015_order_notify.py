"""orders: a trigger that announces every change of an order (PostgreSQL only), so that a
long-polled status request wakes at once (adapters/db/order_watch.py). SQLite has no
NOTIFY: its status requests look again every second instead.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The notice carries only the order number (public on the customer's own page) and is
    # sent when the updating transaction commits, from whichever process made the change.
    op.execute("""
        CREATE OR REPLACE FUNCTION selfpay_order_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('selfpay_order', NEW.order_no);
            RETURN NULL;
        END $$
    """)
    op.execute("""
        CREATE TRIGGER orders_changed AFTER UPDATE ON orders
        FOR EACH ROW EXECUTE FUNCTION selfpay_order_changed()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS orders_changed ON orders")
    op.execute("DROP FUNCTION IF EXISTS selfpay_order_changed()")
