"""STOMP 1.2 transport for ActiveMQ Classic and RabbitMQ (stompman, asyncio).

Why stompman: it is asyncio (the bridge's requester and the agent are event loops),
it reconnects, fails over between broker URLs and resubscribes by itself, and confirms
sends and subscriptions with receipts. stomp.py measured a little faster but is
threaded, does not resubscribe after a reconnect, and must not block for a receipt in
its listener; those are the properties a payment bridge depends on.

Measured pitfalls this module designs around (shared/research/broker-bridge.md):
- RabbitMQ reads the CONNECT `host` header as the virtual host and stompman always
  sets it to the server address. `_VhostConnection` rewrites that one header to the
  configured vhost, so no vhost named after a host name is needed.
- Temporary reply queues die with their connection: replies use named queues
  (`selfpay.reply.<instance>`), all addressed as `/queue/<name>` on both brokers.
- NACK dead-letters at once (ActiveMQ 5.17) or loops (RabbitMQ): nothing here NACKs.
- ActiveMQ needs `transport.tcpNoDelay=true` on its connector; asyncio sets
  TCP_NODELAY on the client socket itself.
- Messages are non-persistent unless `persistent:true`; expiry is `expires` (absolute
  ms) on ActiveMQ and `expiration` (relative ms) on RabbitMQ; prefetch is
  `activemq.prefetchSize` or `prefetch-count`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import unquote, urlsplit

import stompman
from stompman.connection import Connection, reraise_connection_lost
from stompman.errors import ConnectionLostError

from selfpay.adapters.bridge import stomp_frames
from selfpay.services.bridge_ports import MessageHandler, TransportError

log = logging.getLogger(__name__)

BrokerKind = Literal["activemq", "rabbitmq"]


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    login: str = ""
    passcode: str = ""


def parse_broker_urls(urls: str) -> list[BrokerUrl]:
    """`stomp://h:61613`, `stomp+ssl://h:61614` (or `ssl://`, `stomp+tls://`), comma- or
    space-separated for failover; credentials in the URL are allowed but settings are
    the better place for them."""
    out: list[BrokerUrl] = []
    for raw in urls.replace(",", " ").split():
        u = urlsplit(raw)
        if u.scheme not in {"stomp", "stomp+ssl", "stomp+tls", "ssl", "tcp"}:
            raise ValueError(f"broker URL must be stomp:// or stomp+ssl://: {raw!r}")
        if not u.hostname or not u.port:
            raise ValueError(f"broker URL needs a host and a port: {raw!r}")
        out.append(BrokerUrl(u.hostname, u.port, u.scheme in {"stomp+ssl", "stomp+tls", "ssl"},
                             unquote(u.username or ""), unquote(u.password or "")))
    if not out:
        raise ValueError("no broker URL given (SELFPAY_BROKER_URLS)")
    if len({b.tls for b in out}) > 1:
        raise ValueError("broker URLs must be all TLS or all plain")
    return out


def tls_context(*, ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    return ctx


class _VhostConnection(Connection):
    """stompman's connection, with the CONNECT frame's `host` header set to the vhost
    (and no login headers without a user), and frames read and written by
    `stomp_frames` (stompman parses byte by byte)."""

    vhost: str = ""

    async def write_frame(self, frame: stompman.AnyClientFrame) -> None:
        if isinstance(frame, stompman.ConnectFrame):
            headers = dict(frame.headers)
            if self.vhost:
                headers["host"] = self.vhost
            if not headers.get("login"):
                # no user: log in with the client certificate (RabbitMQ's
                # stomp.ssl_cert_login, ActiveMQ's certificate JAAS login)
                headers.pop("login", None)
                headers.pop("passcode", None)
            frame = stompman.ConnectFrame(headers=headers)  # type: ignore[arg-type]
        # stompman's reraise_connection_lost, spelt as try/except: its two
        # @contextmanager blocks cost more than writing the frame.
        try:
            self.writer.write(stomp_frames.dump_frame(frame))
        except RuntimeError as exc:
            raise ConnectionLostError(reason=exc) from exc
        try:
            await self.writer.drain()
        except OSError as exc:  # ConnectionError, and ssl.SSLError (a TLS alert)
            raise ConnectionLostError(reason=exc) from exc

    async def read_frames(self) -> AsyncGenerator[stompman.AnyServerFrame, None]:
        parser = stomp_frames.FrameParser()
        while True:
            # OSError, not only ConnectionError: a TLS alert (the broker refusing our
            # certificate, say) arrives as ssl.SSLError on a read
            with reraise_connection_lost(OSError):
                chunk = await self._read_non_empty_bytes(self.read_max_chunk_size)
            self.last_read_time = time.time()
            for frame in parser.parse_frames_from_chunk(chunk):
                yield frame  # type: ignore[misc]


def _connection_class(vhost: str) -> type[Connection]:
    return type("VhostConnection", (_VhostConnection,), {"vhost": vhost})


@dataclass(frozen=True, slots=True)
class _Delivery:
    frame: stompman.AckableMessageFrame

    @property
    def body(self) -> bytes:
        return self.frame.body

    @property
    def headers(self) -> Mapping[str, str]:
        return self.frame.headers  # type: ignore[return-value]

    @property
    def redelivered(self) -> bool:
        h: Mapping[str, Any] = self.frame.headers
        return str(h.get("redelivered", "false")).lower() == "true"

    async def ack(self) -> None:
        await self.frame.ack()


class _StompSubscription:
    def __init__(self, transport: StompTransport, sub: stompman.ManualAckSubscription) -> None:
        self._transport = transport
        self._sub = sub

    async def close(self) -> None:
        if self in self._transport._subscriptions:
            self._transport._subscriptions.discard(self)
            try:
                await asyncio.wait_for(self._sub.unsubscribe(), 5)
            except (stompman.Error, TimeoutError) as exc:
                log.warning("stomp: unsubscribe failed: %r", exc)


class StompTransport:
    """A Transport over STOMP 1.2. Enter it in the event loop that will use it."""

    def __init__(
        self,
        urls: str | Sequence[BrokerUrl],
        *,
        kind: BrokerKind = "activemq",
        login: str = "",
        passcode: str = "",
        vhost: str = "",
        ssl_context: ssl.SSLContext | None = None,
        heartbeat_ms: int = 5000,
        receipt_timeout_s: float = 5.0,
        connect_timeout_s: int = 3,
    ) -> None:
        brokers = parse_broker_urls(urls) if isinstance(urls, str) else list(urls)
        self.kind = kind
        self.receipt_timeout_s = receipt_timeout_s
        servers = [stompman.ConnectionParameters(
            host=b.host, port=b.port, login=b.login or login, passcode=b.passcode or passcode)
            for b in brokers]
        use_tls = brokers[0].tls
        self._client = stompman.Client(
            servers,
            heartbeat=stompman.Heartbeat(heartbeat_ms, heartbeat_ms),
            ssl=(ssl_context or tls_context()) if use_tls else None,
            connect_timeout=connect_timeout_s,
            connect_retry_attempts=3,
            connect_retry_interval=1,
            keep_alive_on_connection_failure=True,
            # the agent bounds its own concurrency with prefetch; replies must never wait
            max_concurrent_handlers=None,
            connection_class=_connection_class(vhost or ("/" if kind == "rabbitmq" else "")),
            on_error_frame=lambda f: log.error("stomp: broker ERROR: %s %r", f.headers, f.body),
        )
        self._subscriptions: set[_StompSubscription] = set()

    @staticmethod
    def destination(queue: str) -> str:
        return queue if queue.startswith("/") else f"/queue/{queue}"

    async def __aenter__(self) -> Self:
        try:
            await self._client.__aenter__()
        except (stompman.Error, OSError) as exc:  # OSError: e.g. ssl.SSLError in the handshake
            raise TransportError(f"cannot connect to the broker: {exc!r}") from exc
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # stompman waits for every open subscription on exit: close them first.
        for sub in list(self._subscriptions):
            await sub.close()
        await self._client.__aexit__(None, None, None)

    async def send(self, queue: str, body: bytes, *, headers: Mapping[str, str] | None = None,
                   persistent: bool = True, expires_at: float | None = None,
                   confirm: bool = True) -> None:
        h = dict(headers or {})
        if persistent:
            # Non-persistent is the default on both brokers; RabbitMQ even refuses
            # `persistent:false` on a SEND to an existing durable queue (RESOURCE_LOCKED).
            h["persistent"] = "true"
        if expires_at is not None:
            if self.kind == "activemq":
                h["expires"] = str(int(expires_at * 1000))
            else:
                h["expiration"] = str(max(1, int((expires_at - time.time()) * 1000)))
        try:
            await self._client.send(
                body, self.destination(queue), content_type="application/json", headers=h,
                receipt_timeout=self.receipt_timeout_s if confirm else None)
        except stompman.Error as exc:
            raise TransportError(f"broker did not take the message: {exc!r}") from exc

    async def subscribe(self, queue: str, handler: MessageHandler, *,
                        prefetch: int = 8) -> _StompSubscription:
        async def on_message(frame: stompman.AckableMessageFrame) -> None:
            await handler(_Delivery(frame))

        headers = ({"activemq.prefetchSize": str(prefetch)} if self.kind == "activemq"
                   else {"prefetch-count": str(prefetch)})
        try:
            sub = await self._client.subscribe_with_manual_ack(
                self.destination(queue), on_message, ack="client-individual", headers=headers,
                receipt_timeout=self.receipt_timeout_s)
        except stompman.Error as exc:
            raise TransportError(f"cannot subscribe to {queue}: {exc!r}") from exc
        s = _StompSubscription(self, sub)
        self._subscriptions.add(s)
        return s
