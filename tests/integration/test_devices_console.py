"""The kiosk fleet in the staff console (/admin/devices, /admin/alarms, /admin/maintenance)
on SQLite and PostgreSQL: who may do what, CSRF, the enrolment code shown once, a
revoked kiosk refused at its next heartbeat, the live list, alarms and maintenance."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from selfpay.bootstrap import Container
from selfpay.domain.devices import DeviceState
from selfpay.entrypoints.web.admin.devices import alarm_banner
from selfpay.services.devices import HEADER_SIGNATURE, HEADER_TIMESTAMP, signature
from support.web import TestClient, add_staff, build_container, csrf_of, staff_login

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
PASSWORDS = {"admin": "admin-pass-1", "operator": "operator-pass-1", "auditor": "auditor-pass-1"}
GOOD = {"app_version": "1.2.0", "uptime_s": 600, "disk_free_pct": 61.0, "cpu_temp_c": 45.0,
        "temp_c": 23.5, "humidity_pct": 41.0, "ups": "online", "ups_charge_pct": 100.0,
        "printer": "ok"}
NEW = {"device_id": "k-0001", "name": "一号机", "site": "幸福小区", "location": "东门大厅",
       "billers": ["ELEC"], "elderly_default": "on", "standby": ""}
CODE_RE = re.compile(r'id="the-code">([A-Z0-9]+)<')


class Site:
    def __init__(self, data_dir: Path, db_url: str) -> None:
        self.container: Container = build_container(data_dir, database_url=db_url,
                                                    run_worker=False)
        add_staff(self.container, PASSWORDS, NOW)
        self.app: FastAPI = create_app_for(self.container)
        self._beat_at = int(time.time()) - 60

    def login(self, role: str) -> tuple[TestClient, str]:
        client = staff_login(self.app, role, PASSWORDS[role])
        return client, csrf_of(client.get("/admin").text)

    def register(self, device_id: str = "k-0001", **fields: object) -> None:
        values: dict[str, object] = {"name": f"{device_id} 号机", "site": "幸福小区",
                                     "location": "东门"}
        values.update(fields)
        self.container.devices.register(actor="setup", device_id=device_id, **values)  # type: ignore[arg-type]

    def enrol(self, device_id: str) -> str:
        code = self.container.devices.issue_enrolment_code(device_id, actor="setup")
        return self.container.devices.enroll(device_id, code)

    def beat(self, client: TestClient, device_id: str, secret: str,
             readings: dict[str, object] | None = None) -> object:
        """A signed heartbeat through the agent's API (each one a second newer)."""
        self._beat_at += 1
        body = json.dumps({"readings": readings or GOOD}).encode()
        stamp = str(self._beat_at)
        return client.post(f"/api/v1/devices/{device_id}/heartbeat", content=body, headers={
            HEADER_TIMESTAMP: stamp, HEADER_SIGNATURE: signature(secret, device_id, stamp, body),
            "content-type": "application/json"})

    def state(self, device_id: str) -> DeviceState:
        return self.container.devices.get(device_id).state

    def audit(self, action: str) -> list[tuple[str, str, dict[str, object]]]:
        with self.container.uow_factory() as uow:
            return [(e.actor, e.target, e.detail) for e in uow.audit.list(limit=500).items
                    if e.action == action]

    def seen(self, device_id: str, ago: dt.timedelta) -> None:
        with self.container.uow_factory() as uow:
            device = uow.devices.get(device_id, for_update=True)
            assert device is not None
            device.last_seen_at = dt.datetime.now(dt.UTC) - ago
            uow.devices.save(device)
            uow.commit()


def create_app_for(container: Container) -> FastAPI:
    from selfpay.entrypoints.web.app import create_app

    return create_app(container=container)


@pytest.fixture
def site(tmp_path: Path, db_url: str) -> Iterator[Site]:
    built = Site(tmp_path, db_url)
    try:
        yield built
    finally:
        built.container.close()


def form(values: dict[str, object], token: str) -> dict[str, object]:
    return {**values, "csrf_token": token}


# --- the registry and roles ----------------------------------------------------------------


def test_an_admin_registers_and_changes_a_kiosk_with_audit(site: Site) -> None:
    admin, token = site.login("admin")
    page = admin.get("/admin/devices")
    assert page.status_code == 200
    assert 'href="/admin/devices"' in page.text and 'id="device-form"' in page.text
    assert 'name="billers" value="ELEC"' in page.text  # the registered billers as boxes

    r = admin.post("/admin/devices", data=form(NEW, token))
    assert r.status_code == 200 and r.url.path == "/admin/devices/k-0001"
    assert "已登记终端 k-0001" in r.text
    device = site.container.devices.get("k-0001")
    assert (device.name, device.site, device.location, device.billers,
            device.elderly_default) == ("一号机", "幸福小区", "东门大厅", ("ELEC",), True)
    [(actor, target, detail)] = site.audit("device.add")
    assert (actor, target, detail["billers"]) == ("admin", "k-0001", ["ELEC"])

    site.register("k-0002")
    change = {**NEW, "name": "一号机（新）", "billers": ["ELEC", "WATER"], "elderly_default": "",
              "standby": "k-0002"}
    r = admin.post("/admin/devices/k-0001", data=form(change, token))
    assert r.status_code == 200 and "已保存终端 k-0001" in r.text
    device = site.container.devices.get("k-0001")
    assert device.billers == ("ELEC", "WATER") and device.standby == "k-0002"
    assert not device.elderly_default
    [(actor, _, detail)] = site.audit("device.update")
    assert actor == "admin" and detail["standby"] == "k-0002"


def test_a_bad_registration_shows_the_error_and_keeps_what_was_typed(site: Site) -> None:
    admin, token = site.login("admin")
    r = admin.post("/admin/devices", data=form({**NEW, "device_id": "K 1"}, token))
    assert r.status_code == 400
    assert "设备编号无效" in r.text and 'value="东门大厅"' in r.text
    r = admin.post("/admin/devices?lang=en", data=form({**NEW, "standby": "k-0404"}, token))
    assert r.status_code == 400 and "k-0404" in r.text
    with site.container.uow_factory() as uow:
        assert uow.devices.all() == []


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_operators_and_auditors_view_but_do_not_change(site: Site, role: str) -> None:
    site.register("k-0001")
    client, token = site.login(role)
    page = client.get("/admin/devices")
    assert page.status_code == 200 and "k-0001" in page.text
    assert 'id="device-form"' not in page.text
    detail = client.get("/admin/devices/k-0001")
    assert detail.status_code == 200
    for absent in ('id="issue-code"', 'action="/admin/devices/k-0001/revoke"', 'id="edit-form"',
                   'id="task-form"'):
        assert absent not in detail.text
    for path, data in (("/admin/devices", {**NEW, "device_id": "k-0009"}),
                       ("/admin/devices/k-0001", {**NEW, "name": "改名"}),
                       ("/admin/devices/k-0001/enrolment-code", {}),
                       ("/admin/devices/k-0001/revoke", {"confirm": "k-0001"}),
                       ("/admin/devices/k-0001/tasks", {"title": "x", "period_days": "7"})):
        assert client.post(path, data=form(data, token)).status_code == 403, path
    assert site.container.devices.get("k-0001").name == "k-0001 号机"
    with site.container.uow_factory() as uow:
        assert [d.device_id for d in uow.devices.all()] == ["k-0001"]
        assert len(uow.maintenance.for_device("k-0001")) == 1
    assert site.audit("device.enrol_code") == [] and site.audit("device.revoke") == []


def test_every_form_needs_the_csrf_token(site: Site) -> None:
    site.register("k-0001")
    admin, _ = site.login("admin")
    for path, data in (("/admin/devices", {**NEW, "device_id": "k-0009"}),
                       ("/admin/devices/k-0001/enrolment-code", {}),
                       ("/admin/devices/k-0001/revoke", {"confirm": "k-0001"}),
                       ("/admin/alarms/1/ack", {"note": "x"}),
                       ("/admin/maintenance/1/done", {"note": "x"})):
        r = admin.post(path, data={**data, "csrf_token": "forged"})
        assert r.status_code == 403, path
    assert site.state("k-0001") is DeviceState.REGISTERED
    assert site.audit("device.enrol_code") == [] and site.audit("device.task_done") == []


# --- enrolment and revocation ----------------------------------------------------------------


def session_text(client: TestClient) -> str:
    """What the session cookie carries (Starlette signs it but does not encrypt it)."""
    raw = "".join(v for k, v in client.cookies.items() if "session" in k.lower())
    payload = raw.split(".")[0]
    return base64.b64decode(payload + "=" * (-len(payload) % 4)).decode("utf-8", "replace")


def test_the_enrolment_code_is_shown_once_with_the_command_and_works(site: Site) -> None:
    site.register("k-0001")
    admin, token = site.login("admin")
    r = admin.post("/admin/devices/k-0001/enrolment-code", data=form({}, token))
    assert r.status_code == 200
    assert "no-store" in r.headers["cache-control"]
    match = CODE_RE.search(r.text)
    assert match, r.text
    code = match.group(1)
    assert len(code) == 10
    command = (f"selfpay kiosk-agent enroll --server https://pay.example.cn --device k-0001 "
               f"--code {code}")
    assert html.escape(command) in r.text
    assert "有效期至" in r.text and "data-replace-url=\"/admin/devices/k-0001\"" in r.text
    # never again: not in a URL, the session, the device page or the list
    assert code not in str(r.url) and code not in r.headers.get("location", "")
    assert code not in session_text(admin)
    for path in ("/admin/devices/k-0001", "/admin/devices", "/admin/devices/live.json"):
        assert code not in admin.get(path).text, path
    [(actor, target, detail)] = site.audit("device.enrol_code")
    assert (actor, target) == ("admin", "k-0001") and code not in json.dumps(detail)

    enrolled = TestClient(site.app).post("/api/v1/devices/k-0001/enroll", json={"code": code})
    assert enrolled.status_code == 200 and len(enrolled.json()["secret"]) == 64
    assert site.state("k-0001") is DeviceState.ENROLLED


def test_revoking_asks_for_confirmation_and_refuses_the_next_heartbeat(site: Site) -> None:
    site.register("k-0001")
    secret = site.enrol("k-0001")
    agent = TestClient(site.app)
    assert site.beat(agent, "k-0001", secret).status_code == 200  # type: ignore[attr-defined]

    operator, op_token = site.login("operator")
    assert operator.post("/admin/devices/k-0001/revoke",
                         data=form({"confirm": "k-0001"}, op_token)).status_code == 403
    admin, token = site.login("admin")
    page = admin.get("/admin/devices/k-0001")
    assert 'name="confirm" value="k-0001" required' in page.text
    r = admin.post("/admin/devices/k-0001/revoke", data=form({}, token))  # box not ticked
    assert r.status_code == 200 and "未吊销" in r.text
    assert site.state("k-0001") is DeviceState.ENROLLED
    assert site.beat(agent, "k-0001", secret).status_code == 200  # type: ignore[attr-defined]

    r = admin.post("/admin/devices/k-0001/revoke", data=form({"confirm": "k-0001"}, token))
    assert r.status_code == 200 and "已吊销终端 k-0001" in r.text
    assert site.state("k-0001") is DeviceState.REVOKED
    refused = site.beat(agent, "k-0001", secret)
    assert refused.status_code == 403  # type: ignore[attr-defined]
    assert refused.json()["code"] == "device_refused"  # type: ignore[attr-defined]
    [(actor, target, _)] = site.audit("device.revoke")
    assert (actor, target) == ("admin", "k-0001")
    assert "已吊销" in admin.get("/admin/devices").text


# --- the live list ---------------------------------------------------------------------------


def test_the_live_list_shows_online_offline_alarms_and_the_standby(site: Site) -> None:
    site.register("k-0001")
    site.register("k-0002", standby="k-0001")
    site.register("k-0003")  # not enrolled
    agent = TestClient(site.app)
    one, two = site.enrol("k-0001"), site.enrol("k-0002")
    site.beat(agent, "k-0001", one, {**GOOD, "printer": "paper_out", "temp_c": 55.0})
    site.beat(agent, "k-0002", two)
    site.seen("k-0002", dt.timedelta(minutes=10))  # 3 heartbeats missed long ago

    viewer, _ = site.login("auditor")
    live = viewer.get("/admin/devices/live.json")
    assert live.status_code == 200 and "no-store" in live.headers["cache-control"]
    doc = live.json()
    assert {k: doc["counts"][k] for k in ("online", "offline", "alarm", "registered",
                                         "revoked", "open_alarms")} == {
        "online": 1, "offline": 1, "alarm": 1, "registered": 1, "revoked": 0, "open_alarms": 2}
    status = {d["device_id"]: (d["status"], d["alarms"]) for d in doc["devices"]}
    assert status == {"k-0001": ("online", 2), "k-0002": ("offline", 0),
                      "k-0003": ("registered", 0)}

    page = viewer.get("/admin/devices")
    text = page.text
    assert 'data-live-url="/admin/devices/live.json"' in text and "/static/devices.js" in text
    assert '<svg class="chart fleet-chart"' in text and "chart-bar-offline" in text
    row = re.search(r'<tr id="device-k-0002".*?</tr>', text, re.S)
    assert row and "离线" in row.group(0) and "备用机" in row.group(0)
    assert 'href="/admin/devices/k-0001"' in row.group(0)  # its standby, and its state
    assert "10 分钟前" in row.group(0)
    first = re.search(r'<tr id="device-k-0001".*?</tr>', text, re.S)
    assert first and "55.0 °C" in first.group(0) and "缺纸" in first.group(0)
    assert "reading-bad" in first.group(0) and "1.2.0" in first.group(0)
    assert "备用机" not in first.group(0)  # online: no standby shown
    assert doc["html"].strip().startswith("<div class=\"fleet-top\">")
    english = viewer.get("/admin/devices?lang=en").text
    assert "Out of paper" in english and "Offline" in english

    detail = viewer.get("/admin/devices/k-0002").text
    assert 'id="standby-flag"' in detail and "k-0001" in detail


# --- alarms ------------------------------------------------------------------------------------


def test_open_alarms_newest_first_acknowledged_by_an_operator(site: Site) -> None:
    site.register("k-0001")
    secret = site.enrol("k-0001")
    agent = TestClient(site.app)
    site.beat(agent, "k-0001", secret, {**GOOD, "printer": "paper_out"})
    time.sleep(0.01)
    site.beat(agent, "k-0001", secret, {**GOOD, "printer": "paper_out", "ups": "on_battery",
                                        "ups_charge_pct": 80.0})
    with site.container.uow_factory() as uow:
        paper, ups = sorted(uow.alarms.open(), key=lambda a: a.id or 0)

    auditor, au_token = site.login("auditor")
    page = auditor.get("/admin/alarms")
    assert page.status_code == 200
    assert page.text.index("UPS 电池供电") < page.text.index("打印纸用完")  # newest first
    assert f'action="/admin/alarms/{paper.id}/ack"' not in page.text
    assert auditor.post(f"/admin/alarms/{paper.id}/ack",
                        data=form({"note": "x"}, au_token)).status_code == 403
    assert "Out of paper" in auditor.get("/admin/alarms?lang=en").text

    operator, token = site.login("operator")
    page = operator.get("/admin/alarms")
    assert f'action="/admin/alarms/{paper.id}/ack"' in page.text
    r = operator.post(f"/admin/alarms/{paper.id}/ack",
                      data=form({"note": "换了一卷纸", "back": "https://evil.example/x"}, token))
    assert r.status_code == 200 and r.url.path == "/admin/alarms"  # never another host
    assert "已确认 k-0001 的告警" in r.text
    assert f'id="alarm-{paper.id}"' not in r.text and f'id="alarm-{ups.id}"' in r.text
    [(actor, target, detail)] = site.audit("device.alarm_ack")
    assert (actor, target, detail["note"], detail["kind"]) == (
        "operator", "k-0001", "换了一卷纸", "paper_out")
    banner = alarm_banner(site.container)
    assert banner.total == 1 and [a.id for a in banner.latest] == [ups.id]

    # on the device's page: the acknowledged one with its note, the open one with a form
    detail_page = operator.get("/admin/devices/k-0001").text
    assert "换了一卷纸" in detail_page and f'action="/admin/alarms/{ups.id}/ack"' in detail_page


# --- maintenance ------------------------------------------------------------------------------


def test_maintenance_due_overdue_done_and_added(site: Site) -> None:
    site.register("k-0001")
    site.register("k-0002")
    with site.container.uow_factory() as uow:
        [task] = uow.maintenance.for_device("k-0001")
        task.last_done_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
        uow.maintenance.save(task)
        uow.commit()

    auditor, au_token = site.login("auditor")
    page = auditor.get("/admin/maintenance").text
    assert f'id="task-{task.id}"' in page and "已逾期" in page
    assert "k-0002" not in page  # due in 30 days: not yet on the fleet-wide list
    assert auditor.post(f"/admin/maintenance/{task.id}/done",
                        data=form({"note": "x"}, au_token)).status_code == 403
    device_page = auditor.get("/admin/devices/k-0001").text
    assert 'class="task-overdue"' in device_page and "due-overdue" in device_page

    operator, token = site.login("operator")
    r = operator.post(f"/admin/maintenance/{task.id}/done",
                      data=form({"note": "屏幕已擦拭", "back": "/admin/maintenance"}, token))
    assert r.status_code == 200 and r.url.path == "/admin/maintenance"
    assert f'id="task-{task.id}"' not in r.text
    [(actor, target, detail)] = site.audit("device.task_done")
    assert (actor, target, detail["note"]) == ("operator", "k-0001", "屏幕已擦拭")
    with site.container.uow_factory() as uow:
        done = uow.maintenance.get(task.id or 0)
    assert done is not None and done.last_note == "屏幕已擦拭" and done.last_done_by == "operator"

    admin, admin_token = site.login("admin")
    r = admin.post("/admin/devices/k-0001/tasks",
                   data=form({"title": "打印机清洁", "period_days": "7"}, admin_token))
    assert r.status_code == 200 and "打印机清洁" in r.text and "每 7 天" in r.text
    r = admin.post("/admin/devices/k-0001/tasks",
                   data=form({"title": "x", "period_days": "0"}, admin_token))
    assert r.status_code == 400 and "周期应为 1-3660 天" in r.text
    [(_, _, added)] = site.audit("device.task_add")
    assert added == {"title": "打印机清洁", "period_days": 7}
    assert f"/admin/maintenance/{task.id}/done" not in auditor.get("/admin/devices/k-0001").text


def test_an_unknown_device_is_a_404(site: Site) -> None:
    viewer, _ = site.login("auditor")
    r = viewer.get("/admin/devices/k-0404")
    assert r.status_code == 404 and "没有设备 k-0404" in r.text


# --- `selfpay demo`'s kiosk ----------------------------------------------------------------------


def test_selfpay_demo_enrols_a_demo_kiosk_and_its_heartbeat_keeps_it_online(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from selfpay.bootstrap import bootstrap
    from selfpay.config import load_settings
    from selfpay.entrypoints.cli import app
    from selfpay.entrypoints.demo_kiosk import DEMO_DEVICE, DemoHeartbeat, enrol_demo_kiosk

    monkeypatch.chdir(tmp_path)
    for key, value in {"SELFPAY_DATA_DIR": str(tmp_path / "data"), "SELFPAY_DATABASE_URL": "",
                       "SELFPAY_PUBLIC_BASE_URL": "http://127.0.0.1:8000"}.items():
        monkeypatch.setenv(key, value)
    for _ in range(2):  # a second start finds the kiosk registered and enrols it again
        result = CliRunner().invoke(app, ["demo", "--no-serve", "--data-dir",
                                          str(tmp_path / "data")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "http://127.0.0.1:8000/kiosk/demo-kiosk" in result.output
    c = bootstrap(load_settings())
    try:
        device = c.devices.get(DEMO_DEVICE)
        assert device.state is DeviceState.ENROLLED and device.site == "演示小区"
        assert device.billers == ()  # every biller
        assert c.devices.kiosk(DEMO_DEVICE).device_id == DEMO_DEVICE  # the kiosk page's check
        heartbeat = DemoHeartbeat(c.devices, enrol_demo_kiosk(c.devices), every_s=0.05)
        heartbeat.start()
        deadline = time.monotonic() + 10
        while c.devices.get(DEMO_DEVICE).last_seen_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        heartbeat.stop()
        device = c.devices.get(DEMO_DEVICE)
        assert device.online(dt.datetime.now(dt.UTC)) and device.readings["temp_c"] == 24.0
    finally:
        c.close()


def test_every_alarm_kind_reading_and_state_reads_in_both_languages() -> None:
    from selfpay.domain.devices import AlarmKind, Printer, Ups
    from selfpay.entrypoints.web.i18n import translate

    keys = ([f"alarms.kind.{k.value}" for k in AlarmKind]
            + [f"devices.ups.{u.value}" for u in Ups]
            + [f"devices.printer.{p.value}" for p in Printer]
            + [f"devices.status.{s}" for s in ("online", "offline", "registered", "revoked")]
            + [f"devices.chart.{c}" for c in ("online", "offline", "alarm")])
    for key in keys:
        zh, en = translate("zh-CN", key), translate("en", key)
        assert key not in (zh, en) and zh != en, key
