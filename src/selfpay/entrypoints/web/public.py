"""The page a scanned code opens: /q/<biller>/<account>/<tag> (and /Q/..., as printed).

A code that does not verify gets a 400 page that says only that; no lookup is made. A
valid one shows the masked holder, open bills and the total due, nothing more."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.domain.errors import AccountNotFound, InvalidCode
from selfpay.domain.qrcodes import verify_parts
from selfpay.entrypoints.web.deps import ContainerDep, render
from selfpay.entrypoints.web.i18n import request_lang
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
    with container.uow_factory() as uow:
        known = uow.billers.get(ref.biller)
    lang = request_lang(request)
    biller_name = ref.biller
    if known is not None:
        biller_name = (known.name_en or known.name) if lang == "en" else known.name
    base: dict[str, object] = {
        "biller_code": ref.biller, "biller_name": biller_name, "account": ref.account,
    }
    try:
        summary = container.billing.account_summary(ref.biller, ref.account)
    except AccountNotFound:
        return _page(request, "public/not_found.html", base, 404)
    except BillingSystemError:
        log.warning("billing system unavailable for %s/%s", ref.biller, ref.account)
        return _page(request, "public/unavailable.html", base, 503)
    return _page(request, "public/account.html", {**base, "summary": summary}, 200)
