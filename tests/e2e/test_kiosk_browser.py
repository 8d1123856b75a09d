"""The kiosk screen in Debian's chromium, portrait 1080x1920 and landscape 1920x1080, against
the real app (uvicorn in a thread, the payments worker and the sandbox running): every
step with the on-screen keypad, a card QR code and a payment code typed by the "scanner",
a payment on the sandbox that moves the screen on by itself, a network cut that resumes
the same order, the idle reset, plates, elderly mode. Screenshots go to docs/kiosk/
(half resolution, to keep them small)."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, expect

from selfpay.adapters.db.kiosk_orders import KioskOrders
from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account, Bill, BillStatus
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.app import create_app
from selfpay.services.demo import seed_demo

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kiosk"
ORIENTATIONS = {"portrait": {"width": 1080, "height": 1920},
                "landscape": {"width": 1920, "height": 1080}}
DEVICE = "k-e2e"
PAID_CODE = "131234567890123456"
PLATE_ACCOUNT = "GD-B12345"


@dataclass
class KioskServer:
    url: str
    container: Container

    def screen(self) -> str:
        return f"{self.url}/kiosk/{DEVICE}"


@pytest.fixture(scope="module")
def kiosk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KioskServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = load_settings(data_dir=tmp_path_factory.mktemp("kiosk-live"),
                             public_base_url=url, env="development",
                             enabled_channels="sandbox", run_worker=True,
                             worker_interval_s=0.2, kiosk_idle_s=15, kiosk_countdown_s=3)
    upgrade(settings.sqlalchemy_url)
    container = bootstrap(settings)
    with container.uow_factory() as uow:
        seed_demo(uow, accounts_per_biller=30, today=dt.date(2026, 11, 15))
        uow.accounts.upsert_many([Account("PARK", PLATE_ACCOUNT, "陈小明", "13900001111",
                                          "人民路 1 号")])
        uow.bills.add_many([Bill(None, "PARK", PLATE_ACCOUNT, "2026-10", 24_000,
                                 dt.date(2026, 11, 15))])
        uow.commit()
    devices = container.devices
    devices.register(actor="admin", device_id=DEVICE, name="一号机", site="幸福小区",
                     location="东门大厅")
    devices.enroll(DEVICE, devices.issue_enrolment_code(DEVICE, actor="admin"))
    config = uvicorn.Config(create_app(container=container), log_level="warning", ws="none",
                            lifespan="on", http="h11", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield KioskServer(url, container)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        container.close()


def open_context(browser: Browser, orientation: str) -> BrowserContext:
    return browser.new_context(viewport=ORIENTATIONS[orientation],  # type: ignore[arg-type]
                               device_scale_factor=0.5, has_touch=True, locale="zh-CN")


def shot(page: Page, name: str) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # the step's entry animation
    page.screenshot(path=DOCS / f"{name}.png")


def owing_accounts(container: Container, biller: str = "ELEC") -> list[str]:
    with container.uow_factory() as uow:
        page = uow.bills.search(biller=biller, status=BillStatus.OPEN.value, limit=1000)
    return sorted({b.account for b in page.items})


def press_keys(page: Page, section: str, text: str) -> None:
    for ch in text:
        page.locator(f"{section} .keypad button[data-key='{ch}']:visible").first.click()


def image_loaded(page: Page, element_id: str) -> None:
    """The <img> really shows a picture (a broken one is visible too). Polled with
    evaluate(): the page's CSP forbids the string eval of wait_for_function."""
    for _ in range(100):
        if page.evaluate(f"document.getElementById('{element_id}').naturalWidth") > 0:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"#{element_id} shows no image")


def watch_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


@pytest.mark.parametrize("mode", ["normal", "elderly"])
@pytest.mark.parametrize("orientation", ["portrait", "landscape"])
def test_the_whole_flow_with_the_keypad_and_the_sandbox(
        browser: Browser, kiosk_server: KioskServer, orientation: str, mode: str) -> None:
    live = kiosk_server
    index = list(ORIENTATIONS).index(orientation) * 2 + (mode == "elderly")
    account = owing_accounts(live.container)[index]
    context = open_context(browser, orientation)
    page = context.new_page()
    errors = watch_errors(page)
    tag = f"{orientation}" + ("-elderly" if mode == "elderly" else "")
    try:
        page.goto(live.screen())
        expect(page.locator("#step-choose")).to_be_visible()
        tiles = page.locator("#tiles .tile:visible")
        expect(tiles).to_have_count(5)
        expect(tiles.first).to_contain_text("电费")
        if mode == "elderly":
            page.locator("#elderly-button").click()
            expect(page.locator("body")).to_have_class(re.compile(r"\belderly\b"))
            expect(tiles).to_have_count(3)  # ELEC, WATER, PROP: those marked elderly
            expect(page.locator("#tiles .tile[data-biller=GAS]")).to_be_hidden()
        shot(page, f"01-choose-{tag}")

        page.locator("#tiles .tile[data-biller=ELEC]").click()
        expect(page.locator("#step-identify")).to_be_visible()
        assert page.locator("#account-input").get_attribute("readonly") is not None
        assert page.locator("#account-input").get_attribute("inputmode") == "none"
        press_keys(page, "#step-identify", account + "9")
        page.locator("#step-identify .keypad button[data-key=back]:visible").first.click()
        expect(page.locator("#account-input")).to_have_value(account)
        shot(page, f"02-identify-{tag}")

        page.locator("#account-go").click()
        expect(page.locator("#step-confirm")).to_be_visible()
        expect(page.locator("#confirm-account")).to_have_text(account)
        assert "*" in page.locator("#confirm-holder").inner_text()
        total = page.locator("#confirm-total").inner_text()
        assert total.startswith("¥")
        shot(page, f"03-confirm-{tag}")

        page.locator("#confirm-pay").click()
        expect(page.locator("#step-pay")).to_be_visible()
        expect(page.locator("#pay-qr")).to_be_visible(timeout=10_000)
        image_loaded(page, "pay-qr")
        order_no = page.locator("#pay-order-no").inner_text()
        assert re.fullmatch(r"[A-Z0-9]{6,32}", order_no)
        expect(page.locator("#pay-amount")).to_have_text(total)
        shot(page, f"04-pay-{tag}")

        # The customer's phone opens the code and pays on the sandbox cashier.
        phone = context.new_page()
        phone.goto(f"{live.url}/sandbox/pay/{order_no}")
        phone.get_by_role("button", name=re.compile("支付成功")).click()
        phone.goto("about:blank")  # leave the status page (its long poll) before closing
        phone.close()
        expect(page.locator("#step-receipt")).to_be_visible(timeout=20_000)
        expect(page.locator("#receipt-amount")).to_have_text(total)
        shot(page, f"05-paid-{tag}")

        page.locator("#receipt-qr-button").click()
        expect(page.locator("#receipt-qr")).to_be_visible()
        image_loaded(page, "receipt-qr")
        page.locator("#receipt-print").click()  # no agent on this machine: say so, offer others
        expect(page.locator("#receipt-error")).to_contain_text("短信", timeout=10_000)
        shot(page, f"06-receipt-{tag}")
        page.locator("#receipt-done").click()
        expect(page.locator("#step-choose")).to_be_visible()
        assert errors == []
    finally:
        context.close()
    assert KioskOrders(live.container.engine).outcome(order_no) == "ok"


@pytest.mark.parametrize("orientation", ["portrait", "landscape"])
def test_a_scanned_card_and_a_payment_code_with_the_focus_elsewhere(
        browser: Browser, kiosk_server: KioskServer, orientation: str) -> None:
    live = kiosk_server
    c = live.container
    account = owing_accounts(c)[5 + (orientation == "landscape")]
    payload = make_payload(c.code_base, c.keyring, "ELEC", account)
    context = open_context(browser, orientation)
    page = context.new_page()
    errors = watch_errors(page)
    try:
        page.goto(live.screen())
        page.locator("#mute-button").focus()  # focus on something that is not an input
        page.keyboard.type(payload)
        page.keyboard.press("Enter")
        expect(page.locator("#step-confirm")).to_be_visible()
        expect(page.locator("#confirm-account")).to_have_text(account)

        # a tampered card is refused with a clear message
        page.locator("#back-button").click()
        expect(page.locator("#step-identify")).to_be_visible()
        page.keyboard.type(payload[:-2] + "AA")
        page.keyboard.press("Enter")
        expect(page.locator("#toast")).to_be_visible()
        shot(page, f"07-scan-refused-{orientation}")

        page.keyboard.type(payload)
        page.keyboard.press("Enter")
        expect(page.locator("#step-confirm")).to_be_visible()
        page.locator("#confirm-pay").click()
        expect(page.locator("#pay-code-card")).to_be_visible(timeout=10_000)
        order_no = page.locator("#pay-order-no").inner_text()
        page.keyboard.type(PAID_CODE)
        page.keyboard.press("Enter")
        expect(page.locator("#step-receipt")).to_be_visible(timeout=20_000)
        assert errors == []
    finally:
        context.close()
    assert KioskOrders(c.engine).outcome(order_no) == "ok"
    assert c.devices.get(DEVICE).payment_failures == 0


def test_a_network_cut_resumes_the_same_order(browser: Browser,
                                              kiosk_server: KioskServer) -> None:
    live = kiosk_server
    account = owing_accounts(live.container)[8]
    for orientation in ORIENTATIONS:
        context = open_context(browser, orientation)
        page = context.new_page()
        try:
            page.goto(live.screen())
            page.locator("#tiles .tile[data-biller=ELEC]").click()
            press_keys(page, "#step-identify", account)
            page.locator("#account-go").click()
            page.locator("#confirm-pay").click()
            expect(page.locator("#pay-qr")).to_be_visible(timeout=10_000)
            order_no = page.locator("#pay-order-no").inner_text()

            context.set_offline(True)
            expect(page.locator("#net-banner")).to_be_visible(timeout=15_000)
            shot(page, f"08-reconnecting-{orientation}")
            context.set_offline(False)
            expect(page.locator("#net-banner")).to_be_hidden(timeout=20_000)
            expect(page.locator("#pay-order-no")).to_have_text(order_no)

            page.reload()  # even a reload: the same order, not a second one
            expect(page.locator("#step-pay")).to_be_visible()
            expect(page.locator("#pay-order-no")).to_have_text(order_no, timeout=10_000)
            page.keyboard.type(PAID_CODE)
            page.keyboard.press("Enter")
            expect(page.locator("#step-receipt")).to_be_visible(timeout=20_000)
        finally:
            context.close()
        with live.container.uow_factory() as uow:
            orders = uow.orders.search(query=account, biller="ELEC").items
        kiosk_orders = KioskOrders(live.container.engine)
        mine = [o.order_no for o in orders if kiosk_orders.device_of(o.order_no) == DEVICE]
        assert mine[:1] == [order_no]
        assert len([o for o in orders if o.status.value not in ("paid", "posted")]) == 0
        account = owing_accounts(live.container)[9]


@pytest.mark.parametrize("orientation", ["portrait", "landscape"])
def test_idle_clears_everything_and_goes_back_to_the_start(
        browser: Browser, kiosk_server: KioskServer, orientation: str) -> None:
    live = kiosk_server
    context = open_context(browser, orientation)
    context.clock.install()
    page = context.new_page()
    try:
        page.goto(live.screen())
        page.locator("#tiles .tile[data-biller=ELEC]").click()
        page.locator("#step-identify .tab[data-tab=phone]").click()
        press_keys(page, "#step-identify [data-panel=phone]", "13912345678")
        page.locator("#step-identify .tab[data-tab=account]").click()
        press_keys(page, "#step-identify [data-panel=account]", "0012345")
        page.clock.run_for(15_500)
        expect(page.locator("#idle-overlay")).to_be_visible()
        shot(page, f"09-idle-{orientation}")
        page.clock.run_for(3_500)
        expect(page.locator("#step-choose")).to_be_visible()
        expect(page.locator("#idle-overlay")).to_be_hidden()
        for field in ("#account-input", "#phone-input", "#code-input"):
            expect(page.locator(field)).to_have_value("")
        text = page.evaluate("document.documentElement.outerHTML")
        assert "13912345678" not in text and "0012345" not in text
        assert page.evaluate("sessionStorage.length") == 0
    finally:
        context.close()


@pytest.mark.parametrize("orientation", ["portrait", "landscape"])
def test_parking_by_licence_plate(browser: Browser, kiosk_server: KioskServer,
                                  orientation: str) -> None:
    live = kiosk_server
    context = open_context(browser, orientation)
    page = context.new_page()
    errors = watch_errors(page)
    try:
        page.goto(live.screen())
        page.locator("#tiles .tile[data-biller=PARK]").click()
        expect(page.locator("#step-identify_plate")).to_be_visible()
        page.locator("#provinces button[data-key='粤']").click()
        press_keys(page, "#step-identify_plate", "B")
        press_keys(page, "#step-identify_plate", "12345")
        expect(page.locator("#plate-boxes .plate-box.filled")).to_have_count(7)
        shot(page, f"10-plate-{orientation}")
        page.locator("#plate-go").click()
        expect(page.locator("#step-confirm_plate")).to_be_visible()
        expect(page.locator("#plate-big")).to_have_text("粤B · 12345")
        shot(page, f"11-check-plate-{orientation}")
        page.locator("#plate-ok").click()
        expect(page.locator("#step-confirm")).to_be_visible()
        expect(page.locator("#confirm-account")).to_contain_text(PLATE_ACCOUNT)
        expect(page.locator("#confirm-holder")).to_have_text("陈*明")
        assert errors == []
    finally:
        context.close()


def test_an_unknown_terminal_gets_the_not_enrolled_screen(browser: Browser,
                                                          kiosk_server: KioskServer) -> None:
    for orientation in ORIENTATIONS:
        context = open_context(browser, orientation)
        page = context.new_page()
        try:
            response = page.goto(f"{kiosk_server.url}/kiosk/k-unknown")
            assert response is not None and response.status == 403
            expect(page.locator("#refused-title")).to_have_text("此终端未登记")
            assert page.locator("button").count() == 0
            shot(page, f"00-not-enrolled-{orientation}")
        finally:
            context.close()
