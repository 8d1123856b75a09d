"""The staff console and the public page in a real browser (Debian's chromium)."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path
from typing import Protocol

import openpyxl
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from selfpay.bootstrap import Container
from selfpay.domain.qrcodes import make_payload

pytestmark = pytest.mark.browser


class LiveServer(Protocol):  # the `live_server` fixture of tests/e2e/conftest.py
    url: str
    container: Container
    username: str
    password: str


def decode(data: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))
    assert len(found) == 1, f"expected one QR code, found {len(found)}"
    return found[0].text


def batch_sheet(path: Path, accounts: list[str]) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["用户编号", "业务类型"])
    for account in accounts:
        ws.append([account, "ELEC"])
    for (cell,) in ws.iter_rows(min_row=2, max_col=1):
        cell.number_format = "@"  # text: keeps the leading zeros
    wb.save(path)


def open_menu(page: Page, section: str, item: str) -> None:
    """Pick an item of a section of the console menu; a section opens on hover."""
    page.hover(f"#nav-{section} .navgroup-label")
    page.click(f"#nav-{section} .navmenu >> text={item}")


def log_in(page: Page, live: LiveServer, shots: Path) -> None:
    page.goto(f"{live.url}/admin")
    expect(page).to_have_url(f"{live.url}/admin/login?next=/admin")
    expect(page.get_by_role("heading", name="员工登录")).to_be_visible()
    page.screenshot(path=shots / "01-login.png")
    page.fill("#username", live.username)
    page.fill("#password", live.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{live.url}/admin")


def test_staff_make_a_code_and_a_batch_in_the_browser(
    browser: Browser, live_server: LiveServer, screenshots: Path, tmp_path: Path
) -> None:
    live = live_server
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True,
                                  locale="zh-CN")
    page = context.new_page()
    try:
        log_in(page, live, screenshots)
        expect(page.locator(".stat-value").first).not_to_have_text("0")
        expect(page.locator("svg.chart rect.chart-bar").first).to_be_visible()
        page.screenshot(path=screenshots / "02-dashboard.png", full_page=True)

        # one code: preview, then the PNG download decodes to the payload shown
        open_menu(page, "accounts", "生成二维码")
        page.select_option("#biller", "ELEC")
        page.fill("#account", "0000000000")  # a demo account: its holder shows masked
        page.click("#qr-form button[type=submit]")
        expect(page.locator("#qr-preview img.qr-img")).to_be_visible()
        expect(page.locator("#qr-preview")).to_contain_text("*")
        payload = page.locator("#qr-payload").inner_text().strip()
        assert payload.startswith(f"{live.url.upper()}/Q/ELEC/0000000000/")
        page.wait_for_function(
            "() => { const i = document.querySelector('#qr-preview img');"
            " return i && i.complete && i.naturalWidth > 0; }")
        page.screenshot(path=screenshots / "03-qr-preview.png", full_page=True)
        with page.expect_download() as dl:
            page.click("#download-png")
        assert dl.value.suggested_filename == "0000000000.png"
        png = tmp_path / "single.png"
        dl.value.save_as(png)
        assert decode(png.read_bytes()) == payload

        # the template, then a sheet of 30 accounts through the batch job
        open_menu(page, "accounts", "批量生成")
        with page.expect_download() as dl:
            page.click("#template-link")
        template = tmp_path / dl.value.suggested_filename
        dl.value.save_as(template)
        assert openpyxl.load_workbook(template).worksheets[0].max_row >= 1

        accounts = [f"00{n:08d}" for n in range(7000, 7030)]
        sheet = tmp_path / "三十户.xlsx"
        batch_sheet(sheet, accounts)
        page.set_input_files("#file", str(sheet))
        page.click("#batch-form button[type=submit]")
        expect(page).to_have_url(f"{live.url}/admin/qr/batch/jobs/" + page.url.rsplit("/", 1)[-1])
        page.screenshot(path=screenshots / "04-batch-progress.png", full_page=True)
        expect(page.locator("#job")).to_have_attribute("data-state", "done", timeout=30_000)
        expect(page.locator("#job-count")).to_have_text("30 / 30")
        expect(page.locator("#job-preview img").first).to_be_visible()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#job-preview img')]"
            ".every(i => i.complete && i.naturalWidth > 0)")
        page.wait_for_function(  # the bar's CSS transition has ended
            "() => { const b = document.getElementById('job-bar');"
            " return b.getBoundingClientRect().width >="
            " b.parentNode.getBoundingClientRect().width - 1; }")
        page.screenshot(path=screenshots / "05-batch-done.png", full_page=True)
        with page.expect_download() as dl:
            page.click("#zip-link")
        archive = tmp_path / "batch.zip"
        dl.value.save_as(archive)
        with zipfile.ZipFile(archive) as zf:
            pngs = sorted(n for n in zf.namelist() if n.endswith(".png"))
            assert len(pngs) == 30
            manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode(
                "utf-8-sig"))))
            assert sorted(row["account"] for row in manifest) == accounts
            for row in manifest[:3] + manifest[-2:]:
                assert decode(zf.read(row["file"])) == row["payload"]

        open_menu(page, "accounts", "批次记录")
        expect(page.locator("table")).to_contain_text("三十户.xlsx")
        page.goto(f"{live.url}/admin")
        page.screenshot(path=screenshots / "06-dashboard-after.png", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, "the console scrolls sideways on a phone"
        page.screenshot(path=screenshots / "09-dashboard-phone.png", full_page=True)
    finally:
        context.close()


def test_the_scanned_code_opens_a_phone_friendly_page(
    browser: Browser, live_server: LiveServer, screenshots: Path
) -> None:
    live = live_server
    with live.container.uow_factory() as uow:
        bill = uow.bills.search(status="open", limit=1).items[0]
        holder = uow.accounts.get(bill.biller, bill.account)
    assert holder is not None
    payload = make_payload(live.container.code_base, live.container.keyring, bill.biller,
                           bill.account)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2, locale="zh-CN")
    page = context.new_page()
    try:
        page.goto(payload)  # the browser lower-cases only the host: /Q/... is served
        expect(page.locator("#pub-account")).to_have_text(bill.account)
        expect(page.locator("#pub-holder")).not_to_have_text(holder.name)
        assert holder.name not in page.content() and holder.phone not in page.content()
        expect(page.get_by_role("button", name=re.compile("立即缴费"))).to_be_enabled()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, "the page scrolls sideways on a phone"
        page.screenshot(path=screenshots / "07-public-phone.png", full_page=True)

        page.goto(payload[:-1] + ("A" if payload[-1] != "A" else "B"))
        expect(page.get_by_role("heading", name="无效的二维码")).to_be_visible()
        page.screenshot(path=screenshots / "08-public-invalid.png", full_page=True)
    finally:
        context.close()
