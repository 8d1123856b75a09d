"""QR batches from an uploaded sheet: a background job per upload, its progress page,
and the history of recorded batches with their ZIP downloads.

An upload that is no sheet, or one past the caps on its size (adapters.sheet_guard: the
zip directory and the head of each sheet, a few milliseconds), gets its 400 at once. The
job runs in a thread of the process that took the upload; its progress and outcome are
a database record (services.jobs), so the page's polls may land on any process behind
the load balancer, and a job whose process died is shown as failed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from selfpay.adapters.qr.jobs import BatchRejected, run_batch
from selfpay.adapters.sheet_guard import SheetLimits, check_workbook
from selfpay.bootstrap import Container
from selfpay.domain.errors import DomainError, InvalidInput
from selfpay.entrypoints.web.admin.qr import billers_of
from selfpay.entrypoints.web.auth import record_audit
from selfpay.entrypoints.web.deps import (
    ADMIN,
    ContainerDep,
    CsrfChecked,
    Operator,
    Viewer,
    client_ip,
    render,
)
from selfpay.entrypoints.web.i18n import error_text, request_lang, translate
from selfpay.services.jobs import JobReporter, JobStatus
from selfpay.services.ports import Job, RowError, User

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin/qr", include_in_schema=False)
PAGE_SIZE = 50
KIND = "qr_batch"
SHOWN_ROWS = 1000  # row errors a job's record keeps (the count is kept in full)


def _summary(job: Job, lang: str) -> str:
    """What a finished batch made: every code, or the codes and the rows skipped."""
    skipped = int(job.result.get("skipped_rows", 0))
    if job.state != "done":
        return ""
    if skipped:
        return translate(lang, "job.done_skipped", count=job.done, skipped=skipped)
    return translate(lang, "job.done_all", count=job.done)


def job_message(status: JobStatus, lang: str) -> str:
    """Why the job failed, in the reader's language: its record keeps the message key
    (`said`) besides the uploader's words (jobs written before keep only those)."""
    if status.lost:
        return translate(lang, "job.lost")
    said = status.job.result.get("said")
    return told(said, lang) if isinstance(said, dict) else status.job.message


def stored_rows(errors: list[RowError]) -> list[dict[str, Any]]:
    """Row errors (or warnings) as a job's record keeps them: with their keys, so that
    each reader is told them in his language (told_rows)."""
    return [{"row": e.row, "message": e.message, "key": e.key, "params": e.params}
            for e in errors[:SHOWN_ROWS]]


def told(stored: object, lang: str) -> str:
    """A stored row error or warning in `lang`; a plain string (older records) as is."""
    if not isinstance(stored, dict):
        return str(stored)
    params = stored.get("params")
    error = RowError(int(stored.get("row") or 0), str(stored.get("message", "")),
                     str(stored.get("key") or ""), params if isinstance(params, dict) else {})
    return error.localized(lang)


def told_rows(stored: list[Any], lang: str) -> list[dict[str, Any]]:
    """Stored row errors as the row_errors macro and job.js show them: the row in its
    own column, the message in `lang` without it."""
    return [{"row": int(e.get("row") or 0) if isinstance(e, dict) else 0,
             "message": told(e, lang)} for e in stored]


def job_json(status: JobStatus, lang: str) -> dict[str, Any]:
    """What the job page and its script show (the shape of the old in-memory job)."""
    job, result = status.job, status.job.result
    batch_id = result.get("batch_id")
    return {
        "id": job.id, "state": job.state, "done": job.done, "total": job.total,
        "batch_id": batch_id, "errors": told_rows(result.get("errors", []), lang),
        "warnings": [told(w, lang) for w in result.get("warnings", [])],
        "skipped": told_rows(result.get("skipped", []), lang),
        "skipped_rows": int(result.get("skipped_rows", 0)),
        "summary": _summary(job, lang),
        "preview": result.get("preview", []), "message": job_message(status, lang),
        "filename": job.filename,
        "download_url": f"/admin/qr/batches/{batch_id}/download"
        if batch_id is not None else None,
    }


def visible_job(container: Container, job_id: str, user: User, *, kind: str) -> JobStatus:
    """The job of `kind`, if this user may see it (its owner, or an admin); else 404."""
    status = container.jobs.read(job_id)
    if (status is None or status.job.kind != kind
            or (status.job.owner != user.username and user.role != ADMIN)):
        raise HTTPException(404)
    return status


def _run_job(
    reporter: JobReporter, container: Container, *, data: bytes, filename: str, owner: str,
    default_biller: str, skip_invalid: bool, ip: str, lang: str,
) -> None:
    try:
        with reporter.keep_alive():
            outcome = run_batch(
                uow_factory=container.uow_factory, keyring=container.keyring,
                code_base=container.code_base, batch_dir=container.batch_dir, source=data,
                filename=filename, actor=owner, default_biller=default_biller or None,
                skip_invalid=skip_invalid, workers=container.settings.batch_workers or None,
                progress=reporter.progress, ip=ip,
                limits=SheetLimits.from_settings(container.settings), audience="web",
            )
    except BatchRejected as exc:
        _finish(reporter, "failed", message=translate(lang, "batch.rejected"), result={
            "errors": stored_rows(exc.errors), "warnings": stored_rows(exc.warnings),
            "said": {"key": "batch.rejected"}})
    except (InvalidInput, ValueError) as exc:  # unreadable sheet, too large, ...
        _finish(reporter, "failed", message=error_text(exc, lang), result=said_of(exc))
    except Exception:
        log.exception("QR batch job %s failed", reporter.job_id)
        _finish(reporter, "failed", message=translate(lang, "batch.crashed"))
    else:
        _finish(reporter, "done", done=outcome.batch.count, total=outcome.batch.count,
                result={
                    "batch_id": outcome.batch.id, "warnings": stored_rows(outcome.warnings),
                    "skipped": stored_rows(outcome.skipped),
                    # a row may have two errors (account and biller): count rows once
                    "skipped_rows": len({e.row for e in outcome.skipped}),
                    "preview": [{"biller": b, "account": a, "payload": p}
                                for b, a, p in outcome.preview],
                })


def said_of(exc: Exception) -> dict[str, Any]:
    """A failed job's result: the key of its reason, when it has one (job_message)."""
    if not isinstance(exc, DomainError):
        return {}
    said = RowError.of(0, exc)
    return {"said": stored_rows([said])[0]} if said.key else {}


def _finish(reporter: JobReporter, state: str, **outcome: Any) -> None:
    try:
        reporter.finish(state, **outcome)
    except Exception:  # the database is gone too: readers will see the job as lost
        log.exception("QR batch job %s: its outcome (%s) could not be recorded",
                      reporter.job_id, state)


@router.get("/batch", name="batch_form")
def batch_form(request: Request, container: ContainerDep, user: Operator) -> Response:
    return render(request, "admin/batch.html", {"billers": billers_of(container), "error": ""})


@router.post("/batch", dependencies=[CsrfChecked])
async def batch_start(
    request: Request,
    container: ContainerDep,
    user: Operator,
    file: Annotated[UploadFile, File()],
    default_biller: Annotated[str, Form()] = "",
    skip_invalid: Annotated[bool, Form()] = False,
) -> Response:
    lang = request_lang(request)
    filename = Path(file.filename or "").name
    data = await file.read()
    error = translate(lang, "upload.empty") if not filename or not data else ""
    if not error:
        limits = SheetLimits.from_settings(container.settings)
        try:  # a few ms, but off the event loop all the same
            await run_in_threadpool(check_workbook, data, limits, quick=True)
        except InvalidInput as exc:  # not a sheet, or past the caps: nothing is started
            error = error_text(exc, lang)
    if error:
        return render(request, "admin/batch.html",
                      {"billers": billers_of(container), "error": error}, status_code=400)
    job = await run_in_threadpool(container.jobs.start, kind=KIND, owner=user.username,
                                  filename=filename)
    thread = threading.Thread(
        target=_run_job, name=f"qr-batch-{job.id[:8]}", daemon=True,
        args=(container.jobs.reporter(job.id), container),
        kwargs={"data": data, "filename": filename, "owner": user.username,
                "default_biller": default_biller.strip().upper(),
                "skip_invalid": skip_invalid, "ip": client_ip(request), "lang": lang},
    )
    thread.start()
    return RedirectResponse(f"/admin/qr/batch/jobs/{job.id}", status_code=303)


@router.get("/batch/jobs/{job_id}.json", name="batch_job_json")
def batch_job_json(request: Request, job_id: str, container: ContainerDep,
                   user: Operator) -> Response:
    status = visible_job(container, job_id, user, kind=KIND)
    return JSONResponse(job_json(status, request_lang(request)),
                        headers={"Cache-Control": "no-store"})


@router.get("/batch/jobs/{job_id}", name="batch_job")
def batch_job(request: Request, job_id: str, container: ContainerDep,
              user: Operator) -> Response:
    status = visible_job(container, job_id, user, kind=KIND)
    return render(request, "admin/batch_job.html",
                  {"job": job_json(status, request_lang(request))})


@router.get("/batches", name="batches")
def batches(request: Request, container: ContainerDep, user: Viewer, page: int = 1) -> Response:
    page = max(page, 1)
    with container.uow_factory() as uow:
        result = uow.batches.list(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render(request, "admin/batches.html",
                  {"page": result, "page_no": page, "page_size": PAGE_SIZE})


@router.get("/batches/{batch_id}/download", name="batch_download")
def batch_download(
    request: Request, batch_id: int, container: ContainerDep, user: Operator
) -> Response:
    with container.uow_factory() as uow:
        batch = uow.batches.get(batch_id)
    if batch is None:
        raise HTTPException(404)
    root = container.settings.data_dir.resolve()
    path = (root / batch.stored_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404)
    record_audit(container, request, actor=user.username, action="qr.batch.download",
                 target=f"batch:{batch_id}", detail={"sha256": batch.sha256})
    stem = Path(batch.source_filename).stem or "batch"
    return FileResponse(path, media_type="application/zip",
                        filename=f"qr-{batch_id}-{stem}.zip")
