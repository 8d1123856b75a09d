"""The audit trail. record() writes in the caller's transaction; the caller commits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from selfpay.services.ports import AuditEntry, UnitOfWork


def record(
    uow: UnitOfWork,
    *,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
    ip: str = "",
    now: dt.datetime,
) -> AuditEntry:
    entry = AuditEntry(
        id=None, at=now, actor=actor, action=action, target=target,
        detail=dict(detail or {}), ip=ip,
    )
    uow.audit.record(entry)
    return entry
