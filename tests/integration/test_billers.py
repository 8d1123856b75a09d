"""The biller registry's use cases on SQLite and PostgreSQL: validation, duplicates,
audit entries, and bad input that changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.domain.accounts import Biller
from selfpay.domain.errors import (
    BillerExists,
    BillerNotFound,
    InvalidBiller,
    InvalidBillerCode,
    InvalidInput,
)
from selfpay.services import billers

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
ROUTES = ["default", "water-co"]
UowFactory = Callable[[], SqlAlchemyUnitOfWork]


def add(uow_factory: UowFactory, code: str = "ELEC", **fields: Any) -> Biller:
    values: dict[str, Any] = {"name": "电费", "kind": "electricity"}
    values.update(fields)
    return billers.add_biller(uow_factory(), code=code, routes=ROUTES, actor="cli:test",
                              now=NOW, **values)


def state(uow_factory: UowFactory) -> tuple[list[Biller], list[tuple[str, str, str]]]:
    """Every biller and every audit entry (action, actor, target)."""
    with uow_factory() as uow:
        entries = [(e.action, e.actor, e.target) for e in uow.audit.list(limit=500).items]
        return uow.billers.list(), entries


def test_add_stores_every_field_and_audits_it(uow_factory: UowFactory) -> None:
    made = add(uow_factory, " elec ", name="  电费 ", name_en="Electricity", icon="electricity",
               display_order=10, elderly=True, steps=("choose", "identify", "pay", "receipt"),
               route="water-co")
    assert made.code == "ELEC" and made.name == "电费"
    with uow_factory() as uow:
        stored = uow.billers.get("ELEC")
        entries = uow.audit.list(action="biller.add").items
    assert stored == Biller("ELEC", "电费", "Electricity", kind="electricity",
                            icon="electricity", display_order=10, elderly=True,
                            steps=("choose", "identify", "pay", "receipt"), route="water-co",
                            enabled=True)
    assert [(e.actor, e.target) for e in entries] == [("cli:test", "ELEC")]
    assert entries[0].detail["route"] == "water-co"
    assert entries[0].detail["steps"] == ["choose", "identify", "pay", "receipt"]


def test_a_second_biller_with_the_same_code_is_refused_clearly(
        uow_factory: UowFactory) -> None:
    add(uow_factory)
    before = state(uow_factory)
    with pytest.raises(BillerExists, match="already exists") as refused:
        add(uow_factory, "elec", name="另一个")
    assert refused.value.localized("zh-CN") == "业务类型 ELEC 已存在。"
    assert state(uow_factory) == before


BAD: list[tuple[str, dict[str, Any], type[InvalidInput], str]] = [
    ("", {}, InvalidBillerCode, "biller code"),
    ("1ELEC", {}, InvalidBillerCode, "letter"),
    ("ELECTRICITY", {}, InvalidBillerCode, "7"),
    ("EL-C", {}, InvalidBillerCode, "letter"),
    ("ELEC", {"name": "   "}, InvalidBiller, "must not be empty"),
    ("ELEC", {"name": "电" * 65}, InvalidBiller, "64"),
    ("ELEC", {"name_en": "E" * 65}, InvalidBiller, "64"),
    ("ELEC", {"kind": "heat"}, InvalidBiller, "Unknown kind 'heat'"),
    ("ELEC", {"icon": "rocket"}, InvalidBiller, "Unknown icon 'rocket'"),
    ("ELEC", {"display_order": -1}, InvalidBiller, "0 to 9999"),
    ("ELEC", {"display_order": 10000}, InvalidBiller, "0 to 9999"),
    ("ELEC", {"display_order": True}, InvalidBiller, "whole number"),
    ("ELEC", {"display_order": 1.5}, InvalidBiller, "whole number"),
    ("ELEC", {"steps": ("choose", "fly", "pay")}, InvalidBiller, "Unknown kiosk step 'fly'"),
    ("ELEC", {"steps": ("pay", "choose")}, InvalidBiller, "out of order"),
    ("ELEC", {"steps": ("choose", "pay", "pay")}, InvalidBiller, "twice"),
    ("ELEC", {"steps": ("choose", "identify")}, InvalidBiller, "must include pay"),
    ("ELEC", {"steps": ("identify", "identify_plate", "pay")}, InvalidBiller, "not both"),
    ("ELEC", {"steps": ("identify", "confirm_plate", "pay")}, InvalidBiller,
     "needs identify_plate"),
    ("ELEC", {"route": "nowhere"}, InvalidBiller, "Unknown billing route 'nowhere'"),
]


@pytest.mark.parametrize(("code", "fields", "error", "message"), BAD)
def test_bad_input_is_refused_and_changes_nothing(
        uow_factory: UowFactory, code: str, fields: dict[str, Any],
        error: type[InvalidInput], message: str) -> None:
    with pytest.raises(error, match=message):
        add(uow_factory, code, **fields)
    assert state(uow_factory) == ([], [])


def test_update_changes_only_the_given_fields_and_audits_old_and_new(
        uow_factory: UowFactory) -> None:
    add(uow_factory, display_order=10)
    updated = billers.update_biller(uow_factory(), "elec", routes=ROUTES, actor="admin",
                                    ip="10.0.0.9", now=NOW, name="电费（居民）",
                                    steps=("choose", "pay"), route="water-co")
    assert updated.name == "电费（居民）" and updated.display_order == 10
    with uow_factory() as uow:
        assert uow.billers.get("ELEC") == updated
        entries = uow.audit.list(action="biller.update").items
    assert len(entries) == 1
    e = entries[0]
    assert (e.actor, e.target, e.ip) == ("admin", "ELEC", "10.0.0.9")
    assert e.detail == {"name": {"old": "电费", "new": "电费（居民）"},
                        "steps": {"old": [], "new": ["choose", "pay"]},
                        "route": {"old": "default", "new": "water-co"}}


def test_an_update_that_changes_nothing_writes_nothing(uow_factory: UowFactory) -> None:
    add(uow_factory)
    before = state(uow_factory)
    billers.update_biller(uow_factory(), "ELEC", routes=ROUTES, actor="admin", now=NOW,
                          name="电费", kind="electricity")
    assert state(uow_factory) == before


@pytest.mark.parametrize(("changes", "error"), [
    ({"kind": "heat"}, InvalidBiller),
    ({"name": ""}, InvalidBiller),
    ({"display_order": 12345}, InvalidBiller),
    ({"route": "gone"}, InvalidBiller),
    ({"steps": ("receipt", "pay")}, InvalidBiller),
    ({"enabled": False}, InvalidBiller),  # not through update: disable_biller audits it
    ({"code": "GAS"}, InvalidBiller),
])
def test_a_bad_update_changes_nothing(uow_factory: UowFactory, changes: dict[str, Any],
                                      error: type[Exception]) -> None:
    add(uow_factory)
    before = state(uow_factory)
    with pytest.raises(error):
        billers.update_biller(uow_factory(), "ELEC", routes=ROUTES, actor="admin", now=NOW,
                              **{"name": "新名字", **changes})
    assert state(uow_factory) == before


def test_unknown_billers_cannot_be_updated_or_disabled(uow_factory: UowFactory) -> None:
    with pytest.raises(BillerNotFound, match="GAS"):
        billers.update_biller(uow_factory(), "GAS", routes=ROUTES, actor="a", now=NOW,
                              name="x")
    with pytest.raises(BillerNotFound):
        billers.disable_biller(uow_factory(), "GAS", actor="a", now=NOW)
    assert state(uow_factory) == ([], [])


def test_disable_and_enable_are_audited_once_and_listed(uow_factory: UowFactory) -> None:
    add(uow_factory, display_order=20)
    add(uow_factory, "WATER", name="水费", kind="water", display_order=10)
    off = billers.disable_biller(uow_factory(), "water", actor="admin", now=NOW)
    assert off.enabled is False
    billers.disable_biller(uow_factory(), "WATER", actor="admin", now=NOW)  # already: no-op
    listed = billers.list_billers(uow_factory())
    assert [(b.code, b.enabled) for b in listed] == [("WATER", False), ("ELEC", True)]
    assert [b.code for b in billers.list_billers(uow_factory(), include_disabled=False)] == [
        "ELEC"]
    billers.enable_biller(uow_factory(), "WATER", actor="admin", now=NOW)
    _, entries = state(uow_factory)
    assert sorted(a for a, _, t in entries if t == "WATER") == [
        "biller.add", "biller.disable", "biller.enable"]


@pytest.mark.parametrize(("text", "steps"), [
    ("", ()), (" choose, identify ,PAY", ("choose", "identify", "pay")),
    ("choose，pay", ("choose", "pay")), (",,", ()),
])
def test_parse_steps(text: str, steps: tuple[str, ...]) -> None:
    assert billers.parse_steps(text) == steps


@pytest.mark.parametrize("text", ["", "-1", "1.5", "ten", "１０", "10000"])
def test_parse_order_refuses_what_is_not_0_to_9999(text: str) -> None:
    with pytest.raises(InvalidBiller):
        billers.parse_order(text)
    assert billers.parse_order(" 42 ") == 42


def test_imports_refuse_rows_of_a_disabled_biller_and_keep_its_accounts(
        uow_factory: UowFactory) -> None:
    from selfpay.adapters.tabular import read_table
    from selfpay.services.imports import import_accounts, import_bills

    add(uow_factory)
    add(uow_factory, "WATER", name="水费", kind="water")
    first = read_table("biller,account,name\nWATER,W-001,王五\n".encode(), "a.csv")
    assert import_accounts(uow_factory(), first, filename="a.csv", actor="t", skip_invalid=False,
                           now=NOW).imported == 1
    billers.disable_biller(uow_factory(), "WATER", actor="admin", now=NOW)

    again = read_table("biller,account,name\nELEC,0000000001,甲\nWATER,W-002,乙\n".encode(),
                       "b.csv")
    run = import_accounts(uow_factory(), again, filename="b.csv", actor="t",
                          skip_invalid=False, now=NOW)
    assert run.status == "rejected"
    assert [(e.row, e.localized("zh-CN"), e.message) for e in run.errors] == [
        (3, "业务类型 WATER 已停用。", "Biller WATER is disabled.")]
    bills = read_table(b"biller,account,period,amount\nWATER,W-001,2026-10,30\n", "c.csv")
    assert import_bills(uow_factory(), bills, filename="c.csv", actor="t", skip_invalid=False,
                        now=NOW).status == "rejected"
    with uow_factory() as uow:
        assert uow.accounts.get("ELEC", "0000000001") is None  # nothing half-imported
        assert uow.accounts.get("WATER", "W-001") is not None  # the account stays
