"""A local stand-in for WeChat Pay API v3, for tests (run it with support.serve_asgi).

It speaks the protocol as WeChat documents it and is written independently of
selfpay's own helpers (its own canonical strings and crypto calls), so a shared mistake
cannot make both sides agree:

- every request must carry a valid merchant signature (`Authorization:
  WECHATPAY2-SHA256-RSA2048 mchid=...,serial_no=...,...`), checked with the merchant's
  public key and a 5-minute window; otherwise 401 SIGN_ERROR;
- Native / JSAPI / H5 prepay, query by out_trade_no, close; responses are signed with
  the test platform key (`Wechatpay-Serial` = `platform_serial`);
- `pay()` marks a trade paid; `notification()` builds a TRANSACTION.SUCCESS callback in
  WeChat's published sample format (resource AES-256-GCM encrypted with the APIv3 key,
  signed), with switches for a wrong signature, a wrong serial, an expired timestamp, a
  tampered ciphertext, a `WECHATPAY/SIGNTEST/` probe and a foreign mchid/appid;
  `send_notification()` POSTs it to the trade's notify_url;
- `/sns/oauth2/access_token` answers the OAuth code exchange.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CHINA = dt.timezone(dt.timedelta(hours=8))
SCHEME = "WECHATPAY2-SHA256-RSA2048"


# --- test key material (generated per test session; nothing secret is committed) -------

@dataclass(frozen=True)
class SimKeys:
    merchant_key: rsa.RSAPrivateKey
    merchant_serial: str
    platform_key: rsa.RSAPrivateKey  # "WeChat Pay public key" mode
    platform_serial: str
    other_key: rsa.RSAPrivateKey  # a key WeChat never had: for wrong-serial/forgery tests
    cert_key: rsa.RSAPrivateKey  # platform certificate mode
    cert_serial: str
    certificate_pem: bytes
    apiv3_key: bytes

    def write(self, directory: Path) -> dict[str, Path]:
        """PEM files as a merchant keeps them; returns their paths."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = {
            "merchant_key": directory / "apiclient_key.pem",
            "platform_pub": directory / "pub_key.pem",
            "platform_cert": directory / "wechatpay_cert.pem",
        }
        paths["merchant_key"].write_bytes(self.merchant_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        paths["merchant_key"].chmod(0o600)
        paths["platform_pub"].write_bytes(public_pem(self.platform_key))
        paths["platform_cert"].write_bytes(self.certificate_pem)
        return paths


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_test_keys() -> SimKeys:
    def new_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    cert_key = new_key()
    serial_number = 0x5157F09EFDC096DE15EBE81A47057A72  # shaped like a platform cert serial
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA (test)")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(cert_key.public_key()).serial_number(serial_number)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(cert_key, hashes.SHA256()))
    return SimKeys(
        merchant_key=new_key(), merchant_serial="3775B6A45ACD588826D15E583A95F5DD2B8B1A3C",
        platform_key=new_key(), platform_serial="PUB_KEY_ID_0114232134912410000000000000000",
        other_key=new_key(), cert_key=cert_key, cert_serial=f"{serial_number:X}",
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        apiv3_key=secrets.token_hex(16).encode("ascii"),  # 32 characters, like the real one
    )


# --- the simulator -----------------------------------------------------------------

@dataclass
class SimTrade:
    out_trade_no: str
    appid: str
    mchid: str
    description: str
    total: int
    notify_url: str
    trade_type: str  # NATIVE | JSAPI | MWEB
    time_expire: str = ""
    openid: str = ""
    prepay_id: str = ""
    code_url: str = ""
    h5_url: str = ""
    trade_state: str = "NOTPAY"
    transaction_id: str = ""
    success_time: str = ""

    def transaction(self) -> dict[str, Any]:
        """The transaction object as WeChat returns it from a query and in callbacks."""
        data: dict[str, Any] = {
            "appid": self.appid, "mchid": self.mchid, "out_trade_no": self.out_trade_no,
            "trade_type": self.trade_type, "trade_state": self.trade_state,
            "trade_state_desc": {"SUCCESS": "支付成功", "NOTPAY": "未支付",
                                 "CLOSED": "已关闭"}.get(self.trade_state, ""),
            "attach": "",
            "amount": {"total": self.total, "currency": "CNY"},
        }
        if self.trade_state == "SUCCESS":
            data.update(transaction_id=self.transaction_id, bank_type="OTHERS",
                        success_time=self.success_time,
                        payer={"openid": self.openid or "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"})
            data["amount"].update(payer_total=self.total, payer_currency="CNY")
        return data


@dataclass
class WeChatPaySimulator:
    mchid: str
    appid: str
    keys: SimKeys
    app_secret: str = "sim-app-secret"
    clock: Callable[[], float] = time.time
    trades: dict[str, SimTrade] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    # None, or one of: bad_signature, wrong_serial, stale, unsigned (for response checks)
    response_fault: str | None = None

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[
            Route("/v3/pay/transactions/{kind}", self._prepay, methods=["POST"]),
            Route("/v3/pay/transactions/out-trade-no/{no}", self._query, methods=["GET"]),
            Route("/v3/pay/transactions/out-trade-no/{no}/close", self._close,
                  methods=["POST"]),
            Route("/sns/oauth2/access_token", self._oauth, methods=["GET"]),
        ])

    # --- what a test drives directly ------------------------------------------------

    def pay(self, out_trade_no: str, *, openid: str = "") -> SimTrade:
        trade = self.trades[out_trade_no]
        trade.trade_state = "SUCCESS"
        trade.transaction_id = "42000" + "".join(secrets.choice("0123456789") for _ in range(23))
        trade.success_time = dt.datetime.fromtimestamp(int(self.clock()), CHINA).isoformat()
        trade.openid = openid or trade.openid
        return trade

    def notification(self, out_trade_no: str, *, bad_signature: bool = False,
                     serial: str | None = None, signing_key: rsa.RSAPrivateKey | None = None,
                     timestamp: int | None = None, tamper: bool = False, probe: bool = False,
                     mchid: str | None = None, appid: str | None = None,
                     event_id: str | None = None, apiv3_key: bytes | None = None,
                     ) -> tuple[dict[str, str], bytes]:
        """(headers, body) of a TRANSACTION.SUCCESS callback for a paid trade, built in
        the format of WeChat's published sample; the switches spoil one thing each."""
        trade = self.trades[out_trade_no]
        resource = trade.transaction()
        if mchid is not None:
            resource["mchid"] = mchid
        if appid is not None:
            resource["appid"] = appid
        nonce = secrets.token_urlsafe(9)[:12]
        ciphertext = AESGCM(apiv3_key or self.keys.apiv3_key).encrypt(
            nonce.encode(), json.dumps(resource, ensure_ascii=False).encode(), b"transaction")
        if tamper:
            ciphertext = bytes([ciphertext[0] ^ 0x01]) + ciphertext[1:]
        envelope = {
            "id": event_id or f"EV-{secrets.token_hex(10)}",
            "create_time": dt.datetime.fromtimestamp(int(self.clock()), CHINA).isoformat(),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        }
        # WeChat's own JSON has a space after ':' and ','; keep it so a verifier that
        # re-serializes instead of using the raw bytes fails.
        body = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
        headers = self._signed_headers(body, serial=serial, signing_key=signing_key,
                                       timestamp=timestamp)
        if bad_signature:
            headers["Wechatpay-Signature"] = base64.b64encode(
                b"\x00" * 256).decode()
        if probe:
            headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" + headers[
                "Wechatpay-Signature"]
        return headers, body

    def send_notification(self, out_trade_no: str, client: httpx.Client,
                          **switches: Any) -> httpx.Response:
        headers, body = self.notification(out_trade_no, **switches)
        return client.post(self.trades[out_trade_no].notify_url, content=body,
                           headers={"Content-Type": "application/json", **headers})

    # --- protocol ---------------------------------------------------------------------

    def _signed_headers(self, body: bytes, *, serial: str | None = None,
                        signing_key: rsa.RSAPrivateKey | None = None,
                        timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        nonce = secrets.token_hex(16)
        message = ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        key = signing_key or self.keys.platform_key
        signature = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256()))
        return {
            "Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature.decode(),
            "Wechatpay-Serial": serial or self.keys.platform_serial,
            "Wechatpay-Signature-Type": SCHEME,
            "Request-ID": secrets.token_hex(8),
        }

    def _respond(self, request: Request, status: int, data: dict[str, Any] | None) -> Response:
        body = b"" if data is None else json.dumps(data, ensure_ascii=False).encode("utf-8")
        headers: dict[str, str] = {}
        if self.response_fault != "unsigned":
            fault = self.response_fault
            headers = self._signed_headers(
                body, serial="PUB_KEY_ID_NOT_CONFIGURED" if fault == "wrong_serial" else None,
                timestamp=int(self.clock()) - 600 if fault == "stale" else None)
            if fault == "bad_signature":
                headers["Wechatpay-Signature"] = base64.b64encode(b"\x01" * 256).decode()
        self.requests.append((request.method, request.url.path, status))
        return Response(body, status_code=status, headers=headers,
                        media_type="application/json" if data is not None else None)

    def _error(self, request: Request, status: int, code: str, message: str) -> Response:
        return self._respond(request, status, {"code": code, "message": message})

    async def _authenticate(self, request: Request) -> tuple[str, bytes]:
        """('', body) when the merchant signature is good; else (why not, body)."""
        body = await request.body()
        header = request.headers.get("authorization", "")
        if not header.startswith(SCHEME + " "):
            return "no WECHATPAY2-SHA256-RSA2048 Authorization", body
        fields: dict[str, str] = {}
        for part in header[len(SCHEME) + 1:].split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v.strip('"')
        if fields.get("mchid") != self.mchid:
            return "mchid does not match", body
        if fields.get("serial_no") != self.keys.merchant_serial:
            return "unknown merchant certificate serial", body
        ts = fields.get("timestamp", "")
        if not ts.isdigit() or abs(self.clock() - int(ts)) >= 300:
            return "timestamp out of window", body
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        target = raw_path + (b"?" + query if query else b"")
        message = (request.method.encode() + b"\n" + target + b"\n" + ts.encode() + b"\n"
                   + fields.get("nonce_str", "").encode() + b"\n" + body + b"\n")
        try:
            self.keys.merchant_key.public_key().verify(
                base64.b64decode(fields.get("signature", "")), message, padding.PKCS1v15(),
                hashes.SHA256())
        except (InvalidSignature, ValueError):
            return "signature does not verify", body
        return "", body

    async def _prepay(self, request: Request) -> Response:
        problem, body = await self._authenticate(request)
        if problem:
            return self._error(request, 401, "SIGN_ERROR", problem)
        kind = request.path_params["kind"]
        if kind not in ("native", "jsapi", "h5"):
            return self._error(request, 404, "NOT_FOUND", "no such API")
        try:
            data = json.loads(body)
            out_trade_no = data["out_trade_no"]
            total = data["amount"]["total"]
            notify_url = data["notify_url"]
            description = data["description"]
        except (ValueError, KeyError, TypeError):
            return self._error(request, 400, "PARAM_ERROR", "missing parameters")
        if data.get("mchid") != self.mchid or data.get("appid") != self.appid:
            return self._error(request, 400, "INVALID_REQUEST", "appid和mch_id不匹配")
        if type(total) is not int or total < 1 or data["amount"].get("currency", "CNY") != "CNY":
            return self._error(request, 400, "PARAM_ERROR", "amount.total must be int fen")
        if not (0 < len(description) <= 127) or not (6 <= len(out_trade_no) <= 32):
            return self._error(request, 400, "PARAM_ERROR", "description/out_trade_no length")
        time_expire = data.get("time_expire", "")
        if time_expire and dt.datetime.fromisoformat(time_expire).tzinfo is None:
            return self._error(request, 400, "PARAM_ERROR", "time_expire needs an offset")
        openid = ""
        if kind == "jsapi":
            openid = (data.get("payer") or {}).get("openid", "")
            if not openid:
                return self._error(request, 400, "PARAM_ERROR", "payer.openid is required")
        if kind == "h5":
            scene = data.get("scene_info") or {}
            if not scene.get("payer_client_ip") or not (scene.get("h5_info") or {}).get("type"):
                return self._error(request, 400, "PARAM_ERROR", "scene_info is required")
        trade = self.trades.get(out_trade_no)
        if trade is not None:
            if trade.trade_state == "SUCCESS":
                return self._error(request, 400, "ORDERPAID", "该订单已支付")
            if trade.trade_state == "CLOSED":
                return self._error(request, 400, "ORDERCLOSED", "订单已关闭")
            if trade.total != total:
                return self._error(request, 400, "INVALID_REQUEST", "201 商户订单号重复")
        else:
            trade = SimTrade(
                out_trade_no=out_trade_no, appid=self.appid, mchid=self.mchid,
                description=description, total=total, notify_url=notify_url,
                trade_type={"native": "NATIVE", "jsapi": "JSAPI", "h5": "MWEB"}[kind],
                time_expire=time_expire, openid=openid,
            )
            self.trades[out_trade_no] = trade
        trade.notify_url = notify_url
        token = secrets.token_hex(12)
        if kind == "native":
            trade.code_url = trade.code_url or f"weixin://wxpay/bizpayurl?pr={token[:9]}"
            return self._respond(request, 200, {"code_url": trade.code_url})
        trade.prepay_id = trade.prepay_id or f"wx{token}"
        if kind == "jsapi":
            return self._respond(request, 200, {"prepay_id": trade.prepay_id})
        trade.h5_url = (f"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id="
                        f"{trade.prepay_id}&package=2150917749")
        return self._respond(request, 200, {"h5_url": trade.h5_url})

    async def _query(self, request: Request) -> Response:
        problem, _ = await self._authenticate(request)
        if problem:
            return self._error(request, 401, "SIGN_ERROR", problem)
        if request.query_params.get("mchid") != self.mchid:
            return self._error(request, 400, "PARAM_ERROR", "mchid is required")
        trade = self.trades.get(request.path_params["no"])
        if trade is None:
            return self._error(request, 404, "ORDER_NOT_EXIST", "订单不存在")
        return self._respond(request, 200, trade.transaction())

    async def _close(self, request: Request) -> Response:
        problem, body = await self._authenticate(request)
        if problem:
            return self._error(request, 401, "SIGN_ERROR", problem)
        try:
            mchid = json.loads(body).get("mchid")
        except ValueError:
            mchid = None
        if mchid != self.mchid:
            return self._error(request, 400, "PARAM_ERROR", "mchid is required")
        trade = self.trades.get(request.path_params["no"])
        if trade is None:
            return self._error(request, 404, "ORDER_NOT_EXIST", "订单不存在")
        if trade.trade_state == "SUCCESS":
            return self._error(request, 400, "ORDERPAID", "该订单已支付")
        trade.trade_state = "CLOSED"
        return self._respond(request, 204, None)

    async def _oauth(self, request: Request) -> Response:
        q = request.query_params
        if q.get("appid") != self.appid or q.get("secret") != self.app_secret:
            return JSONResponse({"errcode": 40125, "errmsg": "invalid appsecret"})
        if q.get("grant_type") != "authorization_code" or not q.get("code", "").startswith(
                "good-"):
            return JSONResponse({"errcode": 40029, "errmsg": "invalid code"})
        return JSONResponse({"access_token": "ACCESS", "expires_in": 7200,
                             "refresh_token": "REFRESH", "scope": "snsapi_base",
                             "openid": "o-" + q["code"][5:]})
