"""Rate limits that every web process shares: moving windows (the `limits` package) in
Redis when SELFPAY_REDIS_URL is set, else in this process's memory (one process only:
the demo).

A limit store that cannot be reached lets requests through and logs a warning, at most
once a minute: an outage of Redis must not take payments down with it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
)
from limits.strategies import (
    RateLimiter as RateLimiterStrategy,
)

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.5  # a request waits at most this long for the limit store
WARN_EVERY_S = 60.0


def client_key(ip: str) -> str:
    """What a client is counted by: its IPv4 address, or its IPv6 /64 (one customer line
    gets a whole /64 and may pick any address in it). Anything else stays as it is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _part(value: str) -> str:
    # "/" separates the parts of a key in `limits`: a user name must not forge another's
    return quote(value, safe="")


class LimitStore:
    """Where the windows are kept, and a moving-window limiter over it."""

    def __init__(self, storage: Storage, *, shared: bool) -> None:
        self.storage = storage
        self.limiter = MovingWindowRateLimiter(storage)
        self.shared = shared  # True: Redis, network I/O (call it off the event loop)
        self._warned_at = -math.inf
        self._warn_lock = threading.Lock()

    def unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._warn_lock:
            if now - self._warned_at < WARN_EVERY_S:
                return
            self._warned_at = now
        log.warning("rate-limit store unavailable, letting requests through: %s",
                    type(exc).__name__)

    def hit(self, item: RateLimitItem, *parts: str,
            limiter: RateLimiterStrategy | None = None) -> int:
        """Count one event; 0 when it fits, else the seconds until one would fit."""
        keys = [_part(p) for p in parts]
        strategy = limiter or self.limiter
        try:
            if strategy.hit(item, *keys):
                return 0
            return self._wait(item, keys, strategy)
        except StorageError as exc:
            self.unavailable(exc)
            return 0

    def retry_after(self, item: RateLimitItem, *parts: str) -> int:
        keys = [_part(p) for p in parts]
        try:
            if self.limiter.test(item, *keys):
                return 0
            return self._wait(item, keys)
        except StorageError as exc:
            self.unavailable(exc)
            return 0

    def clear(self, item: RateLimitItem, *parts: str) -> None:
        try:
            self.limiter.clear(item, *[_part(p) for p in parts])
        except StorageError as exc:
            self.unavailable(exc)

    def _wait(self, item: RateLimitItem, keys: list[str],
              limiter: RateLimiterStrategy | None = None) -> int:
        stats = (limiter or self.limiter).get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def close(self) -> None:
        client = getattr(self.storage, "storage", None)
        if isinstance(self.storage, RedisStorage) and client is not None:
            client.close()


def build_store(redis_url: str, prefix: str) -> LimitStore:
    """Redis at `redis_url` (keys start with `prefix`), or memory when it is empty."""
    if not redis_url:
        return LimitStore(MemoryStorage(wrap_exceptions=True), shared=False)
    storage = RedisStorage(redis_url, key_prefix=prefix, wrap_exceptions=True,
                           socket_timeout=REDIS_TIMEOUT_S,
                           socket_connect_timeout=REDIS_TIMEOUT_S)
    return LimitStore(storage, shared=True)


def memory_store() -> LimitStore:
    return build_store("", "")


class RateLimiter:
    """At most `limit` events per (key, client) in `window_s` seconds: failed logins,
    SMS codes sent, work orders reported. Shared by all processes over Redis."""

    def __init__(self, store: LimitStore, *, name: str, limit: int = 5,
                 window_s: int = 300) -> None:
        self.store = store
        self.limit = limit
        self.window_s = window_s
        self._item = RateLimitItemPerSecond(limit, window_s, namespace=name)

    def retry_after(self, key: str, ip: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        return self.store.retry_after(self._item, key.lower(), client_key(ip))

    def record(self, key: str, ip: str) -> None:
        self.store.hit(self._item, key.lower(), client_key(ip))

    def reset(self, key: str, ip: str) -> None:
        self.store.clear(self._item, key.lower(), client_key(ip))


class RequestBudget:
    """Requests per minute per client and route group; the limit may change at any time
    (staff set it), so it is given with each request."""

    def __init__(self, store: LimitStore, *, name: str = "requests") -> None:
        self.store = store
        self.name = name
        # A fixed window (one INCR with its expiry) costs a fraction of the moving one
        # (a Lua script over a list of every hit): this runs on every request, and a
        # burst of twice the limit across a window's edge is harmless here. Logins, SMS
        # codes and work orders keep the exact moving window.
        self._limiter = FixedWindowRateLimiter(store.storage)

    @property
    def blocking(self) -> bool:
        return self.store.shared

    def spend(self, group: str, ip: str, per_minute: int) -> int:
        """Count one request; 0 when it fits, else the seconds to wait (Retry-After)."""
        if per_minute <= 0:
            return 0
        item = RateLimitItemPerMinute(per_minute, namespace=self.name)
        return self.store.hit(item, group, client_key(ip), limiter=self._limiter)


def event_budget(store: LimitStore, *, name: str, per_minute: int) -> Callable[[str], bool]:
    """A yes/no budget per key, shared over the store: True while `key` has had fewer than
    `per_minute` events this minute (the event counts), False once it is spent."""
    item = RateLimitItemPerMinute(per_minute, namespace=name)
    limiter = FixedWindowRateLimiter(store.storage)

    def spend(key: str) -> bool:
        return store.hit(item, _part(key), limiter=limiter) == 0

    return spend
