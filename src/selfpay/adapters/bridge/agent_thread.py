"""A BridgeAgent on an event-loop thread of its own, with start() / stop().

`selfpay demo` runs the intranet agent in the web process (embedded transport, built-in
ledger), so that the demo goes through the same bridge as a two-zone deployment; tests
use it to run agents beside a web tier. `selfpay agent` runs the agent on its main
thread instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from selfpay.adapters.bridge.agent import BridgeAgent
from selfpay.adapters.bridge.client import REQUEST_QUEUE, LoopThread
from selfpay.services.bridge_ports import AsyncBillingSystem, Transport
from selfpay.services.ports import BillingSystem

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from selfpay.config import Settings

log = logging.getLogger(__name__)


class AgentThread:
    """Connects with a fresh transport from `transport_factory` and consumes until stop().
    A broker that cannot be reached at start is retried every `reconnect_s`."""

    def __init__(self, transport_factory: Callable[[], Transport],
                 billing: BillingSystem | AsyncBillingSystem, *,
                 request_queue: str = REQUEST_QUEUE, prefetch: int = 8, workers: int = 4,
                 reconnect_s: float = 1.0, name: str = "selfpay-agent-loop") -> None:
        self._factory = transport_factory
        self.billing = billing
        self.request_queue = request_queue
        self.prefetch = prefetch
        self.workers = workers
        self._reconnect_s = reconnect_s
        self._name = name
        self._loop: LoopThread | None = None
        self._stop: asyncio.Event | None = None
        self._done: Future[None] | None = None
        self._consuming = threading.Event()
        self._owns_billing = False
        self.agent: BridgeAgent | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: Engine | None = None,
                      billing: BillingSystem | None = None) -> AgentThread:
        """The agent `selfpay agent` would run: SELFPAY_TRANSPORT and SELFPAY_BILLING
        (`billing` replaces the latter)."""
        from selfpay.adapters.bridge import build_transport_factory, load_agent_billing_adapter

        agent = cls(build_transport_factory(settings, engine=engine),
                    billing if billing is not None else load_agent_billing_adapter(settings),
                    request_queue=settings.bridge_request_queue,
                    prefetch=settings.agent_prefetch, workers=settings.agent_workers)
        agent._owns_billing = billing is None
        return agent

    def start(self, *, wait_s: float = 15.0) -> None:
        """Start consuming; waits up to `wait_s` for the subscription (0: do not wait)."""
        if self._loop is not None:
            return
        self._consuming.clear()
        self._loop = LoopThread(self._name)

        async def make_stop() -> None:
            self._stop = asyncio.Event()

        self._loop.submit(make_stop()).result(5)
        self._done = self._loop.submit(self._main())
        if wait_s and not self._consuming.wait(wait_s):
            log.warning("agent: not consuming after %.0f s (broker unreachable?)", wait_s)

    @property
    def consuming(self) -> bool:
        return self._consuming.is_set()

    async def _main(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                async with self._factory() as transport:
                    self.agent = BridgeAgent(transport, self.billing,
                                             request_queue=self.request_queue,
                                             prefetch=self.prefetch, workers=self.workers)
                    await self.agent.run(self._stop, on_consuming=self._consuming.set)
            except Exception as exc:  # noqa: BLE001 - an agent keeps trying until stopped
                log.warning("agent: %r; reconnecting in %.1f s", exc, self._reconnect_s)
                self._consuming.clear()
                try:
                    await asyncio.wait_for(self._stop.wait(), self._reconnect_s)
                except TimeoutError:
                    pass
        aclose = getattr(self.billing, "aclose", None) if self._owns_billing else None
        if aclose is not None:
            await aclose()  # an AsyncBillingSystem's client belongs to this loop

    def stop(self, timeout: float = 15.0) -> None:
        """Stop consuming (unacknowledged requests go back to the queue) and end the thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self._stop is not None and not loop.loop.is_closed():
                loop.loop.call_soon_threadsafe(self._stop.set)
            if self._done is not None:
                self._done.result(timeout)
        finally:
            self._consuming.clear()
            loop.close()
            close = getattr(self.billing, "close", None) if self._owns_billing else None
            if callable(close):
                close()
