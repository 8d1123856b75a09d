"""posting_routes: the billing route each payment was first sent by, kept for its retries.
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "posting_routes",
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("route", sa.String(length=32), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_posting_routes")),
    )


def downgrade() -> None:
    op.drop_table("posting_routes")
