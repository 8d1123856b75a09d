"""An account's recent payments (the code page's "近期缴费"), read through a cache.

The planning study's "account history cached in Redis for 30 minutes": entries live
`ttl_s` (SELFPAY_HISTORY_CACHE_S) and a posting for the account deletes its entry, so a
customer sees a new payment right after it is posted. The cache holds integer fen and
ISO times, never floats. A cache that cannot answer is skipped with a warning: the
database answers instead, and a payment page never fails because of the cache.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from selfpay.services.ports import Cache, CacheUnavailable, RecentPayment, UnitOfWork

log = logging.getLogger(__name__)

HISTORY_TTL_S = 1800
HISTORY_LENGTH = 5
_VERSION = 1  # of the cached document; another version is read as a miss


def history_key(biller: str, account: str) -> str:
    return f"history:{biller}:{account}"


def _to_json(items: list[RecentPayment]) -> dict[str, Any]:
    return {"v": _VERSION, "items": [
        {"order_no": p.order_no, "amount_fen": p.amount_fen, "channel": p.channel,
         "paid_at": p.paid_at.isoformat()} for p in items]}


def _from_json(doc: Any) -> list[RecentPayment] | None:
    """None when the document is not one we wrote (then the database answers)."""
    if not isinstance(doc, dict) or doc.get("v") != _VERSION:
        return None
    try:
        items = [RecentPayment(order_no=str(i["order_no"]), amount_fen=i["amount_fen"],
                               channel=str(i["channel"]),
                               paid_at=dt.datetime.fromisoformat(i["paid_at"]))
                 for i in doc["items"]]
    except (KeyError, TypeError, ValueError):
        return None
    if not all(type(p.amount_fen) is int for p in items):
        return None  # money is integer fen, never a float
    return items


class AccountHistory:
    def __init__(self, *, uow_factory: Callable[[], UnitOfWork], cache: Cache,
                 ttl_s: int = HISTORY_TTL_S, length: int = HISTORY_LENGTH) -> None:
        self._uow_factory = uow_factory
        self._cache = cache
        self._ttl_s = ttl_s
        self._length = length

    def recent(self, biller: str, account: str) -> list[RecentPayment]:
        """The account's last paid or posted orders, newest first."""
        key = history_key(biller, account)
        reachable = True
        try:
            cached = _from_json(self._cache.get(key))
        except CacheUnavailable as exc:
            log.warning("history cache unavailable, reading the database: %s", exc)
            cached, reachable = None, False
        if cached is not None:
            return cached
        with self._uow_factory() as uow:
            items = uow.orders.recent_paid(biller, account, limit=self._length)
        if reachable and self._ttl_s > 0:
            try:
                self._cache.set(key, _to_json(items), ttl_s=self._ttl_s)
            except CacheUnavailable as exc:
                log.warning("history cache unavailable, not stored: %s", exc)
        return items

    def forget(self, biller: str, account: str) -> None:
        """Drop the account's entry (a payment was posted). Raises CacheUnavailable."""
        self._cache.delete(history_key(biller, account))
