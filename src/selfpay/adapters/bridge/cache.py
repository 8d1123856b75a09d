"""The DMZ's short memory of account summaries (what customers owe).

Used by BridgeBillingSystem only when the billing system cannot answer, so that a short
intranet outage does not stop customers from seeing their bills. Entries live at most
`max_age_s` (30 minutes at most, enforced by the settings) and a payment posting for an
account removes its entry. In-process by default; Redis shares it between web
instances (`SELFPAY_BRIDGE_CACHE_URL=redis://127.0.0.1:6379/0`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from selfpay.adapters.bridge.codec import CodecError, summary_from_json, summary_to_json
from selfpay.domain.accounts import AccountSummary


class SummaryCache(Protocol):
    max_age_s: float

    def get(self, biller: str, account: str) -> tuple[AccountSummary, float] | None:
        """The summary and the UNIX time it was stored, if younger than max_age_s."""
        ...

    def put(self, summary: AccountSummary) -> None: ...
    def invalidate(self, biller: str, account: str) -> None: ...
    def close(self) -> None: ...


class InProcessSummaryCache:
    def __init__(self, max_age_s: float, *, max_entries: int = 20_000) -> None:
        self.max_age_s = max_age_s
        self._max = max_entries
        self._items: OrderedDict[tuple[str, str], tuple[AccountSummary, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, biller: str, account: str) -> tuple[AccountSummary, float] | None:
        with self._lock:
            item = self._items.get((biller, account))
            if item is None:
                return None
            if time.time() - item[1] > self.max_age_s:
                del self._items[(biller, account)]
                return None
            return item

    def put(self, summary: AccountSummary) -> None:
        if self.max_age_s <= 0:
            return
        with self._lock:
            key = (summary.biller, summary.account)
            self._items[key] = (summary, time.time())
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def invalidate(self, biller: str, account: str) -> None:
        with self._lock:
            self._items.pop((biller, account), None)

    def close(self) -> None:
        pass


class RedisSummaryCache:
    def __init__(self, url: str, max_age_s: float, *, prefix: str = "selfpay:summary:") -> None:
        import redis

        self.max_age_s = max_age_s
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=0.5,
                                                socket_connect_timeout=0.5)
        self._prefix = prefix

    def _key(self, biller: str, account: str) -> str:
        return f"{self._prefix}{biller}:{account}"

    def get(self, biller: str, account: str) -> tuple[AccountSummary, float] | None:
        import redis

        try:
            raw = self._redis.get(self._key(biller, account))
        except redis.RedisError:
            return None
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return summary_from_json(doc["summary"]), float(doc["at"])
        except (CodecError, KeyError, TypeError, ValueError):
            return None

    def put(self, summary: AccountSummary) -> None:
        import redis

        if self.max_age_s <= 0:
            return
        doc = {"summary": summary_to_json(summary), "at": time.time()}
        try:
            self._redis.set(self._key(summary.biller, summary.account),
                            json.dumps(doc, ensure_ascii=False), px=int(self.max_age_s * 1000))
        except redis.RedisError:
            pass  # a cache that cannot store is only a cache that forgets

    def invalidate(self, biller: str, account: str) -> None:
        # A failed delete would leave a stale answer: let it raise (the posting fails and
        # is retried by the outbox) rather than show paid bills as owed.
        self._redis.delete(self._key(biller, account))

    def close(self) -> None:
        self._redis.close()
