"""Page strings in zh-CN (default) and English, from src/selfpay/locales/*.json
(selfpay.domain.messages reads them).

The language of a request comes from `?lang=` (which also sets the `lang` cookie), then
the cookie, then Settings.locale. Templates call `t('key')`; a key missing from the
English catalog falls back to Chinese, and a key missing from both shows the key, so a
forgotten string is visible instead of blank. Errors of the core are told in the same
language: error_text().
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from selfpay.domain.errors import DomainError
from selfpay.domain.messages import DEFAULT_LANG, LANGS, catalog, translate

__all__ = ["DEFAULT_LANG", "LANGS", "LocaleMiddleware", "catalog", "error_text", "pick_lang",
           "request_lang", "translate"]

COOKIE = "lang"
COOKIE_MAX_AGE = 365 * 24 * 3600


def error_text(exc: BaseException, lang: str) -> str:
    """What a reader is told of an error, in `lang`: a domain error's message from the
    catalog, anything else as it says itself."""
    return exc.localized(lang) if isinstance(exc, DomainError) else str(exc)


def pick_lang(raw: str | None) -> str | None:
    if not raw:
        return None
    for lang in LANGS:
        if raw.lower() == lang.lower() or raw.lower() == lang.split("-")[0]:
            return lang
    return None


class LocaleMiddleware:
    """Puts the request's language in scope['state']['lang']; `?lang=` also sets a cookie."""

    def __init__(self, app: ASGIApp, default: str = DEFAULT_LANG) -> None:
        self.app = app
        self.default = default if default in LANGS else DEFAULT_LANG

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        chosen = pick_lang(conn.query_params.get("lang"))
        lang = chosen or pick_lang(conn.cookies.get(COOKIE)) or self.default
        scope.setdefault("state", {})["lang"] = lang
        if chosen is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append(
                    "set-cookie",
                    f"{COOKIE}={chosen}; Max-Age={COOKIE_MAX_AGE}; Path=/; SameSite=Lax",
                )
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def request_lang(conn: HTTPConnection) -> str:
    lang = conn.scope.get("state", {}).get("lang")
    return lang if lang in LANGS else DEFAULT_LANG
