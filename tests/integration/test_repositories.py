from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.exc import IntegrityError

from selfpay.domain.accounts import Account, Bill, Biller, BillStatus
from selfpay.services.ports import (
    AuditEntry,
    DuplicatePayment,
    ImportRun,
    LedgerPayment,
    QrBatch,
    RowError,
    User,
)

CST = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime(2026, 11, 1, 16, 30, tzinfo=CST)


def test_leaving_the_block_without_commit_writes_nothing(uow_factory, seeded):
    with uow_factory() as uow:
        uow.billers.add(Biller("HEAT", "供暖费"))
    with uow_factory() as uow:
        assert uow.billers.get("HEAT") is None
        assert [b.code for b in uow.billers.list()] == ["ELEC", "GAS", "PARK", "PROP", "WATER"]


def test_commit_then_more_work_in_the_same_block(uow_factory, seeded):
    with uow_factory() as uow:
        uow.billers.add(Biller("HEAT", "供暖费"))
        uow.commit()
        uow.billers.add(Biller("TV", "有线电视"))
    with uow_factory() as uow:
        assert uow.billers.get("HEAT") == Biller("HEAT", "供暖费", "")
        assert uow.billers.get("TV") is None


def test_accounts_keep_leading_zeros_and_upsert_updates_details_only(uow_factory, seeded):
    with uow_factory() as uow:
        uow.accounts.set_balance("ELEC", "0012345678", 700)
        inserted, updated = uow.accounts.upsert_many([
            Account("ELEC", "0012345678", "张三丰", "13812345678", "新地址 2 号"),
            Account("ELEC", "0099999999", "李四", "13900000000"),  # unchanged
            Account("GAS", "000123", "赵六"),
        ])
        uow.commit()
    assert (inserted, updated) == (1, 1)
    with uow_factory() as uow:
        acc = uow.accounts.get("ELEC", "0012345678")
        assert acc is not None and acc.address == "新地址 2 号" and acc.balance_fen == 700
        assert uow.accounts.get("GAS", "000123") is not None
        assert uow.accounts.get("GAS", "123") is None
        assert uow.accounts.count() == 4
        assert uow.accounts.existing([("GAS", "000123"), ("GAS", "123"), ("ELEC", "0099999999")]
                                     ) == {("GAS", "000123"), ("ELEC", "0099999999")}


def test_account_search_by_number_prefix_name_and_phone_suffix(uow_factory, seeded):
    with uow_factory() as uow:
        def numbers(**kw):
            return [a.number for a in uow.accounts.search(**kw).items]

        assert numbers(query="00123") == ["0012345678"]
        assert numbers(query="三丰") == ["0012345678"]
        assert numbers(query="5678") == ["0012345678"]
        assert numbers(query="w-0") == ["W-001"]
        assert numbers(query="%") == []
        assert numbers(biller="ELEC") == ["0012345678", "0099999999"]
        page = uow.accounts.search(limit=1, offset=1)
        assert page.total == 3 and len(page.items) == 1


def test_balance_can_never_go_negative(uow_factory, seeded):
    with uow_factory() as uow, pytest.raises(IntegrityError):
        uow.accounts.set_balance("ELEC", "0012345678", -1)


def test_bills_open_oldest_first_and_existing_periods(uow_factory, seeded):
    with uow_factory() as uow:
        bills = uow.bills.open_for("ELEC", "0012345678", for_update=True)
        assert [b.period for b in bills] == ["2026-09", "2026-10"]
        assert bills[1].due_date == dt.date(2026, 11, 30)
        assert uow.bills.existing_periods([
            ("ELEC", "0012345678", "2026-10"), ("ELEC", "0012345678", "2026-11"),
            ("WATER", "W-001", "2026-10"), ("GAS", "X", "2026-10"),
        ]) == {("ELEC", "0012345678", "2026-10"), ("WATER", "W-001", "2026-10")}
        uow.bills.update_paid(bills[0].id, 10000, "paid")
        uow.commit()
    with uow_factory() as uow:
        assert [b.period for b in uow.bills.open_for("ELEC", "0012345678")] == ["2026-10"]
        assert uow.bills.search(status="paid").total == 1
        assert [b.account for b in uow.bills.search(query="王").items] == ["W-001"]
        assert uow.bills.search(query="13812345678").total == 2
        assert uow.bills.search(biller="WATER").items[0].status is BillStatus.OPEN


def test_bill_for_an_unknown_account_is_refused(uow_factory, seeded):
    with uow_factory() as uow, pytest.raises(IntegrityError):
        uow.bills.add_many([Bill(None, "ELEC", "NOPE", "2026-10", 100, None)])


def test_payment_is_unique_by_id(uow_factory, seeded):
    payment = LedgerPayment("pay-1", "ELEC", "0012345678", 100, 0, 0, ((1, 100),), "sandbox",
                            "tx-1", NOW, NOW)
    with uow_factory() as uow:
        uow.payments.add(payment)
        uow.commit()
    with uow_factory() as uow:
        with pytest.raises(DuplicatePayment):
            uow.payments.add(payment)
    with uow_factory() as uow:
        stored = uow.payments.get("pay-1")
    assert stored is not None
    assert stored.applied == ((1, 100),)
    assert stored.posted_at == NOW and stored.posted_at.tzinfo is not None
    assert stored.posted_at.utcoffset() == dt.timedelta(0)


def test_users(uow_factory, seeded):
    with uow_factory() as uow:
        uid = uow.users.add(User(None, "alice", "h1", "admin", created_at=NOW))
        uow.commit()
    with uow_factory() as uow:
        user = uow.users.get("alice")
        assert user is not None and user.id == uid and user.active and user.created_at == NOW
        user.active = False
        user.password_hash = "h2"
        uow.users.update(user)
        uow.commit()
    with uow_factory() as uow:
        assert [(u.username, u.password_hash, u.active) for u in uow.users.list()] == [
            ("alice", "h2", False)
        ]
        with pytest.raises(IntegrityError):
            uow.users.add(User(None, "alice", "h", "operator", created_at=NOW))


def test_audit_log_newest_first_with_filters(uow_factory, seeded):
    with uow_factory() as uow:
        for i, action in enumerate(["qr.make", "qr.batch", "import.accounts", "qrx"]):
            uow.audit.record(AuditEntry(None, NOW + dt.timedelta(minutes=i), "alice", action,
                                        detail={"n": i, "名": "张"}))
        uow.audit.record(AuditEntry(None, NOW, "bob", "user.login", ip="10.0.0.1"))
        uow.commit()
    with uow_factory() as uow:
        page = uow.audit.list(actor="alice", action="qr")
        assert [e.action for e in page.items] == ["qr.batch", "qr.make"] and page.total == 2
        assert page.items[0].detail == {"n": 1, "名": "张"}
        assert uow.audit.list().total == 5
        assert uow.audit.list(limit=1).items[0].action == "qrx"


def test_import_runs_and_qr_batches_round_trip(uow_factory, seeded):
    run = ImportRun(None, "bills", "b.xlsx", "alice", NOW, "rejected", 3, 0, 3,
                    [RowError(2, "第 2 行：金额为空 (amount is empty)"),  # as stored before keys
                     RowError.keyed(3, "err.import.columns_missing",
                                    columns=["term.column.amount", "term.column.period"]),
                     RowError.keyed(0, "err.import.more_errors", n=7)])
    batch = QrBatch(None, "alice", NOW, "in.xlsx", 10, "ab" * 32, 1234, "batches/1.zip",
                    "ELEC,WATER", ["第 3 行：重复"])
    with uow_factory() as uow:
        run_id = uow.imports.add(run)
        batch_id = uow.batches.add(batch)
        uow.commit()
    with uow_factory() as uow:
        assert uow.imports.get(run_id) == run
        stored = uow.imports.get(run_id).errors
        assert stored[0].localized("en") == "第 2 行：金额为空 (amount is empty)"
        assert stored[1].localized("zh-CN") == "缺少必需的列：金额、账期（第一行须为表头）。"
        assert stored[1].localized("en") == stored[1].message == (
            "Missing required columns: amount, period (the first row must hold the headers).")
        assert stored[2].localized("zh-CN") == "另有 7 条错误未显示。"
        assert uow.imports.list().items == [run]
        assert uow.batches.get(batch_id) == batch
        assert uow.batches.list().total == 1
        assert uow.imports.get(run_id + 1) is None


def test_a_nested_block_joins_the_open_one(uow_factory, seeded):
    with uow_factory() as outer:
        outer.billers.add(Biller("HEAT", "供暖费"))
        with outer as inner:  # a use case entering the caller's unit of work
            assert inner.billers.get("HEAT") is not None
        assert outer.billers.get("HEAT") is not None  # not rolled back by the inner exit
        with pytest.raises(LookupError), outer:
            outer.billers.add(Biller("TV", "有线电视"))
            raise LookupError("the use case failed")
        assert outer.billers.get("TV") is None and outer.billers.get("HEAT") is None
        outer.billers.add(Biller("GYM", "健身"))
        outer.commit()
    with uow_factory() as uow:
        assert uow.billers.get("GYM") is not None and uow.billers.get("HEAT") is None
