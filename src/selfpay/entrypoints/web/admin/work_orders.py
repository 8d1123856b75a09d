"""Work orders for staff: the DMZ's tickets with their status and delivery. When the
billing system is the built-in ledger in this database (the demo: in-process or over
the embedded bridge), operators can also act as billing-side staff and move a ticket
along there (in_progress / done / rejected); the worker then reads the new status
through the port and reports it back to the customer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.bootstrap import Container
from selfpay.domain.errors import InvalidInput, NotFound
from selfpay.domain.work_orders import WorkOrderStatus, is_ticket_no
from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.auth import record_audit
from selfpay.entrypoints.web.deps import (
    ContainerDep,
    CsrfChecked,
    Operator,
    Viewer,
    flash,
    render,
)
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.entrypoints.web.work_orders import kind_label
from selfpay.services.ledger_work_orders import REF_PREFIX
from selfpay.services.ports import LedgerWorkOrder

router = APIRouter(prefix="/admin", include_in_schema=False)
BILLING_SIDE_STATES = ("in_progress", "done", "rejected")


def ledger_desk(container: Container) -> LedgerBillingSystem | None:
    """The built-in ledger as billing-side staff reach it, when it lives in this
    database; None when the billing system is elsewhere (a broker, HTTP, a plug-in)."""
    s = container.settings
    if s.billing != "ledger" or s.transport == "stomp":
        return None
    return LedgerBillingSystem(container.uow_factory)


@router.get("/work-orders", name="work_orders")
def work_orders(request: Request, container: ContainerDep, user: Viewer, status: str = "",
                page: int = 1) -> Response:
    lang = request_lang(request)
    statuses = [s.value for s in WorkOrderStatus]
    status = status if status in statuses else ""
    page = max(page, 1)
    found = container.work_orders.search(status=status, limit=PAGE_SIZE,
                                         offset=(page - 1) * PAGE_SIZE)
    desk = ledger_desk(container)
    billing_side: dict[str, LedgerWorkOrder] = {}
    if desk is not None:
        with container.uow_factory() as uow:
            for order in found.items:
                stored = uow.ledger_work_orders.by_ticket(order.ticket_no)
                if stored is not None:
                    billing_side[order.ticket_no] = stored
    return render(request, "admin/work_orders.html", {
        "items": found.items, "pager": pages(found.total, page), "status": status,
        "statuses": statuses, "billing_side": billing_side, "desk": desk is not None,
        "next_states": BILLING_SIDE_STATES,
        "kinds": {o.ticket_no: kind_label(lang, o.kind.value, o.biller) for o in found.items},
    })


@router.post("/work-orders/{ticket_no}/billing-status", name="work_order_billing_status",
             dependencies=[CsrfChecked])
def set_billing_status(
    request: Request, ticket_no: str, container: ContainerDep, user: Operator,
    status: Annotated[str, Form(max_length=16)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    lang = request_lang(request)
    desk = ledger_desk(container)
    if desk is None or not is_ticket_no(ticket_no) or status not in BILLING_SIDE_STATES:
        flash(request, translate(lang, "wo.admin.cannot"), "error")
        return RedirectResponse("/admin/work-orders", status_code=303)
    with container.uow_factory() as uow:
        stored = uow.ledger_work_orders.by_ticket(ticket_no)
    try:
        if stored is None:
            raise NotFound(ticket_no)
        desk.set_work_order_status(f"{REF_PREFIX}{stored.id}", status, note=note)
    except (InvalidInput, NotFound):
        flash(request, translate(lang, "wo.admin.cannot"), "error")
        return RedirectResponse("/admin/work-orders", status_code=303)
    record_audit(container, request, actor=user.username, action="work_order.billing_status",
                 target=ticket_no, detail={"status": status})
    container.work_orders.nudge(ticket_no)  # ask for the news at the next round
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
    flash(request, translate(lang, "wo.admin.moved", ticket_no=ticket_no,
                             status=translate(lang, f"wo.status.{status}")), "info")
    return RedirectResponse("/admin/work-orders", status_code=303)
