"""The QR batch and import pages in a real browser: what a batch made when rows were
skipped, a failed batch, and sheets refused at once (screenshots 40-45)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import openpyxl
import pytest
from playwright.sync_api import Browser, Page, expect

from support.sheets import crafted, not_a_workbook, table_xlsx

pytestmark = pytest.mark.browser


class LiveServer(Protocol):  # the `live_server` fixture of tests/e2e/conftest.py
    url: str
    username: str
    password: str


def log_in(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/admin/login")
    page.fill("#username", live.username)
    page.fill("#password", live.password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{live.url}/admin")


def upload_batch(page: Page, live: LiveServer, path: Path, *, skip_invalid: bool) -> None:
    page.goto(f"{live.url}/admin/qr/batch")
    page.set_input_files("#file", str(path))
    if skip_invalid:
        page.check("input[name=skip_invalid]")
    page.click("#batch-form button[type=submit]")


def test_the_batch_page_tells_what_a_batch_made_and_why_one_failed(
        browser: Browser, live_server: LiveServer, screenshots: Path, tmp_path: Path) -> None:
    live = live_server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN",
                                  accept_downloads=True)
    page = context.new_page()
    try:
        log_in(page, live)
        page.goto(f"{live.url}/admin/qr/batch")
        expect(page.locator("body")).not_to_contain_text("--biller")
        with page.expect_download() as dl:
            page.click("#template-link")
        template = tmp_path / "template.xlsx"
        dl.value.save_as(template)
        words = "\n".join(str(c.value) for ws in openpyxl.load_workbook(template).worksheets
                          for row in ws.iter_rows() for c in row if c.value is not None)
        assert "--" not in words and "“默认业务类型”" in words

        mixed = tmp_path / "五户两错.csv"
        mixed.write_text("用户编号,业务类型\n0000007101,ELEC\n0000007102,ELEC\nbad one!,ELEC\n"
                         "also bad!,NOPE\n0000007103,ELEC\n", "utf-8")
        upload_batch(page, live, mixed, skip_invalid=True)
        expect(page.locator("#job")).to_have_attribute("data-state", "done", timeout=30_000)
        expect(page.locator("#job-summary")).to_have_text(
            "已生成并记录 3 个二维码；另有 2 行有错误，已跳过，"
            "没有生成二维码（见下方“已跳过的行”）。")
        expect(page.locator("#job-summary")).to_have_class("flash flash-warning")
        expect(page.locator("#job-skipped")).to_be_visible()
        page.screenshot(path=screenshots / "40-batch-skipped-rows.png", full_page=True)

        bad = tmp_path / "有错.csv"
        bad.write_text("用户编号,业务类型\n0000007104,ELEC\nbad one!,ELEC\n", "utf-8")
        upload_batch(page, live, bad, skip_invalid=False)
        expect(page.locator("#job")).to_have_attribute("data-state", "failed", timeout=30_000)
        expect(page.locator("#job-state")).to_have_text("失败")
        expect(page.locator("#job-count")).to_be_hidden()
        expect(page.locator("#job-progress")).to_be_hidden()
        expect(page.locator("#job-message")).to_contain_text("表格有无效行")
        assert "0 / …" not in page.locator("#job").inner_text()
        page.screenshot(path=screenshots / "41-batch-failed.png", full_page=True)

        zipped = tmp_path / "照片.xlsx"
        zipped.write_bytes(not_a_workbook())
        upload_batch(page, live, zipped, skip_invalid=False)
        expect(page.locator("#batch-form .flash-error")).to_contain_text("不是 Excel 工作簿")
        page.screenshot(path=screenshots / "42-batch-not-a-workbook.png", full_page=True)

        far = tmp_path / "XFD.xlsx"
        far.write_bytes(crafted([("A1", "account"), ("XFD1048576", "x")]))
        upload_batch(page, live, far, skip_invalid=False)
        expect(page.locator("#batch-form .flash-error")).to_contain_text("第 1,048,576 行")
        page.screenshot(path=screenshots / "43-batch-too-long.png", full_page=True)
    finally:
        context.close()


def test_the_imports_page_refuses_a_crafted_sheet_and_imports_a_good_one(
        browser: Browser, live_server: LiveServer, screenshots: Path, tmp_path: Path) -> None:
    live = live_server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    try:
        log_in(page, live)
        far = tmp_path / "ZZ.xlsx"
        far.write_bytes(crafted([("A1", "account"), ("ZZ200000", "x")],
                                dimension="A1:ZZ200000"))
        page.goto(f"{live.url}/admin/imports")
        page.set_input_files("#file", str(far))
        page.click("#import-form button[type=submit]")
        expect(page.locator(".flash-error")).to_contain_text("A1:ZZ200000")
        page.screenshot(path=screenshots / "44-import-refused.png", full_page=True)

        good = tmp_path / "十户.xlsx"
        good.write_bytes(table_xlsx([["业务类型", "用户编号", "户名", "电话", "地址"]] + [
            ["ELEC", f"00081{n:05d}", "赵六", "13700000000", "和平路 2 号"] for n in range(10)]))
        page.set_input_files("#file", str(good))
        page.click("#import-form button[type=submit]")
        expect(page.locator("#import-result")).to_have_text("导入成功。", timeout=30_000)
        assert "/admin/imports/" in page.url and "/jobs/" not in page.url
        page.screenshot(path=screenshots / "45-import-done.png", full_page=True)
    finally:
        context.close()
