"""The intranet side of the bridge: consume requests, call the billing system, reply.

For each request: drop it if its deadline has passed (its caller gave up and will
retry); answer a redelivered request id from the small store of recent replies;
otherwise call the billing adapter (awaited on the loop when it is an
AsyncBillingSystem, else in a worker thread), send the reply to the
request's reply queue (persistent and confirmed for postings and work orders) and
only then ACK. A crash anywhere before the ACK means redelivery, and post_payment is
idempotent by payment id, so a posting is applied once.

Failures never NACK (see bridge_ports): a billing system that is down gets an
`unavailable` reply, which the DMZ raises as BillingSystemError and its outbox retries
with the same payment id. An unreadable message is copied to `DLQ.<request queue>`
for staff and ACKed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from selfpay.adapters.bridge import codec
from selfpay.adapters.bridge.blocking import BlockingCalls
from selfpay.adapters.bridge.client import COMMANDS, REQUEST_QUEUE
from selfpay.services.bridge_ports import (
    AsyncBillingSystem,
    Delivery,
    Transport,
    TransportError,
)
from selfpay.services.ports import BillingSystem, WorkOrderDesk

log = logging.getLogger(__name__)


@dataclass
class AgentStats:
    handled: int = 0
    replayed: int = 0
    expired: int = 0
    failed: int = 0  # billing raised something transient
    poison: int = 0


class RecentReplies:
    """Replies by request id, for redelivered requests (bounded, oldest out first)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, codec.Reply] = OrderedDict()

    def get(self, request_id: str) -> codec.Reply | None:
        return self._items.get(request_id)

    def put(self, request_id: str, reply: codec.Reply) -> None:
        self._items[request_id] = reply
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class BridgeAgent:
    def __init__(
        self,
        transport: Transport,
        billing: BillingSystem | AsyncBillingSystem,
        *,
        request_queue: str = REQUEST_QUEUE,
        prefetch: int = 8,
        workers: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.transport = transport
        self.billing = billing
        self.awaits_billing = inspect.iscoroutinefunction(billing.account_summary)
        self.request_queue = request_queue
        self.prefetch = prefetch
        self._calls = BlockingCalls(workers, name="selfpay-agent")
        self._clock = clock
        self.recent = RecentReplies()
        self._in_flight: dict[str, asyncio.Future[codec.Reply]] = {}
        self.stats = AgentStats()

    async def run(self, stop: asyncio.Event, *,
                  on_consuming: Callable[[], None] | None = None) -> None:
        """Consume until `stop` is set. The caller has entered the transport."""
        sub = await self.transport.subscribe(self.request_queue, self.handle,
                                             prefetch=self.prefetch)
        log.info("agent: consuming %s (prefetch %d)", self.request_queue, self.prefetch)
        if on_consuming is not None:
            on_consuming()
        try:
            await stop.wait()
        finally:
            await sub.close()
            self._calls.shutdown()

    async def handle(self, d: Delivery) -> None:
        try:
            request = codec.decode_request(d.body)
        except codec.CodecError as exc:
            await self._dead_letter(d, str(exc))
            return
        if self._clock() > request.deadline:
            self.stats.expired += 1
            log.info("agent: dropped %s %s past its deadline", request.kind, request.message_id)
            await d.ack()
            return
        reply = self.recent.get(request.message_id)
        if reply is not None:
            self.stats.replayed += 1
        elif (running := self._in_flight.get(request.message_id)) is not None:
            # a redelivery while the first delivery is still being worked on
            reply = await asyncio.shield(running)
            self.stats.replayed += 1
        else:
            fut: asyncio.Future[codec.Reply] = asyncio.get_running_loop().create_future()
            self._in_flight[request.message_id] = fut
            try:
                reply = await self._answer(request)
                fut.set_result(reply)
            finally:
                if not fut.done():
                    fut.cancel()
                self._in_flight.pop(request.message_id, None)
            if reply.ok or reply.error_code not in codec.TRANSIENT:
                self.recent.put(request.message_id, reply)
        if await self._send_reply(request, reply):
            self.stats.handled += 1
        # Acked also when the reply could not be sent before the deadline: nobody waits
        # for it any more, and the caller's retry is answered by the idempotent adapter.
        await d.ack()

    async def _answer(self, request: codec.Request) -> codec.Reply:
        try:
            if self.awaits_billing:
                payload = await self._call_billing_async(request)
            else:
                payload = await self._calls.run(self._call_billing, request)
        except codec.CodecError as exc:
            return codec.Reply(request.kind, request.message_id, ok=False,
                               error_code="bad_request", error_message=str(exc))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            code = codec.error_code(exc)
            if code in codec.TRANSIENT:
                self.stats.failed += 1
                log.warning("agent: billing failed on %s %s: %r", request.kind,
                            request.idempotency_key or request.message_id, exc)
            return codec.Reply(request.kind, request.message_id, ok=False, error_code=code,
                               error_message=str(exc)[:500])
        return codec.Reply(request.kind, request.message_id, ok=True, payload=payload)

    def _call_billing(self, request: codec.Request) -> dict[str, Any]:
        """A blocking adapter's answer (on a worker thread)."""
        result, to_json = self._dispatch(request)
        return to_json(result)

    async def _call_billing_async(self, request: codec.Request) -> dict[str, Any]:
        """An AsyncBillingSystem's answer (on the loop)."""
        result, to_json = self._dispatch(request)
        return to_json(await result if inspect.isawaitable(result) else result)

    def _dispatch(self, request: codec.Request) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
        """Call the adapter method for `request`: its result (a coroutine for an
        AsyncBillingSystem) and how to put that result into JSON."""
        p = request.payload
        billing = cast(Any, self.billing)  # the methods are the same, sync or async
        match request.kind:
            case "ping":
                return {"at": self._clock()}, dict
            case "account_summary":
                return (billing.account_summary(str(p["biller"]), str(p["account"])),
                        codec.summary_to_json)
            case "post_payment":
                return billing.post_payment(codec.posting_from_json(p)), codec.result_to_json
            case "submit_work_order" | "work_order_status":
                # an optional capability of the billing adapter (ports.WorkOrderDesk)
                if not isinstance(billing, WorkOrderDesk):
                    raise codec.CodecError("this billing system takes no work orders")
                if request.kind == "work_order_status":
                    return (billing.work_order_status(str(p["ref"])),
                            codec.work_order_result_to_json)
                return (billing.submit_work_order(codec.work_order_from_json(p)),
                        codec.work_order_result_to_json)
        raise codec.CodecError(f"unknown kind {request.kind}")

    async def _send_reply(self, request: codec.Request, reply: codec.Reply) -> bool:
        """Send until confirmed or the request's deadline has passed."""
        command = request.kind in COMMANDS
        delay = 0.2
        while True:
            try:
                await self.transport.send(
                    request.reply_to, codec.encode_reply(reply),
                    headers={"correlation-id": request.message_id},
                    persistent=command, confirm=command, expires_at=request.deadline)
                return True
            except TransportError as exc:
                if self._clock() + delay > request.deadline:
                    log.warning("agent: reply to %s not sent before its deadline: %s",
                                request.message_id, exc)
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _dead_letter(self, d: Delivery, why: str) -> None:
        self.stats.poison += 1
        log.error("agent: unreadable request moved to DLQ.%s: %s", self.request_queue, why)
        try:
            await self.transport.send(f"DLQ.{self.request_queue}", d.body,
                                      headers={"selfpay-error": why[:200]}, persistent=True,
                                      confirm=True)
        except TransportError:
            return  # not acked: try again on redelivery
        await d.ack()
