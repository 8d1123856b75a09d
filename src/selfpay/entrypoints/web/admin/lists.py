"""Read-only lists for staff: accounts and bills, with filters and pages."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.domain.accounts import BillStatus
from selfpay.entrypoints.web.admin.qr import billers_of
from selfpay.entrypoints.web.deps import ContainerDep, Viewer, render, site_today

router = APIRouter(prefix="/admin", include_in_schema=False)
PAGE_SIZE = 50


def pages(total: int, page: int, size: int = PAGE_SIZE) -> dict[str, int]:
    last = max(1, math.ceil(total / size))
    return {"page": min(max(page, 1), last), "last": last, "total": total, "size": size}


@router.get("/accounts", name="accounts")
def accounts(
    request: Request, container: ContainerDep, user: Viewer, q: str = "", biller: str = "",
    page: int = 1,
) -> Response:
    q, biller = q.strip()[:64], biller.strip().upper()[:8]
    page = max(page, 1)
    with container.uow_factory() as uow:
        result = uow.accounts.search(query=q, biller=biller, limit=PAGE_SIZE,
                                     offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/accounts.html", {
        "items": result.items, "pager": pages(result.total, page), "q": q, "biller": biller,
        "billers": billers_of(container, include_disabled=True),
    })


@router.get("/bills", name="bills")
def bills(
    request: Request, container: ContainerDep, user: Viewer, q: str = "", biller: str = "",
    status: str = "", page: int = 1,
) -> Response:
    q, biller = q.strip()[:64], biller.strip().upper()[:8]
    statuses = [s.value for s in BillStatus]
    status = status if status in statuses else ""
    page = max(page, 1)
    with container.uow_factory() as uow:
        result = uow.bills.search(query=q, biller=biller, status=status, limit=PAGE_SIZE,
                                  offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/bills.html", {
        "items": result.items, "pager": pages(result.total, page), "q": q, "biller": biller,
        "status": status, "statuses": statuses, "today": site_today(request),
        "billers": billers_of(container, include_disabled=True),
    })
