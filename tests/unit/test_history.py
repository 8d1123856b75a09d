"""The in-process cache and the account history read through a cache (no I/O)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes import FakeCache
from selfpay.adapters.cache import InProcessCache
from selfpay.services.history import AccountHistory, history_key
from selfpay.services.ports import RecentPayment

PAID = dt.datetime(2026, 11, 1, 20, 30, tzinfo=dt.UTC)


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- InProcessCache ---------------------------------------------------------------------

def test_in_process_cache_keeps_a_value_until_its_ttl_ends() -> None:
    clock = Ticker()
    cache = InProcessCache(clock=clock)
    cache.set("k", {"fen": 1234, "at": "2026-11-01T08:00:00+00:00"}, ttl_s=1800)
    clock.now += 1799
    assert cache.get("k") == {"fen": 1234, "at": "2026-11-01T08:00:00+00:00"}
    clock.now += 1
    assert cache.get("k") is None


def test_in_process_cache_deletes_and_returns_copies() -> None:
    cache = InProcessCache()
    value: dict[str, Any] = {"items": [1, 2]}
    cache.set("k", value, ttl_s=60)
    value["items"].append(3)
    got = cache.get("k")
    assert got == {"items": [1, 2]}
    got["items"].append(4)
    assert cache.get("k") == {"items": [1, 2]}
    cache.delete("k")
    cache.delete("k")  # deleting what is gone is fine
    assert cache.get("k") is None


def test_in_process_cache_drops_the_oldest_beyond_its_size() -> None:
    cache = InProcessCache(max_entries=2)
    for key in ("a", "b", "c"):
        cache.set(key, key, ttl_s=60)
    assert [cache.get(k) for k in ("a", "b", "c")] == [None, "b", "c"]


def test_in_process_cache_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        InProcessCache().set("k", {"at": PAID}, ttl_s=60)


# --- AccountHistory ---------------------------------------------------------------------

@dataclass
class FakeOrders:
    rows: dict[tuple[str, str], list[RecentPayment]] = field(default_factory=dict)
    queries: int = 0

    def recent_paid(self, biller: str, account: str, *, limit: int = 5) -> list[RecentPayment]:
        self.queries += 1
        return self.rows.get((biller, account), [])[:limit]


@dataclass
class FakeUow:
    orders: FakeOrders

    def __enter__(self) -> FakeUow:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def history_with(cache: FakeCache, *payments: RecentPayment) -> tuple[AccountHistory, FakeOrders]:
    orders = FakeOrders({("ELEC", "0012345678"): list(payments)})
    uow = FakeUow(orders)
    return AccountHistory(uow_factory=lambda: uow, cache=cache, ttl_s=1800), orders  # type: ignore[arg-type,return-value]


def pay(no: str, fen: int, minutes: int = 0) -> RecentPayment:
    return RecentPayment(no, fen, "wechatpay", PAID + dt.timedelta(minutes=minutes))


def test_a_second_read_is_served_from_the_cache() -> None:
    cache = FakeCache()
    history, orders = history_with(cache, pay("SP2", 5050, 5), pay("SP1", 10000))
    first = history.recent("ELEC", "0012345678")
    assert first == [pay("SP2", 5050, 5), pay("SP1", 10000)]
    assert history.recent("ELEC", "0012345678") == first
    assert orders.queries == 1
    key = history_key("ELEC", "0012345678")
    assert cache.ttls[key] == 1800
    # integer fen and ISO times, no floats
    assert cache.items[key]["items"][0] == {
        "order_no": "SP2", "amount_fen": 5050, "channel": "wechatpay",
        "paid_at": "2026-11-01T20:35:00+00:00"}


def test_leading_zeros_and_accounts_are_kept_apart() -> None:
    cache = FakeCache()
    history, orders = history_with(cache, pay("SP1", 100))
    assert history.recent("ELEC", "12345678") == []
    assert history.recent("ELEC", "0012345678") == [pay("SP1", 100)]
    assert orders.queries == 2


def test_forget_makes_the_next_read_ask_the_database() -> None:
    cache = FakeCache()
    history, orders = history_with(cache, pay("SP1", 100))
    history.recent("ELEC", "0012345678")
    orders.rows[("ELEC", "0012345678")].insert(0, pay("SP2", 200, 1))
    assert len(history.recent("ELEC", "0012345678")) == 1  # still the cached answer
    history.forget("ELEC", "0012345678")
    assert [p.order_no for p in history.recent("ELEC", "0012345678")] == ["SP2", "SP1"]
    assert orders.queries == 2


def test_a_cache_that_is_down_falls_back_to_the_database(
        caplog: pytest.LogCaptureFixture) -> None:
    cache = FakeCache(down=True)
    history, orders = history_with(cache, pay("SP1", 100))
    with caplog.at_level(logging.WARNING, logger="selfpay.services.history"):
        assert history.recent("ELEC", "0012345678") == [pay("SP1", 100)]
        assert history.recent("ELEC", "0012345678") == [pay("SP1", 100)]
    assert orders.queries == 2
    assert "history cache unavailable" in caplog.text


def test_a_cached_entry_with_a_float_amount_is_not_trusted() -> None:
    cache = FakeCache()
    history, orders = history_with(cache, pay("SP1", 100))
    cache.items[history_key("ELEC", "0012345678")] = {"v": 1, "items": [
        {"order_no": "SP1", "amount_fen": 1.0, "channel": "x", "paid_at": PAID.isoformat()}]}
    assert history.recent("ELEC", "0012345678") == [pay("SP1", 100)]
    assert orders.queries == 1
