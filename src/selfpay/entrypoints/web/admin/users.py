"""Staff users (admin only): the list and a form to add one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.domain.errors import InvalidInput
from selfpay.domain.ledger_errors import UsernameTaken
from selfpay.entrypoints.web.auth import record_audit, utcnow
from selfpay.entrypoints.web.deps import ROLES, Admin, ContainerDep, CsrfChecked, flash, render
from selfpay.entrypoints.web.i18n import error_text, request_lang, translate
from selfpay.services import users as user_service

router = APIRouter(prefix="/admin", include_in_schema=False)


def _page(request: Request, container: ContainerDep, *, error: str = "", form: dict[str, str]
          | None = None, status: int = 200) -> Response:
    with container.uow_factory() as uow:
        staff = uow.users.list()
    return render(request, "admin/users.html", {
        "staff": staff, "role_choices": ROLES, "error": error,
        "form": form or {"username": "", "role": "operator"},
    }, status_code=status)


@router.get("/users", name="users")
def users_page(request: Request, container: ContainerDep, user: Admin) -> Response:
    return _page(request, container)


@router.post("/users", dependencies=[CsrfChecked])
def add_user(
    request: Request,
    container: ContainerDep,
    user: Admin,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    role: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    try:
        created = user_service.create_user(
            container.uow_factory(), container.hasher, username=username, password=password,
            role=role, now=utcnow(),
        )
    except (InvalidInput, UsernameTaken) as exc:
        return _page(request, container, error=error_text(exc, request_lang(request)),
                     form={"username": username, "role": role}, status=400)
    record_audit(container, request, actor=user.username, action="user.create",
                 target=created.username, detail={"role": created.role})
    message = translate(request_lang(request), "users.created_flash", username=created.username)
    flash(request, message, "success")
    return RedirectResponse("/admin/users", status_code=303)
