"""Paying: the order status page (/pay/<order no>), "my accounts" (/my), the WeChat
OAuth step that learns the payer's openid, and the payer cookies.

The status page never trusts a cashier's own "ok": its script polls
GET /api/v1/orders/<no> until the server says paid/posted (or failed/closed).

Who is the payer ("my accounts" remembers what they paid):
- in WeChat, the openid that OAuth gave us, kept in a signed cookie `selfpay_wx`;
- elsewhere a random id in a signed long-lived cookie `selfpay_payer`, set when an
  order is created (payer_for_order / set_payer_cookie, used by POST /api/v1/orders).
Cookies are signed with the secret key (itsdangerous), so a payer id cannot be made up
to read somebody else's list.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from typing import Any

import segno
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

from selfpay.config import Settings
from selfpay.domain.accounts import mask_name
from selfpay.domain.orders import Order, OrderStatus
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.deps import ContainerDep, render
from selfpay.entrypoints.web.i18n import request_lang, translate

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

PAYER_COOKIE = "selfpay_payer"
OPENID_COOKIE = "selfpay_wx"
OAUTH_STATE_MAX_AGE_S = 600
OAUTH_NONCE_COOKIE = "selfpay_wx_nonce"
ORDER_NO_RE = re.compile(r"^[A-Z0-9]{6,32}$")
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Robots-Tag": "noindex, nofollow"}


# --- payer cookies --------------------------------------------------------------------

def _serializer(settings: Settings, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key.get_secret_value(), salt=salt)


def _read(settings: Settings, request: Request, cookie: str, salt: str) -> str:
    raw = request.cookies.get(cookie, "")
    if not raw:
        return ""
    try:
        value = _serializer(settings, salt).loads(raw)
    except BadSignature:
        return ""
    return value if isinstance(value, str) else ""


def wechat_openid(settings: Settings, request: Request) -> str:
    """The payer's openid from the signed cookie the OAuth callback set, or ''."""
    return _read(settings, request, OPENID_COOKIE, "wechat-openid")


def browser_payer(settings: Settings, request: Request) -> str:
    return _read(settings, request, PAYER_COOKIE, "payer")


def current_payer(settings: Settings, request: Request) -> str:
    """The payer id of this browser: 'wx:<openid>' when known, else 'web:<random>', or ''
    when this browser has never paid."""
    openid = wechat_openid(settings, request)
    if openid:
        return f"wx:{openid}"
    return browser_payer(settings, request)


def payer_for_order(settings: Settings, request: Request) -> tuple[str, bool]:
    """(payer id for CreateOrder.payer, whether it is new and must be set as a cookie)."""
    known = current_payer(settings, request)
    if known:
        return known, False
    return f"web:{secrets.token_urlsafe(18)}", True


def set_payer_cookie(settings: Settings, response: Response, payer: str) -> None:
    response.set_cookie(
        PAYER_COOKIE, _serializer(settings, "payer").dumps(payer),
        max_age=settings.payer_cookie_max_age_s, path="/", httponly=True, samesite="lax",
        secure=settings.env == "production",
    )


def _set_openid_cookie(settings: Settings, response: Response, openid: str) -> None:
    response.set_cookie(
        OPENID_COOKIE, _serializer(settings, "wechat-openid").dumps(openid),
        max_age=settings.payer_cookie_max_age_s, path="/", httponly=True, samesite="lax",
        secure=settings.env == "production",
    )


# Strings the script shows (it has no templates); both pages carry them in data-config.
_SCRIPT_KEYS = ("pay.chosen", "pay.choose_one", "pay.error_network", "pay.error_server",
                "pay.error_nothing",
                "pay.st.waiting", "pay.st.retry", "pay.st.paid", "pay.st.done",
                "pay.st.failed", "pay.st.closed", "pay.text.waiting", "pay.text.retry",
                "pay.text.paid", "pay.text.done", "pay.text.failed", "pay.text.closed",
                "pay.st.disputed", "pay.text.disputed", "pay.error_just_paid",
                "pay.error_previous_open", "pay.retry_left")


def pay_strings(lang: str) -> dict[str, str]:
    return {key: translate(lang, key) for key in _SCRIPT_KEYS}


# --- channels as the pages see them ---------------------------------------------------

def enabled_channels(container: Any) -> list[str]:
    channels = getattr(container, "channels", None) or {}
    return list(channels)


def oauth_channel(container: Any) -> Any | None:
    """The wechatpay channel when it can do the OAuth step, else None."""
    if not container.settings.wechat_oauth:
        return None
    channel = (getattr(container, "channels", None) or {}).get("wechatpay")
    if channel is None or not hasattr(channel, "oauth_authorize_url"):
        return None
    config = getattr(channel, "config", None)
    if config is not None and not getattr(config, "app_secret", ""):
        return None  # no AppSecret: the code cannot be exchanged for an openid
    return channel


def code_path(container: Any, biller: str, account: str) -> str:
    """'/Q/ELEC/0012345678/1ABCD...': the signed page of an account, as a printed code."""
    payload = make_payload(container.code_base, container.keyring, biller, account)
    return "/" + payload.split("/", 3)[3]


def _safe_next(raw: str) -> str:
    if raw.startswith("/") and not raw.startswith(("//", "/\\")) and "\\" not in raw:
        return raw
    return "/lookup"


def private_page(request: Request, name: str, context: dict[str, Any],
                 status: int = 200) -> Response:
    response = render(request, name, context, status_code=status)
    response.headers.update(PRIVATE)
    return response


# --- WeChat OAuth ---------------------------------------------------------------------

@router.get("/wechat/oauth/start", name="wechat_oauth_start")
def oauth_start(request: Request, container: ContainerDep, next: str = "/lookup") -> Response:
    target = _safe_next(next)
    channel = oauth_channel(container)
    if channel is None:
        return RedirectResponse(target, status_code=303)
    # The state is bound to this browser by a nonce in a cookie of its own: a callback
    # link made in someone else's browser (login CSRF: planting an attacker's openid here
    # for 400 days) carries a state whose nonce this browser does not hold.
    nonce = secrets.token_urlsafe(16)
    state = URLSafeTimedSerializer(container.settings.secret_key.get_secret_value(),
                                   salt="wechat-oauth").dumps({"next": target, "n": nonce})
    redirect_uri = container.settings.public_base_url + "/wechat/oauth/callback"
    url: str = channel.oauth_authorize_url(redirect_uri, state)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(OAUTH_NONCE_COOKIE, nonce, max_age=OAUTH_STATE_MAX_AGE_S,
                        path="/wechat/oauth", httponly=True, samesite="lax",
                        secure=container.settings.env == "production")
    return response


@router.get("/wechat/oauth/callback", name="wechat_oauth_callback")
def oauth_callback(request: Request, container: ContainerDep, code: str = "",
                   state: str = "") -> Response:
    try:
        data = URLSafeTimedSerializer(container.settings.secret_key.get_secret_value(),
                                      salt="wechat-oauth").loads(
            state, max_age=OAUTH_STATE_MAX_AGE_S)
        nonce = data.get("n") if isinstance(data, dict) else None
        held = request.cookies.get(OAUTH_NONCE_COOKIE, "")
        if not isinstance(nonce, str) or not held or not hmac.compare_digest(nonce, held):
            raise BadSignature("the OAuth state was not started in this browser")
    except BadSignature:
        return private_page(request, "public/message.html", {
            "title": translate(request_lang(request), "pay.oauth_failed"),
            "text": translate(request_lang(request), "pay.oauth_failed_text"), "link": "/lookup",
        }, 400)
    target = _safe_next(str(data.get("next", "/lookup")) if isinstance(data, dict) else "")
    channel = oauth_channel(container)
    if channel is None or not code:  # the payer refused, or OAuth was switched off
        return RedirectResponse(_with_flag(target, "wx=0"), status_code=303)
    try:
        openid = str(channel.exchange_code_for_openid(code))
    except Exception as exc:  # noqa: BLE001 - any channel failure: pay without JSAPI
        log.warning("WeChat OAuth code exchange failed: %s", exc)
        return RedirectResponse(_with_flag(target, "wx=0"), status_code=303)
    response = RedirectResponse(target, status_code=303)
    _set_openid_cookie(container.settings, response, openid)
    response.delete_cookie(OAUTH_NONCE_COOKIE, path="/wechat/oauth")  # used once
    return response


def _with_flag(url: str, flag: str) -> str:
    return url + ("&" if "?" in url else "?") + flag


# --- the order status page ------------------------------------------------------------

def qr_svg(data: str) -> str:
    """An inline SVG QR code (segno), for a Native-pay code_url."""
    return str(segno.make(data, error="m", micro=False).svg_inline(
        scale=6, border=2, dark="#111", omitsize=True))


def view_state(order: Order) -> str:
    """waiting | retry | paid | done | failed | closed | disputed (static/pay.js mirrors
    this)."""
    if order.status is OrderStatus.POSTED:
        return "done"
    if order.status is OrderStatus.PAID:
        return "paid"
    if order.status in (OrderStatus.FAILED, OrderStatus.CLOSED, OrderStatus.DISPUTED):
        return order.status.value
    if order.failed_attempts and not order.action:
        return "retry"
    return "waiting"


def status_context(container: Any, order: Order, lang: str, *, openid: bool) -> dict[str, Any]:
    with container.read_uow_factory() as uow:
        biller = uow.billers.get(order.biller)
        # the holder as the order recorded it; older orders: as the ledger has it now
        account = None if order.holder else uow.accounts.get(order.biller, order.account)
    biller_name = order.biller
    if biller is not None:
        biller_name = (biller.name_en or biller.name) if lang == "en" else biller.name
    action = order.action or {}
    code_url = str(action.get("code_url", "")) if action.get("kind") == "code_url" else ""
    return {
        "order": order,
        "state": view_state(order),
        "cashier_url": str(action.get("url", "")) if action.get("kind") == "redirect" else "",
        "biller_name": biller_name,
        "masked_name": order.holder or (mask_name(account.name) if account else ""),
        "qr": qr_svg(code_url) if code_url and order.is_open else "",
        "account_path": code_path(container, order.biller, order.account),
        "config": json.dumps({
            "order_no": order.order_no,
            "status": order.status.value,
            "api": f"/api/v1/orders/{order.order_no}",
            "receipt": f"/receipt/{order.order_no}",
            "channel": order.channel,
            "state": view_state(order),
            "openid": openid,
            "interval_ms": 1500,  # between requests only after an error (back-off)
            "version": order.version,  # the poll waits for the order to move past it
            "wait_s": 25,
            "t": pay_strings(lang),
        }),
    }


@router.get("/pay/{order_no}", name="pay_status")
def pay_status(request: Request, order_no: str, container: ContainerDep) -> Response:
    if not ORDER_NO_RE.match(order_no):
        return private_page(request, "public/order_unknown.html", {}, 404)
    with container.read_uow_factory() as uow:
        order = uow.orders.get(order_no)
    if order is None:
        return private_page(request, "public/order_unknown.html", {}, 404)
    ctx = status_context(container, order, request_lang(request),
                         openid=bool(wechat_openid(container.settings, request)))
    return private_page(request, "public/pay_status.html", ctx)


# --- my accounts ----------------------------------------------------------------------

@router.get("/my", name="my_accounts")
def my_accounts(request: Request, container: ContainerDep) -> Response:
    payer = current_payer(container.settings, request)
    lang = request_lang(request)
    items: list[dict[str, str]] = []
    if payer:
        with container.read_uow_factory() as uow:
            pairs = uow.payers.list(payer)
            billers = {b.code: b for b in uow.billers.list()}
            for biller_code, number in pairs:
                biller = billers.get(biller_code)
                if biller is not None and not biller.enabled:
                    continue  # offered to no one
                account = uow.accounts.get(biller_code, number)
                name = biller_code
                if biller is not None:
                    name = (biller.name_en or biller.name) if lang == "en" else biller.name
                items.append({
                    "biller": biller_code, "biller_name": name, "account": number,
                    "masked_name": mask_name(account.name) if account else "",
                    "url": code_path(container, biller_code, number),
                })
    return private_page(request, "public/my.html", {"items": items})
