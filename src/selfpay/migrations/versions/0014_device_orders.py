"""device_orders: which kiosk each kiosk order came from, and its reported outcome.
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_orders",
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=8), server_default="", nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"],
                                name=op.f("fk_device_orders_device_id_devices")),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_device_orders")),
    )
    op.create_index("ix_device_orders_device", "device_orders", ["device_id", "created_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_orders_device", table_name="device_orders")
    op.drop_table("device_orders")
