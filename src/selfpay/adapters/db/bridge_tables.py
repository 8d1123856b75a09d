"""Tables of the embedded bridge transport (a queue in the database).

Registered in the shared `metadata` of tables.py (this module is imported by the
package `selfpay.adapters.db`), mirrored by migration 0003.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
)

from selfpay.adapters.db.tables import metadata

bridge_messages = Table(
    "bridge_messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("queue", String(200), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    # a consumer holds a message until it acks or locked_until passes (then redelivery)
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("lock_token", String(32), nullable=True),
    Column("deliveries", Integer, nullable=False, server_default="0"),
)
Index("ix_bridge_messages_queue", bridge_messages.c.queue, bridge_messages.c.id)
