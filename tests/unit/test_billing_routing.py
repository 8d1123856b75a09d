"""RoutingBillingSystem with fake billing systems, and the building of named routes."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pytest

from selfpay.adapters.billing.routes import (
    BearerToken,
    RouteConfigError,
    build_route,
    resolve_options,
)
from selfpay.adapters.billing.routing import RoutingBillingSystem
from selfpay.config import Settings
from selfpay.domain.accounts import AccountSummary, PaymentPosting, PostingResult
from selfpay.domain.errors import AccountNotFound
from selfpay.services.ports import BillingSystemError, WorkOrderRequest, WorkOrderResult

TOKEN = "tok-9f3a-secret-value"


@dataclass
class FakeBilling:
    name: str
    accounts: set[tuple[str, str]] = field(default_factory=set)
    posted: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)
    closed: int = 0
    ref_prefix: str = "R"
    fresh_asked: int = 0

    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:
        self.fresh_asked += fresh
        if (biller, account) not in self.accounts:
            raise AccountNotFound(f"{biller} {account}")
        return AccountSummary(biller, account, f"{self.name}*", 0, ())

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        self.posted.append(posting.payment_id)
        return PostingResult(posting.payment_id, (), 0, 0)

    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        return WorkOrderResult(order.ticket_no, f"{self.ref_prefix}{order.ticket_no}",
                               "accepted")

    def work_order_status(self, ref: str) -> WorkOrderResult:
        self.asked.append(ref)
        return WorkOrderResult("", ref, "in_progress")

    def close(self) -> None:
        self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Registry:
    routes: dict[str, str]
    reads: int = 0

    def __call__(self) -> dict[str, str]:
        self.reads += 1
        return dict(self.routes)


def router(registry: Registry, clock: Clock, **routes: FakeBilling) -> RoutingBillingSystem:
    return RoutingBillingSystem(routes, billers=registry, clock=clock, ttl_s=30,
                                ticket_biller=lambda t: {"WO-GAS": "GAS"}.get(t))


@pytest.fixture
def world() -> tuple[RoutingBillingSystem, Registry, Clock, FakeBilling, FakeBilling]:
    default = FakeBilling("marketing", {("ELEC", "E1")})
    gas = FakeBilling("gas", {("GAS", "G1")}, ref_prefix="GP")
    registry = Registry({"ELEC": "default", "GAS": "gas-platform", "WATER": "water-co"})
    clock = Clock()
    return (router(registry, clock, **{"default": default, "gas-platform": gas}), registry,
            clock, default, gas)


def posting(payment_id: str, biller: str, account: str) -> PaymentPosting:
    return PaymentPosting(payment_id, biller, account, 100)


def test_each_biller_is_sent_to_the_billing_system_of_its_route(world) -> None:
    routing, registry, _, default, gas = world
    assert routing.account_summary("ELEC", "E1").masked_name == "marketing*"
    assert routing.account_summary("GAS", "G1").masked_name == "gas*"
    assert routing.route_of(" gas ") == "gas-platform"  # codes as the domain normalizes them
    routing.post_payment(posting("P-1", "ELEC", "E1"))
    routing.post_payment(posting("P-2", "GAS", "G1"))
    assert default.posted == ["P-1"] and gas.posted == ["P-2"]
    assert registry.reads == 1  # one read of the registry serves the TTL


def test_an_unknown_biller_gets_the_default_systems_answer(world) -> None:
    routing, _, _, default, gas = world
    with pytest.raises(AccountNotFound):
        routing.account_summary("NOPE", "1")
    with pytest.raises(AccountNotFound):  # a code that is not a code: the default refuses it
        routing.account_summary("???", "1")


def test_a_changed_route_reaches_the_running_process_within_the_ttl(world) -> None:
    routing, registry, clock, default, gas = world
    routing.post_payment(posting("P-1", "ELEC", "E1"))
    registry.routes["ELEC"] = "gas-platform"
    clock.now += 29
    routing.post_payment(posting("P-2", "ELEC", "E1"))  # still the memo
    clock.now += 1.5
    routing.post_payment(posting("P-3", "ELEC", "E1"))
    assert default.posted == ["P-1", "P-2"] and gas.posted == ["P-3"]


def test_a_biller_added_a_moment_ago_is_found_without_waiting_for_the_ttl(world) -> None:
    routing, registry, clock, default, gas = world
    routing.route_of("ELEC")
    registry.routes["GAS2"] = "gas-platform"
    clock.now += 2
    assert routing.route_of("GAS2") == "gas-platform"
    reads = registry.reads
    clock.now += 2
    for code in ("X1", "X2", "X3"):  # junk codes cost at most one read a second
        routing.route_of(code)
    assert registry.reads == reads + 1


def test_a_route_that_is_not_configured_is_a_billing_error_logged_once(
        world, caplog: pytest.LogCaptureFixture) -> None:
    routing, *_ = world
    caplog.set_level(logging.ERROR, logger="selfpay.adapters.billing.routing")
    for payment_id in ("P-1", "P-2"):
        with pytest.raises(BillingSystemError,
                           match="route 'water-co' of biller WATER is not configured"):
            routing.post_payment(posting(payment_id, "WATER", "W1"))
    assert len([r for r in caplog.records if "water-co" in r.getMessage()]) == 1
    assert routing.cached_at("WATER", "W1") is None


def test_the_registry_unreadable_at_first_is_a_billing_error_then_the_last_table_serves(
        world) -> None:
    routing, registry, clock, default, gas = world

    def broken() -> dict[str, str]:
        raise OSError("database down")

    fresh = RoutingBillingSystem({"default": default}, billers=broken, clock=clock)
    with pytest.raises(BillingSystemError, match="billing routes unknown"):
        fresh.account_summary("ELEC", "E1")
    routing.route_of("GAS")
    routing._billers = broken  # the database goes away after the first read
    clock.now += 60
    assert routing.route_of("GAS") == "gas-platform"


def test_work_order_references_lead_back_to_the_route_that_issued_them(world) -> None:
    routing, _, _, default, gas = world
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    elec = routing.submit_work_order(WorkOrderRequest("WO-ELEC", "ELEC", "E1", "outage", "",
                                                      "", now))
    gas_ref = routing.submit_work_order(WorkOrderRequest("WO-GAS", "GAS", "G1", "outage", "",
                                                         "", now))
    assert elec.ref == "RWO-ELEC"  # the default route's references stay as they were
    assert gas_ref.ref == "@gas-platform/GPWO-GAS"
    assert routing.work_order_status(gas_ref.ref).ref == "@gas-platform/GPWO-GAS"
    assert routing.work_order_status(elec.ref).ref == "RWO-ELEC"
    assert gas.asked == ["GPWO-GAS"] and default.asked == ["RWO-ELEC"]


def test_a_reference_too_long_to_tag_is_dropped_and_the_ticket_routed_by_its_biller(
        world) -> None:
    routing, _, _, default, gas = world
    gas.ref_prefix = "X" * 60
    result = routing.submit_work_order(WorkOrderRequest(
        "WO-GAS", "GAS", "G1", "outage", "", "", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)))
    assert result.ref == ""  # the DMZ then polls by ticket number


def test_a_ticket_number_is_routed_by_the_biller_of_its_ticket(world) -> None:
    from selfpay.domain.work_orders import new_ticket_no

    ticket = new_ticket_no()
    default, gas = FakeBilling("d"), FakeBilling("g")
    routing = RoutingBillingSystem(
        {"default": default, "gas-platform": gas}, billers=lambda: {"GAS": "gas-platform"},
        ticket_biller=lambda t: "GAS" if t == ticket else None)
    routing.work_order_status(ticket)
    assert gas.asked == [ticket] and default.asked == []


def test_closing_the_router_closes_every_route_once(world) -> None:
    routing, _, _, default, gas = world
    default.close = lambda: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore[method-assign]
    routing.close()
    assert gas.closed == 1


def test_broker_readiness_is_offered_only_when_a_route_has_a_broker(world) -> None:
    routing, *_ = world
    assert routing.broker_ready is None and routing.ping() == 0.0

    class Bridge(FakeBilling):
        connected = False

        def broker_ready(self) -> bool:
            return self.connected

    bridge = Bridge("bridge")
    both = RoutingBillingSystem({"default": FakeBilling("d"), "b": bridge}, billers=dict)
    assert both.broker_ready is not None and not both.broker_ready()
    bridge.connected = True
    assert both.broker_ready()


# --- building routes: secrets ------------------------------------------------------------


def test_a_secret_is_read_from_its_variable_or_file_and_never_shown(tmp_path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(TOKEN + "\n")
    by_env = resolve_options("gas", {"adapter": "http", "token_env": "GAS_TOKEN"},
                             environ={"GAS_TOKEN": TOKEN})
    by_file = resolve_options("gas", {"adapter": "http", "token_file": str(secret_file)})
    assert by_env["token"].get_secret_value() == by_file["token"].get_secret_value() == TOKEN
    assert TOKEN not in repr(by_env) and TOKEN not in str(by_file)
    assert TOKEN not in repr(BearerToken(by_env["token"]))


def test_a_missing_secret_stops_the_start_naming_the_route_and_the_variable(
        tmp_path) -> None:
    with pytest.raises(RouteConfigError, match="'gas'.*GAS_TOKEN.*not set"):
        resolve_options("gas", {"adapter": "http", "token_env": "GAS_TOKEN"}, environ={})
    with pytest.raises(RouteConfigError, match=r"'gas'.*token_file .*nope"):
        resolve_options("gas", {"adapter": "http", "token_file": str(tmp_path / "nope")})
    with pytest.raises(RouteConfigError, match="once"):
        resolve_options("gas", {"adapter": "http", "token_env": "A", "token_file": "b"},
                        environ={"A": "x"})


def test_routes_are_built_by_adapter_name_and_bad_ones_are_refused(tmp_path,
                                                                  caplog) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(data_dir=tmp_path)
    kwargs = {"engine": None, "uow_factory": None, "read_uow_factory": None,
              "environ": {"GAS_TOKEN": TOKEN}}
    http = build_route(settings, "gas", {"adapter": "http", "url": "https://gas.example.cn/x",
                                         "token_env": "GAS_TOKEN", "timeout_s": 10},
                       **kwargs)  # type: ignore[arg-type]
    try:
        client = http._client  # type: ignore[attr-defined]
        assert str(client.base_url).rstrip("/") == "https://gas.example.cn/x"
        assert client.timeout.read == 10
        assert TOKEN not in repr(http) and TOKEN not in repr(client.auth)
    finally:
        http.close()  # type: ignore[attr-defined]
    for route, message in [
        ({"adapter": "http"}, "needs a \"url\""),
        ({"adapter": "http", "url": "https://x", "timeout_s": 500}, "timeout_s"),
        ({"adapter": "http", "url": "https://x", "tokn_env": "GAS_TOKEN"}, "no option tokn"),
        ({"adapter": "bridge"}, "SELFPAY_TRANSPORT"),
        ({"adapter": "nope"}, "unknown adapter 'nope'"),
    ]:
        with pytest.raises(RouteConfigError, match=message):
            build_route(settings, "gas", route, **kwargs)  # type: ignore[arg-type]
    assert TOKEN not in caplog.text


def test_a_retry_goes_where_the_first_attempt_went_even_after_a_route_change() -> None:
    """The first posting of P-9 reached the gas platform, which applied it, but its answer
    was lost; meanwhile staff moved GAS to the default route. The retry must go to the gas
    platform again (which answers it as a duplicate), never to a second billing system."""
    default, gas = FakeBilling("marketing"), FakeBilling("gas")
    registry, clock = Registry({"GAS": "gas-platform"}), Clock()
    pins: dict[str, str] = {}
    routing = RoutingBillingSystem({"default": default, "gas-platform": gas},
                                   billers=registry, clock=clock, ttl_s=30,
                                   pin=lambda pid, route: pins.setdefault(pid, route))
    routing.post_payment(posting("P-9", "GAS", "G1"))  # applied; the answer is lost
    registry.routes["GAS"] = "default"
    clock.now += 31  # the change reaches this process
    routing.post_payment(posting("P-9", "GAS", "G1"))  # the outbox's retry
    routing.post_payment(posting("P-10", "GAS", "G1"))  # a new payment takes the new route
    assert gas.posted == ["P-9", "P-9"] and default.posted == ["P-10"]
    assert pins == {"P-9": "gas-platform", "P-10": "default"}


def test_an_order_price_asks_the_routes_system_for_a_live_answer(world) -> None:
    """fresh=True (pricing an order) must reach the route's adapter: dropping it would let
    a bridge route price an order from its outage cache."""
    routing, _, _, default, gas = world
    routing.account_summary("GAS", "G1", fresh=True)
    routing.account_summary("ELEC", "E1")
    assert (gas.fresh_asked, default.fresh_asked) == (1, 0)
