"""Other services on the page a code opens: report a meter fault, an outage, a change of
contact details. Each becomes a work order (services/work_orders.py) that the
work-order worker sends to the billing system; its status comes back to the customer's
pages: "my reports" on /q/... and /workorders/<ticket no>.

Routes:
  GET/POST /q/<biller>/<account>/<tag>/services/<kind>   the form (the code's MAC checked)
  GET      /workorders/<ticket no>                        the ticket's status

Why the public form cannot be forged cross-site. There is no staff session here, so
the console's session CSRF token does not apply; a cookie with SameSite plus an Origin
check alone is not enough either: WeChat's and older Android WebViews do not all honour
SameSite, and some send no Origin on a form POST. So the form carries a per-page token:
a signed, time-limited (2 h) value over the account and a random nonce that is also in
an HttpOnly, SameSite=Lax cookie of this browser (signed double submit). A page on
another site can neither read the token (same-origin policy) nor set the cookie, and a
token fetched by the attacker's own browser names another nonce. As a second layer a
POST whose Sec-Fetch-Site or Origin says it came from another site is refused (our
pages are no-referrer, so the browser sends `Origin: null` for their own posts: that
value proves nothing either way and is left to the token).

Which tickets a browser may list: only those it created, whose numbers it keeps in a
signed cookie (`selfpay_tickets`); a ticket page shows the description only to that
browser, and phones are always masked.

The app's worker thread sends them and fetches their news (when SELFPAY_RUN_WORKER).
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer

from selfpay.adapters.ratelimit import RateLimiter
from selfpay.adapters.worker_thread import WorkerThread
from selfpay.bootstrap import Container
from selfpay.domain.accounts import mask_phone
from selfpay.domain.errors import InvalidCode, InvalidInput
from selfpay.domain.qrcodes import verify_parts
from selfpay.domain.work_orders import WorkOrderKind, is_ticket_no
from selfpay.entrypoints.web.deps import ContainerDep, client_ip
from selfpay.entrypoints.web.i18n import catalog, request_lang, translate
from selfpay.entrypoints.web.pay import code_path, private_page
from selfpay.services.lookup import InvalidPhone
from selfpay.services.ports import WorkOrder
from selfpay.services.work_orders import ReportWorkOrder, TooManyWorkOrders

log = logging.getLogger(__name__)

TICKETS_COOKIE = "selfpay_tickets"
NONCE_COOKIE = "selfpay_form"
TOKEN_MAX_AGE_S = 2 * 3600
MAX_TICKETS = 20  # a browser remembers its newest reports


router = APIRouter(include_in_schema=False)


# --- labels -----------------------------------------------------------------------------

def kind_label(lang: str, kind: str, biller: str) -> str:
    """'停电报修' for ELEC, '停水报修' for WATER...: the wording of an outage depends on
    the biller; other kinds read the same everywhere."""
    specific = f"wo.kind.{kind}.{biller}"
    if specific in catalog(lang) or specific in catalog("zh-CN"):
        return translate(lang, specific)
    return translate(lang, f"wo.kind.{kind}")


def services_of(container: Container, lang: str, biller: str, account: str,
                tag: str) -> list[dict[str, str]]:
    """The other-services links of an account page."""
    if not container.work_orders.enabled:
        return []
    base = f"/q/{biller}/{account}/{tag}/services"
    return [{"kind": k.value, "label": kind_label(lang, k.value, biller),
             "hint": translate(lang, f"wo.hint.{k.value}"), "url": f"{base}/{k.value}"}
            for k in WorkOrderKind]


def ticket_view(order: WorkOrder, lang: str, *, own: bool) -> dict[str, Any]:
    return {
        "ticket_no": order.ticket_no, "kind": kind_label(lang, order.kind.value, order.biller),
        "status": order.status.value, "status_label": translate(lang, f"wo.status.{order.status}"),
        "created_at": order.created_at, "updated_at": order.updated_at,
        "phone": mask_phone(order.contact_phone), "note": order.note,
        "description": order.description if own else "", "biller": order.biller,
        "account": order.account, "url": f"/workorders/{order.ticket_no}",
    }


# --- cookies and the form token ---------------------------------------------------------

def _secret(container: Container) -> str:
    return container.settings.secret_key.get_secret_value()


def browser_tickets(container: Container, request: Request) -> list[str]:
    raw = request.cookies.get(TICKETS_COOKIE, "")
    if not raw:
        return []
    try:
        value = URLSafeSerializer(_secret(container), salt="work-orders").loads(raw)
    except BadSignature:
        return []
    if not isinstance(value, list):
        return []
    return [t for t in value if isinstance(t, str) and is_ticket_no(t)][:MAX_TICKETS]


def my_tickets(container: Container, request: Request, biller: str,
               account: str) -> list[dict[str, Any]]:
    """This browser's reports for one account (never anybody else's)."""
    held = browser_tickets(container, request)
    if not held:
        return []
    lang = request_lang(request)
    return [ticket_view(o, lang, own=True)
            for o in container.work_orders.of_tickets(held, biller=biller, account=account)]


def _remember(container: Container, request: Request, response: Response,
              ticket_no: str) -> None:
    held = [ticket_no, *(t for t in browser_tickets(container, request) if t != ticket_no)]
    response.set_cookie(
        TICKETS_COOKIE,
        URLSafeSerializer(_secret(container), salt="work-orders").dumps(held[:MAX_TICKETS]),
        max_age=container.settings.payer_cookie_max_age_s, path="/", httponly=True,
        samesite="lax", secure=container.settings.env == "production",
    )


def _token_serializer(container: Container) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(container), salt="work-order-form")


def form_token(container: Container, nonce: str, biller: str, account: str) -> str:
    return _token_serializer(container).dumps([nonce, biller, account])


def token_ok(container: Container, request: Request, token: str, biller: str,
             account: str) -> bool:
    nonce = request.cookies.get(NONCE_COOKIE, "")
    if not nonce or not token:
        return False
    try:
        value = _token_serializer(container).loads(token, max_age=TOKEN_MAX_AGE_S)
    except (BadSignature, SignatureExpired):
        return False
    return (isinstance(value, list) and len(value) == 3
            and secrets.compare_digest(str(value[0]), nonce)
            and value[1:] == [biller, account])


def same_site_request(container: Container, request: Request) -> bool:
    """False when the browser says the POST came from another site."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return False
    origin = request.headers.get("origin", "")
    if not origin or origin == "null":
        # Older browsers and some WebViews send none, and our own pages send "null":
        # they are Referrer-Policy: no-referrer (the URL holds the code's MAC), which
        # makes a browser hide the origin of their form posts. The token decides.
        return True
    allowed = {_origin(container.settings.public_base_url), _origin(str(request.base_url))}
    return origin.rstrip("/") in allowed


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.work_order_limiter
    return limiter


# --- pages ------------------------------------------------------------------------------

def _verified(container: Container, biller: str, account: str, tag: str) -> tuple[str, str]:
    ref = verify_parts(container.keyring, biller, account, tag)
    return ref.biller, ref.account


def _biller_name(container: Container, code: str, lang: str) -> str:
    with container.read_uow_factory() as uow:
        known = uow.billers.get(code)
    if known is None:
        return code
    return (known.name_en or known.name) if lang == "en" else known.name


def _form(request: Request, container: Container, *, biller: str, account: str, tag: str,
          kind: WorkOrderKind, status: int = 200, **values: Any) -> Response:
    lang = request_lang(request)
    nonce = request.cookies.get(NONCE_COOKIE, "") or secrets.token_urlsafe(18)
    ctx: dict[str, Any] = {
        "biller_code": biller, "biller_name": _biller_name(container, biller, lang),
        "account": account, "kind": kind.value,
        "kind_label": kind_label(lang, kind.value, biller),
        "hint": translate(lang, f"wo.hint.{kind.value}"),
        "back": f"/q/{biller}/{account}/{tag}", "token": form_token(container, nonce, biller,
                                                                    account),
        "description": "", "phone": "", "errors": {}, "error": "",
    }
    ctx.update(values)
    response = private_page(request, "public/service_form.html", ctx, status)
    if request.cookies.get(NONCE_COOKIE, "") != nonce:
        response.set_cookie(NONCE_COOKIE, nonce, max_age=TOKEN_MAX_AGE_S, path="/",
                            httponly=True, samesite="lax",
                            secure=container.settings.env == "production")
    return response


def _no_such_service(request: Request) -> Response:
    lang = request_lang(request)
    return private_page(request, "public/message.html", {
        "title": translate(lang, "wo.no_service_title"),
        "text": translate(lang, "wo.no_service_text"), "link": ""}, 404)


def _kind_or_none(kind: str) -> WorkOrderKind | None:
    try:
        return WorkOrderKind(kind)
    except ValueError:
        return None


@router.get("/q/{biller}/{account}/{tag}/services/{kind}", name="work_order_form")
@router.get("/Q/{biller}/{account}/{tag}/services/{kind}")
def work_order_form(request: Request, biller: str, account: str, tag: str, kind: str,
                    container: ContainerDep) -> Response:
    chosen = _kind_or_none(kind)
    try:
        code, number = _verified(container, biller, account, tag)
    except InvalidCode:
        return private_page(request, "public/invalid.html", {}, 400)
    if chosen is None or not container.work_orders.enabled:
        return _no_such_service(request)
    return _form(request, container, biller=code, account=number, tag=tag, kind=chosen)


@router.post("/q/{biller}/{account}/{tag}/services/{kind}")
@router.post("/Q/{biller}/{account}/{tag}/services/{kind}")
def report_work_order(
    request: Request, biller: str, account: str, tag: str, kind: str,
    container: ContainerDep,
    description: Annotated[str, Form(max_length=2000)] = "",
    phone: Annotated[str, Form(max_length=32)] = "",
    token: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    lang = request_lang(request)
    chosen = _kind_or_none(kind)
    try:
        code, number = _verified(container, biller, account, tag)
    except InvalidCode:
        return private_page(request, "public/invalid.html", {}, 400)
    if chosen is None or not container.work_orders.enabled:
        return _no_such_service(request)
    if not same_site_request(container, request) or not token_ok(
            container, request, token, code, number):
        log.warning("work order form for %s/%s refused: bad token or origin", code, number)
        return _form(request, container, biller=code, account=number, tag=tag, kind=chosen,
                     status=403, description=description, phone=phone,
                     error=translate(lang, "wo.form_expired"))
    limiter = _limiter(request)
    key, ip = f"{code}/{number}", client_ip(request)
    values = {"description": description, "phone": phone}
    wait = limiter.retry_after(key, ip)
    if wait:
        return _form(request, container, biller=code, account=number, tag=tag, kind=chosen,
                     status=429, error=translate(lang, "wo.too_many",
                                                 minutes=(wait + 59) // 60), **values)
    try:
        order = container.work_orders.report(ReportWorkOrder(
            biller=code, account=number, kind=chosen.value, description=description,
            contact_phone=phone))
    except InvalidPhone:
        return _form(request, container, biller=code, account=number, tag=tag, kind=chosen,
                     status=400, errors={"phone": translate(lang, "lookup.bad_phone")},
                     **values)
    except TooManyWorkOrders:
        return _form(request, container, biller=code, account=number, tag=tag, kind=chosen,
                     status=429, error=translate(lang, "wo.too_many_today"), **values)
    except InvalidInput:
        return _form(request, container, biller=code, account=number, tag=tag, kind=chosen,
                     status=400, errors={"description": translate(lang, "wo.bad_description")},
                     **values)
    limiter.record(key, ip)
    worker: WorkerThread | None = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
    response = RedirectResponse(f"/workorders/{order.ticket_no}", status_code=303)
    _remember(container, request, response, order.ticket_no)
    return response


@router.get("/workorders/{ticket_no}", name="work_order_status")
def work_order_page(request: Request, ticket_no: str, container: ContainerDep) -> Response:
    lang = request_lang(request)
    order = container.work_orders.get(ticket_no) if is_ticket_no(ticket_no) else None
    if order is None:
        return private_page(request, "public/message.html", {
            "title": translate(lang, "wo.unknown_title"),
            "text": translate(lang, "wo.unknown_text"), "link": ""}, 404)
    own = order.ticket_no in browser_tickets(container, request)
    return private_page(request, "public/work_order.html", {
        "w": ticket_view(order, lang, own=own), "own": own,
        "biller_name": _biller_name(container, order.biller, lang),
        "back": code_path(container, order.biller, order.account) if own else "",
        "steps": ["queued", "accepted", "in_progress", "done"],
    })
