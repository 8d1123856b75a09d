"""Request limits per route group: what staff set (stored, audited) and what each web
process applies.

The database is the source of truth. Each process keeps what it read for at most
`ttl_s` (5 s), so a change reaches every process on every machine within that time
without a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from selfpay.domain.errors import InvalidInput
from selfpay.services import audit
from selfpay.services.ports import RateLimitOverride, UnitOfWork

log = logging.getLogger(__name__)

GROUPS = ("pages", "api", "admin", "kiosk")
MAX_PER_MINUTE = 1_000_000
TTL_S = 5.0


@dataclass(frozen=True)
class GroupLimit:
    group: str
    per_minute: int  # 0: unlimited
    override: RateLimitOverride | None  # None: the default (SELFPAY_RATE_LIMIT_PER_MINUTE)


def list_limits(uow: UnitOfWork, *, default: int) -> list[GroupLimit]:
    with uow:
        overrides = uow.rate_limits.all()
    return [GroupLimit(g, overrides[g].per_minute if g in overrides else default,
                       overrides.get(g)) for g in GROUPS]


def set_limit(uow: UnitOfWork, *, group: str, per_minute: int, default: int, actor: str,
              ip: str, now: dt.datetime) -> tuple[int, int]:
    """Store a group's limit and audit it (`rate_limit.set`) in one transaction;
    returns (old, new). InvalidInput for an unknown group or a number out of range."""
    if group not in GROUPS:
        raise InvalidInput(key="err.rate_limit.group", group=group[:32], known=list(GROUPS))
    if not 0 <= per_minute <= MAX_PER_MINUTE:
        raise InvalidInput(key="err.rate_limit.range", max=MAX_PER_MINUTE)
    with uow:
        current = uow.rate_limits.all().get(group)
        old = current.per_minute if current else default
        uow.rate_limits.put(RateLimitOverride(group, per_minute, actor, now))
        audit.record(uow, actor=actor, action="rate_limit.set", target=group,
                     detail={"old": old, "new": per_minute}, ip=ip, now=now)
        uow.commit()
    return old, per_minute


class LimitTable:
    """The per-minute limit of each group, as this process last read it: at most one
    read of the database every `ttl_s`. When the read fails the last values stay (or the
    defaults), and the next request tries again after `ttl_s`."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], *, default: int,
                 ttl_s: float = TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._uow_factory = uow_factory
        self.default = default
        self.ttl_s = ttl_s
        self._clock = clock
        self._limits: dict[str, int] = {}
        self._read_at: float | None = None
        self._lock = threading.Lock()

    @property
    def stale(self) -> bool:
        return self._read_at is None or self._clock() - self._read_at >= self.ttl_s

    def refresh(self) -> None:
        """Read the overrides if they are stale (one thread reads, the others go on)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self.stale:
                return
            try:
                with self._uow_factory() as uow:
                    found = uow.rate_limits.all()
                self._limits = {g: o.per_minute for g, o in found.items()}
            except Exception as exc:  # noqa: BLE001 - keep limiting with what we had
                log.warning("could not read rate limits, keeping the last ones: %s",
                            type(exc).__name__)
            self._read_at = self._clock()
        finally:
            self._lock.release()

    def invalidate(self) -> None:
        """This process changed a limit: read again on the next request."""
        self._read_at = None

    def per_minute(self, group: str) -> int:
        return self._limits.get(group, self.default)
