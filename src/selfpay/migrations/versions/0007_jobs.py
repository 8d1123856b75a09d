"""Background jobs (QR batches) in the database instead of one process's memory, and an
index for an account's latest payments (the code page's history).
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=256), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('running', 'done', 'failed')",
                           name=op.f("ck_jobs_state_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_updated", "jobs", ["updated_at"])
    op.create_index("ix_orders_account_paid", "orders", ["biller", "account", "paid_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_account_paid", table_name="orders")
    op.drop_index("ix_jobs_updated", table_name="jobs")
    op.drop_table("jobs")
