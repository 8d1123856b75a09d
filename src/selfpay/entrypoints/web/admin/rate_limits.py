"""Request limits per route group (admin only): the list, and a number per group that
every web process applies within 5 s, audited as `rate_limit.set`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.domain.errors import InvalidInput
from selfpay.entrypoints.web.auth import utcnow
from selfpay.entrypoints.web.deps import Admin, ContainerDep, CsrfChecked, client_ip, flash, render
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.services import rate_limits as service

router = APIRouter(prefix="/admin", include_in_schema=False)


def _page(request: Request, container: ContainerDep, *, error: str = "", group: str = "",
          value: str = "", status: int = 200) -> Response:
    limits = service.list_limits(container.uow_factory(),
                                 default=container.settings.rate_limit_per_minute)
    return render(request, "admin/rate_limits.html", {
        "limits": limits, "error": error, "error_group": group, "error_value": value,
        "max_per_minute": service.MAX_PER_MINUTE,
    }, status_code=status)


@router.get("/rate-limits", name="rate_limits")
def rate_limits_page(request: Request, container: ContainerDep, user: Admin) -> Response:
    return _page(request, container)


@router.post("/rate-limits", dependencies=[CsrfChecked])
def set_rate_limit(
    request: Request,
    container: ContainerDep,
    user: Admin,
    group: Annotated[str, Form(max_length=16)] = "",
    per_minute: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    lang = request_lang(request)
    raw = per_minute.strip()
    bad_number = translate(lang, "rate_limits.bad_number", max=service.MAX_PER_MINUTE)
    if group not in service.GROUPS:
        return _page(request, container, status=400, group=group, value=raw,
                     error=translate(lang, "rate_limits.unknown_group", group=group))
    if not raw.isascii() or not raw.isdigit():  # "-1", "1.5", "ten", "" and "１０"
        return _page(request, container, error=bad_number, group=group, value=raw,
                     status=400)
    try:
        old, new = service.set_limit(
            container.uow_factory(), group=group, per_minute=int(raw),
            default=container.settings.rate_limit_per_minute, actor=user.username,
            ip=client_ip(request), now=utcnow())
    except InvalidInput:
        return _page(request, container, error=bad_number, group=group, value=raw,
                     status=400)
    container.rate_limits.invalidate()  # this process at once; the others within 5 s
    flash(request, translate(lang, "rate_limits.saved_flash",
                             group=translate(lang, f"rate_limits.group.{group}"),
                             old=old, new=new), "success")
    return RedirectResponse("/admin/rate-limits", status_code=303)
