"""The kiosk fleet: register, enrol and revoke terminals, take their signed heartbeats,
raise and acknowledge alarms, and keep their maintenance schedule.

Trust: a terminal proves who it is with its own secret, issued once at enrolment in
exchange for a one-time code that staff read off the console. The server keeps the
secret sealed (AES-GCM, a key derived from SELFPAY_SECRET_KEY) because it must check
HMACs with it; the code is kept only as an HMAC. A heartbeat is signed over

    device_id "\\n" timestamp "\\n" raw body        (HMAC-SHA256, hex, header "v1=...")

and refused when the signature is wrong, the timestamp is more than 5 minutes off or not
newer than the last one taken (a replay), or a reading is impossible. Revoking a device
drops its secret: its next heartbeat is refused.

Every staff action (register, change, enrolment code, revoke, acknowledge, task done)
is one transaction with its audit entry. Alarms go to staff through the Notifier (an
`alert` message to SELFPAY_ALERT_TO, or the console's outbox) in the same transaction
that raises them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from selfpay.domain.accounts import normalize_biller
from selfpay.domain.devices import (
    DEFAULT_TASKS,
    PAYMENT_FAILURES_ALARM,
    READING_ALARMS,
    Alarm,
    AlarmKind,
    Device,
    DeviceState,
    InvalidDevice,
    MaintenanceTask,
    Readings,
    alarms_for,
    normalize_device_id,
    offline_after,
    parse_readings,
)
from selfpay.domain.errors import DomainError, NotFound
from selfpay.services import audit
from selfpay.services.ports import (
    DeviceCredentials,
    DuplicateKey,
    Message,
    SealBroken,
    SecretBox,
    UnitOfWork,
)

log = logging.getLogger(__name__)

ENROL_TTL = dt.timedelta(hours=24)
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # read off a screen, typed on a terminal
CODE_LEN = 10  # 50 bits; tried at most a few times a minute (rate-limited by the web tier)
HEADER_TIMESTAMP = "X-Selfpay-Timestamp"
HEADER_SIGNATURE = "X-Selfpay-Signature"


class DeviceNotFound(NotFound):
    default_key = "err.device.not_found"


class DeviceRefused(DomainError):
    """A terminal that cannot be let in: not enrolled, revoked, a bad code or signature.
    One message for all, so that a prober learns nothing from it."""

    default_key = "err.device.refused"


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    device: Device
    raised: list[Alarm]
    cleared: list[AlarmKind]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def signature(secret: str, device_id: str, timestamp: str, body: bytes) -> str:
    """The v1 heartbeat signature (the agent signs, the server checks)."""
    message = f"{device_id}\n{timestamp}\n".encode("ascii") + body
    return "v1=" + hmac.new(secret.encode("ascii"), message, hashlib.sha256).hexdigest()


class Devices:
    def __init__(self, *, uow_factory: Callable[[], UnitOfWork], box: SecretBox,
                 code_key: bytes, alert_to: Iterable[str] = (),
                 known_billers: Callable[[], set[str]] | None = None,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        """`box` seals device secrets; `code_key` keys the HMAC of enrolment codes;
        `alert_to` are the e-mail addresses or phone numbers alarms go to (none: the
        console's outbox only)."""
        self._uow = uow_factory
        self._box = box
        self._code_key = code_key
        self._alert_to = tuple(alert_to) or ("",)
        self._known_billers = known_billers
        self._clock = clock

    # --- staff -----------------------------------------------------------------------

    def register(self, *, actor: str, ip: str = "", device_id: str, name: str,
                 site: str = "", location: str = "", billers: Iterable[str] = (),
                 elderly_default: bool = False, standby: str = "") -> Device:
        now = self._clock()
        device = Device(device_id=normalize_device_id(device_id), name=_text(name, 64, "name",
                                                                            required=True),
                        site=_text(site, 64, "site"), location=_text(location, 128, "location"),
                        billers=self._billers(billers), elderly_default=bool(elderly_default),
                        standby=_standby(standby, device_id), created_at=now)
        with self._uow() as uow:
            if device.standby and uow.devices.get(device.standby) is None:
                raise InvalidDevice(key="err.device.standby", value=device.standby)
            try:
                uow.devices.add(device)
            except DuplicateKey as exc:
                raise InvalidDevice(key="err.device.exists", value=device.device_id) from exc
            for title, days in DEFAULT_TASKS:
                uow.maintenance.add(MaintenanceTask(None, device.device_id, title, days, None,
                                                    now))
            audit.record(uow, actor=actor, action="device.add", target=device.device_id,
                         detail=_public(device), ip=ip, now=now)
            uow.commit()
        return device

    def update(self, device_id: str, *, actor: str, ip: str = "",
               **changes: Any) -> Device:
        allowed = {"name", "site", "location", "billers", "elderly_default", "standby"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidDevice(key="err.device.field", value=", ".join(sorted(unknown)))
        now = self._clock()
        with self._uow() as uow:
            device = self._get(uow, device_id, for_update=True)
            before = _public(device)
            if "name" in changes:
                device.name = _text(changes["name"], 64, "name", required=True)
            if "site" in changes:
                device.site = _text(changes["site"], 64, "site")
            if "location" in changes:
                device.location = _text(changes["location"], 128, "location")
            if "billers" in changes:
                device.billers = self._billers(changes["billers"])
            if "elderly_default" in changes:
                device.elderly_default = bool(changes["elderly_default"])
            if "standby" in changes:
                device.standby = _standby(changes["standby"], device.device_id)
                if device.standby and uow.devices.get(device.standby) is None:
                    raise InvalidDevice(key="err.device.standby", value=device.standby)
            after = _public(device)
            changed = {k: after[k] for k in after if after[k] != before[k]}
            if changed:
                uow.devices.save(device)
                audit.record(uow, actor=actor, action="device.update", target=device.device_id,
                             detail=changed, ip=ip, now=now)
                uow.commit()
        return device

    def issue_enrolment_code(self, device_id: str, *, actor: str, ip: str = "") -> str:
        """A new one-time code for this device (any earlier one stops working), valid
        ENROL_TTL. Shown once; only its HMAC is kept."""
        code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(CODE_LEN))
        now = self._clock()
        with self._uow() as uow:
            device = self._get(uow, device_id, for_update=True)
            creds = uow.devices.credentials(device.device_id) or DeviceCredentials()
            uow.devices.set_credentials(device.device_id, DeviceCredentials(
                secret_sealed=creds.secret_sealed, enrol_code_hash=self._code_hash(
                    device.device_id, code), enrol_expires_at=now + ENROL_TTL))
            audit.record(uow, actor=actor, action="device.enrol_code", target=device.device_id,
                         detail={"expires_at": (now + ENROL_TTL).isoformat()}, ip=ip, now=now)
            uow.commit()
        return code

    def revoke(self, device_id: str, *, actor: str, ip: str = "") -> Device:
        """Refused at once: its secret and any pending code are dropped."""
        now = self._clock()
        with self._uow() as uow:
            device = self._get(uow, device_id, for_update=True)
            device.state = DeviceState.REVOKED
            device.revoked_at = now
            uow.devices.save(device)
            uow.devices.set_credentials(device.device_id, DeviceCredentials())
            audit.record(uow, actor=actor, action="device.revoke", target=device.device_id,
                         ip=ip, now=now)
            uow.commit()
        log.warning("device %s revoked by %s", device.device_id, actor)
        return device

    def acknowledge(self, alarm_id: int, *, actor: str, note: str = "", ip: str = "") -> Alarm:
        now = self._clock()
        with self._uow() as uow:
            alarm = uow.alarms.get(alarm_id, for_update=True)
            if alarm is None:
                raise DeviceNotFound(key="err.alarm.not_found", value=str(alarm_id))
            if alarm.acked_at is None:
                alarm.acked_at = now
                alarm.acked_by = actor
                alarm.note = _text(note, 500, "note")
                uow.alarms.save(alarm)
                audit.record(uow, actor=actor, action="device.alarm_ack", target=alarm.device_id,
                             detail={"alarm": alarm.id, "kind": alarm.kind.value,
                                     "note": alarm.note}, ip=ip, now=now)
                uow.commit()
        return alarm

    def add_task(self, device_id: str, *, title: str, period_days: int, actor: str,
                 ip: str = "") -> MaintenanceTask:
        if type(period_days) is not int or not 1 <= period_days <= 3660:
            raise InvalidDevice(key="err.device.period", value=str(period_days)[:12])
        now = self._clock()
        with self._uow() as uow:
            device = self._get(uow, device_id)
            task = MaintenanceTask(None, device.device_id, _text(title, 100, "title",
                                                                 required=True),
                                   period_days, None, now)
            uow.maintenance.add(task)
            audit.record(uow, actor=actor, action="device.task_add", target=device.device_id,
                         detail={"title": task.title, "period_days": period_days}, ip=ip,
                         now=now)
            uow.commit()
        return task

    def task_done(self, task_id: int, *, actor: str, note: str = "",
                  ip: str = "") -> MaintenanceTask:
        now = self._clock()
        with self._uow() as uow:
            task = uow.maintenance.get(task_id, for_update=True)
            if task is None:
                raise DeviceNotFound(key="err.task.not_found", value=str(task_id))
            task.last_done_at = now
            task.last_done_by = actor
            task.last_note = _text(note, 500, "note")
            uow.maintenance.save(task)
            audit.record(uow, actor=actor, action="device.task_done", target=task.device_id,
                         detail={"task": task.id, "title": task.title, "note": task.last_note},
                         ip=ip, now=now)
            uow.commit()
        return task

    # --- the terminal ----------------------------------------------------------------

    def enroll(self, device_id: str, code: str) -> str:
        """Trade a one-time code for the device's secret (returned once; the code is
        spent). DeviceRefused for anything wrong, with one message."""
        device_id = _device_id_or_refuse(device_id)
        now = self._clock()
        with self._uow() as uow:
            device = uow.devices.get(device_id, for_update=True)
            creds = uow.devices.credentials(device_id) if device is not None else None
            given = self._code_hash(device_id, code.strip().upper()[:32])
            if (device is None or creds is None or not creds.enrol_code_hash
                    or creds.enrol_expires_at is None or now >= creds.enrol_expires_at
                    or not hmac.compare_digest(given, creds.enrol_code_hash)):
                log.warning("enrolment of %r refused", device_id)
                raise DeviceRefused()
            secret = secrets.token_hex(32)
            device.state = DeviceState.ENROLLED
            device.enrolled_at = now
            device.revoked_at = None
            uow.devices.save(device)
            uow.devices.set_credentials(device_id, DeviceCredentials(
                secret_sealed=self._box.seal(secret, to=_aad(device_id))))
            audit.record(uow, actor=f"device:{device_id}", action="device.enrolled",
                         target=device_id, now=now)
            uow.commit()
        log.info("device %s enrolled", device_id)
        return secret

    def authenticate(self, device_id: str, headers: Mapping[str, str], body: bytes) -> Device:
        """The enrolled device that signed this request, or DeviceRefused."""
        device_id = _device_id_or_refuse(device_id)
        lowered = {k.lower(): v for k, v in headers.items()}
        stamp = lowered.get(HEADER_TIMESTAMP.lower(), "")
        given = lowered.get(HEADER_SIGNATURE.lower(), "")
        now = self._clock()
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise DeviceRefused("bad timestamp")
        sent = dt.datetime.fromtimestamp(int(stamp), dt.UTC)
        if abs(now - sent) > MAX_CLOCK_SKEW:
            raise DeviceRefused("timestamp more than 5 minutes off")
        with self._uow() as uow:
            device = uow.devices.get(device_id)
            creds = uow.devices.credentials(device_id)
        if device is None or creds is None or device.state is not DeviceState.ENROLLED \
                or not creds.secret_sealed:
            raise DeviceRefused("not enrolled")
        try:
            secret = self._box.open(creds.secret_sealed, to=_aad(device_id))
        except SealBroken as exc:
            raise DeviceRefused("its secret cannot be opened (secret key changed?)") from exc
        expected = signature(secret, device_id, stamp, body)
        if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8")):
            raise DeviceRefused("bad signature")
        last = device.readings.get("sent_at", 0)
        if isinstance(last, int) and int(stamp) <= last:
            raise DeviceRefused("a replay (not newer than the last heartbeat)")
        return device

    def heartbeat(self, device_id: str, headers: Mapping[str, str],
                  body: bytes) -> HeartbeatResult:
        """Check the signature and the readings, record them, raise and clear alarms."""
        device = self.authenticate(device_id, headers, body)
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise DeviceRefused("body is not JSON") from exc
        readings = parse_readings(doc.get("readings") if isinstance(doc, dict) else None)
        sent_at = int({k.lower(): v for k, v in headers.items()}[HEADER_TIMESTAMP.lower()])
        now = self._clock()
        with self._uow() as uow:
            current = uow.devices.get(device.device_id, for_update=True)
            if current is None or current.state is not DeviceState.ENROLLED:
                raise DeviceRefused("revoked meanwhile")
            last = current.readings.get("sent_at", 0)
            if isinstance(last, int) and sent_at <= last:
                raise DeviceRefused("a replay (not newer than the last heartbeat)")
            current.readings = {**readings.as_dict(), "sent_at": sent_at}
            current.last_seen_at = now
            uow.devices.save(current)
            raised, cleared = self._apply_alarms(uow, current, readings, now)
            uow.commit()
        return HeartbeatResult(current, raised, cleared)

    def payment_outcome(self, device_id: str, *, ok: bool) -> Alarm | None:
        """A payment made at this terminal went through or failed: failures in a row
        raise an alarm (a broken scanner, a network fault at that site)."""
        now = self._clock()
        with self._uow() as uow:
            device = uow.devices.get(device_id, for_update=True)
            if device is None:
                return None
            device.payment_failures = 0 if ok else device.payment_failures + 1
            uow.devices.save(device)
            alarm = None
            if not ok and device.payment_failures == PAYMENT_FAILURES_ALARM:
                alarm = self._raise(uow, device, AlarmKind.PAYMENT_FAILURES,
                                    f"{device.payment_failures}", now)
            uow.commit()
        return alarm

    def sweep(self) -> list[Alarm]:
        """Raise `offline` for every enrolled device silent for MISSED_BEATS periods
        (once per silence: a heartbeat clears it). Run by the worker."""
        now = self._clock()
        raised = []
        with self._uow() as uow:
            silent = uow.devices.silent_since(now - offline_after())
            for device in silent:
                if any(a.kind is AlarmKind.OFFLINE and a.cleared_at is None
                       for a in uow.alarms.open(device.device_id)):
                    continue
                seen = device.last_seen_at.isoformat() if device.last_seen_at else "never"
                raised.append(self._raise(uow, device, AlarmKind.OFFLINE, seen, now))
            uow.commit()
        return raised

    # --- reading the fleet -------------------------------------------------------------

    def get(self, device_id: str) -> Device:
        with self._uow() as uow:
            return self._get(uow, device_id)

    def kiosk(self, device_id: str) -> Device:
        """The device a kiosk page is for; DeviceRefused unless it is enrolled."""
        try:
            device_id = normalize_device_id(device_id)
        except InvalidDevice as exc:
            raise DeviceRefused() from exc
        with self._uow() as uow:
            device = uow.devices.get(device_id)
        if device is None or device.state is not DeviceState.ENROLLED:
            raise DeviceRefused()
        return device

    # --- inside ---------------------------------------------------------------------

    def _apply_alarms(self, uow: UnitOfWork, device: Device, readings: Readings,
                      now: dt.datetime) -> tuple[list[Alarm], list[AlarmKind]]:
        wanted = alarms_for(readings)
        open_alarms = {a.kind: a for a in uow.alarms.open(device.device_id)
                       if a.cleared_at is None}
        raised = [self._raise(uow, device, kind, detail, now)
                  for kind, detail in wanted.items() if kind not in open_alarms]
        cleared = []
        for kind, alarm in open_alarms.items():
            if kind is AlarmKind.OFFLINE or (kind in READING_ALARMS and kind not in wanted):
                alarm.cleared_at = now
                uow.alarms.save(alarm)
                cleared.append(kind)
        return raised, cleared

    def _raise(self, uow: UnitOfWork, device: Device, kind: AlarmKind, detail: str,
               now: dt.datetime) -> Alarm:
        alarm = Alarm(None, device.device_id, kind, detail, now)
        uow.alarms.add(alarm)
        where = " · ".join(x for x in (device.site, device.location) if x)
        for to in self._alert_to:
            uow.messages.add(Message(
                id=None, kind="alert", to=to,
                subject=f"[selfpay] 设备告警 {device.device_id}: {kind.value}",
                body=f"设备 / device: {device.device_id} {device.name} ({where})\n"
                     f"告警 / alarm: {kind.value} {detail}\n时间 / at: {now.isoformat()}",
                created_at=now))
        log.warning("device %s alarm %s %s", device.device_id, kind.value, detail)
        return alarm

    def _get(self, uow: UnitOfWork, device_id: str, *, for_update: bool = False) -> Device:
        device = uow.devices.get(normalize_device_id(device_id), for_update=for_update)
        if device is None:
            raise DeviceNotFound(key="err.device.not_found", value=str(device_id)[:40])
        return device

    def _billers(self, raw: Iterable[str] | str) -> tuple[str, ...]:
        items = raw.replace("，", ",").split(",") if isinstance(raw, str) else list(raw)
        codes = tuple(dict.fromkeys(normalize_biller(x) for x in items if str(x).strip()))
        if self._known_billers is not None:
            unknown = [c for c in codes if c not in self._known_billers()]
            if unknown:
                raise InvalidDevice(key="err.device.billers", value=", ".join(unknown))
        return codes

    def _code_hash(self, device_id: str, code: str) -> str:
        return hmac.new(self._code_key, f"device-enrol/v1|{device_id}|{code}".encode(),
                        hashlib.sha256).hexdigest()


def _aad(device_id: str) -> str:
    return f"device:{device_id}"


def _device_id_or_refuse(raw: str) -> str:
    try:
        return normalize_device_id(raw)
    except InvalidDevice as exc:
        raise DeviceRefused() from exc


def _standby(raw: object, device_id: str) -> str:
    if not raw or (isinstance(raw, str) and not raw.strip()):
        return ""
    standby = normalize_device_id(raw)
    if standby == normalize_device_id(device_id):
        raise InvalidDevice(key="err.device.standby_self", value=standby)
    return standby


def _text(raw: object, size: int, field: str, *, required: bool = False) -> str:
    text = " ".join(raw.split()) if isinstance(raw, str) else ""
    if required and not text:
        raise InvalidDevice(key="err.device.required", field=field)
    if len(text) > size or not text.isprintable():
        raise InvalidDevice(key="err.device.text", field=field, max=size)
    return text


def _public(device: Device) -> dict[str, Any]:
    return {"name": device.name, "site": device.site, "location": device.location,
            "billers": list(device.billers), "elderly_default": device.elderly_default,
            "standby": device.standby}
