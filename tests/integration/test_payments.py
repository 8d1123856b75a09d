"""Payments end to end on SQLite and PostgreSQL: order -> notification -> posting ->
receipt, and every way a notification can be repeated, late, forged or raced."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from fakes import FakeChannel, FakeNotifier
from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.domain.accounts import PaymentPosting, PostingResult
from selfpay.domain.errors import AccountNotFound, InvalidInput
from selfpay.domain.orders import (
    AttemptsExhausted,
    IdempotencyConflict,
    InvalidTransition,
    NothingToPay,
)
from selfpay.services.payments import (
    ChannelUnavailable,
    CreateOrder,
    JustPaid,
    OrderNotFound,
    Payments,
    PreviousOrderOpen,
    UnknownChannel,
)
from selfpay.services.ports import BillingSystemError

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
BASE = "https://pay.example.cn"
ACCOUNT = ("ELEC", "0012345678")  # owes 2026-09 ¥100.00 and 2026-10 ¥50.50 (conftest)
UowFactory = Callable[[], SqlAlchemyUnitOfWork]


class Clock:
    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


class Crash(BaseException):
    """The process dies here (not an Exception: nothing in the app may catch it)."""


@dataclass
class FlakyBilling:
    """Wraps a billing system: `fail_before` failures before delegating, then
    `fail_after` failures AFTER delegating (the payment is posted, the caller never
    hears of it), raising `after_exc`."""

    inner: LedgerBillingSystem
    fail_before: int = 0
    fail_after: int = 0
    after_exc: type[BaseException] = BillingSystemError
    posted: list[PostingResult] = field(default_factory=list)

    def account_summary(self, biller: str, account: str, *, fresh: bool = False):
        return self.inner.account_summary(biller, account, fresh=fresh)

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        if self.fail_before:
            self.fail_before -= 1
            raise BillingSystemError("billing system unreachable")
        result = self.inner.post_payment(posting)
        self.posted.append(result)
        if self.fail_after:
            self.fail_after -= 1
            raise self.after_exc("connection lost after the billing call")
        return result


@dataclass
class World:
    uow_factory: UowFactory
    clock: Clock
    channel: FakeChannel
    billing: FlakyBilling
    payments: Payments
    seeded: object

    def fresh(self, **kwargs: object) -> Payments:
        """Another process: a new Payments over the same database."""
        return make_payments(self.uow_factory, self.billing, self.channel, self.clock,
                             **kwargs)

    def order(self, order_no: str):
        with self.uow_factory() as uow:
            return uow.orders.get(order_no)

    def history(self, order_no: str):
        with self.uow_factory() as uow:
            return uow.orders.history(order_no)

    def ledger_payments(self) -> int:
        from sqlalchemy import func, select

        from selfpay.adapters.db import tables as t

        with self.uow_factory() as uow:
            return uow.connection.execute(
                select(func.count()).select_from(t.ledger_payments)).scalar_one()

    def open_bills(self) -> list:
        with self.uow_factory() as uow:
            return uow.bills.open_for(*ACCOUNT)

    def postings(self, order_no: str):
        with self.uow_factory() as uow:
            return uow.postings.get(order_no)

    def notifications(self, order_no: str = ""):
        from sqlalchemy import select

        from selfpay.adapters.db import tables as t

        with self.uow_factory() as uow:
            if order_no:
                return uow.notifications.for_order(order_no)
            return list(uow.connection.execute(select(t.notifications)).all())

    def messages(self):
        with self.uow_factory() as uow:
            return uow.messages.list(limit=100).items

    def notify(self, order_no: str, **kwargs: object):
        headers, body = self.channel.notification(order_no, **kwargs)
        return self.payments.handle_notification("fake", headers, body)


def make_payments(uow_factory: UowFactory, billing: object, channel: FakeChannel,
                  clock: Clock, **kwargs: object) -> Payments:
    return Payments(uow_factory=uow_factory, billing=billing,  # type: ignore[arg-type]
                    channels={"fake": channel}, notify_base_url=BASE, clock=clock,
                    **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def world(uow_factory: UowFactory, seeded: object) -> World:
    clock = Clock()
    channel = FakeChannel()
    billing = FlakyBilling(LedgerBillingSystem(uow_factory, clock))
    payments = make_payments(uow_factory, billing, channel, clock)
    return World(uow_factory, clock, channel, billing, payments, seeded)


def cmd(key: str = "key-1", **kwargs: object) -> CreateOrder:
    values: dict[str, object] = {"biller": "ELEC", "account": "0012345678", "channel": "fake"}
    values.update(kwargs)
    return CreateOrder(idempotency_key=key, **values)  # type: ignore[arg-type]


# --- the happy path ---------------------------------------------------------------------


def test_scan_to_receipt_posts_the_payment_once_and_queues_a_receipt(world: World) -> None:
    view = world.payments.create_order(cmd(email="a@example.cn"))
    assert view.new and view.status == "pending" and view.amount_fen == 15050
    assert view.action["url"].endswith(view.order_no) and view.attempts_left == 3
    request = world.channel.calls[0][1]
    assert request.order_no == view.order_no and request.amount_fen == 15050
    assert request.notify_url == f"{BASE}/api/v1/notify/fake"
    assert request.description == "电费 0012345678"

    answer = world.notify(view.order_no)
    assert answer.status_code == 200
    paid = world.payments.get(view.order_no)
    assert paid.status == "paid" and paid.channel_txn_id.startswith("FT")
    assert world.postings(view.order_no).status == "pending"

    world.clock.advance(seconds=1)
    assert world.payments.dispatch_postings() == 1
    posted = world.payments.get(view.order_no)
    assert posted.status == "posted" and posted.posted_at == world.clock.now
    assert world.open_bills() == []
    assert world.ledger_payments() == 1
    assert world.postings(view.order_no).status == "done"
    assert world.payments.dispatch_postings() == 0

    [receipt] = world.messages()
    assert receipt.kind == "receipt" and receipt.to == "a@example.cn"
    for text in (view.order_no, "电费", "0012345678", "¥150.50", "2026-09", "2026-10",
                 paid.channel_txn_id, f"{BASE}/receipt/{view.order_no}"):
        assert text in receipt.body
    notifier = FakeNotifier()
    assert world.payments.deliver_messages(notifier) == 1
    assert notifier.sent[0].id == receipt.id
    assert world.messages()[0].status == "sent"
    assert world.payments.deliver_messages(notifier) == 0

    kinds = [(h.kind, h.to_status) for h in world.history(view.order_no)]
    assert kinds == [("state", "created"), ("attempt", "pending"),
                     ("notification", "pending"), ("state", "paid"),
                     ("posting", "paid"), ("state", "posted")]


def test_the_chosen_bills_alone_are_paid(world: World) -> None:
    bill = world.seeded.bill_ids[("ELEC", "0012345678", "2026-10")]  # type: ignore[attr-defined]
    view = world.payments.create_order(cmd(bill_ids=(bill,)))
    assert view.amount_fen == 5050 and view.bill_ids == (bill,)
    world.notify(view.order_no)
    world.payments.dispatch_postings()
    assert [b.period for b in world.open_bills()] == ["2026-09"]


def test_bad_requests_are_refused_before_anything_is_stored(world: World) -> None:
    with pytest.raises(InvalidInput):
        world.payments.create_order(cmd(key=""))
    with pytest.raises(InvalidInput):
        world.payments.create_order(cmd(key="k" * 256))
    with pytest.raises(UnknownChannel):
        world.payments.create_order(cmd(channel="nope"))
    with pytest.raises(AccountNotFound):
        world.payments.create_order(cmd(account="0000000001"))
    with pytest.raises(NothingToPay):
        world.payments.create_order(cmd(account="0099999999"))
    with pytest.raises(InvalidInput, match="(?i)not an open bill"):
        world.payments.create_order(cmd(bill_ids=(999999,)))
    with pytest.raises(OrderNotFound):
        world.payments.get("SP20261101XXXXXXXXXXXXXXXX")
    with world.uow_factory() as uow:
        assert uow.orders.search().total == 0


# --- idempotency keys -------------------------------------------------------------------


def test_the_same_key_returns_the_same_order_and_another_body_is_a_conflict(
        world: World) -> None:
    first = world.payments.create_order(cmd())
    again = world.payments.create_order(cmd())
    assert again.order_no == first.order_no and not again.new
    assert world.channel.count("create_payment") == 1
    bill = world.seeded.bill_ids[("ELEC", "0012345678", "2026-10")]  # type: ignore[attr-defined]
    with pytest.raises(IdempotencyConflict):
        world.payments.create_order(cmd(bill_ids=(bill,)))
    with pytest.raises(IdempotencyConflict):
        world.payments.create_order(cmd(biller="WATER", account="W-001"))


def test_a_failed_prepay_keeps_the_order_and_the_same_key_resumes_it(world: World) -> None:
    world.channel.fail_prepay = 1
    with pytest.raises(ChannelUnavailable) as info:
        world.payments.create_order(cmd())
    order_no = info.value.order_no
    assert world.order(order_no).status.value == "created"
    resumed = world.payments.create_order(cmd())
    assert resumed.order_no == order_no and resumed.status == "pending"
    assert world.channel.count("create_payment") == 2
    assert [r.order_no for _, r in world.channel.calls] == [order_no, order_no]
    notes = [h.detail for h in world.history(order_no) if h.kind == "attempt"]
    assert "prepay_failed" in notes[0]


def test_two_requests_with_the_same_key_at_once_make_one_order(world: World) -> None:
    barrier = threading.Barrier(2)

    def submit() -> str:
        barrier.wait()
        return world.payments.create_order(cmd(key="double-click")).order_no

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(submit), pool.submit(submit)]]
    assert results[0] == results[1]
    with world.uow_factory() as uow:
        page = uow.orders.search()
    assert page.total == 1 and page.items[0].status.value == "pending"
    assert page.items[0].attempts == 1


# --- notifications ----------------------------------------------------------------------


def test_a_repeated_notification_is_acked_and_changes_nothing(world: World) -> None:
    view = world.payments.create_order(cmd())
    headers, body = world.channel.notification(view.order_no, notification_id="N-1")
    for _ in range(3):
        assert world.payments.handle_notification("fake", headers, body).status_code == 200
    # the channel's second, distinct notification of the same payment
    assert world.notify(view.order_no, notification_id="N-2").status_code == 200
    assert world.payments.dispatch_postings() == 1
    assert world.payments.dispatch_postings() == 0
    assert world.ledger_payments() == 1
    notes = world.notifications(view.order_no)
    assert [n.error for n in notes] == ["", "duplicate", "duplicate", ""]
    assert all(n.verified for n in notes)
    history = world.history(view.order_no)
    assert [(h.kind, h.to_status) for h in history].count(("state", "paid")) == 1
    assert [h.detail.get("notification_id") for h in history if h.kind == "notification"] == [
        "N-1", "N-2"]


def test_a_second_transaction_for_a_paid_order_is_flagged_never_posted(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    answer = world.notify(view.order_no, txn_id="OTHER-TXN")
    assert answer.status_code == 200  # acked: the channel must stop; staff look at it
    world.payments.dispatch_postings()
    assert world.ledger_payments() == 1
    flags = [h.detail["flag"] for h in world.history(view.order_no) if h.kind == "note"]
    assert flags == ["paid_elsewhere"]


def test_two_deliveries_of_one_notification_at_once_give_one_posting(world: World) -> None:
    view = world.payments.create_order(cmd())
    headers, body = world.channel.notification(view.order_no, notification_id="N-race")
    _, body2 = world.channel.notification(view.order_no, notification_id="N-race-2")
    barrier = threading.Barrier(3)

    def deliver(raw: bytes) -> int:
        barrier.wait()
        sig = {"X-Fake-Signature": world.channel.sign(raw)}
        return world.payments.handle_notification("fake", sig, raw).status_code

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(deliver, b) for b in (body, body, body2)]
        assert [f.result() for f in futures] == [200, 200, 200]
    with world.uow_factory() as uow:
        assert uow.postings.list().total == 1
    assert world.payments.dispatch_postings() == 1
    assert world.ledger_payments() == 1


def test_a_failure_report_after_the_payment_changes_nothing(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    assert world.notify(view.order_no, outcome="failed").status_code == 200
    order = world.order(view.order_no)
    assert order.status.value == "paid" and order.failed_attempts == 0
    world.payments.dispatch_postings()
    assert world.payments.get(view.order_no).status == "posted"
    assert world.notify(view.order_no, outcome="closed").status_code == 200
    assert world.payments.get(view.order_no).status == "posted"


@pytest.mark.parametrize("tamper", ["forged", "merchant", "amount", "unknown_order"])
def test_forged_or_mismatched_notifications_change_nothing(world: World, tamper: str) -> None:
    view = world.payments.create_order(cmd())
    order_no = view.order_no
    kwargs: dict[str, object] = {
        "forged": {"forged": True},
        "merchant": {"merchant_id": "M-SOMEONE-ELSE"},
        "amount": {"amount_fen": 1},
        "unknown_order": {},
    }[tamper]
    target = "SP20261101ZZZZZZZZZZZZZZZZ" if tamper == "unknown_order" else order_no
    if tamper == "unknown_order":
        world.channel.trades[target] = world.channel.trades[order_no]
    answer = world.notify(target, **kwargs)
    order = world.order(order_no)
    if tamper == "amount":  # money was taken, of another amount: disputed, for staff
        assert order.status.value == "disputed" and order.flag == "amount_mismatch"
        assert order.settled and order.flagged_at is not None
    else:
        assert order.status.value == "pending" and order.channel_txn_id == ""
    assert world.payments.dispatch_postings() == 0
    assert world.ledger_payments() == 0
    [record] = world.notifications()
    if tamper == "amount":
        assert answer.status_code == 200  # acked so that it stops; flagged for staff
        assert not record.verified and "expected 15050" in record.error
        [dispute] = [h for h in world.history(order_no) if h.to_status == "disputed"]
        assert dispute.detail["flag"] == "amount_mismatch"
        assert dispute.detail["amount_fen"] == 1 and dispute.detail["expected_fen"] == 15050
    elif tamper == "unknown_order":
        assert answer.status_code == 400 and record.error == "unknown order"
    else:
        assert answer.status_code == 400
        assert not record.verified and record.error
    assert len(record.body_sha256) == 64


def test_a_late_payment_after_close_is_posted_and_marked_late(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.clock.advance(minutes=31)
    assert world.payments.reconcile_pending() == 1
    assert world.payments.get(view.order_no).status == "closed"
    assert world.channel.count("close") == 1
    world.channel.trades[view.order_no].state = "pending"  # the stale cashier took money
    assert world.notify(view.order_no).status_code == 200
    assert world.payments.get(view.order_no).status == "paid"
    assert world.payments.dispatch_postings() == 1
    assert world.payments.get(view.order_no).status == "posted"
    late = [h.detail.get("late") for h in world.history(view.order_no)
            if h.to_status == "paid" and h.kind == "state"]
    assert late == [True]


# --- failed and closed orders are settled with the channel ---------------------------------


def fail_three_times(world: World, order_no: str) -> None:
    for n in range(3):
        if n:
            world.payments.retry(order_no)
        world.notify(order_no, outcome="failed", reason="declined")


def test_an_order_that_fails_is_closed_at_the_channel(world: World) -> None:
    view = world.payments.create_order(cmd())
    fail_three_times(world, view.order_no)
    failed = world.order(view.order_no)
    assert failed.status.value == "failed" and failed.settled
    assert world.channel.trades[view.order_no].state == "closed"
    world.clock.advance(hours=1)
    calls = len(world.channel.calls)
    assert world.payments.reconcile_pending() == 0
    assert len(world.channel.calls) == calls  # settled: never asked about again


def test_a_failed_order_paid_afterwards_on_its_stale_cashier_is_still_posted(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    world.channel.fail_close = True  # the close at failure time does not get through
    fail_three_times(world, view.order_no)
    assert world.order(view.order_no).status.value == "failed"
    assert not world.order(view.order_no).settled
    world.channel.trades[view.order_no].state = "pending"
    world.channel.pay(view.order_no)  # the customer pays on the old cashier; no notice
    world.clock.advance(minutes=3)
    assert world.payments.reconcile_pending() == 1
    paid = world.order(view.order_no)
    assert paid.status.value == "paid" and paid.flag == "late" and paid.settled
    assert world.payments.dispatch_postings() == 1 and world.ledger_payments() == 1


def test_a_closed_order_is_asked_about_until_the_channel_confirms_it(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.channel.fail_close = True
    world.channel.query_error = True
    world.clock.advance(minutes=31)
    assert world.payments.reconcile_pending() == 0  # the channel does not answer
    world.channel.query_error = False
    world.clock.advance(minutes=3)
    # query says pending, close fails, query again pending: still open and unsettled
    assert world.payments.reconcile_pending() == 0
    assert world.order(view.order_no).status.value == "pending"
    world.channel.fail_close = False
    world.clock.advance(minutes=3)
    assert world.payments.reconcile_pending() == 1
    closed = world.order(view.order_no)
    assert closed.status.value == "closed" and closed.settled


def test_a_locally_closed_order_is_settled_when_its_channel_closes_it(world: World) -> None:
    view = world.payments.create_order(cmd())
    with world.uow_factory() as uow:  # closed here while the channel was not reachable
        order = uow.orders.get(view.order_no, for_update=True)
        order.close("staff closed it", confirmed=False)
        uow.orders.save(order, now=world.clock.now)
        uow.commit()
    world.clock.advance(minutes=3)
    assert world.payments.reconcile_pending() == 1
    assert world.channel.trades[view.order_no].state == "closed"
    assert world.order(view.order_no).settled


# --- failure reports belong to one attempt --------------------------------------------------


def test_a_late_failure_of_an_earlier_attempt_leaves_the_live_attempt_alone(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no, outcome="failed", notification_id="fail-1", attempt=1)
    second = world.payments.retry(view.order_no)
    assert second.action and second.attempts_left == 2
    # attempt 1's failure again, under another notification id, after attempt 2 began
    world.notify(view.order_no, outcome="failed", notification_id="fail-1b", attempt=1)
    live = world.payments.get(view.order_no)
    assert live.action == second.action and live.attempts_left == 2
    stale = [h.detail for h in world.history(view.order_no) if "stale_failure" in h.detail]
    assert stale and stale[0]["of_attempt"] == 1 and stale[0]["live_attempt"] == 2


def test_one_failure_reported_by_notification_and_by_query_counts_once(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no, outcome="failed")
    world.channel.trades[view.order_no].state = "failed"
    world.clock.advance(minutes=3)
    world.payments.reconcile_pending()
    assert world.payments.get(view.order_no).attempts_left == 2


# --- an amount mismatch is disputed once, for staff ------------------------------------------


def test_an_amount_mismatch_found_by_query_is_disputed_once_and_never_expires(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    trade = world.channel.pay(view.order_no)
    trade.amount_fen = 100  # the channel took ¥1.00 for a ¥150.50 order
    world.clock.advance(minutes=3)
    assert world.payments.reconcile_pending() == 1
    disputed = world.order(view.order_no)
    assert disputed.status.value == "disputed" and disputed.flag == "amount_mismatch"
    assert disputed.channel_txn_id == trade.txn_id and disputed.settled
    queries = world.channel.count("query")
    for _ in range(3):
        world.clock.advance(minutes=31)
        assert world.payments.reconcile_pending() == 0
    assert world.channel.count("query") == queries and world.channel.count("close") == 0
    assert world.order(view.order_no).status.value == "disputed"
    assert sum(h.to_status == "disputed" for h in world.history(view.order_no)) == 1
    assert world.payments.dispatch_postings() == 0


# --- the customer's payment code (付款码) ------------------------------------------------


def test_a_payment_code_pays_the_order_at_once(world: World) -> None:
    view = world.payments.create_order(cmd())
    paid = world.payments.pay_with_code(view.order_no, "134567890123456789")
    assert paid.status == "paid" and paid.channel_txn_id
    request, code = [x for name, x in world.channel.calls if name == "collect_with_code"][0]
    assert request.amount_fen == 15050 and request.attempt == 2 and code.endswith("6789")
    assert world.payments.dispatch_postings() == 1


def test_a_declined_payment_code_is_a_failed_attempt_and_a_bad_scan_is_not(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    with pytest.raises(InvalidInput):
        world.payments.pay_with_code(view.order_no, "HTTPS://PAY.EXAMPLE.CN/Q/X")
    assert world.payments.get(view.order_no).attempts_left == 3  # a wrong scan costs none
    declined = world.payments.pay_with_code(view.order_no, "134567890123450000")
    assert declined.status == "pending" and declined.attempts_left == 2
    waiting = world.payments.pay_with_code(view.order_no, "134567890123459999")
    assert waiting.status == "pending" and waiting.action["kind"] == "payment_code"
    world.channel.pay(view.order_no)  # confirmed on the phone; the query finds it
    world.clock.advance(minutes=3)
    assert world.payments.reconcile_pending() == 1
    assert world.payments.get(view.order_no).status == "paid"


def test_a_payment_code_on_a_channel_that_does_not_answer_keeps_the_order(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    world.channel.query_error = True
    with pytest.raises(ChannelUnavailable):
        world.payments.pay_with_code(view.order_no, "134567890123456789")
    order = world.payments.get(view.order_no)
    assert order.status == "pending" and order.attempts_left == 3


# --- posting: crashes, retries, staff flags ---------------------------------------------


def test_a_crash_between_the_billing_call_and_marking_done_posts_once(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    world.billing.fail_after = 1
    world.billing.after_exc = Crash
    with pytest.raises(Crash):
        world.payments.dispatch_postings()
    assert world.ledger_payments() == 1
    assert world.payments.get(view.order_no).status == "paid"

    restarted = world.fresh()
    assert restarted.dispatch_postings() == 0  # the dead worker's claim still holds
    world.clock.advance(seconds=61)
    assert restarted.dispatch_postings() == 1
    assert world.ledger_payments() == 1
    assert [r.duplicate for r in world.billing.posted] == [False, True]
    assert world.payments.get(view.order_no).status == "posted"
    [posting_event] = [h for h in world.history(view.order_no) if h.kind == "posting"]
    assert posting_event.detail["duplicate"] is True and posting_event.detail["attempt"] == 2
    assert [b for b in world.open_bills()] == []
    assert len(world.messages()) == 1


def test_a_lost_answer_from_billing_is_retried_and_posts_once(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    world.billing.fail_after = 1
    assert world.payments.dispatch_postings() == 0
    posting = world.postings(view.order_no)
    assert posting.attempts == 1 and "connection lost" in posting.last_error
    assert posting.next_attempt_at == world.clock.now + dt.timedelta(seconds=2)
    world.clock.advance(seconds=2)
    assert world.payments.dispatch_postings() == 1
    assert world.ledger_payments() == 1


def test_failing_postings_back_off_and_are_flagged_stuck_then_still_retried(
        world: World) -> None:
    payments = world.fresh(flag_after_attempts=3)
    view = payments.create_order(cmd())
    world.notify(view.order_no)
    world.billing.fail_before = 4
    delays = []
    for _ in range(4):
        before = world.clock.now
        assert payments.dispatch_postings() == 0
        posting = world.postings(view.order_no)
        delays.append((posting.next_attempt_at - before).total_seconds())
        world.clock.now = posting.next_attempt_at
    assert delays == [2, 4, 8, 16]
    assert posting.status == "stuck" and posting.attempts == 4
    assert payments.dispatch_postings() == 1
    assert world.postings(view.order_no).status == "done"
    assert world.payments.get(view.order_no).status == "posted"
    errors = [h.detail for h in world.history(view.order_no) if h.kind == "posting"]
    assert [e["result"] for e in errors] == ["failed"] * 4 + ["posted"]
    assert errors[2]["stuck"] is True and errors[1]["stuck"] is False


def test_concurrent_dispatchers_post_once(world: World) -> None:
    views = [world.payments.create_order(cmd(key="a")),
             world.payments.create_order(cmd(key="b", biller="WATER", account="W-001"))]
    for view in views:
        world.notify(view.order_no)
    barrier = threading.Barrier(2)

    def run() -> int:
        barrier.wait()
        return world.fresh().dispatch_postings()

    with ThreadPoolExecutor(2) as pool:
        counts = [f.result() for f in [pool.submit(run), pool.submit(run)]]
    assert sum(counts) == 2
    assert world.ledger_payments() == 2
    assert len(world.billing.posted) == 2


def test_paid_bills_are_not_offered_again_until_posted(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    with pytest.raises(NothingToPay):
        world.payments.create_order(cmd(key="second"))
    world.payments.dispatch_postings()
    with pytest.raises(NothingToPay):
        world.payments.create_order(cmd(key="third"))


# --- no bill paid twice by accident ------------------------------------------------------


def bill_ids(world: World) -> tuple[int, int]:
    older, newer = sorted(world.open_bills(), key=lambda b: b.period)
    return older.id, newer.id


def test_a_new_order_for_the_same_bills_closes_the_earlier_one_at_the_channel_first(
        world: World) -> None:
    first = world.payments.create_order(cmd(key="phone-1"))
    second = world.payments.create_order(cmd(key="phone-2"))
    assert second.status == "pending" and second.order_no != first.order_no
    assert world.channel.calls.index(("close", first.order_no)) < len(world.channel.calls) - 1
    assert world.channel.trades[first.order_no].state == "closed"  # its cashier refuses now
    earlier = world.order(first.order_no)
    assert earlier.status.value == "closed" and earlier.settled
    [closed] = [h for h in world.history(first.order_no) if h.to_status == "closed"]
    assert "replaced by a new order" in closed.detail["reason"]
    with pytest.raises(InvalidTransition):
        world.payments.retry(first.order_no)


def test_an_order_for_other_bills_of_the_account_leaves_the_earlier_one_open(
        world: World) -> None:
    older, newer = bill_ids(world)
    first = world.payments.create_order(cmd(key="k1", bill_ids=(older,)))
    second = world.payments.create_order(cmd(key="k2", bill_ids=(newer,)))
    assert world.channel.count("close") == 0
    assert world.payments.get(first.order_no).status == "pending"
    assert world.payments.get(second.order_no).status == "pending"
    third = world.payments.create_order(cmd(key="k3"))  # both bills: both are closed
    assert {o for name, o in world.channel.calls if name == "close"} == {
        first.order_no, second.order_no}
    assert world.payments.get(third.order_no).amount_fen == 15050


def test_when_the_earlier_order_was_just_paid_the_new_order_is_refused(world: World) -> None:
    first = world.payments.create_order(cmd(key="phone-1"))
    world.channel.pay(first.order_no)  # paid a moment ago; its notification is on the way
    with pytest.raises(JustPaid, match=first.order_no):
        world.payments.create_order(cmd(key="phone-2"))
    taken = world.payments.get(first.order_no)
    assert taken.status == "paid"  # the payment the close ran into is taken at once
    assert world.postings(first.order_no).status == "pending"
    with world.uow_factory() as uow:
        assert uow.orders.by_idempotency_key("phone-2") is None  # nothing half-made


def test_when_the_channel_can_neither_close_nor_answer_no_second_order_is_made(
        world: World) -> None:
    first = world.payments.create_order(cmd(key="phone-1"))
    world.channel.fail_close = True
    world.channel.query_error = True
    with pytest.raises(PreviousOrderOpen):
        world.payments.create_order(cmd(key="phone-2"))
    assert world.payments.get(first.order_no).status == "pending"
    world.channel.fail_close = world.channel.query_error = False
    second = world.payments.create_order(cmd(key="phone-2"))  # the same key, later
    assert second.new and world.payments.get(first.order_no).status == "closed"


def test_a_payment_landing_on_a_replaced_order_is_an_overpayment_for_staff(
        world: World) -> None:
    first = world.payments.create_order(cmd(key="phone-1"))
    second = world.payments.create_order(cmd(key="phone-2"))
    world.notify(second.order_no)
    assert world.payments.dispatch_postings() == 1
    world.channel.trades[first.order_no].state = "pending"  # a channel that ignored close
    assert world.notify(first.order_no).status_code == 200  # acked: it must stop sending
    stale = world.order(first.order_no)
    assert stale.status.value == "disputed" and stale.flag == "overpayment"
    assert stale.channel_txn_id and stale.settled
    [dispute] = [h for h in world.history(first.order_no) if h.to_status == "disputed"]
    assert dispute.detail["bills_paid_by"] == second.order_no
    assert dispute.detail["amount_fen"] == 15050
    assert world.payments.dispatch_postings() == 0 and world.postings(first.order_no) is None
    with world.uow_factory() as uow:
        assert uow.accounts.get(*ACCOUNT).balance_fen == 0  # not made prepaid balance
        flagged = uow.orders.flagged_since(NOW)
    assert [o.order_no for o in flagged.items] == [first.order_no]
    assert world.ledger_payments() == 1
    world.notify(first.order_no, notification_id="again")  # a redelivery changes nothing
    assert world.order(first.order_no).status.value == "disputed"


def test_whichever_of_two_open_orders_is_paid_second_is_the_overpayment(
        world: World) -> None:
    """Two orders open at once for the same bills (two processes created them in the
    same instant, so neither saw the other): the second payment is not posted."""
    first = world.payments.create_order(cmd(key="phone-1"))
    with world.uow_factory() as uow:  # a twin made behind the first one's back
        twin = uow.orders.get(first.order_no)
        assert twin is not None
        twin.order_no, twin.idempotency_key = "SP20261101TWINTWINTWINTWIN", "twin"
        twin.events.clear()
        uow.orders.add(twin)
        uow.commit()
    world.channel.trades[twin.order_no] = type(world.channel.trades[first.order_no])(
        twin.order_no, twin.amount_fen)
    world.notify(twin.order_no)
    world.notify(first.order_no)
    assert world.payments.get(twin.order_no).status == "paid"
    assert world.payments.get(first.order_no).status == "disputed"
    assert world.payments.dispatch_postings() == 1


# --- retries of a failed attempt ----------------------------------------------------------


def test_a_failed_attempt_can_be_retried_up_to_three_times(world: World) -> None:
    view = world.payments.create_order(cmd())
    for n in (1, 2):
        world.notify(view.order_no, outcome="failed", reason="declined")
        failed = world.payments.get(view.order_no)
        assert failed.status == "pending" and failed.attempts_left == 3 - n
        assert failed.action == {}
        again = world.payments.retry(view.order_no)
        assert again.order_no == view.order_no and again.action
    assert world.channel.count("create_payment") == 3
    world.notify(view.order_no, outcome="failed")
    assert world.payments.get(view.order_no).status == "failed"
    with pytest.raises(AttemptsExhausted):
        world.payments.retry(view.order_no)
    assert world.channel.count("create_payment") == 3


def test_retry_of_an_open_attempt_returns_it_and_a_closed_order_is_refused(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    assert world.payments.retry(view.order_no).action == view.action
    assert world.channel.count("create_payment") == 1
    world.clock.advance(minutes=31)
    world.payments.reconcile_pending()
    with pytest.raises(InvalidTransition):
        world.payments.retry(view.order_no)
    with pytest.raises(OrderNotFound):
        world.payments.retry("SP20261101XXXXXXXXXXXXXXXX")


# --- never stuck ----------------------------------------------------------------------


def test_reconcile_takes_a_payment_nobody_notified(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.channel.pay(view.order_no)
    world.clock.advance(minutes=1)
    assert world.payments.reconcile_pending() == 0  # too early to ask
    assert world.channel.count("query") == 0
    world.clock.advance(minutes=2)
    assert world.payments.reconcile_pending() == 1
    assert world.payments.get(view.order_no).status == "paid"
    assert [h.kind for h in world.history(view.order_no)][-2:] == ["query", "state"]
    assert world.payments.dispatch_postings() == 1
    assert world.ledger_payments() == 1


def test_reconcile_leaves_a_pending_order_alone_and_asks_again_later(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.clock.advance(minutes=3)
    assert world.payments.reconcile_pending() == 0
    assert world.payments.reconcile_pending() == 0
    assert world.channel.count("query") == 1  # stamped: not asked on every round
    world.clock.advance(minutes=3)
    world.payments.reconcile_pending()
    assert world.channel.count("query") == 2
    assert world.payments.get(view.order_no).status == "pending"


def test_reconcile_closes_expired_orders_there_and_here(world: World) -> None:
    pending = world.payments.create_order(cmd())
    world.channel.fail_prepay = 1
    with pytest.raises(ChannelUnavailable) as info:
        world.payments.create_order(cmd(key="never-prepaid", biller="WATER", account="W-001"))
    world.clock.advance(minutes=31)
    assert world.payments.reconcile_pending() == 2
    assert world.payments.get(pending.order_no).status == "closed"
    assert world.payments.get(info.value.order_no).status == "closed"
    assert world.channel.trades[pending.order_no].state == "closed"
    assert ("close", info.value.order_no) not in world.channel.calls


def test_an_order_paid_while_being_closed_is_taken_not_closed(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.clock.advance(minutes=31)
    world.channel.fail_close = True
    real_query = world.channel.query
    answers = iter(["pending", "paid"])

    def query(order_no: str):  # paid between the first query and the close
        if next(answers) == "paid":
            world.channel.pay(order_no)
        return real_query(order_no)

    world.channel.query = query  # type: ignore[method-assign]
    assert world.payments.reconcile_pending() == 1
    assert world.payments.get(view.order_no).status == "paid"
    assert world.payments.dispatch_postings() == 1


def test_a_channel_that_does_not_answer_is_asked_again_later(world: World) -> None:
    view = world.payments.create_order(cmd())
    world.clock.advance(minutes=31)
    world.channel.query_error = True
    assert world.payments.reconcile_pending() == 0
    assert world.payments.get(view.order_no).status == "pending"
    world.channel.query_error = False
    assert world.payments.reconcile_pending() == 0  # touched: asked again only later
    world.clock.advance(minutes=2, seconds=1)
    assert world.payments.reconcile_pending() == 1
    assert world.payments.get(view.order_no).status == "closed"


# --- messages ---------------------------------------------------------------------------


def test_undelivered_messages_are_retried_with_back_off_then_marked_failed(
        world: World) -> None:
    view = world.payments.create_order(cmd())
    world.notify(view.order_no)
    world.payments.dispatch_postings()
    notifier = FakeNotifier(fail=1)
    assert world.payments.deliver_messages(notifier) == 0
    [message] = world.messages()
    assert message.status == "queued" and message.attempts == 1 and "down" in message.error
    assert world.payments.deliver_messages(notifier) == 0  # not due yet
    world.clock.advance(seconds=10)
    assert world.payments.deliver_messages(notifier) == 1
    assert world.messages()[0].status == "sent"

    with world.uow_factory() as uow:
        from selfpay.services.ports import Message

        uow.messages.add(Message(None, "alert", "ops@example.cn", "s", "b", world.clock.now))
        uow.commit()
    notifier = FakeNotifier(fail=99)
    for _ in range(6):
        world.payments.deliver_messages(notifier)
        world.clock.advance(minutes=10)
    alert = world.messages()[0]
    assert alert.kind == "alert" and alert.status == "failed" and alert.attempts == 5


def test_the_payer_is_remembered_for_my_accounts(world: World) -> None:
    view = world.payments.create_order(cmd(payer="openid-123"))
    world.notify(view.order_no)
    with world.uow_factory() as uow:
        assert uow.payers.list("openid-123") == [ACCOUNT]


def test_an_order_is_priced_from_a_live_answer_never_from_an_outage_copy(
        world: World) -> None:
    """In a bridge outage a page may show the cached account; an order must not be priced
    from it (its bills may have been settled meanwhile): it is refused, nothing stored."""

    class Outage:
        def __init__(self, inner: LedgerBillingSystem) -> None:
            self.copy = inner.account_summary(*ACCOUNT)
            self.asked_fresh = 0

        def account_summary(self, biller: str, account: str, *, fresh: bool = False):
            if fresh:
                self.asked_fresh += 1
                raise BillingSystemError("billing system unavailable, try later")
            return self.copy

    outage = Outage(world.billing.inner)
    payments = world.fresh()
    payments._billing = outage  # noqa: SLF001 - the web tier's view during the outage
    assert payments.payable(*ACCOUNT).total_due_fen == 15050  # the page: the copy
    with pytest.raises(BillingSystemError, match="try later"):
        payments.create_order(cmd(key="in-outage"))
    assert outage.asked_fresh == 1
    with world.uow_factory() as uow:
        assert uow.orders.by_idempotency_key("in-outage") is None


def test_junk_posted_to_the_notify_url_is_kept_only_within_a_budget(world: World) -> None:
    """Anyone can post to /api/v1/notify/*: forged bodies are refused and kept for staff
    only while the per-channel budget lasts, so that junk cannot fill the database."""
    from selfpay.adapters.ratelimit import event_budget, memory_store

    payments = world.fresh(record_rejected=event_budget(memory_store(), name="t",
                                                        per_minute=5))
    view = payments.create_order(cmd())
    headers, body = world.channel.notification(view.order_no)
    for i in range(40):
        answer = payments.handle_notification("fake", {**headers, "X-Fake-Signature": f"x{i}"},
                                              body)
        assert answer.status_code != 200
    rejected = [n for n in world.notifications() if not n.verified]
    assert len(rejected) == 5
    assert payments.handle_notification("fake", headers, body).status_code == 200
    assert payments.get(view.order_no).status == "paid"  # the real one still counts
