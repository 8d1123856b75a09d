"""Orders keep the bills as priced (bill_lines) and the masked holder, so that a receipt
needs no search of the bills table; postings and messages get a fencing token (claim).
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE, no batch copy: SQLite (3.35+) adds and drops these columns in
    # place, and copying `orders` would trip the foreign keys that point at it.
    op.add_column("orders", sa.Column("bill_lines", sa.JSON(), server_default="[]",
                                      nullable=False))
    op.add_column("orders", sa.Column("holder", sa.String(length=128), server_default="",
                                      nullable=False))
    _backfill_bill_lines()
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("orders", "bill_lines", server_default=None)  # as tables.py
    op.add_column("postings", sa.Column("claim", sa.Integer(), server_default="0",
                                        nullable=False))
    op.add_column("messages", sa.Column("claim", sa.Integer(), server_default="0",
                                        nullable=False))


def _backfill_bill_lines() -> None:
    """Older orders recorded their bills in the `created` event of their history."""
    conn = op.get_bind()
    events = sa.table("order_events", sa.column("order_no"), sa.column("kind"),
                      sa.column("to_status"), sa.column("detail", sa.JSON()))
    orders = sa.table("orders", sa.column("order_no"), sa.column("bill_lines", sa.JSON()))
    rows = conn.execute(sa.select(events.c.order_no, events.c.detail).where(
        events.c.kind == "state", events.c.to_status == "created"))
    found: dict[str, list[list[object]]] = {}
    for order_no, detail in rows:
        if isinstance(detail, str):
            detail = json.loads(detail)
        found[order_no] = [[int(b[0]), str(b[1]), int(b[2])]
                           for b in (detail or {}).get("bills", [])]
    for order_no, lines in found.items():
        conn.execute(sa.update(orders).where(orders.c.order_no == order_no)
                     .values(bill_lines=lines))


def downgrade() -> None:
    op.drop_column("messages", "claim")
    op.drop_column("postings", "claim")
    op.drop_column("orders", "holder")
    op.drop_column("orders", "bill_lines")
