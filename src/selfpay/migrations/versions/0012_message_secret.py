"""messages: `sealed`, the text to send when the body staff see is masked (an SMS code
travels only there, encrypted). Rows written before held SMS codes in clear in `body`:
they are masked here, and the ones still queued are failed (their code is gone; the
customer asks for a new one, as after any expiry).
Mirrors selfpay/adapters/db/tables.py (a test compares them).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# as services/lookup.py masks, frozen here: a migration must not change with the code
_CODE_LIKE = re.compile(r"(?<!\d)\d{4,8}(?!\d)")
_SLICE = 1000
_WITHDRAWN = "code withdrawn at upgrade (0012): it was stored in clear; ask for a new one"

_messages = sa.table(
    "messages",
    sa.column("id", sa.Integer), sa.column("kind", sa.String), sa.column("body", sa.Text),
    sa.column("status", sa.String), sa.column("error", sa.Text),
    sa.column("sealed", sa.Text),
)


def upgrade() -> None:
    op.add_column("messages", sa.Column("sealed", sa.Text(), nullable=False,
                                        server_default=""))
    conn = op.get_bind()
    m = _messages.c
    last = 0
    while True:  # in slices by id: every code ever sent is a row
        rows = conn.execute(sa.select(m.id, m.body, m.status)
                            .where(m.kind == "sms_code", m.id > last)
                            .order_by(m.id).limit(_SLICE)).all()
        if not rows:
            break
        last = rows[-1].id
        for row in rows:
            values: dict[str, str] = {"body": _CODE_LIKE.sub("******", row.body)}
            if row.status == "queued":
                values.update(status="failed", error=_WITHDRAWN)
            if values["body"] != row.body or "status" in values:
                conn.execute(sa.update(_messages).where(m.id == row.id).values(**values))


def downgrade() -> None:
    # Without the column a queued code would go out masked: fail those instead.
    m = _messages.c
    op.get_bind().execute(
        sa.update(_messages).where(m.status == "queued", m.sealed != "")
        .values(status="failed", error="sealed text dropped by downgrade below 0012"))
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sealed")
