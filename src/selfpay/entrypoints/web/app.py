"""The ASGI application: pages for staff (/admin) and for customers (/q), health checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from selfpay.adapters.channels.sandbox_web import mount_sandbox
from selfpay.adapters.db.order_watch import OrderWatch
from selfpay.adapters.health import Health
from selfpay.adapters.ratelimit import RateLimiter, RequestBudget
from selfpay.adapters.worker_thread import WorkerThread
from selfpay.bootstrap import Container, bootstrap, build_embedded_agent
from selfpay.config import Settings, load_settings
from selfpay.domain.errors import InvalidInput, NotFound
from selfpay.entrypoints.web import admin, api, auth, device_api, lookup, public, voice, work_orders
from selfpay.entrypoints.web import kiosk as kiosk_screen
from selfpay.entrypoints.web.deps import Forbidden, LoginRequired, render
from selfpay.entrypoints.web.i18n import (
    LocaleMiddleware,
    error_text,
    pick_lang,
    request_lang,
    translate,
)
from selfpay.entrypoints.web.ratelimit import RequestRateLimitMiddleware, bare_error_page
from selfpay.entrypoints.web.templating import make_templates

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "selfpay_session"


class BodyTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, by Content-Length up front and by
    counting while the body streams in (chunked uploads carry no length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # pragma: no cover - the body is read before any response
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        lang = pick_lang(_cookie(scope, "lang")) or "zh-CN"
        mb = self.max_bytes / (1024 * 1024)
        limit = f"{mb:.0f} MB" if mb >= 1 else f"{self.max_bytes // 1024} KB"
        message = translate(lang, "error.too_large", limit=limit)
        body = bare_error_page(lang, 413, message)
        response = Response(body, status_code=413, media_type="text/html; charset=utf-8",
                            headers={"Connection": "close"})
        await response(scope, receive, send)


# script-src 'self': every script is a static file (no inline script, no handler
# attribute); style-src allows inline style attributes, which some pages use; images may be
# data: URIs (QR previews). frame-ancestors 'none': no page of ours in someone's frame.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'self'; "
       "object-src 'none'; frame-ancestors 'none'")
NO_CSP = ("/docs", "/redoc")  # FastAPI's API explorer loads its own scripts


class SecurityHeadersMiddleware:
    """Headers every response gets unless the route set its own: CSP, nosniff, a referrer
    policy, no framing; HSTS in production (behind TLS); `no-store` for the console."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                 (b"referrer-policy", b"strict-origin-when-cross-origin")]
        if not path.startswith(NO_CSP):
            extra.append((b"content-security-policy", CSP.encode()))
        if self.hsts:
            extra.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        if path.startswith("/admin"):
            extra.append((b"cache-control", b"no-store"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return str(v)
    return None


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> FastAPI:
    if container is None:
        settings = settings or load_settings()
        container = bootstrap(settings)
        owns_container = True
    else:
        settings = container.settings
        owns_container = False
    built = container

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # `selfpay demo`: the intranet agent in this process, over the embedded queue.
        agent = build_embedded_agent(built)
        if agent is not None:
            await anyio.to_thread.run_sync(agent.start)
        # The payments worker (posting, reconcile, messages): several instances may
        # each run one (SKIP LOCKED claims, idempotent posting).
        worker = None
        if settings.run_worker:
            worker = WorkerThread(built.payments, built.notifier,
                                  work_orders=(built.work_orders if built.work_orders.enabled
                                               else None),
                                  devices=built.devices,
                                  interval_s=settings.worker_interval_s,
                                  reconcile_interval_s=settings.reconcile_interval_s)
            worker.start()
        app.state.worker = worker
        # Long-polled status requests wait for their order's change notice (PostgreSQL)
        watch = OrderWatch(settings.sqlalchemy_url)
        watch.start(asyncio.get_running_loop())
        app.state.order_watch = watch
        try:
            yield
        finally:
            app.state.order_watch = None
            await anyio.to_thread.run_sync(watch.stop)
            app.state.worker = None
            if worker is not None:
                await anyio.to_thread.run_sync(worker.stop)
            if agent is not None:
                await anyio.to_thread.run_sync(agent.stop)
            health.close()
            if owns_container:
                built.close()

    docs = settings.api_docs_enabled  # SELFPAY_API_DOCS; off in production unless asked
    app = FastAPI(title="selfpay", version="0.1.0", docs_url="/docs" if docs else None,
                  openapi_url="/openapi.json" if docs else None, redoc_url=None,
                  lifespan=lifespan)
    app.state.container = container
    app.state.templates = make_templates(settings.timezone)
    # Parsed once; client_ip() and the request limits believe X-Forwarded-For only from
    # these peers.
    app.state.trusted_proxies = settings.trusted_proxy_networks()
    store = container.limit_store
    app.state.login_limiter = RateLimiter(store, name="login", limit=5, window_s=300)
    app.state.sms_limiter = RateLimiter(store, name="sms", limit=lookup.SENDS_PER_IP_PER_HOUR,
                                        window_s=3600)
    app.state.work_order_limiter = RateLimiter(
        store, name="work_order", limit=settings.work_orders_per_ip_per_hour, window_s=3600)

    app.add_middleware(LocaleMiddleware, default=settings.locale)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key.get_secret_value(),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.env == "production",
    )
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    # Added last, so it runs first: nothing else runs for a refused request.
    app.add_middleware(RequestRateLimitMiddleware, budget=RequestBudget(store),
                       limits=container.rate_limits,
                       trusted_proxies=app.state.trusted_proxies, default_lang=settings.locale)
    # Outermost: refusals (413, 429) and error pages carry the headers too.
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.env == "production")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Customers' routes first: a request is matched against the routes in this order, and
    # the staff console's many routes need not be tried for every status poll.
    app.include_router(api.router)
    app.include_router(device_api.router)
    app.include_router(voice.router)  # the kiosk's spoken prompts
    app.include_router(public.router)
    app.include_router(work_orders.router)
    app.include_router(kiosk_screen.router)  # /kiosk/{device_id}: the terminal's screen
    app.include_router(auth.router)
    app.include_router(admin.router)
    mount_sandbox(app, container.channels, run_worker=settings.run_worker)

    @app.get("/healthz", response_class=PlainTextResponse, tags=["ops"])
    def healthz() -> str:
        return "ok"

    health = Health(database_url=settings.sqlalchemy_url, app_engine=built.engine,
                    redis_url=settings.redis_url, billing=built.billing)
    app.state.health = health

    @app.get("/readyz", response_class=PlainTextResponse, tags=["ops"])
    def readyz() -> Response:
        """The database, Redis (when configured) and the broker (with a bridge); 503 when
        one of them is not there, so that a balancer sends no customers here."""
        parts = health.check()
        body = "".join(f"{name} {state}\n" for name, state in parts.items())
        ready = all(state == "ok" for state in parts.values())
        return PlainTextResponse(body, status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/admin", status_code=307)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # Pages link /static/favicon.svg; this answers what browsers ask for anyway (a
        # PDF receipt, an old bookmark), rather than a 404 in every log.
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    _install_error_pages(app)
    return app


def _install_error_pages(app: FastAPI) -> None:
    def wants_json(request: Request) -> bool:
        return request.url.path.endswith(".json") or "application/json" in request.headers.get(
            "accept", ""
        )

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": "login required"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/admin/login?next={quote(target)}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        message = translate(request_lang(request), exc.message_key)
        if wants_json(request):
            return JSONResponse({"detail": message}, status_code=403)
        return render(request, "error.html", {"status": 403, "message": message},
                      status_code=403)

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> Response:
        message = error_text(exc, request_lang(request))
        return render(request, "error.html", {"status": 400, "message": message},
                      status_code=400)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> Response:
        message = error_text(exc, request_lang(request))
        return render(request, "error.html", {"status": 404, "message": message},
                      status_code=404)

    @app.exception_handler(sa_exc.TimeoutError)
    @app.exception_handler(sa_exc.OperationalError)
    async def overloaded(request: Request, exc: Exception) -> Response:
        # Every database connection of this process is busy past SELFPAY_DB_POOL_TIMEOUT_S,
        # or the database is unreachable: answer at once with 503 and Retry-After (a
        # load balancer moves on, a phone retries with the same Idempotency-Key) rather
        # than queue. Whatever the request did was in a transaction and is rolled back.
        log.warning("503 for %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        message = translate(request_lang(request), "error.busy")
        headers = {"Retry-After": "2"}
        if wants_json(request) or request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message, "code": "overloaded", "retryable": True},
                                status_code=503, headers=headers)
        response = render(request, "error.html", {"status": 503, "message": message},
                          status_code=503)
        response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # The API's documented problem shape, {"detail", "code"}, with the field errors
        # beside it; a body that is not JSON at all is a 400 like any other bad input.
        errors = jsonable_encoder(exc.errors())
        not_json = any(e.get("type") == "json_invalid" for e in errors)
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        detail = f"{where}: {first.get('msg', 'invalid')}" if where else str(
            first.get("msg", "invalid request"))
        return JSONResponse({"detail": "the body is not valid JSON" if not_json else detail,
                             "code": "malformed_json" if not_json else "invalid_request",
                             "errors": errors}, status_code=400 if not_json else 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            code = {400: "bad_request", 401: "login_required", 403: "forbidden",
                    404: "not_found", 405: "method_not_allowed", 413: "too_large",
                    429: "rate_limited"}.get(exc.status_code, f"http_{exc.status_code}")
            if exc.status_code == 400 and "parsing the body" in str(exc.detail):
                code = "malformed_json"  # e.g. not UTF-8: as for JSON that does not parse
            return JSONResponse({"detail": exc.detail, "code": code},
                                status_code=exc.status_code, headers=exc.headers)
        if wants_json(request) or exc.status_code not in (403, 404, 405):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        key = {403: "error.forbidden", 404: "error.not_found", 405: "error.method"}
        message = translate(request_lang(request), key[exc.status_code])
        return render(request, "error.html", {"status": exc.status_code, "message": message},
                      status_code=exc.status_code)
