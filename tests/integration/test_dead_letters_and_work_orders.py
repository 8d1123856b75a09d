"""Dead-lettered postings and work orders on SQLite and PostgreSQL: a posting that
keeps failing stops being retried and can be replayed without posting twice; a work
order reaches the built-in ledger exactly once (two workers at once, a crash after the
billing call) and its status comes back."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from sqlalchemy import func, select
from test_payments import Clock, Crash, FlakyBilling, World, cmd, make_payments

from fakes import FakeChannel
from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.db import tables as t
from selfpay.domain.errors import InvalidInput
from selfpay.services import ledger_work_orders
from selfpay.services.payments import PostingNotDead
from selfpay.services.ports import BillingSystemError, WorkOrderRequest, WorkOrderResult
from selfpay.services.work_orders import ReportWorkOrder, TooManyWorkOrders, WorkOrders

# --- dead letters -------------------------------------------------------------------------


@pytest.fixture
def world(uow_factory, seeded) -> World:
    clock = Clock()
    channel = FakeChannel()
    billing = FlakyBilling(LedgerBillingSystem(uow_factory, clock))
    payments = make_payments(uow_factory, billing, channel, clock, flag_after_attempts=2,
                             dead_after_attempts=4)
    return World(uow_factory, clock, channel, billing, payments, seeded)


def _fail_until_dead(world: World, order_no: str) -> None:
    for _ in range(4):
        assert world.payments.dispatch_postings() == 0
        world.clock.now = world.postings(order_no).next_attempt_at


def test_a_posting_that_keeps_failing_goes_dead_and_is_no_longer_retried(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    world.billing.fail_before = 100
    _fail_until_dead(world, view.order_no)
    posting = world.postings(view.order_no)
    assert posting.status == "dead" and posting.attempts == 4 and posting.dead_at is not None
    assert "unreachable" in posting.last_error
    world.clock.advance(days=2)
    assert world.payments.dispatch_postings() == 0
    assert world.billing.fail_before == 100 - 4  # not called again
    events = [h.detail for h in world.history(view.order_no) if h.kind == "posting"]
    assert [(e["stuck"], e["dead"]) for e in events] == [
        (False, False), (True, False), (True, False), (False, True)]
    assert world.payments.get(view.order_no).status == "paid"


def test_a_replayed_dead_posting_that_had_reached_billing_is_posted_once(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    world.billing.fail_after = 1  # the first attempt posts, its answer is lost
    world.billing.fail_before = 3  # then billing is down
    for _ in range(4):
        world.payments.dispatch_postings()
        world.clock.now = world.postings(view.order_no).next_attempt_at
    assert world.postings(view.order_no).status == "dead"
    assert world.ledger_payments() == 1

    replayed = world.payments.replay_posting(view.order_no, actor="operator", ip="10.0.0.9")
    assert replayed.status == "pending" and replayed.attempts == 0
    stored = world.postings(view.order_no)
    assert (stored.status, stored.attempts, stored.next_attempt_at, stored.dead_at) == (
        "pending", 0, world.clock.now, None)
    assert world.payments.dispatch_postings() == 1
    assert world.ledger_payments() == 1
    assert [r.duplicate for r in world.billing.posted] == [False, True]
    assert world.payments.get(view.order_no).status == "posted"

    note = [h for h in world.history(view.order_no) if h.kind == "note"]
    assert note[0].detail["posting"] == "replayed" and note[0].detail["by"] == "operator"
    assert note[0].detail["attempts_before"] == 4
    with world.uow_factory() as uow:
        [entry] = uow.audit.list(action="posting.replay").items
    assert (entry.actor, entry.target, entry.ip) == ("operator", view.order_no, "10.0.0.9")
    with pytest.raises(PostingNotDead):
        world.payments.replay_posting(view.order_no, actor="operator")


# --- work orders ---------------------------------------------------------------------------


@dataclass
class FlakyDesk:
    """The ledger's work-order desk, failing before or after the call on demand."""

    inner: LedgerBillingSystem
    fail_before: int = 0
    fail_after: int = 0
    after_exc: type[BaseException] = BillingSystemError
    submitted: list[WorkOrderResult] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        if self.fail_before:
            self.fail_before -= 1
            raise BillingSystemError("billing system unreachable")
        result = self.inner.submit_work_order(order)
        with self.lock:
            self.submitted.append(result)
        if self.fail_after:
            self.fail_after -= 1
            raise self.after_exc("connection lost after the billing call")
        return result

    def work_order_status(self, ref: str) -> WorkOrderResult:
        return self.inner.work_order_status(ref)


@dataclass
class Desk:
    uow_factory: object
    clock: Clock
    ledger: LedgerBillingSystem
    billing: FlakyDesk

    def service(self, **kw: object) -> WorkOrders:
        return WorkOrders(uow_factory=self.uow_factory, billing=self.billing,  # type: ignore[arg-type]
                          clock=self.clock, **kw)  # type: ignore[arg-type]

    def ledger_rows(self) -> int:
        with self.uow_factory() as uow:  # type: ignore[operator]
            return uow.connection.execute(
                select(func.count()).select_from(t.ledger_work_orders)).scalar_one()


@pytest.fixture
def desk(uow_factory, seeded) -> Desk:
    clock = Clock()
    ledger = LedgerBillingSystem(uow_factory, clock)
    return Desk(uow_factory, clock, ledger, FlakyDesk(ledger))


def report(service: WorkOrders, **kw: str):
    values = {"biller": "ELEC", "account": "0012345678", "kind": "outage",
              "description": "整栋楼停电", "contact_phone": "13812345678"}
    values.update(kw)
    return service.report(ReportWorkOrder(**values))


def test_a_work_order_is_queued_then_accepted_by_the_ledger_once(desk: Desk) -> None:
    service = desk.service()
    order = report(service)
    assert order.status == "queued" and order.ticket_no.startswith("WO")
    assert service.dispatch() == 1
    stored = service.get(order.ticket_no)
    assert stored.status == "accepted" and stored.billing_ref.startswith("LWO-")
    assert stored.attempts == 1 and stored.next_attempt_at == desk.clock.now + dt.timedelta(
        seconds=30)
    assert service.dispatch() == 0 and desk.ledger_rows() == 1


def test_two_workers_at_once_submit_a_work_order_once(desk: Desk) -> None:
    tickets = [report(desk.service(), kind=k).ticket_no
               for k in ("outage", "meter_fault", "contact_change")]
    barrier = threading.Barrier(2)

    def run() -> int:
        barrier.wait()
        return desk.service().dispatch()

    with ThreadPoolExecutor(2) as pool:
        counts = [f.result() for f in [pool.submit(run), pool.submit(run)]]
    assert sum(counts) == 3
    assert len(desk.billing.submitted) == 3 and desk.ledger_rows() == 3
    assert {desk.service().get(n).status for n in tickets} == {"accepted"}


def test_a_crash_after_the_billing_call_submits_once_after_the_lease(desk: Desk) -> None:
    order = report(desk.service())
    desk.billing.fail_after, desk.billing.after_exc = 1, Crash
    with pytest.raises(Crash):
        desk.service().dispatch()
    assert desk.ledger_rows() == 1
    assert desk.service().get(order.ticket_no).status == "submitted"

    restarted = desk.service()
    assert restarted.dispatch() == 0  # the dead worker's claim still holds
    desk.clock.advance(seconds=61)
    assert restarted.dispatch() == 1
    assert [r.duplicate for r in desk.billing.submitted] == [False, True]
    assert desk.ledger_rows() == 1
    stored = restarted.get(order.ticket_no)
    assert stored.status == "accepted" and stored.attempts == 2


def test_transient_failures_back_off_then_the_ticket_fails_and_refusals_fail_at_once(
        desk: Desk) -> None:
    service = desk.service(dead_after=3)
    order = report(service)
    desk.billing.fail_before = 10
    delays = []
    for _ in range(3):
        before = desk.clock.now
        assert service.dispatch() == 0
        stored = service.get(order.ticket_no)
        if stored.next_attempt_at is not None:
            delays.append((stored.next_attempt_at - before).total_seconds())
            desk.clock.now = stored.next_attempt_at
    assert delays == [2, 4]
    assert stored.status == "failed" and "unreachable" in stored.last_error
    assert stored.next_attempt_at is None

    desk.billing.fail_before = 0
    unknown = report(service, account="0000404")
    assert service.dispatch() == 0
    failed = service.get(unknown.ticket_no)
    assert failed.status == "failed" and "AccountNotFound" in failed.last_error
    assert desk.ledger_rows() == 0


def test_the_status_set_on_the_billing_side_comes_back_to_the_ticket(desk: Desk) -> None:
    service = desk.service()
    order = report(service)
    service.dispatch()
    ref = service.get(order.ticket_no).billing_ref
    desk.ledger.set_work_order_status(ref, "in_progress")
    assert service.poll() == 0  # not asked before its next poll
    desk.clock.advance(seconds=30)
    assert service.poll() == 1
    assert service.get(order.ticket_no).status == "in_progress"

    desk.ledger.set_work_order_status(ref, "done", note="已更换电表")
    service.nudge(order.ticket_no)
    assert service.run_round() == {"submitted": 0, "updated": 1}
    done = service.get(order.ticket_no)
    assert (done.status, done.note, done.next_attempt_at) == ("done", "已更换电表", None)
    desk.clock.advance(hours=1)
    assert service.poll() == 0
    with pytest.raises(InvalidInput):  # the billing side cannot reopen it either
        desk.ledger.set_work_order_status(ref, "in_progress")


def test_the_ledger_keeps_one_work_order_per_ticket_and_refuses_a_reused_one(
        desk: Desk) -> None:
    request = WorkOrderRequest("WO" + "B" * 16, "ELEC", "0012345678", "meter_fault", "坏了",
                               "13812345678", desk.clock.now)
    first = desk.ledger.submit_work_order(request)
    again = desk.ledger.submit_work_order(request)
    assert not first.duplicate and again.duplicate and again.ref == first.ref
    with pytest.raises(ledger_work_orders.WorkOrderConflict):
        desk.ledger.submit_work_order(WorkOrderRequest(
            request.ticket_no, "ELEC", "0099999999", "meter_fault", "x", "", desk.clock.now))
    assert desk.ledger_rows() == 1


def test_an_account_may_report_a_bounded_number_of_work_orders_a_day(desk: Desk) -> None:
    service = desk.service(per_account_per_day=2)
    report(service)
    report(service, kind="meter_fault")
    with pytest.raises(TooManyWorkOrders):
        report(service, kind="contact_change")
    report(service, account="0099999999")  # another account is not affected
    desk.clock.advance(days=1, seconds=1)
    report(service)


def test_an_invalid_report_stores_nothing(desk: Desk) -> None:
    service = desk.service()
    for bad in ({"contact_phone": "12345"}, {"description": "  "}, {"kind": "refund"},
                {"account": ""}):
        with pytest.raises(InvalidInput):
            report(service, **bad)
    assert service.search().total == 0


def test_without_a_work_order_desk_tickets_wait_in_the_outbox(desk: Desk) -> None:
    class PaymentsOnly:
        def account_summary(self, biller: str, account: str): ...

    service = WorkOrders(uow_factory=desk.uow_factory, billing=PaymentsOnly(),  # type: ignore[arg-type]
                         clock=desk.clock)
    assert not service.enabled
    order = report(service)
    assert service.run_round() == {"submitted": 0, "updated": 0}
    assert service.get(order.ticket_no).status == "queued"



class _NoPayments:
    """Only the work-order step of the round is under test here."""

    def dispatch_postings(self, *, limit: int) -> int:
        return 0

    def reconcile_pending(self) -> int:
        return 0

    def deliver_messages(self, notifier: object, *, limit: int) -> int:
        return 0


def test_the_one_worker_round_sends_work_orders_beside_the_payments(desk: Desk) -> None:
    from selfpay.services.worker import run_once

    service = desk.service()
    order = report(service)
    counts = run_once(_NoPayments(), None, work_orders=service)  # type: ignore[arg-type]
    assert counts["submitted"] == 1 and service.get(order.ticket_no).status == "accepted"
    assert run_once(_NoPayments(), None)["submitted"] == 0  # type: ignore[arg-type]


def test_a_failing_work_order_step_does_not_stop_the_posting_step(desk: Desk) -> None:
    from selfpay.services.worker import run_once

    class Broken:
        def run_round(self, limit: int) -> dict[str, int]:
            raise RuntimeError("work-order table locked")

    class Posting(_NoPayments):
        def dispatch_postings(self, *, limit: int) -> int:
            return 3

    counts = run_once(Posting(), None, work_orders=Broken())  # type: ignore[arg-type]
    assert counts["posted"] == 3 and counts["submitted"] == 0
