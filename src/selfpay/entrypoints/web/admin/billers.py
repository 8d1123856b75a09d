"""The biller registry (admin only): the list in display order, a form to add one, an
edit form per biller, and enable / disable. Every change is audited by the use case
(services/billers.py) in its own transaction; bad input shows the error and changes
nothing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.domain.accounts import BILLER_KINDS, DEFAULT_ROUTE, Biller
from selfpay.domain.errors import DomainError, InvalidInput
from selfpay.entrypoints.web.auth import utcnow
from selfpay.entrypoints.web.deps import Admin, ContainerDep, CsrfChecked, client_ip, flash, render
from selfpay.entrypoints.web.i18n import error_text, request_lang, translate
from selfpay.services import billers as service

router = APIRouter(prefix="/admin", include_in_schema=False)

Text = Annotated[str, Form(max_length=256)]
NEW = {"code": "", "name": "", "name_en": "", "kind": "other", "icon": "", "order": "100",
       "elderly": "", "steps": "", "route": DEFAULT_ROUTE}


def _form_of(b: Biller) -> dict[str, str]:
    return {"code": b.code, "name": b.name, "name_en": b.name_en, "kind": b.kind,
            "icon": b.icon, "order": str(b.display_order), "elderly": "on" if b.elderly else "",
            "steps": ",".join(b.steps), "route": b.route}


def _page(request: Request, container: ContainerDep, *, error: str = "",
          error_code: str = "", form: dict[str, str] | None = None,
          status: int = 200) -> Response:
    """The page; after a refused edit, `error_code` names the biller whose form keeps
    what was typed (`form`); after a refused add, error_code is "" and `form` the add
    form's values."""
    billers = service.list_billers(container.uow_factory())
    forms = {b.code: _form_of(b) for b in billers}
    if error_code and form is not None:
        forms[error_code] = form
    return render(request, "admin/billers.html", {
        "billers": billers, "forms": forms, "new": form if not error_code and form else NEW,
        "error": error, "error_code": error_code, "kinds": BILLER_KINDS,
        "icons": service.ICONS, "steps_known": service.KIOSK_STEPS,
        "routes": container.settings.route_names,
    }, status_code=status)


@router.get("/billers", name="billers")
def billers_page(request: Request, container: ContainerDep, user: Admin) -> Response:
    return _page(request, container)


def _fields(values: dict[str, str]) -> dict[str, Any]:
    """The use case's keyword arguments from the form (InvalidInput for a bad order)."""
    return {"name": values["name"], "name_en": values["name_en"], "kind": values["kind"],
            "icon": values["icon"], "display_order": service.parse_order(values["order"]),
            "elderly": bool(values["elderly"]), "steps": service.parse_steps(values["steps"]),
            "route": values["route"]}


@router.post("/billers", dependencies=[CsrfChecked])
def add_biller(
    request: Request, container: ContainerDep, user: Admin, code: Text = "",
    name: Text = "", name_en: Text = "", kind: Text = "", icon: Text = "", order: Text = "",
    elderly: Text = "", steps: Text = "", route: Text = "",
) -> Response:
    values = {"code": code, "name": name, "name_en": name_en, "kind": kind, "icon": icon,
              "order": order, "elderly": elderly, "steps": steps, "route": route}
    try:
        made = service.add_biller(
            container.uow_factory(), code=code, routes=container.settings.route_names,
            actor=user.username, ip=client_ip(request), now=utcnow(), **_fields(values))
    except InvalidInput as exc:
        return _page(request, container, error=error_text(exc, request_lang(request)),
                     form=values, status=400)
    flash(request, translate(request_lang(request), "billers.added_flash", code=made.code,
                             name=made.name), "success")
    return RedirectResponse("/admin/billers", status_code=303)


@router.post("/billers/{code}", dependencies=[CsrfChecked])
def edit_biller(
    request: Request, container: ContainerDep, user: Admin, code: str,
    name: Text = "", name_en: Text = "", kind: Text = "", icon: Text = "", order: Text = "",
    elderly: Text = "", steps: Text = "", route: Text = "",
) -> Response:
    values = {"code": code, "name": name, "name_en": name_en, "kind": kind, "icon": icon,
              "order": order, "elderly": elderly, "steps": steps, "route": route}
    try:
        saved = service.update_biller(
            container.uow_factory(), code, routes=container.settings.route_names,
            actor=user.username, ip=client_ip(request), now=utcnow(), **_fields(values))
    except DomainError as exc:
        return _page(request, container, error=error_text(exc, request_lang(request)),
                     error_code=code, form=values,
                     status=404 if not isinstance(exc, InvalidInput) else 400)
    flash(request, translate(request_lang(request), "billers.saved_flash", code=saved.code),
          "success")
    return RedirectResponse("/admin/billers", status_code=303)


@router.post("/billers/{code}/disable", dependencies=[CsrfChecked])
def disable_biller(request: Request, container: ContainerDep, user: Admin,
                   code: str) -> Response:
    return _set_enabled(request, container, user.username, code, False)


@router.post("/billers/{code}/enable", dependencies=[CsrfChecked])
def enable_biller(request: Request, container: ContainerDep, user: Admin,
                  code: str) -> Response:
    return _set_enabled(request, container, user.username, code, True)


def _set_enabled(request: Request, container: ContainerDep, actor: str, code: str,
                 enabled: bool) -> Response:
    use_case = service.enable_biller if enabled else service.disable_biller
    try:
        b = use_case(container.uow_factory(), code, actor=actor, ip=client_ip(request),
                     now=utcnow())
    except DomainError as exc:
        return _page(request, container, error=error_text(exc, request_lang(request)), status=404)
    key = "billers.enabled_flash" if enabled else "billers.disabled_flash"
    flash(request, translate(request_lang(request), key, code=b.code, name=b.name), "success")
    return RedirectResponse("/admin/billers", status_code=303)
