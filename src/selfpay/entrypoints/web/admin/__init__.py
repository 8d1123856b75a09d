"""The staff console under /admin."""

from fastapi import APIRouter

from selfpay.entrypoints.web.admin import (
    audit,
    batch,
    dashboard,
    imports,
    lists,
    messages,
    orders,
    qr,
    users,
)

router = APIRouter()
for module in (dashboard, qr, batch, lists, orders, messages, imports, audit, users):
    router.include_router(module.router)

__all__ = ["batch", "router"]
