"""WeChat Pay v3 cryptography and notification checks, without a network.

Published vectors (../shared/research/payment-channels.md §6): the AES-GCM vector of
wechatpay-go utils/aes_test.go (§6.1) and the canonical request strings of wechatpay-go
wechat_pay_credential_test.go (§6.4). The research file does not carry the full
certificate, signature and body of the notify_test.go callback (§6.2), the private key
of the signer vector (§6.3) nor the whole ciphertext of §6.5, so those are not replayed;
the callback checks use WeChat's published notification format with keys made per
test session.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from selfpay.adapters.channels import wechatpay_crypto as wxc
from selfpay.adapters.channels.wechatpay import (
    WeChatPayAuth,
    WeChatPayChannel,
    WeChatPayConfig,
    config_from_settings,
    rfc3339_china,
)
from selfpay.config import Settings
from selfpay.services.ports import NotificationRejected
from support.wechatpay_sim import SimKeys, SimTrade, WeChatPaySimulator, generate_test_keys

MCHID = "1900000001"
APPID = "wxd678efh567hg6787"
NOW = 1_790_000_000  # a fixed "now" for every clock in this module


@pytest.fixture(scope="module")
def keys() -> SimKeys:
    return generate_test_keys()


def _config(keys: SimKeys) -> WeChatPayConfig:
    return WeChatPayConfig(
        mchid=MCHID, appid=APPID, merchant_serial=keys.merchant_serial,
        merchant_key=keys.merchant_key, apiv3_key=keys.apiv3_key,
        platform_keys={keys.platform_serial: keys.platform_key.public_key(),
                       keys.cert_serial: keys.cert_key.public_key()},
    )


@pytest.fixture
def clock() -> list[float]:
    return [float(NOW)]


@pytest.fixture
def channel(keys: SimKeys, clock: list[float]) -> Iterator[WeChatPayChannel]:
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    ch = WeChatPayChannel(_config(keys), http, clock=lambda: clock[0], owns_http=True)
    yield ch
    ch.dispose()


@pytest.fixture
def sim(keys: SimKeys) -> WeChatPaySimulator:
    sim = WeChatPaySimulator(mchid=MCHID, appid=APPID, keys=keys, clock=lambda: NOW)
    sim.trades["SP20261101ABCDEFGH"] = SimTrade(
        out_trade_no="SP20261101ABCDEFGH", appid=APPID, mchid=MCHID, description="电费",
        total=12345, notify_url="http://127.0.0.1/api/v1/notify/wechatpay", trade_type="NATIVE")
    sim.pay("SP20261101ABCDEFGH")
    return sim


# --- published vectors -------------------------------------------------------------

def test_published_aes_gcm_vector_decrypts_to_hello_world() -> None:
    plain = wxc.aes_gcm_decrypt(b"testAPIv3Key0000", "wCq51qZv4Yfg",
                                "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                                "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC")
    assert plain == b"Hello World"


def test_published_aes_gcm_vector_fails_with_the_other_key() -> None:
    with pytest.raises(wxc.DecryptionFailed):
        wxc.aes_gcm_decrypt(b"testAPIv3Key1111", "wCq51qZv4Yfg",
                            "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8",
                            "FsdXzxryWfKwvLJKf8LG/ToRPTRh8RN9wROC")


def test_published_aes_gcm_vector_refuses_a_ciphertext_that_is_not_base64() -> None:
    with pytest.raises(wxc.DecryptionFailed):
        wxc.aes_gcm_decrypt(b"testAPIv3Key0000", "wCq51qZv4Yfg",
                            "Dl56FrqWQJF1t9LtC3vEUsniZKvbqdR8", "invalid cipher")


def test_request_message_matches_the_published_canonical_strings() -> None:
    assert wxc.request_message("GET", "/v3/certificates", "1624523846", "A1B2C3D4E5F6G7",
                               "") == "GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n"
    assert wxc.request_message("POST", "/v3/certificates", "1624523846", "A1B2C3D4E5F6G7",
                               "Hello World!\n") == (
        "POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n")


def test_aes_gcm_round_trip_with_a_32_byte_key_and_empty_associated_data() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    ct = wxc.aes_gcm_encrypt(key, "0123456789ab", "", b'{"a":1}')
    assert wxc.aes_gcm_decrypt(key, "0123456789ab", "", ct) == b'{"a":1}'


# --- request signing -------------------------------------------------------------------

def _captured(auth: httpx.Auth, method: str, url: str, content: bytes = b"") -> httpx.Request:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.request(method, url, content=content, auth=auth)
    return seen[0]


def _auth_fields(request: httpx.Request) -> dict[str, str]:
    scheme, _, rest = request.headers["Authorization"].partition(" ")
    assert scheme == "WECHATPAY2-SHA256-RSA2048"
    return {k: v.strip('"') for k, _, v in (p.partition("=") for p in rest.split(","))}


def test_get_request_is_signed_over_the_published_canonical_message(keys: SimKeys) -> None:
    auth = WeChatPayAuth(mchid=MCHID, serial_no=keys.merchant_serial, key=keys.merchant_key,
                         clock=lambda: 1624523846, nonce=lambda: "A1B2C3D4E5F6G7")
    request = _captured(auth, "GET", "https://api.mch.weixin.qq.com/v3/certificates")
    fields = _auth_fields(request)
    assert fields["mchid"] == MCHID and fields["serial_no"] == keys.merchant_serial
    assert fields["timestamp"] == "1624523846" and fields["nonce_str"] == "A1B2C3D4E5F6G7"
    keys.merchant_key.public_key().verify(
        base64.b64decode(fields["signature"]),
        b"GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n",
        padding.PKCS1v15(), hashes.SHA256())


def test_post_signature_covers_the_query_string_and_the_exact_body(keys: SimKeys) -> None:
    auth = WeChatPayAuth(mchid=MCHID, serial_no=keys.merchant_serial, key=keys.merchant_key,
                         clock=lambda: NOW, nonce=lambda: "N0NCE")
    body = '{"mchid":"1900000001","description":"电费"}'.encode()
    request = _captured(auth, "POST", "https://h/v3/pay/x?mchid=1900000001", body)
    fields = _auth_fields(request)
    expected = f"POST\n/v3/pay/x?mchid=1900000001\n{NOW}\nN0NCE\n".encode() + body + b"\n"
    assert wxc.rsa_verify(keys.merchant_key.public_key(), expected, fields["signature"])
    assert not wxc.rsa_verify(keys.merchant_key.public_key(), expected.replace(b"x?", b"y?"),
                              fields["signature"])


def test_jsapi_pay_sign_verifies_with_the_merchant_public_key(
        channel: WeChatPayChannel, keys: SimKeys) -> None:
    params = channel.jsapi_params("wx201410272009395522657a690389285100")
    assert params["appId"] == APPID and params["signType"] == "RSA"
    assert params["timeStamp"] == str(NOW)
    assert params["package"] == "prepay_id=wx201410272009395522657a690389285100"
    message = (f"{APPID}\n{params['timeStamp']}\n{params['nonceStr']}\n"
               f"{params['package']}\n").encode()
    assert wxc.rsa_verify(keys.merchant_key.public_key(), message, params["paySign"])


def test_time_expire_is_rfc3339_in_china_time() -> None:
    import datetime as dt

    moment = dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.UTC)
    assert rfc3339_china(moment) == "2026-11-01T16:30:00+08:00"


# --- notifications -------------------------------------------------------------------

def test_a_genuine_notification_is_parsed_in_fen(channel: WeChatPayChannel,
                                                 sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH", event_id="EV-1")
    note = channel.parse_notification(headers, body)
    trade = sim.trades["SP20261101ABCDEFGH"]
    assert (note.notification_id, note.order_no, note.outcome) == (
        "EV-1", "SP20261101ABCDEFGH", "paid")
    assert note.amount_fen == 12345 and type(note.amount_fen) is int
    assert note.channel_txn_id == trade.transaction_id
    assert note.merchant_id == MCHID
    assert note.paid_at is not None and note.paid_at.timestamp() == NOW


def test_header_names_are_case_insensitive(channel: WeChatPayChannel,
                                           sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH")
    lowered = {k.lower(): v for k, v in headers.items()}
    assert channel.parse_notification(lowered, body).outcome == "paid"


def test_a_re_serialized_body_fails_verification(channel: WeChatPayChannel,
                                                 sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH")
    compact = json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":")).encode()
    assert compact != body
    with pytest.raises(NotificationRejected, match="signature"):
        channel.parse_notification(headers, compact)


def test_the_signtest_probe_is_refused(channel: WeChatPayChannel,
                                       sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH", probe=True)
    with pytest.raises(NotificationRejected, match="probe"):
        channel.parse_notification(headers, body)


@pytest.mark.parametrize("skew", [-299, 0, 299])
def test_timestamps_within_five_minutes_are_accepted(
        channel: WeChatPayChannel, sim: WeChatPaySimulator, clock: list[float], skew: int
) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH")
    clock[0] = NOW + skew
    assert channel.parse_notification(headers, body).outcome == "paid"


@pytest.mark.parametrize("skew", [-301, -300, 300, 3600])
def test_timestamps_five_minutes_off_or_more_are_refused(
        channel: WeChatPayChannel, sim: WeChatPaySimulator, clock: list[float], skew: int
) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH")
    clock[0] = NOW + skew
    with pytest.raises(NotificationRejected, match="5 minutes"):
        channel.parse_notification(headers, body)


@pytest.mark.parametrize("missing", ["Wechatpay-Signature", "Wechatpay-Timestamp",
                                     "Wechatpay-Nonce", "Wechatpay-Serial"])
def test_a_notification_without_its_signature_headers_is_refused(
        channel: WeChatPayChannel, sim: WeChatPaySimulator, missing: str) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH")
    del headers[missing]
    with pytest.raises(NotificationRejected):
        channel.parse_notification(headers, body)


def test_a_notification_signed_with_the_platform_certificate_key_is_accepted(
        channel: WeChatPayChannel, sim: WeChatPaySimulator, keys: SimKeys) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH", serial=keys.cert_serial,
                                     signing_key=keys.cert_key)
    assert channel.parse_notification(headers, body).outcome == "paid"


def test_a_key_under_the_wrong_serial_is_refused(channel: WeChatPayChannel,
                                                 sim: WeChatPaySimulator,
                                                 keys: SimKeys) -> None:
    # the certificate's key under the public key's serial: each serial has its own key
    headers, body = sim.notification("SP20261101ABCDEFGH", signing_key=keys.cert_key)
    with pytest.raises(NotificationRejected, match="bad signature"):
        channel.parse_notification(headers, body)


def test_another_signature_type_is_refused(channel: WeChatPayChannel,
                                           sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH")
    headers["Wechatpay-Signature-Type"] = "WECHATPAY2-SM2-WITH-SM3"
    with pytest.raises(NotificationRejected, match="signature type"):
        channel.parse_notification(headers, body)


def test_a_resource_encrypted_with_another_apiv3_key_is_refused(
        channel: WeChatPayChannel, sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH", apiv3_key=b"x" * 32)
    with pytest.raises(NotificationRejected, match="decrypt"):
        channel.parse_notification(headers, body)


def test_a_foreign_appid_is_refused(channel: WeChatPayChannel,
                                    sim: WeChatPaySimulator) -> None:
    headers, body = sim.notification("SP20261101ABCDEFGH", appid="wx0000000000000000")
    with pytest.raises(NotificationRejected, match="appid"):
        channel.parse_notification(headers, body)


def test_answers_are_what_wechat_expects(channel: WeChatPayChannel) -> None:
    assert channel.answer(True).status_code in (200, 204)
    failed = channel.answer(False, "签名错误")
    assert failed.status_code >= 400
    assert json.loads(failed.body) == {"code": "FAIL", "message": "签名错误"}


# --- configuration ---------------------------------------------------------------------

def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_missing_settings_are_all_named() -> None:
    with pytest.raises(ValueError) as info:
        config_from_settings(_settings(wechatpay_mchid=MCHID))
    message = str(info.value)
    for name in ("APPID", "MERCHANT_KEY_FILE", "MERCHANT_SERIAL", "APIV3_KEY", "PLATFORM_KEYS"):
        assert f"SELFPAY_WECHATPAY_{name}" in message
    assert "SELFPAY_WECHATPAY_MCHID" not in message


def test_settings_load_keys_from_files_and_errors_never_show_secrets(
        keys: SimKeys, tmp_path: Path) -> None:
    paths = keys.write(tmp_path)
    base = {
        "wechatpay_mchid": MCHID, "wechatpay_appid": APPID,
        "wechatpay_merchant_key_file": str(paths["merchant_key"]),
        "wechatpay_merchant_serial": keys.merchant_serial,
        "wechatpay_apiv3_key": keys.apiv3_key.decode(),
        "wechatpay_platform_keys": f"{keys.platform_serial}={paths['platform_pub']},"
                                   f"{keys.cert_serial}={paths['platform_cert']}",
    }
    config = config_from_settings(_settings(**base))
    assert set(config.platform_keys) == {keys.platform_serial, keys.cert_serial}
    assert keys.apiv3_key.decode() not in repr(config)

    with pytest.raises(ValueError, match="32 characters") as info:
        config_from_settings(_settings(**{**base, "wechatpay_apiv3_key": "short-secret"}))
    assert "short-secret" not in str(info.value)
    with pytest.raises(ValueError, match="serial"):
        config_from_settings(_settings(**{
            **base, "wechatpay_platform_keys": f"ABCDEF={paths['platform_cert']}"}))
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot-a-key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="merchant key") as info:
        config_from_settings(_settings(**{**base, "wechatpay_merchant_key_file": str(broken)}))
    assert "not-a-key" not in str(info.value)


def test_oauth_authorize_url_has_wechat_parameter_order(channel: WeChatPayChannel) -> None:
    url = channel.oauth_authorize_url("https://pay.example.cn/q/x?a=1", "st4te")
    assert url == (
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxd678efh567hg6787"
        "&redirect_uri=https%3A%2F%2Fpay.example.cn%2Fq%2Fx%3Fa%3D1&response_type=code"
        "&scope=snsapi_base&state=st4te#wechat_redirect")


def test_the_app_secret_is_masked_in_httpx_logs(channel: WeChatPayChannel,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info('HTTP Request: %s %s "%s"', "GET",
                                        "https://api.weixin.qq.com/sns/oauth2/access_token"
                                        "?appid=wx1&secret=TOPSECRET&code=c", "HTTP/1.1 200 OK")
    assert "TOPSECRET" not in caplog.text and "secret=***" in caplog.text
