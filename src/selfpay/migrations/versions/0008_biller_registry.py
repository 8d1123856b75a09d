"""The biller registry: kind, icon, display order, elderly mode, kiosk steps, billing
route and enabled, per biller. Billers with the demo's well-known codes get their kind.
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS: tuple[sa.Column[object], ...] = (
    sa.Column("kind", sa.String(length=16), server_default="other", nullable=False),
    sa.Column("icon", sa.String(length=32), server_default="", nullable=False),
    sa.Column("display_order", sa.Integer(), server_default="100", nullable=False),
    sa.Column("elderly", sa.Boolean(), server_default="0", nullable=False),
    sa.Column("steps", sa.String(length=256), server_default="", nullable=False),
    sa.Column("route", sa.String(length=32), server_default="default", nullable=False),
    sa.Column("enabled", sa.Boolean(), server_default="1", nullable=False),
)
_KNOWN = {"ELEC": ("electricity", 10, True), "WATER": ("water", 20, True),
          "GAS": ("gas", 30, False), "PROP": ("property", 40, True),
          "PARK": ("parking", 50, False)}


def upgrade() -> None:
    # Plain ALTER TABLE: `billers` is referenced by accounts, so no batch copy (see 0005).
    for column in _COLUMNS:
        op.add_column("billers", column)
    billers = sa.table("billers", sa.column("code"), sa.column("kind"),
                       sa.column("display_order"), sa.column("elderly", sa.Boolean()))
    for code, (kind, order, elderly) in _KNOWN.items():
        op.execute(sa.update(billers).where(billers.c.code == code)
                   .values(kind=kind, display_order=order, elderly=elderly))


def downgrade() -> None:
    for column in reversed(_COLUMNS):
        op.drop_column("billers", column.name)
