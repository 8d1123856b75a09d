"""The adapters of the named billing routes (SELFPAY_BILLING_ROUTES), built at start.

A route is {"adapter": NAME, ...options}:

- "http": the HTTP/JSON contract (http_json.py) at "url", with "timeout_s" (default
  SELFPAY_BILLING_HTTP_TIMEOUT_S) and a bearer token from "token_env" / "token_file".
- "bridge": a bridge client over the configured transport (SELFPAY_TRANSPORT), sending
  to its own "request_queue" (default SELFPAY_BRIDGE_REQUEST_QUEUE) so that a second
  `selfpay agent` can serve another intranet system; "timeout_s", "posting_timeout_s".
- "ledger": the built-in ledger on the database whose URL is in "database_url_env" /
  "database_url_file", else on the app's own database.
- any other name: an entry point of the `selfpay.billing` group, called as
  `build(settings, route_options)` (a plug-in that takes only `build(settings)` serves a
  route that has no options).

Secrets are never option values (config.py refuses them): `<name>_env` names an
environment variable and `<name>_file` a file, read once here; the value is handed on as
`<name>` in a SecretStr. A missing one is a RouteConfigError naming the route and the
variable or file, never the value.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr

from selfpay.services.ports import BillingSystem, UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Generator

    from sqlalchemy import Engine

    from selfpay.config import Settings

BILLING_GROUP = "selfpay.billing"
_QUEUE_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")
_KNOWN = {
    "http": {"url", "timeout_s", "token"},
    "bridge": {"request_queue", "timeout_s", "posting_timeout_s"},
    "ledger": {"database_url"},
}


class RouteConfigError(ValueError):
    """A billing route that cannot be built as configured (raised at start)."""


class BearerToken(httpx.Auth):
    """`Authorization: Bearer <token>`; the token never shows in repr."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerToken('**********')"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request


def resolve_options(name: str, route: Mapping[str, Any], *,
                    environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options of a route without "adapter", each `<key>_env` / `<key>_file` read
    into `<key>` as a SecretStr."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for key, value in route.items():
        if key == "adapter":
            continue
        if key.endswith("_env"):
            base, suffix = key[:-4], "_env"
        elif key.endswith("_file"):
            base, suffix = key[:-5], "_file"
        else:
            options[key] = value
            continue
        if not base or base in route or (f"{base}_env" in route and f"{base}_file" in route):
            raise RouteConfigError(f"billing route {name!r}: give {base or key} once, as "
                                   f"{base}_env or {base}_file")
        if not isinstance(value, str) or not value:
            raise RouteConfigError(f"billing route {name!r}: {key} must name "
                                   f"{'a variable' if suffix == '_env' else 'a file'}")
        if suffix == "_env":
            secret = env.get(value, "")
            if not secret:
                raise RouteConfigError(f"billing route {name!r}: environment variable "
                                       f"{value} ({key}) is not set")
        else:
            try:
                secret = Path(value).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise RouteConfigError(f"billing route {name!r}: cannot read {key} "
                                       f"{value}: {reason}") from None
            if not secret:
                raise RouteConfigError(f"billing route {name!r}: {key} {value} is empty")
        options[base] = SecretStr(secret)
    return options


def _seconds(name: str, options: Mapping[str, Any], key: str, default: float, *,
             settings: Settings, top: float) -> float:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= top:
        raise RouteConfigError(f"billing route {name!r}: {key} must be a number of seconds "
                               f"above 0 and at most {top:g}")
    if settings.posting_lease_s < raw + 5:
        raise RouteConfigError(f"billing route {name!r}: {key} ({raw:g}) must stay 5 s under "
                               f"SELFPAY_POSTING_LEASE_S ({settings.posting_lease_s})")
    return float(raw)


def _http(settings: Settings, name: str, options: Mapping[str, Any]) -> BillingSystem:
    from selfpay.adapters.billing.http_json import HttpJsonBillingSystem

    url = options.get("url")
    if not isinstance(url, str) or not re.match(r"https?://", url):
        raise RouteConfigError(f"billing route {name!r}: adapter 'http' needs a \"url\" "
                               "(http:// or https://)")
    timeout = _seconds(name, options, "timeout_s", settings.billing_http_timeout_s,
                       settings=settings, top=120)
    token = options.get("token")
    return HttpJsonBillingSystem(httpx.Client(
        base_url=url.rstrip("/"), timeout=timeout,
        auth=BearerToken(token) if isinstance(token, SecretStr) else None))


def _bridge(settings: Settings, name: str, options: Mapping[str, Any], *,
            engine: Engine) -> BillingSystem:
    from selfpay.adapters.bridge import build_billing

    if settings.transport == "none":
        raise RouteConfigError(f"billing route {name!r}: adapter 'bridge' needs "
                               "SELFPAY_TRANSPORT=stomp (or embedded)")
    queue = options.get("request_queue", settings.bridge_request_queue)
    if not isinstance(queue, str) or not _QUEUE_RE.fullmatch(queue):
        raise RouteConfigError(f"billing route {name!r}: bad request_queue {queue!r}")
    timeout = _seconds(name, options, "timeout_s", settings.bridge_timeout_s,
                       settings=settings, top=60)
    posting = _seconds(name, options, "posting_timeout_s", settings.bridge_posting_timeout_s,
                       settings=settings, top=300)
    # its own reply queue: two clients on one queue would take each other's replies
    instance = f"{settings.bridge_instance_id}.{name}" if settings.bridge_instance_id else ""
    return build_billing(settings.model_copy(update={
        "bridge_request_queue": queue, "bridge_timeout_s": timeout,
        "bridge_posting_timeout_s": posting, "bridge_instance_id": instance,
    }), engine=engine)


def _ledger(name: str, options: Mapping[str, Any], *,
            uow_factory: Callable[[], UnitOfWork],
            read_uow_factory: Callable[[], UnitOfWork]) -> BillingSystem:
    from selfpay.adapters.billing.ledger import LedgerBillingSystem
    from selfpay.adapters.db.engine import make_engine
    from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork

    url = options.get("database_url")
    if url is None:
        return LedgerBillingSystem(uow_factory, read_uow_factory=read_uow_factory)
    if not isinstance(url, SecretStr):
        raise RouteConfigError(f"billing route {name!r}: give the ledger's database as "
                               "database_url_env or database_url_file")
    try:
        engine = make_engine(url.get_secret_value())
    except Exception:  # noqa: BLE001 - its message may quote the URL and its password
        raise RouteConfigError(f"billing route {name!r}: database_url is not a database "
                               "URL") from None
    return LedgerBillingSystem(lambda: SqlAlchemyUnitOfWork(engine), engine=engine,
                               read_uow_factory=lambda: SqlAlchemyUnitOfWork(
                                   engine, read_only=True))


def _takes_options(factory: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        return False
    positional = [p for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _plugin(settings: Settings, name: str, adapter: str,
            options: Mapping[str, Any]) -> BillingSystem:
    found = {ep.name: ep for ep in entry_points(group=BILLING_GROUP)}
    if adapter not in found:
        raise RouteConfigError(
            f"billing route {name!r}: unknown adapter {adapter!r} (built in: bridge, http, "
            f"ledger; installed in {BILLING_GROUP}: {', '.join(sorted(found)) or '-'})")
    factory: Any = found[adapter].load()
    if _takes_options(factory):
        billing: BillingSystem = factory(settings, dict(options))
        return billing
    if options:
        raise RouteConfigError(f"billing route {name!r}: plug-in {adapter!r} takes no route "
                               f"options (build(settings)); it was given "
                               f"{', '.join(sorted(options))}")
    billing = factory(settings)
    return billing


def build_route(settings: Settings, name: str, route: Mapping[str, Any], *, engine: Engine,
                uow_factory: Callable[[], UnitOfWork],
                read_uow_factory: Callable[[], UnitOfWork],
                environ: Mapping[str, str] | None = None) -> BillingSystem:
    adapter = str(route.get("adapter", ""))
    options = resolve_options(name, route, environ=environ)
    known = _KNOWN.get(adapter)
    if known is not None and set(options) - known:
        raise RouteConfigError(f"billing route {name!r}: adapter {adapter!r} has no option "
                               f"{', '.join(sorted(set(options) - known))} (it takes "
                               f"{', '.join(sorted(known))})")
    if adapter == "http":
        return _http(settings, name, options)
    if adapter == "bridge":
        return _bridge(settings, name, options, engine=engine)
    if adapter == "ledger":
        return _ledger(name, options, uow_factory=uow_factory,
                       read_uow_factory=read_uow_factory)
    return _plugin(settings, name, adapter, options)


def build_routes(settings: Settings, *, engine: Engine,
                 uow_factory: Callable[[], UnitOfWork],
                 read_uow_factory: Callable[[], UnitOfWork],
                 environ: Mapping[str, str] | None = None) -> dict[str, BillingSystem]:
    """Every named route's adapter; on a failure, those built so far are closed."""
    built: dict[str, BillingSystem] = {}
    try:
        for name, route in sorted(settings.billing_routes.items()):
            built[name] = build_route(settings, name, route, engine=engine,
                                      uow_factory=uow_factory,
                                      read_uow_factory=read_uow_factory, environ=environ)
    except BaseException:
        for adapter in built.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()
        raise
    return built
