"""devices, device_alarms, device_tasks: the kiosk fleet.
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("site", sa.String(length=64), server_default="", nullable=False),
        sa.Column("location", sa.String(length=128), server_default="", nullable=False),
        sa.Column("billers", sa.JSON(), nullable=False),
        sa.Column("elderly_default", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("standby", sa.String(length=32), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("secret_sealed", sa.Text(), server_default="", nullable=False),
        sa.Column("enrol_code_hash", sa.String(length=64), server_default="", nullable=False),
        sa.Column("enrol_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("readings", sa.JSON(), nullable=False),
        sa.Column("payment_failures", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint("state IN ('registered', 'enrolled', 'revoked')",
                           name=op.f("ck_devices_state_known")),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_index("ix_devices_seen", "devices", ["state", "last_seen_at"], unique=False)
    op.create_table(
        "device_alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.String(length=200), server_default="", nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by", sa.String(length=64), server_default="", nullable=False),
        sa.Column("note", sa.String(length=500), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"],
                                name=op.f("fk_device_alarms_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_alarms")),
    )
    op.create_index("ix_device_alarms_open", "device_alarms",
                    ["acked_at", "device_id", "kind"], unique=False)
    op.create_table(
        "device_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_done_by", sa.String(length=64), server_default="", nullable=False),
        sa.Column("last_note", sa.String(length=500), server_default="", nullable=False),
        sa.CheckConstraint("period_days > 0", name=op.f("ck_device_tasks_period_positive")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"],
                                name=op.f("fk_device_tasks_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_tasks")),
    )
    op.create_index("ix_device_tasks_device", "device_tasks", ["device_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_tasks_device", table_name="device_tasks")
    op.drop_table("device_tasks")
    op.drop_index("ix_device_alarms_open", table_name="device_alarms")
    op.drop_table("device_alarms")
    op.drop_index("ix_devices_seen", table_name="devices")
    op.drop_table("devices")
