from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfpay.domain.accounts import Bill, BillStatus
from selfpay.domain.errors import InvalidAmount
from selfpay.domain.ledger_errors import BillNotOpen
from selfpay.services.ledger import allocate


@st.composite
def open_bills(draw):
    n = draw(st.integers(min_value=0, max_value=8))
    periods = draw(st.lists(st.integers(min_value=0, max_value=47), min_size=n, max_size=n,
                            unique=True))
    bills = []
    for i, p in enumerate(periods, start=1):
        amount = draw(st.integers(min_value=1, max_value=10**7))
        paid = draw(st.integers(min_value=0, max_value=amount - 1))
        bills.append(Bill(i, "ELEC", "1", f"{2024 + p // 12}-{p % 12 + 1:02d}", amount, None,
                          BillStatus.OPEN, paid))
    return draw(st.permutations(bills))


@given(open_bills(), st.integers(min_value=1, max_value=10**8))
def test_allocation_adds_up_never_overpays_and_goes_oldest_first(bills, amount):
    applied, surplus = allocate(bills, amount)
    by_id = {b.id: b for b in bills}
    assert sum(fen for _, fen in applied) + surplus == amount
    assert surplus >= 0
    assert all(0 < fen <= by_id[i].outstanding_fen for i, fen in applied)
    assert len({i for i, _ in applied}) == len(applied)
    oldest_first = sorted(bills, key=lambda b: b.period)
    assert [i for i, _ in applied] == [b.id for b in oldest_first[: len(applied)]]
    # every bill before the last one touched is paid in full
    for bill_id, fen in applied[:-1]:
        assert fen == by_id[bill_id].outstanding_fen
    if surplus:
        assert len(applied) == len(bills)
        assert all(fen == by_id[i].outstanding_fen for i, fen in applied)


@given(open_bills(), st.integers(min_value=1, max_value=10**8), st.data())
def test_allocation_to_chosen_bills_touches_only_them(bills, amount, data):
    if not bills:
        return
    chosen = data.draw(st.lists(st.sampled_from([b.id for b in bills]), min_size=1,
                                unique=True))
    applied, surplus = allocate(bills, amount, chosen)
    assert {i for i, _ in applied} <= set(chosen)
    assert sum(fen for _, fen in applied) + surplus == amount


def test_paid_cancelled_and_unknown_bills_cannot_be_chosen():
    bills = [Bill(1, "E", "1", "2026-09", 100, None, BillStatus.PAID, 100),
             Bill(2, "E", "1", "2026-10", 100, None, BillStatus.CANCELLED),
             Bill(3, "E", "1", "2026-11", 100, None)]
    for bill_id in (1, 2, 4):
        with pytest.raises(BillNotOpen):
            allocate(bills, 100, (bill_id,))
    assert allocate(bills, 150) == (((3, 100),), 50)


def test_no_bills_means_everything_is_prepaid():
    assert allocate([], 999) == ((), 999)


@pytest.mark.parametrize("amount", [0, -1, 1.5, True])
def test_amount_must_be_positive_integer_fen(amount):
    with pytest.raises(InvalidAmount):
        allocate([], amount)
