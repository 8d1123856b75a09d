"""The Notifier outbox for staff: SMS codes, receipts and alerts, newest first.

With the default outbox notifier nothing leaves the building: this page is where the
demo's SMS look-up codes are read. Every role may look."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.deps import ContainerDep, Viewer, render

router = APIRouter(prefix="/admin", include_in_schema=False)
KINDS = ("sms_code", "receipt", "alert")


@router.get("/messages", name="messages")
def messages(request: Request, container: ContainerDep, user: Viewer, kind: str = "",
             page: int = 1) -> Response:
    kind = kind if kind in KINDS else ""
    page = max(page, 1)
    with container.uow_factory() as uow:
        result = uow.messages.list(kind=kind, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/messages.html", {
        "items": result.items, "pager": pages(result.total, page), "kind": kind,
        "kinds": KINDS,
    })
