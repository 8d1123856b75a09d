"""Receipts: /receipt/<order no> (a page) and /receipt/<order no>.pdf.

The order number is unguessable (80 random bits): it is the capability to see the
receipt, which shows only what the account page shows (the holder masked). Unknown
numbers are 404; an order not yet paid gets a page that says so and links to its status.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.adapters.receipts import render_receipt_pdf
from selfpay.bootstrap import Container
from selfpay.entrypoints.web.deps import ContainerDep
from selfpay.entrypoints.web.i18n import request_lang
from selfpay.entrypoints.web.pay import ORDER_NO_RE, code_path, private_page
from selfpay.services.receipts import Receipt, load_receipt

router = APIRouter(include_in_schema=False)


def receipt_url(container: Container, order_no: str) -> str:
    return f"{container.settings.public_base_url}/receipt/{order_no}"


def _load(container: Container, order_no: str) -> Receipt | None:
    if not ORDER_NO_RE.match(order_no):
        return None
    return load_receipt(container.read_uow_factory(), order_no)


# Declared before /receipt/{order_no}: that pattern would also match "<no>.pdf".
@router.get("/receipt/{order_no}.pdf", name="receipt_pdf")
def receipt_pdf(request: Request, order_no: str, container: ContainerDep) -> Response:
    receipt = _load(container, order_no)
    if receipt is None:
        return private_page(request, "public/order_unknown.html", {}, 404)
    if not receipt.is_paid:
        return private_page(request, "public/receipt_unpaid.html", {"order_no": order_no}, 409)
    pdf = render_receipt_pdf(receipt, url=receipt_url(container, order_no),
                             timezone=container.settings.timezone)
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="receipt-{order_no}.pdf"',
        "Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow",
    })


@router.get("/receipt/{order_no}", name="receipt")
def receipt_page(request: Request, order_no: str, container: ContainerDep) -> Response:
    receipt = _load(container, order_no)
    if receipt is None:
        return private_page(request, "public/order_unknown.html", {}, 404)
    if not receipt.is_paid:
        return private_page(request, "public/receipt_unpaid.html", {"order_no": order_no}, 200)
    lang = request_lang(request)
    return private_page(request, "public/receipt.html", {
        "r": receipt,
        "biller_name": receipt.biller_name_en if lang == "en" else receipt.biller_name,
        "account_path": code_path(container, receipt.biller, receipt.account),
    })
