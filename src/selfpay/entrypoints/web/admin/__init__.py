"""The staff console under /admin."""

from fastapi import APIRouter

from selfpay.entrypoints.web.admin import (
    audit,
    batch,
    billers,
    dashboard,
    dead_letters,
    devices,
    imports,
    lists,
    messages,
    orders,
    qr,
    rate_limits,
    users,
    work_orders,
)

router = APIRouter()
for module in (dashboard, qr, batch, lists, orders, dead_letters, work_orders, messages,
               imports, audit, users, rate_limits, billers, devices):
    router.include_router(module.router)

__all__ = ["batch", "router"]
