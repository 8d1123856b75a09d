"""Bridge round trips per second and p50/p99 latency, beside a raw round trip.

    .venv/bin/python bench/bridge.py [--seconds 3] [--rounds 2]
                                     [--transports embedded,activemq,rabbitmq]

For each transport, in the same run and the same set-up (requester on the main event
loop, responder on an event loop thread of its own, 1 and 64 requests in flight):
- raw: the bare transport (stompman on a broker; the table queue for embedded), a
  200-byte request to the request queue, an echo to a named reply queue, responder with
  client-individual ack;
- bridge: Requester.call("account_summary") -> BridgeAgent -> an in-memory billing
  system -> reply, i.e. codec, correlation, deadline checks, the agent's worker thread.
Both use non-persistent requests without receipts (what a query does). Raw and bridge
rounds alternate (`--rounds`, averaged) because the machine is shared. The ratio
bridge/raw is the figure (target >= 0.7). Needs scripts/brokers.sh start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import stompman

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


class MemoryBilling:
    def account_summary(self, biller: str, account: str) -> AccountSummary:
        return SUMMARY

    def post_payment(self, posting: object) -> object:
        raise NotImplementedError


def amq_creds() -> tuple[str, str]:
    env = dict(line.split("=", 1) for line in
               (ROOT / ".brokers/activemq/credentials.env").read_text().splitlines() if line)
    return env["SELFPAY_BROKER_USER"], env["SELFPAY_BROKER_PASSWORD"]


async def drive(call: Callable[[], Awaitable[object]], concurrency: int,
                seconds: float) -> tuple[float, float, float]:
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


async def raw_stomp(kind: str, port: int, login: str, passcode: str, vhost: str,
                    concurrency: int, seconds: float) -> tuple[float, float, float]:
    tag = uuid.uuid4().hex[:8]
    rq, pq = f"/queue/selfpay.test.raw.{tag}", f"/queue/selfpay.reply.raw.{tag}"
    prefetch = ({"activemq.prefetchSize": "64"} if kind == "activemq"
                else {"prefetch-count": "64"})

    def client() -> stompman.Client:
        return stompman.Client([stompman.ConnectionParameters("127.0.0.1", port, login, passcode)],
                               connection_class=_connection_class(vhost),
                               max_concurrent_handlers=None)

    responder_loop = LoopThread("raw-responder")
    stop = asyncio.Event()
    ready: asyncio.Event = asyncio.Event()

    async def responder(loop_ready: Callable[[], None], stop_ev: asyncio.Event) -> None:
        async with client() as c:
            async def echo(m: stompman.AckableMessageFrame) -> None:
                await c.send(m.body, pq, headers={"correlation-id": m.headers["correlation-id"]})
                await m.ack()
            sub = await c.subscribe_with_manual_ack(rq, echo, headers=prefetch, receipt_timeout=5)
            loop_ready()
            await stop_ev.wait()
            await sub.unsubscribe()

    responder_stop: list[asyncio.Event] = []
    started = asyncio.get_running_loop().create_future()
    main_loop = asyncio.get_running_loop()

    async def boot() -> None:
        ev = asyncio.Event()
        responder_stop.append(ev)
        await responder(lambda: main_loop.call_soon_threadsafe(started.set_result, None), ev)

    done = responder_loop.submit(boot())
    await started
    pending: dict[str, asyncio.Future[None]] = {}
    body = b"x" * 200
    async with client() as c:
        async def on_reply(m: stompman.AckableMessageFrame) -> None:
            f = pending.pop(m.headers["correlation-id"], None)
            if f is not None and not f.done():
                f.set_result(None)
            await m.ack()
        sub = await c.subscribe_with_manual_ack(pq, on_reply, headers={"prefetch-count": "1000"}
                                                if kind == "rabbitmq" else
                                                {"activemq.prefetchSize": "1000"},
                                                receipt_timeout=5)

        async def call() -> None:
            cid = uuid.uuid4().hex
            f = asyncio.get_running_loop().create_future()
            pending[cid] = f
            await c.send(body, rq, headers={"correlation-id": cid})
            await f

        result = await drive(call, concurrency, seconds)
        await sub.unsubscribe()
    responder_loop.loop.call_soon_threadsafe(responder_stop[0].set)
    await asyncio.wrap_future(done)
    responder_loop.close()
    del stop, ready
    return result


async def raw_embedded(engine: object, concurrency: int, seconds: float
                       ) -> tuple[float, float, float]:
    tag = uuid.uuid4().hex[:8]
    rq, pq = f"raw.{tag}.req", f"raw.{tag}.rep"
    responder_loop = LoopThread("raw-responder")
    stop_box: list[asyncio.Event] = []
    main_loop = asyncio.get_running_loop()
    started = main_loop.create_future()

    async def responder() -> None:
        ev = asyncio.Event()
        stop_box.append(ev)
        async with EmbeddedTransport(engine) as t:  # type: ignore[arg-type]
            async def echo(d: Delivery) -> None:
                await t.send(pq, d.body, headers=dict(d.headers), confirm=False)
                await d.ack()
            sub = await t.subscribe(rq, echo, prefetch=64)
            main_loop.call_soon_threadsafe(started.set_result, None)
            await ev.wait()
            await sub.close()

    done = responder_loop.submit(responder())
    await started
    pending: dict[str, asyncio.Future[None]] = {}
    async with EmbeddedTransport(engine) as t:  # type: ignore[arg-type]
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

        result = await drive(call, concurrency, seconds)
        await sub.close()
    responder_loop.loop.call_soon_threadsafe(stop_box[0].set)
    await asyncio.wrap_future(done)
    responder_loop.close()
    return result


async def bridged(factory: Callable[[], Transport], concurrency: int,
                  seconds: float) -> tuple[float, float, float]:
    queue = f"selfpay.test.bench.{uuid.uuid4().hex[:8]}"
    agent_loop = LoopThread("bench-agent")
    main_loop = asyncio.get_running_loop()
    started = main_loop.create_future()
    stop_box: list[asyncio.Event] = []

    async def run_agent() -> None:
        ev = asyncio.Event()
        stop_box.append(ev)
        async with factory() as t:
            agent = BridgeAgent(t, MemoryBilling(), request_queue=queue, prefetch=64, workers=4)
            main_loop.call_soon_threadsafe(started.set_result, None)
            await agent.run(ev)

    done = agent_loop.submit(run_agent())
    await started
    req = Requester(factory, instance_id=f"bench.{uuid.uuid4().hex[:8]}", request_queue=queue)
    req.start()
    assert await req.wait_ready(10)

    async def call() -> None:
        await req.call("account_summary", {"biller": "ELEC", "account": "0012345678"},
                       timeout_s=10)

    try:
        result = await drive(call, concurrency, seconds)
    finally:
        await req.stop()
        agent_loop.loop.call_soon_threadsafe(stop_box[0].set)
        await asyncio.wrap_future(done)
        agent_loop.close()
    return result


def _mean(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    n = len(runs)
    return (sum(r[0] for r in runs) / n, sum(r[1] for r in runs) / n,
            sum(r[2] for r in runs) / n)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--transports", default="embedded,activemq,rabbitmq")
    ap.add_argument("--rounds", type=int, default=2, help="alternating raw/bridge rounds")
    args = ap.parse_args()
    rows = []
    for name in args.transports.split(","):
        tmp = tempfile.mkdtemp(prefix="selfpay-bench-")
        engine = None
        if name == "embedded":
            url = f"sqlite:///{tmp}/dmz.db"
            upgrade(url)
            engine = make_engine(url)

            def factory(engine: object = engine) -> Transport:
                return EmbeddedTransport(engine)  # type: ignore[arg-type]
        elif name == "activemq":
            user, pw = amq_creds()

            def factory(user: str = user, pw: str = pw) -> Transport:
                return StompTransport("stomp://127.0.0.1:61614", kind="activemq", login=user,
                                      passcode=pw)
        else:
            def factory() -> Transport:
                return StompTransport("stomp://127.0.0.1:61613", kind="rabbitmq",
                                      login="guest", passcode="guest", vhost="selfpay")
        for c in (1, 64):
            raws, brs = [], []
            for _ in range(args.rounds):  # alternate, so that drift hits both alike
                if name == "embedded":
                    raws.append(await raw_embedded(engine, c, args.seconds))
                elif name == "activemq":
                    raws.append(await raw_stomp("activemq", 61614, user, pw, "", c,
                                                args.seconds))
                else:
                    raws.append(await raw_stomp("rabbitmq", 61613, "guest", "guest",
                                                "selfpay", c, args.seconds))
                brs.append(await bridged(factory, c, args.seconds))
            raw, br = _mean(raws), _mean(brs)
            rows.append((name, c, raw, br))
            print(f"{name:9} c={c:<3} raw {raw[0]:7.0f}/s p50 {raw[1]:6.2f} p99 {raw[2]:7.2f} ms"
                  f" | bridge {br[0]:7.0f}/s p50 {br[1]:6.2f} p99 {br[2]:7.2f} ms"
                  f" | ratio {br[0] / raw[0]:.2f}", flush=True)
        if engine is not None:
            engine.dispose()  # type: ignore[attr-defined]
    worst = min(br[0] / raw[0] for _, _, raw, br in rows)
    print(f"lowest bridge/raw ratio: {worst:.2f} (target >= 0.70)")


if __name__ == "__main__":
    # Any non-empty PYTHONASYNCIODEBUG (even "0") turns asyncio's debug mode on, which
    # slows every loop iteration; an earlier version of this file set it to "0".
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    sys.exit(asyncio.run(main()))
