"""The REST API /api/v1 through the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from fakes import FakeChannel, FakeNotifier
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import AccountSummary
from selfpay.entrypoints.web.app import create_app
from selfpay.services.payments import Payments
from selfpay.services.ports import BillingSystemError

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it finds only httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

BASE = "https://pay.example.cn"
ORDER = {"biller": "ELEC", "account": "0012345678", "channel": "fake"}


@dataclass
class Api:
    app: FastAPI
    container: Container
    channel: FakeChannel
    notifier: FakeNotifier

    @property
    def payments(self) -> Payments:
        return self.container.payments

    def client(self) -> TestClient:
        return TestClient(self.app)


def build_api(tmp_path, db_url: str, *, run_worker: bool = False) -> Api:
    settings = load_settings(data_dir=tmp_path, database_url=db_url, public_base_url=BASE,
                             env="development", run_worker=run_worker,
                             worker_interval_s=0.05)
    channel = FakeChannel()
    notifier = FakeNotifier()
    container = bootstrap(settings, channels={"fake": channel}, notifier=notifier)
    return Api(create_app(container=container), container, channel, notifier)


@pytest.fixture
def api(tmp_path, db_url: str, seeded: object) -> Iterator[Api]:
    built = build_api(tmp_path, db_url)
    yield built
    built.container.close()


@pytest.fixture
def client(api: Api) -> TestClient:
    return api.client()


def post_order(client: TestClient, key: str | None = "key-1", **body: object):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/api/v1/orders", json={**ORDER, **body}, headers=headers)


def send_notification(api: Api, client: TestClient, order_no: str, **kwargs: object):
    headers, body = api.channel.notification(order_no, **kwargs)
    return client.post("/api/v1/notify/fake", content=body, headers=headers)


# --- accounts -------------------------------------------------------------------------


def test_the_account_shows_masked_holder_open_bills_and_total(client: TestClient) -> None:
    r = client.get("/api/v1/billers/elec/accounts/0012345678")
    assert r.status_code == 200
    data = r.json()
    assert data["holder"] == "张*丰" and data["total_due_fen"] == 15050
    assert data["biller"] == "ELEC" and data["balance_fen"] == 0
    assert [(b["period"], b["amount_fen"], b["due_date"]) for b in data["open_bills"]] == [
        ("2026-09", 10000, "2026-10-31"), ("2026-10", 5050, "2026-11-30")]
    assert "张三丰" not in r.text and "13812345678" not in r.text


def test_unknown_and_malformed_accounts(client: TestClient) -> None:
    r = client.get("/api/v1/billers/ELEC/accounts/0000000001")
    assert r.status_code == 404 and r.json()["code"] == "account_not_found"
    r = client.get("/api/v1/billers/ELEC/accounts/bad!acct")
    assert r.status_code == 400 and r.json()["code"] == "invalid_account_number"
    r = client.get("/api/v1/billers/1X/accounts/0012345678")
    assert r.status_code == 400


class DownBilling:
    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:
        raise BillingSystemError("connection refused")

    def post_payment(self, posting):
        raise BillingSystemError("connection refused")


def test_a_billing_outage_is_a_retryable_503(api: Api, client: TestClient) -> None:
    api.container.payments = Payments(
        uow_factory=api.container.uow_factory, billing=DownBilling(),
        channels=api.container.channels, notify_base_url=BASE)
    r = client.get("/api/v1/billers/ELEC/accounts/0012345678")
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["retryable"] is True and "connection refused" not in r.text
    assert post_order(client).status_code == 503


# --- orders ---------------------------------------------------------------------------


def test_an_order_needs_an_idempotency_key(client: TestClient) -> None:
    r = post_order(client, key=None)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["detail"]
    assert post_order(client, key="").status_code == 400
    assert post_order(client, key="x" * 256).status_code == 400


def test_create_then_replay_then_conflict(api: Api, client: TestClient) -> None:
    r = post_order(client)
    assert r.status_code == 201
    order = r.json()
    assert r.headers["location"] == f"/api/v1/orders/{order['order_no']}"
    assert order["amount_fen"] == 15050 and order["status"] == "pending"
    assert order["action"]["kind"] == "redirect" and order["attempts_left"] == 3
    assert order["receipt_url"] is None
    assert order["links"]["self"] == f"/api/v1/orders/{order['order_no']}"

    again = post_order(client)
    assert again.status_code == 200 and again.json()["order_no"] == order["order_no"]
    bill = api.payments.payable("ELEC", "0012345678").open_bills[0].id
    r = post_order(client, bill_ids=[bill])
    assert r.status_code == 422 and r.json()["code"] == "idempotency_conflict"
    assert api.channel.count("create_payment") == 1


def test_no_endpoint_accepts_an_amount(client: TestClient) -> None:
    r = post_order(client, amount_fen=1)
    assert r.status_code == 422
    r = post_order(client, key="k2", bill_ids=["1"])
    assert r.status_code == 422  # ids are integers, strictly
    with_bills = post_order(client, key="k3", bill_ids=[])
    assert with_bills.json()["amount_fen"] == 15050


def test_bad_order_requests(client: TestClient) -> None:
    assert post_order(client, key="a", channel="nope").status_code == 400
    assert post_order(client, key="b", account="0000000001").status_code == 404
    assert post_order(client, key="c", account="0099999999").status_code == 400  # nothing due
    r = post_order(client, key="d", bill_ids=[999999])
    assert r.status_code == 400 and "not an open bill" in r.json()["detail"].lower()
    assert post_order(client, key="e", email="not-an-address").status_code == 400


def test_a_channel_outage_is_a_503_and_the_same_key_resumes(api: Api,
                                                            client: TestClient) -> None:
    api.channel.fail_prepay = 1
    r = post_order(client)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    order_no = r.json()["order_no"]
    assert r.json()["retryable"] is True
    r = post_order(client)
    assert r.status_code == 200
    assert r.json()["order_no"] == order_no and r.json()["status"] == "pending"


def test_two_submits_of_the_same_key_at_once_make_one_order(api: Api) -> None:
    barrier = threading.Barrier(2)

    def submit() -> tuple[int, str]:
        client = api.client()
        barrier.wait()
        r = post_order(client, key="same-click")
        return r.status_code, r.json()["order_no"]

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(submit), pool.submit(submit)]]
    assert sorted(code for code, _ in results) == [200, 201]
    assert results[0][1] == results[1][1]
    with api.container.uow_factory() as uow:
        assert uow.orders.search().total == 1


def test_get_order_shows_the_receipt_once_paid(api: Api, client: TestClient) -> None:
    assert client.get("/api/v1/orders/SP20261101XXXXXXXXXXXXXXXX").status_code == 404
    order_no = post_order(client).json()["order_no"]
    r = send_notification(api, client, order_no)
    assert r.status_code == 200 and r.content == b'{"code":"SUCCESS"}'
    paid = client.get(f"/api/v1/orders/{order_no}").json()
    assert paid["status"] == "paid" and paid["receipt_url"] == f"{BASE}/receipt/{order_no}"
    assert paid["channel_txn_id"] and paid["action"] == {}
    api.payments.dispatch_postings()
    posted = client.get(f"/api/v1/orders/{order_no}").json()
    assert posted["status"] == "posted" and posted["links"]["receipt"] == posted["receipt_url"]
    again = client.post(f"/api/v1/orders/{order_no}/retry")
    assert again.status_code == 409 and again.json()["code"] == "already_paid"
    account = client.get("/api/v1/billers/ELEC/accounts/0012345678").json()
    assert account["open_bills"] == [] and account["total_due_fen"] == 0


def test_retry_after_failed_attempts_then_409(api: Api, client: TestClient) -> None:
    order_no = post_order(client).json()["order_no"]
    for _ in range(2):
        send_notification(api, client, order_no, outcome="failed")
        r = client.post(f"/api/v1/orders/{order_no}/retry", json={"mode": ""})
        assert r.status_code == 200 and r.json()["action"]
    send_notification(api, client, order_no, outcome="failed")
    r = client.post(f"/api/v1/orders/{order_no}/retry")
    assert r.status_code == 409 and r.json()["code"] == "attempts_exhausted"
    assert client.get(f"/api/v1/orders/{order_no}").json()["status"] == "failed"
    assert client.post("/api/v1/orders/SP20261101XXXXXXXXXXXXXXXX/retry").status_code == 404


# --- notifications --------------------------------------------------------------------


def test_notifications_are_verified_over_the_raw_body(api: Api, client: TestClient) -> None:
    order_no = post_order(client).json()["order_no"]
    headers, body = api.channel.notification(order_no)
    assert b'", "' in body  # spaces a re-serialiser would drop
    forged = client.post("/api/v1/notify/fake", content=body + b" ", headers=headers)
    assert forged.status_code == 400 and forged.json()["code"] == "FAIL"
    assert client.get(f"/api/v1/orders/{order_no}").json()["status"] == "pending"
    ok = client.post("/api/v1/notify/fake", content=body, headers=headers)
    assert ok.status_code == 200
    repeat = client.post("/api/v1/notify/fake", content=body, headers=headers)
    assert repeat.status_code == 200
    assert client.post("/api/v1/notify/nope", content=body, headers=headers).status_code == 404
    with api.container.uow_factory() as uow:
        assert uow.postings.list().total == 1
        assert [n.verified for n in uow.notifications.for_order(order_no)] == [True, True]


def test_the_api_is_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/api/v1/billers/{biller}/accounts/{account}", "/api/v1/orders",
        "/api/v1/orders/{order_no}", "/api/v1/orders/{order_no}/retry",
        "/api/v1/notify/{channel}",
    }
    body = paths["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]
    assert "amount" not in str(body)
    assert client.get("/docs").status_code == 200


# --- the worker -----------------------------------------------------------------------


def test_the_app_runs_the_worker_and_stops_it_on_shutdown(tmp_path, db_url: str,
                                                          seeded: object) -> None:
    api = build_api(tmp_path, db_url, run_worker=True)
    try:
        with TestClient(api.app) as client:
            assert any(t.name == "selfpay-worker" for t in threading.enumerate())
            order_no = post_order(client, email="a@example.cn").json()["order_no"]
            send_notification(api, client, order_no)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if client.get(f"/api/v1/orders/{order_no}").json()["status"] == "posted" \
                        and api.notifier.sent:
                    break
                time.sleep(0.05)
            assert client.get(f"/api/v1/orders/{order_no}").json()["status"] == "posted"
            assert api.notifier.sent[0].kind == "receipt"
        assert not any(t.name == "selfpay-worker" for t in threading.enumerate())
    finally:
        api.container.close()


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'\xff\xfe{"biller": "ELEC"}', 400, "malformed_json"),  # not UTF-8
    (b'{"biller": "ELEC"', 400, "malformed_json"),
    (b"[]", 422, "invalid_request"),
    (b'{"biller": "ELEC", "account": "0012345678", "channel": "fake", "amount_fen": 1}', 422,
     "invalid_request"),  # no client sets an amount
])
def test_a_bad_body_gets_the_documented_problem_and_changes_nothing(
        api: Api, client: TestClient, body: bytes, status: int, code: str) -> None:
    r = client.post("/api/v1/orders", content=body, headers={
        "Content-Type": "application/json", "Idempotency-Key": "bad-body"})
    assert r.status_code == status and r.json()["code"] == code and r.json()["detail"]
    with api.container.uow_factory() as uow:
        assert uow.orders.by_idempotency_key("bad-body") is None


# --- no bill paid twice (the story of the issue, through HTTP) --------------------------


def test_a_stale_cashier_cannot_pay_twice_and_staff_see_the_overpayment(
        api: Api, client: TestClient) -> None:
    from support.web import add_staff, staff_login

    first = post_order(client, "phone-1").json()
    second = post_order(client, "phone-2").json()  # the customer came back: a new order
    assert client.get(f"/api/v1/orders/{first['order_no']}").json()["status"] == "closed"
    assert api.channel.trades[first["order_no"]].state == "closed"
    assert send_notification(api, client, second["order_no"]).status_code == 200
    api.payments.dispatch_postings()
    # a channel that paid the closed trade all the same: the money is not posted
    api.channel.trades[first["order_no"]].state = "pending"
    assert send_notification(api, client, first["order_no"]).status_code == 200
    stale = client.get(f"/api/v1/orders/{first['order_no']}").json()
    assert stale["status"] == "disputed"
    page = client.get(f"/pay/{first['order_no']}")
    assert "款项待退回" in page.text and "不会入账" in page.text
    add_staff(api.container, {"admin": "correct horse battery"}, dt.datetime.now(dt.UTC))
    staff = staff_login(api.app, "admin", "correct horse battery")
    dashboard = staff.get("/admin").text
    assert 'id="disputed-flag"' in dashboard and first["order_no"] in dashboard
    assert "多付" in dashboard
    detail = staff.get(f"/admin/orders/{first['order_no']}").text
    assert 'id="order-flag"' in detail and stale["channel_txn_id"] in detail
    assert "不入账" in detail and "尚未支付" not in detail


def test_a_new_order_for_bills_just_paid_is_a_409_just_paid(api: Api,
                                                            client: TestClient) -> None:
    first = post_order(client, "phone-1").json()
    api.channel.pay(first["order_no"])  # paid; its notification has not arrived
    r = post_order(client, "phone-2")
    assert r.status_code == 409 and r.json()["code"] == "just_paid"
    assert first["order_no"] in r.json()["detail"]
    assert client.get(f"/api/v1/orders/{first['order_no']}").json()["status"] == "paid"


def test_an_earlier_order_the_channel_cannot_close_is_a_retryable_503(
        api: Api, client: TestClient) -> None:
    post_order(client, "phone-1")
    api.channel.fail_close = api.channel.query_error = True
    r = post_order(client, "phone-2")
    assert r.status_code == 503 and r.json()["code"] == "previous_order_open"
    assert r.json()["retryable"] is True and r.headers["Retry-After"]


def test_the_receipt_as_data_once_paid(api: Api, client: TestClient) -> None:
    order = post_order(client, "k1", email="").json()
    early = client.get(f"/api/v1/orders/{order['order_no']}/receipt")
    assert early.status_code == 409
    assert client.get("/api/v1/orders/SP20261101NOSUCHORDER000/receipt").status_code == 404
    send_notification(api, client, order["order_no"])
    receipt = client.get(f"/api/v1/orders/{order['order_no']}/receipt").json()
    assert receipt["amount_fen"] == 15050 and receipt["biller_name"] == "电费"
    assert sorted(x["period"] for x in receipt["lines"]) == ["2026-09", "2026-10"]
    assert sum(x["amount_fen"] for x in receipt["lines"]) == 15050
    assert "*" in receipt["masked_name"]
    assert receipt["receipt_url"].endswith(f"/receipt/{order['order_no']}")


# --- the status long poll ---------------------------------------------------------------


def test_a_status_request_waits_for_the_next_change_and_no_longer(api: Api) -> None:
    with TestClient(api.app) as client:  # the app's lifespan runs its order watch
        order = post_order(client, "k1").json()
        url = f"/api/v1/orders/{order['order_no']}"
        now = client.get(url).json()
        assert client.get(url, params={"since": now["version"] - 1, "wait_s": 20}).json()[
            "version"] == now["version"]  # already moved past `since`: at once
        started = time.monotonic()
        same = client.get(url, params={"since": now["version"], "wait_s": 0.6}).json()
        assert same["version"] == now["version"] and time.monotonic() - started >= 0.5
        timer = threading.Timer(0.5, lambda: send_notification(api, client, order["order_no"]))
        timer.start()
        started = time.monotonic()
        paid = client.get(url, params={"since": now["version"], "wait_s": 20}).json()
        waited = time.monotonic() - started
        timer.join()
        assert paid["status"] == "paid" and paid["version"] > now["version"]
        assert 0.4 <= waited < 10, waited  # woken by the change, not by the 20 s limit
        assert client.get(url, params={"since": 0, "wait_s": 99}).status_code == 422
