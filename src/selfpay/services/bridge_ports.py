"""The Transport port: durable point-to-point queues with acknowledgement.

The DMZ/intranet bridge is request/reply over two kinds of queue: one request queue
that every agent consumes from (competing consumers), and one named reply queue per
web instance. A Transport moves opaque bytes with a few headers; what is inside is the
business of `selfpay.adapters.bridge.codec`.

Delivery is at least once. A handler acknowledges with `Delivery.ack()` after it has
done its work (for the agent: after its reply was confirmed by the broker); a message
that is never acknowledged comes back after the consumer's connection (or the
embedded transport's lock) is gone. There is deliberately no `nack`: ActiveMQ 5.17
dead-letters a STOMP NACK on its first delivery and RabbitMQ requeues it in a tight
loop, so transient failures are answered (the caller retries) and never NACKed.

Errors: TransportError (the broker cannot be reached, or did not confirm a send).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from selfpay.domain.accounts import AccountSummary, PaymentPosting, PostingResult


class TransportError(Exception):
    """The transport could not deliver or confirm a message (broker unreachable,
    receipt timed out, connection lost while sending)."""


class Delivery(Protocol):
    """One received message. `redelivered` is True when the transport knows it was
    delivered before (broker redelivery, expired embedded lock)."""

    @property
    def body(self) -> bytes: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def redelivered(self) -> bool: ...

    async def ack(self) -> None:
        """Remove the message from its queue for good. Idempotent; a message whose
        connection was lost meanwhile is redelivered to someone instead."""
        ...


MessageHandler = Callable[[Delivery], Awaitable[None]]


class Subscription(Protocol):
    async def close(self) -> None:
        """Stop receiving; messages not yet acknowledged go back to the queue."""
        ...


class Transport(Protocol):
    """Queues named by logical names such as `selfpay.bridge.requests`; each
    transport maps a name to its own addressing (STOMP `/queue/<name>`, a table row's
    `queue` column). Use as an async context manager: entering connects."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        persistent: bool = True,
        expires_at: float | None = None,
        confirm: bool = True,
    ) -> None:
        """Put one message on `queue`. `expires_at` (UNIX time, seconds) lets the
        broker drop it unread after that moment. `confirm` waits until the broker
        has taken responsibility for it (STOMP receipt). Raises TransportError."""
        ...

    async def subscribe(
        self, queue: str, handler: MessageHandler, *, prefetch: int = 8
    ) -> Subscription:
        """Deliver messages of `queue` to `handler`, at most `prefetch` of them
        unacknowledged at a time, with client-individual acknowledgement."""
        ...


@runtime_checkable
class AsyncBillingSystem(Protocol):
    """What an agent's billing adapter may be instead of a ports.BillingSystem: the
    same methods (and, optionally, ports.WorkOrderDesk's) as coroutines, awaited on the
    agent's event loop. A blocking adapter is called on worker threads instead, which
    costs a thread hand-off per request (bench/bridge.py shows both). An adapter with
    an `aclose()` coroutine is closed with it by `selfpay agent` when it stops."""

    async def account_summary(self, biller: str, account: str) -> AccountSummary: ...

    async def post_payment(self, posting: PaymentPosting) -> PostingResult: ...
