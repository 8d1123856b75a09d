"""The console's front page: counts, open bills per biller as a bar chart, recent audit."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from selfpay.adapters.db import tables
from selfpay.bootstrap import Container
from selfpay.domain.accounts import BillStatus
from selfpay.entrypoints.web.admin.devices import alarm_banner
from selfpay.entrypoints.web.admin.orders import payment_health
from selfpay.entrypoints.web.auth import utcnow
from selfpay.entrypoints.web.deps import AUDIT, ContainerDep, Viewer, render

router = APIRouter(prefix="/admin", include_in_schema=False)


@dataclass(frozen=True, slots=True)
class BillerBar:
    code: str
    name: str
    open_bills: int
    due_fen: int
    name_en: str = ""

    def label(self, lang: str) -> str:
        """The biller's name in the page's language (English falls back to the code)."""
        return self.name if lang != "en" else (self.name_en or self.code)


def open_bills_by_biller(container: Container) -> list[BillerBar]:
    """One GROUP BY instead of paging through every open bill.

    A read model: the repositories have no aggregate query (yet), so this reads the
    ledger tables directly."""
    b = tables.bills.c
    stmt = (
        select(b.biller, func.count(), func.coalesce(func.sum(b.amount_fen - b.paid_fen), 0))
        .where(b.status == BillStatus.OPEN.value)
        .group_by(b.biller)
    )
    with container.engine.connect() as conn:
        rows = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(stmt)}
    with container.uow_factory() as uow:
        billers = uow.billers.list()
    return [
        BillerBar(x.code, x.name, *rows.get(x.code, (0, 0)), name_en=x.name_en)
        for x in billers
    ] + [BillerBar(code, code, *v) for code, v in rows.items() if code not in
         {x.code for x in billers}]


def chart_bars(bars: list[BillerBar], *, width: int = 560, bar_h: int = 26,
               gap: int = 10, label_w: int = 110) -> list[dict[str, object]]:
    """Geometry of a horizontal bar chart (drawn as inline SVG by the template)."""
    peak = max((x.open_bills for x in bars), default=0) or 1
    usable = width - label_w - 60  # room on the right for the count
    out = []
    for i, bar in enumerate(bars):
        out.append({
            "bar": bar, "y": i * (bar_h + gap), "h": bar_h, "x": label_w, "track": usable,
            "w": max(2, round(usable * bar.open_bills / peak)) if bar.open_bills else 0,
        })
    return out


@router.get("", name="dashboard")
def dashboard(request: Request, container: ContainerDep, user: Viewer) -> Response:
    bars = open_bills_by_biller(container)
    with container.uow_factory() as uow:
        accounts = uow.accounts.count()
        batches = uow.batches.list(limit=1).total
        # Operators see only their own recent actions; the full log is for admin/auditor.
        actor = "" if user.role in AUDIT else user.username
        recent = uow.audit.list(actor=actor, limit=10).items
    chart = chart_bars(bars)
    return render(request, "admin/dashboard.html", {
        "accounts": accounts,
        "open_bills": sum(x.open_bills for x in bars),
        "total_due_fen": sum(x.due_fen for x in bars),
        "batches": batches,
        "chart": chart,
        "chart_height": max(len(chart) * 36, 36),
        "recent": recent,
        "recent_is_own": bool(actor),
        "health": payment_health(container, utcnow()),
        "device_alarms": alarm_banner(container),
    })
