"""In Debian's chromium: the console's kiosk list with an online kiosk, an offline one
(its standby shown next to it) and an alarm, refreshing itself; the enrolment code
screen, which a reload does not show again; the alarms and maintenance pages.
Screenshots go to docs/console/ (the README shows them)."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import Browser, Page, expect

from selfpay.bootstrap import Container
from selfpay.services.devices import HEADER_SIGNATURE, HEADER_TIMESTAMP, signature

pytestmark = pytest.mark.browser
DOCS = Path(__file__).parents[2] / "docs" / "console"
GOOD = {"app_version": "1.2.0", "uptime_s": 86400, "disk_free_pct": 64.0, "cpu_temp_c": 47.0,
        "temp_c": 24.5, "humidity_pct": 43.0, "ups": "online", "ups_charge_pct": 100.0,
        "printer": "ok"}


class LiveServer(Protocol):  # the `live_server` fixture of tests/e2e/conftest.py
    url: str
    container: Container
    username: str
    password: str


def log_in(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/admin/login")
    page.fill("#username", live.username)
    page.fill("#password", live.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{live.url}/admin")


def beat(container: Container, device_id: str, secret: str, readings: dict[str, object],
         at: int) -> None:
    body = json.dumps({"readings": readings}).encode()
    container.devices.heartbeat(device_id, {
        HEADER_TIMESTAMP: str(at), HEADER_SIGNATURE: signature(secret, device_id, str(at),
                                                               body)}, body)


@pytest.fixture(scope="module")
def fleet(live_server: LiveServer) -> LiveServer:
    """Three kiosks at one site: k-east online with a printer out of paper, k-west
    offline for 12 minutes (k-east is its standby), k-lobby registered, not enrolled."""
    devices = live_server.container.devices
    devices.register(actor="admin", device_id="k-east", name="东门一号机", site="幸福小区",
                     location="东门大厅", billers=["ELEC", "WATER"])
    devices.register(actor="admin", device_id="k-west", name="西门二号机", site="幸福小区",
                     location="西门岗亭", standby="k-east", elderly_default=True)
    devices.register(actor="admin", device_id="k-lobby", name="物业大厅", site="幸福小区",
                     location="物业服务中心")
    now = int(time.time())
    for device_id, readings in (("k-east", {**GOOD, "printer": "paper_out"}),
                                ("k-west", {**GOOD, "temp_c": 31.0, "humidity_pct": 58.0,
                                            "disk_free_pct": 40.0, "app_version": "1.1.9"})):
        code = devices.issue_enrolment_code(device_id, actor="admin")
        beat(live_server.container, device_id, devices.enroll(device_id, code), readings, now)
    with live_server.container.uow_factory() as uow:
        west = uow.devices.get("k-west", for_update=True)
        assert west is not None
        west.last_seen_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=12)
        uow.devices.save(west)
        [task] = uow.maintenance.for_device("k-west")
        task.last_done_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=33)
        uow.maintenance.save(task)
        uow.commit()
    devices.sweep()  # the worker's round: k-west's offline alarm
    return live_server


def test_the_fleet_list_shows_state_readings_alarms_and_refreshes_itself(
        browser: Browser, fleet: LiveServer) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
    page = context.new_page()
    try:
        log_in(page, fleet)
        page.goto(f"{fleet.url}/admin/devices?lang=zh-CN")
        east, west = page.locator("#device-k-east"), page.locator("#device-k-west")
        expect(east.locator(".state-dev-online")).to_have_text("在线")
        expect(east.locator(".alarm-count")).to_have_text("1")
        expect(east.locator(".reading-bad")).to_have_text("缺纸")
        expect(west.locator(".state-dev-offline")).to_have_text("离线")
        expect(west.locator(".standby-hint")).to_contain_text("k-east")
        expect(west).to_contain_text("12 分钟前")
        expect(page.locator("#device-k-lobby .state-dev-registered")).to_have_text("待注册")
        expect(page.locator("#count-online .stat-value")).to_have_text("1")
        expect(page.locator("#count-offline .stat-value")).to_have_text("1")
        bars = page.locator("svg.fleet-chart rect.chart-bar")
        expect(bars).to_have_count(3)
        assert all(float(bars.nth(i).get_attribute("width") or 0) > 0 for i in range(3))
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1366
        page.screenshot(path=DOCS / "devices.png", full_page=True)
        page.click("#register summary")
        expect(page.locator("#device-form input[name=billers]").first).to_be_visible()
        page.locator("#register").screenshot(path=DOCS / "devices-register.png")

        # the page asks for fresh state by itself (every 15 s) and says when
        expect(page.locator("#fleet-updated")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"),
                                                            timeout=25_000)
        expect(page.locator("#device-k-west .state-dev-offline")).to_be_visible()

        page.goto(f"{fleet.url}/admin/devices?lang=en")
        expect(page.locator("#device-k-east .reading-bad")).to_have_text("Out of paper")
        page.screenshot(path=DOCS / "devices-en.png", full_page=True)
    finally:
        context.close()


def test_the_enrolment_code_is_shown_big_once_and_not_after_a_reload(
        browser: Browser, fleet: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
    page = context.new_page()
    try:
        log_in(page, fleet)
        page.goto(f"{fleet.url}/admin/devices/k-lobby?lang=zh-CN")
        page.click("#issue-code")
        code_box = page.locator("#the-code")
        expect(code_box).to_have_text(re.compile(r"^[A-Z2-9]{10}$"))
        code = code_box.inner_text()
        expect(page.locator("#enrol-command")).to_have_text(
            f"selfpay kiosk-agent enroll --server {fleet.url} --device k-lobby --code {code}")
        size = page.evaluate("() => parseFloat(getComputedStyle("
                             "document.getElementById('the-code')).fontSize)")
        assert size >= 32  # big enough to read across a room
        expect(page).to_have_url(f"{fleet.url}/admin/devices/k-lobby")  # history replaced
        page.screenshot(path=DOCS / "enrolment-code.png", full_page=True)

        page.reload()
        expect(page.locator("h1")).to_contain_text("k-lobby")
        expect(page.locator("#the-code")).to_have_count(0)
        assert code not in page.content()
        page.go_back()
        assert code not in page.content()
    finally:
        context.close()


def test_alarms_device_and_maintenance_pages(browser: Browser, fleet: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
    page = context.new_page()
    try:
        log_in(page, fleet)
        page.goto(f"{fleet.url}/admin/alarms?lang=zh-CN")
        rows = page.locator("#open-alarms tbody tr")
        expect(rows.first).to_contain_text("终端离线")  # the newest first
        expect(page.locator("#open-alarms")).to_contain_text("打印纸用完")
        page.screenshot(path=DOCS / "alarms.png", full_page=True)

        page.goto(f"{fleet.url}/admin/devices/k-west?lang=zh-CN")
        expect(page.locator("#standby-flag")).to_contain_text("k-east")
        expect(page.locator("#tasks .due-overdue")).to_be_visible()
        page.screenshot(path=DOCS / "device.png", full_page=True)

        page.goto(f"{fleet.url}/admin/maintenance?lang=zh-CN")
        expect(page.locator("#due-tasks")).to_contain_text("k-west")
        page.screenshot(path=DOCS / "maintenance.png", full_page=True)
        page.fill("#due-tasks .done-form input[name=note]", "屏幕已擦拭")
        page.click("#due-tasks .done-form button")
        expect(page.locator(".flash-success")).to_contain_text("k-west")
        expect(page.locator("#due-tasks")).not_to_contain_text("k-west")
    finally:
        context.close()
