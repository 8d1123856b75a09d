"""The embedded transport: a queue in a database table (`bridge_messages`).

For `selfpay demo` (client and agent in one process) and one-machine set-ups where the
web tier and the agent share a database. A consumer claims up to `prefetch` rows by
stamping them with a lock token and a lock expiry; ack deletes the row; a consumer
that dies leaves its rows to be claimed again when their lock runs out (at least
once, like a broker redelivering after a lost connection). On PostgreSQL the claim
uses FOR UPDATE SKIP LOCKED so that agents do not wait for each other.

Consumers in the same process are woken at once by a send; others poll (every
`poll_s`, backing off to 0.5 s when idle).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from selfpay.adapters.db.bridge_tables import bridge_messages as T
from selfpay.services.bridge_ports import MessageHandler, TransportError

log = logging.getLogger(__name__)

# queue name -> (loop, event) of the consumers in this process, woken by sends.
_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
_waiters_lock = threading.Lock()


def _wake(queue: str) -> None:
    with _waiters_lock:
        targets = list(_waiters.get(queue, ()))
    for loop, event in targets:
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class _Delivery:
    body: bytes
    headers: Mapping[str, str]
    redelivered: bool
    _transport: EmbeddedTransport
    _row_id: int
    _token: str
    _done: asyncio.Event = field(default_factory=asyncio.Event)

    async def ack(self) -> None:
        if self._done.is_set():
            return
        await asyncio.to_thread(self._transport._delete, self._row_id, self._token)
        self._done.set()


class _EmbeddedSubscription:
    def __init__(self, transport: EmbeddedTransport, queue: str, handler: MessageHandler,
                 prefetch: int) -> None:
        self._transport = transport
        self._queue = queue
        self._handler = handler
        self._slots = asyncio.Semaphore(max(1, prefetch))
        self._prefetch = max(1, prefetch)
        self._event = asyncio.Event()
        self._key = (asyncio.get_running_loop(), self._event)
        self._handlers: set[asyncio.Task[None]] = set()
        with _waiters_lock:
            _waiters.setdefault(queue, set()).add(self._key)
        self._task = asyncio.create_task(self._run(), name=f"embedded-consumer:{queue}")

    async def _run(self) -> None:
        idle = self._transport.poll_s
        while True:
            free = self._prefetch - len(self._handlers)
            rows: list[tuple[int, bytes, dict[str, str], int, str]] = []
            if free > 0:
                try:
                    rows = await asyncio.to_thread(self._transport._claim, self._queue, free)
                except SQLAlchemyError as exc:
                    log.warning("embedded transport: claim failed: %s", exc)
            for row_id, body, headers, deliveries, token in rows:
                d = _Delivery(body, headers, deliveries > 1, self._transport, row_id, token)
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(d))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
            if rows:
                idle = self._transport.poll_s
                continue
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), idle)
            except TimeoutError:
                idle = min(idle * 2, 0.5)
            else:
                idle = self._transport.poll_s

    async def _handle(self, d: _Delivery) -> None:
        try:
            await self._handler(d)
        except Exception:
            # Not acked: the row comes back when its lock runs out.
            log.exception("embedded transport: handler failed; message will be redelivered")
        finally:
            self._slots.release()

    async def close(self) -> None:
        with _waiters_lock:
            _waiters.get(self._queue, set()).discard(self._key)
        self._task.cancel()
        pending = [self._task, *self._handlers]
        for t in self._handlers:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._transport._subscriptions.discard(self)


class EmbeddedTransport:
    """A Transport over a SQLAlchemy engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine, *, poll_s: float = 0.02, lock_s: float = 30.0) -> None:
        self._engine = engine
        self.poll_s = poll_s
        self.lock_s = lock_s
        self._subscriptions: set[_EmbeddedSubscription] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for sub in list(self._subscriptions):
            await sub.close()

    async def send(self, queue: str, body: bytes, *, headers: Mapping[str, str] | None = None,
                   persistent: bool = True, expires_at: float | None = None,
                   confirm: bool = True) -> None:
        # Every row is durable; `persistent` and `confirm` change nothing here.
        expires = dt.datetime.fromtimestamp(expires_at, dt.UTC) if expires_at else None
        try:
            await asyncio.to_thread(self._insert, queue, body, dict(headers or {}), expires)
        except SQLAlchemyError as exc:
            raise TransportError(f"embedded transport: send failed: {exc}") from exc
        _wake(queue)

    async def subscribe(self, queue: str, handler: MessageHandler, *,
                        prefetch: int = 8) -> _EmbeddedSubscription:
        sub = _EmbeddedSubscription(self, queue, handler, prefetch)
        self._subscriptions.add(sub)
        return sub

    # --- blocking database work, run in worker threads ------------------------------------

    def _insert(self, queue: str, body: bytes, headers: dict[str, str],
                expires: dt.datetime | None) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(T).values(queue=queue, body=body, headers=headers,
                                          created_at=_now(), expires_at=expires, deliveries=0))

    def _claim(self, queue: str, limit: int) -> list[tuple[int, bytes, dict[str, str], int, str]]:
        now = _now()
        token = uuid.uuid4().hex
        with self._engine.begin() as conn:
            conn.execute(delete(T).where(T.c.queue == queue, T.c.expires_at < now))
            candidates = (
                select(T.c.id)
                .where(T.c.queue == queue,
                       (T.c.locked_until.is_(None)) | (T.c.locked_until < now))
                .order_by(T.c.id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            ids = [r[0] for r in conn.execute(candidates)]
            if not ids:
                return []
            conn.execute(
                update(T)
                .where(T.c.id.in_(ids),
                       (T.c.locked_until.is_(None)) | (T.c.locked_until < now))
                .values(locked_until=now + dt.timedelta(seconds=self.lock_s), lock_token=token,
                        deliveries=T.c.deliveries + 1)
            )
            rows = conn.execute(
                select(T.c.id, T.c.body, T.c.headers, T.c.deliveries)
                .where(T.c.lock_token == token).order_by(T.c.id)
            ).all()
        return [(r.id, bytes(r.body), dict(r.headers), r.deliveries, token) for r in rows]

    def _delete(self, row_id: int, token: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(T).where(T.c.id == row_id, T.c.lock_token == token))
