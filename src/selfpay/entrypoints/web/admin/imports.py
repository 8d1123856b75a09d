"""Imports of accounts or bills from .xlsx/.csv: the upload form, the result with its
row errors, and the history of import runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from selfpay.adapters.tabular import read_table
from selfpay.domain.errors import InvalidInput
from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.auth import utcnow
from selfpay.entrypoints.web.deps import ContainerDep, CsrfChecked, Operator, Viewer, render
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.services import imports as import_service

router = APIRouter(prefix="/admin/imports", include_in_schema=False)
SUFFIXES = (".xlsx", ".xls", ".ods", ".csv")


def _history(request: Request, container: ContainerDep, *, page: int = 1, error: str = "",
             kind: str = "accounts", status: int = 200) -> Response:
    page = max(page, 1)
    with container.uow_factory() as uow:
        runs = uow.imports.list(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/imports.html", {
        "runs": runs.items, "pager": pages(runs.total, page), "error": error, "kind": kind,
    }, status_code=status)


@router.get("", name="imports")
def imports_page(request: Request, container: ContainerDep, user: Viewer,
                 page: int = 1) -> Response:
    return _history(request, container, page=page)


@router.post("", dependencies=[CsrfChecked])
async def import_upload(
    request: Request,
    container: ContainerDep,
    user: Operator,
    file: Annotated[UploadFile, File()],
    kind: Annotated[Literal["accounts", "bills"], Form()] = "accounts",
    skip_invalid: Annotated[bool, Form()] = False,
) -> Response:
    lang = request_lang(request)
    filename = Path(file.filename or "").name
    data = await file.read()
    if not filename or not data:
        return _history(request, container, error=translate(lang, "upload.empty"), kind=kind,
                        status=400)
    if not filename.lower().endswith(SUFFIXES):
        return _history(request, container, error=translate(lang, "imports.bad_type"),
                        kind=kind, status=400)
    run_import = (
        import_service.import_accounts if kind == "accounts" else import_service.import_bills
    )
    try:
        table = read_table(data, filename)
        run = run_import(container.uow_factory(), table, filename=filename, actor=user.username,
                         skip_invalid=skip_invalid, now=utcnow())
    except InvalidInput as exc:  # unreadable file, missing columns
        return _history(request, container, error=str(exc), kind=kind, status=400)
    status = 200 if run.status != "rejected" else 400
    return render(request, "admin/import_run.html", {"run": run, "fresh": True},
                  status_code=status)


@router.get("/{run_id}", name="import_run")
def import_run(request: Request, run_id: int, container: ContainerDep,
               user: Viewer) -> Response:
    with container.uow_factory() as uow:
        run = uow.imports.get(run_id)
    if run is None:
        raise HTTPException(404)
    return render(request, "admin/import_run.html", {"run": run, "fresh": False})
