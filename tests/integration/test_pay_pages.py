"""Customer pages of paying through the ASGI app: the account page with its bills and
total, the status page, receipts (page and PDF), "my accounts", and the staff's order
list, order history, message outbox and dashboard health."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zxingcpp
from fastapi import FastAPI
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.bootstrap import Container, bootstrap
from selfpay.domain.accounts import Account, Bill
from selfpay.domain.orders import Order, OrderEvent, OrderLine, new_order_no
from selfpay.entrypoints.web.app import create_app
from selfpay.entrypoints.web.pay import PAYER_COOKIE, qr_svg, set_payer_cookie
from selfpay.services.ports import Message, Posting, ReceivedNotification
from support.web import BASE, add_staff, build_container, code_path, staff_login

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SECRETS = ("张三丰", "13812345678", "幸福路")
PASSWORDS = {"operator": "operator-pass-1", "auditor": "auditor-pass-1"}


@dataclass
class Site:
    app: FastAPI
    container: Container
    bills: dict[str, int]  # period -> bill id of ELEC 0012345678

    def path(self, biller: str, account: str) -> str:
        return code_path(self.container, biller, account)

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    container = build_container(
        tmp_path_factory.mktemp("pay"),
        accounts=[
            Account("ELEC", "0012345678", "张三丰", "13812345678", "幸福路 1 号"),
            Account("ELEC", "0099999999", "李四", "13900000000"),
            Account("WATER", "W-001", "王五", "", "", balance_fen=500),
        ],
        bills=[
            Bill(None, "ELEC", "0012345678", "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30)),
            Bill(None, "WATER", "W-001", "2026-10", 3000, None),
        ])
    with container.uow_factory() as uow:
        bills = {b.period: b.id or 0 for b in uow.bills.open_for("ELEC", "0012345678")}
    add_staff(container, PASSWORDS, NOW)
    yield Site(create_app(container=container), container, bills)
    container.close()


@pytest.fixture
def client(site: Site) -> TestClient:
    return TestClient(site.app)


def staff(site: Site, role: str) -> TestClient:
    return staff_login(site.app, role, PASSWORDS[role])


def make_order(site: Site, *, biller: str = "WATER", account: str = "W-001",
               bill_ids: tuple[int, ...] = (), amount_fen: int = 3000,
               action: dict[str, object] | None = None) -> Order:
    """An order stored as the payments service would store it, with a started attempt:
    the chosen bills as priced from the account's summary, and the masked holder."""
    summary = site.container.billing.account_summary(biller, account)
    owed = {b.id: b for b in summary.open_bills}
    order = Order(
        order_no=new_order_no(NOW), idempotency_key=f"key-{new_order_no(NOW)}",
        request_hash="h", biller=biller, account=account, bill_ids=bill_ids,
        amount_fen=amount_fen, channel="sandbox", created_at=NOW,
        expires_at=NOW + dt.timedelta(minutes=30), payer="web:tester",
        lines=tuple(OrderLine(b, owed[b].period, owed[b].outstanding_fen) for b in bill_ids),
        holder=summary.masked_name,
    )
    order.events.append(OrderEvent("state", "", "created", {"amount_fen": amount_fen}))
    order.start_attempt(action or {"kind": "redirect", "mode": "cashier",
                                   "url": f"/sandbox/pay/{order.order_no}"})
    with site.container.uow_factory() as uow:
        uow.orders.add(order)
        uow.commit()
    return order


def pay_order(site: Site, order: Order, *, posted: bool, txn: str = "TXN-4200001") -> None:
    later = NOW + dt.timedelta(seconds=20)
    with site.container.uow_factory() as uow:
        stored = uow.orders.get(order.order_no, for_update=True)
        assert stored is not None
        stored.mark_paid(channel_txn_id=txn, amount_fen=stored.amount_fen, paid_at=later)
        uow.notifications.add(ReceivedNotification(
            id=None, channel="sandbox", received_at=later, verified=True,
            notification_id=f"N-{order.order_no}", order_no=order.order_no, outcome="paid",
            error="", body_sha256="0" * 64))
        uow.notifications.add(ReceivedNotification(
            id=None, channel="sandbox", received_at=later, verified=False,
            notification_id="", order_no=order.order_no, outcome="",
            error="bad signature", body_sha256="1" * 64))
        posting = Posting(order_no=order.order_no, created_at=later, next_attempt_at=later)
        uow.postings.add(posting)
        if posted:
            stored.mark_posted(posted_at=later, duplicate=False)
            posting.status, posting.attempts, posting.done_at = "done", 2, later
            posting.last_error = "billing system timed out"
            uow.postings.save(posting)
        uow.orders.save(stored, now=later)
        uow.commit()


# --- the account page ---------------------------------------------------------------

def test_account_page_lists_open_bills_checked_with_the_total(site: Site,
                                                              client: TestClient) -> None:
    r = client.get(site.path("ELEC", "0012345678"))
    assert r.status_code == 200
    html = r.text
    assert "张*丰" in html
    for secret in SECRETS:
        assert secret not in html
    boxes = re.findall(r'<input type="checkbox" name="bill" value="(\d+)" '
                       r'data-fen="(\d+)" checked>', html)
    assert sorted(boxes) == sorted([(str(site.bills["2026-09"]), "10000"),
                                    (str(site.bills["2026-10"]), "5050")])
    assert 'id="pub-total" data-total="15050">¥150.50<' in html
    assert "已选 2/2 笔账单" in html
    assert 'id="pay-button"' in html and "/static/pay.js" in html
    assert r.headers["cache-control"] == "no-store"
    config = re.search(r'data-config="([^"]+)"', html)
    assert config and "&#34;biller&#34;: &#34;ELEC&#34;" in config.group(1)


def test_account_page_hides_bills_already_paid_and_being_posted(site: Site,
                                                                client: TestClient) -> None:
    order = make_order(site, biller="ELEC", account="0012345678",
                       bill_ids=(site.bills["2026-09"],), amount_fen=10000)
    pay_order(site, order, posted=False)
    html = client.get(site.path("ELEC", "0012345678")).text
    assert "2026-10" in html and "2026-09" not in html
    assert 'data-total="5050"' in html
    assert "正在入账" in html


def test_account_page_says_billing_is_unavailable(site: Site, client: TestClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from selfpay.services.ports import BillingSystemError

    def down(biller: str, account: str) -> None:
        raise BillingSystemError("timed out")

    monkeypatch.setattr(site.container.billing, "account_summary", down)
    r = client.get(site.path("WATER", "W-001"))
    assert r.status_code == 503
    assert "暂时无法查询" in r.text or "unavailable" in r.text.lower() or "稍后" in r.text


# --- status page ---------------------------------------------------------------------

def test_status_page_of_a_waiting_order_polls_the_api(site: Site, client: TestClient) -> None:
    order = make_order(site)
    r = client.get(f"/pay/{order.order_no}")
    assert r.status_code == 200
    assert "等待支付" in r.text and "¥30.00" in r.text
    assert f"/sandbox/pay/{order.order_no}" in r.text  # the cashier link
    assert f"/api/v1/orders/{order.order_no}" in r.text
    assert 'data-state="waiting"' in r.text
    assert "王*" in r.text and "王五" not in r.text


def test_status_page_shows_a_native_code_as_an_inline_qr(site: Site,
                                                        client: TestClient) -> None:
    code_url = "weixin://wxpay/bizpayurl?pr=AbCdEf123"
    order = make_order(site, action={"kind": "code_url", "mode": "native",
                                     "code_url": code_url})
    html = client.get(f"/pay/{order.order_no}").text
    svg = re.search(r"<svg.*?</svg>", html, re.S)
    assert svg, "no inline QR code"
    assert svg.group(0) == qr_svg(code_url)  # the channel's code_url, nothing else
    assert "另一部手机" in html


def test_status_page_of_a_failed_attempt_offers_a_retry(site: Site,
                                                      client: TestClient) -> None:
    order = make_order(site)
    with site.container.uow_factory() as uow:
        stored = uow.orders.get(order.order_no)
        assert stored is not None
        stored.attempt_failed("PAYERROR")
        uow.orders.save(stored, now=NOW)
        uow.commit()
    html = client.get(f"/pay/{order.order_no}").text
    assert 'data-state="retry"' in html
    assert "还可重试 2 次" in html and 'id="retry-button"' in html


def test_status_page_of_an_unknown_order_is_404(client: TestClient) -> None:
    assert client.get("/pay/SP20261101NOSUCHORDER2345").status_code == 404
    assert client.get("/pay/not-an-order").status_code == 404


# --- receipts ------------------------------------------------------------------------

def test_receipt_page_shows_the_paid_order_with_masked_data(site: Site,
                                                           client: TestClient) -> None:
    order = make_order(site, biller="ELEC", account="0012345678",
                       bill_ids=(site.bills["2026-10"],), amount_fen=5050)
    pay_order(site, order, posted=True, txn="TXN-RECEIPT-1")
    r = client.get(f"/receipt/{order.order_no}")
    assert r.status_code == 200
    html = r.text
    assert order.order_no in html and "TXN-RECEIPT-1" in html
    assert "张*丰" in html and "¥50.50" in html and "2026-10" in html
    for secret in SECRETS:
        assert secret not in html
    assert r.headers["cache-control"] == "no-store"
    # The time is shown in Asia/Shanghai (UTC+8).
    paid_local = (NOW + dt.timedelta(seconds=20, hours=8)).strftime("%Y-%m-%d %H:%M:%S")
    assert paid_local in html


def test_receipt_pdf_holds_the_receipt_and_a_code_of_its_url(
    site: Site, client: TestClient, tmp_path: Path
) -> None:
    order = make_order(site, biller="ELEC", account="0012345678",
                       bill_ids=(site.bills["2026-10"],), amount_fen=5050)
    pay_order(site, order, posted=True, txn="TXN-PDF-1")
    r = client.get(f"/receipt/{order.order_no}.pdf")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    text = pdf_text(r.content, tmp_path)
    assert order.order_no in text and "TXN-PDF-1" in text and "0012345678" in text
    assert "缴费凭证" in text and "张*丰" in text and "2026-10" in text and "¥50.50" in text
    assert decode_pdf_qr(r.content, tmp_path) == f"{BASE}/receipt/{order.order_no}"


def test_receipt_of_an_unpaid_order_says_not_yet_paid(site: Site,
                                                      client: TestClient) -> None:
    order = make_order(site)
    r = client.get(f"/receipt/{order.order_no}")
    assert r.status_code == 200 and "订单尚未支付" in r.text
    assert f"/pay/{order.order_no}" in r.text
    assert client.get(f"/receipt/{order.order_no}.pdf").status_code == 409


def test_receipt_of_an_unknown_order_is_404(client: TestClient) -> None:
    assert client.get("/receipt/SP20261101NOSUCHORDER2345").status_code == 404
    assert client.get("/receipt/SP20261101NOSUCHORDER2345.pdf").status_code == 404


# --- my accounts ---------------------------------------------------------------------

def test_my_accounts_lists_what_this_browser_paid(site: Site, client: TestClient) -> None:
    assert "还没有记录" in client.get("/my").text
    with site.container.uow_factory() as uow:
        uow.payers.remember("web:tester", "ELEC", "0012345678", NOW)
        uow.commit()
    from fastapi.responses import Response

    carrier = Response()
    set_payer_cookie(site.container.settings, carrier, "web:tester")
    cookie = carrier.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    client.cookies.set(PAYER_COOKIE, cookie)
    html = client.get("/my").text
    assert "张*丰" in html and site.path("ELEC", "0012345678") in html
    # A cookie that is not signed by us is nobody.
    client.cookies.set(PAYER_COOKIE, "web:tester")
    assert "还没有记录" in client.get("/my").text


# --- staff ---------------------------------------------------------------------------

def test_staff_list_orders_with_filters(site: Site) -> None:
    order = make_order(site, biller="ELEC", account="0099999999", amount_fen=777)
    for role in PASSWORDS:
        client = staff(site, role)
        r = client.get("/admin/orders")
        assert r.status_code == 200 and order.order_no in r.text
        r = client.get("/admin/orders", params={"q": order.order_no[:14] + order.order_no[14:]})
        assert order.order_no in r.text
        r = client.get("/admin/orders", params={"status": "posted"})
        assert order.order_no not in r.text
        r = client.get("/admin/orders", params={"q": "0099999999", "biller": "ELEC",
                                                "channel": "sandbox", "status": "pending"})
        assert order.order_no in r.text
        r = client.get("/admin/orders", params={"biller": "WATER"})
        assert order.order_no not in r.text


def test_staff_see_an_orders_full_history(site: Site) -> None:
    order = make_order(site, biller="ELEC", account="0012345678",
                       bill_ids=(site.bills["2026-10"],), amount_fen=5050)
    pay_order(site, order, posted=True, txn="TXN-HIST-1")
    with site.container.uow_factory() as uow:
        uow.messages.add(Message(id=None, kind="receipt", to="a@example.cn",
                                 subject="缴费凭证", body=f"订单号：{order.order_no}",
                                 created_at=NOW))
        uow.commit()
    client = staff(site, "auditor")
    r = client.get(f"/admin/orders/{order.order_no}")
    assert r.status_code == 200
    html = r.text
    history = html.split('id="history"')[1].split("</table>")[0]
    for step in ("created", "pending", "paid", "posted"):
        assert f"<strong>{step}</strong>" in history or f"{step}</strong>" in history
    notes = html.split('id="notifications"')[1].split("</table>")[0]
    assert f"N-{order.order_no}" in notes and "bad signature" in notes
    assert "未通过" in notes and "通过" in notes
    posting = html.split('id="posting"')[1].split("</dl>")[0]
    assert "已入账" in posting and "billing system timed out" in posting
    assert "a@example.cn" in html  # the receipt message
    assert "TXN-HIST-1" in html
    assert client.get("/admin/orders/SPNOSUCH").status_code == 404


def test_stuck_postings_are_flagged_on_the_dashboard(site: Site) -> None:
    order = make_order(site, biller="ELEC", account="0099999999", amount_fen=999)
    pay_order(site, order, posted=False)
    with site.container.uow_factory() as uow:
        posting = uow.postings.get(order.order_no)
        assert posting is not None
        posting.status, posting.attempts = "stuck", 7
        posting.last_error = "ledger refused: connection reset"
        uow.postings.save(posting)
        uow.commit()
    client = staff(site, "operator")
    html = client.get("/admin").text
    health = html.split('id="payment-health"')[1].split("</section>")[0]
    assert f"/admin/orders/{order.order_no}" in health
    assert "需要处理" in health and "今日成功率" in health
    stuck = client.get("/admin/orders", params={"status": "stuck"}).text
    assert order.order_no in stuck
    detail = client.get(f"/admin/orders/{order.order_no}").text
    assert "仍在重试" in detail and "connection reset" in detail


def test_staff_read_the_message_outbox_with_sms_codes_masked(site: Site) -> None:
    with site.container.uow_factory() as uow:
        # a row as versions before 0012 wrote it, with the code in clear: masked on show
        uow.messages.add(Message(id=None, kind="sms_code", to="13812345678", subject="",
                                 body="您的查询验证码是 975310", created_at=NOW))
        uow.commit()
    for role in PASSWORDS:
        client = staff(site, role)
        html = client.get("/admin/messages", params={"kind": "sms_code"}).text
        assert "验证码是 ******" in html and "13812345678" in html, role
        assert "975310" not in html, role
    assert TestClient(site.app).get("/admin/messages",
                                    follow_redirects=False).status_code == 303


# --- helpers -------------------------------------------------------------------------

def pdf_text(data: bytes, tmp: Path) -> str:
    """The PDF's text, by poppler's pdftotext."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: PDF not read")
    (tmp / "t.pdf").write_bytes(data)
    subprocess.run(["pdftotext", "-layout", str(tmp / "t.pdf"), str(tmp / "t.txt")],
                   check=True)
    return (tmp / "t.txt").read_text("utf-8")


def decode_pdf_qr(data: bytes, tmp: Path) -> str:
    """Rasterise the page (poppler's pdftoppm) and decode the QR code on it."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: PDF not decoded")
    (tmp / "r.pdf").write_bytes(data)
    subprocess.run(["pdftoppm", "-r", "200", "-gray", "-png", "-singlefile",
                    str(tmp / "r.pdf"), str(tmp / "r")], check=True)
    found = zxingcpp.read_barcodes(Image.open(tmp / "r.png"))
    assert found, "no QR code in the PDF"
    return found[0].text


# --- WeChat: the OAuth step that learns the payer's openid -----------------------------

class OAuthChannel:
    """Just enough of the wechatpay channel for the OAuth pages."""

    name, merchant_id = "wechatpay", "1900000001"

    class config:  # noqa: N801 - mirrors WeChatPayChannel.config
        app_secret = "secret"

    def oauth_authorize_url(self, redirect_uri: str, state: str) -> str:
        from urllib.parse import urlencode

        return "https://open.weixin.qq.com/connect/oauth2/authorize?" + urlencode(
            {"redirect_uri": redirect_uri, "state": state})

    def exchange_code_for_openid(self, code: str) -> str:
        if code != "good-code":
            raise RuntimeError("40029 invalid code")
        return "o-payer-openid-1"


def test_wechat_oauth_stores_the_openid_in_a_signed_cookie(site: Site) -> None:
    from urllib.parse import parse_qs, urlparse

    # A second app on the same database, with a wechatpay channel that can do OAuth.
    container = bootstrap(site.container.settings, channels={"wechatpay": OAuthChannel()})  # type: ignore[dict-item]
    try:
        client = TestClient(create_app(container=container))
        account_path = site.path("ELEC", "0012345678")
        r = client.get("/wechat/oauth/start", params={"next": account_path},
                       follow_redirects=False)
        assert r.status_code == 303
        target = urlparse(r.headers["location"])
        query = parse_qs(target.query)
        assert target.netloc == "open.weixin.qq.com"
        assert query["redirect_uri"] == [f"{BASE}/wechat/oauth/callback"]
        state = query["state"][0]

        r = client.get("/wechat/oauth/callback", params={"code": "good-code", "state": state},
                       follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == account_path
        assert "o-payer-openid-1" not in r.headers["set-cookie"]  # signed, not plain
        page = client.get(account_path).text
        assert "&#34;openid&#34;: true" in page and "&#34;oauth&#34;: true" in page

        # A refused exchange goes back without an openid; a forged state is refused.
        r = client.get("/wechat/oauth/start", params={"next": account_path},
                       follow_redirects=False)
        state2 = parse_qs(urlparse(r.headers["location"]).query)["state"][0]
        r = client.get("/wechat/oauth/callback", params={"code": "bad", "state": state2},
                       follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].endswith("?wx=0")
        fresh = TestClient(create_app(container=container))
        r = fresh.get("/wechat/oauth/callback", params={"code": "good-code",
                                                        "state": state + "x"})
        assert r.status_code == 400
        # Login CSRF: a callback link made in the attacker's browser (a valid, signed
        # state) plants nothing in another browser, which holds no nonce for it.
        attacker = TestClient(create_app(container=container))
        r = attacker.get("/wechat/oauth/start", params={"next": account_path},
                         follow_redirects=False)
        planted = parse_qs(urlparse(r.headers["location"]).query)["state"][0]
        r = fresh.get("/wechat/oauth/callback", params={"code": "good-code",
                                                        "state": planted},
                      follow_redirects=False)
        assert r.status_code == 400 and "set-cookie" not in r.headers
        # Only paths on this site are followed after the OAuth step.
        r = fresh.get("/wechat/oauth/start", params={"next": "//evil.example/"},
                      follow_redirects=False)
        assert "evil.example" not in parse_qs(urlparse(r.headers["location"]).query)["state"][0]
    finally:
        container.close()
