"""The order state machine and the server-side amount computation."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfpay.domain.errors import InvalidInput
from selfpay.domain.orders import (
    ALLOWED,
    MAX_ATTEMPTS,
    AlreadyPaidElsewhere,
    AmountMismatch,
    AttemptsExhausted,
    Flag,
    InvalidTransition,
    NothingToPay,
    Order,
    OrderStatus,
    choose_bills,
    new_order_no,
)

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
S = OrderStatus


def make_order(status: OrderStatus = S.CREATED, amount_fen: int = 15050) -> Order:
    return Order(
        order_no="SP20261101ABCDEFGHJKLMNPQR", idempotency_key="k", request_hash="h",
        biller="ELEC", account="0012345678", bill_ids=(1, 2), amount_fen=amount_fen,
        channel="fake", created_at=NOW, expires_at=NOW + dt.timedelta(minutes=30),
        status=status,
    )


@pytest.mark.parametrize(("start", "target"), list(itertools.product(S, S)))
def test_every_transition_is_allowed_exactly_when_the_table_says_so(start, target):
    order = make_order(start)
    if target in ALLOWED[start]:
        order._move_to(target)
        assert order.status is target
        assert order.events[-1].from_status == start.value
        assert order.events[-1].to_status == target.value
    else:
        with pytest.raises(InvalidTransition):
            order._move_to(target)
        assert order.status is start
        assert order.events == []


def test_the_table_covers_every_status_and_posted_is_final():
    assert set(ALLOWED) == set(S)
    assert ALLOWED[S.POSTED] == frozenset()
    assert ALLOWED[S.DISPUTED] == frozenset()  # staff refund it; nothing moves it on
    assert S.DISPUTED not in ALLOWED[S.PAID]  # money already taken for posting stays so
    assert S.CREATED not in set().union(*ALLOWED.values())  # nothing goes back to created


@pytest.mark.parametrize("status", [S.CREATED, S.PENDING])
def test_an_open_order_starts_an_attempt(status):
    order = make_order(status)
    order.start_attempt({"kind": "code_url", "code_url": "weixin://x"})
    assert order.status is S.PENDING
    assert order.attempts == 1
    assert order.action["code_url"] == "weixin://x"


@pytest.mark.parametrize("status", [S.PAID, S.POSTED, S.CLOSED, S.FAILED])
def test_a_settled_order_refuses_a_new_attempt(status):
    with pytest.raises(InvalidTransition):
        make_order(status).start_attempt({})


def test_mark_paid_moves_to_paid_once_and_a_repeat_of_the_same_txn_is_a_no_op():
    order = make_order()
    order.start_attempt({"kind": "redirect"})
    assert order.mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW) is True
    assert order.status is S.PAID and order.channel_txn_id == "T1" and order.action == {}
    events = len(order.events)
    assert order.mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW) is False
    assert len(order.events) == events
    order.mark_posted(posted_at=NOW, duplicate=False)
    assert order.mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW) is False
    assert order.status is S.POSTED


def test_a_second_channel_transaction_for_a_paid_order_is_refused():
    order = make_order(S.PENDING)
    order.mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW)
    with pytest.raises(AlreadyPaidElsewhere):
        order.mark_paid(channel_txn_id="T2", amount_fen=15050, paid_at=NOW)
    assert order.channel_txn_id == "T1"


@pytest.mark.parametrize("amount", [15049, 15051, 0, -15050, 150.50, "15050", True])
def test_a_payment_of_another_amount_is_refused_and_changes_nothing(amount):
    order = make_order(S.PENDING)
    with pytest.raises(AmountMismatch):
        order.mark_paid(channel_txn_id="T1", amount_fen=amount, paid_at=NOW)
    assert order.status is S.PENDING and order.channel_txn_id == "" and order.events == []


@pytest.mark.parametrize("status", [S.CLOSED, S.FAILED])
def test_a_late_payment_after_close_or_failure_is_taken_and_marked_late(status):
    order = make_order(status)
    assert order.mark_paid(channel_txn_id="T9", amount_fen=15050, paid_at=NOW)
    assert order.status is S.PAID
    assert order.events[-1].detail["late"] is True


def test_a_created_order_cannot_be_paid_without_an_attempt():
    with pytest.raises(InvalidTransition):
        make_order(S.CREATED).mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW)


def test_three_failed_attempts_fail_the_order():
    order = make_order()
    for n in range(1, MAX_ATTEMPTS + 1):
        order.start_attempt({"kind": "redirect", "n": n})
        order.attempt_failed("declined")
        assert order.failed_attempts == n
        assert order.attempts_left == MAX_ATTEMPTS - n
        assert order.action == {}
    assert order.status is S.FAILED
    with pytest.raises(InvalidTransition):
        order.start_attempt({})


def test_attempts_are_exhausted_even_when_the_order_is_still_pending():
    order = make_order(S.PENDING)
    order.failed_attempts = MAX_ATTEMPTS
    with pytest.raises(AttemptsExhausted):
        order.start_attempt({})


def test_a_failure_report_after_payment_changes_nothing():
    order = make_order(S.PENDING)
    order.mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW)
    events = list(order.events)
    order.attempt_failed("late failure")
    assert order.status is S.PAID and order.failed_attempts == 0 and order.events == events


def test_posting_is_recorded_once():
    order = make_order(S.PAID)
    order.mark_posted(posted_at=NOW, duplicate=True)
    order.mark_posted(posted_at=NOW + dt.timedelta(seconds=5), duplicate=False)
    assert order.status is S.POSTED and order.posted_at == NOW
    assert [e.to_status for e in order.events] == ["posted"]
    assert order.events[0].detail == {"duplicate": True}


@pytest.mark.parametrize("amount", [0, -1, 1.5, True])
def test_an_order_must_have_a_positive_integer_amount(amount):
    with pytest.raises(NothingToPay):
        make_order(amount_fen=amount)


def test_order_numbers_fit_wechat_out_trade_no_and_do_not_repeat():
    numbers = {new_order_no(NOW) for _ in range(2000)}
    assert len(numbers) == 2000
    for no in numbers:
        assert re.fullmatch(r"SP20261101[A-HJ-NP-Z2-9]{16}", no)
        assert 6 <= len(no) <= 32


bills_st = st.dictionaries(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=10**10),
    max_size=12,
)


@given(bills_st, st.data())
def test_the_amount_is_the_sum_of_the_chosen_outstanding_bills(bills, data):
    open_bills = list(bills.items())
    chosen_ids = data.draw(st.lists(st.sampled_from(sorted(bills)), unique=True)
                           if bills else st.just([]))
    if not bills:
        with pytest.raises(NothingToPay):
            choose_bills(open_bills, tuple(chosen_ids))
        return
    chosen, amount = choose_bills(open_bills, tuple(chosen_ids))
    expected_ids = sorted(chosen_ids) if chosen_ids else sorted(bills)
    assert list(chosen) == expected_ids
    assert amount == sum(bills[b] for b in expected_ids)
    assert type(amount) is int


@given(bills_st.filter(bool), st.integers(min_value=10**6 + 1))
def test_an_unknown_bill_is_refused_never_ignored(bills, stranger):
    known = sorted(bills)[0]
    with pytest.raises(InvalidInput, match="(?i)not an open bill"):
        choose_bills(list(bills.items()), (known, stranger))


@given(bills_st.filter(bool))
def test_a_bill_chosen_twice_is_refused(bills):
    known = sorted(bills)[0]
    with pytest.raises(InvalidInput, match="twice"):
        choose_bills(list(bills.items()), (known, known))


def test_a_failure_counts_once_and_only_for_the_live_attempt():
    order = make_order()
    order.start_attempt({"kind": "redirect"})
    assert order.attempt_failed("declined", attempt=1) is True
    assert order.attempt_failed("declined", attempt=1) is False  # the same report again
    assert order.attempt_failed("declined") is False  # nor by a channel that cannot tell
    order.start_attempt({"kind": "redirect"})
    assert order.attempt_failed("late report", attempt=1) is False
    assert order.failed_attempts == 1 and order.action == {"kind": "redirect"}
    assert order.attempt_failed("declined", attempt=2) is True
    assert order.failed_attempts == 2


@pytest.mark.parametrize("status", [S.PENDING, S.CLOSED, S.FAILED])
def test_another_amount_is_disputed_and_a_repeat_of_it_is_a_no_op(status):
    order = make_order(status)
    with pytest.raises(AmountMismatch):
        order.mark_paid(channel_txn_id="T1", amount_fen=1, paid_at=NOW)
    order.dispute(Flag.AMOUNT_MISMATCH, channel_txn_id="T1", amount_fen=1, paid_at=NOW)
    assert order.status is S.DISPUTED and order.settled and order.flag == "amount_mismatch"
    assert order.mark_paid(channel_txn_id="T1", amount_fen=1, paid_at=NOW) is False
    with pytest.raises(AlreadyPaidElsewhere):
        order.mark_paid(channel_txn_id="T2", amount_fen=15050, paid_at=NOW)


def test_a_close_is_settled_only_when_the_channel_confirmed_it_or_never_had_it():
    never_prepaid = make_order()
    never_prepaid.close("expired", confirmed=False)
    assert never_prepaid.settled
    prepaid = make_order()
    prepaid.start_attempt({"kind": "redirect"})
    prepaid.close("staff", confirmed=False)
    assert not prepaid.settled
    prepaid.confirm_settled("closed at the channel")
    assert prepaid.settled and prepaid.events[-1].detail == {"settled": "closed at the channel"}


@pytest.mark.parametrize("status", [S.CLOSED, S.FAILED])
def test_a_late_payment_is_flagged_for_staff(status):
    order = make_order(status)
    assert order.mark_paid(channel_txn_id="T1", amount_fen=15050, paid_at=NOW)
    assert order.flag == "late" and order.flagged_at == NOW and order.settled
