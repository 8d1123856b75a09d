"""A customer pays on a phone: scan -> account page -> sandbox cashier -> status page ->
receipt, in Debian's chromium against the real app (uvicorn in a thread, the payments
worker and the sandbox's notification sender running, notifications over real HTTP)."""

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
from playwright.sync_api import Browser, expect

from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import BillStatus
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.app import create_app
from selfpay.services import users
from selfpay.services.demo import seed_demo

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True, "locale": "zh-CN",
         "user_agent": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) "
                        "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 "
                        "Safari/604.1")}


@dataclass
class PayServer:
    url: str
    container: Container


@pytest.fixture(scope="module")
def pay_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PayServer]:
    """The whole app with its lifespan on: payments worker and sandbox sender run."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = load_settings(data_dir=tmp_path_factory.mktemp("pay-live"),
                             public_base_url=url, env="development",
                             enabled_channels="sandbox", run_worker=True,
                             worker_interval_s=0.2)
    upgrade(settings.sqlalchemy_url)
    container = bootstrap(settings)
    with container.uow_factory() as uow:
        seed_demo(uow, accounts_per_biller=12, today=dt.date(2026, 11, 15))
    users.create_user(container.uow_factory(), container.hasher, username="admin",
                      password="admin-pass-1", role="admin", now=dt.datetime.now(dt.UTC))
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
        yield PayServer(url, container)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        container.close()


def account_with_bills(container: Container, at_least: int) -> tuple[str, str, int]:
    """(biller, account, number of open bills) of a demo account owing `at_least` bills."""
    with container.uow_factory() as uow:
        page = uow.bills.search(biller="ELEC", status=BillStatus.OPEN.value, limit=500)
    counts: dict[str, int] = {}
    for bill in page.items:
        counts[bill.account] = counts.get(bill.account, 0) + 1
    for account, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        if n >= at_least:
            return "ELEC", account, n
    pytest.skip(f"no demo account owes {at_least} bills")


def test_a_customer_pays_on_a_phone_and_gets_the_receipt(
    browser: Browser, pay_server: PayServer, screenshots: Path
) -> None:
    live = pay_server
    biller, account, n_bills = account_with_bills(live.container, 2)
    payload = make_payload(live.container.code_base, live.container.keyring, biller, account)
    code_url = live.url + "/" + payload.split("/", 3)[3]
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(code_url)
        expect(page.locator("#pub-account")).to_have_text(account)
        boxes = page.locator("input[name=bill]")
        expect(boxes).to_have_count(n_bills)
        total = page.locator("#pub-total")
        full = total.inner_text()
        page.screenshot(path=screenshots / "10-pay-account.png", full_page=True)

        # Untick the first bill: the total and the button follow; tick it again.
        first = boxes.nth(0)
        first_fen = int(first.get_attribute("data-fen") or "0")
        full_fen = int(total.get_attribute("data-total") or "0")
        first.uncheck()
        expect(total).not_to_have_text(full)
        expect(page.locator("#pub-chosen")).to_have_text(f"已选 {n_bills - 1}/{n_bills} 笔账单")
        assert yuan_of(total.inner_text()) == full_fen - first_fen
        page.screenshot(path=screenshots / "11-pay-account-one-unticked.png", full_page=True)
        first.check()
        expect(total).to_have_text(full)

        page.locator("#pay-button").click()
        page.wait_for_url(re.compile(r"/sandbox/pay/SP[0-9A-Z]+$"))
        order_no = page.url.rsplit("/", 1)[1]
        page.screenshot(path=screenshots / "12-sandbox-cashier.png", full_page=True)
        page.get_by_role("button", name=re.compile("支付成功")).click()

        status_url = f"{live.url}/pay/{order_no}"
        page.wait_for_load_state()
        if not page.url.startswith(status_url):
            # The cashier returns only when the order was created with a return_url.
            page.goto(status_url)
        root = page.locator("#pay-status")
        expect(root).to_have_attribute("data-state", "done", timeout=20_000)
        expect(page.locator("#st-title")).to_have_text("缴费完成")
        page.screenshot(path=screenshots / "13-pay-status-done.png", full_page=True)

        page.locator("#receipt-link").click()
        page.wait_for_url(f"{live.url}/receipt/{order_no}")
        expect(page.locator("#receipt-order")).to_have_text(order_no)
        expect(page.locator("#receipt-amount")).to_have_text(full)
        holder = page.locator("#receipt-holder").inner_text()
        assert "*" in holder
        page.screenshot(path=screenshots / "14-receipt.png", full_page=True)
        pdf = page.request.get(f"{live.url}/receipt/{order_no}.pdf")
        assert pdf.ok and pdf.body().startswith(b"%PDF")

        page.goto(f"{live.url}/lookup")
        page.screenshot(path=screenshots / "15-lookup.png", full_page=True)
        page.goto(f"{live.url}/my")
        page.screenshot(path=screenshots / "16-my-accounts.png", full_page=True)
        assert errors == []
    finally:
        context.close()

    # The server's word: paid once, posted once, every chosen bill settled.
    with live.container.uow_factory() as uow:
        order = uow.orders.get(order_no)
        assert order is not None and order.status.value == "posted"
        assert order.amount_fen == full_fen
        assert uow.bills.open_for(biller, account) == []
        orders = uow.orders.search(query=account, biller=biller).items
        assert [o.order_no for o in orders] == [order_no]

    desk = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    admin = desk.new_page()
    try:
        admin.goto(f"{live.url}/admin/login")
        admin.fill("#username", "admin")
        admin.fill("#password", "admin-pass-1")
        admin.click("button[type=submit]")
        admin.wait_for_url(f"{live.url}/admin")
        admin.screenshot(path=screenshots / "17-dashboard-health.png", full_page=True)
        admin.goto(f"{live.url}/admin/orders/{order_no}")
        expect(admin.locator("#history")).to_contain_text("posted")
        admin.screenshot(path=screenshots / "18-admin-order.png", full_page=True)
    finally:
        desk.close()


def yuan_of(text: str) -> int:
    digits = re.sub(r"[^0-9.]", "", text)
    whole, _, cents = digits.partition(".")
    return int(whole) * 100 + int((cents + "00")[:2])


def test_a_customer_reports_an_outage_on_a_phone_and_sees_it_accepted(
    browser: Browser, pay_server: PayServer, screenshots: Path
) -> None:
    live = pay_server
    biller, account, _ = account_with_bills(live.container, 1)
    payload = make_payload(live.container.code_base, live.container.keyring, biller, account)
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(live.url + "/" + payload.split("/", 3)[3])
        page.locator("#other-services").get_by_text("停电报修").click()
        page.fill("#wo-description", "整栋楼停电，约 14:00 开始")
        page.fill("#wo-phone", "13912345678")
        page.screenshot(path=screenshots / "19-other-services-form.png", full_page=True)
        page.get_by_role("button", name="提交").click()
        expect(page.locator("#work-order")).to_contain_text("139****5678")
        for _ in range(50):  # the work-order worker sends it to the ledger
            if "已受理" in page.locator("#wo-status").inner_text():
                break
            time.sleep(0.2)
            page.reload()
        expect(page.locator("#wo-status")).to_have_text("已受理")
        page.screenshot(path=screenshots / "20-work-order.png", full_page=True)
        page.go_back()
        page.go_back()
        page.reload()
        expect(page.locator("#my-reports")).to_contain_text("停电报修")
        assert errors == []
    finally:
        context.close()
