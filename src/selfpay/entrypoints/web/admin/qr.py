"""One account's code: the form, a preview, downloads as PNG/SVG/PDF, and the batch
sheet template."""

from __future__ import annotations

import io
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from selfpay.adapters.qr.render import render, render_png
from selfpay.adapters.qr.sheets import write_template
from selfpay.bootstrap import Container
from selfpay.domain.accounts import Biller, mask_name, normalize_account, normalize_biller
from selfpay.domain.errors import InvalidInput
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.auth import record_audit
from selfpay.entrypoints.web.deps import ContainerDep, Operator
from selfpay.entrypoints.web.deps import render as render_page
from selfpay.entrypoints.web.i18n import error_text, request_lang

router = APIRouter(prefix="/admin/qr", include_in_schema=False)

MEDIA = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}


def billers_of(container: Container, *, include_disabled: bool = False) -> list[Biller]:
    """Billers for a select: by default only the enabled ones (codes and batches are
    made for them alone); list filters pass include_disabled=True (history stays)."""
    with container.uow_factory() as uow:
        return uow.billers.list(include_disabled=include_disabled)


def parse_code_input(billers: list[Biller], biller_raw: str, account_raw: str
                     ) -> tuple[str, str]:
    """Normalized (biller, account); an InvalidInput that says what is wrong (the pages
    tell it in the user's language)."""
    biller = normalize_biller(biller_raw)
    if biller not in {b.code for b in billers}:
        raise InvalidInput(key="qr.unknown_biller", biller=biller)
    return biller, normalize_account(account_raw)


@router.get("", name="qr_form")
def qr_form(
    request: Request, container: ContainerDep, user: Operator, biller: str = "",
    account: str = "",
) -> Response:
    billers = billers_of(container)
    context: dict[str, object] = {
        "billers": billers, "biller": biller or (billers[0].code if billers else ""),
        "account": account, "error": "", "code": None,
    }
    if not account and "account" not in request.query_params:
        return render_page(request, "admin/qr.html", context)
    try:
        b, a = parse_code_input(billers, biller, account)
    except InvalidInput as exc:
        context["error"] = error_text(exc, request_lang(request))
        return render_page(request, "admin/qr.html", context, status_code=400)
    with container.uow_factory() as uow:
        known = uow.accounts.get(b, a)
    context.update(
        biller=b, account=a,
        code={
            "biller": b, "account": a,
            "payload": make_payload(container.code_base, container.keyring, b, a),
            "exists": known is not None,
            "masked_name": mask_name(known.name) if known else "",
        },
    )
    return render_page(request, "admin/qr.html", context)


@router.get("/preview.png", name="qr_preview")
def qr_preview(
    request: Request, container: ContainerDep, user: Operator, biller: str = "",
    account: str = "",
) -> Response:
    b, a = parse_code_input(billers_of(container), biller, account)
    png = render_png(make_payload(container.code_base, container.keyring, b, a), scale=6)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/download", name="qr_download")
def qr_download(
    request: Request, container: ContainerDep, user: Operator, biller: str = "",
    account: str = "", format: Literal["png", "svg", "pdf"] = "png",
) -> Response:
    b, a = parse_code_input(billers_of(container), biller, account)
    payload = make_payload(container.code_base, container.keyring, b, a)
    data = render(payload, format)
    record_audit(container, request, actor=user.username, action="qr.make",
                 target=f"{b}/{a}", detail={"biller": b, "account": a, "format": format})
    return Response(
        data, media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{a}.{format}"',
                 "Cache-Control": "no-store"},
    )


@router.get("/template.xlsx", name="qr_template")
def qr_template(request: Request, container: ContainerDep, user: Operator) -> Response:
    buf = io.BytesIO()
    write_template(buf, audience="web")
    record_audit(container, request, actor=user.username, action="qr.template")
    return Response(
        buf.getvalue(),
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": 'attachment; filename="selfpay-qr-template.xlsx"'},
    )
