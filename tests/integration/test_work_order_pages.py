"""Other services and dead letters through the ASGI app: the public work-order form
(per-page token, origin check, rate limit), "my reports" limited to this browser, the
ticket page, the staff's work-order page moving a ticket on the ledger side, and the
dead-letter page (who may replay, CSRF, audit)."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.adapters.ratelimit import RateLimiter, memory_store
from selfpay.bootstrap import Container
from selfpay.domain.accounts import Account, Bill
from selfpay.domain.orders import Order, OrderEvent, new_order_no
from selfpay.entrypoints.web.app import create_app
from selfpay.services.ports import Posting
from support.web import BASE, CSRF_RE, add_staff, build_container, code_path, staff_login

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
PASSWORDS = {"operator": "operator-pass-1", "auditor": "auditor-pass-1"}
TOKEN_RE = re.compile(r'name="token" value="([^"]+)"')
TICKET_RE = re.compile(r"/workorders/(WO[A-Z0-9]{16})")


@dataclass
class Site:
    app: FastAPI
    container: Container

    def path(self, biller: str, account: str) -> str:
        return code_path(self.container, biller, account)

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    container = build_container(
        tmp_path_factory.mktemp("wo"),
        accounts=[
            Account("ELEC", "0012345678", "张三丰", "13812345678", "幸福路 1 号"),
            Account("ELEC", "0099999999", "李四", "13900000000"),
            Account("WATER", "W-001", "王五", ""),
        ],
        bills=[Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)],
        work_orders_per_ip_per_hour=3)
    add_staff(container, PASSWORDS, NOW)
    yield Site(create_app(container=container), container)
    container.close()


@pytest.fixture(autouse=True)
def fresh_rate_limits(site: Site) -> None:
    """Every TestClient comes from the same address: each test starts with no reports
    counted against it."""
    site.app.state.work_order_limiter = RateLimiter(
        memory_store(), name="work_order",
        limit=site.container.settings.work_orders_per_ip_per_hour, window_s=3600)


def staff(site: Site, role: str) -> TestClient:
    return staff_login(site.app, role, PASSWORDS[role])


def open_form(client: TestClient, site: Site, account: str = "0012345678",
              kind: str = "outage", biller: str = "ELEC") -> tuple[str, str]:
    url = site.path(biller, account) + f"/services/{kind}"
    page = client.get(url)
    assert page.status_code == 200, page.text
    token = TOKEN_RE.search(page.text)
    assert token
    return url, token.group(1)


def submit(client: TestClient, url: str, token: str, **kw: str):
    data = {"description": "3 号楼整栋停电", "phone": "139 1234 5678", "token": token}
    data.update(kw)
    return client.post(url, data=data, follow_redirects=False)


# --- the customer -------------------------------------------------------------------------


def test_the_account_page_offers_other_services_worded_by_biller(site: Site) -> None:
    client = TestClient(site.app)
    html = client.get(site.path("ELEC", "0012345678")).text
    services = html.split('id="other-services"')[1].split("</section>")[0]
    assert "其他服务" in services and "停电报修" in services and "表计故障" in services
    assert "变更联系方式" in services and "/services/contact_change" in services
    water = TestClient(site.app).get(site.path("WATER", "W-001")).text
    assert "停水报修" in water
    assert 'id="my-reports"' not in html


def test_a_report_becomes_a_ticket_that_only_this_browser_lists(site: Site) -> None:
    client = TestClient(site.app)
    url, token = open_form(client, site, account="0099999999")
    assert "selfpay_form" in client.cookies
    r = submit(client, url, token)
    assert r.status_code == 303, r.text
    ticket = TICKET_RE.search(r.headers["location"]).group(1)  # type: ignore[union-attr]
    page = client.get(f"/workorders/{ticket}").text
    assert ticket in page and "139****5678" in page and "13912345678" not in page
    assert "3 号楼整栋停电" in page and "已提交" in page
    mine = client.get(site.path("ELEC", "0099999999")).text
    assert 'id="my-reports"' in mine and ticket in mine

    stranger = TestClient(site.app)
    assert ticket not in stranger.get(site.path("ELEC", "0099999999")).text
    theirs = stranger.get(f"/workorders/{ticket}").text
    assert "139****5678" in theirs and "3 号楼整栋停电" not in theirs  # no description
    forged = TestClient(site.app, cookies={"selfpay_tickets": f'["{ticket}"]'})
    assert ticket not in forged.get(site.path("ELEC", "0099999999")).text
    assert stranger.get("/workorders/WO" + "A" * 16).status_code == 404
    assert stranger.get("/workorders/nonsense").status_code == 404


def test_the_public_form_cannot_be_posted_from_another_site(site: Site) -> None:
    client = TestClient(site.app)
    url, token = open_form(client, site, account="0012345678", kind="meter_fault")
    assert submit(client, url, "").status_code == 403
    assert submit(client, url, token + "x").status_code == 403
    # a token fetched by another browser is bound to that browser's nonce
    other = TestClient(site.app)
    _, other_token = open_form(other, site, account="0012345678", kind="meter_fault")
    assert submit(client, url, other_token).status_code == 403
    # a token for another account does not fit this one
    _, elsewhere = open_form(client, site, account="0099999999", kind="meter_fault")
    assert submit(client, url, elsewhere).status_code == 403
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null", "Sec-Fetch-Site": "cross-site"}):
        r = client.post(url, data={"description": "x", "phone": "13912345678",
                                   "token": token}, headers=headers, follow_redirects=False)
        assert r.status_code == 403, headers
        assert "页面已过期或来源不明" in r.text
    same = client.post(url, data={"description": "表不走", "phone": "13912345678",
                                  "token": token}, headers={"Origin": BASE},
                       follow_redirects=False)
    assert same.status_code == 303
    bad = TestClient(site.app).post(site.path("ELEC", "0012345678")[:-2] + "ZZ/services/outage",
                                    data={"token": token})
    assert bad.status_code == 400  # a tampered code is refused before anything else


def test_bad_input_is_shown_on_the_form_and_reports_are_rate_limited(site: Site) -> None:
    client = TestClient(site.app)
    url, token = open_form(client, site, account="0012345678", kind="contact_change")
    r = submit(client, url, token, phone="12345")
    assert r.status_code == 400 and "请输入 11 位手机号码" in r.text
    assert "新的联系电话" in r.text
    r = submit(client, url, token, description=" ")
    assert r.status_code == 400 and "请填写情况说明" in r.text
    statuses = [submit(client, url, token, description=f"新号码 {i}").status_code
                for i in range(4)]
    assert statuses == [303, 303, 303, 429]  # 3 per account and address an hour
    url2, token2 = open_form(client, site, account="0099999999", kind="contact_change")
    assert submit(client, url2, token2).status_code == 303  # another account is fine
    assert client.get(url[:-len("contact_change")] + "refund").status_code == 404


# --- staff: work orders ----------------------------------------------------------------------


def test_staff_move_a_ticket_on_the_ledger_side_and_the_customer_sees_it(site: Site) -> None:
    client = TestClient(site.app)
    url, token = open_form(client, site, account="0012345678", kind="outage")
    ticket = TICKET_RE.search(submit(client, url, token).headers["location"]).group(1)  # type: ignore[union-attr]
    site.container.work_orders.run_round()
    assert "已受理" in client.get(f"/workorders/{ticket}").text

    auditor = staff(site, "auditor")
    listing = auditor.get("/admin/work-orders").text
    assert ticket in listing and "billing-status" not in listing
    r = auditor.post(f"/admin/work-orders/{ticket}/billing-status",
                     data={"status": "done", "csrf_token": CSRF_RE.search(listing).group(1)})  # type: ignore[union-attr]
    assert r.status_code == 403

    operator = staff(site, "operator")
    listing = operator.get("/admin/work-orders").text
    csrf = CSRF_RE.search(listing).group(1)  # type: ignore[union-attr]
    assert operator.post(f"/admin/work-orders/{ticket}/billing-status",
                         data={"status": "in_progress"}).status_code == 403  # no CSRF
    r = operator.post(f"/admin/work-orders/{ticket}/billing-status",
                      data={"status": "in_progress", "note": "抢修班已出发",
                            "csrf_token": csrf})
    assert r.status_code == 200 and "处理中" in r.text
    assert site.container.work_orders.run_round()["updated"] == 1
    page = client.get(f"/workorders/{ticket}").text
    assert "处理中" in page and "抢修班已出发" in page
    with site.container.uow_factory() as uow:
        assert uow.audit.list(action="work_order.billing_status").total == 1


# --- staff: dead letters ---------------------------------------------------------------------


def dead_posting(site: Site) -> str:
    order = Order(
        order_no=new_order_no(NOW), idempotency_key=f"key-{new_order_no(NOW)}",
        request_hash="h", biller="ELEC", account="0012345678", bill_ids=(), amount_fen=5050,
        channel="sandbox", created_at=NOW, expires_at=NOW + dt.timedelta(minutes=30))
    order.events.append(OrderEvent("state", "", "created", {"amount_fen": 5050}))
    order.start_attempt({"kind": "redirect", "mode": "cashier", "url": "/x"})
    order.mark_paid(channel_txn_id="TXN-DEAD-1", amount_fen=5050, paid_at=NOW)
    with site.container.uow_factory() as uow:
        uow.orders.add(order)
        uow.postings.add(Posting(order.order_no, created_at=NOW, next_attempt_at=NOW,
                                 attempts=20, status="dead", dead_at=NOW,
                                 last_error="BillingSystemError: agent down"))
        uow.commit()
    return order.order_no


def test_dead_letters_are_shown_to_every_role_and_replayed_by_operators(site: Site) -> None:
    order_no = dead_posting(site)
    auditor = staff(site, "auditor")
    dashboard = auditor.get("/admin").text
    assert 'id="dead-letters-flag"' in dashboard and order_no in dashboard
    page = auditor.get("/admin/dead-letters").text
    table = page.split('id="dead-letters"')[1]
    assert order_no in table and "agent down" in table and "¥50.50" in table
    assert "/replay" not in table and "审计员只能查看" in table
    csrf = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
    assert auditor.post(f"/admin/dead-letters/{order_no}/replay",
                        data={"csrf_token": csrf}).status_code == 403

    operator = staff(site, "operator")
    page = operator.get("/admin/dead-letters").text
    assert f"/admin/dead-letters/{order_no}/replay" in page
    assert operator.post(f"/admin/dead-letters/{order_no}/replay").status_code == 403
    csrf = CSRF_RE.search(page).group(1)  # type: ignore[union-attr]
    r = operator.post(f"/admin/dead-letters/{order_no}/replay", data={"csrf_token": csrf})
    assert r.status_code == 200 and "已重新排入入账队列" in r.text
    with site.container.uow_factory() as uow:
        posting = uow.postings.get(order_no)
        assert posting is not None and (posting.status, posting.attempts) == ("pending", 0)
        [entry] = uow.audit.list(action="posting.replay").items
        assert entry.actor == "operator" and entry.target == order_no
        history = uow.orders.history(order_no)
    assert history[-1].kind == "note" and history[-1].detail["by"] == "operator"
    again = operator.post(f"/admin/dead-letters/{order_no}/replay", data={"csrf_token": csrf})
    assert "不在死信队列中" in again.text
    assert site.container.payments.dispatch_postings() == 1
    assert site.container.payments.get(order_no).status == "posted"
