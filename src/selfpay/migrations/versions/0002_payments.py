"""Payments: orders and their history, the posting outbox, received notifications,
messages, SMS look-up codes, payers' accounts, and the sandbox channel's own books.
Mirrors the payments section of selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("to", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=256), server_default="", nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index("ix_messages_status", "messages", ["status", "id"], unique=False)
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("notification_id", sa.String(length=128), server_default="", nullable=False),
        sa.Column("order_no", sa.String(length=32), server_default="", nullable=False),
        sa.Column("outcome", sa.String(length=16), server_default="", nullable=False),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_dedupe", "notifications", ["channel", "notification_id"], unique=False
    )
    op.create_index("ix_notifications_order", "notifications", ["order_no"], unique=False)
    op.create_table(
        "orders",
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("biller", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("bill_ids", sa.JSON(), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("channel_txn_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("payer", sa.String(length=128), server_default="", nullable=False),
        sa.Column("email", sa.String(length=254), server_default="", nullable=False),
        sa.Column("action", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('created', 'pending', 'paid', 'posted', 'closed', 'failed')",
            name=op.f("ck_orders_status_known"),
        ),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_orders_amount_positive")),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_orders")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_orders_idempotency_key")),
    )
    op.create_index("ix_orders_account", "orders", ["biller", "account"], unique=False)
    op.create_index("ix_orders_status_updated", "orders", ["status", "updated_at"], unique=False)
    op.create_table(
        "payer_accounts",
        sa.Column("payer", sa.String(length=128), nullable=False),
        sa.Column("biller", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=32), nullable=False),
        sa.Column("last_paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("payer", "biller", "account", name=op.f("pk_payer_accounts")),
    )
    op.create_table(
        "sandbox_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acked", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("last_status", sa.String(length=64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sandbox_deliveries")),
    )
    op.create_index(
        "ix_sandbox_deliveries_due", "sandbox_deliveries", ["acked", "due_at"], unique=False
    )
    op.create_table(
        "sandbox_trades",
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(length=128), server_default="", nullable=False),
        sa.Column("notify_url", sa.Text(), nullable=False),
        sa.Column("return_url", sa.Text(), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("txn_id", sa.String(length=64), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_sandbox_trades")),
    )
    op.create_table(
        "sms_codes",
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("used", sa.Boolean(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_sms_codes")),
    )
    op.create_table(
        "order_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("from_status", sa.String(length=16), server_default="", nullable=False),
        sa.Column("to_status", sa.String(length=16), server_default="", nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_no"], ["orders.order_no"], name=op.f("fk_order_events_order_no_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
    )
    op.create_index("ix_order_events_order", "order_events", ["order_no", "id"], unique=False)
    op.create_table(
        "postings",
        sa.Column("order_no", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'stuck')", name=op.f("ck_postings_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["order_no"], ["orders.order_no"], name=op.f("fk_postings_order_no_orders")
        ),
        sa.PrimaryKeyConstraint("order_no", name=op.f("pk_postings")),
    )
    op.create_index("ix_postings_due", "postings", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_postings_due", table_name="postings")
    op.drop_table("postings")
    op.drop_index("ix_order_events_order", table_name="order_events")
    op.drop_table("order_events")
    op.drop_table("sms_codes")
    op.drop_table("sandbox_trades")
    op.drop_index("ix_sandbox_deliveries_due", table_name="sandbox_deliveries")
    op.drop_table("sandbox_deliveries")
    op.drop_table("payer_accounts")
    op.drop_index("ix_orders_status_updated", table_name="orders")
    op.drop_index("ix_orders_account", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_notifications_order", table_name="notifications")
    op.drop_index("ix_notifications_dedupe", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_messages_status", table_name="messages")
    op.drop_table("messages")
