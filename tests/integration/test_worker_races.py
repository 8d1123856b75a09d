"""Two workers racing on PostgreSQL (each with its own connection pool, as two processes
on two machines would have): postings and messages are claimed one at a time under
SKIP LOCKED, each for a lease, under a fencing token. No billing call or message is
made twice by racing workers, and a worker whose lease ran out cannot overwrite the
outcome of the claim that took over."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine, func, select

from fakes import FakeChannel
from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.db import tables as t
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.domain.accounts import Account, Bill, Biller, PaymentPosting, PostingResult
from selfpay.services.payments import CreateOrder, Payments
from selfpay.services.ports import BillingSystemError, Message, NotifierError

# PostgreSQL only: SQLite has one writer at a time, so there is no race to prove there.
pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=60)
ACCOUNTS = 30


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self.now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.now += dt.timedelta(**delta)


@dataclass
class CountingBilling:
    """The ledger, counting calls per payment id; `slow_s` keeps each call in flight
    long enough for the other worker to try the same row."""

    inner: LedgerBillingSystem
    slow_s: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: Callable[[PaymentPosting], None] | None = None

    def account_summary(self, biller: str, account: str, *,  # noqa: ANN201
                        fresh: bool = False):
        return self.inner.account_summary(biller, account, fresh=fresh)

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        with self.lock:
            self.calls[posting.payment_id] += 1
        if self.gate is not None:
            self.gate(posting)
        if self.slow_s:
            time.sleep(self.slow_s)
        return self.inner.post_payment(posting)


@dataclass
class Process:
    """One worker process: its own engine (pool) and Payments over the shared database."""

    engine: Engine
    payments: Payments

    def uow(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine)


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Clock, CountingBilling, FakeChannel,
                                         Callable[[], Process]]]:
    url = db_url
    upgrade(url)
    engines: list[Engine] = []
    clock = Clock()
    channel = FakeChannel()
    seed_engine = make_engine(url)
    engines.append(seed_engine)
    with SqlAlchemyUnitOfWork(seed_engine) as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.accounts.upsert_many([Account("ELEC", f"{i:010d}", "张三", "") for i in
                                  range(ACCOUNTS)])
        uow.bills.add_many([Bill(None, "ELEC", f"{i:010d}", "2026-10", 1000 + i, None)
                            for i in range(ACCOUNTS)])
        uow.commit()
    billing = CountingBilling(LedgerBillingSystem(lambda: SqlAlchemyUnitOfWork(seed_engine),
                                                  clock))

    def process() -> Process:
        engine = make_engine(url)
        engines.append(engine)
        payments = Payments(uow_factory=lambda: SqlAlchemyUnitOfWork(engine), billing=billing,
                            channels={"fake": channel}, notify_base_url="https://pay.example.cn",
                            clock=clock, posting_lease=LEASE)
        return Process(engine, payments)

    try:
        yield clock, billing, channel, process
    finally:
        for engine in engines:
            engine.dispose()


def _pay(p: Process, channel: FakeChannel, n: int) -> list[str]:
    """n orders, each paid by a verified notification: n postings due."""
    order_nos = []
    for i in range(n):
        view = p.payments.create_order(CreateOrder(
            idempotency_key=f"k{i}", biller="ELEC", account=f"{i:010d}", channel="fake",
            email=f"p{i}@example.cn"))
        headers, body = channel.notification(view.order_no)
        assert p.payments.handle_notification("fake", headers, body).status_code == 200
        order_nos.append(view.order_no)
    return order_nos


def _race(*fns: Callable[[], int]) -> list[int]:
    barrier = threading.Barrier(len(fns))

    def run(fn: Callable[[], int]) -> int:
        barrier.wait()
        total = 0
        while True:  # until the outbox is empty for this worker
            got = fn()
            total += got
            if got == 0:
                return total

    with ThreadPoolExecutor(len(fns)) as pool:
        return [f.result() for f in [pool.submit(run, fn) for fn in fns]]


def test_two_workers_racing_post_every_order_once_and_queue_one_receipt_each(world) -> None:
    clock, billing, channel, process = world
    a, b = process(), process()
    order_nos = _pay(a, channel, ACCOUNTS)
    billing.slow_s = 0.01  # each call in flight while the other worker looks for work

    counts = _race(lambda: a.payments.dispatch_postings(limit=5),
                   lambda: b.payments.dispatch_postings(limit=5))

    assert sum(counts) == ACCOUNTS
    assert all(c > 0 for c in counts), f"one worker did everything: {counts}"
    assert billing.calls == Counter({no: 1 for no in order_nos})  # never called twice
    with a.uow() as uow:
        statuses = Counter(uow.connection.execute(select(t.orders.c.status)).scalars())
        receipts = Counter(uow.connection.execute(
            select(t.messages.c.to).where(t.messages.c.kind == "receipt")).scalars())
        ledger = uow.connection.execute(
            select(func.count()).select_from(t.ledger_payments)).scalar_one()
    assert statuses == Counter({"posted": ACCOUNTS})
    assert ledger == ACCOUNTS
    assert len(receipts) == ACCOUNTS and set(receipts.values()) == {1}


def test_two_workers_racing_send_every_message_once(world) -> None:
    clock, billing, channel, process = world
    a, b = process(), process()
    with a.uow() as uow:
        for i in range(40):
            uow.messages.add(Message(id=None, kind="sms_code", to=f"1380000{i:04d}",
                                     subject="", body="验证码 ******", created_at=NOW))
        uow.commit()
    sent: Counter[int] = Counter()
    lock = threading.Lock()

    class SlowNotifier:
        def send(self, message: Message) -> None:
            time.sleep(0.005)
            with lock:
                sent[message.id or 0] += 1

    notifier = SlowNotifier()
    counts = _race(lambda: a.payments.deliver_messages(notifier, limit=4),
                   lambda: b.payments.deliver_messages(notifier, limit=4))

    assert sum(counts) == 40 and all(c > 0 for c in counts)
    assert len(sent) == 40 and set(sent.values()) == {1}
    with a.uow() as uow:
        assert {m.status for m in uow.messages.list(limit=100).items} == {"sent"}


def test_a_stale_claims_failure_cannot_overwrite_the_live_claim(world) -> None:
    """Worker A's billing call hangs past its lease; worker B claims the posting (a new
    fencing token) and is in flight when A's call finally fails. A's failure must not
    push the row back into the queue (a third worker would call billing again while B is
    still in flight) nor count as a failed attempt; B's outcome is the one kept."""
    clock, billing, channel, process = world
    a, b = process(), process()
    [order_no] = _pay(a, channel, 1)
    a_in_flight, a_may_fail = threading.Event(), threading.Event()
    b_in_flight, b_may_finish = threading.Event(), threading.Event()
    callers: list[str] = []

    def gate(posting: PaymentPosting) -> None:
        me = threading.current_thread().name
        callers.append(me)
        if me == "worker-a":
            a_in_flight.set()
            assert a_may_fail.wait(10)
            raise BillingSystemError("timed out (worker A)")
        b_in_flight.set()
        assert b_may_finish.wait(10)

    billing.gate = gate
    results: dict[str, int] = {}
    thread_a = threading.Thread(target=lambda: results.__setitem__(
        "a", a.payments.dispatch_postings()), name="worker-a")
    thread_a.start()
    assert a_in_flight.wait(10)
    with a.uow() as uow:
        assert uow.postings.get(order_no).claim == 1

    clock.advance(seconds=LEASE.total_seconds() + 1)  # A's lease runs out
    thread_b = threading.Thread(target=lambda: results.__setitem__(
        "b", b.payments.dispatch_postings()), name="worker-b")
    thread_b.start()
    assert b_in_flight.wait(10)
    a_may_fail.set()  # A's late failure arrives while B holds the live claim
    thread_a.join(10)
    with a.uow() as uow:
        posting = uow.postings.get(order_no)
        history = uow.orders.history(order_no)
    assert posting.claim == 2 and posting.attempts == 2
    assert posting.next_attempt_at == NOW + dt.timedelta(seconds=61) + LEASE  # B's lease
    assert posting.last_error == "" and posting.status == "pending"
    assert not [h for h in history if h.kind == "posting" and h.detail["result"] == "failed"]

    # and a third worker finds nothing to do while B is in flight
    assert process().payments.dispatch_postings() == 0
    b_may_finish.set()
    thread_b.join(10)
    assert results == {"a": 0, "b": 1}
    assert callers == ["worker-a", "worker-b"]
    with a.uow() as uow:
        assert uow.orders.get(order_no).status.value == "posted"
        assert uow.postings.get(order_no).status == "done"
        assert len(uow.messages.list(kind="receipt").items) == 1


def test_a_stale_claims_success_is_not_written_over_the_live_claim(world) -> None:
    """A's call succeeds only after B re-claimed the row: A's outcome is dropped (no
    receipt from A), B's call is answered as a duplicate by billing and B finishes it:
    one payment in the ledger, one receipt."""
    clock, billing, channel, process = world
    a, b = process(), process()
    [order_no] = _pay(a, channel, 1)
    a_in_flight, a_may_finish = threading.Event(), threading.Event()

    def gate(posting: PaymentPosting) -> None:
        if threading.current_thread().name == "worker-a":
            a_in_flight.set()
            assert a_may_finish.wait(10)

    billing.gate = gate
    results: dict[str, int] = {}
    thread_a = threading.Thread(target=lambda: results.__setitem__(
        "a", a.payments.dispatch_postings()), name="worker-a")
    thread_a.start()
    assert a_in_flight.wait(10)
    clock.advance(seconds=LEASE.total_seconds() + 1)
    with b.uow() as uow:  # B claims, as its dispatch would, and has not posted yet
        claimed = uow.postings.claim_due(clock(), lease_until=clock() + LEASE)
        uow.commit()
    assert claimed is not None and claimed.claim == 2
    a_may_finish.set()
    thread_a.join(10)
    assert results["a"] == 0  # A's outcome was refused
    with a.uow() as uow:
        assert uow.orders.get(order_no).status.value == "paid"  # not marked by A
        assert uow.messages.list(kind="receipt").items == []

    clock.advance(seconds=LEASE.total_seconds() + 1)  # B "died"; its lease runs out too
    assert b.payments.dispatch_postings() == 1
    with a.uow() as uow:
        assert uow.orders.get(order_no).status.value == "posted"
        assert len(uow.messages.list(kind="receipt").items) == 1
        assert uow.connection.execute(
            select(func.count()).select_from(t.ledger_payments)).scalar_one() == 1
    assert billing.calls[order_no] == 2  # the second answered as a duplicate


def test_a_stale_message_claim_cannot_mark_a_sent_message_failed(world) -> None:
    clock, billing, channel, process = world
    a, b = process(), process()
    with a.uow() as uow:
        uow.messages.add(Message(id=None, kind="receipt", to="p@example.cn", subject="s",
                                 body="b", created_at=NOW))
        uow.commit()
    a_in_flight, a_may_fail = threading.Event(), threading.Event()

    class Hanging:
        def send(self, message: Message) -> None:
            a_in_flight.set()
            assert a_may_fail.wait(10)
            raise NotifierError("smtp timed out")

    class Fine:
        sent: list[int] = []

        def send(self, message: Message) -> None:
            self.sent.append(message.id or 0)

    thread_a = threading.Thread(target=lambda: a.payments.deliver_messages(Hanging()))
    thread_a.start()
    assert a_in_flight.wait(10)
    clock.advance(seconds=61)
    fine = Fine()
    assert b.payments.deliver_messages(fine) == 1
    a_may_fail.set()
    thread_a.join(10)
    with a.uow() as uow:
        [message] = uow.messages.list().items
    assert message.status == "sent" and message.attempts == 0 and message.error == ""


def test_a_committed_outbox_row_wakes_a_listening_worker_and_a_rolled_back_one_does_not(
        world, db_url: str) -> None:
    from selfpay.adapters.db.listener import WakeListener

    clock, billing, channel, process = world
    woken = threading.Event()
    listener = WakeListener(db_url, woken.set)
    listener.start()
    try:
        time.sleep(1.5)  # LISTEN is in place
        p = process()
        with p.uow() as uow:
            uow.messages.add(Message(id=None, kind="sms_code", to="13800000000", subject="",
                                     body="******", created_at=NOW))
            uow.rollback()
        assert not woken.wait(1.5), "woken by a transaction that was rolled back"
        with p.uow() as uow:
            uow.messages.add(Message(id=None, kind="sms_code", to="13800000000", subject="",
                                     body="******", created_at=NOW))
            uow.commit()
        assert woken.wait(5), "the commit did not wake the listener"
    finally:
        listener.stop()
