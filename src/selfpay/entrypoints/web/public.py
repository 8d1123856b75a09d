"""The page a scanned code opens: /q/<biller>/<account>/<tag> (and /Q/..., as printed).

A code that does not verify gets a 400 page that says only that; no lookup is made. A
code of a disabled biller gets a 410 page saying that this service is not offered here any
more. A valid one shows the masked holder, the open bills (all chosen; the customer may untick
some) with the total, and the pay button. Its script (static/pay.js) creates the order
through POST /api/v1/orders with an Idempotency-Key kept per intent in sessionStorage,
then follows what the channel needs (sandbox cashier, WeChat JSAPI, or a Native code)
to the status page /pay/<order no>. Pages for paying, looking up, receipts: pay.py,
lookup.py, receipt.py (their routers hang off this one)."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.domain.errors import AccountNotFound, InvalidCode
from selfpay.domain.qrcodes import verify_parts
from selfpay.entrypoints.web.deps import ContainerDep, render, site_today
from selfpay.entrypoints.web.i18n import request_lang
from selfpay.entrypoints.web.lookup import router as lookup_router
from selfpay.entrypoints.web.pay import (
    enabled_channels,
    oauth_channel,
    pay_strings,
    wechat_openid,
)
from selfpay.entrypoints.web.pay import router as pay_router
from selfpay.entrypoints.web.receipt import router as receipt_router
from selfpay.entrypoints.web.work_orders import my_tickets, services_of
from selfpay.services.ports import BillingSystemError

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

# The URL holds the code's MAC: keep it out of caches, referrers and search engines.
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Robots-Tag": "noindex, nofollow"}


def _page(request: Request, name: str, context: dict[str, object], status: int) -> Response:
    response = render(request, name, context, status_code=status)
    response.headers.update(PRIVATE)
    return response


@router.get("/q/{biller}/{account}/{tag}", name="public_code")
@router.get("/Q/{biller}/{account}/{tag}")
def code_page(request: Request, biller: str, account: str, tag: str,
              container: ContainerDep) -> Response:
    try:
        ref = verify_parts(container.keyring, biller, account, tag)
    except InvalidCode as exc:
        log.info("refused QR code %s/%s: %s", biller[:8], account[:32], exc)
        return _page(request, "public/invalid.html", {}, 400)
    with container.read_uow_factory() as uow:
        known = uow.billers.get(ref.biller)
    lang = request_lang(request)
    biller_name = ref.biller
    if known is not None:
        biller_name = (known.name_en or known.name) if lang == "en" else known.name
    base: dict[str, object] = {
        "biller_code": ref.biller, "biller_name": biller_name, "account": ref.account,
    }
    if known is not None and not known.enabled:
        # 410 Gone: the code is genuine, but its service is offered here no more
        return _page(request, "public/biller_disabled.html", base, 410)
    try:
        summary = container.billing.account_summary(ref.biller, ref.account)
    except AccountNotFound:
        return _page(request, "public/not_found.html", {
            **base, "zero_example": zero_example(ref.account),
            "lookup_url": "/lookup?" + urlencode({"biller": ref.biller, "account": ref.account}),
        }, 404)
    except BillingSystemError:
        log.warning("billing system unavailable for %s/%s", ref.biller, ref.account)
        return _page(request, "public/unavailable.html", base, 503)
    with container.read_uow_factory() as uow:
        # Bills of orders that are paid but not yet posted are on their way: not again.
        in_flight = uow.orders.paid_bill_ids(ref.biller, ref.account)
    bills = [b for b in summary.open_bills if b.id not in in_flight]
    channels = enabled_channels(container)
    config = {
        "biller": ref.biller, "account": ref.account,
        "api": "/api/v1/orders",
        "channels": channels,
        "openid": bool(wechat_openid(container.settings, request)),
        "oauth": oauth_channel(container) is not None,
        "oauth_start": "/wechat/oauth/start?next=",
        "here": request.url.path,
        "wx_failed": request.query_params.get("wx") == "0",
        "t": pay_strings(request_lang(request)),
    }
    today = site_today(request)
    return _page(request, "public/account.html", {
        **base, "services": services_of(container, lang, ref.biller, ref.account, tag),
        "tickets": my_tickets(container, request, ref.biller, ref.account),
        "summary": summary, "bills": bills, "in_flight": len(in_flight),
        # newest first; with nothing owed, its first line is the receipt to show
        "history": container.history.recent(ref.biller, ref.account),
        "overdue": {b.id for b in bills if b.is_overdue(today)},
        "total_fen": sum(b.outstanding_fen for b in bills),
        "can_pay": bool(bills) and bool(channels), "config": json.dumps(config),
    }, 200)


def zero_example(account: str) -> str:
    """For an all-digit number that is not found: the same number with two leading zeros,
    to show that zeros count ("12345678" -> "0012345678"); "" for other numbers."""
    if account.isdigit() and len(account) <= 30:
        return "00" + account
    return ""


for sub in (pay_router, lookup_router, receipt_router):
    router.include_router(sub)
