"""The DMZ's short memory of account summaries (what customers owe), over the site's
Cache (adapters/cache.py: Redis shared by every web process, or in this process).

Used by BridgeBillingSystem only when the billing system cannot answer, so that a short
intranet outage does not stop customers from seeing their bills. Entries live at most
`max_age_s` (30 minutes at most, enforced by the settings) and a payment posting for an
account removes its entry.
"""

from __future__ import annotations

import math
import time

from selfpay.adapters.bridge.codec import CodecError, summary_from_json, summary_to_json
from selfpay.domain.accounts import AccountSummary
from selfpay.services.ports import Cache, CacheUnavailable


class SummaryCache:
    def __init__(self, cache: Cache, max_age_s: float, *, owns: bool = False) -> None:
        """`owns`: close() closes `cache` too (a cache of its own, not the site's)."""
        self.max_age_s = max_age_s
        self._cache = cache
        self._owns = owns

    @staticmethod
    def _key(biller: str, account: str) -> str:
        return f"summary:{biller}:{account}"

    def get(self, biller: str, account: str) -> tuple[AccountSummary, float] | None:
        """The summary and the UNIX time it was stored, if younger than max_age_s."""
        try:
            doc = self._cache.get(self._key(biller, account))
        except CacheUnavailable:
            return None
        if not isinstance(doc, dict):
            return None
        try:
            summary, at = summary_from_json(doc["summary"]), float(doc["at"])
        except (CodecError, KeyError, TypeError, ValueError):
            return None
        return None if time.time() - at > self.max_age_s else (summary, at)

    def put(self, summary: AccountSummary) -> None:
        if self.max_age_s <= 0:
            return
        doc = {"summary": summary_to_json(summary), "at": time.time()}
        try:
            self._cache.set(self._key(summary.biller, summary.account), doc,
                            ttl_s=math.ceil(self.max_age_s))
        except CacheUnavailable:
            pass  # a cache that cannot store is only a cache that forgets

    def invalidate(self, biller: str, account: str) -> None:
        # A failed delete would leave a stale answer: let it raise (the posting fails and
        # is retried by the outbox) rather than show paid bills as owed.
        self._cache.delete(self._key(biller, account))

    def close(self) -> None:
        close = getattr(self._cache, "close", None)  # the port has none; adapters do
        if self._owns and callable(close):
            close()
