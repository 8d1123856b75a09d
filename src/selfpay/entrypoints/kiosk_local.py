"""The kiosk agent's local HTTP endpoint, for the kiosk page in the terminal's browser.

    POST /print  {"order_no": "..."}  -> 200 {"printed": true, "printer": "ok"}
    GET  /status                      -> the last readings and heartbeat

It listens on 127.0.0.1 only. Pages of the server's origin (or the config's
allowed_origins) may call it: CORS, with Chromium's Private Network Access answer on
preflights (an https page calling http://127.0.0.1 asks for it). A request carrying another Origin
is refused, and /print takes only application/json, which a page of another site cannot
send without a preflight that fails: no other site can make the kiosk print. The Host
must be 127.0.0.1 or localhost (a DNS-rebinding page has another).

When the receipt cannot be printed the answer says why in `code`, so that the page
offers the SMS or QR receipt instead:

    503 printer_offline | paper_out | cover_open | printer_unavailable
    404 order_not_found   409 not_paid   502 server_unreachable | server_error
    400 bad_request   403 origin_refused   415 bad_request (not JSON)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from selfpay.adapters.kiosk.agent import KioskAgent
from selfpay.adapters.kiosk.printer import PrinterUnavailable, PrintRefused
from selfpay.adapters.kiosk.server import ServerError, ServerUnreachable
from selfpay.domain.devices import Printer
from selfpay.domain.messages import translate

REFUSED_CODES = {Printer.OFFLINE: "printer_offline", Printer.PAPER_OUT: "paper_out",
                 Printer.COVER_OPEN: "cover_open"}


def _lang(request: Request) -> str:
    return "en" if request.headers.get("accept-language", "").lower().startswith("en") \
        else "zh-CN"


def _problem(request: Request, status: int, code: str, detail: str = "") -> JSONResponse:
    return JSONResponse({"printed": False, "code": code, "detail": detail or code,
                         "message": translate(_lang(request), f"kiosk.print.{code}")},
                        status_code=status)


def create_local_app(agent: KioskAgent, *, origins: list[str]) -> FastAPI:
    app = FastAPI(title="selfpay kiosk agent", docs_url=None, redoc_url=None,
                  openapi_url=None)
    # Added innermost first: TrustedHost sees every request. allow_private_network
    # (Starlette >= 0.51) answers Chromium's Private Network Access preflight.
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                       allow_headers=["Content-Type"], allow_private_network=True,
                       max_age=600)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    allowed = set(origins)

    @app.post("/print")
    async def print_receipt(request: Request) -> Any:
        origin = request.headers.get("origin")
        if origin is not None and origin not in allowed:
            return _problem(request, 403, "origin_refused", f"origin {origin[:80]} refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _problem(request, 415, "bad_request", "send application/json")
        try:
            body = await request.json()
        except ValueError:
            return _problem(request, 400, "bad_request", "the body is not JSON")
        order_no = body.get("order_no") if isinstance(body, dict) else None
        if not isinstance(order_no, str) or not order_no.strip():
            return _problem(request, 400, "bad_request", "give order_no")
        try:
            state = await run_in_threadpool(agent.print_receipt, order_no.strip())
        except PrinterUnavailable as exc:
            return _problem(request, 503, "printer_unavailable", str(exc))
        except PrintRefused as exc:
            return _problem(request, 503, REFUSED_CODES.get(exc.state, "printer_offline"),
                            str(exc))
        except ServerUnreachable as exc:
            return _problem(request, 502, "server_unreachable", str(exc))
        except ServerError as exc:
            if exc.status in (404, 409):
                code = "order_not_found" if exc.status == 404 else "not_paid"
                return _problem(request, exc.status, code, str(exc))
            return _problem(request, 502, "server_error", str(exc))
        return {"printed": True, "printer": state.value}

    @app.get("/status")
    def status() -> Any:
        return agent.status()

    return app
