"""What a new customer stumbled on: a dead-end "not found", a fully paid account shown as
an empty pay form, overdue bills not marked, errors in two languages at once, and a
missing favicon."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
from fastapi import FastAPI

from fakes import FakeChannel
from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.domain.qrcodes import mac_tag
from selfpay.entrypoints.web.app import create_app
from selfpay.services.payments import CreateOrder
from support.web import BASE, TestClient, code_path

CJK = re.compile(r"[\u3400-\u9fff]")
# 2026-11-01 00:30 in Shanghai, still 2026-10-31 in UTC: the site's date decides.
SHANGHAI_AFTER_MIDNIGHT = dt.datetime(2026, 10, 31, 16, 30, tzinfo=dt.UTC)


@dataclass
class Site:
    app: FastAPI
    container: Container
    channel: FakeChannel

    def path(self, biller: str, account: str) -> str:
        return code_path(self.container, biller, account)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = load_settings(data_dir=tmp_path_factory.mktemp("ux"), public_base_url=BASE,
                      env="development", enabled_channels="fake")
    upgrade(s.sqlalchemy_url)
    channel = FakeChannel()
    container = bootstrap(s, channels={"fake": channel})
    with container.uow_factory() as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.accounts.upsert_many([
            Account("ELEC", "0012345678", "张三丰", "13812345678"),
            Account("ELEC", "0055555555", "李四", "13900000000"),
            Account("ELEC", "0077777777", "王五", "", balance_fen=1200),
        ])
        uow.bills.add_many([
            # due on the last day of October: overdue from 1 November, Shanghai time
            Bill(None, "ELEC", "0012345678", "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30)),
            Bill(None, "ELEC", "0055555555", "2026-10", 85671, dt.date(2026, 11, 30)),
        ])
        uow.commit()
    app = create_app(container=container)
    app.state.clock = lambda: SHANGHAI_AFTER_MIDNIGHT
    yield Site(app, container, channel)
    container.close()


@pytest.fixture
def client(site: Site) -> TestClient:
    return TestClient(site.app)


def href_of(html: str, element_id: str) -> str | None:
    """The href of the link with this id."""
    tag = re.search(rf'<a [^>]*id="{element_id}"[^>]*>', html)
    href = re.search(r'href="([^"]*)"', tag.group(0)) if tag else None
    return unescape(href.group(1)) if href else None


def text_of(html: str) -> str:
    """What a reader sees: no tags, no attributes."""
    return unescape(re.sub(r"<[^>]+>", " ", html))


# --- "account not found" and the invalid code are no dead ends --------------------------

def test_not_found_shows_the_number_as_entered_the_leading_zero_hint_and_a_way_back(
        client: TestClient) -> None:
    r = client.get("/lookup/account", params={"biller": "ELEC", "account": "12345678"})
    assert r.status_code == 404 and "未找到用户" in r.text
    assert re.search(r'id="entered-account">12345678<', r.text)
    assert "户号可能以 0 开头" in r.text and "如 0012345678" in r.text
    back = href_of(r.text, "lookup-again")
    assert back is not None and back.startswith("/lookup?")
    form = client.get(back)
    assert form.status_code == 200
    assert 'value="12345678"' in form.text  # the number, to be corrected
    assert re.search(r'<option value="ELEC" selected', form.text)
    assert 'href="/my"' in r.text


def test_not_found_speaks_english_and_only_english(client: TestClient) -> None:
    r = client.get("/lookup/account", params={"biller": "ELEC", "account": "12345678",
                                              "lang": "en"})
    assert r.status_code == 404
    assert "Account numbers may begin with 0" in r.text and "e.g. 0012345678" in r.text
    assert not CJK.search(text_of(r.text).replace("中文", ""))  # but the switch back


def test_the_leading_zero_hint_is_for_numbers_of_digits_only(site: Site,
                                                             client: TestClient) -> None:
    tag = mac_tag(site.container.keyring, "ELEC", "W-404")
    r = client.get(f"/Q/ELEC/W-404/{tag}")
    assert r.status_code == 404 and "W-404" in r.text
    assert 'id="zero-hint"' not in r.text


def test_an_invalid_code_links_to_the_look_up_page(client: TestClient) -> None:
    r = client.get("/Q/ELEC/0012345678/1AAAAAAAAAAAAA")
    assert r.status_code == 400 and "无效的二维码" in r.text
    assert href_of(r.text, "to-lookup") == "/lookup" and 'href="/my"' in r.text
    assert "0012345678" not in r.text  # a code that does not verify shows nothing of it


# --- nothing owed: say so, and show the last receipt -------------------------------------

def test_a_fully_paid_account_says_nothing_is_owed_and_links_the_latest_receipt(
        site: Site, client: TestClient) -> None:
    before = client.get(site.path("ELEC", "0055555555"))
    assert 'id="pay-button"' in before.text
    view = site.container.payments.create_order(CreateOrder(
        idempotency_key="ux-paid-1", biller="ELEC", account="0055555555", channel="fake"))
    site.container.payments.handle_notification("fake",
                                                *site.channel.notification(view.order_no))
    assert site.container.payments.dispatch_postings() == 1

    r = client.get(site.path("ELEC", "0055555555"))
    assert r.status_code == 200
    assert "无需缴费" in r.text and 'id="pub-settled"' in r.text
    for gone in ('id="pay-button"', "已选 0/0", "¥0.00", "/static/pay.js", 'id="pay-form"'):
        assert gone not in r.text
    assert href_of(r.text, "pub-last-receipt") == f"/receipt/{view.order_no}"
    assert "¥856.71" in text_of(r.text)
    assert client.get(f"/receipt/{view.order_no}").status_code == 200

    en = client.get(site.path("ELEC", "0055555555") + "?lang=en")
    assert "Nothing to pay" in en.text and "View the receipt" in en.text


def test_an_account_that_never_paid_and_owes_nothing_shows_its_balance(
        site: Site, client: TestClient) -> None:
    r = client.get(site.path("ELEC", "0077777777"))
    assert "无需缴费" in r.text and "¥12.00" in r.text
    assert 'id="pub-last-receipt"' not in r.text and 'id="pay-button"' not in r.text


# --- overdue bills, by the site's date ----------------------------------------------------

def test_a_bill_past_its_due_date_in_the_sites_time_zone_is_marked_overdue(
        site: Site, client: TestClient) -> None:
    r = client.get(site.path("ELEC", "0012345678"))
    rows = re.findall(r"<li( class=\"overdue\")?>\s*<label class=\"pub-bill\">.*?</li>", r.text,
                      flags=re.S)
    assert len(rows) == 2
    overdue = [m for m in re.finditer(r'<li class="overdue">(.*?)</li>', r.text, flags=re.S)]
    assert len(overdue) == 1 and "2026-09" in overdue[0].group(1)
    assert "已逾期" in overdue[0].group(1) and "应于 2026-10-31 前缴清" in overdue[0].group(1)
    assert "有 1 笔账单已逾期" in r.text
    en = client.get(site.path("ELEC", "0012345678") + "?lang=en")
    assert "Overdue" in en.text and "was due 2026-10-31" in en.text


def test_no_bill_is_overdue_on_its_due_date(site: Site) -> None:
    site.app.state.clock = lambda: dt.datetime(2026, 10, 31, 15, 59, tzinfo=dt.UTC)
    try:
        r = TestClient(site.app).get(site.path("ELEC", "0012345678"))
    finally:
        site.app.state.clock = lambda: SHANGHAI_AFTER_MIDNIGHT
    assert "已逾期" not in r.text and 'class="overdue"' not in r.text


# --- errors in the request's language -------------------------------------------------------

def test_the_api_message_is_in_the_requests_language_and_detail_stays_english(
        client: TestClient) -> None:
    body = {"biller": "ELEC", "account": "12 34", "channel": "fake"}
    zh = client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": "ux-k1"})
    assert zh.status_code == 400
    assert zh.json()["message"].startswith("用户编号无效（12 34）")
    assert not CJK.search(zh.json()["detail"]) and "12 34" in zh.json()["detail"]
    en = client.post("/api/v1/orders?lang=en", json=body, headers={"Idempotency-Key": "ux-k2"})
    assert en.json()["message"].startswith("Invalid account number '12 34'")
    missing = client.get("/api/v1/billers/ELEC/accounts/0000000404?lang=zh-CN")
    assert missing.status_code == 404
    assert missing.json()["message"] == "ELEC 中没有用户编号 0000000404。"
    assert missing.json()["detail"] == "ELEC has no account 0000000404."
    no_key = client.post("/api/v1/orders?lang=en", json=body)
    assert no_key.json()["message"] == "The Idempotency-Key header is required."


# --- the favicon --------------------------------------------------------------------------

def test_customer_pages_link_the_icon_and_favicon_ico_is_served(site: Site,
                                                                client: TestClient) -> None:
    for path in (site.path("ELEC", "0012345678"), "/lookup", "/my"):
        assert '<link rel="icon" href="/static/favicon.svg"' in client.get(path).text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")
    assert client.get("/static/favicon.svg").status_code == 200


def test_the_receipt_pdf_writes_amounts_as_every_page_does(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from selfpay.adapters.receipts import render_receipt_pdf
    from selfpay.services.receipts import Receipt, ReceiptLine

    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    paid = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)
    receipt = Receipt(
        order_no="SP1", status="posted", biller="ELEC", biller_name="电费",
        biller_name_en="Electricity", account="0012345678", masked_name="张*丰",
        lines=(ReceiptLine(1, "2026-10", 85671),), amount_fen=85671, channel="sandbox",
        channel_txn_id="T1", created_at=paid, paid_at=paid, posted_at=paid)
    (tmp_path / "r.pdf").write_bytes(render_receipt_pdf(receipt, url=f"{BASE}/receipt/SP1"))
    subprocess.run(["pdftotext", "-raw", str(tmp_path / "r.pdf"), str(tmp_path / "r.txt")],
                   check=True)
    text = (tmp_path / "r.txt").read_text("utf-8")
    assert text.count("¥856.71") == 3  # the headline, the bill, the total
    assert "¥ " not in text
