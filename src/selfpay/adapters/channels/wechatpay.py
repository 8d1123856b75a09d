"""WeChat Pay API v3: Native / JSAPI / H5 prepay, query, close, and notifications.

Built on `cryptography` primitives (wechatpay_crypto.py) rather than the wechatpayv3
SDK: that SDK uses `requests` (we take an `httpx.Client`, as every adapter does), fetches
platform certificates over the network when it is constructed, logs whole bodies at
debug level, and has no timestamp-freshness check, which we need anyway.

What is checked before a notification is believed (anything else: NotificationRejected):
the signature probe prefix `WECHATPAY/SIGNTEST/`, the signature scheme, a timestamp
within 5 minutes of our clock, a known `Wechatpay-Serial`, the RSA signature over the
raw body bytes, AES-256-GCM decryption of the resource, and our mchid and appid.

Settings (environment variables, see config.py):

- ``SELFPAY_WECHATPAY_MCHID`` (no default): the merchant id (商户号).
- ``SELFPAY_WECHATPAY_APPID`` (no default): the AppID bound to the merchant (the
  official account's, for JSAPI and OAuth).
- ``SELFPAY_WECHATPAY_API_BASE_URL`` (default ``https://api.mch.weixin.qq.com``): the
  API host; tests point it at a local simulator.
- ``SELFPAY_WECHATPAY_MERCHANT_KEY_FILE`` (no default): path of the merchant API private
  key, PEM (``apiclient_key.pem``). Keep it mode 0600.
- ``SELFPAY_WECHATPAY_MERCHANT_SERIAL`` (no default): serial number of the merchant API
  certificate, sent as ``serial_no`` in every request's Authorization header.
- ``SELFPAY_WECHATPAY_APIV3_KEY`` (secret, no default): the APIv3 key, 32 characters;
  decrypts notifications.
- ``SELFPAY_WECHATPAY_PLATFORM_KEYS`` (no default): ``SERIAL=path.pem`` pairs separated by
  commas: the WeChat Pay public key (``PUB_KEY_ID_...=pub_key.pem``, merchants opened
  since 2024) and/or platform certificates by their serial (``5157F09E...=cert.pem``).
  List old and new together while keys rotate.
- ``SELFPAY_WECHATPAY_APP_SECRET`` (secret, default empty): the official account's
  AppSecret, needed only for the OAuth step that finds a JSAPI payer's openid.
- ``SELFPAY_WECHATPAY_OAUTH_BASE_URL`` (default ``https://api.weixin.qq.com``): where the
  OAuth code is exchanged for the openid.
- ``SELFPAY_WECHATPAY_OPEN_BASE_URL`` (default ``https://open.weixin.qq.com``): where the
  OAuth authorize page lives.
- ``SELFPAY_WECHATPAY_TIMEOUT_S`` (default 10): HTTP timeout of every call, in seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from selfpay.adapters.channels import wechatpay_crypto as wxc
from selfpay.services.ports import (
    ChannelError,
    ChannelNotification,
    ChannelQuery,
    NotificationRejected,
    NotifyAnswer,
    PaymentRequest,
)

if TYPE_CHECKING:
    from selfpay.config import Settings

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://api.mch.weixin.qq.com"
DEFAULT_OAUTH_BASE_URL = "https://api.weixin.qq.com"
DEFAULT_OPEN_BASE_URL = "https://open.weixin.qq.com"
MAX_CLOCK_SKEW_S = 300  # WeChat's own utilities refuse |now - timestamp| >= 5 minutes
CHINA_TZ = dt.timezone(dt.timedelta(hours=8))
DESCRIPTION_MAX = 127
USER_AGENT = "selfpay/0.1 (+WeChatPay APIv3)"

# trade_state -> ChannelQuery.state. REFUND: it was paid (refunds are not ours yet).
QUERY_STATES = {
    "SUCCESS": "paid", "REFUND": "paid", "NOTPAY": "pending", "USERPAYING": "pending",
    "CLOSED": "closed", "REVOKED": "closed", "PAYERROR": "failed",
}
NOTIFY_OUTCOMES = {"SUCCESS": "paid", "PAYERROR": "failed", "CLOSED": "closed",
                   "REVOKED": "closed"}


class WeChatPayError(ChannelError):
    """WeChat Pay refused a call (`code` as WeChat names it, e.g. ORDERPAID) or could
    not be reached (status_code 0)."""

    def __init__(self, message: str, *, status_code: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


@dataclass(frozen=True)
class WeChatPayConfig:
    mchid: str
    appid: str
    merchant_serial: str
    merchant_key: rsa.RSAPrivateKey = field(repr=False)
    apiv3_key: bytes = field(repr=False)
    platform_keys: Mapping[str, rsa.RSAPublicKey] = field(repr=False)
    api_base_url: str = DEFAULT_API_BASE_URL
    app_secret: str = field(default="", repr=False)
    oauth_base_url: str = DEFAULT_OAUTH_BASE_URL
    open_base_url: str = DEFAULT_OPEN_BASE_URL


def config_from_settings(settings: Settings) -> WeChatPayConfig:
    """Read the SELFPAY_WECHATPAY_* settings; a ValueError names every one missing."""
    missing = [
        name for name, value in [
            ("SELFPAY_WECHATPAY_MCHID", settings.wechatpay_mchid),
            ("SELFPAY_WECHATPAY_APPID", settings.wechatpay_appid),
            ("SELFPAY_WECHATPAY_MERCHANT_KEY_FILE", settings.wechatpay_merchant_key_file),
            ("SELFPAY_WECHATPAY_MERCHANT_SERIAL", settings.wechatpay_merchant_serial),
            ("SELFPAY_WECHATPAY_APIV3_KEY", settings.wechatpay_apiv3_key.get_secret_value()),
            ("SELFPAY_WECHATPAY_PLATFORM_KEYS", settings.wechatpay_platform_keys),
        ] if not value.strip()
    ]
    if missing:
        raise ValueError("the wechatpay channel needs " + ", ".join(missing))
    apiv3_key = settings.wechatpay_apiv3_key.get_secret_value().encode("utf-8")
    if len(apiv3_key) != 32:
        raise ValueError("SELFPAY_WECHATPAY_APIV3_KEY must be 32 characters")
    key_file = Path(settings.wechatpay_merchant_key_file).expanduser()
    try:
        merchant_key = wxc.load_private_key(key_file.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        # the message names the file, never its content
        raise ValueError(f"cannot load the merchant key from {key_file}: "
                         f"{type(exc).__name__}") from None
    platform_keys = wxc.parse_platform_keys(settings.wechatpay_platform_keys)
    if not platform_keys:
        raise ValueError("SELFPAY_WECHATPAY_PLATFORM_KEYS names no key")
    return WeChatPayConfig(
        mchid=settings.wechatpay_mchid.strip(),
        appid=settings.wechatpay_appid.strip(),
        merchant_serial=settings.wechatpay_merchant_serial.strip(),
        merchant_key=merchant_key,
        apiv3_key=apiv3_key,
        platform_keys=platform_keys,
        api_base_url=settings.wechatpay_api_base_url.rstrip("/"),
        app_secret=settings.wechatpay_app_secret.get_secret_value(),
        oauth_base_url=settings.wechatpay_oauth_base_url.rstrip("/"),
        open_base_url=settings.wechatpay_open_base_url.rstrip("/"),
    )


def build(settings: Settings) -> WeChatPayChannel:
    """Entry point `selfpay.channels: wechatpay`."""
    config = config_from_settings(settings)
    http = httpx.Client(timeout=settings.wechatpay_timeout_s,
                        headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    return WeChatPayChannel(config, http, owns_http=True)


class WeChatPayAuth(httpx.Auth):
    """Signs each request: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=...`."""

    requires_request_body = True

    def __init__(self, *, mchid: str, serial_no: str, key: rsa.RSAPrivateKey,
                 clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = wxc.new_nonce) -> None:
        self._mchid = mchid
        self._serial_no = serial_no
        self._key = key
        self._clock = clock
        self._nonce = nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = wxc.authorization(
            mchid=self._mchid, serial_no=self._serial_no, key=self._key,
            method=request.method, path_with_query=request.url.raw_path.decode("ascii"),
            timestamp=str(int(self._clock())), nonce=self._nonce(),
            body=request.content.decode("utf-8"),
        )
        yield request


class _RedactSecrets(logging.Filter):
    """httpx logs request URLs at INFO; the OAuth exchange carries the AppSecret in its
    query string (WeChat's API wants it there), so mask it before any handler sees it."""

    _SECRET = re.compile(r"(secret=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "secret=" in message:
            record.msg = self._SECRET.sub(r"\1***", message)
            record.args = ()
        return True


_REDACT = _RedactSecrets()


class WeChatPayChannel:
    """PaymentChannel for WeChat Pay API v3. `http` is used for every call; this object
    closes it in dispose() only when told it owns it."""

    name = "wechatpay"

    def __init__(self, config: WeChatPayConfig, http: httpx.Client, *,
                 clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = wxc.new_nonce, owns_http: bool = False) -> None:
        self.config = config
        self.merchant_id = config.mchid
        self._http = http
        self._owns_http = owns_http
        self._clock = clock
        self._nonce = nonce
        self._auth = WeChatPayAuth(mchid=config.mchid, serial_no=config.merchant_serial,
                                   key=config.merchant_key, clock=clock, nonce=nonce)
        public_key_ids = [s for s in config.platform_keys if s.startswith("PUB_KEY_ID_")]
        # In "WeChat Pay public key" mode requests name the key WeChat should expect.
        self._extra_headers = {"Wechatpay-Serial": public_key_ids[-1]} if public_key_ids else {}
        httpx_logger = logging.getLogger("httpx")
        if _REDACT not in httpx_logger.filters:
            httpx_logger.addFilter(_REDACT)

    def dispose(self) -> None:
        if self._owns_http:
            self._http.close()

    # --- prepay ------------------------------------------------------------------

    def create_payment(self, request: PaymentRequest) -> dict[str, Any]:
        if type(request.amount_fen) is not int or request.amount_fen <= 0:
            raise ChannelError(f"amount must be a positive number of fen: {request.amount_fen}")
        payload: dict[str, Any] = {
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": (request.description or request.order_no)[:DESCRIPTION_MAX],
            "out_trade_no": request.order_no,
            "time_expire": rfc3339_china(request.expires_at),
            "notify_url": request.notify_url,
            "amount": {"total": request.amount_fen, "currency": "CNY"},
        }
        mode = request.mode
        if mode in ("", "native", "cashier"):  # "": the channel chooses: Native
            data = self._call("POST", "/v3/pay/transactions/native", payload)
            return {"kind": "code_url", "code_url": _field(data, "code_url")}
        if mode == "jsapi":
            if not request.payer_openid:
                raise ChannelError("JSAPI pay needs the payer's openid (OAuth step)")
            payload["payer"] = {"openid": request.payer_openid}
            data = self._call("POST", "/v3/pay/transactions/jsapi", payload)
            prepay_id = _field(data, "prepay_id")
            return {"kind": "jsapi", "prepay_id": prepay_id, "params": self.jsapi_params(prepay_id)}
        if mode == "h5":
            if not request.client_ip:
                raise ChannelError("H5 pay needs the payer's client IP")
            payload["scene_info"] = {"payer_client_ip": request.client_ip,
                                     "h5_info": {"type": "Wap"}}
            data = self._call("POST", "/v3/pay/transactions/h5", payload)
            url = _field(data, "h5_url")
            if request.return_url:
                url += ("&" if "?" in url else "?") + "redirect_url=" + quote(
                    request.return_url, safe="")
            return {"kind": "redirect", "url": url}
        raise ChannelError(f"wechatpay does not support pay mode {mode!r}")

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """What the page hands to WeixinJSBridge.invoke('getBrandWCPayRequest', ...)."""
        timestamp = str(int(self._clock()))
        nonce = self._nonce()
        package = f"prepay_id={prepay_id}"
        pay_sign = wxc.rsa_sign(self.config.merchant_key,
                                wxc.jsapi_message(self.config.appid, timestamp, nonce, package))
        return {"appId": self.config.appid, "timeStamp": timestamp, "nonceStr": nonce,
                "package": package, "signType": "RSA", "paySign": pay_sign}

    # --- query and close ---------------------------------------------------------

    def query(self, order_no: str) -> ChannelQuery:
        path = (f"/v3/pay/transactions/out-trade-no/{quote(order_no, safe='')}"
                f"?mchid={quote(self.config.mchid, safe='')}")
        try:
            data = self._call("GET", path)
        except WeChatPayError as exc:
            if exc.status_code == 404 or exc.code == "ORDER_NOT_EXIST":
                return ChannelQuery(state="unknown")
            raise
        state = QUERY_STATES.get(str(data.get("trade_state", "")))
        if state is None:
            raise WeChatPayError(f"unknown trade_state {data.get('trade_state')!r}")
        amount = data.get("amount") or {}
        total = amount.get("total", 0) if isinstance(amount, dict) else 0
        return ChannelQuery(
            state=state,
            amount_fen=total if type(total) is int else 0,
            channel_txn_id=str(data.get("transaction_id") or ""),
            paid_at=_parse_time(data.get("success_time")),
        )

    def close(self, order_no: str) -> None:
        """Close an unpaid order. A paid one raises WeChatPayError(code ORDERPAID); an
        order WeChat never saw has nothing to close."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(order_no, safe='')}/close"
        try:
            self._call("POST", path, {"mchid": self.config.mchid})
        except WeChatPayError as exc:
            if exc.code == "ORDER_NOT_EXIST":
                return
            raise

    # --- notifications -----------------------------------------------------------

    def parse_notification(self, headers: Mapping[str, str], body: bytes) -> ChannelNotification:
        h = {k.lower(): v for k, v in headers.items()}
        problem = self._signature_problem(h, body)
        if problem:
            raise NotificationRejected(problem)
        try:
            envelope = json.loads(body)
            resource = envelope["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise NotificationRejected(f"unexpected algorithm {resource.get('algorithm')!r}")
            plaintext = wxc.aes_gcm_decrypt(
                self.config.apiv3_key, str(resource["nonce"]),
                str(resource.get("associated_data") or ""), str(resource["ciphertext"]),
            )
            data = json.loads(plaintext)
            notification_id = str(envelope["id"])
            event_type = str(envelope.get("event_type", ""))
        except wxc.DecryptionFailed as exc:
            raise NotificationRejected(str(exc)) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NotificationRejected(f"malformed notification: {type(exc).__name__}") from exc
        if not event_type.startswith("TRANSACTION."):
            raise NotificationRejected(f"unsupported event type {event_type!r}")
        if not isinstance(data, dict):
            raise NotificationRejected("malformed resource")
        if data.get("mchid") != self.config.mchid:
            raise NotificationRejected("notification for another merchant (mchid)")
        if data.get("appid") != self.config.appid:
            raise NotificationRejected("notification for another app (appid)")
        outcome = NOTIFY_OUTCOMES.get(str(data.get("trade_state", "")))
        if outcome is None:
            raise NotificationRejected(f"unexpected trade_state {data.get('trade_state')!r}")
        amount = data.get("amount")
        total = amount.get("total") if isinstance(amount, dict) else None
        if type(total) is not int or (isinstance(amount, dict)
                                      and amount.get("currency", "CNY") != "CNY"):
            raise NotificationRejected("amount missing or not in CNY fen")
        order_no = data.get("out_trade_no")
        if not isinstance(order_no, str) or not order_no:
            raise NotificationRejected("out_trade_no missing")
        return ChannelNotification(
            notification_id=notification_id,
            order_no=order_no,
            outcome=outcome,
            amount_fen=total,
            channel_txn_id=str(data.get("transaction_id") or ""),
            paid_at=_parse_time(data.get("success_time")),
            merchant_id=self.config.mchid,
            raw=data,
        )

    def answer(self, ok: bool, message: str = "") -> NotifyAnswer:
        """WeChat wants 200/204 for "received" (no body needed) and 4xx/5xx with
        {"code":"FAIL","message":...} otherwise; it then re-sends for about 24 h."""
        if ok:
            return NotifyAnswer(status_code=204)
        body = json.dumps({"code": "FAIL", "message": (message or "失败")[:200]},
                          ensure_ascii=False).encode("utf-8")
        return NotifyAnswer(status_code=400, body=body)

    # --- OAuth for the JSAPI payer's openid ------------------------------------------

    def oauth_authorize_url(self, redirect_uri: str, state: str,
                            scope: str = "snsapi_base") -> str:
        """Where to send the browser (inside WeChat) to learn the payer's openid."""
        return (
            f"{self.config.open_base_url}/connect/oauth2/authorize"
            f"?appid={quote(self.config.appid, safe='')}"
            f"&redirect_uri={quote(redirect_uri, safe='')}"
            f"&response_type=code&scope={quote(scope, safe='')}&state={quote(state, safe='')}"
            "#wechat_redirect"
        )

    def exchange_code_for_openid(self, code: str) -> str:
        if not self.config.app_secret:
            raise ChannelError("SELFPAY_WECHATPAY_APP_SECRET is not set: no OAuth exchange")
        try:
            response = self._http.get(
                f"{self.config.oauth_base_url}/sns/oauth2/access_token",
                params={"appid": self.config.appid, "secret": self.config.app_secret,
                        "code": code, "grant_type": "authorization_code"},
            )
            data = response.json()
        except httpx.HTTPError as exc:
            raise WeChatPayError(f"WeChat OAuth unreachable ({type(exc).__name__})") from exc
        except ValueError as exc:
            raise WeChatPayError(f"WeChat OAuth answered {response.status_code}, not JSON",
                                 status_code=response.status_code) from exc
        if not isinstance(data, dict):
            raise WeChatPayError("WeChat OAuth answered an unexpected body")
        if data.get("errcode"):
            raise WeChatPayError(f"WeChat OAuth error {data.get('errcode')}: "
                                 f"{str(data.get('errmsg', ''))[:200]}",
                                 status_code=response.status_code, code=str(data["errcode"]))
        openid = data.get("openid")
        if not isinstance(openid, str) or not openid:
            raise WeChatPayError("WeChat OAuth answered no openid")
        return openid

    # --- plumbing -----------------------------------------------------------------

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        content = b"" if payload is None else json.dumps(
            payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = dict(self._extra_headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, self.config.api_base_url + path,
                                          content=content, headers=headers, auth=self._auth)
        except httpx.HTTPError as exc:
            raise WeChatPayError(
                f"WeChat Pay unreachable: {method} {path.split('?')[0]} ({type(exc).__name__})"
            ) from exc
        log.info("wechatpay %s %s -> %s", method, path.split("?")[0], response.status_code)
        body = response.content
        if not response.is_success:
            code, message = _error_of(body)
            raise WeChatPayError(
                f"WeChat Pay {response.status_code} {code}: {message}".rstrip(": "),
                status_code=response.status_code, code=code,
            )
        problem = self._signature_problem({k.lower(): v for k, v in response.headers.items()},
                                          body)
        if problem:
            raise WeChatPayError(f"WeChat Pay response not trusted: {problem}",
                                 status_code=response.status_code, code="SIGN_ERROR")
        if not body:
            return {}
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WeChatPayError("WeChat Pay answered a body that is not JSON") from exc
        if not isinstance(data, dict):
            raise WeChatPayError("WeChat Pay answered an unexpected body")
        return data

    def _signature_problem(self, h: Mapping[str, str], body: bytes) -> str:
        """'' when the headers carry a fresh, valid signature over `body`; else why not.
        `h` has lower-case names."""
        signature = h.get("wechatpay-signature", "")
        timestamp = h.get("wechatpay-timestamp", "")
        nonce = h.get("wechatpay-nonce", "")
        serial = h.get("wechatpay-serial", "")
        if not (signature and timestamp and nonce and serial):
            return "signature headers missing"
        if signature.startswith(wxc.PROBE_PREFIX):
            return "signature probe (WECHATPAY/SIGNTEST/): refused as WeChat expects"
        scheme = h.get("wechatpay-signature-type", wxc.SIGNATURE_SCHEME)
        if scheme != wxc.SIGNATURE_SCHEME:
            return f"unsupported signature type {scheme!r}"
        if not (timestamp.isascii() and timestamp.isdigit()):
            return "bad timestamp"
        if abs(self._clock() - int(timestamp)) >= MAX_CLOCK_SKEW_S:
            return "timestamp more than 5 minutes off"
        key = self.config.platform_keys.get(serial)
        if key is None:
            return f"unknown platform key serial {serial[:64]!r}"
        try:
            message = wxc.response_message(timestamp, nonce, body)
        except UnicodeEncodeError:
            return "bad nonce"
        if not wxc.rsa_verify(key, message, signature):
            return "bad signature"
        return ""


def rfc3339_china(moment: dt.datetime) -> str:
    """2026-11-01T08:30:00Z -> '2026-11-01T16:30:00+08:00' (WeChat's time_expire)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(CHINA_TZ).isoformat(timespec="seconds")


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def _field(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise WeChatPayError(f"WeChat Pay answered without {name}")
    return value


def _error_of(body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("code", ""))[:64], str(data.get("message", ""))[:200]
