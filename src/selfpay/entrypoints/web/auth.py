"""Staff sign-in: the login form, logout, the session; failed logins are rate limited
(adapters/ratelimit.py, shared by all processes)."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.adapters.ratelimit import RateLimiter
from selfpay.bootstrap import Container
from selfpay.entrypoints.web.deps import (
    ContainerDep,
    CsrfChecked,
    LoginRequired,
    client_ip,
    flash,
    get_current_user,
    render,
)
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.services import audit, users

router = APIRouter(prefix="/admin", include_in_schema=False)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def record_audit(
    container: Container, request: Request, *, actor: str, action: str, target: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    with container.uow_factory() as uow:
        audit.record(
            uow, actor=actor, action=action, target=target, detail=detail or {},
            ip=client_ip(request), now=utcnow(),
        )
        uow.commit()


def _safe_next(raw: str) -> str:
    # Only paths inside the console: never another host ("//evil", "/\\evil").
    if raw.startswith("/admin") and not raw.startswith(("//", "/\\")) and "\\" not in raw:
        return raw
    return "/admin"


def _login_page(
    request: Request, *, next_url: str, username: str = "", error: str = "", status: int = 200
) -> Response:
    return render(
        request, "admin/login.html",
        {"next": next_url, "username": username, "error": error},
        status_code=status,
    )


@router.get("/login", name="login")
def login_form(request: Request, next: str = "/admin") -> Response:
    if request.session.get("user"):
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login", dependencies=[CsrfChecked])
def login(
    request: Request,
    container: ContainerDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form()] = "/admin",
) -> Response:
    lang = request_lang(request)
    limiter: RateLimiter = request.app.state.login_limiter
    ip = client_ip(request)
    username = username.strip()
    next_url = _safe_next(next)
    wait = limiter.retry_after(username, ip)
    if wait:
        record_audit(container, request, actor=username or "-", action="user.login.blocked",
                     detail={"retry_after_s": wait})
        return _login_page(
            request, next_url=next_url, username=username, status=429,
            error=translate(lang, "login.too_many", minutes=(wait + 59) // 60),
        )
    user = users.authenticate(container.uow_factory(), container.hasher, username, password)
    if user is None:
        limiter.record(username, ip)
        record_audit(container, request, actor=username or "-", action="user.login.failed")
        return _login_page(
            request, next_url=next_url, username=username, status=401,
            error=translate(lang, "login.failed"),
        )
    limiter.reset(username, ip)
    # A new session on every sign-in: nothing planted before login survives it. It is
    # recorded on the server too, so that logging out ends it for every copy of the cookie.
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    with container.uow_factory() as uow:
        uow.staff_sessions.add(sid, user.username, now=now, expires_at=now + dt.timedelta(
            seconds=container.settings.session_max_age_s))
        uow.commit()
    request.session.clear()
    request.session.update(
        {"user": user.username, "role": user.role, "csrf": new_token(),
         "sid": sid, "login_at": int(time.time())}
    )
    record_audit(container, request, actor=user.username, action="user.login",
                 detail={"role": user.role})
    return RedirectResponse(next_url, status_code=303)


@router.post("/logout", name="logout", dependencies=[CsrfChecked])
def logout(request: Request, container: ContainerDep) -> Response:
    try:
        user = get_current_user(request, container)
    except LoginRequired:  # an expired session logs out all the same
        user = None
    sid = request.session.get("sid")
    if isinstance(sid, str) and sid:
        with container.uow_factory() as uow:
            uow.staff_sessions.end(sid, utcnow())
            uow.commit()
    if user is not None:
        record_audit(container, request, actor=user.username, action="user.logout")
    request.session.clear()
    flash(request, translate(request_lang(request), "login.logged_out"))
    return RedirectResponse("/admin/login", status_code=303)
