"""What a kiosk's agent (`selfpay kiosk-agent`) says to the server, under /api/v1/devices:

    POST /api/v1/devices/{device_id}/enroll      {"code": "..."} -> {"secret": ..., ...}
    POST /api/v1/devices/{device_id}/heartbeat   signed (services/devices.py), readings

A refused terminal (not enrolled, revoked, bad code or signature, a replay) gets 403
`device_refused` with one message for all, and the reason goes to the log only; an
impossible reading gets 400 `invalid_reading` and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from selfpay.domain.devices import HEARTBEAT_S, InvalidReading
from selfpay.entrypoints.web.deps import ContainerDep, client_ip
from selfpay.entrypoints.web.i18n import error_text, request_lang
from selfpay.services.devices import DeviceRefused

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
MAX_BODY = 16 * 1024  # a heartbeat is a few hundred bytes


class EnrollIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32)


def _refused(request: Request, device_id: str, exc: DeviceRefused) -> JSONResponse:
    log.warning("device %r refused from %s: %s", device_id[:40], client_ip(request), exc)
    return JSONResponse({"detail": "this terminal is not enrolled", "code": "device_refused",
                         "message": error_text(exc, request_lang(request))}, status_code=403)


@router.post("/{device_id}/enroll")
def enroll(device_id: str, body: EnrollIn, request: Request,
           container: ContainerDep) -> Any:
    """Trade the one-time enrolment code shown in the console for this terminal's secret
    (returned once: the agent keeps it in its own file)."""
    try:
        secret = container.devices.enroll(device_id, body.code)
    except DeviceRefused as exc:
        return _refused(request, device_id, exc)
    return {"device_id": device_id.strip().lower(), "secret": secret,
            "heartbeat_s": HEARTBEAT_S}


@router.post("/{device_id}/heartbeat")
async def heartbeat(device_id: str, request: Request, container: ContainerDep) -> Any:
    """Readings of an enrolled terminal, signed with its secret over the raw body."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return JSONResponse({"detail": "body too large", "code": "too_large"},
                            status_code=413)
    try:
        result = await run_in_threadpool(container.devices.heartbeat, device_id,
                                         dict(request.headers), raw)
    except DeviceRefused as exc:
        return _refused(request, device_id, exc)
    except InvalidReading as exc:
        log.warning("device %r sent an impossible reading: %s", device_id[:40], exc)
        return JSONResponse({"detail": str(exc), "code": "invalid_reading",
                             "message": error_text(exc, request_lang(request))},
                            status_code=400)
    device = result.device
    return {"ok": True, "raised": [a.kind.value for a in result.raised],
            "cleared": [k.value for k in result.cleared],
            "config": {"heartbeat_s": HEARTBEAT_S, "elderly_default": device.elderly_default,
                       "billers": list(device.billers),
                       "idle_s": container.settings.kiosk_idle_s}}
