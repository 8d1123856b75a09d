from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from selfpay.adapters.billing.ledger import LedgerBillingSystem, build
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.config import Settings
from selfpay.domain.accounts import BillStatus, PaymentPosting
from selfpay.domain.errors import AccountNotFound, InvalidAmount
from selfpay.domain.ledger_errors import BillNotOpen, PaymentIdConflict
from selfpay.services import ledger

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
ACC = ("ELEC", "0012345678")


def posting(payment_id: str, amount_fen: int, **kw) -> PaymentPosting:
    return PaymentPosting(payment_id, kw.pop("biller", ACC[0]), kw.pop("account", ACC[1]),
                          amount_fen, **kw)


def open_bills(uow_factory, biller="ELEC", account="0012345678"):
    with uow_factory() as uow:
        return {b.period: b for b in uow.bills.open_for(biller, account)}


def balance(uow_factory, biller="ELEC", account="0012345678"):
    with uow_factory() as uow:
        return uow.accounts.get(biller, account).balance_fen


def test_payment_pays_the_oldest_bill_first(uow_factory, seeded):
    result = ledger.post_payment(uow_factory(), posting("p1", 12000), NOW)
    sep, oct_ = seeded.bill_ids[(*ACC, "2026-09")], seeded.bill_ids[(*ACC, "2026-10")]
    assert result.applied == ((sep, 10000), (oct_, 2000))
    assert (result.surplus_fen, result.balance_fen, result.duplicate) == (0, 0, False)
    bills = open_bills(uow_factory)
    assert list(bills) == ["2026-10"] and bills["2026-10"].paid_fen == 2000


def test_surplus_goes_to_the_prepaid_balance(uow_factory, seeded):
    result = ledger.post_payment(uow_factory(), posting("p1", 20000), NOW)
    assert result.surplus_fen == 20000 - 15050 and result.balance_fen == 4950
    assert open_bills(uow_factory) == {}
    assert balance(uow_factory) == 4950
    again = ledger.post_payment(uow_factory(), posting("p2", 100), NOW)
    assert again.applied == () and again.balance_fen == 5050


def test_posting_twice_changes_nothing_and_says_duplicate(uow_factory, seeded):
    first = ledger.post_payment(uow_factory(), posting("p1", 20000), NOW)
    second = ledger.post_payment(uow_factory(), posting("p1", 20000), NOW)
    assert second.duplicate and not first.duplicate
    assert (second.applied, second.surplus_fen, second.balance_fen) == (
        first.applied, first.surplus_fen, first.balance_fen)
    assert balance(uow_factory) == 4950


def test_reusing_a_payment_id_for_another_amount_is_refused(uow_factory, seeded):
    ledger.post_payment(uow_factory(), posting("p1", 100), NOW)
    with pytest.raises(PaymentIdConflict):
        ledger.post_payment(uow_factory(), posting("p1", 200), NOW)
    with pytest.raises(PaymentIdConflict):
        ledger.post_payment(uow_factory(), posting("p1", 100, account="0099999999"), NOW)


def test_chosen_bills_only(uow_factory, seeded):
    oct_ = seeded.bill_ids[(*ACC, "2026-10")]
    result = ledger.post_payment(uow_factory(), posting("p1", 6000, bill_ids=(oct_,)), NOW)
    assert result.applied == ((oct_, 5050),) and result.surplus_fen == 950
    assert list(open_bills(uow_factory)) == ["2026-09"]
    with pytest.raises(BillNotOpen):  # paid now
        ledger.post_payment(uow_factory(), posting("p2", 100, bill_ids=(oct_,)), NOW)
    water = seeded.bill_ids[("WATER", "W-001", "2026-10")]
    with pytest.raises(BillNotOpen):  # another account's bill
        ledger.post_payment(uow_factory(), posting("p3", 100, bill_ids=(water,)), NOW)
    assert balance(uow_factory) == 950


def test_unknown_account_and_bad_amounts(uow_factory, seeded):
    with pytest.raises(AccountNotFound):
        ledger.post_payment(uow_factory(), posting("p1", 100, account="404"), NOW)
    with pytest.raises(InvalidAmount):
        ledger.post_payment(uow_factory(), posting("p2", 0), NOW)
    with uow_factory() as uow:
        assert uow.payments.get("p1") is None


def test_account_summary_is_masked(uow_factory, seeded):
    summary = ledger.account_summary(uow_factory(), "water", "w-001")
    assert summary.masked_name == "王*" and summary.balance_fen == 500
    assert [b.period for b in summary.open_bills] == ["2026-10"]
    assert summary.total_due_fen == 3000  # the prepaid 500 is shown, not deducted
    with pytest.raises(AccountNotFound):
        ledger.account_summary(uow_factory(), "GAS", "1")


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_double_post_of_one_payment_id_pays_once(uow_factory, seeded, round_):
    barrier = threading.Barrier(2)

    def post():
        barrier.wait()
        return ledger.post_payment(uow_factory(), posting("twin", 20000), NOW)

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(post), pool.submit(post)]]
    assert sorted(r.duplicate for r in results) == [False, True]
    assert results[0].applied == results[1].applied
    assert balance(uow_factory) == 4950
    assert open_bills(uow_factory) == {}


def test_concurrent_payments_to_one_account_lose_no_update(uow_factory, seeded):
    barrier = threading.Barrier(4)

    def post(i):
        barrier.wait()
        return ledger.post_payment(uow_factory(), posting(f"p{i}", 5000), NOW)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(post, range(4)))
    assert not any(r.duplicate for r in results)
    assert sum(fen for r in results for _, fen in r.applied) == 15050
    assert balance(uow_factory) == 20000 - 15050


def test_ledger_billing_system(uow_factory, seeded):
    system = LedgerBillingSystem(uow_factory, clock=lambda: NOW)
    assert system.account_summary(*ACC).total_due_fen == 15050
    assert system.post_payment(posting("p1", 15050)).balance_fen == 0
    assert system.account_summary(*ACC).open_bills == ()
    with uow_factory() as uow:
        assert uow.payments.get("p1").posted_at == NOW


def test_build_from_settings(db_url, engine, seeded):
    system = build(Settings(database_url=db_url))
    try:
        result = system.post_payment(posting("p1", 100))
        assert result.applied[0][1] == 100
        assert system.account_summary(*ACC).open_bills[0].status is BillStatus.OPEN
    finally:
        system.close()


def test_twin_that_wins_the_insert_is_reported_as_duplicate(engine, uow_factory, seeded):
    """Both twins passed the look-ups before either inserted: the loser's insert hits
    the primary key, it rolls back and reports the winner's result."""
    first = ledger.post_payment(uow_factory(), posting("twin", 20000), NOW)

    class BlindPayments:  # the loser's view before the winner committed
        def __init__(self, inner):
            self.inner = inner
            self.blind = True

        def get(self, payment_id):
            return None if self.blind else self.inner.get(payment_id)

        def add(self, payment):
            self.blind = False
            self.inner.add(payment)

    class RacingUow(SqlAlchemyUnitOfWork):
        blocks = 0

        def __enter__(self):
            super().__enter__()
            self.blocks += 1
            if self.blocks == 1:
                self.payments = BlindPayments(self.payments)
            return self

    second = ledger.post_payment(RacingUow(engine), posting("twin", 20000), NOW)
    assert second.duplicate and second.applied == first.applied
    assert balance(uow_factory) == 4950
