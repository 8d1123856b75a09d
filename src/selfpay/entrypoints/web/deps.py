"""Thin FastAPI dependencies: the container, the signed-in staff user, roles, CSRF."""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from starlette.responses import HTMLResponse

from selfpay.bootstrap import Container
from selfpay.config import IPNetwork
from selfpay.services.ports import User

ADMIN, OPERATOR, AUDITOR = "admin", "operator", "auditor"
ROLES = (ADMIN, OPERATOR, AUDITOR)
# Who may do what; pages and the header nav both read these.
VIEW = frozenset(ROLES)  # dashboard, lists, batch and import history
GENERATE = frozenset({ADMIN, OPERATOR})  # codes, batches, imports, downloads of codes
AUDIT = frozenset({ADMIN, AUDITOR})  # the audit log
MANAGE_USERS = frozenset({ADMIN})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """No signed-in user: pages redirect to the login form, JSON answers 401."""


class Forbidden(Exception):
    """Signed in, but the role does not allow this page (or the CSRF check failed)."""

    def __init__(self, message_key: str = "error.forbidden") -> None:
        super().__init__(message_key)
        self.message_key = message_key


async def get_container(request: Request) -> Container:
    # async: FastAPI runs a plain `def` dependency on a worker thread, a hop that cost
    # more than the look-up itself on every request
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return addr


def forwarded_client(peer: str, forwarded_for: Iterable[str],
                     trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then
    X-Forwarded-For (all its headers, in order) is walked from the right, past trusted
    proxies, to the first address that is not one. A malformed entry ends the walk at the
    last good hop. Addresses come back in one spelling (a client cannot rotate the ways
    of writing one IPv6 address)."""
    hop = _address(peer)
    if hop is None:
        return peer  # not an IP (a Unix socket, a test client): as it is
    if not trusted:
        return str(hop)
    entries = [e for header in forwarded_for for e in header.split(",")]
    while any(hop in net for net in trusted) and entries:
        nxt = _address(entries.pop())
        if nxt is None:
            break
        hop = nxt
    return str(hop)


def client_ip(request: Request) -> str:
    """The address limits and the audit log count by (SELFPAY_TRUSTED_PROXIES)."""
    peer = request.client.host if request.client else ""
    trusted: Sequence[IPNetwork] = getattr(request.app.state, "trusted_proxies", ())
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted)


def get_current_user(request: Request, container: ContainerDep) -> User:
    """The staff user of the session, re-read on each request so that a deactivated
    account or a changed role takes effect at once, and only while the server still
    holds the sign-in (logging out ends it, for every copy of the cookie)."""
    session = request.session
    username = session.get("user")
    sid = session.get("sid")
    if not username or not isinstance(sid, str):
        raise LoginRequired()
    with container.read_uow_factory() as uow:
        user = uow.users.get(username)
        live = uow.staff_sessions.live_user(sid, dt.datetime.now(dt.UTC))
    if (user is None or not user.active or session.get("role") != user.role
            or live != user.username):
        session.clear()
        raise LoginRequired()
    request.state.user = user
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(allowed: frozenset[str]) -> Callable[..., Awaitable[User]]:
    async def check(user: CurrentUser) -> User:  # no I/O: no thread hop
        if user.role not in allowed:
            raise Forbidden()
        return user

    return check


Viewer = Annotated[User, Depends(require_role(VIEW))]
Operator = Annotated[User, Depends(require_role(GENERATE))]
Auditor = Annotated[User, Depends(require_role(AUDIT))]
Admin = Annotated[User, Depends(require_role(MANAGE_USERS))]


async def check_csrf(request: Request) -> None:
    """Every state-changing request must echo the session's token, as the hidden form
    field `csrf_token` or the `X-CSRF-Token` header. SameSite=Lax alone does not cover
    same-site attackers or older browsers."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf", "")
    sent = request.headers.get("x-csrf-token", "")
    if not sent:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()
            value = form.get("csrf_token")
            sent = value if isinstance(value, str) else ""
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise Forbidden("error.csrf")


CsrfChecked = Depends(check_csrf)


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    templates = request.app.state.templates
    ctx = {"user": getattr(request.state, "user", None), "roles": _role_flags(request)}
    ctx.update(context or {})
    response: HTMLResponse = templates.TemplateResponse(
        request, name, ctx, status_code=status_code
    )
    return response


def _role_flags(request: Request) -> dict[str, bool]:
    user: User | None = getattr(request.state, "user", None)
    role = user.role if user else ""
    return {
        "view": role in VIEW,
        "generate": role in GENERATE,
        "audit": role in AUDIT,
        "users": role in MANAGE_USERS,
    }


def site_today(request: Request) -> dt.date:
    """Today's date where the site is (Settings.timezone), by the app's clock (tests put
    their own in app.state.clock)."""
    clock: Callable[[], dt.datetime] | None = getattr(request.app.state, "clock", None)
    now = clock() if clock is not None else dt.datetime.now(dt.UTC)
    zone = ZoneInfo(request.app.state.container.settings.timezone)
    return now.astimezone(zone).date()


def flash(request: Request, message: str, level: str = "info") -> None:
    request.session["flash"] = [*request.session.get("flash", []), [level, message]]
