"""The wechatpay channel against the local WeChat Pay simulator, over real HTTP."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from selfpay.adapters.channels import wechatpay_crypto as wxc
from selfpay.adapters.channels.wechatpay import WeChatPayChannel, WeChatPayError, build
from selfpay.config import Settings
from selfpay.services.ports import (
    ChannelError,
    ChannelNotification,
    NotificationRejected,
    PaymentRequest,
)
from support import serve_asgi
from support.wechatpay_sim import SimKeys, WeChatPaySimulator, generate_test_keys

MCHID = "1900000001"
APPID = "wxd678efh567hg6787"
EXPIRES = dt.datetime(2030, 1, 1, 4, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def keys() -> SimKeys:
    return generate_test_keys()


@pytest.fixture(scope="module")
def key_files(keys: SimKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return keys.write(tmp_path_factory.mktemp("wxkeys"))


@pytest.fixture
def sim(keys: SimKeys) -> Iterator[tuple[WeChatPaySimulator, str]]:
    simulator = WeChatPaySimulator(mchid=MCHID, appid=APPID, keys=keys)
    with serve_asgi(simulator.app) as base_url:
        yield simulator, base_url


def _settings(keys: SimKeys, files: dict[str, Path], base_url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        wechatpay_mchid=MCHID, wechatpay_appid=APPID,
        wechatpay_api_base_url=base_url, wechatpay_oauth_base_url=base_url,
        wechatpay_merchant_key_file=str(files["merchant_key"]),
        wechatpay_merchant_serial=keys.merchant_serial,
        wechatpay_apiv3_key=keys.apiv3_key.decode(),
        wechatpay_platform_keys=(f"{keys.platform_serial}={files['platform_pub']},"
                                 f"{keys.cert_serial}={files['platform_cert']}"),
        wechatpay_app_secret="sim-app-secret",
        wechatpay_timeout_s=5,
    )


@pytest.fixture
def channel(sim: tuple[WeChatPaySimulator, str], keys: SimKeys,
            key_files: dict[str, Path]) -> Iterator[WeChatPayChannel]:
    """Built the way the app builds it: the entry point's build(settings)."""
    ch = build(_settings(keys, key_files, sim[1]))
    yield ch
    ch.dispose()


def _request(order_no: str, mode: str = "native", **extra: str) -> PaymentRequest:
    return PaymentRequest(order_no=order_no, amount_fen=12345, description="电费 0012345678",
                          notify_url="https://pay.example.cn/api/v1/notify/wechatpay",
                          expires_at=EXPIRES, mode=mode, **extra)


def test_native_prepay_returns_the_code_url(channel: WeChatPayChannel,
                                            sim: tuple[WeChatPaySimulator, str]) -> None:
    action = channel.create_payment(_request("SP20261101NATIVE01"))
    trade = sim[0].trades["SP20261101NATIVE01"]
    assert action == {"kind": "code_url", "code_url": trade.code_url}
    assert action["code_url"].startswith("weixin://wxpay/bizpayurl?pr=")
    assert trade.total == 12345 and trade.time_expire == "2030-01-01T12:00:00+08:00"
    assert trade.notify_url == "https://pay.example.cn/api/v1/notify/wechatpay"


def test_jsapi_prepay_returns_pay_sign_params_valid_for_the_merchant_key(
        channel: WeChatPayChannel, sim: tuple[WeChatPaySimulator, str], keys: SimKeys) -> None:
    action = channel.create_payment(_request("SP20261101JSAPI001", "jsapi",
                                             payer_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"))
    trade = sim[0].trades["SP20261101JSAPI001"]
    params = action["params"]
    assert action["kind"] == "jsapi" and trade.openid == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    assert params["package"] == f"prepay_id={trade.prepay_id}"
    assert params["appId"] == APPID and params["signType"] == "RSA"
    message = "\n".join([APPID, params["timeStamp"], params["nonceStr"], params["package"], ""])
    assert wxc.rsa_verify(keys.merchant_key.public_key(), message.encode(), params["paySign"])


def test_jsapi_without_an_openid_is_refused_before_calling_wechat(
        channel: WeChatPayChannel, sim: tuple[WeChatPaySimulator, str]) -> None:
    with pytest.raises(ChannelError, match="openid"):
        channel.create_payment(_request("SP20261101JSAPI002", "jsapi"))
    assert sim[0].requests == []


def test_h5_prepay_redirects_to_the_h5_url_with_the_return_url(
        channel: WeChatPayChannel, sim: tuple[WeChatPaySimulator, str]) -> None:
    action = channel.create_payment(_request("SP20261101H5000001", "h5", client_ip="1.2.3.4",
                                             return_url="https://pay.example.cn/o/X"))
    trade = sim[0].trades["SP20261101H5000001"]
    assert action["kind"] == "redirect"
    assert action["url"] == trade.h5_url + "&redirect_url=https%3A%2F%2Fpay.example.cn%2Fo%2FX"


def test_query_and_close(channel: WeChatPayChannel, sim: tuple[WeChatPaySimulator, str]) -> None:
    simulator = sim[0]
    assert channel.query("SP20261101NOSUCH01").state == "unknown"
    channel.create_payment(_request("SP20261101QUERY001"))
    assert channel.query("SP20261101QUERY001").state == "pending"
    channel.close("SP20261101QUERY001")
    assert simulator.trades["SP20261101QUERY001"].trade_state == "CLOSED"
    assert channel.query("SP20261101QUERY001").state == "closed"

    channel.create_payment(_request("SP20261101QUERY002"))
    trade = simulator.pay("SP20261101QUERY002")
    result = channel.query("SP20261101QUERY002")
    assert (result.state, result.amount_fen, result.channel_txn_id) == (
        "paid", 12345, trade.transaction_id)
    assert result.paid_at is not None
    with pytest.raises(WeChatPayError) as info:
        channel.close("SP20261101QUERY002")
    assert info.value.code == "ORDERPAID"


def test_a_paid_order_cannot_be_prepaid_again(channel: WeChatPayChannel,
                                              sim: tuple[WeChatPaySimulator, str]) -> None:
    channel.create_payment(_request("SP20261101AGAIN001"))
    sim[0].pay("SP20261101AGAIN001")
    with pytest.raises(ChannelError, match="ORDERPAID"):
        channel.create_payment(_request("SP20261101AGAIN001"))


@pytest.mark.parametrize("fault", ["bad_signature", "wrong_serial", "stale", "unsigned"])
def test_an_untrusted_response_is_an_error(channel: WeChatPayChannel,
                                           sim: tuple[WeChatPaySimulator, str],
                                           fault: str) -> None:
    sim[0].response_fault = fault
    with pytest.raises(WeChatPayError, match="not trusted"):
        channel.create_payment(_request("SP20261101FAULT001"))


def test_a_request_signed_with_another_key_gets_sign_error(
        sim: tuple[WeChatPaySimulator, str], keys: SimKeys, key_files: dict[str, Path],
        tmp_path: Path) -> None:
    impostor = SimKeys(**{**keys.__dict__, "merchant_key": keys.other_key})
    files = impostor.write(tmp_path)
    ch = build(_settings(keys, {**key_files, "merchant_key": files["merchant_key"]}, sim[1]))
    try:
        with pytest.raises(WeChatPayError) as info:
            ch.create_payment(_request("SP20261101IMPOST01"))
    finally:
        ch.dispose()
    assert (info.value.status_code, info.value.code) == (401, "SIGN_ERROR")


def test_an_unreachable_api_is_a_channel_error(keys: SimKeys,
                                               key_files: dict[str, Path]) -> None:
    ch = build(_settings(keys, key_files, "http://127.0.0.1:9"))
    try:
        with pytest.raises(ChannelError, match="unreachable") as info:
            ch.query("SP20261101DOWN0001")
    finally:
        ch.dispose()
    assert keys.apiv3_key.decode() not in str(info.value)


def test_oauth_code_exchange_finds_the_openid(channel: WeChatPayChannel) -> None:
    assert channel.exchange_code_for_openid("good-abc") == "o-abc"
    with pytest.raises(ChannelError, match="40029") as info:
        channel.exchange_code_for_openid("expired")
    assert "sim-app-secret" not in str(info.value)


# --- notifications over HTTP -------------------------------------------------------------

class Receiver:
    """A stand-in for the app's notify endpoint: the raw body and headers go to the
    channel, the channel's answer goes back."""

    def __init__(self, channel: WeChatPayChannel) -> None:
        self.channel = channel
        self.accepted: list[ChannelNotification] = []
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/api/v1/notify/wechatpay", self.notify,
                                           methods=["POST"])])

    async def notify(self, request: Request) -> Response:
        body = await request.body()
        try:
            note = self.channel.parse_notification(request.headers, body)
        except NotificationRejected as exc:
            with self.lock:
                self.rejected.append(str(exc))
            answer = self.channel.answer(False, "verification failed")
        else:
            with self.lock:
                self.accepted.append(note)
            answer = self.channel.answer(True)
        return Response(answer.body, status_code=answer.status_code,
                        media_type=answer.content_type)


@pytest.fixture
def paid_order(channel: WeChatPayChannel, sim: tuple[WeChatPaySimulator, str]
               ) -> Iterator[tuple[WeChatPaySimulator, Receiver, httpx.Client]]:
    receiver = Receiver(channel)
    with serve_asgi(receiver.app) as base, httpx.Client(timeout=5) as client:
        channel.create_payment(PaymentRequest(
            order_no="SP20261101NOTIFY01", amount_fen=12345, description="电费",
            notify_url=f"{base}/api/v1/notify/wechatpay", expires_at=EXPIRES, mode="native"))
        sim[0].pay("SP20261101NOTIFY01")
        yield sim[0], receiver, client


def test_a_notification_is_accepted_and_parsed(
        paid_order: tuple[WeChatPaySimulator, Receiver, httpx.Client]) -> None:
    simulator, receiver, client = paid_order
    response = simulator.send_notification("SP20261101NOTIFY01", client, event_id="EV-42")
    assert response.status_code in (200, 204)
    [note] = receiver.accepted
    trade = simulator.trades["SP20261101NOTIFY01"]
    assert (note.notification_id, note.order_no, note.outcome) == (
        "EV-42", "SP20261101NOTIFY01", "paid")
    assert note.amount_fen == 12345 and note.channel_txn_id == trade.transaction_id
    assert note.raw["transaction_id"] == trade.transaction_id


@pytest.mark.parametrize(("switches", "reason"), [
    ({"bad_signature": True}, "bad signature"),
    ({"serial": "PUB_KEY_ID_0000000000000000000000000000000"}, "unknown platform key serial"),
    ({"timestamp": 1_600_000_000}, "5 minutes"),
    ({"tamper": True}, "decrypt"),
    ({"mchid": "1900000002"}, "mchid"),
    ({"probe": True}, "probe"),
], ids=["wrong-signature", "wrong-serial", "expired-timestamp", "tampered-ciphertext",
        "wrong-mchid", "signtest-probe"])
def test_a_bad_notification_is_rejected_with_an_error_answer(
        paid_order: tuple[WeChatPaySimulator, Receiver, httpx.Client],
        switches: dict[str, object], reason: str) -> None:
    simulator, receiver, client = paid_order
    response = simulator.send_notification("SP20261101NOTIFY01", client, **switches)
    assert 400 <= response.status_code < 600
    assert response.json()["code"] == "FAIL"
    assert receiver.accepted == []
    [why] = receiver.rejected
    assert reason in why


def test_a_notification_signed_by_a_key_we_never_had_is_rejected(
        paid_order: tuple[WeChatPaySimulator, Receiver, httpx.Client], keys: SimKeys) -> None:
    simulator, receiver, client = paid_order
    response = simulator.send_notification("SP20261101NOTIFY01", client,
                                           signing_key=keys.other_key)
    assert response.status_code >= 400 and receiver.accepted == []
