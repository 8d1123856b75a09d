"""The kiosk screen, /kiosk/{device_id}: a full-screen page on a self-service terminal, and
the small JSON API its script (static/kiosk.js) talks to.

The page is one document with a section per step (choose, identify or identify_plate,
confirm_plate, confirm, pay, receipt); the script moves between them and follows the
server's word on the order, never its own guess. Only an enrolled device gets the page:
an unknown or revoked id gets a kiosk-styled "not enrolled" screen (403) and nothing else.

What the script calls here, under /kiosk/{device_id}/api (errors are the API's JSON
problems, {detail, code, message}, `message` in the screen's language):
- POST scan {"payload"}: a card's QR code as the terminal's scanner typed it, verified
  with the keyring as the /q pages do -> {biller, account}; a code of a biller this
  device does not offer is refused (403 `biller_not_offered`).
- POST plate {"biller", "plate"}: a licence plate -> its account number (domain/plates.py).
- POST sms/send, sms/verify: phone number + SMS code (services/lookup.py) -> the phone's
  accounts at billers this device offers, holder names masked.
- POST orders (Idempotency-Key): the order for an account, on the enabled channel in
  native mode, recorded in device_orders with this device.
- GET orders/{no}: the order as the server has it; the first poll that sees it settled
  reports the outcome to Devices.payment_outcome, once per order.
- POST orders/{no}/receipt {"to"}: a receipt by SMS or e-mail, for a paid order only, at
  most RECEIPTS_PER_ORDER per hour.
And two images: /kiosk/{id}/orders/{no}/qr.svg (that order's own code_url, while it is
open) and /kiosk/{id}/orders/{no}/receipt-qr.svg (its receipt page, once paid).

Payment codes (付款码) and retries go straight to /api/v1/orders/{no}/payment-code and
/retry: the order number is the capability there, as on a phone.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from selfpay.adapters.db.kiosk_orders import KioskOrders
from selfpay.adapters.ratelimit import RateLimiter
from selfpay.bootstrap import Container
from selfpay.domain.accounts import Biller, mask_name, mask_phone, normalize_account
from selfpay.domain.devices import Device
from selfpay.domain.errors import DomainError, InvalidCode, InvalidInput, PermissionDenied
from selfpay.domain.messages import catalog
from selfpay.domain.plates import plate_account
from selfpay.domain.qrcodes import verify_payload
from selfpay.entrypoints.web.api import ApiRoute, OrderOut, _order_out
from selfpay.entrypoints.web.deps import ContainerDep, client_ip, render
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.entrypoints.web.lookup import clock, rules
from selfpay.entrypoints.web.pay import ORDER_NO_RE, PRIVATE, enabled_channels
from selfpay.services import lookup as sms
from selfpay.services.devices import DeviceRefused
from selfpay.services.payments import CreateOrder, OrderNotFound, OrderView
from selfpay.services.ports import Message, takes_payment_code
from selfpay.services.receipts import load_receipt

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
AGENT_URL = "http://127.0.0.1:8765"  # the terminal's own agent (selfpay kiosk-agent)
# The page may talk to the terminal's agent (receipt printer) besides its own server.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       f"img-src 'self' data:; connect-src 'self' {AGENT_URL}; media-src 'self'; "
       "form-action 'self'; base-uri 'self'; object-src 'none'; frame-ancestors 'none'")
RECEIPTS_PER_ORDER = 3  # receipts sent by SMS / e-mail per order and hour
SMS_PER_DEVICE_PER_HOUR = 60  # codes one terminal may have sent: every customer shares its IP
UI_PREFIX = "kiosk.ui."
PLATE_KIND = "parking"
DEFAULT_STEPS = ("choose", "identify", "confirm", "pay", "receipt")
PLATE_STEPS = ("choose", "identify_plate", "confirm_plate", "confirm", "pay", "receipt")
SETTLED_OK = frozenset({"paid", "posted"})

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/kiosk/{device_id}/api", route_class=ApiRoute, include_in_schema=False)


class BillerNotOffered(PermissionDenied):
    """A scanned card of a biller this terminal does not take payments for (403)."""

    default_key = "err.kiosk.biller_not_offered"


class CardRefused(InvalidInput):
    """A scanned code that does not verify (400, with the reason's message)."""


class KioskRefused(PermissionDenied):
    """The API's answer to an unknown or revoked device: 403, one message for all."""

    default_key = "err.device.refused"


class ReceiptRefused(DomainError):
    default_key = "err.kiosk.receipt_unpaid"


class NoChannel(DomainError):
    default_key = "err.kiosk.no_channel"


# --- what the screen offers -------------------------------------------------------------

def kiosk_steps(biller: Biller) -> tuple[str, ...]:
    """The biller's own step list, or its kind's default (parking: by licence plate)."""
    if biller.steps:
        return biller.steps
    return PLATE_STEPS if biller.kind == PLATE_KIND else DEFAULT_STEPS


def offered_billers(container: Container, device: Device) -> list[Biller]:
    """The billers this device offers (all enabled ones when it names none), in the
    registry's display order."""
    with container.read_uow_factory() as uow:
        enabled = uow.billers.list(include_disabled=False)
    if not device.billers:
        return enabled
    wanted = set(device.billers)
    return [b for b in enabled if b.code in wanted]


def biller_card(biller: Biller, lang: str) -> dict[str, Any]:
    return {"code": biller.code, "name": (biller.name_en or biller.name) if lang == "en"
            else biller.name, "icon": biller.icon or biller.kind, "kind": biller.kind,
            "elderly": biller.elderly, "steps": list(kiosk_steps(biller)),
            "letters": biller.kind in ("property", "parking", "other")}


def ui_strings(lang: str) -> dict[str, str]:
    """Every kiosk.ui.* string in `lang` (English falls back to Chinese per key)."""
    zh = {k: v for k, v in catalog("zh-CN").items() if k.startswith(UI_PREFIX)}
    if lang == "zh-CN":
        return zh
    own = catalog(lang)
    return {k: own.get(k, v) for k, v in zh.items()}


def _device(container: Container, device_id: str) -> Device:
    """The enrolled device, or KioskRefused (403; the pages catch it and show the "not
    enrolled" screen)."""
    try:
        return container.devices.kiosk(device_id)
    except DeviceRefused as exc:
        raise KioskRefused("not an enrolled device") from exc


def _kiosk_orders(container: Container) -> KioskOrders:
    return KioskOrders(container.engine)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    container: Container = request.app.state.container
    context = {"voice_mode": container.settings.voice, **context}  # static/kiosk_voice.js
    response = render(request, name, context, status_code=status)
    response.headers.update(PRIVATE)
    response.headers["Content-Security-Policy"] = CSP
    return response


def _refused(request: Request, device_id: str) -> Response:
    return _page(request, "kiosk/refused.html", {"device_id": device_id[:32]}, 403)


@router.get("/kiosk/{device_id}", name="kiosk")
def kiosk_page(request: Request, device_id: str, container: ContainerDep) -> Response:
    try:
        device = _device(container, device_id)
    except KioskRefused:
        log.info("kiosk page refused for %r", device_id[:32])
        return _refused(request, device_id)
    lang = request_lang(request)
    billers = [biller_card(b, lang) for b in offered_billers(container, device)]
    channels = enabled_channels(container)
    channel = container.channels.get(channels[0]) if channels else None
    settings = container.settings
    base = f"/kiosk/{device.device_id}"
    config = {
        "device": device.device_id, "lang": lang, "base": base, "api": base + "/api",
        "billers": billers, "elderly_default": device.elderly_default,
        "idle_s": settings.kiosk_idle_s, "countdown_s": settings.kiosk_countdown_s,
        "agent": AGENT_URL, "channel": channels[0] if channels else "",
        "takes_code": bool(channel is not None and takes_payment_code(channel)),
        "t": ui_strings(lang),
    }
    return _page(request, "kiosk/screen.html", {
        "device": device, "billers": billers, "config": json.dumps(config, ensure_ascii=False),
        "voice": (STATIC_DIR / "kiosk_voice.js").is_file(),
        "help_url": base + "/help",
    })


@router.get("/kiosk/{device_id}/help", name="kiosk_help")
def kiosk_help(request: Request, device_id: str, container: ContainerDep) -> Response:
    """The page the corner QR code opens (on a phone, or from a sign at the site). While
    this terminal is offline it sends customers to its standby partner, or to paying by
    phone; the help / feedback content is still to come."""
    try:
        device = _device(container, device_id)
    except KioskRefused:
        return _refused(request, device_id)
    now = _now()
    standby = None
    if not device.online(now) and device.standby:
        with container.read_uow_factory() as uow:
            standby = uow.devices.get(device.standby)
    return _page(request, "kiosk/help.html", {
        "device": device, "offline": not device.online(now),
        "standby": standby, "standby_online": bool(standby and standby.online(now)),
    })


# --- images -------------------------------------------------------------------------

def _svg(data: str) -> Response:
    """A standalone SVG document (with its namespace: an <img> needs it)."""
    out = io.BytesIO()
    segno.make(data, error="m", micro=False).save(out, kind="svg", scale=10, border=2,
                                                  dark="#111", xmldecl=False)
    return Response(out.getvalue(), media_type="image/svg+xml", headers=dict(PRIVATE))


def _own_order(container: Container, device: Device, order_no: str) -> OrderView:
    """The order, if it was made at this device; OrderNotFound otherwise (no page shows
    another terminal's order)."""
    if not ORDER_NO_RE.match(order_no) or \
            _kiosk_orders(container).device_of(order_no) != device.device_id:
        raise OrderNotFound(f"no order {order_no[:32]} at this terminal")
    return container.payments.get(order_no)


@router.get("/kiosk/{device_id}/orders/{order_no}/qr.svg", name="kiosk_order_qr")
def order_qr(device_id: str, order_no: str, container: ContainerDep) -> Response:
    """The order's own code_url as a QR code, while the order is open."""
    try:
        view = _own_order(container, _device(container, device_id), order_no)
    except (KioskRefused, OrderNotFound):
        return Response(status_code=404)
    url = view.action.get("code_url") if view.action.get("kind") == "code_url" else None
    if not isinstance(url, str) or not url or view.status not in ("created", "pending"):
        return Response(status_code=404)
    return _svg(url)


@router.get("/kiosk/{device_id}/orders/{order_no}/receipt-qr.svg", name="kiosk_receipt_qr")
def receipt_qr(device_id: str, order_no: str, container: ContainerDep) -> Response:
    """The receipt page of a paid order, to be opened on the customer's phone."""
    try:
        view = _own_order(container, _device(container, device_id), order_no)
    except (KioskRefused, OrderNotFound):
        return Response(status_code=404)
    if view.status not in SETTLED_OK:
        return Response(status_code=404)
    return _svg(f"{container.settings.public_base_url}/receipt/{view.order_no}")


# --- the screen's API --------------------------------------------------------------------

class ScanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payload: str = Field(min_length=1, max_length=256)


class PlateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    biller: str = Field(max_length=8)
    plate: str = Field(min_length=1, max_length=16)


class PhoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phone: str = Field(max_length=32)


class VerifyIn(PhoneIn):
    code: str = Field(max_length=16)


class KioskOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    biller: str = Field(max_length=8)
    account: str = Field(max_length=40)


class ReceiptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=120)


class KioskOrderOut(OrderOut):
    qr: str = Field(description="the order's code_url as an SVG, while it is open")
    takes_code: bool = Field(description="the channel takes a payment code (付款码)")


def _offered(container: Container, device: Device, biller: str) -> Biller:
    for b in offered_billers(container, device):
        if b.code == biller:
            return b
    raise BillerNotOffered(key="err.kiosk.biller_not_offered", biller=biller[:8])


@api.post("/scan")
def scan(device_id: str, body: ScanIn, request: Request,
         container: ContainerDep) -> dict[str, Any]:
    """A card's QR code as the scanner typed it -> the biller and account it is for."""
    device = _device(container, device_id)
    try:
        ref = verify_payload(container.code_base, container.keyring, body.payload.strip())
    except InvalidCode as exc:
        log.info("kiosk %s: refused a scanned code: %s", device.device_id, exc)
        raise CardRefused(key=exc.key or "err.code.invalid", **exc.params) from exc
    biller = _offered(container, device, ref.biller)
    return {"biller": ref.biller, "account": ref.account,
            "card": biller_card(biller, request_lang(request))}


@api.post("/plate")
def plate(device_id: str, body: PlateIn, container: ContainerDep) -> dict[str, str]:
    """A licence plate -> the account number it is kept under (粤B12345 -> GD-B12345)."""
    device = _device(container, device_id)
    _offered(container, device, body.biller.strip().upper())
    account = plate_account(body.plate)
    return {"account": account, "plate": body.plate}


def _sms_limiter(container: Container) -> RateLimiter:
    return RateLimiter(container.limit_store, name="kiosk_sms", limit=SMS_PER_DEVICE_PER_HOUR,
                       window_s=3600)


@api.post("/sms/send")
def sms_send(device_id: str, body: PhoneIn, request: Request,
             container: ContainerDep) -> JSONResponse:
    """Send a 6-digit code to the phone (the same answer whether it has accounts or not)."""
    device = _device(container, device_id)
    lang = request_lang(request)
    number = sms.normalize_phone(body.phone)
    limiter = _sms_limiter(container)
    if limiter.retry_after(device.device_id, "kiosk"):
        return JSONResponse({"detail": "too many codes from this terminal",
                             "code": "too_many_sends",
                             "message": translate(lang, "kiosk.ui.sms_busy")}, status_code=429)
    r = rules(container)
    try:
        sms.issue_code(container.uow_factory(), phone=number,
                       secret=container.settings.secret_key.get_secret_value().encode(),
                       box=container.message_box, now=clock(request), rules=r,
                       text=translate(lang, "lookup.sms_text"))
    except sms.CodeThrottled as exc:
        return JSONResponse({"sent": False, "masked": mask_phone(number),
                             "message": translate(lang, "lookup.throttled",
                                                  seconds=exc.retry_after_s)})
    limiter.record(device.device_id, "kiosk")
    return JSONResponse({"sent": True, "masked": mask_phone(number),
                         "message": translate(lang, "lookup.sent",
                                              minutes=int(r.ttl.total_seconds() // 60))})


@api.post("/sms/verify")
def sms_verify(device_id: str, body: VerifyIn, request: Request,
               container: ContainerDep) -> JSONResponse:
    """The phone's accounts at billers this terminal offers, holder names masked."""
    device = _device(container, device_id)
    lang = request_lang(request)
    number = sms.normalize_phone(body.phone)
    try:
        accounts = sms.verify_code(
            container.uow_factory(), phone=number, code=body.code,
            secret=container.settings.secret_key.get_secret_value().encode(),
            now=clock(request), rules=rules(container))
    except sms.CodeWrong as exc:
        return _sms_problem(exc, translate(lang, "lookup.code_wrong", n=exc.tries_left))
    except sms.CodeLocked as exc:
        return _sms_problem(exc, translate(lang, "lookup.code_locked"))
    except sms.CodeExpired as exc:
        return _sms_problem(exc, translate(lang, "lookup.code_expired"))
    billers = {b.code: b for b in offered_billers(container, device)}
    items = [{"biller": a.biller, "account": a.number, "masked_name": mask_name(a.name),
              "card": biller_card(billers[a.biller], lang)}
             for a in accounts if a.biller in billers]
    return JSONResponse({"accounts": items})


def _sms_problem(exc: sms.LookupRefused, message: str) -> JSONResponse:
    code = type(exc).__name__
    return JSONResponse({"detail": str(exc), "code": code, "message": message},
                        status_code=400)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _out(container: Container, device: Device, view: OrderView) -> KioskOrderOut:
    base = _order_out(view, container.settings.public_base_url)
    channel = container.channels.get(view.channel)
    open_code = view.action.get("kind") == "code_url" and view.status in ("created", "pending")
    qr = f"/kiosk/{device.device_id}/orders/{view.order_no}/qr.svg" if open_code else ""
    return KioskOrderOut(**base.model_dump(), qr=qr,
                         takes_code=bool(channel is not None and takes_payment_code(channel)))


@api.post("/orders", status_code=201)
def create_order(device_id: str, body: KioskOrderIn, request: Request, response: Response,
                 container: ContainerDep,
                 idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
                 ) -> KioskOrderOut:
    """The order for every open bill of the account, on the enabled channel, as a Native
    code; the same key resumes the same order (after a network cut)."""
    device = _device(container, device_id)
    if not idempotency_key or len(idempotency_key) > 200:
        raise InvalidInput(key="err.api.idempotency_key")
    biller = _offered(container, device, body.biller.strip().upper())
    channels = enabled_channels(container)
    if not channels:
        raise NoChannel("no payment channel is enabled")
    view = container.payments.create_order(CreateOrder(
        idempotency_key=f"kiosk:{device.device_id}:{idempotency_key}", biller=biller.code,
        account=normalize_account(body.account), channel=channels[0], mode="native",
        client_ip=client_ip(request)))  # no payer: a terminal remembers nobody's accounts
    _kiosk_orders(container).record(view.order_no, device.device_id, _now())
    response.status_code = 201 if view.new else 200
    return _out(container, device, view)


@api.get("/orders/{order_no}")
def get_order(device_id: str, order_no: str, container: ContainerDep) -> KioskOrderOut:
    """The order as the server has it. The first poll that sees it paid (or posted) or
    failed reports that to the device's payment-failure count, once per order."""
    device = _device(container, device_id)
    view = _own_order(container, device, order_no)
    if view.status in SETTLED_OK or view.status == "failed":
        ok = view.status in SETTLED_OK
        if _kiosk_orders(container).claim_outcome(view.order_no, ok=ok, now=_now()):
            container.devices.payment_outcome(device.device_id, ok=ok)
    return _out(container, device, view)


def _receipt_limiter(container: Container) -> RateLimiter:
    return RateLimiter(container.limit_store, name="kiosk_receipt", limit=RECEIPTS_PER_ORDER,
                       window_s=3600)


@api.post("/orders/{order_no}/receipt")
def send_receipt(device_id: str, order_no: str, body: ReceiptIn, request: Request,
                 container: ContainerDep) -> JSONResponse:
    """Queue the receipt of a paid order to a phone (SMS) or an e-mail address."""
    device = _device(container, device_id)
    lang = request_lang(request)
    _own_order(container, device, order_no)
    to = _receipt_address(body.to)
    receipt = load_receipt(container.read_uow_factory(), order_no)
    if receipt is None or not receipt.is_paid:
        raise ReceiptRefused(f"{order_no} is not paid")
    limiter = _receipt_limiter(container)
    wait = limiter.retry_after(order_no, "kiosk")
    if wait:
        return JSONResponse({"detail": "too many receipts for this order",
                             "code": "too_many_receipts",
                             "message": translate(lang, "kiosk.ui.receipt_limit",
                                                  minutes=(wait + 59) // 60)}, status_code=429)
    link = f"{container.settings.public_base_url}/receipt/{receipt.order_no}"
    name = receipt.biller_name
    amount = f"¥{receipt.amount_fen // 100}.{receipt.amount_fen % 100:02d}"
    text = (f"【缴费凭证】{name} 户号 {receipt.account} 已缴 {amount}，"
            f"订单号 {receipt.order_no}。电子凭证：{link}")
    with container.uow_factory() as uow:
        uow.messages.add(Message(id=None, kind="receipt", to=to,
                                 subject=f"缴费凭证 {name} {receipt.account} {amount}",
                                 body=text, created_at=_now()))
        uow.commit()
    limiter.record(order_no, "kiosk")
    shown = mask_phone(to) if "@" not in to else to[:1] + "***" + to[to.index("@"):]
    return JSONResponse({"queued": True, "to": shown,
                         "message": translate(lang, "kiosk.ui.receipt_sent", to=shown)})


def _receipt_address(raw: str) -> str:
    """A mainland mobile number, or an e-mail address (name@domain.tld)."""
    text = raw.strip()
    if "@" in text:
        local, _, domain = text.partition("@")
        if local and "." in domain and " " not in text and len(text) <= 120 \
                and not domain.startswith(".") and not domain.endswith("."):
            return text.lower()
        raise InvalidInput(key="err.kiosk.bad_address")
    try:
        return sms.normalize_phone(text)
    except sms.InvalidPhone as exc:
        raise InvalidInput(key="err.kiosk.bad_address") from exc


router.include_router(api)
