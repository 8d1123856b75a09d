"""The REST API under /api/v1 (OpenAPI at /docs): accounts, orders, channel notifications.

Routes only translate HTTP to Payments calls and back. Errors are mapped to status codes
in one place, ApiRoute, which answers JSON `{"detail", "code", "message"}`: `detail` in
English for logs and developers, `message` for the person in front of the screen, in the
request's language (`?lang=`, the `lang` cookie, Settings.locale):

    IdempotencyConflict 422 · other InvalidInput 400 · NotFound 404 · BillerDisabled 410 ·
    OrderError (AttemptsExhausted, InvalidTransition, ...) 409 · PermissionDenied 403 ·
    other DomainError 409 · ChannelError, BillingSystemError 503 (retryable)

No endpoint accepts an amount: request bodies forbid unknown fields, and the server
computes every order's amount from the bills.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from selfpay.domain.errors import (
    BillerDisabled,
    DomainError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from selfpay.domain.orders import IdempotencyConflict, InvalidTransition, OrderError
from selfpay.entrypoints.web import pay
from selfpay.entrypoints.web.deps import ContainerDep, client_ip
from selfpay.entrypoints.web.i18n import DEFAULT_LANG, error_text, request_lang, translate
from selfpay.services.payments import (
    ChannelUnavailable,
    CreateOrder,
    OrderNotFound,
    OrderView,
    Payments,
    PreviousOrderOpen,
)
from selfpay.services.ports import BillingSystemError, ChannelError
from selfpay.services.receipts import load_receipt

log = logging.getLogger(__name__)
RETRY_AFTER_S = "2"


def _code(exc: BaseException) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def problem(exc: BaseException, lang: str = DEFAULT_LANG) -> JSONResponse:
    """The one mapping of core errors to HTTP."""
    headers: dict[str, str] = {}
    body: dict[str, Any] = {"detail": str(exc), "code": _code(exc),
                            "message": error_text(exc, lang)}
    if isinstance(exc, IdempotencyConflict):
        status = 422
    elif isinstance(exc, InvalidInput):
        status = 400
    elif isinstance(exc, NotFound):
        status = 404
    elif isinstance(exc, BillerDisabled):
        status = 410  # gone for good, unlike 404: clients may stop asking
    elif isinstance(exc, PermissionDenied):
        status = 403
    elif isinstance(exc, (OrderError, DomainError)):
        status = 409
    else:  # ChannelError, BillingSystemError: worth another try
        status = 503
        headers["Retry-After"] = RETRY_AFTER_S
        body["retryable"] = True
        body["message"] = translate(lang, "err.channel.unavailable")
        if isinstance(exc, ChannelUnavailable):
            body["order_no"] = exc.order_no
        elif isinstance(exc, PreviousOrderOpen):
            body["message"] = exc.localized(lang)
            body["order_no"] = exc.order_no
        elif not isinstance(exc, ChannelError):
            body["detail"] = "the billing system is unavailable, please try again"
            body["message"] = translate(lang, "err.billing.unavailable")
    return JSONResponse(body, status_code=status, headers=headers)


class ApiRoute(APIRoute):
    """Routes of this router answer core errors as JSON problems (the app's own handlers
    render HTML error pages for the customer and staff pages)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except (DomainError, ChannelError, BillingSystemError) as exc:
                if isinstance(exc, (ChannelError, BillingSystemError)):
                    log.warning("%s %s: %s", request.method, request.url.path, exc)
                return problem(exc, request_lang(request))

        return handler


router = APIRouter(prefix="/api/v1", route_class=ApiRoute)


async def get_payments(container: ContainerDep) -> Payments:  # no I/O: no thread hop
    return container.payments


PaymentsDep = Annotated[Payments, Depends(get_payments)]


class Problem(BaseModel):
    detail: str = Field(description="what went wrong, in English (for logs)")
    code: str
    message: str = Field(description="what to tell the user, in the request's language")
    retryable: bool = False
    order_no: str | None = None


class BillOut(BaseModel):
    id: int
    period: str
    amount_fen: int = Field(description="what is still owed on the bill, in fen")
    due_date: dt.date | None


class AccountOut(BaseModel):
    biller: str
    account: str
    holder: str = Field(description="the holder's name, masked")
    balance_fen: int = Field(description="prepaid balance kept on the account")
    open_bills: list[BillOut]
    total_due_fen: int


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    biller: str = Field(examples=["ELEC"])
    account: str = Field(examples=["0012345678"])
    channel: str = Field(examples=["sandbox"])
    bill_ids: list[StrictInt] = Field(default_factory=list,
                                      description="bills to pay; none: every open bill")
    mode: str = Field(default="", description="native | jsapi | h5 | cashier")
    email: str = Field(default="", description="where to send the receipt")


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str = ""


class OrderOut(BaseModel):
    order_no: str
    status: str = Field(description="created | pending | paid | posted | closed | failed")
    amount_fen: int
    biller: str
    account: str
    bill_ids: list[int]
    channel: str
    action: dict[str, Any] = Field(
        description='what the client needs to pay: {"kind": "code_url" | "jsapi" | '
                    '"redirect", ...}; empty once paid or when no attempt is open')
    attempts_left: int
    channel_txn_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    paid_at: dt.datetime | None
    posted_at: dt.datetime | None
    receipt_url: str | None
    links: dict[str, str]
    version: int = Field(description="grows with every change; pass it as `since` to wait "
                                     "for the next one")


def _order_out(order: OrderView, base: str) -> OrderOut:
    no = order.order_no
    receipt = f"{base}/receipt/{no}" if order.status in ("paid", "posted") else None
    links = {"self": f"/api/v1/orders/{no}", "retry": f"/api/v1/orders/{no}/retry"}
    if receipt:
        links["receipt"] = receipt
    return OrderOut(
        order_no=no, status=order.status, amount_fen=order.amount_fen, biller=order.biller,
        account=order.account, bill_ids=list(order.bill_ids), channel=order.channel,
        action=order.action, attempts_left=order.attempts_left,
        channel_txn_id=order.channel_txn_id, created_at=order.created_at,
        expires_at=order.expires_at, paid_at=order.paid_at, posted_at=order.posted_at,
        receipt_url=receipt, links=links, version=order.version,
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "bad input"},
    404: {"model": Problem, "description": "unknown account or order"},
    410: {"model": Problem, "description": "the biller is disabled: not offered any more"},
    503: {"model": Problem, "description": "billing system or channel unavailable; retry"},
}


@router.get("/billers/{biller}/accounts/{account}", response_model=AccountOut,
            tags=["accounts"], responses=ERRORS)
def get_account(biller: str, account: str, payments: PaymentsDep) -> AccountOut:
    """An account as the public sees it: masked holder, open bills, total due."""
    summary = payments.payable(biller, account)
    return AccountOut(
        biller=summary.biller, account=summary.account, holder=summary.masked_name,
        balance_fen=summary.balance_fen,
        open_bills=[BillOut(id=b.id or 0, period=b.period, amount_fen=b.outstanding_fen,
                            due_date=b.due_date) for b in summary.open_bills],
        total_due_fen=summary.total_due_fen,
    )


@router.post(
    "/orders", response_model=OrderOut, status_code=201, tags=["orders"],
    responses={**ERRORS, 200: {"model": OrderOut, "description": "replay of the same key"},
               422: {"description": "the Idempotency-Key was used with another body"}},
)
def create_order(
    body: OrderIn, request: Request, response: Response, payments: PaymentsDep,
    container: ContainerDep,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description="1-255 characters, one per payment intent; repeat it after a "
                    "network cut to resume the same order")] = None,
) -> OrderOut:
    """Create (or resume) an order: the server computes the amount from the bills."""
    if not idempotency_key:
        raise InvalidInput(key="err.api.idempotency_key")
    settings = container.settings
    payer, new_payer = pay.payer_for_order(settings, request)
    view = payments.create_order(CreateOrder(
        idempotency_key=idempotency_key, biller=body.biller, account=body.account,
        channel=body.channel, bill_ids=tuple(body.bill_ids), mode=body.mode,
        payer=payer, payer_openid=pay.wechat_openid(settings, request),
        email=body.email.strip(), client_ip=client_ip(request),
    ))
    if new_payer:  # remembered for "my accounts" once the payment goes through
        pay.set_payer_cookie(settings, response, payer)
    response.status_code = 201 if view.new else 200
    if view.new:
        response.headers["Location"] = f"/api/v1/orders/{view.order_no}"
    return _order_out(view, container.settings.public_base_url)


@router.post("/orders/{order_no}/retry", response_model=OrderOut, tags=["orders"],
             responses={**ERRORS, 409: {"model": Problem,
                                        "description": "attempts exhausted, order closed "
                                                       "or already paid"}})
def retry_order(order_no: str, request: Request, payments: PaymentsDep,
                container: ContainerDep, body: RetryIn | None = None) -> OrderOut:
    """A new payment attempt on the same order after a failed one (at most 3 fail)."""
    view = payments.retry(order_no, mode=body.mode if body else "",
                          payer_openid=pay.wechat_openid(container.settings, request),
                          client_ip=client_ip(request))
    return _order_out(view, container.settings.public_base_url)


class PaymentCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    auth_code: str = Field(min_length=1, max_length=64,
                           description="the payment code (付款码) the scanner read")


@router.post("/orders/{order_no}/payment-code", response_model=OrderOut, tags=["orders"],
             responses={**ERRORS, 409: {"model": Problem,
                                        "description": "paid, closed or attempts used up"}})
def pay_with_code(order_no: str, body: PaymentCodeIn, request: Request,
                  payments: PaymentsDep, container: ContainerDep) -> OrderOut:
    """Charge the customer's payment code, read by a terminal's scanner, as a new attempt
    on the order (channels that take payment codes: the sandbox). The answer is the
    order as the channel left it: paid, still pending (confirm on the phone), or a
    failed attempt to retry."""
    view = payments.pay_with_code(order_no, body.auth_code, client_ip=client_ip(request))
    return _order_out(view, container.settings.public_base_url)


MAX_WAIT_S = 25.0  # under every proxy's read timeout (nginx: 60 s)
FINAL = frozenset({"posted", "failed", "closed", "disputed"})


@router.get("/orders/{order_no}", response_model=OrderOut, tags=["orders"],
            responses=ERRORS)
async def get_order(
    order_no: str, request: Request, payments: PaymentsDep, container: ContainerDep,
    since: Annotated[int | None, Query(ge=0, description=(
        "the `version` the client has: wait until the order moves past it"))] = None,
    wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
        "with `since`: wait at most this long for a change (a long poll)"))] = 0,
) -> OrderOut:
    """The order's status; once paid, its receipt link. With `since` and `wait_s` the
    answer waits (up to 25 s) until the order changes, so that a status page asks once
    per change instead of once a second; it comes at once when the order has already
    moved on or is final."""
    base = container.settings.public_base_url
    view = await run_in_threadpool(payments.get, order_no)
    if since is None or wait_s <= 0:
        return _order_out(view, base)
    watch = getattr(request.app.state, "order_watch", None)
    deadline = time.monotonic() + wait_s
    while view.version <= since and view.status not in FINAL:
        left = deadline - time.monotonic()
        if left <= 0 or watch is None or await request.is_disconnected():
            break
        await watch.changed(view.order_no, left)
        view = await run_in_threadpool(payments.get, order_no)
    return _order_out(view, base)


class ReceiptLineOut(BaseModel):
    bill_id: int
    period: str
    amount_fen: int | None


class ReceiptOut(BaseModel):
    order_no: str
    status: str
    biller: str
    biller_name: str
    biller_name_en: str
    account: str
    masked_name: str
    lines: list[ReceiptLineOut]
    amount_fen: int
    channel: str
    channel_txn_id: str
    paid_at: dt.datetime | None
    posted_at: dt.datetime | None
    receipt_url: str


@router.get("/orders/{order_no}/receipt", response_model=ReceiptOut, tags=["orders"],
            responses={**ERRORS, 409: {"model": Problem, "description": "not paid (yet)"}})
def get_receipt(order_no: str, container: ContainerDep) -> Any:
    """The receipt of a paid order as data (a kiosk prints it): what the receipt page
    shows, no more (the holder masked). 404 for an unknown order, 409 before it is paid."""
    receipt = load_receipt(container.read_uow_factory(), order_no[:32])
    if receipt is None:
        raise OrderNotFound(f"no order {order_no[:32]}")
    if not receipt.is_paid:
        raise InvalidTransition(f"{receipt.order_no} is {receipt.status}: no receipt yet")
    return ReceiptOut(
        order_no=receipt.order_no, status=receipt.status, biller=receipt.biller,
        biller_name=receipt.biller_name, biller_name_en=receipt.biller_name_en,
        account=receipt.account, masked_name=receipt.masked_name,
        lines=[ReceiptLineOut(bill_id=x.bill_id, period=x.period, amount_fen=x.amount_fen)
               for x in receipt.lines],
        amount_fen=receipt.amount_fen, channel=receipt.channel,
        channel_txn_id=receipt.channel_txn_id, paid_at=receipt.paid_at,
        posted_at=receipt.posted_at,
        receipt_url=f"{container.settings.public_base_url}/receipt/{receipt.order_no}")


@router.post("/notify/{channel}", tags=["channels"], response_class=Response,
             responses={200: {"description": "the channel's own acknowledgement"},
                        404: {"model": Problem, "description": "no such channel"}})
async def notify(channel: str, request: Request, payments: PaymentsDep) -> Response:
    """A payment channel's notification. Verified over the raw body bytes; the answer
    is exactly what that channel expects."""
    if channel not in payments.channels:
        return JSONResponse({"detail": f"no channel {channel!r}", "code": "unknown_channel"},
                            status_code=404)
    raw = await request.body()
    answer = await run_in_threadpool(payments.handle_notification, channel, request.headers,
                                     raw)
    worker = getattr(request.app.state, "worker", None)
    if worker is not None and answer.status_code < 300:
        worker.wake()  # post it now rather than at the next round
    return Response(content=answer.body, status_code=answer.status_code,
                    media_type=answer.content_type or None)
