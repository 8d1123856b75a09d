"""The audit log, filtered by actor and action, in words (audit_text.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.audit_text import ACTIONS, AREAS
from selfpay.entrypoints.web.deps import Auditor, ContainerDep, render

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("/audit", name="audit")
def audit_log(
    request: Request, container: ContainerDep, user: Auditor, actor: str = "",
    action: str = "", page: int = 1,
) -> Response:
    actor, action = actor.strip()[:64], action.strip()[:64]
    page = max(page, 1)
    with container.uow_factory() as uow:
        result = uow.audit.list(actor=actor, action=action, limit=PAGE_SIZE,
                                offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/audit.html", {
        "items": result.items, "pager": pages(result.total, page), "actor": actor,
        "action": action, "actions": ACTIONS, "areas": AREAS,
    })
