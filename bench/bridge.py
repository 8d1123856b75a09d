"""Bridge round trips per second and p50/p99 latency, beside a raw round trip.

    .venv/bin/python bench/bridge.py [--seconds 3] [--rounds 2]
                                     [--transports embedded,activemq,rabbitmq]

Needs scripts/brokers.sh start. For each transport, 1 and 64 requests in flight, in
the same run, rounds alternating between the variants because the machine is shared:

- raw (bare client): stompman as shipped (its own frame parser and writer; for
  RabbitMQ only the CONNECT host header is set to the vhost), a 200-byte request to a
  request queue, echoed by a responder to a named reply queue, client-individual ack
  on both sides. This is the issue's baseline: "a raw round trip through the same
  broker with the bare client".
- raw (our frame layer): the same round trip through the connection class the bridge
  uses (adapters/bridge/stomp_frames.py). It is about twice as fast as the bare client,
  so bridge/raw against it is the stricter figure: the bridge's own overhead.
- bridge, async adapter: Requester.call("account_summary") -> broker -> BridgeAgent ->
  an in-memory AsyncBillingSystem -> reply: codec, correlation, deadlines, expiry
  headers, the agent's bookkeeping. The path of the HTTP/JSON adapter's async twin.
- bridge, blocking adapter: the same with a blocking in-memory adapter, called on the
  agent's worker threads (the path of the built-in ledger and of blocking plug-ins).

On a broker, the responder (echo or agent) runs in a process of its own, as an agent
does in production (it sits in another zone); the requester runs here. The embedded
transport is one process by design (`selfpay demo`), so there it runs on a thread.
Queries are non-persistent and unconfirmed on every side.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

import stompman
from stompman.connection import Connection

from selfpay.adapters.bridge.agent import BridgeAgent
from selfpay.adapters.bridge.client import LoopThread, Requester
from selfpay.adapters.bridge.embedded import EmbeddedTransport
from selfpay.adapters.bridge.stomp import StompTransport, _connection_class
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.domain.accounts import AccountSummary, Bill
from selfpay.services.bridge_ports import Delivery, Transport

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = AccountSummary("ELEC", "0012345678", "张*丰", 0, (
    Bill(1, "ELEC", "0012345678", "2026-10", 5050, None),))
Result = tuple[float, float, float]  # round trips/s, p50 ms, p99 ms
VARIANTS = ("raw-bare", "raw-fast", "bridge-async", "bridge-threads")


class MemoryBilling:
    """Blocking adapter: called on the agent's worker threads."""

    def account_summary(self, biller: str, account: str) -> AccountSummary:
        return SUMMARY

    def post_payment(self, posting: object) -> object:
        raise NotImplementedError


class AsyncMemoryBilling:
    """AsyncBillingSystem: awaited on the agent's loop."""

    async def account_summary(self, biller: str, account: str) -> AccountSummary:
        return SUMMARY

    async def post_payment(self, posting: object) -> object:
        raise NotImplementedError


class _BareVhostConnection(Connection):
    """stompman's own connection; only the CONNECT host header carries the vhost
    (RabbitMQ reads it as the vhost; stompman sets it to the server address)."""

    vhost: str = ""

    async def write_frame(self, frame: stompman.AnyClientFrame) -> None:
        if self.vhost and isinstance(frame, stompman.ConnectFrame):
            frame = stompman.ConnectFrame(headers={**frame.headers, "host": self.vhost})
        await super().write_frame(frame)


def amq_creds() -> tuple[str, str]:
    env = dict(line.split("=", 1) for line in
               (ROOT / ".brokers/activemq/credentials.env").read_text().splitlines() if line)
    return env["SELFPAY_BROKER_USER"], env["SELFPAY_BROKER_PASSWORD"]


def broker_spec(name: str) -> dict[str, Any]:
    if name == "activemq":
        user, pw = amq_creds()
        return {"kind": "activemq", "port": 61614, "login": user, "passcode": pw, "vhost": ""}
    return {"kind": "rabbitmq", "port": 61613, "login": "guest", "passcode": "guest",
            "vhost": "selfpay"}


def stomp_transport(spec: dict[str, Any]) -> Transport:
    return StompTransport(f"stomp://127.0.0.1:{spec['port']}", kind=spec["kind"],
                          login=spec["login"], passcode=spec["passcode"], vhost=spec["vhost"])


def stomp_client(spec: dict[str, Any], *, bare: bool) -> stompman.Client:
    if bare:
        cls: type[Connection] = (type("BareVhost", (_BareVhostConnection,),
                                      {"vhost": spec["vhost"]}) if spec["vhost"] else Connection)
    else:
        cls = _connection_class(spec["vhost"])
    return stompman.Client(
        [stompman.ConnectionParameters("127.0.0.1", spec["port"], spec["login"],
                                       spec["passcode"])],
        connection_class=cls, max_concurrent_handlers=None)


def prefetch_header(kind: str, n: int) -> dict[str, str]:
    return ({"activemq.prefetchSize": str(n)} if kind == "activemq"
            else {"prefetch-count": str(n)})


# --- the responder side (a process of its own on a broker) ------------------------------

async def _respond(spec: dict[str, Any], variant: str, rq: str, pq: str,
                   ready: Callable[[], None], stop: asyncio.Event) -> None:
    if variant.startswith("bridge"):
        billing: Any = AsyncMemoryBilling() if variant == "bridge-async" else MemoryBilling()
        async with stomp_transport(spec) as t:
            agent = BridgeAgent(t, billing, request_queue=rq, prefetch=64, workers=4)
            await agent.run(stop, on_consuming=ready)
        return
    c = stomp_client(spec, bare=variant == "raw-bare")
    async with c:
        async def echo(m: stompman.AckableMessageFrame) -> None:
            await c.send(m.body, pq, headers={"correlation-id": m.headers["correlation-id"]})
            await m.ack()

        sub = await c.subscribe_with_manual_ack(rq, echo, headers=prefetch_header(
            spec["kind"], 64), receipt_timeout=5)
        ready()
        await stop.wait()
        await sub.unsubscribe()


def responder_process(spec: dict[str, Any], variant: str, rq: str, pq: str,
                      ready: MpEvent, stop: MpEvent) -> None:
    async def main() -> None:
        stop_ev = asyncio.Event()
        loop = asyncio.get_running_loop()
        watcher = loop.run_in_executor(None, stop.wait)
        watcher.add_done_callback(lambda _: stop_ev.set())
        await _respond(spec, variant, rq, pq, ready.set, stop_ev)

    asyncio.run(main())


# --- the requester side -------------------------------------------------------------------

async def drive(call: Callable[[], Awaitable[object]], concurrency: int,
                seconds: float) -> Result:
    lat: list[float] = []
    end = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await call()
            lat.append(time.perf_counter() - t0)

    for _ in range(min(20, concurrency * 2)):  # warm-up
        await call()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return len(lat) / elapsed, statistics.median(lat) * 1000, p99 * 1000


async def on_broker(spec: dict[str, Any], variant: str, concurrency: int,
                    seconds: float) -> Result:
    tag = uuid.uuid4().hex[:8]
    bridge = variant.startswith("bridge")
    rq = f"selfpay.test.bench.{tag}" if bridge else f"/queue/selfpay.test.raw.{tag}"
    pq = f"/queue/selfpay.reply.raw.{tag}"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=responder_process, args=(spec, variant, rq, pq, ready, stop))
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        if not await loop.run_in_executor(None, ready.wait, 30):
            raise SystemExit(f"{variant}: the responder did not subscribe within 30 s "
                             "(is the broker up? run scripts/brokers.sh start)")
        if bridge:
            return await _bridge_requester(lambda: stomp_transport(spec), rq, concurrency,
                                           seconds)
        return await _raw_requester(spec, variant == "raw-bare", rq, pq, concurrency, seconds)
    finally:
        stop.set()
        await loop.run_in_executor(None, proc.join, 30)


async def _bridge_requester(factory: Callable[[], Transport], rq: str, concurrency: int,
                            seconds: float) -> Result:
    req = Requester(factory, instance_id=f"bench.{uuid.uuid4().hex[:8]}", request_queue=rq)
    req.start()
    if not await req.wait_ready(15):
        raise SystemExit("bridge: the requester could not connect within 15 s")

    async def call() -> None:
        await req.call("account_summary", {"biller": "ELEC", "account": "0012345678"},
                       timeout_s=10)

    try:
        return await drive(call, concurrency, seconds)
    finally:
        await req.stop()


async def _raw_requester(spec: dict[str, Any], bare: bool, rq: str, pq: str,
                         concurrency: int, seconds: float) -> Result:
    pending: dict[str, asyncio.Future[None]] = {}
    body = b"x" * 200
    c = stomp_client(spec, bare=bare)
    async with c:
        async def on_reply(m: stompman.AckableMessageFrame) -> None:
            f = pending.pop(m.headers["correlation-id"], None)
            if f is not None and not f.done():
                f.set_result(None)
            await m.ack()

        sub = await c.subscribe_with_manual_ack(pq, on_reply, headers=prefetch_header(
            spec["kind"], 1000), receipt_timeout=5)

        async def call() -> None:
            cid = uuid.uuid4().hex
            f = asyncio.get_running_loop().create_future()
            pending[cid] = f
            await c.send(body, rq, headers={"correlation-id": cid})
            await f

        try:
            return await drive(call, concurrency, seconds)
        finally:
            await sub.unsubscribe()


async def embedded(engine: Any, variant: str, concurrency: int, seconds: float) -> Result:
    """The table queue, both sides in this process (responder on a loop thread)."""
    tag = uuid.uuid4().hex[:8]
    rq, pq = f"bench.{tag}.req", f"bench.{tag}.rep"
    responder = LoopThread("bench-responder")
    main_loop = asyncio.get_running_loop()
    started = main_loop.create_future()
    stop_box: list[asyncio.Event] = []

    async def respond() -> None:
        ev = asyncio.Event()
        stop_box.append(ev)
        ready = lambda: main_loop.call_soon_threadsafe(started.set_result, None)  # noqa: E731
        async with EmbeddedTransport(engine) as t:
            if variant.startswith("bridge"):
                billing: Any = (AsyncMemoryBilling() if variant == "bridge-async"
                                else MemoryBilling())
                await BridgeAgent(t, billing, request_queue=rq, prefetch=64,
                                  workers=4).run(ev, on_consuming=ready)
                return

            async def echo(d: Delivery) -> None:
                await t.send(pq, d.body, headers=dict(d.headers), confirm=False)
                await d.ack()

            sub = await t.subscribe(rq, echo, prefetch=64)
            ready()
            await ev.wait()
            await sub.close()

    done = responder.submit(respond())
    await started
    try:
        if variant.startswith("bridge"):
            return await _bridge_requester(lambda: EmbeddedTransport(engine), rq, concurrency,
                                           seconds)
        pending: dict[str, asyncio.Future[None]] = {}
        async with EmbeddedTransport(engine) as t:
            async def on_reply(d: Delivery) -> None:
                f = pending.pop(d.headers["correlation-id"], None)
                if f is not None and not f.done():
                    f.set_result(None)
                await d.ack()

            sub = await t.subscribe(pq, on_reply, prefetch=1000)

            async def call() -> None:
                cid = uuid.uuid4().hex
                f = asyncio.get_running_loop().create_future()
                pending[cid] = f
                await t.send(rq, b"x" * 200, headers={"correlation-id": cid}, confirm=False)
                await f

            try:
                return await drive(call, concurrency, seconds)
            finally:
                await sub.close()
    finally:
        responder.loop.call_soon_threadsafe(stop_box[0].set)
        await asyncio.wrap_future(done)
        responder.close()


def _mean(runs: list[Result]) -> Result:
    n = len(runs)
    return (sum(r[0] for r in runs) / n, sum(r[1] for r in runs) / n,
            sum(r[2] for r in runs) / n)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--transports", default="embedded,activemq,rabbitmq")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all variants")
    ap.add_argument("--concurrency", default="1,64", help="requests in flight")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    worst: dict[str, float] = {}
    for name in args.transports.split(","):
        engine = None
        if name == "embedded":
            url = f"sqlite:///{tempfile.mkdtemp(prefix='selfpay-bench-')}/dmz.db"
            upgrade(url)
            engine = make_engine(url)
            # one raw variant: there is no client library to compare with
            variants = tuple(v for v in args.variants.split(",") if v != "raw-bare")
        else:
            spec = broker_spec(name)
            variants = tuple(args.variants.split(","))
        for c in (int(x) for x in args.concurrency.split(",")):
            runs: dict[str, list[Result]] = {v: [] for v in variants}
            for _ in range(args.rounds):  # alternate, so that drift hits all alike
                for v in variants:
                    runs[v].append(await embedded(engine, v, c, args.seconds) if engine
                                   else await on_broker(spec, v, c, args.seconds))
            res = {v: _mean(r) for v, r in runs.items()}
            fast = res.get("raw-fast", (float("nan"),) * 3)
            bare = res.get("raw-bare", fast)
            for v in variants:
                rt, p50, p99 = res[v]
                line = f"{name:9} c={c:<3} {v:15} {rt:7.0f}/s p50 {p50:6.2f} p99 {p99:7.2f} ms"
                if v.startswith("bridge"):
                    line += (f" | /raw-bare {rt / bare[0]:.2f}  /raw-fast {rt / fast[0]:.2f}")
                    for base, b in (("bare", bare), ("fast", fast)):
                        key = f"{v} / raw-{base}"
                        worst[key] = min(worst.get(key, 99.0), rt / b[0])
                print(line, flush=True)
        if engine is not None:
            engine.dispose()
    print("lowest ratios over transports and concurrencies (target >= 0.70 of raw-bare):")
    for key, ratio in worst.items():
        print(f"  {key:32} {ratio:.2f}")


if __name__ == "__main__":
    # Any non-empty PYTHONASYNCIODEBUG (even "0") turns asyncio's debug mode on, which
    # slows every loop iteration; an earlier version of this file set it to "0".
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    sys.exit(asyncio.run(main()))
