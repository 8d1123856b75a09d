"""RoutingBillingSystem: one BillingSystem over several, chosen per biller.

Each biller names its billing route (`billers.route`; DEFAULT_ROUTE is the one of
SELFPAY_BILLING / SELFPAY_TRANSPORT, the others come from SELFPAY_BILLING_ROUTES). The
router reads the whole registry's biller -> route table from the DMZ database and keeps
it `ttl_s` (30 s) per process: the database is the source of truth, so a route changed
there (`selfpay billers set GAS --route gas-platform`) reaches every process within the
TTL. A biller missing from the table re-reads it at most once a second, so a biller added
a moment ago is found at once and random codes cannot flood the database.

- A biller the registry does not know goes to the default route, whose adapter answers
  it exactly as it did before there were routes (AccountNotFound).
- A biller whose route is not configured here gets BillingSystemError ("billing route X
  of biller Y is not configured"), logged once per route: a posting waits in the outbox
  and is retried, so fixing the biller or the configuration lets it through.

Work orders: the status of a ticket is asked by the reference its billing system gave,
so a reference must lead back to the route that issued it. The router records the route
in the reference: "@<route>/<its ref>" (a default route's reference is left as it is,
unless it starts with "@" itself, then it becomes "@default/<ref>"). The DMZ keeps 64
characters of a reference; a tagged one that would not fit is not returned at all, so
the ticket is then polled by its ticket number, which the router routes by the
ticket's biller (`ticket_biller`). A plain ticket number is routed that way too.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from selfpay.domain.accounts import (
    DEFAULT_ROUTE,
    AccountSummary,
    PaymentPosting,
    PostingResult,
    normalize_biller,
)
from selfpay.domain.errors import InvalidInput
from selfpay.domain.work_orders import is_ticket_no
from selfpay.services.ports import (
    BillingSystem,
    BillingSystemError,
    WorkOrderDesk,
    WorkOrderRequest,
    WorkOrderResult,
)

log = logging.getLogger(__name__)
REF_MAX = 64  # work_orders.billing_ref
MISS_REFRESH_S = 1.0
_TAG_RE = re.compile(r"@([a-z][a-z0-9_-]{0,31})/(.*)", re.DOTALL)


def _normalize(biller: str) -> str | None:
    try:
        return normalize_biller(biller)
    except InvalidInput:
        return None


class RoutingBillingSystem:
    """The BillingSystem port (and WorkOrderDesk) over the adapters of several routes."""

    def __init__(
        self,
        routes: Mapping[str, BillingSystem],
        *,
        billers: Callable[[], Mapping[str, str]],
        ticket_biller: Callable[[str], str | None] | None = None,
        pin: Callable[[str, str], str] | None = None,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`routes`: adapter by route name, DEFAULT_ROUTE among them; owned (close()).
        `billers()`: the registry's {biller code: route name}, read from the database.
        `ticket_biller(ticket_no)`: the biller of a DMZ work order, or None.
        `pin(payment_id, route)`: records the route of a payment's first posting and
        returns the recorded one (retries keep to it)."""
        if DEFAULT_ROUTE not in routes:
            raise ValueError("the routes need a default route")
        self._routes = dict(routes)
        self._billers = billers
        self._ticket_biller = ticket_biller
        self._pin = pin
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._table: Mapping[str, str] | None = None
        self._read_at = float("-inf")
        self._complained: set[str] = set()
        # Optional capabilities, offered only when a route has them (/readyz asks
        # getattr(billing, "broker_ready") and reports a broker only where there is one).
        self.broker_ready: Callable[[], bool] | None = (
            self._brokers_ready if any(callable(getattr(a, "broker_ready", None))
                                       for a in self._routes.values()) else None)

    def __repr__(self) -> str:
        return f"RoutingBillingSystem(routes={sorted(self._routes)!r})"

    @property
    def route_names(self) -> list[str]:
        return sorted(self._routes)

    @property
    def takes_work_orders(self) -> bool:
        """Whether any route's billing system takes work orders (ports.WorkOrderDesk)."""
        return any(isinstance(a, WorkOrderDesk) for a in self._routes.values())

    # --- which route -------------------------------------------------------------------

    def _read(self, now: float) -> Mapping[str, str]:
        with self._lock:
            if self._table is not None and now - self._read_at < MISS_REFRESH_S:
                return self._table  # another thread has just read it
            try:
                table = dict(self._billers())
            except Exception as exc:  # noqa: BLE001 - the database's failure is any kind
                if self._table is None:
                    raise BillingSystemError(f"billing routes unknown: {exc!r}") from exc
                log.warning("billing routes: cannot re-read the billers (%r); using the "
                            "last known routes", exc)
                self._read_at = now - self._ttl_s + MISS_REFRESH_S  # try again in 1 s
                return self._table
            self._table, self._read_at = table, now
            return table

    def route_of(self, biller: str) -> str:
        """The route of a biller as the registry says (within the TTL)."""
        code = _normalize(biller)
        if code is None:
            return DEFAULT_ROUTE  # the default adapter refuses the code as it always did
        now = self._clock()
        table = self._table
        if table is None or now - self._read_at >= self._ttl_s:
            table = self._read(now)
        route = table.get(code)
        if route is None and now - self._read_at >= MISS_REFRESH_S:
            route = self._read(now).get(code)
        return route or DEFAULT_ROUTE

    def _adapter(self, route: str, biller: str = "") -> BillingSystem:
        adapter = self._routes.get(route)
        if adapter is None:
            whose = f" of biller {biller}" if biller else ""
            message = f"billing route {route!r}{whose} is not configured"
            if route not in self._complained:
                self._complained.add(route)
                log.error("%s (SELFPAY_BILLING_ROUTES has %s); its requests fail until "
                          "the biller or the configuration is fixed", message,
                          ", ".join(self.route_names))
            raise BillingSystemError(message)
        return adapter

    def _for(self, biller: str) -> tuple[str, BillingSystem]:
        route = self.route_of(biller)
        return route, self._adapter(route, biller)

    # --- the port ----------------------------------------------------------------------

    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:
        return self._for(biller)[1].account_summary(biller, account, fresh=fresh)

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        route, adapter = self._for(posting.biller)
        if self._pin is not None:
            # A retry goes where the first attempt went, whatever the registry says now:
            # a lost answer may mean the payment was applied there.
            pinned = self._pin(posting.payment_id, route)
            if pinned != route:
                log.warning("payment %s stays on billing route %r (biller %s is now on %r)",
                            posting.payment_id, pinned, posting.biller, route)
                route, adapter = pinned, self._adapter(pinned, posting.biller)
        return adapter.post_payment(posting)

    def cached_at(self, biller: str, account: str) -> float | None:
        """When a caching route (the bridge) fetched the summary it would show now."""
        try:
            _, adapter = self._for(biller)
        except BillingSystemError:
            return None
        cached_at = getattr(adapter, "cached_at", None)
        return cached_at(biller, account) if callable(cached_at) else None

    # --- WorkOrderDesk -----------------------------------------------------------------

    def _desk(self, route: str, biller: str = "") -> WorkOrderDesk:
        adapter = self._adapter(route, biller)
        if not isinstance(adapter, WorkOrderDesk):
            raise BillingSystemError(f"billing route {route!r} takes no work orders")
        return adapter

    def _tagged(self, route: str, result: WorkOrderResult) -> WorkOrderResult:
        ref = result.ref
        if not ref or (route == DEFAULT_ROUTE and not ref.startswith("@")):
            return result
        tagged = f"@{route}/{ref}"
        if len(tagged) > REF_MAX:
            log.warning("work order %s: reference of route %r too long to keep with its "
                        "route; polled by ticket number", result.ticket_no, route)
            tagged = ""
        return replace(result, ref=tagged)

    def _route_of_ref(self, ref: str) -> tuple[str, str]:
        tag = _TAG_RE.fullmatch(ref)
        if tag is not None:
            return tag.group(1), tag.group(2)
        if is_ticket_no(ref) and self._ticket_biller is not None:
            biller = self._ticket_biller(ref)
            if biller:
                return self.route_of(biller), ref
        return DEFAULT_ROUTE, ref

    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        route = self.route_of(order.biller)
        return self._tagged(route, self._desk(route, order.biller).submit_work_order(order))

    def work_order_status(self, ref: str) -> WorkOrderResult:
        route, inner = self._route_of_ref(ref)
        return self._tagged(route, self._desk(route).work_order_status(inner))

    # --- health and life cycle ---------------------------------------------------------

    def _brokers_ready(self) -> bool:
        for adapter in self._routes.values():
            ready = getattr(adapter, "broker_ready", None)
            if callable(ready) and not ready():
                return False
        return True

    def ping(self) -> float:
        """The slowest round trip of the routes that can be pinged (the bridge's)."""
        slowest = 0.0
        for name, adapter in sorted(self._routes.items()):
            ping = getattr(adapter, "ping", None)
            if callable(ping):
                try:
                    slowest = max(slowest, float(ping()))
                except BillingSystemError as exc:
                    raise BillingSystemError(f"billing route {name!r}: {exc}") from exc
        return slowest

    def close(self) -> None:
        """Close every route's adapter (each once, whatever the others do)."""
        seen: set[int] = set()
        for name, adapter in self._routes.items():
            if id(adapter) in seen:
                continue
            seen.add(id(adapter))
            close = getattr(adapter, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - the others must still be closed
                    log.exception("billing route %r did not close cleanly", name)
