"""Repositories of the payments ports (orders, outboxes, notifications, SMS codes, payers)
over SQLAlchemy Core. Like repositories.py: they use the unit of work's Connection, never
commit, store UTC and read back aware datetimes.

`for_update=True` is SELECT ... FOR UPDATE on PostgreSQL; on SQLite the BEGIN IMMEDIATE
of engine.py already holds the database's write lock. The outboxes' claim_due() adds SKIP
LOCKED on PostgreSQL so that several workers take different rows, and their save() is
fenced by the row's claim token.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from selfpay.adapters.db import tables as t
from selfpay.adapters.db.repositories import (
    _aware,
    _is_unique_violation,
    _like_escape,
    _new_id,
    _page,
    _utc,
)
from selfpay.domain.orders import OPEN_STATES, Order, OrderLine, OrderStatus
from selfpay.services.ports import (
    BusyOrder,
    DuplicateKey,
    Message,
    OrderHistoryEntry,
    Page,
    Posting,
    ReceivedNotification,
    RecentPayment,
    SmsCode,
    StaleOrder,
)


def _opt(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value)


def _order(row: Row[Any]) -> Order:
    return Order(
        order_no=row.order_no,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        biller=row.biller,
        account=row.account,
        bill_ids=tuple(int(b) for b in row.bill_ids),
        amount_fen=int(row.amount_fen),
        channel=row.channel,
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at),
        status=OrderStatus(row.status),
        attempts=row.attempts,
        failed_attempts=row.failed_attempts,
        channel_txn_id=row.channel_txn_id,
        paid_at=_opt(row.paid_at),
        posted_at=_opt(row.posted_at),
        payer=row.payer,
        email=row.email,
        action=dict(row.action or {}),
        version=row.version,
        lines=tuple(OrderLine(int(b), str(p), int(f)) for b, p, f in (row.bill_lines or [])),
        holder=row.holder,
        settled=bool(row.settled),
        flag=row.flag,
        flagged_at=_opt(row.flagged_at),
    )


def _mutable(order: Order) -> dict[str, Any]:
    return {
        "status": order.status.value,
        "attempts": order.attempts,
        "failed_attempts": order.failed_attempts,
        "channel_txn_id": order.channel_txn_id,
        "payer": order.payer,
        "email": order.email,
        "action": order.action,
        "expires_at": _utc(order.expires_at),
        "paid_at": _utc(order.paid_at),
        "posted_at": _utc(order.posted_at),
        "settled": order.settled,
        "flag": order.flag,
        "flagged_at": _utc(order.flagged_at),
    }


class SqlAlchemyOrderRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, order: Order) -> None:
        try:
            self._conn.execute(
                insert(t.orders).values(
                    order_no=order.order_no,
                    idempotency_key=order.idempotency_key,
                    request_hash=order.request_hash,
                    biller=order.biller,
                    account=order.account,
                    bill_ids=list(order.bill_ids),
                    amount_fen=order.amount_fen,
                    channel=order.channel,
                    bill_lines=[[x.bill_id, x.period, x.amount_fen] for x in order.lines],
                    holder=order.holder,
                    created_at=_utc(order.created_at),
                    updated_at=_utc(order.created_at),
                    version=order.version,
                    **_mutable(order),
                )
            )
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateKey(order.idempotency_key) from exc
            raise
        self._append_events(order, order.created_at)

    def get(self, order_no: str, *, for_update: bool = False) -> Order | None:
        stmt = select(t.orders).where(t.orders.c.order_no == order_no)
        if for_update:
            stmt = stmt.with_for_update()
        row = self._conn.execute(stmt).first()
        return None if row is None else _order(row)

    def by_idempotency_key(self, key: str) -> Order | None:
        row = self._conn.execute(
            select(t.orders).where(t.orders.c.idempotency_key == key)
        ).first()
        return None if row is None else _order(row)

    def save(self, order: Order, *, now: dt.datetime) -> None:
        o = t.orders.c
        result = self._conn.execute(
            update(t.orders)
            .where(o.order_no == order.order_no, o.version == order.version)
            .values(version=order.version + 1, updated_at=_utc(now), **_mutable(order))
        )
        if result.rowcount != 1:
            raise StaleOrder(f"{order.order_no} changed since version {order.version}")
        order.version += 1
        self._append_events(order, now)

    def _append_events(self, order: Order, now: dt.datetime) -> None:
        if not order.events:
            return
        at = _utc(now)
        self._conn.execute(
            insert(t.order_events),
            [
                {"order_no": order.order_no, "at": at, "kind": e.kind,
                 "from_status": e.from_status, "to_status": e.to_status,
                 "detail": e.detail}
                for e in order.events
            ],
        )
        order.events.clear()

    def history(self, order_no: str) -> list[OrderHistoryEntry]:
        e = t.order_events.c
        rows = self._conn.execute(
            select(t.order_events).where(e.order_no == order_no).order_by(e.id)
        )
        return [
            OrderHistoryEntry(order_no=r.order_no, at=_aware(r.at), kind=r.kind,
                              from_status=r.from_status, to_status=r.to_status,
                              detail=dict(r.detail or {}))
            for r in rows
        ]

    def unsettled_older_than(self, before: dt.datetime, *, limit: int = 100) -> list[str]:
        o = t.orders.c  # ix_orders_unsettled (settled, updated_at)
        stmt = (
            select(o.order_no)
            .where(o.settled.is_(False), o.updated_at < _utc(before))
            .order_by(o.updated_at)
            .limit(limit)
        )
        return list(self._conn.execute(stmt).scalars())

    def busy_bills(self, biller: str, account: str) -> list[BusyOrder]:
        o = t.orders.c  # ix_orders_account (biller, account)
        rows = self._conn.execute(
            select(o.order_no, o.status, o.bill_ids).where(
                o.biller == biller, o.account == account,
                o.status.in_([*(s.value for s in OPEN_STATES), OrderStatus.PAID.value]))
        ).all()
        return [BusyOrder(r.order_no, OrderStatus(r.status), tuple(int(b) for b in r.bill_ids))
                for r in rows]

    def paid_since(self, biller: str, account: str, since: dt.datetime) -> list[BusyOrder]:
        # ix_orders_account_paid (biller, account, paid_at): a narrow range of one account
        o = t.orders.c
        rows = self._conn.execute(
            select(o.order_no, o.status, o.bill_ids).where(
                o.biller == biller, o.account == account, o.paid_at >= _utc(since),
                o.status.in_((OrderStatus.PAID.value, OrderStatus.POSTED.value)))
        ).all()
        return [BusyOrder(r.order_no, OrderStatus(r.status), tuple(int(b) for b in r.bill_ids))
                for r in rows]

    def flagged_since(self, since: dt.datetime, *, limit: int = 10) -> Page[Order]:
        o = t.orders.c  # ix_orders_flagged
        stmt = select(t.orders).where(o.flagged_at >= _utc(since))
        rows, total = _page(self._conn, stmt, (o.flagged_at.desc(), o.order_no), limit, 0)
        return Page([_order(r) for r in rows], total)

    def search(self, *, query: str = "", status: str = "", biller: str = "",
               channel: str = "", limit: int = 50, offset: int = 0) -> Page[Order]:
        """`query` matches an order number, an account number or a channel transaction
        id by prefix."""
        o = t.orders.c
        stmt = select(t.orders)
        if status:
            stmt = stmt.where(o.status == status)
        if biller:
            stmt = stmt.where(o.biller == biller)
        if channel:
            stmt = stmt.where(o.channel == channel)
        q = query.strip()
        if q:
            like = _like_escape(q.upper()) + "%"
            stmt = stmt.where(or_(
                o.order_no.like(like, escape="\\"),
                o.account.like(like, escape="\\"),
                o.channel_txn_id.like(_like_escape(q) + "%", escape="\\"),
            ))
        rows, total = _page(self._conn, stmt, (o.created_at.desc(), o.order_no), limit, offset)
        return Page([_order(r) for r in rows], total)

    def paid_bill_ids(self, biller: str, account: str) -> set[int]:
        o = t.orders.c
        rows = self._conn.execute(
            select(o.bill_ids).where(
                o.biller == biller, o.account == account, o.status == OrderStatus.PAID.value
            )
        ).scalars()
        return {int(b) for ids in rows for b in ids}

    def recent_paid(self, biller: str, account: str, *, limit: int = 5) -> list[RecentPayment]:
        # walks ix_orders_account_paid (biller, account, paid_at) backwards; `paid_at IS
        # NOT NULL` keeps PostgreSQL, which sorts NULLs first in DESC, off unpaid orders
        o = t.orders.c
        rows = self._conn.execute(
            select(o.order_no, o.amount_fen, o.channel, o.paid_at)
            .where(o.biller == biller, o.account == account, o.paid_at.is_not(None),
                   o.status.in_((OrderStatus.PAID.value, OrderStatus.POSTED.value)))
            .order_by(o.paid_at.desc()).limit(limit)
        ).all()
        return [RecentPayment(order_no=r.order_no, amount_fen=r.amount_fen, channel=r.channel,
                              paid_at=_aware(r.paid_at)) for r in rows]


def _posting(row: Row[Any]) -> Posting:
    return Posting(
        order_no=row.order_no, created_at=_aware(row.created_at),
        next_attempt_at=_aware(row.next_attempt_at), attempts=row.attempts,
        status=row.status, last_error=row.last_error, done_at=_opt(row.done_at),
        dead_at=_opt(row.dead_at), claim=row.claim,
    )


def _first_unclaimed(conn: Connection, stmt: Select[Any]) -> Row[Any] | None:
    """The first row of the ordered `stmt` that no other worker is claiming: FOR UPDATE
    SKIP LOCKED on PostgreSQL (SQLite's BEGIN IMMEDIATE already lets one writer in)."""
    stmt = stmt.limit(1)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return conn.execute(stmt).first()


WAKE_CHANNEL = "selfpay_work"  # LISTEN/NOTIFY: `selfpay worker` wakes when work is added


def wake_workers(conn: Connection) -> None:
    """On PostgreSQL, tell listening workers that work was queued; the notice is sent
    when (and only if) the caller's transaction commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": WAKE_CHANNEL})


class SqlAlchemyPostingOutbox:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, posting: Posting) -> None:
        wake_workers(self._conn)
        try:
            self._conn.execute(
                insert(t.postings).values(
                    order_no=posting.order_no, created_at=_utc(posting.created_at),
                    next_attempt_at=_utc(posting.next_attempt_at), attempts=posting.attempts,
                    status=posting.status, last_error=posting.last_error,
                    done_at=_utc(posting.done_at), dead_at=_utc(posting.dead_at),
                )
            )
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateKey(posting.order_no) from exc
            raise

    def claim_due(self, now: dt.datetime, *, lease_until: dt.datetime) -> Posting | None:
        p = t.postings.c
        row = _first_unclaimed(self._conn, select(t.postings).where(
            p.status.in_(("pending", "stuck")), p.next_attempt_at <= _utc(now),
        ).order_by(p.next_attempt_at))
        if row is None:
            return None
        posting = _posting(row)
        posting.attempts += 1
        posting.next_attempt_at = lease_until
        self.save(posting, new_claim=True)
        return posting

    def save(self, posting: Posting, *, new_claim: bool = False) -> bool:
        p = t.postings.c
        claim = posting.claim + 1 if new_claim else posting.claim
        result = self._conn.execute(
            update(t.postings)
            .where(p.order_no == posting.order_no, p.claim == posting.claim)
            .values(next_attempt_at=_utc(posting.next_attempt_at), attempts=posting.attempts,
                    status=posting.status, last_error=posting.last_error,
                    done_at=_utc(posting.done_at), dead_at=_utc(posting.dead_at), claim=claim)
        )
        if result.rowcount != 1:
            return False
        posting.claim = claim
        return True

    def get(self, order_no: str) -> Posting | None:
        row = self._conn.execute(
            select(t.postings).where(t.postings.c.order_no == order_no)
        ).first()
        return None if row is None else _posting(row)

    def list(self, *, status: str = "", limit: int = 50, offset: int = 0) -> Page[Posting]:
        p = t.postings.c
        stmt = select(t.postings)
        if status:
            stmt = stmt.where(p.status == status)
        rows, total = _page(self._conn, stmt, (p.created_at.desc(), p.order_no), limit, offset)
        return Page([_posting(r) for r in rows], total)


def _notification(row: Row[Any]) -> ReceivedNotification:
    return ReceivedNotification(
        id=row.id, channel=row.channel, received_at=_aware(row.received_at),
        verified=bool(row.verified), notification_id=row.notification_id,
        order_no=row.order_no, outcome=row.outcome, error=row.error,
        body_sha256=row.body_sha256,
    )


class SqlAlchemyNotificationLog:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, entry: ReceivedNotification) -> int:
        result = self._conn.execute(
            insert(t.notifications).values(
                channel=entry.channel, received_at=_utc(entry.received_at),
                verified=entry.verified, notification_id=entry.notification_id,
                order_no=entry.order_no, outcome=entry.outcome, error=entry.error,
                body_sha256=entry.body_sha256,
            )
        )
        entry.id = _new_id(result)
        return entry.id

    def seen(self, channel: str, notification_id: str) -> bool:
        """Whether a verified notification with this id was taken before."""
        if not notification_id:
            return False
        n = t.notifications.c
        row = self._conn.execute(
            select(n.id).where(n.channel == channel, n.notification_id == notification_id,
                               n.verified.is_(True)).limit(1)
        ).first()
        return row is not None

    def for_order(self, order_no: str) -> list[ReceivedNotification]:
        n = t.notifications.c
        rows = self._conn.execute(
            select(t.notifications).where(n.order_no == order_no).order_by(n.id)
        )
        return [_notification(r) for r in rows]


def _message(row: Row[Any]) -> Message:
    return Message(
        id=row.id, kind=row.kind, to=row.to, subject=row.subject, body=row.body,
        created_at=_aware(row.created_at),
        attachments=[(str(name), str(ctype), base64.b64decode(data))
                     for name, ctype, data in row.attachments],
        status=row.status, sent_at=_opt(row.sent_at), error=row.error,
        attempts=row.attempts, next_attempt_at=_opt(row.next_attempt_at), claim=row.claim,
        sealed=row.sealed,
    )


def _message_values(message: Message) -> dict[str, Any]:
    """The row of `message`. Its sealed text is kept only while it is queued: once sent,
    or failed for good, an SMS code has no business in the table, encrypted or not."""
    return {
        "kind": message.kind, "to": message.to, "subject": message.subject,
        "body": message.body, "created_at": _utc(message.created_at),
        "attachments": [[name, ctype, base64.b64encode(data).decode("ascii")]
                        for name, ctype, data in message.attachments],
        "status": message.status, "sent_at": _utc(message.sent_at), "error": message.error,
        "attempts": message.attempts, "next_attempt_at": _utc(message.next_attempt_at),
        "sealed": message.sealed if message.status == "queued" else "",
    }


def _due(now: dt.datetime) -> ColumnElement[bool]:
    m = t.messages.c
    return or_(m.next_attempt_at.is_(None), m.next_attempt_at <= _utc(now))


class SqlAlchemyMessageOutbox:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, message: Message, *, wake: bool = True) -> int:
        if wake:
            wake_workers(self._conn)  # e.g. an SMS code: a customer is waiting for it
        result = self._conn.execute(insert(t.messages).values(**_message_values(message)))
        message.id = _new_id(result)
        return message.id

    def queued(self, *, limit: int = 20, now: dt.datetime | None = None) -> list[Message]:
        m = t.messages.c
        stmt = select(t.messages).where(m.status == "queued")
        if now is not None:
            stmt = stmt.where(_due(now))
        rows = self._conn.execute(stmt.order_by(m.id).limit(limit))
        return [_message(r) for r in rows]

    def claim_due(self, now: dt.datetime, *, lease_until: dt.datetime) -> Message | None:
        m = t.messages.c
        row = _first_unclaimed(self._conn, select(t.messages).where(
            m.status == "queued", _due(now)).order_by(m.id))
        if row is None:
            return None
        message = _message(row)
        result = self._conn.execute(
            update(t.messages).where(m.id == message.id, m.claim == message.claim)
            .values(claim=message.claim + 1, next_attempt_at=_utc(lease_until))
        )
        if result.rowcount != 1:  # pragma: no cover - the row is locked
            return None
        message.claim += 1
        message.next_attempt_at = lease_until
        return message

    def save(self, message: Message) -> bool:
        if message.id is None:
            raise ValueError("cannot save a message that has no id")
        m = t.messages.c
        result = self._conn.execute(
            update(t.messages).where(m.id == message.id, m.claim == message.claim)
            .values(**_message_values(message))
        )
        return bool(result.rowcount == 1)

    def list(self, *, kind: str = "", limit: int = 50, offset: int = 0) -> Page[Message]:
        m = t.messages.c
        stmt = select(t.messages)
        if kind:
            stmt = stmt.where(m.kind == kind)
        rows, total = _page(self._conn, stmt, (m.id.desc(),), limit, offset)
        return Page([_message(r) for r in rows], total)


class SqlAlchemySmsCodeRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, phone: str, *, for_update: bool = False) -> SmsCode | None:
        stmt = select(t.sms_codes).where(t.sms_codes.c.phone == phone)
        if for_update:
            stmt = stmt.with_for_update()
        row = self._conn.execute(stmt).first()
        if row is None:
            return None
        return SmsCode(phone=row.phone, code_hash=row.code_hash,
                       expires_at=_aware(row.expires_at), sent_at=_aware(row.sent_at),
                       tries=row.tries, used=bool(row.used))

    def put(self, code: SmsCode) -> None:
        """Insert or replace the phone's one current code."""
        values = {"code_hash": code.code_hash, "expires_at": _utc(code.expires_at),
                  "sent_at": _utc(code.sent_at), "tries": code.tries, "used": code.used}
        result = self._conn.execute(
            update(t.sms_codes).where(t.sms_codes.c.phone == code.phone).values(**values)
        )
        if result.rowcount == 0:
            self._conn.execute(insert(t.sms_codes).values(phone=code.phone, **values))

    def delete(self, phone: str) -> None:
        self._conn.execute(delete(t.sms_codes).where(t.sms_codes.c.phone == phone))


class SqlAlchemyPayerAccounts:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def remember(self, payer: str, biller: str, account: str, now: dt.datetime) -> None:
        if not payer:
            return
        # INSERT ... ON CONFLICT: a twin insert must not abort the caller's transaction
        # (it is the one that records the payment).
        dialect_insert = pg_insert if self._conn.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(t.payer_accounts).values(
            payer=payer, biller=biller, account=account, last_paid_at=_utc(now)
        )
        self._conn.execute(stmt.on_conflict_do_update(
            index_elements=["payer", "biller", "account"],
            set_={"last_paid_at": stmt.excluded.last_paid_at},
        ))

    def list(self, payer: str) -> list[tuple[str, str]]:
        p = t.payer_accounts.c
        rows = self._conn.execute(
            select(p.biller, p.account).where(p.payer == payer)
            .order_by(p.last_paid_at.desc(), p.biller, p.account)
        )
        return [(r.biller, r.account) for r in rows]

    def count(self) -> int:
        return int(self._conn.execute(
            select(func.count()).select_from(t.payer_accounts)).scalar_one())


__all__ = [
    "pin_posting_route",
    "SqlAlchemyMessageOutbox",
    "SqlAlchemyNotificationLog",
    "SqlAlchemyOrderRepository",
    "SqlAlchemyPayerAccounts",
    "SqlAlchemyPostingOutbox",
    "SqlAlchemySmsCodeRepository",
]


def pin_posting_route(engine: Engine, payment_id: str, route: str) -> str:
    """Record `route` as the billing route of `payment_id` unless one is recorded; return
    the recorded one. One short transaction of its own (INSERT ... ON CONFLICT DO
    NOTHING, then read), so that two workers racing on a payment agree."""
    with engine.begin() as conn:
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(dialect_insert(t.posting_routes).values(
            payment_id=payment_id, route=route, pinned_at=_utc(dt.datetime.now(dt.UTC)),
        ).on_conflict_do_nothing(index_elements=["payment_id"]))
        pinned = conn.execute(select(t.posting_routes.c.route).where(
            t.posting_routes.c.payment_id == payment_id)).scalar_one()
    return str(pinned)
