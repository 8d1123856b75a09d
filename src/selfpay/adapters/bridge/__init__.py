"""The DMZ/intranet bridge: codec, transports (embedded, STOMP), client and agent.

`build_billing(settings)` is what the web tier's composition root calls;
`build_transport_factory` and `load_agent_billing_adapter` are what `selfpay agent` calls.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from selfpay.config import Settings
    from selfpay.services.bridge_ports import AsyncBillingSystem, Transport
    from selfpay.services.ports import BillingSystem, Cache


def build_transport_factory(settings: Settings, *,
                            engine: Engine | None = None) -> Callable[[], Transport]:
    """A factory of fresh transports (one per connection attempt)."""
    if settings.transport == "embedded":
        from selfpay.adapters.bridge.embedded import EmbeddedTransport
        from selfpay.adapters.db.engine import make_engine

        eng = engine or make_engine(settings.sqlalchemy_url)
        return lambda: EmbeddedTransport(eng)
    if settings.transport == "stomp":
        from selfpay.adapters.bridge.stomp import StompTransport, parse_broker_urls, tls_context

        brokers = parse_broker_urls(settings.broker_urls)
        ctx = (tls_context(ca_file=settings.broker_ca_file, cert_file=settings.broker_cert_file,
                           key_file=settings.broker_key_file) if brokers[0].tls else None)

        def make() -> Transport:
            return StompTransport(
                brokers, kind=settings.broker_kind, login=settings.broker_user,
                passcode=settings.broker_password.get_secret_value(),
                vhost=settings.broker_vhost, ssl_context=ctx)

        return make
    raise ValueError("SELFPAY_TRANSPORT is 'none': there is no bridge to build")


def build_billing(settings: Settings, *, engine: Engine | None = None,
                  local: Callable[[], BillingSystem] | None = None,
                  cache: Cache | None = None) -> BillingSystem:
    """The web tier's BillingSystem: in-process (`local()`, by default the adapter named
    by SELFPAY_BILLING) when SELFPAY_TRANSPORT=none, else a BridgeBillingSystem that
    knows only the broker (or the embedded queue). Close it with `close()` if it has one.
    `cache` is the site's (SELFPAY_REDIS_URL), which the bridge's account cache uses
    unless SELFPAY_BRIDGE_CACHE_URL names a Redis of its own."""
    if settings.transport == "none":
        return local() if local is not None else load_billing_adapter(settings)
    from selfpay.adapters.bridge.cache import SummaryCache
    from selfpay.adapters.bridge.client import BridgeBillingSystem
    from selfpay.adapters.cache import build_cache

    own_url = settings.bridge_cache_url and settings.bridge_cache_url != settings.redis_url
    if cache is None or own_url:
        summaries = SummaryCache(build_cache(settings.bridge_cache_url or settings.redis_url,
                                             settings.redis_prefix),
                                 settings.bridge_cache_s, owns=True)
    else:
        summaries = SummaryCache(cache, settings.bridge_cache_s)
    return BridgeBillingSystem(
        build_transport_factory(settings, engine=engine),
        instance_id=settings.bridge_instance_id or None,
        request_queue=settings.bridge_request_queue, timeout_s=settings.bridge_timeout_s,
        posting_timeout_s=settings.bridge_posting_timeout_s, cache=summaries)


def load_billing_adapter(settings: Settings) -> BillingSystem:
    """The billing adapter named by SELFPAY_BILLING, from entry point group
    `selfpay.billing` (ledger, http, plug-ins): `build(settings) -> BillingSystem`."""
    found = {ep.name: ep for ep in entry_points(group="selfpay.billing")}
    if settings.billing not in found:
        raise ValueError(f"unknown billing adapter {settings.billing!r} "
                         f"(installed: {', '.join(sorted(found)) or '-'})")
    build: Any = found[settings.billing].load()
    billing: BillingSystem = build(settings)
    return billing


def load_agent_billing_adapter(settings: Settings) -> BillingSystem | AsyncBillingSystem:
    """For the agent: an adapter of that name in entry point group
    `selfpay.billing_async` (its coroutine methods run on the agent's event loop, with
    no worker thread per call) wins over the blocking one of `selfpay.billing`."""
    found = {ep.name: ep for ep in entry_points(group="selfpay.billing_async")}
    if settings.billing in found:
        build: Any = found[settings.billing].load()
        billing: AsyncBillingSystem = build(settings)
        return billing
    return load_billing_adapter(settings)
