"""The DMZ side of the bridge: BridgeBillingSystem, a BillingSystem that asks over a
Transport and never holds an address of the billing system.

Each instance has its own named reply queue `selfpay.reply.<instance id>` (temporary
queues die with their connection), sends every request with a correlation id, an
absolute deadline and an idempotency key, and waits at most until the deadline:
then it raises BillingSystemError("billing system unavailable, try later"). Late or
unknown replies are dropped. Postings and work orders are persistent and confirmed by
the broker; queries are not (the caller asks again).

The transport runs in an event loop on a thread of its own, so the synchronous
BillingSystem methods can be called from any thread (web request workers, the outbox
worker). close() stops it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from selfpay.adapters.bridge import codec
from selfpay.adapters.bridge.cache import SummaryCache
from selfpay.adapters.cache import InProcessCache
from selfpay.domain.accounts import AccountSummary, PaymentPosting, PostingResult
from selfpay.services.bridge_ports import Delivery, Subscription, Transport, TransportError
from selfpay.services.ports import BillingSystemError, WorkOrderRequest, WorkOrderResult

log = logging.getLogger(__name__)
T = TypeVar("T")
REQUEST_QUEUE = "selfpay.bridge.requests"
COMMANDS = frozenset({"post_payment", "submit_work_order"})


def default_instance_id() -> str:
    return f"{socket.gethostname()}.{uuid.uuid4().hex[:8]}"


class LoopThread:
    """An asyncio event loop running on its own (non-daemon) thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_cancel_rest(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        self.loop.close()


class Requester:
    """Request/reply over a Transport (async; one per web instance)."""

    def __init__(self, transport_factory: Callable[[], Transport], *, instance_id: str,
                 request_queue: str = REQUEST_QUEUE, reconnect_s: float = 1.0) -> None:
        self._factory = transport_factory
        self.instance_id = instance_id
        self.reply_queue = f"selfpay.reply.{instance_id}"
        self.request_queue = request_queue
        self._reconnect_s = reconnect_s
        self._pending: dict[str, asyncio.Future[codec.Reply]] = {}
        self._ready = asyncio.Event()
        self._transport: Transport | None = None
        self._subscription: Subscription | None = None
        self._connector: asyncio.Task[None] | None = None
        self.late_replies = 0

    def start(self) -> None:
        """Connect in the background, retrying until it works (a broker that is down
        when the web tier starts only makes calls fail until it is back)."""
        self._connector = asyncio.create_task(self._connect_forever())

    async def _connect_forever(self) -> None:
        while True:
            transport = self._factory()
            try:
                await transport.__aenter__()
            except TransportError as exc:
                log.warning("bridge: cannot reach the broker (%s); retrying", exc)
                await asyncio.sleep(self._reconnect_s)
                continue
            try:
                self._subscription = await transport.subscribe(
                    self.reply_queue, self._on_reply, prefetch=1000)
            except TransportError as exc:
                log.warning("bridge: cannot subscribe to %s (%s); retrying", self.reply_queue, exc)
                await transport.__aexit__(None, None, None)
                await asyncio.sleep(self._reconnect_s)
                continue
            self._transport = transport
            self._ready.set()
            return

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and self._transport is not None

    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _on_reply(self, d: Delivery) -> None:
        try:
            reply = codec.decode_reply(d.body)
        except codec.CodecError as exc:
            log.error("bridge: unreadable reply dropped: %s", exc)
        else:
            fut = self._pending.get(reply.correlation_id)
            if fut is not None and not fut.done():
                fut.set_result(reply)
            else:
                self.late_replies += 1  # its caller gave up at the deadline; retried since
        await d.ack()

    async def call(self, kind: str, payload: dict[str, Any], *, timeout_s: float,
                   idempotency_key: str = "") -> codec.Reply:
        """Send one request and wait for its reply until the deadline. Raises
        BillingSystemError(unavailable) on timeout or when the broker is unreachable."""
        deadline = time.time() + timeout_s
        request = codec.Request(kind=kind, payload=payload, reply_to=self.reply_queue,
                                deadline=deadline, idempotency_key=idempotency_key,
                                sender=self.instance_id)
        fut: asyncio.Future[codec.Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.message_id] = fut
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
                assert self._transport is not None
                command = kind in COMMANDS
                await self._transport.send(
                    self.request_queue, codec.encode_request(request),
                    headers={"correlation-id": request.correlation_id,
                             "reply-to": self.reply_queue},
                    persistent=command, confirm=command, expires_at=deadline)
                return await fut
        except TimeoutError:
            raise BillingSystemError(codec.UNAVAILABLE) from None
        except TransportError as exc:
            log.warning("bridge: request not sent: %s", exc)
            raise BillingSystemError(codec.UNAVAILABLE) from exc
        finally:
            self._pending.pop(request.message_id, None)

    async def stop(self) -> None:
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._transport is not None:
            if self._subscription is not None:
                await self._subscription.close()
            await self._transport.__aexit__(None, None, None)
            self._transport = None


class BridgeBillingSystem:
    """BillingSystem over the bridge (DMZ side)."""

    def __init__(
        self,
        transport_factory: Callable[[], Transport],
        *,
        instance_id: str | None = None,
        request_queue: str = REQUEST_QUEUE,
        timeout_s: float = 5.0,
        posting_timeout_s: float | None = None,
        cache: SummaryCache | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.posting_timeout_s = posting_timeout_s or max(timeout_s, 10.0)
        self.cache = cache if cache is not None else SummaryCache(InProcessCache(), 1800,
                                                                  owns=True)
        self._outage_until = 0.0
        self._loop = LoopThread("selfpay-bridge-client")
        self.requester = Requester(transport_factory, instance_id=instance_id or
                                   default_instance_id(), request_queue=request_queue)
        self._loop.submit(self._start()).result(5)

    async def _start(self) -> None:
        self.requester.start()

    @property
    def instance_id(self) -> str:
        return self.requester.instance_id

    def _call(self, kind: str, payload: dict[str, Any], *, timeout_s: float,
              idempotency_key: str = "") -> dict[str, Any]:
        fut = self._loop.submit(self.requester.call(
            kind, payload, timeout_s=timeout_s, idempotency_key=idempotency_key))
        try:
            reply = fut.result(timeout_s + 1.0)
        except FutureTimeout:
            fut.cancel()
            raise BillingSystemError(codec.UNAVAILABLE) from None
        if not reply.ok:
            codec.raise_error(reply.error_code, reply.error_message)
        return reply.payload

    def account_summary(self, biller: str, account: str, *,
                        fresh: bool = False) -> AccountSummary:
        """From the billing system; in an outage a page may get the cached answer (at
        most SELFPAY_BRIDGE_CACHE_S old), never an order (`fresh=True`)."""
        cached = None if fresh else self.cache.get(biller, account)
        if cached is not None and time.time() < self._outage_until:
            return cached[0]  # still in an outage: answer now instead of waiting again
        try:
            payload = self._call("account_summary", {"biller": biller, "account": account},
                                 timeout_s=self.timeout_s)
        except BillingSystemError:
            self._outage_until = time.time() + min(self.timeout_s, 10.0)
            if cached is not None:
                log.warning("bridge: billing unavailable; showing %s/%s as of %.0f s ago",
                            biller, account, time.time() - cached[1])
                return cached[0]
            raise
        summary = codec.summary_from_json(payload)
        self.cache.put(summary)
        return summary

    def cached_at(self, biller: str, account: str) -> float | None:
        """When the cached summary of an account was fetched (UNIX time), for a page that
        says "as of ..." while the billing system is unavailable."""
        cached = self.cache.get(biller, account)
        return cached[1] if cached else None

    def post_payment(self, posting: PaymentPosting) -> PostingResult:
        self.cache.invalidate(posting.biller, posting.account)
        try:
            payload = self._call("post_payment", codec.posting_to_json(posting),
                                 timeout_s=self.posting_timeout_s,
                                 idempotency_key=posting.payment_id)
        finally:
            # an answer fetched while the posting was in flight may predate it
            self.cache.invalidate(posting.biller, posting.account)
        return codec.result_from_json(payload)

    def submit_work_order(self, order: WorkOrderRequest) -> WorkOrderResult:
        """Send a work order (meter fault, outage, contact change) to the billing side;
        idempotent by ticket number there."""
        payload = self._call("submit_work_order", codec.work_order_to_json(order),
                             timeout_s=self.posting_timeout_s,
                             idempotency_key=order.ticket_no)
        return codec.work_order_result_from_json(payload)

    def work_order_status(self, ref: str) -> WorkOrderResult:
        payload = self._call("work_order_status", {"ref": ref}, timeout_s=self.timeout_s)
        return codec.work_order_result_from_json(payload)

    def broker_ready(self) -> bool:
        """Whether this instance holds a live broker connection (for /readyz; an agent
        outage is not the web tier's: pages then serve the cache or say so)."""
        return self.requester.connected

    def ping(self) -> float:
        """Round trip to an agent in seconds (for /readyz); raises BillingSystemError."""
        t0 = time.perf_counter()
        self._call("ping", {}, timeout_s=min(self.timeout_s, 3.0))
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            if not self._loop.loop.is_closed():
                self._loop.submit(self.requester.stop()).result(15)
        finally:
            self._loop.close()
            self.cache.close()
