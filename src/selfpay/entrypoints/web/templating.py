"""The Jinja2 environment of the web pages: autoescape on, `t()` for page strings,
`fen()` for amounts, `audit_action` / `audit_area` / `audit_detail` for audit entries,
and the request's language, user and CSRF token in every page."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
from fastapi.templating import Jinja2Templates
from starlette.requests import Request

from selfpay.domain.money import format_fen
from selfpay.entrypoints.web import audit_text
from selfpay.entrypoints.web.i18n import LANGS, request_lang, translate
from selfpay.services.ports import AuditEntry

TEMPLATE_DIR = Path(__file__).parent / "templates"


@jinja2.pass_context
def _t(ctx: jinja2.runtime.Context, key: str, **values: Any) -> str:
    return translate(ctx.get("lang", "zh-CN"), key, **values)


@jinja2.pass_context
def _audit_action(ctx: jinja2.runtime.Context, action: str) -> str:
    """{{ e.action | audit_action }}: 'qr.batch.download' -> 下载二维码批次."""
    return audit_text.action_label(ctx.get("lang", "zh-CN"), action)


@jinja2.pass_context
def _audit_area(ctx: jinja2.runtime.Context, area: str) -> str:
    return audit_text.area_label(ctx.get("lang", "zh-CN"), area)


@jinja2.pass_context
def _audit_detail(ctx: jinja2.runtime.Context, entry: AuditEntry) -> list[tuple[str, str]]:
    """{% for label, value in e | audit_detail %}: the detail as readable pairs."""
    return audit_text.detail_items(ctx.get("lang", "zh-CN"), entry)


def _when_in(zone: ZoneInfo) -> Any:
    def when(value: dt.datetime | dt.date | None) -> str:
        if value is None:
            return ""
        if isinstance(value, dt.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(zone)  # stored in UTC, shown in local time
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return value.isoformat()

    return when


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _with_query(request: Request, **changes: Any) -> str:
    """The current URL with some query parameters replaced (None drops one)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = str(value)
    query = urlencode(params)
    return request.url.path + (f"?{query}" if query else "")


def _page_context(request: Request) -> dict[str, Any]:
    lang = request_lang(request)
    session = request.scope.get("session")
    # Only console pages carry forms; the public pages set no cookie at all.
    if session is not None and request.url.path.startswith("/admin") and not session.get("csrf"):
        session["csrf"] = secrets.token_urlsafe(32)
    session = session if session is not None else {}
    other = [code for code in LANGS if code != lang][0]
    return {
        "lang": lang,
        "other_lang": other,
        "lang_switch_url": _with_query(request, lang=other),
        "csrf_token": session.get("csrf", ""),
        "flashes": session.pop("flash", []),
        "with_query": lambda **kw: _with_query(request, **kw),
    }


def make_templates(timezone: str = "Asia/Shanghai") -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["t"] = _t
    env.filters["fen"] = format_fen
    env.filters["when"] = _when_in(ZoneInfo(timezone))
    env.filters["size"] = _size
    env.filters["audit_action"] = _audit_action
    env.filters["audit_area"] = _audit_area
    env.filters["audit_detail"] = _audit_detail
    return Jinja2Templates(env=env, context_processors=[_page_context])
