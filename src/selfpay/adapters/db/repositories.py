"""Repositories over SQLAlchemy Core, one per port in services.ports.

All of them work on the Connection of a SqlAlchemyUnitOfWork and never commit.
Timestamps are stored in UTC; SQLite hands them back naive, so every read goes through
_aware(). `for_update=True` adds FOR UPDATE, which PostgreSQL honours; on SQLite the
compiler drops it and the BEGIN IMMEDIATE of engine.py already holds the write lock.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    CursorResult,
    Row,
    Select,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from selfpay.adapters.db import tables as t
from selfpay.domain.accounts import Account, Bill, Biller, BillStatus
from selfpay.services.ports import (
    AuditEntry,
    DuplicateKey,
    DuplicatePayment,
    ImportRun,
    Job,
    LedgerPayment,
    Page,
    QrBatch,
    RateLimitOverride,
    RowError,
    User,
)

CHUNK = 500  # bound parameters per IN (...): far below SQLite's limit
UTC = dt.UTC
T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """What we store: UTC; a naive value is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every table here has an integer key
        raise RuntimeError("the database returned no primary key")
    return int(key[0])


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


MAX_ID = 2**31 - 1  # INTEGER primary keys: a larger id is simply not there


def _page(conn: Connection, stmt: Select[Any], order: Sequence[Any], limit: int,
          offset: int) -> tuple[list[Row[Any]], int]:
    """One page and the total. An offset past the end gives the last page (a page number
    from an old link, or `?page=999999999999999999`, is not an error)."""
    total = int(conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one())
    if limit > 0:
        offset = min(max(offset, 0), max(0, (total - 1) // limit * limit))
    rows = conn.execute(stmt.order_by(*order).limit(limit).offset(offset)).all()
    return list(rows), total


def _for_update(stmt: Select[Any], for_update: bool) -> Select[Any]:
    return stmt.with_for_update() if for_update else stmt


def _biller(row: Row[Any]) -> Biller:
    return Biller(code=row.code, name=row.name, name_en=row.name_en, kind=row.kind,
                  icon=row.icon, display_order=row.display_order, elderly=bool(row.elderly),
                  steps=tuple(x for x in row.steps.split(",") if x), route=row.route,
                  enabled=bool(row.enabled))


def _biller_values(biller: Biller) -> dict[str, Any]:
    return {"name": biller.name, "name_en": biller.name_en, "kind": biller.kind,
            "icon": biller.icon, "display_order": biller.display_order,
            "elderly": biller.elderly, "steps": ",".join(biller.steps), "route": biller.route,
            "enabled": biller.enabled}


class SqlAlchemyBillerRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, code: str) -> Biller | None:
        row = self._conn.execute(select(t.billers).where(t.billers.c.code == code)).first()
        return None if row is None else _biller(row)

    def list(self, *, include_disabled: bool = True) -> list[Biller]:
        """Billers in display order (then by code)."""
        b = t.billers.c
        stmt = select(t.billers).order_by(b.display_order, b.code)
        if not include_disabled:
            stmt = stmt.where(b.enabled.is_(True))
        return [_biller(r) for r in self._conn.execute(stmt)]

    def add(self, biller: Biller) -> None:
        try:
            self._conn.execute(insert(t.billers).values(code=biller.code, **_biller_values(biller)))
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateKey(biller.code) from exc
            raise

    def save(self, biller: Biller) -> None:
        self._conn.execute(update(t.billers).where(t.billers.c.code == biller.code)
                           .values(**_biller_values(biller)))


def _account(row: Row[Any]) -> Account:
    return Account(
        biller=row.biller, number=row.number, name=row.name, phone=row.phone,
        address=row.address, balance_fen=row.balance_fen,
    )


def _account_match(query: str) -> ColumnElement[bool]:
    """Account number prefix, holder name substring, or phone suffix."""
    q = _like_escape(query.strip())
    a = t.accounts.c
    return or_(
        a.number.like(q.upper() + "%", escape="\\"),
        a.name.like("%" + q + "%", escape="\\"),
        a.phone.like("%" + q, escape="\\"),
    )


class SqlAlchemyAccountRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, biller: str, number: str, *, for_update: bool = False) -> Account | None:
        a = t.accounts.c
        stmt = _for_update(
            select(t.accounts).where(a.biller == biller, a.number == number), for_update
        )
        row = self._conn.execute(stmt).first()
        return None if row is None else _account(row)

    def existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(self._existing_rows(keys))

    def _existing_rows(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str, str]]:
        by_biller: dict[str, list[str]] = defaultdict(list)
        for biller, number in dict.fromkeys(keys):
            by_biller[biller].append(number)
        a = t.accounts.c
        found: dict[tuple[str, str], tuple[str, str, str]] = {}
        for biller, numbers in by_biller.items():
            for chunk in _chunks(numbers):
                rows = self._conn.execute(
                    select(a.number, a.name, a.phone, a.address).where(
                        a.biller == biller, a.number.in_(chunk)
                    )
                )
                for r in rows:
                    found[(biller, r.number)] = (r.name, r.phone, r.address)
        return found

    def upsert_many(self, accounts: Sequence[Account]) -> tuple[int, int]:
        """Insert new accounts, update name/phone/address of known ones whose data
        changed; (inserted, updated). Balances of known accounts are never touched."""
        latest = {(acc.biller, acc.number): acc for acc in accounts}
        known = self._existing_rows(list(latest))
        now = _now()
        new = [
            {"biller": acc.biller, "number": acc.number, "name": acc.name, "phone": acc.phone,
             "address": acc.address, "balance_fen": acc.balance_fen, "created_at": now,
             "updated_at": now}
            for key, acc in latest.items() if key not in known
        ]
        changed = [
            {"b_biller": acc.biller, "b_number": acc.number, "name": acc.name,
             "phone": acc.phone, "address": acc.address, "updated_at": now}
            for key, acc in latest.items()
            if key in known and known[key] != (acc.name, acc.phone, acc.address)
        ]
        if new:
            self._conn.execute(insert(t.accounts), new)
        if changed:
            a = t.accounts.c
            stmt = (
                update(t.accounts)
                .where(a.biller == bindparam("b_biller"), a.number == bindparam("b_number"))
                .values(name=bindparam("name"), phone=bindparam("phone"),
                        address=bindparam("address"), updated_at=bindparam("updated_at"))
            )
            for chunk in _chunks(changed, 5000):
                self._conn.execute(stmt, list(chunk))
        return len(new), len(changed)

    def set_balance(self, biller: str, number: str, balance_fen: int) -> None:
        a = t.accounts.c
        self._conn.execute(
            update(t.accounts)
            .where(a.biller == biller, a.number == number)
            .values(balance_fen=balance_fen, updated_at=_now())
        )

    def search(
        self, *, query: str = "", biller: str = "", limit: int = 50, offset: int = 0
    ) -> Page[Account]:
        a = t.accounts.c
        stmt = select(t.accounts)
        if biller:
            stmt = stmt.where(a.biller == biller)
        if query.strip():
            stmt = stmt.where(_account_match(query))
        rows, total = _page(self._conn, stmt, (a.biller, a.number), limit, offset)
        return Page([_account(r) for r in rows], total)

    def count(self) -> int:
        return int(self._conn.execute(select(func.count()).select_from(t.accounts)).scalar_one())

    def by_phone(self, phone: str, *, limit: int = 50) -> list[Account]:
        a = t.accounts.c
        stmt = select(t.accounts).where(a.phone == phone).order_by(a.biller, a.number)
        return [_account(r) for r in self._conn.execute(stmt.limit(limit))]


def _bill(row: Row[Any]) -> Bill:
    return Bill(
        id=row.id, biller=row.biller, account=row.account, period=row.period,
        amount_fen=row.amount_fen, due_date=row.due_date, status=BillStatus(row.status),
        paid_fen=row.paid_fen,
    )


class SqlAlchemyBillRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def open_for(self, biller: str, account: str, *, for_update: bool = False) -> list[Bill]:
        b = t.bills.c
        stmt = _for_update(
            select(t.bills)
            .where(b.biller == biller, b.account == account, b.status == BillStatus.OPEN.value)
            .order_by(b.period, b.id),
            for_update,
        )
        return [_bill(r) for r in self._conn.execute(stmt)]

    def existing_periods(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        wanted = set(keys)
        by_biller: dict[str, list[str]] = defaultdict(list)
        for biller, account in dict.fromkeys((k[0], k[1]) for k in keys):
            by_biller[biller].append(account)
        b = t.bills.c
        found: set[tuple[str, str, str]] = set()
        for biller, accounts in by_biller.items():
            for chunk in _chunks(accounts):
                rows = self._conn.execute(
                    select(b.account, b.period).where(b.biller == biller, b.account.in_(chunk))
                )
                found.update(
                    key for r in rows if (key := (biller, r.account, r.period)) in wanted
                )
        return found

    def add_many(self, bills: Sequence[Bill]) -> int:
        if not bills:
            return 0
        now = _now()
        self._conn.execute(
            insert(t.bills),
            [
                {"biller": b.biller, "account": b.account, "period": b.period,
                 "amount_fen": b.amount_fen, "paid_fen": b.paid_fen, "due_date": b.due_date,
                 "status": b.status.value, "created_at": now}
                for b in bills
            ],
        )
        return len(bills)

    def update_paid(self, bill_id: int, paid_fen: int, status: str) -> None:
        self._conn.execute(
            update(t.bills)
            .where(t.bills.c.id == bill_id)
            .values(paid_fen=paid_fen, status=BillStatus(status).value)
        )

    def search(
        self, *, query: str = "", biller: str = "", status: str = "", limit: int = 50,
        offset: int = 0,
    ) -> Page[Bill]:
        b = t.bills.c
        stmt = select(t.bills)
        if biller:
            stmt = stmt.where(b.biller == biller)
        if status:
            stmt = stmt.where(b.status == status)
        if query.strip():
            a = t.accounts.c
            holders = select(a.number).where(a.biller == b.biller, _account_match(query))
            stmt = stmt.where(b.account.in_(holders.scalar_subquery()))
        rows, total = _page(
            self._conn, stmt, (b.biller, b.account, b.period.desc(), b.id), limit, offset
        )
        return Page([_bill(r) for r in rows], total)


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":  # psycopg: unique_violation
        return True
    text = str(orig)
    return "UNIQUE constraint failed" in text or "PRIMARY KEY" in text


class SqlAlchemyLedgerPaymentRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, payment_id: str) -> LedgerPayment | None:
        p = t.ledger_payments.c
        row = self._conn.execute(
            select(t.ledger_payments).where(p.payment_id == payment_id)
        ).first()
        if row is None:
            return None
        return LedgerPayment(
            payment_id=row.payment_id, biller=row.biller, account=row.account,
            amount_fen=row.amount_fen, surplus_fen=row.surplus_fen,
            balance_after_fen=row.balance_after_fen,
            applied=tuple((int(bill_id), int(fen)) for bill_id, fen in row.applied),
            channel=row.channel, channel_txn_id=row.channel_txn_id,
            paid_at=None if row.paid_at is None else _aware(row.paid_at),
            posted_at=_aware(row.posted_at),
        )

    def add(self, payment: LedgerPayment) -> None:
        try:
            self._conn.execute(
                insert(t.ledger_payments).values(
                    payment_id=payment.payment_id, biller=payment.biller,
                    account=payment.account, amount_fen=payment.amount_fen,
                    surplus_fen=payment.surplus_fen,
                    balance_after_fen=payment.balance_after_fen,
                    applied=[list(pair) for pair in payment.applied],
                    channel=payment.channel, channel_txn_id=payment.channel_txn_id,
                    paid_at=_utc(payment.paid_at), posted_at=_utc(payment.posted_at),
                )
            )
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicatePayment(payment.payment_id) from exc
            raise


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id, username=row.username, password_hash=row.password_hash, role=row.role,
        active=bool(row.active), created_at=_aware(row.created_at),
    )


class SqlAlchemyUserRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, username: str) -> User | None:
        row = self._conn.execute(
            select(t.users).where(t.users.c.username == username)
        ).first()
        return None if row is None else _user(row)

    def add(self, user: User) -> int:
        result = self._conn.execute(
            insert(t.users).values(
                username=user.username, password_hash=user.password_hash, role=user.role,
                active=user.active, created_at=_utc(user.created_at) or _now(),
            )
        )
        user_id = _new_id(result)
        user.id = user_id
        return user_id

    def update(self, user: User) -> None:
        if user.id is None:
            raise ValueError("cannot update a user that has no id")
        self._conn.execute(
            update(t.users)
            .where(t.users.c.id == user.id)
            .values(username=user.username, password_hash=user.password_hash,
                    role=user.role, active=user.active)
        )

    def list(self) -> list[User]:
        return [_user(r) for r in self._conn.execute(select(t.users).order_by(t.users.c.username))]


class SqlAlchemyStaffSessionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, sid: str, username: str, *, now: dt.datetime,
            expires_at: dt.datetime) -> None:
        self._conn.execute(insert(t.staff_sessions).values(
            sid=sid, username=username, created_at=_utc(now), expires_at=_utc(expires_at)))

    def live_user(self, sid: str, now: dt.datetime) -> str | None:
        s = t.staff_sessions.c
        row = self._conn.execute(select(s.username).where(
            s.sid == sid, s.revoked_at.is_(None), s.expires_at > _utc(now))).first()
        return None if row is None else str(row.username)

    def end(self, sid: str, now: dt.datetime) -> None:
        s = t.staff_sessions.c
        self._conn.execute(update(t.staff_sessions).where(s.sid == sid, s.revoked_at.is_(None))
                           .values(revoked_at=_utc(now)))

    def end_all(self, username: str, now: dt.datetime) -> int:
        s = t.staff_sessions.c
        result = self._conn.execute(update(t.staff_sessions).where(
            s.username == username, s.revoked_at.is_(None)).values(revoked_at=_utc(now)))
        return int(result.rowcount)


class SqlAlchemyAuditLog:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(self, entry: AuditEntry) -> None:
        result = self._conn.execute(
            insert(t.audit_log).values(
                at=_utc(entry.at), actor=entry.actor, action=entry.action,
                target=entry.target, detail=entry.detail, ip=entry.ip,
            )
        )
        entry.id = _new_id(result)

    def list(self, *, actor: str = "", action: str = "", limit: int = 100,
             offset: int = 0) -> Page[AuditEntry]:
        """`action` matches itself and its sub-actions: 'qr' finds qr.make and qr.batch."""
        c = t.audit_log.c
        stmt = select(t.audit_log)
        if actor:
            stmt = stmt.where(c.actor == actor)
        if action:
            stmt = stmt.where(
                or_(c.action == action,
                    c.action.like(_like_escape(action) + ".%", escape="\\"))
            )
        rows, total = _page(self._conn, stmt, (c.at.desc(), c.id.desc()), limit, offset)
        return Page(
            [AuditEntry(id=r.id, at=_aware(r.at), actor=r.actor, action=r.action,
                        target=r.target, detail=dict(r.detail or {}), ip=r.ip) for r in rows],
            total,
        )


def _import_run(row: Row[Any]) -> ImportRun:
    return ImportRun(
        id=row.id, kind=row.kind, filename=row.filename, actor=row.actor, at=_aware(row.at),
        status=row.status, total_rows=row.total_rows, imported=row.imported,
        skipped=row.skipped,
        errors=[_row_error(e) for e in row.errors],
    )


def _row_error(stored: list[Any]) -> RowError:
    """[row, message] (as stored before errors had keys) or [row, message, key, params]."""
    row, message, *said = stored
    if len(said) == 2 and isinstance(said[0], str) and isinstance(said[1], dict):
        return RowError(int(row), str(message), said[0], dict(said[1]))
    return RowError(int(row), str(message))


def _stored_row_error(error: RowError) -> list[Any]:
    if not error.key:
        return [error.row, error.message]
    return [error.row, error.message, error.key, error.params]


class SqlAlchemyImportRunRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, run: ImportRun) -> int:
        result = self._conn.execute(
            insert(t.import_runs).values(
                kind=run.kind, filename=run.filename, actor=run.actor, at=_utc(run.at),
                status=run.status, total_rows=run.total_rows, imported=run.imported,
                skipped=run.skipped, errors=[_stored_row_error(e) for e in run.errors],
            )
        )
        run.id = _new_id(result)
        return run.id

    def get(self, run_id: int) -> ImportRun | None:
        if not 0 < run_id <= MAX_ID:
            return None
        row = self._conn.execute(
            select(t.import_runs).where(t.import_runs.c.id == run_id)
        ).first()
        return None if row is None else _import_run(row)

    def list(self, *, limit: int = 50, offset: int = 0) -> Page[ImportRun]:
        c = t.import_runs.c
        rows, total = _page(self._conn, select(t.import_runs), (c.id.desc(),), limit, offset)
        return Page([_import_run(r) for r in rows], total)


def _batch(row: Row[Any]) -> QrBatch:
    return QrBatch(
        id=row.id, actor=row.actor, created_at=_aware(row.created_at),
        source_filename=row.source_filename, count=row._mapping["count"], sha256=row.sha256,
        size_bytes=row.size_bytes, stored_path=row.stored_path, billers=row.billers,
        warnings=[str(w) for w in row.warnings],
    )


class SqlAlchemyQrBatchRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, batch: QrBatch) -> int:
        result = self._conn.execute(
            insert(t.qr_batches).values(
                actor=batch.actor, created_at=_utc(batch.created_at),
                source_filename=batch.source_filename, count=batch.count,
                sha256=batch.sha256, size_bytes=batch.size_bytes,
                stored_path=batch.stored_path, billers=batch.billers,
                warnings=list(batch.warnings),
            )
        )
        batch.id = _new_id(result)
        return batch.id

    def get(self, batch_id: int) -> QrBatch | None:
        if not 0 < batch_id <= MAX_ID:
            return None
        row = self._conn.execute(
            select(t.qr_batches).where(t.qr_batches.c.id == batch_id)
        ).first()
        return None if row is None else _batch(row)

    def list(self, *, limit: int = 50, offset: int = 0) -> Page[QrBatch]:
        c = t.qr_batches.c
        rows, total = _page(self._conn, select(t.qr_batches), (c.id.desc(),), limit, offset)
        return Page([_batch(r) for r in rows], total)


class SqlAlchemyJobRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, job: Job) -> None:
        self._conn.execute(insert(t.jobs).values(
            id=job.id, kind=job.kind, owner=job.owner, filename=job.filename,
            state=job.state, done=job.done, total=job.total, message=job.message,
            result=dict(job.result), created_at=_utc(job.created_at),
            updated_at=_utc(job.updated_at), heartbeat_at=_utc(job.heartbeat_at),
        ))

    def get(self, job_id: str) -> Job | None:
        row = self._conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        if row is None:
            return None
        return Job(
            id=row.id, kind=row.kind, owner=row.owner, filename=row.filename,
            created_at=_aware(row.created_at), updated_at=_aware(row.updated_at),
            heartbeat_at=_aware(row.heartbeat_at), state=row.state, done=row.done,
            total=row.total, message=row.message, result=dict(row.result or {}),
        )

    def update(self, job_id: str, *, now: dt.datetime, done: int | None = None,
               total: int | None = None, state: str | None = None,
               message: str | None = None, result: Mapping[str, Any] | None = None) -> bool:
        values: dict[str, Any] = {"updated_at": _utc(now), "heartbeat_at": _utc(now)}
        for key, value in (("done", done), ("total", total), ("state", state),
                           ("message", message)):
            if value is not None:
                values[key] = value
        if result is not None:
            values["result"] = dict(result)
        c = t.jobs.c
        found = self._conn.execute(
            update(t.jobs).where(c.id == job_id, c.state == "running").values(**values))
        return found.rowcount == 1

    def delete_older_than(self, before: dt.datetime) -> int:
        found = self._conn.execute(delete(t.jobs).where(t.jobs.c.updated_at < _utc(before)))
        return int(found.rowcount)


__all__ = [
    "SqlAlchemyAccountRepository",
    "SqlAlchemyAuditLog",
    "SqlAlchemyBillRepository",
    "SqlAlchemyBillerRepository",
    "SqlAlchemyImportRunRepository",
    "SqlAlchemyJobRepository",
    "SqlAlchemyLedgerPaymentRepository",
    "SqlAlchemyQrBatchRepository",
    "SqlAlchemyUserRepository",
]


class SqlAlchemyRateLimitRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def all(self) -> dict[str, RateLimitOverride]:
        return {
            r.group: RateLimitOverride(r.group, r.per_minute, r.updated_by, _aware(r.updated_at))
            for r in self._conn.execute(select(t.rate_limits))
        }

    def put(self, override: RateLimitOverride) -> None:
        values = {"per_minute": override.per_minute, "updated_by": override.updated_by,
                  "updated_at": _utc(override.updated_at)}
        c = t.rate_limits.c
        done = self._conn.execute(
            update(t.rate_limits).where(c.group == override.group).values(**values))
        if done.rowcount == 0:
            self._conn.execute(insert(t.rate_limits).values(group=override.group, **values))
