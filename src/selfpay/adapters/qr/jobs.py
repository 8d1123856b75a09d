"""A QR batch from an uploaded sheet to a recorded, downloadable ZIP.

Shared by `selfpay qr batch` and the admin console. Nothing is half-done: the ZIP is
written under a temporary name and renamed only when complete, and the batch record
and its audit entry are written in one transaction after that (a failure there removes
the file again).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from selfpay.adapters.qr.batch import build_batch_zip
from selfpay.adapters.qr.sheets import Audience, read_batch_rows, validate_batch_rows
from selfpay.adapters.sheet_guard import DEFAULT_LIMITS, SheetLimits
from selfpay.domain.qrcodes import QrKeyring, make_payload
from selfpay.services import audit
from selfpay.services.ports import QrBatch, RowError, UnitOfWork

Progress = Callable[[int, int], None]


class BatchRejected(Exception):
    """The sheet has invalid rows (and skip_invalid was not given) or no account at all."""

    def __init__(self, errors: list[RowError], warnings: list[RowError] | None = None
                 ) -> None:
        super().__init__(f"{len(errors)} invalid row(s)")
        self.errors = errors
        self.warnings = warnings or []


@dataclass
class BatchOutcome:
    batch: QrBatch
    path: Path
    skipped: list[RowError] = field(default_factory=list)
    warnings: list[RowError] = field(default_factory=list)
    preview: list[tuple[str, str, str]] = field(default_factory=list)  # biller, account, payload


def run_batch(
    *,
    uow_factory: Callable[[], UnitOfWork],
    keyring: QrKeyring,
    code_base: str,
    batch_dir: Path,
    source: Path | bytes,
    filename: str,
    actor: str,
    default_biller: str | None = None,
    skip_invalid: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    ip: str = "",
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    limits: SheetLimits = DEFAULT_LIMITS,
    audience: Audience = "cli",
) -> BatchOutcome:
    """Raises BatchRejected for bad rows, UnreadableFile (SheetTooLarge) for a file that
    is no sheet or is past `limits`: then nothing is written."""
    rows = read_batch_rows(source, filename=filename, limits=limits)
    with uow_factory() as uow:
        known = {b.code for b in uow.billers.list(include_disabled=False)}
    plan = validate_batch_rows(rows, default_biller=default_biller, known_billers=known,
                               audience=audience)
    if plan.errors and not skip_invalid:
        raise BatchRejected(list(plan.errors), list(plan.warnings))
    if not plan.items:
        raise BatchRejected(
            [*plan.errors, RowError.keyed(0, "err.batch.empty")],
            list(plan.warnings),
        )
    started = now()
    batch_dir.mkdir(parents=True, exist_ok=True)
    name = f"{started:%Y%m%d-%H%M%S}-{secrets.token_hex(4)}.zip"
    final = batch_dir / name
    partial = final.with_suffix(".zip.part")
    try:
        result = build_batch_zip(
            plan.items, base=code_base, keyring=keyring, out=partial,
            workers=workers, progress=progress,
        )
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    billers = sorted({b for b, _ in plan.items})
    batch = QrBatch(
        id=None, actor=actor, created_at=started, source_filename=filename,
        count=result.count, sha256=result.sha256, size_bytes=result.size,
        stored_path=f"batches/{name}", billers=",".join(billers),
        warnings=[w.message for w in plan.warnings],  # the record's English
    )
    try:
        with uow_factory() as uow:
            batch.id = uow.batches.add(batch)
            audit.record(
                uow, actor=actor, action="qr.batch", target=f"batch:{batch.id}",
                detail={"source": filename, "count": result.count, "sha256": result.sha256,
                        "skipped_rows": len(plan.errors), "billers": billers},
                ip=ip, now=now(),
            )
            uow.commit()
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    preview = [(b, a, make_payload(code_base, keyring, b, a)) for b, a in plan.items[:6]]
    return BatchOutcome(batch=batch, path=final, skipped=list(plan.errors),
                        warnings=list(plan.warnings), preview=preview)
