"""Cache adapters (services.ports.Cache): Redis, shared by every process; or a TTL dict
in this process, only for a single-process site (`selfpay demo`, SELFPAY_REDIS_URL
empty). Values are stored as JSON.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis

from selfpay.services.ports import Cache, CacheUnavailable


class InProcessCache:
    """A TTL dict, oldest entries dropped beyond `max_entries`. Values go through JSON
    like Redis's, so what a caller reads back never aliases what it stored."""

    def __init__(self, *, max_entries: int = 20_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if self._clock() >= item[1]:
                del self._items[key]
                return None
            return json.loads(item[0])

    def set(self, key: str, value: Any, *, ttl_s: int) -> None:
        raw = json.dumps(value, ensure_ascii=False)
        with self._lock:
            if ttl_s <= 0:
                self._items.pop(key, None)
                return
            self._items[key] = (raw, self._clock() + ttl_s)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def close(self) -> None:
        pass


class RedisCache:
    """Keys are "<prefix>:<key>". Short socket timeouts: a page waits at most about half
    a second for a Redis that does not answer, and after a failure the cache is skipped
    for `retry_after_s` (each call raises CacheUnavailable at once), so an outage does
    not slow down every page."""

    def __init__(self, url: str, *, prefix: str = "selfpay", timeout_s: float = 0.5,
                 retry_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                                socket_connect_timeout=timeout_s)
        self.prefix = prefix
        self._retry_after = retry_after_s
        self._clock = clock
        self._down_until = 0.0

    def key(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._clock() < self._down_until:
            raise CacheUnavailable("redis: skipped after a recent failure")
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            self._down_until = self._clock() + self._retry_after
            raise CacheUnavailable(f"redis: {exc}") from exc

    def get(self, key: str) -> Any | None:
        raw = self._call(self._redis.get, self.key(key))
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:  # not ours, or cut short: as good as absent
            return None

    def set(self, key: str, value: Any, *, ttl_s: int) -> None:
        if ttl_s <= 0:
            self.delete(key)
            return
        self._call(self._redis.set, self.key(key), json.dumps(value, ensure_ascii=False),
                   ex=ttl_s)

    def delete(self, key: str) -> None:
        self._call(self._redis.delete, self.key(key))

    def close(self) -> None:
        self._redis.close()


def build_cache(redis_url: str, prefix: str) -> Cache:
    """Redis when SELFPAY_REDIS_URL is set, else the in-process dict."""
    if redis_url:
        return RedisCache(redis_url, prefix=prefix)
    return InProcessCache()
