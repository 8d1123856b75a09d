"""A work order across the DMZ/intranet bridge (embedded transport): the DMZ's
WorkOrders service talks to a BridgeBillingSystem, the agent to the built-in ledger;
the ticket is accepted once and its status comes back through `work_order_status`."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.bridge.agent import BridgeAgent
from selfpay.adapters.bridge.client import BridgeBillingSystem, LoopThread
from selfpay.adapters.bridge.embedded import EmbeddedTransport
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.services.ports import WorkOrderDesk, WorkOrderRequest
from selfpay.services.work_orders import ReportWorkOrder, WorkOrders


@pytest.fixture
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The intranet's ledger: SQLite here (the ledger itself is tested on both)."""
    return f"sqlite:///{tmp_path_factory.mktemp('intranet') / 'ledger.db'}"


class Agent:
    def __init__(self, engine, billing: object, queue: str) -> None:
        self._loop = LoopThread("test-wo-agent")
        self._stop: asyncio.Event | None = None
        started = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            async with EmbeddedTransport(engine) as transport:
                agent = BridgeAgent(transport, billing, request_queue=queue,  # type: ignore[arg-type]
                                    prefetch=4, workers=2)
                started.set()
                await agent.run(self._stop)

        self._done = self._loop.submit(main())
        assert started.wait(15)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._done.result(15)
        finally:
            self._loop.close()


@pytest.fixture
def dmz(tmp_path: Path, uow_factory, seeded) -> Iterator[tuple[WorkOrders, LedgerBillingSystem,  # noqa: ARG001
                                                                BridgeBillingSystem]]:
    url = f"sqlite:///{tmp_path / 'dmz.db'}"
    upgrade(url)
    engine = make_engine(url)
    queue = "selfpay.test.wo.requests"
    ledger = LedgerBillingSystem(uow_factory)
    agent = Agent(engine, ledger, queue)
    client = BridgeBillingSystem(lambda: EmbeddedTransport(engine), request_queue=queue,
                                 timeout_s=3.0, posting_timeout_s=5.0)
    assert isinstance(client, WorkOrderDesk)
    service = WorkOrders(uow_factory=lambda: SqlAlchemyUnitOfWork(engine), billing=client,
                         poll_every=dt.timedelta(0))
    try:
        yield service, ledger, client
    finally:
        client.close()
        agent.stop()
        engine.dispose()


def test_a_work_order_crosses_the_bridge_once_and_its_status_comes_back(dmz) -> None:
    service, ledger, client = dmz
    order = service.report(ReportWorkOrder("ELEC", "0012345678", "meter_fault", "电表不走字",
                                           "13812345678"))
    assert service.dispatch() == 1
    stored = service.get(order.ticket_no)
    assert stored is not None and stored.status == "accepted"
    ledger.set_work_order_status(stored.billing_ref, "rejected", note="非本公司表计")
    assert service.poll() == 1
    done = service.get(order.ticket_no)
    assert done is not None and (done.status, done.note) == ("rejected", "非本公司表计")
    # a repeat of the same ticket over the bridge is answered as a duplicate
    again = client.submit_work_order(WorkOrderRequest(
        order.ticket_no, "ELEC", "0012345678", "meter_fault", "电表不走字", "13812345678",
        order.created_at))
    assert again.duplicate and again.ref == stored.billing_ref
