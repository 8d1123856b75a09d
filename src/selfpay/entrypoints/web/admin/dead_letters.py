"""Dead letters: postings that failed `SELFPAY_POSTING_DEAD_AFTER` times and are no
longer retried. Every role sees them; operators and admins may replay one (back to the
outbox, attempts reset, due now), which is noted in the order's history and audited as
`posting.replay`. A replay cannot post twice: the payment id stays the same, and the
billing system answers a repeat as a duplicate."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.entrypoints.web.admin.lists import PAGE_SIZE, pages
from selfpay.entrypoints.web.deps import (
    ContainerDep,
    CsrfChecked,
    Operator,
    Viewer,
    client_ip,
    flash,
    render,
)
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.services.payments import OrderNotFound, PostingNotDead

router = APIRouter(prefix="/admin", include_in_schema=False)
DEAD = "dead"


@router.get("/dead-letters", name="dead_letters")
def dead_letters(request: Request, container: ContainerDep, user: Viewer,
                 page: int = 1) -> Response:
    page = max(page, 1)
    with container.uow_factory() as uow:
        dead = uow.postings.list(status=DEAD, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        rows = [(p, uow.orders.get(p.order_no)) for p in dead.items]
    return render(request, "admin/dead_letters.html", {
        "rows": [(p, o) for p, o in rows if o is not None], "total": dead.total,
        "pager": pages(dead.total, page),
        "dead_after": container.settings.posting_dead_after,
    })


@router.post("/dead-letters/{order_no}/replay", name="dead_letter_replay",
             dependencies=[CsrfChecked])
def replay(request: Request, order_no: str, container: ContainerDep,
           user: Operator) -> Response:
    lang = request_lang(request)
    try:
        container.payments.replay_posting(order_no[:32], actor=user.username,
                                          ip=client_ip(request))
    except (OrderNotFound, PostingNotDead):
        flash(request, translate(lang, "dead.not_dead", order_no=order_no[:32]), "error")
    else:
        flash(request, translate(lang, "dead.replayed", order_no=order_no[:32]), "info")
        worker = getattr(request.app.state, "worker", None)
        if worker is not None:
            worker.wake()
    return RedirectResponse("/admin/dead-letters", status_code=303)
