"""The kiosk fleet on SQLite and PostgreSQL: registration, enrolment, signed heartbeats,
alarms and their acknowledgement, offline detection, revocation, maintenance."""

from __future__ import annotations

import datetime as dt
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.adapters.secretbox import AesGcmBox, derive_key
from selfpay.bootstrap import DEVICE_SECRET_PURPOSE, Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Biller
from selfpay.domain.devices import AlarmKind, DeviceState, InvalidDevice, InvalidReading
from selfpay.entrypoints.web.app import create_app
from selfpay.services.devices import (
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    DeviceRefused,
    Devices,
    signature,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRET_KEY = "test-secret-key-for-devices-0123456789"
START = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
GOOD = {"app_version": "0.9.0", "uptime_s": 3600, "disk_free_pct": 60.0,
        "cpu_temp_c": 48.0, "temp_c": 24.5, "humidity_pct": 40.0, "ups": "online",
        "ups_charge_pct": 100.0, "printer": "ok"}


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@dataclass
class Fleet:
    container: Container
    devices: Devices
    clock: Clock

    def register(self, device_id: str = "k-0001", **kwargs: object):
        values: dict[str, object] = {"name": "一号机", "site": "幸福小区", "location": "东门"}
        values.update(kwargs)
        return self.devices.register(actor="admin", device_id=device_id, **values)  # type: ignore[arg-type]

    def enrolled(self, device_id: str = "k-0001") -> str:
        self.register(device_id)
        code = self.devices.issue_enrolment_code(device_id, actor="admin")
        return self.devices.enroll(device_id, code)

    def beat(self, device_id: str, secret: str, readings: dict[str, object] | None = None,
             *, at: dt.datetime | None = None, forge: bool = False):
        body = json.dumps({"readings": readings or GOOD}).encode()
        stamp = str(int((at or self.clock.now).timestamp()))
        sig = signature(secret + ("x" if forge else ""), device_id, stamp, body)
        return self.devices.heartbeat(device_id, {HEADER_TIMESTAMP: stamp,
                                                  HEADER_SIGNATURE: sig}, body)

    def messages(self, kind: str = "alert"):
        with self.container.uow_factory() as uow:
            return uow.messages.list(kind=kind, limit=100).items

    def audit(self, action: str):
        with self.container.uow_factory() as uow:
            return [e for e in uow.audit.list(limit=200).items if e.action == action]


@pytest.fixture
def container(tmp_path, db_url: str) -> Iterator[Container]:
    from selfpay.adapters.db.migrate import upgrade

    settings = load_settings(data_dir=tmp_path, database_url=db_url, env="development",
                             secret_key=SECRET_KEY, alert_to="ops@example.cn",
                             public_base_url="https://pay.example.cn")
    upgrade(settings.sqlalchemy_url)
    built = bootstrap(settings)
    with built.uow_factory() as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.billers.add(Biller("WATER", "水费", "Water"))
        uow.commit()
    yield built
    built.close()


@pytest.fixture
def fleet(container: Container) -> Fleet:
    clock = Clock()
    devices = Devices(uow_factory=container.uow_factory,
                      box=AesGcmBox(derive_key(SECRET_KEY, purpose=DEVICE_SECRET_PURPOSE)),
                      code_key=b"k" * 32, alert_to=["ops@example.cn"],
                      known_billers=lambda: {"ELEC", "WATER"}, clock=clock)
    return Fleet(container, devices, clock)


# --- registration ------------------------------------------------------------------------


def test_a_device_is_registered_with_its_schedule_and_audited(fleet: Fleet) -> None:
    device = fleet.register(billers="elec, water", elderly_default=True)
    assert device.device_id == "k-0001" and device.billers == ("ELEC", "WATER")
    assert device.state is DeviceState.REGISTERED and device.elderly_default
    with fleet.container.uow_factory() as uow:
        [task] = uow.maintenance.for_device("k-0001")
    assert task.period_days == 30 and task.due_at() == START + dt.timedelta(days=30)
    [entry] = fleet.audit("device.add")
    assert entry.actor == "admin" and entry.detail["billers"] == ["ELEC", "WATER"]


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"device_id": "K 1"}, "err.device.id"),
    ({"name": ""}, "err.device.required"),
    ({"billers": "GAS"}, "err.device.billers"),
    ({"standby": "k-0009"}, "err.device.standby"),
    ({"standby": "k-0001"}, "err.device.standby_self"),
])
def test_bad_registrations_change_nothing(fleet: Fleet, kwargs: dict[str, object],
                                          key: str) -> None:
    values: dict[str, object] = {"device_id": "k-0001"}
    values.update(kwargs)
    device_id = str(values.pop("device_id"))
    with pytest.raises(InvalidDevice) as caught:
        fleet.register(device_id, **values)
    assert caught.value.key == key
    with fleet.container.uow_factory() as uow:
        assert uow.devices.all() == [] and uow.maintenance.all() == []
    assert fleet.audit("device.add") == []


# --- enrolment ---------------------------------------------------------------------------


def test_an_enrolment_code_works_once_and_is_kept_only_as_a_hash(fleet: Fleet) -> None:
    fleet.register()
    code = fleet.devices.issue_enrolment_code("k-0001", actor="admin")
    with fleet.container.uow_factory() as uow:
        creds = uow.devices.credentials("k-0001")
    assert creds is not None and code not in creds.enrol_code_hash
    secret = fleet.devices.enroll("k-0001", code.lower())  # typed in lower case: fine
    assert len(secret) == 64
    with fleet.container.uow_factory() as uow:
        creds = uow.devices.credentials("k-0001")
        device = uow.devices.get("k-0001")
    assert creds is not None and secret not in creds.secret_sealed
    assert device is not None and device.state is DeviceState.ENROLLED
    with pytest.raises(DeviceRefused):
        fleet.devices.enroll("k-0001", code)  # spent


def test_wrong_expired_or_unknown_enrolments_are_refused_alike(fleet: Fleet) -> None:
    fleet.register()
    code = fleet.devices.issue_enrolment_code("k-0001", actor="admin")
    for device_id, given in (("k-0001", "WRONGCODE1"), ("k-0404", code), ("../x", code)):
        with pytest.raises(DeviceRefused) as caught:
            fleet.devices.enroll(device_id, given)
        assert caught.value.localized("en") == "This terminal is not enrolled, or it was revoked."
    fleet.clock.advance(hours=25)
    with pytest.raises(DeviceRefused):
        fleet.devices.enroll("k-0001", code)


# --- heartbeats --------------------------------------------------------------------------


def test_a_signed_heartbeat_is_taken_and_the_device_is_online(fleet: Fleet) -> None:
    secret = fleet.enrolled()
    result = fleet.beat("k-0001", secret)
    assert result.raised == [] and result.device.online(fleet.clock.now)
    assert result.device.readings["temp_c"] == 24.5 and result.device.readings["ups"] == "online"
    fleet.clock.advance(seconds=91)
    assert not fleet.devices.get("k-0001").online(fleet.clock.now)  # 3 beats missed


@pytest.mark.parametrize("how", ["forged", "replay", "stale", "revoked"])
def test_a_heartbeat_that_cannot_be_trusted_is_refused_and_changes_nothing(
        fleet: Fleet, how: str) -> None:
    secret = fleet.enrolled()
    fleet.beat("k-0001", secret)
    seen = fleet.devices.get("k-0001").last_seen_at
    with pytest.raises(DeviceRefused):
        if how == "forged":
            fleet.beat("k-0001", secret, forge=True)
        elif how == "replay":  # the same timestamp again
            fleet.beat("k-0001", secret, {**GOOD, "temp_c": 80.0})
        elif how == "stale":
            fleet.clock.advance(minutes=10)
            fleet.beat("k-0001", secret, at=fleet.clock.now - dt.timedelta(minutes=6))
        else:
            fleet.devices.revoke("k-0001", actor="admin")
            fleet.clock.advance(seconds=30)
            fleet.beat("k-0001", secret)
    assert fleet.devices.get("k-0001").last_seen_at == seen
    assert fleet.messages() == []


@pytest.mark.parametrize("bad", [{"temp_c": 200}, {"humidity_pct": 140}, {"ups": "exploded"},
                                 {"uptime_s": -1}, {"disk_free_pct": float("nan")},
                                 {"printer": ["ok"]}, {"cpu_temp_c": True}])
def test_an_impossible_reading_is_refused_and_changes_nothing(fleet: Fleet,
                                                              bad: dict[str, object]) -> None:
    secret = fleet.enrolled()
    with pytest.raises(InvalidReading):
        fleet.beat("k-0001", secret, {**GOOD, **bad})
    assert fleet.devices.get("k-0001").last_seen_at is None


def test_readings_raise_alarms_once_clear_them_and_staff_acknowledge(fleet: Fleet) -> None:
    secret = fleet.enrolled()
    hot = {**GOOD, "temp_c": 55.0, "printer": "paper_out", "ups": "on_battery",
           "ups_charge_pct": 80.0}
    result = fleet.beat("k-0001", secret, hot)
    assert {a.kind for a in result.raised} == {AlarmKind.TEMPERATURE, AlarmKind.PAPER_OUT,
                                                AlarmKind.UPS_ON_BATTERY}
    assert len(fleet.messages()) == 3 and fleet.messages()[0].to == "ops@example.cn"
    assert "k-0001" in fleet.messages()[0].subject
    fleet.clock.advance(seconds=30)
    assert fleet.beat("k-0001", secret, hot).raised == []  # still hot: no second alarm
    fleet.clock.advance(seconds=30)
    cooled = fleet.beat("k-0001", secret, {**hot, "temp_c": 30.0})
    assert cooled.cleared == [AlarmKind.TEMPERATURE]
    with fleet.container.uow_factory() as uow:
        open_alarms = {a.kind: a for a in uow.alarms.open("k-0001")}
    assert open_alarms[AlarmKind.TEMPERATURE].cleared_at == fleet.clock.now  # until acked
    acked = fleet.devices.acknowledge(open_alarms[AlarmKind.TEMPERATURE].id or 0,
                                      actor="operator", note="门开着，已关")
    assert acked.acked_by == "operator"
    [entry] = fleet.audit("device.alarm_ack")
    assert entry.detail["kind"] == "temperature" and entry.detail["note"] == "门开着，已关"
    with fleet.container.uow_factory() as uow:
        assert AlarmKind.TEMPERATURE not in {a.kind for a in uow.alarms.open("k-0001")}


def test_a_silent_device_goes_offline_once_and_its_heartbeat_clears_it(fleet: Fleet) -> None:
    secret = fleet.enrolled()
    fleet.register("k-0002")  # never enrolled: never "offline"
    fleet.beat("k-0001", secret)
    fleet.clock.advance(seconds=60)
    assert fleet.devices.sweep() == []
    fleet.clock.advance(seconds=31)
    [alarm] = fleet.devices.sweep()
    assert alarm.kind is AlarmKind.OFFLINE and alarm.device_id == "k-0001"
    assert fleet.devices.sweep() == []  # one alarm per silence
    back = fleet.beat("k-0001", secret)
    assert back.cleared == [AlarmKind.OFFLINE]
    fleet.clock.advance(seconds=120)
    assert len(fleet.devices.sweep()) == 1  # a new silence, a new alarm


def test_failed_payments_in_a_row_raise_an_alarm(fleet: Fleet) -> None:
    fleet.enrolled()
    outcomes = [fleet.devices.payment_outcome("k-0001", ok=False) for _ in range(4)]
    assert outcomes == [None] * 4
    fleet.devices.payment_outcome("k-0001", ok=True)  # a success resets the count
    alarms = [fleet.devices.payment_outcome("k-0001", ok=False) for _ in range(5)]
    assert [a.kind for a in alarms if a] == [AlarmKind.PAYMENT_FAILURES]


def test_maintenance_is_due_then_ticked_off_with_a_note(fleet: Fleet) -> None:
    fleet.register()
    task = fleet.devices.add_task("k-0001", title="打印机除尘", period_days=7, actor="admin")
    fleet.clock.advance(days=8)
    assert task.overdue(fleet.clock.now)
    done = fleet.devices.task_done(task.id or 0, actor="operator", note="done")
    assert not done.overdue(fleet.clock.now) and done.last_done_by == "operator"
    assert done.due_at() == fleet.clock.now + dt.timedelta(days=7)
    with pytest.raises(InvalidDevice):
        fleet.devices.add_task("k-0001", title="x", period_days=0, actor="admin")


# --- over HTTP ---------------------------------------------------------------------------


def test_the_agent_enrols_and_beats_over_http(container: Container,
                                              caplog: pytest.LogCaptureFixture) -> None:
    container.devices.register(actor="admin", device_id="k-0001", name="一号机")
    code = container.devices.issue_enrolment_code("k-0001", actor="admin")
    client = TestClient(create_app(container=container))
    refused = client.post("/api/v1/devices/k-0001/enroll", json={"code": "NOPE000000"})
    assert refused.status_code == 403 and refused.json()["code"] == "device_refused"
    r = client.post("/api/v1/devices/k-0001/enroll", json={"code": code})
    assert r.status_code == 200 and r.json()["heartbeat_s"] == 30
    secret = r.json()["secret"]
    body = json.dumps({"readings": {**GOOD, "temp_c": 60.0}}).encode()
    stamp = str(int(dt.datetime.now(dt.UTC).timestamp()))
    headers = {HEADER_TIMESTAMP: stamp, HEADER_SIGNATURE: signature(secret, "k-0001", stamp,
                                                                    body),
               "Content-Type": "application/json"}
    beat = client.post("/api/v1/devices/k-0001/heartbeat", content=body, headers=headers)
    assert beat.status_code == 200 and beat.json()["raised"] == ["temperature"]
    caplog.set_level(logging.WARNING)
    again = client.post("/api/v1/devices/k-0001/heartbeat", content=body, headers=headers)
    assert again.status_code == 403 and "replay" in caplog.text
    assert secret not in caplog.text
    impossible = json.dumps({"readings": {**GOOD, "humidity_pct": 101}}).encode()
    stamp2 = str(int(stamp) + 1)
    bad = client.post("/api/v1/devices/k-0001/heartbeat", content=impossible, headers={
        HEADER_TIMESTAMP: stamp2,
        HEADER_SIGNATURE: signature(secret, "k-0001", stamp2, impossible)})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_reading"
    unknown = client.post("/api/v1/devices/k-9999/heartbeat", content=body, headers=headers)
    assert unknown.status_code == 403


