"""Dead-lettered postings (status `dead`, dead_at) and work orders: the DMZ's
`work_orders` (ticket + outbox) and the built-in ledger's `ledger_work_orders`.
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_POSTING_STATES = "status IN ('pending', 'done', 'stuck')"
_NEW_POSTING_STATES = "status IN ('pending', 'done', 'stuck', 'dead')"


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a CHECK constraint in place (the table is copied).
    with op.batch_alter_table("postings") as batch:
        batch.add_column(sa.Column("dead_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("ck_postings_status_known"), type_="check")
        batch.create_check_constraint("status_known", _NEW_POSTING_STATES)

    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_no", sa.String(length=32), nullable=False),
        sa.Column("biller", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("contact_phone", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("billing_ref", sa.String(length=64), server_default="", nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'submitted', 'accepted', 'in_progress', 'done', "
            "'rejected', 'failed')",
            name=op.f("ck_work_orders_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_orders")),
        sa.UniqueConstraint("ticket_no", name=op.f("uq_work_orders_ticket_no")),
    )
    op.create_index("ix_work_orders_due", "work_orders", ["status", "next_attempt_at"],
                    unique=False)
    op.create_index("ix_work_orders_account", "work_orders",
                    ["biller", "account", "created_at"], unique=False)

    op.create_table(
        "ledger_work_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_no", sa.String(length=32), nullable=False),
        sa.Column("biller", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("contact_phone", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('accepted', 'in_progress', 'done', 'rejected')",
            name=op.f("ck_ledger_work_orders_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_work_orders")),
        sa.UniqueConstraint("ticket_no", name=op.f("uq_ledger_work_orders_ticket_no")),
    )


def downgrade() -> None:
    op.drop_table("ledger_work_orders")
    op.drop_index("ix_work_orders_account", table_name="work_orders")
    op.drop_index("ix_work_orders_due", table_name="work_orders")
    op.drop_table("work_orders")
    # Dead letters go back to the retried ones: the old constraint knows no `dead`.
    op.execute("UPDATE postings SET status = 'stuck' WHERE status = 'dead'")
    with op.batch_alter_table("postings") as batch:
        batch.drop_constraint(op.f("ck_postings_status_known"), type_="check")
        batch.create_check_constraint("status_known", _OLD_POSTING_STATES)
        batch.drop_column("dead_at")
