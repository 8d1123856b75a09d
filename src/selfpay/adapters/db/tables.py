"""Tables of the DMZ database and of the built-in ledger (SQLAlchemy Core).

Money columns are BigInteger fen. Account numbers are strings. Alembic migrations under
src/selfpay/migrations mirror this file; a test checks they agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

billers = Table(
    "billers",
    metadata,
    Column("code", String(8), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("name_en", String(64), nullable=False, server_default=""),
    Column("kind", String(16), nullable=False, server_default="other"),
    Column("icon", String(32), nullable=False, server_default=""),
    Column("display_order", Integer, nullable=False, server_default="100"),
    Column("elderly", Boolean, nullable=False, server_default="0"),
    # kiosk steps in order, comma-separated step names; "": the kind's default steps
    Column("steps", String(256), nullable=False, server_default=""),
    Column("route", String(32), nullable=False, server_default="default"),  # billing route
    Column("enabled", Boolean, nullable=False, server_default="1"),
    # `kind` is checked by the registry (services/billers.py): SQLite cannot add a CHECK to
    # a table that others reference without copying it
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("biller", String(8), ForeignKey("billers.code"), nullable=False),
    Column("number", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("phone", String(32), nullable=False, server_default=""),
    Column("address", String(256), nullable=False, server_default=""),
    Column("balance_fen", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("biller", "number", name="uq_accounts_biller_number"),
    CheckConstraint("balance_fen >= 0", name="balance_not_negative"),
)
Index("ix_accounts_phone", accounts.c.phone)

bills = Table(
    "bills",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("biller", String(8), nullable=False),
    Column("account", String(32), nullable=False),
    Column("period", String(16), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("paid_fen", BigInteger, nullable=False, server_default="0"),
    Column("due_date", Date, nullable=True),
    Column("status", String(16), nullable=False, server_default="open"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["biller", "account"], ["accounts.biller", "accounts.number"],
        name="fk_bills_account",
    ),
    UniqueConstraint("biller", "account", "period", name="uq_bills_biller_account_period"),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint("paid_fen >= 0 AND paid_fen <= amount_fen", name="paid_within_amount"),
    CheckConstraint("status IN ('open', 'paid', 'cancelled')", name="status_known"),
)
Index("ix_bills_status", bills.c.biller, bills.c.account, bills.c.status)

ledger_payments = Table(
    "ledger_payments",
    metadata,
    Column("payment_id", String(64), primary_key=True),
    Column("biller", String(8), nullable=False),
    Column("account", String(32), nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("surplus_fen", BigInteger, nullable=False),
    Column("balance_after_fen", BigInteger, nullable=False),
    Column("applied", JSON, nullable=False),  # [[bill_id, fen], ...]
    Column("channel", String(32), nullable=False, server_default=""),
    Column("channel_txn_id", String(64), nullable=False, server_default=""),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("role IN ('admin', 'operator', 'auditor')", name="role_known"),
)

# Staff sign-ins: the signed session cookie names one of these; logging out (or its
# expiry) ends it on the server, so a copied cookie stops working too.
staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
Index("ix_staff_sessions_user", staff_sessions.c.username)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False, server_default=""),
    Column("detail", JSON, nullable=False),
    Column("ip", String(64), nullable=False, server_default=""),
)
Index("ix_audit_log_at", audit_log.c.at)

# Requests per minute per client that staff set for a route group (/admin/rate-limits);
# a group without a row has SELFPAY_RATE_LIMIT_PER_MINUTE.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("group", String(16), primary_key=True),
    Column("per_minute", Integer, nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("per_minute >= 0", name="per_minute_not_negative"),
)

import_runs = Table(
    "import_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("filename", String(256), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total_rows", Integer, nullable=False),
    Column("imported", Integer, nullable=False),
    Column("skipped", Integer, nullable=False),
    # [[row, message, key, params], ...]; older rows [[row, message]]
    Column("errors", JSON, nullable=False),
)

qr_batches = Table(
    "qr_batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("actor", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("source_filename", String(256), nullable=False),
    Column("count", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("stored_path", Text, nullable=False),
    Column("billers", String(256), nullable=False, server_default=""),
    Column("warnings", JSON, nullable=False),
)

# Background jobs (QR batches): progress and outcome in the database, so that any web
# process can answer a poll; heartbeat_at tells a live job from one whose process died.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("owner", String(64), nullable=False),
    Column("filename", String(256), nullable=False, server_default=""),
    Column("state", String(16), nullable=False, server_default="running"),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("message", Text, nullable=False, server_default=""),
    Column("result", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("state IN ('running', 'done', 'failed')", name="state_known"),
)
Index("ix_jobs_updated", jobs.c.updated_at)

# --- payments ---------------------------------------------------------------------------

orders = Table(
    "orders",
    metadata,
    Column("order_no", String(32), primary_key=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("request_hash", String(64), nullable=False),
    Column("biller", String(8), nullable=False),
    Column("account", String(32), nullable=False),
    Column("bill_ids", JSON, nullable=False),
    Column("amount_fen", BigInteger, nullable=False),
    Column("channel", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("failed_attempts", Integer, nullable=False, server_default="0"),
    Column("channel_txn_id", String(64), nullable=False, server_default=""),
    Column("payer", String(128), nullable=False, server_default=""),
    Column("email", String(254), nullable=False, server_default=""),
    Column("action", JSON, nullable=False),
    # the bills as priced, [[bill_id, period, fen], ...], and the masked holder: the
    # receipt is built from these, never from a search of the bills table
    Column("bill_lines", JSON, nullable=False),
    Column("holder", String(128), nullable=False, server_default=""),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("posted_at", DateTime(timezone=True), nullable=True),
    # the channel confirmed a terminal state (or there is none to confirm): the
    # reconcile loop works through the unsettled ones
    Column("settled", Boolean, nullable=False, server_default="0"),
    # for staff: late | paid_elsewhere | overpayment | amount_mismatch ('' none)
    Column("flag", String(24), nullable=False, server_default=""),
    Column("flagged_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("amount_fen > 0", name="amount_positive"),
    CheckConstraint(
        "status IN ('created', 'pending', 'paid', 'posted', 'closed', 'failed', "
        "'disputed')",
        name="status_known",
    ),
)
Index("ix_orders_status_updated", orders.c.status, orders.c.updated_at)
Index("ix_orders_unsettled", orders.c.settled, orders.c.updated_at)
Index("ix_orders_flagged", orders.c.flagged_at)
Index("ix_orders_account", orders.c.biller, orders.c.account)
# an account's last payments (the code page's history): newest first, straight off the index
Index("ix_orders_account_paid", orders.c.biller, orders.c.account, orders.c.paid_at)

order_events = Table(
    "order_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_no", String(32), ForeignKey("orders.order_no"), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("from_status", String(16), nullable=False, server_default=""),
    Column("to_status", String(16), nullable=False, server_default=""),
    Column("detail", JSON, nullable=False),
)
Index("ix_order_events_order", order_events.c.order_no, order_events.c.id)

postings = Table(
    "postings",
    metadata,
    Column("order_no", String(32), ForeignKey("orders.order_no"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("done_at", DateTime(timezone=True), nullable=True),
    Column("dead_at", DateTime(timezone=True), nullable=True),  # moved to the dead letters
    # fencing token: bumped by every claim; an outcome is written only by the claim that
    # holds the current token, so a worker whose lease ran out cannot overwrite the live one
    Column("claim", Integer, nullable=False, server_default="0"),
    CheckConstraint("status IN ('pending', 'done', 'stuck', 'dead')", name="status_known"),
)
Index("ix_postings_due", postings.c.status, postings.c.next_attempt_at)

# The billing route a payment was first sent by: its retries go the same way even if the
# biller's route changes meanwhile (a posting whose answer was lost may have been applied
# there; another billing system would apply it a second time).
posting_routes = Table(
    "posting_routes",
    metadata,
    Column("payment_id", String(64), primary_key=True),
    Column("route", String(32), nullable=False),
    Column("pinned_at", DateTime(timezone=True), nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("notification_id", String(128), nullable=False, server_default=""),
    Column("order_no", String(32), nullable=False, server_default=""),
    Column("outcome", String(16), nullable=False, server_default=""),
    Column("error", Text, nullable=False, server_default=""),
    Column("body_sha256", String(64), nullable=False),
)
Index("ix_notifications_order", notifications.c.order_no)
Index("ix_notifications_dedupe", notifications.c.channel, notifications.c.notification_id)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("to", String(254), nullable=False),
    Column("subject", String(256), nullable=False, server_default=""),
    Column("body", Text, nullable=False),
    Column("attachments", JSON, nullable=False),  # [[name, type, base64], ...]
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=False, server_default=""),
    # delivery tries so far, and when to try again (a down SMTP server is retried with
    # back-off, then the message is marked failed)
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("claim", Integer, nullable=False, server_default="0"),  # fencing token, as postings
    # the text to send when `body` is masked (an SMS code), sealed (adapters/secretbox.py);
    # kept only while the message is queued
    Column("sealed", Text, nullable=False, server_default=""),
)
Index("ix_messages_status", messages.c.status, messages.c.id)

sms_codes = Table(
    "sms_codes",
    metadata,
    Column("phone", String(32), primary_key=True),
    Column("code_hash", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
    Column("tries", Integer, nullable=False, server_default="0"),
    Column("used", Boolean, nullable=False, server_default="0"),
)

payer_accounts = Table(
    "payer_accounts",
    metadata,
    Column("payer", String(128), primary_key=True),
    Column("biller", String(8), primary_key=True),
    Column("account", String(32), primary_key=True),
    Column("last_paid_at", DateTime(timezone=True), nullable=False),
)

# Work orders reported by customers (DMZ side): the ticket and its outbox row.
work_orders = Table(
    "work_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_no", String(32), nullable=False, unique=True),
    Column("biller", String(8), nullable=False),
    Column("account", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("contact_phone", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("billing_ref", String(64), nullable=False, server_default=""),
    Column("note", Text, nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "status IN ('queued', 'submitted', 'accepted', 'in_progress', 'done', 'rejected', "
        "'failed')",
        name="status_known",
    ),
)
Index("ix_work_orders_due", work_orders.c.status, work_orders.c.next_attempt_at)
Index("ix_work_orders_account", work_orders.c.biller, work_orders.c.account,
      work_orders.c.created_at)

# The built-in ledger's side of work orders: exactly one row per ticket number.
ledger_work_orders = Table(
    "ledger_work_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_no", String(32), nullable=False, unique=True),
    Column("biller", String(8), nullable=False),
    Column("account", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("contact_phone", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("status IN ('accepted', 'in_progress', 'done', 'rejected')",
                    name="status_known"),
)

# The sandbox channel's own books: it plays an external payment platform, so it keeps
# its trades and its notification deliveries apart from the orders it is told about.
sandbox_trades = Table(
    "sandbox_trades",
    metadata,
    Column("order_no", String(32), primary_key=True),
    Column("amount_fen", BigInteger, nullable=False),
    Column("description", String(128), nullable=False, server_default=""),
    Column("notify_url", Text, nullable=False),
    Column("return_url", Text, nullable=False, server_default=""),
    Column("state", String(16), nullable=False),  # NOTPAY | SUCCESS | PAYERROR | CLOSED
    Column("txn_id", String(64), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Column("attempt", Integer, nullable=False, server_default="0"),  # echoed in reports
)

sandbox_deliveries = Table(
    "sandbox_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_no", String(32), nullable=False),
    Column("notification_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("acked", Boolean, nullable=False, server_default="0"),
    Column("last_status", String(64), nullable=False, server_default=""),
)
Index("ix_sandbox_deliveries_due", sandbox_deliveries.c.acked, sandbox_deliveries.c.due_at)

# --- kiosks -----------------------------------------------------------------------------

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("site", String(64), nullable=False, server_default=""),
    Column("location", String(128), nullable=False, server_default=""),
    Column("billers", JSON, nullable=False),  # codes offered, [] = every enabled biller
    Column("elderly_default", Boolean, nullable=False, server_default="0"),
    Column("standby", String(32), nullable=False, server_default=""),
    Column("state", String(16), nullable=False),
    # the device's own secret, sealed with a key derived from SELFPAY_SECRET_KEY; ''
    # until it is enrolled
    Column("secret_sealed", Text, nullable=False, server_default=""),
    # the one-time enrolment code: its HMAC and when it stops working
    Column("enrol_code_hash", String(64), nullable=False, server_default=""),
    Column("enrol_expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("enrolled_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
    Column("readings", JSON, nullable=False),
    Column("payment_failures", Integer, nullable=False, server_default="0"),
    CheckConstraint("state IN ('registered', 'enrolled', 'revoked')", name="state_known"),
)
Index("ix_devices_seen", devices.c.state, devices.c.last_seen_at)

device_alarms = Table(
    "device_alarms",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(32), ForeignKey("devices.device_id"), nullable=False),
    Column("kind", String(24), nullable=False),
    Column("detail", String(200), nullable=False, server_default=""),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("cleared_at", DateTime(timezone=True), nullable=True),
    Column("acked_at", DateTime(timezone=True), nullable=True),
    Column("acked_by", String(64), nullable=False, server_default=""),
    Column("note", String(500), nullable=False, server_default=""),
)
# open alarms (not acknowledged) of a device, and of the fleet, newest first
Index("ix_device_alarms_open", device_alarms.c.acked_at, device_alarms.c.device_id,
      device_alarms.c.kind)

device_tasks = Table(
    "device_tasks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(32), ForeignKey("devices.device_id"), nullable=False),
    Column("title", String(100), nullable=False),
    Column("period_days", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_done_at", DateTime(timezone=True), nullable=True),
    Column("last_done_by", String(64), nullable=False, server_default=""),
    Column("last_note", String(500), nullable=False, server_default=""),
    CheckConstraint("period_days > 0", name="period_positive"),
)
Index("ix_device_tasks_device", device_tasks.c.device_id)

# which kiosk an order was made at, and whether its outcome reached the device's
# failure count (reported once: the first status poll that sees it settled claims it)
device_orders = Table(
    "device_orders",
    metadata,
    Column("order_no", String(32), primary_key=True),
    Column("device_id", String(32), ForeignKey("devices.device_id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(8), nullable=False, server_default=""),  # '' | ok | failed
    Column("reported_at", DateTime(timezone=True), nullable=True),
)
Index("ix_device_orders_device", device_orders.c.device_id, device_orders.c.created_at)
