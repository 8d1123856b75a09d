"""QR batches from an uploaded sheet: a background job per upload, its progress page,
and the history of recorded batches with their ZIP downloads.

Jobs live in memory in the process that started them (the page polls that process);
the batch itself, once done, is a database record and a file, visible to every process.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from selfpay.adapters.qr.jobs import BatchRejected, run_batch
from selfpay.bootstrap import Container
from selfpay.domain.errors import InvalidInput
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
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.services.ports import User

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin/qr", include_in_schema=False)
PAGE_SIZE = 50


@dataclass
class Job:
    id: str
    owner: str
    filename: str
    created: dt.datetime
    state: str = "running"  # running | done | failed
    done: int = 0
    total: int = 0
    batch_id: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    preview: list[dict[str, str]] = field(default_factory=list)
    message: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "done": self.done, "total": self.total,
            "batch_id": self.batch_id, "errors": self.errors, "warnings": self.warnings,
            "skipped": self.skipped, "preview": self.preview, "message": self.message,
            "filename": self.filename,
            "download_url": f"/admin/qr/batches/{self.batch_id}/download"
            if self.batch_id is not None else None,
        }


class JobRegistry:
    """Batch jobs of this process by random id; keeps the newest `keep` jobs."""

    def __init__(self, keep: int = 200) -> None:
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def new(self, owner: str, filename: str) -> Job:
        job = Job(id=secrets.token_urlsafe(16), owner=owner, filename=filename,
                  created=dt.datetime.now(dt.UTC))
        with self._lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.state != "running"]
            for old in sorted(finished, key=lambda j: j.created)[: max(0, len(self._jobs) -
                                                                      self.keep)]:
                del self._jobs[old.id]
        return job

    def get(self, job_id: str, user: User) -> Job:
        """The job, if this user may see it (its owner, or an admin); else 404."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (job.owner != user.username and user.role != ADMIN):
            raise HTTPException(404)
        return job

    def update(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)

    def snapshot(self, job: Job) -> dict[str, Any]:
        with self._lock:
            return job.as_json()


def _run_job(
    registry: JobRegistry, job: Job, container: Container, *, data: bytes, default_biller: str,
    skip_invalid: bool, ip: str, lang: str,
) -> None:
    def progress(done: int, total: int) -> None:
        registry.update(job, done=done, total=total)

    try:
        outcome = run_batch(
            uow_factory=container.uow_factory, keyring=container.keyring,
            code_base=container.code_base, batch_dir=container.batch_dir, source=data,
            filename=job.filename, actor=job.owner, default_biller=default_biller or None,
            skip_invalid=skip_invalid, workers=container.settings.batch_workers or None,
            progress=progress, ip=ip,
        )
    except BatchRejected as exc:
        registry.update(
            job, state="failed", message=translate(lang, "batch.rejected"),
            errors=[{"row": e.row, "message": e.message} for e in exc.errors],
            warnings=list(exc.warnings),
        )
    except (InvalidInput, ValueError) as exc:  # unreadable sheet, missing column, ...
        registry.update(job, state="failed", message=str(exc))
    except Exception:
        log.exception("QR batch job %s failed", job.id)
        registry.update(job, state="failed", message=translate(lang, "batch.crashed"))
    else:
        registry.update(
            job, state="done", batch_id=outcome.batch.id, done=outcome.batch.count,
            total=outcome.batch.count, warnings=list(outcome.warnings),
            skipped=[{"row": e.row, "message": e.message} for e in outcome.skipped],
            preview=[{"biller": b, "account": a, "payload": p} for b, a, p in outcome.preview],
        )


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
    if not filename or not data:
        return render(
            request, "admin/batch.html",
            {"billers": billers_of(container), "error": translate(lang, "upload.empty")},
            status_code=400,
        )
    registry: JobRegistry = request.app.state.jobs
    job = registry.new(user.username, filename)
    thread = threading.Thread(
        target=_run_job, name=f"qr-batch-{job.id[:8]}", daemon=True,
        args=(registry, job, container),
        kwargs={"data": data, "default_biller": default_biller.strip().upper(),
                "skip_invalid": skip_invalid, "ip": client_ip(request), "lang": lang},
    )
    thread.start()
    return RedirectResponse(f"/admin/qr/batch/jobs/{job.id}", status_code=303)


@router.get("/batch/jobs/{job_id}.json", name="batch_job_json")
def batch_job_json(request: Request, job_id: str, user: Operator) -> Response:
    registry: JobRegistry = request.app.state.jobs
    return JSONResponse(registry.snapshot(registry.get(job_id, user)),
                        headers={"Cache-Control": "no-store"})


@router.get("/batch/jobs/{job_id}", name="batch_job")
def batch_job(request: Request, job_id: str, user: Operator) -> Response:
    registry: JobRegistry = request.app.state.jobs
    return render(request, "admin/batch_job.html",
                  {"job": registry.snapshot(registry.get(job_id, user))})


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
