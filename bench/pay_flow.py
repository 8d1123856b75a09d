"""End-to-end payments per second through the real app, beside its bare /healthz.

    python bench/pay_flow.py [--db sqlite|postgres] [--clients 16] [--seconds 20]
                             [--accounts 3000] [--healthz-seconds 4]

Starts `selfpay` under uvicorn (one process, access log off, its worker thread and the
sandbox channel's delivery thread running) on a free 127.0.0.1 port, on a fresh SQLite
file in a temporary folder, or with --db postgres on a fresh database of the server at
SELFPAY_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
Seeds --accounts accounts with one open bill each. Then, in one run:

1. /healthz: --clients concurrent clients for --healthz-seconds: req/s, p50/p99.
2. the pay flow: --clients concurrent clients, each looping over its own accounts:
   GET /api/v1/billers/ELEC/accounts/{n} (the account page's data), POST /api/v1/orders,
   POST /sandbox/api/orders/{no}/pay {"outcome": "success"} (the sandbox then notifies
   the app over HTTP, signed, like a real channel), then GET /api/v1/orders/{no} every
   100 ms until `posted` (the worker posted it to the ledger). Payments/s end to end,
   p50/p99 of the account GET and of order creation, beside /healthz's.
3. checks: every posted order is one ledger payment, and no bill is paid twice.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BILLER = "ELEC"
POLL_S = 0.1  # how often a client asks whether its order is posted
POSTGRES_URL = os.environ.get(
    "SELFPAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:7.1f} ms  p99 {pct(values, 99) * 1000:7.1f} ms"


# --- the database -------------------------------------------------------------------


def create_postgres_database() -> tuple[str, str]:
    import psycopg
    from sqlalchemy import make_url

    from selfpay.adapters.db.engine import normalize_url

    admin = make_url(normalize_url(POSTGRES_URL))
    name = f"selfpay_bench_{uuid.uuid4().hex[:10]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False), name


def drop_postgres_database(name: str) -> None:
    import psycopg
    from sqlalchemy import make_url

    from selfpay.adapters.db.engine import normalize_url

    dsn = make_url(normalize_url(POSTGRES_URL)).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, accounts: int) -> list[str]:
    from selfpay.adapters.db.engine import make_engine
    from selfpay.adapters.db.migrate import upgrade
    from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
    from selfpay.domain.accounts import Account, Bill, Biller

    upgrade(url)
    engine = make_engine(url)
    numbers = [f"{n:010d}" for n in range(1, accounts + 1)]
    try:
        with SqlAlchemyUnitOfWork(engine) as uow:
            uow.billers.add(Biller(BILLER, "电费", "Electricity"))
            uow.accounts.upsert_many([Account(BILLER, n, "张三丰", "13812345678")
                                      for n in numbers])
            uow.bills.add_many([Bill(None, BILLER, n, "2026-10", 5000 + i % 5000,
                                     dt.date(2026, 11, 30)) for i, n in enumerate(numbers)])
            uow.commit()
    finally:
        engine.dispose()
    return numbers


def ledger_check(url: str) -> tuple[int, int, int]:
    """(ledger payments, posted orders, bills paid more than once)."""
    from sqlalchemy import func, select

    from selfpay.adapters.db import tables as t
    from selfpay.adapters.db.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            payments = conn.execute(select(func.count()).select_from(t.ledger_payments)
                                    ).scalar_one()
            posted = conn.execute(select(func.count()).select_from(t.orders).where(
                t.orders.c.status == "posted")).scalar_one()
            over = conn.execute(select(func.count()).select_from(t.bills).where(
                t.bills.c.paid_fen > t.bills.c.amount_fen)).scalar_one()
    finally:
        engine.dispose()
    return int(payments), int(posted), int(over)


# --- the server ---------------------------------------------------------------------


def serve(port: int) -> None:
    """Runs in the child process: the app as `selfpay serve` builds it, access log off."""
    import uvicorn

    from selfpay.entrypoints.web.app import create_app

    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def start_server(port: int, data_dir: Path, url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "SELFPAY_ENV": "development", "SELFPAY_DATA_DIR": str(data_dir),
        "SELFPAY_DATABASE_URL": url, "SELFPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SELFPAY_ENABLED_CHANNELS": "sandbox", "SELFPAY_RUN_WORKER": "true",
    })
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit("the server did not start")
    proc.terminate()
    raise SystemExit("the server did not answer /healthz within 30 s")


# --- load -------------------------------------------------------------------------


@dataclass
class Stats:
    healthz: list[float] = field(default_factory=list)
    account: list[float] = field(default_factory=list)
    create: list[float] = field(default_factory=list)
    end_to_end: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def hammer_healthz(client: httpx.AsyncClient, until: float, out: list[float]) -> None:
    while time.monotonic() < until:
        t0 = time.perf_counter()
        r = await client.get("/healthz")
        out.append(time.perf_counter() - t0)
        r.raise_for_status()


async def pay_loop(client: httpx.AsyncClient, accounts: list[str], until: float,
                   stats: Stats) -> None:
    for number in accounts:
        if time.monotonic() >= until:
            return
        start = time.perf_counter()
        r = await client.get(f"/api/v1/billers/{BILLER}/accounts/{number}")
        stats.account.append(time.perf_counter() - start)
        if r.status_code != 200:
            stats.errors.append(f"account {r.status_code}")
            continue
        t0 = time.perf_counter()
        r = await client.post("/api/v1/orders", json={
            "biller": BILLER, "account": number, "channel": "sandbox"},
            headers={"Idempotency-Key": uuid.uuid4().hex})
        stats.create.append(time.perf_counter() - t0)
        if r.status_code != 201:
            stats.errors.append(f"order {r.status_code} {r.text[:80]}")
            continue
        order_no = r.json()["order_no"]
        r = await client.post(f"/sandbox/api/orders/{order_no}/pay", json={"outcome": "success"})
        if r.status_code != 200:
            stats.errors.append(f"pay {r.status_code} {r.text[:80]}")
            continue
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = await client.get(f"/api/v1/orders/{order_no}")
            if r.json()["status"] == "posted":
                stats.end_to_end.append(time.perf_counter() - start)
                break
            await asyncio.sleep(POLL_S)
        else:
            stats.errors.append(f"{order_no} not posted within 30 s")


async def run_load(base: str, accounts: list[str], clients: int, seconds: float,
                   healthz_seconds: float) -> tuple[Stats, float, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        t0 = time.monotonic()
        until = t0 + healthz_seconds
        await asyncio.gather(*(hammer_healthz(client, until, stats.healthz)
                               for _ in range(clients)))
        healthz_wall = time.monotonic() - t0
        t0 = time.monotonic()
        until = t0 + seconds
        shares = [accounts[i::clients] for i in range(clients)]
        await asyncio.gather(*(pay_loop(client, share, until, stats) for share in shares))
        pay_wall = time.monotonic() - t0
    return stats, healthz_wall, pay_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--healthz-seconds", type=float, default=4.0)
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    tmp = Path(tempfile.mkdtemp(prefix="selfpay-bench-"))
    pg_name = ""
    proc = None
    try:
        if args.db == "postgres":
            url, pg_name = create_postgres_database()
        else:
            url = f"sqlite:///{tmp / 'selfpay.db'}"
        accounts = seed(url, args.accounts)
        port = free_port()
        proc = start_server(port, tmp, url)
        stats, hz_wall, pay_wall = asyncio.run(run_load(
            f"http://127.0.0.1:{port}", accounts, args.clients, args.seconds,
            args.healthz_seconds))
        # let the last notifications and postings land before the checks
        time.sleep(2)
        payments, posted, over = ledger_check(url)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg_name:
            drop_postgres_database(pg_name)
        shutil.rmtree(tmp, ignore_errors=True)

    done = len(stats.end_to_end)
    hz_rps = len(stats.healthz) / hz_wall
    print(f"selfpay pay flow: {args.db}, {args.clients} concurrent clients, "
          f"{pay_wall:.1f} s (+ {hz_wall:.1f} s of /healthz), one uvicorn process, "
          f"{os.cpu_count()} cores shared with this client")
    print(f"  /healthz            {hz_rps:8.0f} req/s   {ms(stats.healthz)}")
    print(f"  account GET (API)   {len(stats.account):8d} reqs    {ms(stats.account)}   "
          f"p50 = {pct(stats.account, 50) / pct(stats.healthz, 50):.1f}x /healthz")
    print(f"  POST /orders        {len(stats.create):8d} reqs    {ms(stats.create)}   "
          f"p50 = {pct(stats.create, 50) / pct(stats.healthz, 50):.1f}x /healthz")
    print(f"  end to end          {done / pay_wall:8.1f} payments/s  {ms(stats.end_to_end)}"
          "  (account GET -> order -> sandbox pay -> notification -> posted)")
    print(f"  errors: {len(stats.errors)}" + (f" e.g. {stats.errors[:3]}" if stats.errors else ""))
    print(f"  ledger payments {payments}, posted orders {posted}, over-paid bills {over}"
          f" -> {'OK' if payments == posted >= done and over == 0 else 'MISMATCH'}")
    if statistics.mean(stats.end_to_end or [0]) and stats.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
