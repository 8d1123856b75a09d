"""The payments repositories' own promises, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace

import pytest

from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.domain.orders import Order, OrderEvent
from selfpay.services.ports import (
    DuplicateKey,
    Message,
    Posting,
    SmsCode,
    StaleOrder,
)

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
UowFactory = Callable[[], SqlAlchemyUnitOfWork]


def order(no: str = "SP20261101AAAAAAAAAAAAAAAA", key: str = "k1") -> Order:
    o = Order(order_no=no, idempotency_key=key, request_hash="h", biller="ELEC",
              account="0012345678", bill_ids=(2, 1), amount_fen=15050, channel="fake",
              created_at=NOW, expires_at=NOW + dt.timedelta(minutes=30), email="a@b.cn")
    o.events.append(OrderEvent("state", "", "created", {"bills": [[1, "2026-10", 5050]]}))
    return o


def test_orders_round_trip_with_history_and_a_unique_key(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        uow.orders.add(order())
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(DuplicateKey):
            uow.orders.add(order(no="SP20261101BBBBBBBBBBBBBBBB"))
        uow.rollback()
        stored = uow.orders.by_idempotency_key("k1")
        assert stored is not None and stored.bill_ids == (2, 1) and stored.created_at == NOW
        assert stored.events == [] and stored.version == 0
        [entry] = uow.orders.history(stored.order_no)
        assert entry.detail == {"bills": [[1, "2026-10", 5050]]} and entry.at == NOW


def test_save_is_optimistic_and_appends_events(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        uow.orders.add(order())
        uow.commit()
    with uow_factory() as uow:
        first = uow.orders.get("SP20261101AAAAAAAAAAAAAAAA", for_update=True)
        stale = uow.orders.get("SP20261101AAAAAAAAAAAAAAAA")
        assert first is not None and stale is not None
        first.start_attempt({"kind": "redirect", "url": "u"})
        later = NOW + dt.timedelta(seconds=5)
        uow.orders.save(first, now=later)
        assert first.version == 1 and first.events == []
        stale.close("test", confirmed=False)
        with pytest.raises(StaleOrder):
            uow.orders.save(stale, now=later)
        uow.commit()
    with uow_factory() as uow:
        saved = uow.orders.get("SP20261101AAAAAAAAAAAAAAAA")
        assert saved is not None and saved.status.value == "pending" and saved.attempts == 1
        assert saved.action == {"kind": "redirect", "url": "u"}
        assert [h.to_status for h in uow.orders.history(saved.order_no)] == ["created",
                                                                             "pending"]
        assert uow.orders.unsettled_older_than(later) == []
        assert uow.orders.unsettled_older_than(later + dt.timedelta(seconds=1)) == [saved.order_no]
        assert uow.orders.search(query="0012345").total == 1
        assert uow.orders.search(status="paid").total == 0


def test_postings_are_unique_and_due_in_time_order(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        uow.orders.add(order())
        uow.orders.add(order(no="SP20261101BBBBBBBBBBBBBBBB", key="k2"))
        uow.postings.add(Posting("SP20261101BBBBBBBBBBBBBBBB", NOW, NOW))
        uow.postings.add(Posting("SP20261101AAAAAAAAAAAAAAAA", NOW,
                                 NOW + dt.timedelta(seconds=10)))
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(DuplicateKey):
            uow.postings.add(Posting("SP20261101BBBBBBBBBBBBBBBB", NOW, NOW))
        uow.rollback()
        lease = NOW + dt.timedelta(seconds=60)
        first = uow.postings.claim_due(NOW, lease_until=lease)
        assert first is not None and first.order_no == "SP20261101BBBBBBBBBBBBBBBB"
        assert (first.claim, first.attempts, first.next_attempt_at) == (1, 1, lease)
        assert uow.postings.claim_due(NOW, lease_until=lease) is None  # the other: not due
        uow.commit()
    with uow_factory() as uow:
        later = NOW + dt.timedelta(seconds=10)
        second = uow.postings.claim_due(later, lease_until=later + dt.timedelta(seconds=60))
        assert second is not None and second.order_no == "SP20261101AAAAAAAAAAAAAAAA"
        assert uow.postings.claim_due(later, lease_until=later) is None  # both leased
        second.status = "done"
        assert uow.postings.save(second)
        stale = replace(first, status="stuck", claim=0)  # a claim that is no longer current
        assert not uow.postings.save(stale)
        uow.commit()
    with uow_factory() as uow:
        assert uow.postings.get("SP20261101BBBBBBBBBBBBBBBB").status == "pending"
        assert uow.postings.list(status="done").total == 1


def test_messages_sms_codes_and_payers(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        mid = uow.messages.add(Message(None, "receipt", "a@b.cn", "s", "正文", NOW,
                                       attachments=[("r.pdf", "application/pdf", b"%PDF")]))
        uow.sms_codes.put(SmsCode("13812345678", "hash1", NOW, NOW))
        uow.sms_codes.put(SmsCode("13812345678", "hash2", NOW, NOW, tries=1))
        for _ in range(2):
            uow.payers.remember("openid-1", "ELEC", "0012345678", NOW)
        uow.payers.remember("openid-1", "WATER", "W-001", NOW + dt.timedelta(days=1))
        uow.commit()
    with uow_factory() as uow:
        [queued] = uow.messages.queued()
        assert queued.id == mid and queued.attachments == [("r.pdf", "application/pdf",
                                                            b"%PDF")]
        queued.next_attempt_at = NOW + dt.timedelta(minutes=1)
        uow.messages.save(queued)
        assert uow.messages.queued(now=NOW) == []
        assert len(uow.messages.queued(now=NOW + dt.timedelta(minutes=1))) == 1
        code = uow.sms_codes.get("13812345678", for_update=True)
        assert code is not None and code.code_hash == "hash2" and code.tries == 1
        assert uow.payers.list("openid-1") == [("WATER", "W-001"), ("ELEC", "0012345678")]
        assert uow.payers.list("someone-else") == []


def test_the_first_route_of_a_payment_is_kept(engine) -> None:  # noqa: ANN001
    from selfpay.adapters.db.payment_repositories import pin_posting_route

    assert pin_posting_route(engine, "SP1", "gas-platform") == "gas-platform"
    assert pin_posting_route(engine, "SP1", "default") == "gas-platform"
    assert pin_posting_route(engine, "SP2", "default") == "default"
