"""The Notifier outbox for staff: SMS codes, receipts and alerts, newest first.

Every role may look, and no role sees an SMS code: the body of an sms_code message is
stored masked (the code travels sealed, for the notifier only), and is masked again here
for rows that older versions wrote in clear. Where SMS go (SELFPAY_SMS_GATEWAY) is said
on the page: with `outbox` they reach no phone, with `terminal` (the demo) they are
printed where the process runs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.deps import ContainerDep, Viewer, render
from selfpay.services.lookup import mask_codes
from selfpay.services.ports import Message

router = APIRouter(prefix="/admin", include_in_schema=False)
KINDS = ("sms_code", "receipt", "alert")


def shown_body(message: Message) -> str:
    """What staff may read of a message."""
    return mask_codes(message.body) if message.kind == "sms_code" else message.body


@router.get("/messages", name="messages")
def messages(request: Request, container: ContainerDep, user: Viewer, kind: str = "",
             page: int = 1) -> Response:
    kind = kind if kind in KINDS else ""
    page = max(page, 1)
    with container.uow_factory() as uow:
        result = uow.messages.list(kind=kind, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/messages.html", {
        "items": result.items, "bodies": [shown_body(m) for m in result.items],
        "pager": pages(result.total, page), "kind": kind, "kinds": KINDS,
        "sms_gateway": container.settings.sms_gateway,
    })
