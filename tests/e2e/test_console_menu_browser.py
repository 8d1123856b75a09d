"""In Debian's chromium: the console menu in sections stays on one line at 1366 and at
1024 px in both languages and opens by keyboard without a script; the customer's dead
ends have a way back; no page asks for a missing /favicon.ico."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import Browser, Page, expect

from selfpay.bootstrap import Container

pytestmark = pytest.mark.browser


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


def menu_rows(page: Page) -> set[int]:
    """The distinct vertical positions of the menu's top-level entries."""
    tops = page.evaluate(
        "() => [...document.querySelectorAll('.mainnav > .navlink, .navgroup-label')]"
        ".map(e => Math.round(e.getBoundingClientRect().top))")
    return set(tops)


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
@pytest.mark.parametrize("width", [1366, 1024])
def test_the_console_menu_stays_on_one_line(browser: Browser, live_server: LiveServer,
                                            screenshots: Path, width: int, lang: str) -> None:
    context = browser.new_context(viewport={"width": width, "height": 768}, locale="zh-CN")
    page = context.new_page()
    try:
        log_in(page, live_server)
        page.goto(f"{live_server.url}/admin/bills?lang={lang}")
        expect(page.locator(".navgroup")).to_have_count(4)  # an admin sees every section
        assert len(menu_rows(page)) == 1, f"the menu wraps at {width} px ({lang})"
        header = page.locator("header.topbar").bounding_box()
        assert header is not None and header["height"] <= 64
        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        page.hover("#nav-accounts .navgroup-label")
        expect(page.locator("#nav-accounts .navmenu a").first).to_be_visible()
        page.screenshot(path=screenshots / f"30-menu-{width}-{lang}.png")
    finally:
        context.close()


def test_the_menu_opens_and_is_followed_by_keyboard_alone(browser: Browser,
                                                         live_server: LiveServer,
                                                         screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                  java_script_enabled=False)  # no script is needed
    page = context.new_page()
    try:
        log_in(page, live_server)
        page.goto(f"{live_server.url}/admin/bills?lang=zh-CN")
        accounts = page.locator("#nav-accounts .navmenu a", has_text="用户")
        expect(accounts).to_be_hidden()
        for _ in range(30):  # Tab from the top of the page to the "账户与二维码" section
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.closest('#nav-accounts') !== null"):
                break
        else:
            pytest.fail("the accounts section is not reachable by Tab")
        expect(accounts).to_be_visible()
        expect(page.locator("#nav-payments .navmenu")).to_be_hidden()  # one at a time
        page.screenshot(path=screenshots / "31-menu-keyboard.png")
        page.keyboard.press("Tab")  # into the open section: its first item
        assert page.evaluate("() => document.activeElement.textContent.trim()") == "用户"
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{live_server.url}/admin/accounts")
        expect(page.locator("#nav-accounts")).to_have_class("navgroup active")
    finally:
        context.close()


def test_dead_ends_lead_back_and_no_page_asks_for_a_missing_icon(
        browser: Browser, live_server: LiveServer, screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url)
            if r.status == 404 and not r.request.is_navigation_request() else None)
    try:
        page.goto(f"{live_server.url}/lookup")
        page.fill("#account", "12345678")
        page.click("form[action='/lookup/account'] button[type=submit]")
        expect(page.locator("#entered-account")).to_have_text("12345678")
        expect(page.locator("#zero-hint")).to_contain_text("0012345678")
        page.screenshot(path=screenshots / "32-not-found.png", full_page=True)
        page.click("#lookup-again")
        expect(page.locator("#account")).to_have_value("12345678")
        page.fill("#account", "0012345678")
        page.goto(f"{live_server.url}/q/ELEC/0000000000/1AAAAAAAAAAAAA")
        page.screenshot(path=screenshots / "33-invalid-code.png", full_page=True)
        page.click("#to-lookup")
        expect(page).to_have_url(f"{live_server.url}/lookup")
        icon = page.evaluate("() => document.querySelector('link[rel=icon]').href")
        assert icon == f"{live_server.url}/static/favicon.svg"
        assert page.request.get(f"{live_server.url}/favicon.ico").ok
        assert missing == []
    finally:
        context.close()
