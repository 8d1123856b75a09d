"""Repositories of the kiosk fleet over SQLAlchemy Core: devices (with their sealed
secret and enrolment code), their alarms and maintenance tasks. Like repositories.py:
they use the unit of work's Connection, never commit, store UTC and read back aware
datetimes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from selfpay.adapters.db import tables as t
from selfpay.adapters.db.repositories import (
    _aware,
    _for_update,
    _is_unique_violation,
    _new_id,
    _utc,
)
from selfpay.domain.devices import Alarm, AlarmKind, Device, DeviceState, MaintenanceTask
from selfpay.services.ports import DeviceCredentials, DuplicateKey


def _opt(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else _aware(value)


def _device(row: Row[Any]) -> Device:
    return Device(
        device_id=row.device_id, name=row.name, site=row.site, location=row.location,
        billers=tuple(str(b) for b in row.billers or ()),
        elderly_default=bool(row.elderly_default), standby=row.standby,
        state=DeviceState(row.state), created_at=_opt(row.created_at),
        enrolled_at=_opt(row.enrolled_at), revoked_at=_opt(row.revoked_at),
        last_seen_at=_opt(row.last_seen_at), readings=dict(row.readings or {}),
        payment_failures=int(row.payment_failures),
    )


def _values(device: Device) -> dict[str, Any]:
    return {
        "name": device.name, "site": device.site, "location": device.location,
        "billers": list(device.billers), "elderly_default": device.elderly_default,
        "standby": device.standby, "state": device.state.value,
        "enrolled_at": _utc(device.enrolled_at), "revoked_at": _utc(device.revoked_at),
        "last_seen_at": _utc(device.last_seen_at), "readings": device.readings,
        "payment_failures": device.payment_failures,
    }


class SqlAlchemyDeviceRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, device: Device) -> None:
        try:
            self._conn.execute(insert(t.devices).values(
                device_id=device.device_id, created_at=_utc(device.created_at),
                **_values(device)))
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise DuplicateKey(device.device_id) from exc
            raise

    def get(self, device_id: str, *, for_update: bool = False) -> Device | None:
        stmt = _for_update(select(t.devices).where(t.devices.c.device_id == device_id),
                           for_update)
        row = self._conn.execute(stmt).first()
        return None if row is None else _device(row)

    def save(self, device: Device) -> None:
        self._conn.execute(update(t.devices).where(
            t.devices.c.device_id == device.device_id).values(**_values(device)))

    def all(self) -> list[Device]:
        d = t.devices.c
        rows = self._conn.execute(select(t.devices).order_by(d.site, d.device_id)).all()
        return [_device(r) for r in rows]

    def credentials(self, device_id: str) -> DeviceCredentials | None:
        d = t.devices.c
        row = self._conn.execute(select(
            d.secret_sealed, d.enrol_code_hash, d.enrol_expires_at).where(
            d.device_id == device_id)).first()
        if row is None:
            return None
        return DeviceCredentials(secret_sealed=row.secret_sealed,
                                 enrol_code_hash=row.enrol_code_hash,
                                 enrol_expires_at=_opt(row.enrol_expires_at))

    def set_credentials(self, device_id: str, creds: DeviceCredentials) -> None:
        self._conn.execute(update(t.devices).where(t.devices.c.device_id == device_id).values(
            secret_sealed=creds.secret_sealed, enrol_code_hash=creds.enrol_code_hash,
            enrol_expires_at=_utc(creds.enrol_expires_at)))

    def silent_since(self, before: dt.datetime) -> list[Device]:
        """Enrolled devices whose last heartbeat is older than `before` (or never came)."""
        d = t.devices.c  # ix_devices_seen (state, last_seen_at)
        rows = self._conn.execute(select(t.devices).where(
            d.state == DeviceState.ENROLLED.value,
            (d.last_seen_at < _utc(before)) | d.last_seen_at.is_(None))).all()
        return [_device(r) for r in rows]


def _alarm(row: Row[Any]) -> Alarm:
    return Alarm(id=row.id, device_id=row.device_id, kind=AlarmKind(row.kind),
                 detail=row.detail, raised_at=_aware(row.raised_at),
                 cleared_at=_opt(row.cleared_at), acked_at=_opt(row.acked_at),
                 acked_by=row.acked_by, note=row.note)


class SqlAlchemyAlarmRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, alarm: Alarm) -> int:
        result = self._conn.execute(insert(t.device_alarms).values(
            device_id=alarm.device_id, kind=alarm.kind.value, detail=alarm.detail[:200],
            raised_at=_utc(alarm.raised_at), cleared_at=_utc(alarm.cleared_at),
            acked_at=_utc(alarm.acked_at), acked_by=alarm.acked_by, note=alarm.note))
        alarm.id = _new_id(result)
        return alarm.id

    def get(self, alarm_id: int, *, for_update: bool = False) -> Alarm | None:
        stmt = _for_update(select(t.device_alarms).where(t.device_alarms.c.id == alarm_id),
                           for_update)
        row = self._conn.execute(stmt).first()
        return None if row is None else _alarm(row)

    def save(self, alarm: Alarm) -> None:
        self._conn.execute(update(t.device_alarms).where(
            t.device_alarms.c.id == alarm.id).values(
            detail=alarm.detail[:200], cleared_at=_utc(alarm.cleared_at),
            acked_at=_utc(alarm.acked_at), acked_by=alarm.acked_by, note=alarm.note[:500]))

    def open(self, device_id: str = "", *, limit: int = 200) -> list[Alarm]:
        """Alarms not acknowledged yet (of one device, or of all), newest first."""
        a = t.device_alarms.c
        stmt = select(t.device_alarms).where(a.acked_at.is_(None))
        if device_id:
            stmt = stmt.where(a.device_id == device_id)
        rows = self._conn.execute(stmt.order_by(a.raised_at.desc(), a.id.desc())
                                  .limit(limit)).all()
        return [_alarm(r) for r in rows]

    def recent(self, device_id: str, *, limit: int = 20) -> list[Alarm]:
        a = t.device_alarms.c
        rows = self._conn.execute(select(t.device_alarms).where(a.device_id == device_id)
                                  .order_by(a.raised_at.desc(), a.id.desc())
                                  .limit(limit)).all()
        return [_alarm(r) for r in rows]


def _task(row: Row[Any]) -> MaintenanceTask:
    return MaintenanceTask(id=row.id, device_id=row.device_id, title=row.title,
                           period_days=row.period_days, last_done_at=_opt(row.last_done_at),
                           created_at=_aware(row.created_at), last_note=row.last_note,
                           last_done_by=row.last_done_by)


class SqlAlchemyMaintenanceRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, task: MaintenanceTask) -> int:
        result = self._conn.execute(insert(t.device_tasks).values(
            device_id=task.device_id, title=task.title, period_days=task.period_days,
            created_at=_utc(task.created_at), last_done_at=_utc(task.last_done_at),
            last_done_by=task.last_done_by, last_note=task.last_note))
        task.id = _new_id(result)
        return task.id

    def get(self, task_id: int, *, for_update: bool = False) -> MaintenanceTask | None:
        stmt = _for_update(select(t.device_tasks).where(t.device_tasks.c.id == task_id),
                           for_update)
        row = self._conn.execute(stmt).first()
        return None if row is None else _task(row)

    def save(self, task: MaintenanceTask) -> None:
        self._conn.execute(update(t.device_tasks).where(t.device_tasks.c.id == task.id).values(
            title=task.title, period_days=task.period_days,
            last_done_at=_utc(task.last_done_at), last_done_by=task.last_done_by,
            last_note=task.last_note[:500]))

    def for_device(self, device_id: str) -> list[MaintenanceTask]:
        k = t.device_tasks.c
        rows = self._conn.execute(select(t.device_tasks).where(k.device_id == device_id)
                                  .order_by(k.id)).all()
        return [_task(r) for r in rows]

    def all(self) -> list[MaintenanceTask]:
        k = t.device_tasks.c
        rows = self._conn.execute(select(t.device_tasks).order_by(k.device_id, k.id)).all()
        return [_task(r) for r in rows]
