"""Requests per minute per client and route group (SELFPAY_RATE_LIMIT_PER_MINUTE, and
what staff set at /admin/rate-limits), as a pure ASGI middleware in front of all the
others: a refused request costs one count in the limit store and nothing else.

Payment platforms' callbacks (/api/v1/notify/...) are never limited: they carry money.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import anyio.to_thread
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from selfpay.adapters.ratelimit import RequestBudget
from selfpay.config import IPNetwork
from selfpay.entrypoints.web.deps import forwarded_client
from selfpay.entrypoints.web.i18n import COOKIE, pick_lang, translate
from selfpay.services.rate_limits import LimitTable

EXEMPT = ("/healthz", "/readyz", "/metrics", "/static", "/api/v1/notify", "/sandbox")
GROUP_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/api/v1", "api"),
    ("/admin", "admin"),
    ("/kiosk", "kiosk"),
    *((p, "pages") for p in ("/q", "/Q", "/pay", "/receipt", "/lookup", "/my",
                             "/workorders", "/wechat")),
)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def group_of(path: str) -> str | None:
    """The route group a path is counted in; None: not limited."""
    if any(_under(path, p) for p in EXEMPT):
        return None
    for prefix, group in GROUP_PREFIXES:
        if _under(path, prefix):
            return group
    return None


def bare_error_page(lang: str, status: int, message: str) -> str:
    """An error page that needs no session or template: for refusals made before the
    app runs (body too large, too many requests)."""
    return (
        f'<!doctype html><html lang="{lang}"><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{status}</title><body style=\"font-family:sans-serif;padding:2rem\">"
        f"<h1>{status}</h1><p>{html.escape(message)}</p>"
        f'<p><a href="/">{html.escape(translate(lang, "nav.home"))}'
        "</a></p></body></html>"
    )


class RequestRateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, budget: RequestBudget, limits: LimitTable,
                 trusted_proxies: Sequence[IPNetwork], default_lang: str) -> None:
        self.app = app
        self.budget = budget
        self.limits = limits
        self.trusted_proxies = tuple(trusted_proxies)
        self.default_lang = default_lang

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        group = group_of(scope["path"])
        if group is None:
            await self.app(scope, receive, send)
            return
        if self.limits.stale:
            await anyio.to_thread.run_sync(self.limits.refresh)
        per_minute = self.limits.per_minute(group)
        if per_minute <= 0:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = client[0] if client else ""
        forwarded = [v.decode("latin-1") for k, v in scope["headers"]
                     if k == b"x-forwarded-for"]
        ip = forwarded_client(peer, forwarded, self.trusted_proxies)
        if self.budget.blocking:  # network I/O: off the event loop
            wait = await anyio.to_thread.run_sync(self.budget.spend, group, ip, per_minute)
        else:
            wait = self.budget.spend(group, ip, per_minute)
        if not wait:
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, send, wait)

    async def _refuse(self, scope: Scope, send: Send, wait: int) -> None:
        conn = HTTPConnection(scope)
        lang = (pick_lang(conn.query_params.get("lang")) or pick_lang(conn.cookies.get(COOKIE))
                or self.default_lang)
        message = translate(lang, "error.rate_limited", seconds=wait)
        if scope["path"].startswith("/api/") or "application/json" in conn.headers.get(
                "accept", ""):
            body = json.dumps({"detail": message}, ensure_ascii=False).encode("utf-8")
            media = b"application/json"
        else:
            body = bare_error_page(lang, 429, message).encode("utf-8")
            media = b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", media), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(wait).encode()), (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body})
