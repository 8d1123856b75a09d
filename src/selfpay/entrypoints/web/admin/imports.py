"""Imports of accounts or bills from .xlsx/.csv: the upload form, the job that reads and
imports a file, the result with its row errors, and the history of import runs.

An upload is answered at once. A cheap check (the file's type, its zip directory and the
head of each sheet: adapters.sheet_guard, a few milliseconds) gives a file that is no
sheet, or one past the caps on its size, its 400 on the spot; reading and importing run
in a thread of this process, off the request path, so a big file stalls no one. The
job's progress and outcome are a database record (services.jobs) and the import run it
ends with, so the job page's polls may land on any process behind the load balancer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from selfpay.adapters.sheet_guard import SheetLimits, check_workbook
from selfpay.adapters.tabular import read_table
from selfpay.bootstrap import Container
from selfpay.domain.errors import InvalidInput
from selfpay.entrypoints.web.admin.batch import job_message, said_of, visible_job
from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.auth import utcnow
from selfpay.entrypoints.web.deps import ContainerDep, CsrfChecked, Operator, Viewer, render
from selfpay.entrypoints.web.i18n import error_text, request_lang, translate
from selfpay.services import imports as import_service
from selfpay.services.jobs import JobReporter, JobStatus
from selfpay.services.ports import RowError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin/imports", include_in_schema=False)
SUFFIXES = (".xlsx", ".xls", ".ods", ".csv")
KIND = "import"


def _history(request: Request, container: ContainerDep, *, page: int = 1, error: str = "",
             kind: str = "accounts", status: int = 200) -> Response:
    page = max(page, 1)
    with container.uow_factory() as uow:
        runs = uow.imports.list(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/imports.html", {
        "runs": runs.items, "pager": pages(runs.total, page), "error": error, "kind": kind,
    }, status_code=status)


def _run_import(reporter: JobReporter, container: Container, *, data: bytes, filename: str,
                kind: str, owner: str, skip_invalid: bool, lang: str) -> None:
    """Read and import the file; the job ends done (with its import run, whatever the
    rows said) or failed (nothing was written)."""
    use_case = import_service.import_accounts if kind == "accounts" else \
        import_service.import_bills
    try:
        with reporter.keep_alive():
            table = read_table(data, filename,
                               limits=SheetLimits.from_settings(container.settings))
            reporter.progress(0, len(table.rows))
            run = use_case(container.uow_factory(), table, filename=filename, actor=owner,
                           skip_invalid=skip_invalid, now=utcnow(), progress=reporter.progress,
                           check_uow=container.read_uow_factory())
    except InvalidInput as exc:  # unreadable, past the caps
        _finish(reporter, "failed", message=error_text(exc, lang), result=said_of(exc))
    except Exception:
        log.exception("import job %s failed", reporter.job_id)
        _finish(reporter, "failed", message=translate(lang, "imports.crashed"))
    else:
        _finish(reporter, "done", done=run.total_rows, total=run.total_rows,
                result={"run_id": run.id, "status": run.status})


def _finish(reporter: JobReporter, state: str, **outcome: Any) -> None:
    try:
        reporter.finish(state, **outcome)
    except Exception:  # the database is gone too: readers will see the job as lost
        log.exception("import job %s: its outcome (%s) could not be recorded",
                      reporter.job_id, state)


def _job_json(status: JobStatus, lang: str) -> dict[str, Any]:
    job = status.job
    if job.state != "running":
        progress = ""
    elif not job.total:
        progress = translate(lang, "imports.job.reading")
    elif job.done < job.total:
        progress = translate(lang, "imports.job.checked", done=job.done, total=job.total)
    else:
        progress = translate(lang, "imports.job.saving", total=job.total)
    run_id = job.result.get("run_id")
    return {
        "id": job.id, "state": job.state, "done": job.done, "total": job.total,
        "filename": job.filename, "progress": progress,
        "message": job_message(status, lang),
        "run_url": f"/admin/imports/{run_id}" if run_id is not None else None,
    }


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
    limits = SheetLimits.from_settings(container.settings)
    try:  # a few ms, but off the event loop all the same
        await run_in_threadpool(check_workbook, data, limits, quick=True)
    except InvalidInput as exc:  # not a sheet, or past the caps: nothing is started
        return _history(request, container, error=error_text(exc, lang), kind=kind,
                        status=400)
    job = await run_in_threadpool(container.jobs.start, kind=KIND, owner=user.username,
                                  filename=filename)
    threading.Thread(
        target=_run_import, name=f"import-{job.id[:8]}", daemon=True,
        args=(container.jobs.reporter(job.id), container),
        kwargs={"data": data, "filename": filename, "kind": kind, "owner": user.username,
                "skip_invalid": skip_invalid, "lang": lang},
    ).start()
    return RedirectResponse(f"/admin/imports/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}.json", name="import_job_json")
def import_job_json(request: Request, job_id: str, container: ContainerDep,
                    user: Operator) -> Response:
    status = visible_job(container, job_id, user, kind=KIND)
    return JSONResponse(_job_json(status, request_lang(request)),
                        headers={"Cache-Control": "no-store"})


@router.get("/jobs/{job_id}", name="import_job")
def import_job(request: Request, job_id: str, container: ContainerDep,
               user: Operator) -> Response:
    """The job's progress; once it is done, its import run."""
    status = visible_job(container, job_id, user, kind=KIND)
    job = _job_json(status, request_lang(request))
    if job["run_url"] is not None:
        return RedirectResponse(job["run_url"], status_code=303)
    return render(request, "admin/import_job.html", {"job": job})


@router.get("/{run_id}", name="import_run")
def import_run(request: Request, run_id: int, container: ContainerDep,
               user: Viewer) -> Response:
    with container.uow_factory() as uow:
        run = uow.imports.get(run_id)
    if run is None:
        raise HTTPException(404)
    lang = request_lang(request)  # the run's errors were stored with their keys
    run = replace(run, errors=[RowError(e.row, e.localized(lang)) for e in run.errors])
    return render(request, "admin/import_run.html", {"run": run, "fresh": False})
