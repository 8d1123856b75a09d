"""orders: `settled` (the channel confirmed a terminal state, or there is none to
confirm), a `flag` for staff (late payment, paid elsewhere, overpayment, amount
mismatch) and the terminal state `disputed`; sandbox trades remember their attempt.
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('created', 'pending', 'paid', 'posted', 'closed', 'failed')"
_NEW = "status IN ('created', 'pending', 'paid', 'posted', 'closed', 'failed', 'disputed')"


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a CHECK constraint in place (the table is copied).
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("settled", sa.Boolean(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("flag", sa.String(length=24), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("ck_orders_status_known"), type_="check")
        batch.create_check_constraint("status_known", _NEW)
    # Failed orders that had a prepay were never closed at the channel: they stay
    # unsettled, so the reconcile loop closes them there (or takes a late payment).
    op.execute("UPDATE orders SET settled = (status IN ('paid', 'posted', 'closed') OR "
               "(status = 'failed' AND attempts = 0))")
    op.create_index("ix_orders_unsettled", "orders", ["settled", "updated_at"], unique=False)
    op.create_index("ix_orders_flagged", "orders", ["flagged_at"], unique=False)
    with op.batch_alter_table("sandbox_trades") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sandbox_trades") as batch:
        batch.drop_column("attempt")
    op.drop_index("ix_orders_flagged", table_name="orders")
    op.drop_index("ix_orders_unsettled", table_name="orders")
    # a disputed order was money taken and not posted: `failed` is the nearest old state
    op.execute("UPDATE orders SET status = 'failed' WHERE status = 'disputed'")
    with op.batch_alter_table("orders") as batch:
        batch.drop_constraint(op.f("ck_orders_status_known"), type_="check")
        batch.create_check_constraint("status_known", _OLD)
        batch.drop_column("flagged_at")
        batch.drop_column("flag")
        batch.drop_column("settled")
