"""The built-in ledger as a BillingSystem (entry point `selfpay.billing: ledger`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.domain.accounts import AccountSummary, PaymentPosting, PostingResult
from selfpay.services import ledger, ledger_work_orders
from selfpay.services.ports import UnitOfWork, WorkOrderRequest, WorkOrderResult

if TYPE_CHECKING:
    from selfpay.config import Settings


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LedgerBillingSystem:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        clock: Callable[[], dt.datetime] = _utcnow,
        *,
        engine: Engine | None = None,
        read_uow_factory: Callable[[], UnitOfWork] | None = None,
    ) -> None:
        """`engine`, when given, is owned by this object and disposed by close();
        `read_uow_factory` serves the look-ups that change nothing."""
        self._uow_factory = uow_factory
        self._read_uow = read_uow_factory or uow_factory
        self._clock = clock
        self._engine = engine

    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:  # always fresh: no copy
        return ledger.account_summary(self._read_uow(), biller, account)

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        return ledger.post_payment(self._uow_factory(), posting, self._clock())

    # WorkOrderDesk: the ledger keeps work orders in ledger_work_orders, one per ticket.
    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        return ledger_work_orders.submit(self._uow_factory(), order, self._clock())

    def work_order_status(self, ref: str) -> WorkOrderResult:
        return ledger_work_orders.status(self._read_uow(), ref)

    def set_work_order_status(self, ref: str, status: str, *, note: str = "") -> WorkOrderResult:
        """Billing-side staff move a work order along (the demo's admin page does)."""
        return ledger_work_orders.set_status(self._uow_factory(), ref, status, note=note,
                                             now=self._clock())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def build(settings: Settings) -> LedgerBillingSystem:
    engine = make_engine(settings.sqlalchemy_url)
    return LedgerBillingSystem(lambda: SqlAlchemyUnitOfWork(engine), engine=engine,
                               read_uow_factory=lambda: SqlAlchemyUnitOfWork(engine,
                                                                             read_only=True))
