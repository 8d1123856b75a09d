"""The composition root: the one place that builds adapters from Settings."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from selfpay.adapters.billing.ledger import LedgerBillingSystem
from selfpay.adapters.billing.routes import build_routes
from selfpay.adapters.billing.routing import RoutingBillingSystem
from selfpay.adapters.bridge import build_billing
from selfpay.adapters.cache import build_cache
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.payment_repositories import pin_posting_route
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.adapters.notifiers import build_notifier, message_box
from selfpay.adapters.passwords import Argon2Hasher
from selfpay.adapters.ratelimit import LimitStore, build_store, event_budget
from selfpay.adapters.secretbox import AesGcmBox, derive_key
from selfpay.config import Settings
from selfpay.domain.accounts import DEFAULT_ROUTE, Biller
from selfpay.domain.qrcodes import QrKeyring
from selfpay.services.devices import Devices
from selfpay.services.history import AccountHistory
from selfpay.services.jobs import JobTracker
from selfpay.services.payments import Payments
from selfpay.services.ports import (
    BillingSystem,
    Cache,
    Notifier,
    PasswordHasher,
    PaymentChannel,
    SecretBox,
    UnitOfWork,
)
from selfpay.services.rate_limits import LimitTable
from selfpay.services.work_orders import WorkOrders

if TYPE_CHECKING:
    from selfpay.adapters.bridge.agent_thread import AgentThread

CHANNELS_GROUP = "selfpay.channels"
REJECTED_NOTIFICATIONS_PER_MINUTE = 60  # kept for staff per channel; the rest only counted
ROUTE_TTL_S = 30.0  # how soon a biller's changed route reaches a running process
log = logging.getLogger(__name__)


@dataclass
class Container:
    settings: Settings
    engine: Engine
    uow_factory: Callable[[], UnitOfWork]
    read_uow_factory: Callable[[], UnitOfWork]  # reads that change nothing (pages, polls)
    billing: BillingSystem
    hasher: PasswordHasher
    keyring: QrKeyring
    code_base: str  # e.g. "HTTPS://PAY.EXAMPLE.CN/Q/"
    channels: dict[str, PaymentChannel]  # by name: SELFPAY_ENABLED_CHANNELS
    notifier: Notifier
    message_box: SecretBox  # seals SMS codes into the outbox; only the notifier opens them
    payments: Payments
    work_orders: WorkOrders
    limit_store: LimitStore  # rate-limit windows: Redis (SELFPAY_REDIS_URL) or memory
    rate_limits: LimitTable  # requests per minute per route group, as staff set them
    jobs: JobTracker  # background jobs (QR batches), readable from every process
    cache: Cache  # Redis (SELFPAY_REDIS_URL), or in this process
    history: AccountHistory  # an account's recent payments, through the cache
    devices: Devices  # the kiosk fleet: enrolment, heartbeats, alarms, maintenance

    @property
    def batch_dir(self) -> Path:
        return self.settings.data_dir / "batches"

    def close(self) -> None:
        # `close(order_no)` is a port method (close an order at the channel); what a
        # channel opened for itself (threads, HTTP clients, engines) it frees in dispose().
        for channel in self.channels.values():
            dispose = getattr(channel, "dispose", None)
            if callable(dispose):
                dispose()
        _close(self.billing)  # the bridge client's loop; a router closes every route's
        _close(self.notifier)  # an SMS gateway's HTTP client
        self.limit_store.close()
        close_cache = getattr(self.cache, "close", None)
        if callable(close_cache):
            close_cache()
        self.engine.dispose()


def _close(resource: object) -> None:
    close = getattr(resource, "close", None)
    if callable(close):
        close()


def _registry_routes(read_uow_factory: Callable[[], UnitOfWork]) -> list[Biller] | None:
    """The billers (with their routes), or None when the database cannot say yet (not
    migrated, not reachable: the billing calls will tell)."""
    try:
        with read_uow_factory() as uow:
            return uow.billers.list(include_disabled=True)
    except SQLAlchemyError as exc:
        log.debug("billing routes: the billers cannot be read yet: %s", exc)
        return None


def check_billing_routes(settings: Settings, billers: Sequence[Biller]) -> dict[str, list[str]]:
    """The enabled billers whose route is not configured, by route, each logged as an
    error. Start-up goes on: a biller can be fixed at run time (`selfpay billers set`),
    and until then only its own requests fail."""
    configured = set(settings.route_names)
    missing: dict[str, list[str]] = {}
    for biller in billers:
        if biller.enabled and biller.route not in configured:
            missing.setdefault(biller.route, []).append(biller.code)
    for route, codes in sorted(missing.items()):
        log.error("billing route %r is not configured (SELFPAY_BILLING_ROUTES has %s), but "
                  "biller%s %s use%s it: their look-ups and postings fail until it is",
                  route, ", ".join(sorted(configured)), "s" if len(codes) > 1 else "",
                  ", ".join(codes), "" if len(codes) > 1 else "s")
    return missing


def route_billing(settings: Settings, default: BillingSystem, *, engine: Engine,
                  uow_factory: Callable[[], UnitOfWork],
                  read_uow_factory: Callable[[], UnitOfWork]) -> RoutingBillingSystem | None:
    """The router over the default billing system and the named routes, or None (no
    router, no cost) when no route is configured and no biller names one. A biller
    naming a route that is missing here then still gets a router, whose answer is "not
    configured", rather than being posted to the default billing system."""
    billers = _registry_routes(read_uow_factory) or []
    check_billing_routes(settings, billers)
    if not settings.billing_routes and all(b.route == DEFAULT_ROUTE for b in billers):
        return None
    routes: dict[str, BillingSystem] = {
        DEFAULT_ROUTE: default,
        **build_routes(settings, engine=engine, uow_factory=uow_factory,
                       read_uow_factory=read_uow_factory),
    }

    def biller_routes() -> dict[str, str]:
        with read_uow_factory() as uow:
            return {b.code: b.route for b in uow.billers.list(include_disabled=True)}

    def ticket_biller(ticket_no: str) -> str | None:
        with read_uow_factory() as uow:
            order = uow.work_orders.get(ticket_no)
        return order.biller if order is not None else None

    def pin(payment_id: str, route: str) -> str:
        return pin_posting_route(engine, payment_id, route)

    log.info("billing routes: %s", ", ".join(sorted(routes)))
    return RoutingBillingSystem(routes, billers=biller_routes, ticket_biller=ticket_biller,
                                pin=pin, ttl_s=ROUTE_TTL_S)


def load_channels(settings: Settings, *, engine: Engine | None = None
                  ) -> dict[str, PaymentChannel]:
    """The enabled payment channels (SELFPAY_ENABLED_CHANNELS), each built by its entry
    point in the `selfpay.channels` group: `build(settings)`, or `build(settings,
    engine=...)` when it wants to share the app's database pool."""
    found = {ep.name: ep for ep in entry_points(group=CHANNELS_GROUP)}
    channels: dict[str, PaymentChannel] = {}
    for name in settings.channel_names:
        ep = found.get(name)
        if ep is None:
            raise ValueError(
                f"payment channel {name!r} is not installed (entry points of "
                f"{CHANNELS_GROUP}: {', '.join(sorted(found)) or 'none'})"
            )
        factory = ep.load()
        if engine is not None and "engine" in inspect.signature(factory).parameters:
            channels[name] = factory(settings, engine=engine)
        else:
            channels[name] = factory(settings)
    return channels


def bootstrap(
    settings: Settings,
    *,
    channels: Mapping[str, PaymentChannel] | None = None,
    notifier: Notifier | None = None,
) -> Container:
    """`channels` and `notifier` replace the configured ones (tests, benchmarks)."""
    box = message_box(settings)  # before anything that would need closing
    engine = make_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size,
                         max_overflow=settings.db_max_overflow,
                         pool_timeout=settings.db_pool_timeout_s)

    def uow_factory() -> UnitOfWork:
        return SqlAlchemyUnitOfWork(engine)

    if settings.env == "production" and not settings.redis_url:
        log.warning("SELFPAY_REDIS_URL is not set: rate limits are counted per process, "
                    "so several web processes each allow the full limit")

    def read_uow_factory() -> UnitOfWork:
        return SqlAlchemyUnitOfWork(engine, read_only=True)

    # The built-in ledger shares the app's database when billing is in-process; with a
    # bridge (SELFPAY_TRANSPORT=embedded|stomp) the web tier knows only the broker.
    local = ((lambda: LedgerBillingSystem(uow_factory, read_uow_factory=read_uow_factory))
             if settings.billing == "ledger" else None)
    # One cache for the site (Redis, or this process): the bridge's account answers and
    # the recent payments both live in it.
    cache = build_cache(settings.redis_url, settings.redis_prefix)
    billing = build_billing(settings, engine=engine, local=local, cache=cache)
    try:
        router = route_billing(settings, billing, engine=engine, uow_factory=uow_factory,
                               read_uow_factory=read_uow_factory)
    except Exception:
        _close(billing)
        _close(cache)
        engine.dispose()
        raise
    billing = router or billing
    try:
        built = dict(channels) if channels is not None else load_channels(settings, engine=engine)
    except Exception:
        _close(billing)
        _close(cache)
        engine.dispose()
        raise
    limit_store = build_store(settings.redis_url, settings.redis_prefix)
    history = AccountHistory(uow_factory=read_uow_factory, cache=cache,
                             ttl_s=settings.history_cache_s)
    payments = Payments(
        uow_factory=uow_factory,
        billing=billing,
        channels=built,
        notify_base_url=settings.public_base_url,
        order_ttl=dt.timedelta(seconds=settings.order_ttl_s),
        query_after=dt.timedelta(seconds=settings.order_query_after_s),
        flag_after_attempts=settings.posting_flag_after,
        dead_after_attempts=settings.posting_dead_after,
        posting_lease=dt.timedelta(seconds=settings.posting_lease_s),
        tz=ZoneInfo(settings.timezone),
        read_uow_factory=read_uow_factory,
        on_posted=history.forget,
        record_rejected=event_budget(limit_store, name="notify_rejected",
                                     per_minute=REJECTED_NOTIFICATIONS_PER_MINUTE),
    )
    work_orders = WorkOrders(
        # routed: work orders wait in the outbox (as without a desk) unless a route takes them
        uow_factory=uow_factory,
        billing=billing if router is None or router.takes_work_orders else None,
        dead_after=settings.posting_dead_after,
        poll_every=dt.timedelta(seconds=settings.work_order_poll_s),
        per_account_per_day=settings.work_orders_per_account_per_day,
    )
    secret = settings.secret_key.get_secret_value()
    devices = Devices(
        uow_factory=uow_factory,
        box=AesGcmBox(derive_key(secret, purpose=DEVICE_SECRET_PURPOSE)),
        code_key=derive_key(secret, purpose=b"selfpay/device-enrol-code/v1"),
        alert_to=settings.alert_recipients,
        known_billers=lambda: _biller_codes(read_uow_factory),
    )
    return Container(
        settings=settings,
        engine=engine,
        uow_factory=uow_factory,
        read_uow_factory=read_uow_factory,
        billing=billing,
        hasher=Argon2Hasher(),
        keyring=settings.keyring(),
        code_base=settings.code_base,
        channels=built,
        notifier=notifier or build_notifier(settings, uow_factory),
        message_box=box,
        payments=payments,
        work_orders=work_orders,
        limit_store=limit_store,
        rate_limits=LimitTable(uow_factory, default=settings.rate_limit_per_minute),
        jobs=JobTracker(uow_factory, read_uow_factory=read_uow_factory),
        cache=cache,
        history=history,
        devices=devices,
    )


DEVICE_SECRET_PURPOSE = b"selfpay/device-secret/v1"


def _biller_codes(read_uow_factory: Callable[[], UnitOfWork]) -> set[str]:
    with read_uow_factory() as uow:
        return {b.code for b in uow.billers.list()}


def build_embedded_agent(container: Container) -> AgentThread | None:
    """The in-process agent of a web tier that runs everything itself (SELFPAY_TRANSPORT=
    embedded with SELFPAY_RUN_EMBEDDED_AGENT, what `selfpay demo` sets): the embedded
    queue on the app's database, the built-in ledger on the same database. Not started."""
    s = container.settings
    if s.transport != "embedded" or not s.run_embedded_agent:
        return None
    from selfpay.adapters.bridge.agent_thread import AgentThread

    billing = (LedgerBillingSystem(container.uow_factory) if s.billing == "ledger" else None)
    return AgentThread.from_settings(s, engine=container.engine, billing=billing)
