"""The sandbox channel: its trades, its cashier, and notifications over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import warnings
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from selfpay.adapters.channels import sandbox as sb
from selfpay.adapters.channels.sandbox import SandboxChannel, build
from selfpay.adapters.channels.sandbox_web import sandbox_router
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.tables import metadata, sandbox_deliveries, sandbox_trades
from selfpay.config import Settings
from selfpay.services.ports import (
    ChannelError,
    ChannelNotification,
    NotificationRejected,
    PaymentRequest,
)
from support import serve_asgi

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it finds only httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRET = "s3cret-for-tests-only-" + "x" * 20
EXPIRES = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def sandbox_engine(db_url: str) -> Iterator[Engine]:
    # the sandbox's own two tables (migration 0002 creates them in the app's database)
    engine = make_engine(db_url)
    metadata.create_all(engine, tables=[sandbox_trades, sandbox_deliveries])
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def channel(sandbox_engine: Engine) -> Iterator[SandboxChannel]:
    ch = SandboxChannel(sandbox_engine, secret_key=SECRET, public_base_url="http://shop.test",
                        retry_delays_s=(0.3, 0.5, 1.0), poll_interval_s=0.05)
    yield ch
    ch.dispose()


def _request(order_no: str, *, amount_fen: int = 12345, mode: str = "cashier",
             notify_url: str = "http://127.0.0.1:9/api/v1/notify/sandbox",
             return_url: str = "", attempt: int = 1) -> PaymentRequest:
    return PaymentRequest(order_no=order_no, amount_fen=amount_fen, description="电费 0012345678",
                          notify_url=notify_url, expires_at=EXPIRES, mode=mode,
                          return_url=return_url, attempt=attempt)


# --- the channel ------------------------------------------------------------------

def test_prepay_opens_a_trade_and_points_at_the_cashier(channel: SandboxChannel) -> None:
    action = channel.create_payment(_request("SP20261101SANDBOX1"))
    assert action == {"kind": "redirect", "url": "http://shop.test/sandbox/pay/SP20261101SANDBOX1"}
    native = channel.create_payment(_request("SP20261101SANDBOX2", mode="native"))
    assert native == {"kind": "code_url",
                      "code_url": "http://shop.test/sandbox/pay/SP20261101SANDBOX2"}
    trade = channel.trade("SP20261101SANDBOX1")
    assert trade is not None and (trade.state, trade.amount_fen) == ("NOTPAY", 12345)
    assert channel.query("SP20261101SANDBOX1").state == "pending"
    assert channel.query("SP20261101NOSUCHNO").state == "unknown"


def test_the_same_order_number_with_another_amount_is_refused(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101SANDBOX3"))
    channel.create_payment(_request("SP20261101SANDBOX3"))  # a retry: fine
    with pytest.raises(ChannelError, match="another amount"):
        channel.create_payment(_request("SP20261101SANDBOX3", amount_fen=1))


def test_close_closes_an_unpaid_trade_and_refuses_a_paid_one(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101CLOSE001"))
    channel.close("SP20261101CLOSE001")
    channel.close("SP20261101CLOSE001")  # again: nothing to do
    assert channel.query("SP20261101CLOSE001").state == "closed"
    with pytest.raises(ChannelError):
        channel.pay("SP20261101CLOSE001", "success")

    channel.create_payment(_request("SP20261101CLOSE002"))
    result = channel.pay("SP20261101CLOSE002", "success")
    with pytest.raises(ChannelError, match="ORDERPAID"):
        channel.close("SP20261101CLOSE002")
    query = channel.query("SP20261101CLOSE002")
    assert (query.state, query.amount_fen, query.channel_txn_id) == (
        "paid", 12345, result.txn_id)
    with pytest.raises(ChannelError, match="ORDERPAID"):
        channel.create_payment(_request("SP20261101CLOSE002"))


def test_a_failed_attempt_can_be_followed_by_a_payment(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101RETRY001"))
    failed = channel.pay("SP20261101RETRY001", "fail")
    assert channel.query("SP20261101RETRY001").state == "failed"
    channel.create_payment(_request("SP20261101RETRY001"))
    assert channel.query("SP20261101RETRY001").state == "pending"
    paid = channel.pay("SP20261101RETRY001", "success")
    assert paid.notification_id != failed.notification_id
    assert channel.query("SP20261101RETRY001").state == "paid"
    with pytest.raises(ChannelError):
        channel.pay("SP20261101RETRY001", "fail")


def test_an_unanswered_delivery_is_rescheduled(sandbox_engine: Engine) -> None:
    now = [dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)]
    ch = SandboxChannel(sandbox_engine, secret_key=SECRET, public_base_url="http://shop.test",
                        clock=lambda: now[0], retry_delays_s=(1, 2, 5))
    try:
        ch.create_payment(_request("SP20261101RESEND01"))  # notify_url: nothing listens
        ch.pay("SP20261101RESEND01", "success", delay_s=10)
        assert ch.deliver_due() == 0  # not due yet
        for expected_delay in (1, 2, 5, 5):
            now[0] += dt.timedelta(seconds=10)
            assert ch.deliver_due() == 1
            [delivery] = ch.deliveries("SP20261101RESEND01")
            assert not delivery.acked and delivery.last_status == "ConnectError"
            assert delivery.due_at == now[0] + dt.timedelta(seconds=expected_delay)
        assert delivery.attempts == 4
    finally:
        ch.dispose()


# --- notifications: verification -------------------------------------------------------

def test_a_closed_trade_cannot_be_paid_at_the_cashier(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101CLOSED01", return_url="http://shop.test/o/1"))
    channel.close("SP20261101CLOSED01")  # the merchant replaced the order
    with pytest.raises(sb.SandboxConflict):
        channel.pay("SP20261101CLOSED01", "success")
    with pytest.raises(sb.SandboxConflict):
        channel.create_payment(_request("SP20261101CLOSED01", attempt=2))
    with TestClient(_app(channel, run_worker=False)) as client:
        page = client.get("/sandbox/pay/SP20261101CLOSED01").text
        assert "不能支付" in page and 'value="success"' not in page  # no pay button
        r = client.post("/sandbox/pay/SP20261101CLOSED01", data={"outcome": "success"},
                        follow_redirects=False)  # a stale tab posts anyway
        assert r.status_code == 303 and r.headers["location"] == "/sandbox/pay/SP20261101CLOSED01"
    assert channel.query("SP20261101CLOSED01").state == "closed"
    assert channel.deliveries("SP20261101CLOSED01") == []


def test_reports_carry_the_attempt_they_belong_to(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101ATTEMPT1", attempt=1))
    channel.pay("SP20261101ATTEMPT1", "fail")
    failed = channel.parse_notification(*_signed(channel, "SP20261101ATTEMPT1"))
    assert failed.outcome == "failed" and failed.attempt == 1
    channel.create_payment(_request("SP20261101ATTEMPT1", attempt=2))
    assert channel.query("SP20261101ATTEMPT1").attempt == 2
    channel.pay("SP20261101ATTEMPT1", "success")
    assert channel.query("SP20261101ATTEMPT1").attempt == 2


def test_the_sandbox_takes_payment_codes_scripted_by_their_last_digits(
        channel: SandboxChannel) -> None:
    from selfpay.services.ports import takes_payment_code

    assert takes_payment_code(channel)
    paid = channel.collect_with_code(_request("SP20261101CODE0001"), "134567890123456789")
    assert paid.state == "paid" and paid.amount_fen == 12345 and paid.channel_txn_id
    assert len(channel.deliveries("SP20261101CODE0001")) == 1  # notified as well
    declined = channel.collect_with_code(_request("SP20261101CODE0002"), "134567890123450000")
    assert declined.state == "failed"
    waiting = channel.collect_with_code(_request("SP20261101CODE0003"), "134567890123459999")
    assert waiting.state == "pending"
    channel.pay("SP20261101CODE0003", "success")  # the customer confirms on the phone
    assert channel.query("SP20261101CODE0003").state == "paid"
    wrong = channel.collect_with_code(_request("SP20261101CODE0004"), "284567890123456789")
    assert wrong.state == "failed" and channel.trade("SP20261101CODE0004") is None


def _signed(channel: SandboxChannel, order_no: str) -> tuple[dict[str, str], bytes]:
    body = _delivery_body(channel, order_no)
    return sb.signed_headers(sb.sandbox_key(SECRET), body, timestamp=int(time.time())), body


def _notification(channel: SandboxChannel, order_no: str = "SP20261101VERIFY01"
                  ) -> tuple[dict[str, str], bytes]:
    channel.create_payment(_request(order_no))
    channel.pay(order_no, "success")
    body = _delivery_body(channel, order_no)
    headers = sb.signed_headers(sb.sandbox_key(SECRET), body, timestamp=int(time.time()))
    return headers, body


def _delivery_body(channel: SandboxChannel, order_no: str) -> bytes:
    with channel._engine.connect() as conn:  # the stored body, byte for byte
        row = conn.execute(sandbox_deliveries.select().where(
            sandbox_deliveries.c.order_no == order_no)).first()
    assert row is not None
    return str(row.body).encode()


def test_a_signed_notification_is_parsed(channel: SandboxChannel) -> None:
    headers, body = _notification(channel)
    note = channel.parse_notification(headers, body)
    trade = channel.trade("SP20261101VERIFY01")
    assert trade is not None
    assert (note.order_no, note.outcome, note.amount_fen) == ("SP20261101VERIFY01", "paid", 12345)
    assert note.channel_txn_id == trade.txn_id and note.merchant_id == "sandbox-merchant"
    assert note.paid_at == trade.paid_at


def _forged(headers: dict[str, str], body: bytes, how: str) -> tuple[dict[str, str], bytes]:
    key = sb.sandbox_key(SECRET)
    if how == "other-key":
        return sb.signed_headers(sb.sandbox_key("not the secret"), body,
                                 timestamp=int(time.time())), body
    if how == "stale":
        return sb.signed_headers(key, body, timestamp=int(time.time()) - 301), body
    if how == "future":
        return sb.signed_headers(key, body, timestamp=int(time.time()) + 400), body
    if how == "tampered-body":
        return headers, body.replace(b'"amount_fen":12345', b'"amount_fen":1')
    if how == "missing-signature":
        return {k: v for k, v in headers.items() if k != sb.HEADER_SIGNATURE}, body
    if how == "other-merchant":
        data = json.loads(body)
        data["merchant_id"] = "someone-else"
        forged = json.dumps(data).encode()
        return sb.signed_headers(key, forged, timestamp=int(time.time())), forged
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["other-key", "stale", "future", "tampered-body",
                                 "missing-signature", "other-merchant"])
def test_a_forged_notification_is_rejected(channel: SandboxChannel, how: str) -> None:
    headers, body = _forged(*_notification(channel), how)
    with pytest.raises(NotificationRejected):
        channel.parse_notification(headers, body)


def test_answers(channel: SandboxChannel) -> None:
    ok = channel.answer(True)
    assert (ok.status_code, json.loads(ok.body)) == (200, {"code": "SUCCESS"})
    bad = channel.answer(False, "bad signature")
    assert (bad.status_code, json.loads(bad.body)) == (400, {"code": "FAIL",
                                                             "message": "bad signature"})


# --- the cashier -------------------------------------------------------------------------

def _app(channel: SandboxChannel, *, run_worker: bool) -> FastAPI:
    app = FastAPI()
    app.include_router(sandbox_router(channel, run_worker=run_worker))
    return app


def test_the_cashier_page_shows_the_trade_and_its_buttons(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101CASHIER1", return_url="http://shop.test/o/1"))
    with TestClient(_app(channel, run_worker=False)) as client:
        page = client.get("/sandbox/pay/SP20261101CASHIER1")
        assert page.status_code == 200
        text = page.text
        assert '<html lang="zh-CN">' in text and 'name="viewport"' in text
        for expected in ("沙箱", "SANDBOX", "¥123.45", "电费 0012345678", "支付成功", "支付失败"):
            assert expected in text
        assert client.get("/sandbox/pay/SP20261101UNKNOWN1").status_code == 404
        assert "SP20261101CASHIER1" in client.get("/sandbox").text

        done = client.post("/sandbox/pay/SP20261101CASHIER1", data={"outcome": "success"},
                           follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "http://shop.test/o/1"
        assert channel.query("SP20261101CASHIER1").state == "paid"
        assert len(channel.deliveries("SP20261101CASHIER1")) == 1
        assert "已支付" in client.get("/sandbox/pay/SP20261101CASHIER1").text


def test_the_script_api_validates_its_input(channel: SandboxChannel) -> None:
    channel.create_payment(_request("SP20261101SCRIPT01"))
    with TestClient(_app(channel, run_worker=False)) as client:
        url = "/sandbox/api/orders/SP20261101SCRIPT01/pay"
        assert client.post(url, json={"outcome": "maybe"}).status_code == 422
        assert client.post(url, json={"outcome": "success", "repeat": 0}).status_code == 422
        assert client.post("/sandbox/api/orders/SP20261101NOSUCH1/pay",
                           json={"outcome": "success"}).status_code == 404
        assert client.post(url, json={"outcome": "success"}).status_code == 200
        assert client.post(url, json={"outcome": "fail"}).status_code == 409
        status = client.get("/sandbox/api/orders/SP20261101SCRIPT01").json()
        assert status["state"] == "SUCCESS" and len(status["deliveries"]) == 1


# --- notifications over real HTTP ----------------------------------------------------

class Receiver:
    """A merchant's notify endpoint that answers 500 to the first call, then verifies
    every call with the channel and answers what the channel says."""

    def __init__(self, channel: SandboxChannel, *, fail_first: int = 1) -> None:
        self.channel = channel
        self.fail_first = fail_first
        self.calls: list[tuple[float, int, bytes]] = []  # monotonic time, status, body
        self.notes: list[ChannelNotification] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/notify", self.notify, methods=["POST"])])

    async def notify(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            first = len(self.calls) < self.fail_first
        if first:
            status, payload = 500, b"busy"
        else:
            try:
                self.notes.append(self.channel.parse_notification(request.headers, body))
                answer = self.channel.answer(True)
            except NotificationRejected as exc:
                answer = self.channel.answer(False, str(exc))
            status, payload = answer.status_code, answer.body
        with self.lock:
            self.calls.append((time.monotonic(), status, body))
        return Response(payload, status_code=status)


def _wait_for(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_a_scripted_payment_is_delivered_twice_late_and_re_sent_until_acknowledged(
        channel: SandboxChannel) -> None:
    receiver = Receiver(channel, fail_first=1)
    with serve_asgi(receiver.app) as merchant, serve_asgi(_app(channel, run_worker=True)) as sbx, \
            httpx.Client(base_url=sbx, timeout=5) as client:
        assert channel.running
        channel.create_payment(_request("SP20261101DELIVER1", notify_url=f"{merchant}/notify"))
        started = time.monotonic()
        response = client.post("/sandbox/api/orders/SP20261101DELIVER1/pay",
                               json={"outcome": "success", "repeat": 2, "delay_s": 1})
        assert response.status_code == 200
        result = response.json()
        assert result["deliveries"] == 2

        _wait_for(lambda: len(receiver.calls) >= 3)
        _wait_for(lambda: all(d["acked"] for d in client.get(
            "/sandbox/api/orders/SP20261101DELIVER1").json()["deliveries"]))

    assert not channel.running  # the app's lifespan stopped the worker
    assert not [t for t in threading.enumerate() if t.name == "selfpay-sandbox-deliveries"]
    times, statuses, bodies = zip(*receiver.calls, strict=True)
    assert min(times) - started >= 0.9  # delay_s=1
    assert sorted(statuses) == [200, 200, 500] and statuses[0] == 500
    assert len(set(bodies)) == 1  # the same notification, byte for byte
    assert len(receiver.notes) == 2
    assert {n.notification_id for n in receiver.notes} == {result["notification_id"]}
    trade = channel.trade("SP20261101DELIVER1")
    assert trade is not None
    assert all(n.channel_txn_id == trade.txn_id and n.amount_fen == 12345
               and n.outcome == "paid" for n in receiver.notes)


def test_a_failed_payment_is_notified_as_failed(channel: SandboxChannel) -> None:
    receiver = Receiver(channel, fail_first=0)
    with serve_asgi(receiver.app) as merchant:
        channel.create_payment(_request("SP20261101FAILED01", notify_url=f"{merchant}/notify"))
        channel.pay("SP20261101FAILED01", "fail")
        assert channel.deliver_due() == 1  # what P's worker may call instead of start()
    [note] = receiver.notes
    assert (note.outcome, note.order_no, note.channel_txn_id) == ("failed",
                                                                   "SP20261101FAILED01", "")
    assert channel.deliveries("SP20261101FAILED01")[0].acked


def test_start_and_stop_leave_no_thread_behind(channel: SandboxChannel) -> None:
    channel.start()
    channel.start()
    assert channel.running
    channel.stop()
    channel.stop()
    assert not channel.running
    assert not [t for t in threading.enumerate() if t.name == "selfpay-sandbox-deliveries"]


# --- building it ---------------------------------------------------------------------------

def test_build_refuses_production(tmp_path: object) -> None:
    settings = Settings(_env_file=None, env="production", secret_key=SECRET)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="production"):
        build(settings)


def test_build_opens_and_disposes_its_own_engine(db_url: str) -> None:
    settings = Settings(_env_file=None, secret_key=SECRET,  # type: ignore[call-arg]
                        database_url=db_url, public_base_url="http://127.0.0.1:8000")
    ch = build(settings)
    try:
        assert ch.cashier_url("X") == "http://127.0.0.1:8000/sandbox/pay/X"
        assert ch.merchant_id == "sandbox-merchant" and ch.name == "sandbox"
    finally:
        ch.dispose()
