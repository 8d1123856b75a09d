"""Several web processes behind nginx, one of them killed mid-stream (docs/deployment.md,
"Several web processes behind nginx").

All real processes, on fresh PostgreSQL databases: two `selfpay serve --workers 1` with
SELFPAY_RUN_WORKER=false behind nginx (scripts/nginx.sh with docs/nginx/selfpay.conf), one
`selfpay worker`, and two `selfpay agent` on a ledger database of their own, RabbitMQ's STOMP
in between. The sandbox notifies through nginx too (SELFPAY_PUBLIC_BASE_URL is nginx's).

A client pays a stream of orders through nginx, a few at a time, and a third of the way in
one web process is SIGKILLed. A request that meets it is passed on by nginx, or fails (a
connection error, a 502) and is repeated by the client with the same Idempotency-Key, as a
phone would. Then every order is posted, once: one ledger payment per order, no bill paid
twice, no order made twice, the totals equal.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, func, select

from selfpay.adapters.db import tables as t
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.config import new_qr_key
from selfpay.domain.accounts import Account, Bill, Biller
from support import free_port
from support.bridge import ROOT, port_open, unavailable
from support.processes import (
    Proc,
    answers,
    clean_env,
    fresh_postgres_database,
    start_selfpay,
    stop_all,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

POSTGRES_URL = os.environ.get(
    "SELFPAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NGINX_SH = ROOT / "scripts" / "nginx.sh"
ACCOUNTS = [f"00{n:08d}" for n in range(1, 201)]  # ELEC, one open bill each
JOURNEYS = 66  # payments in the stream, one account each
CONCURRENT = 4
RETRYABLE = {502, 503, 504}  # what a phone repeats (nginx: no instance answered; app: later)
POSTED_WITHIN_S = 60


def _seed_ledger(url: str) -> Engine:
    upgrade(url)
    engine = make_engine(url)
    with SqlAlchemyUnitOfWork(engine) as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.accounts.upsert_many([Account("ELEC", a, "张三丰", "13812345678") for a in ACCOUNTS])
        uow.bills.add_many([Bill(None, "ELEC", a, "2026-10", 1000 + 37 * i,
                                 dt.date(2026, 11, 30)) for i, a in enumerate(ACCOUNTS)])
        uow.commit()
    return engine


@dataclass
class Phone:
    """The customer's side: every request through nginx, and one repeated (same body, same
    Idempotency-Key) when it fails with a connection error or a 502/503/504."""

    http: httpx.Client
    retries: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, method: str, path: str, *, within_s: float = 30.0,
             **kwargs: Any) -> httpx.Response:
        end = time.monotonic() + within_s
        while True:
            try:
                r = self.http.request(method, path, **kwargs)
                if r.status_code not in RETRYABLE:
                    assert r.status_code in (200, 201), f"{method} {path}: {r.status_code} {r.text}"
                    return r
                why = f"{method} {_route(path)} {r.status_code}"
            except httpx.TransportError as exc:
                why = f"{method} {_route(path)} {type(exc).__name__}"
            with self.lock:
                self.retries[why] += 1
            assert time.monotonic() < end, f"{method} {path}: still {why} after {within_s:g} s"
            time.sleep(0.2)

    def pay(self, account: str) -> dict[str, Any]:
        """Look the account up, order its bill, pay in the sandbox, see it paid."""
        due = self.call("GET", f"/api/v1/billers/ELEC/accounts/{account}").json()["total_due_fen"]
        key = uuid.uuid4().hex
        order = self.call("POST", "/api/v1/orders", headers={"Idempotency-Key": key},
                          json={"biller": "ELEC", "account": account, "channel": "sandbox"}).json()
        assert order["amount_fen"] == due > 0, order
        no = order["order_no"]
        self.call("POST", f"/sandbox/api/orders/{no}/pay", json={"outcome": "success"})
        # a notification that met the dead instance comes again 1, 2, 5, 15 s later
        end = time.monotonic() + 30
        while self.call("GET", f"/api/v1/orders/{no}").json()["status"] not in ("paid", "posted"):
            assert time.monotonic() < end, f"{no} not paid within 30 s"
            time.sleep(0.2)
        return order


def _route(path: str) -> str:
    return re.sub(r"/(orders|accounts)/[^/ ]+", r"/\1/…", path)


def _nginx(*args: str, env: dict[str, str]) -> None:
    r = subprocess.run([str(NGINX_SH), *args], env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, f"scripts/nginx.sh {' '.join(args)}: {r.stderr}"


ACCESS = re.compile(r'"(?P<req>[^"]*)" (?P<status>\d{3}) \d+ up=(?P<up>.*?) ups=')


def _access_log(path: Path, start: int = 0) -> list[tuple[str, int, list[str]]]:
    """(request line, status, upstreams tried in order) per line from byte `start`."""
    with path.open("rb") as fh:
        fh.seek(start)
        text = fh.read().decode()
    return [(m["req"], int(m["status"]), [u.strip() for u in m["up"].split(",")])
            for m in map(ACCESS.search, text.splitlines()) if m]


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Fresh DMZ and ledger databases on the PostgreSQL server."""
    with ExitStack() as stack:
        try:
            dmz = stack.enter_context(fresh_postgres_database(POSTGRES_URL, "lb_dmz"))
        except psycopg.OperationalError as exc:
            unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
        ledger = stack.enter_context(fresh_postgres_database(POSTGRES_URL, "lb_ledger"))
        yield dmz, ledger


def test_a_web_process_killed_behind_nginx_loses_and_doubles_no_payment(
        databases: tuple[str, str], tmp_path: Path) -> None:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        unavailable("nginx is not installed (scripts/install-system-deps.sh installs it)")
    if not port_open(61613):
        unavailable("RabbitMQ STOMP port 61613 closed (scripts/brokers.sh start rabbitmq)")
    dmz_url, ledger_url = databases
    upgrade(dmz_url)  # once, before several processes would each try
    ledger = _seed_ledger(ledger_url)

    nginx_port, web_ports = free_port(), [free_port(), free_port()]
    base = f"http://127.0.0.1:{nginx_port}"
    bridge = {
        "SELFPAY_ENV": "development", "SELFPAY_TRANSPORT": "stomp",
        "SELFPAY_BROKER_KIND": "rabbitmq", "SELFPAY_BROKER_URLS": "stomp://127.0.0.1:61613",
        "SELFPAY_BROKER_USER": "guest", "SELFPAY_BROKER_PASSWORD": "guest",
        "SELFPAY_BROKER_VHOST": "selfpay",
        "SELFPAY_BRIDGE_REQUEST_QUEUE": f"selfpay.test.{uuid.uuid4().hex[:10]}.requests",
        "SELFPAY_DB_POOL_SIZE": "4", "SELFPAY_DB_MAX_OVERFLOW": "4",
    }
    # the DMZ's processes share their secrets (the sandbox signs with the secret key)
    dmz = clean_env({
        **bridge, "SELFPAY_DATA_DIR": str(tmp_path / "dmz"), "SELFPAY_DATABASE_URL": dmz_url,
        "SELFPAY_SECRET_KEY": secrets.token_urlsafe(48), "SELFPAY_QR_KEYS": f"1:{new_qr_key()}",
        "SELFPAY_PUBLIC_BASE_URL": base, "SELFPAY_ENABLED_CHANNELS": "sandbox",
        "SELFPAY_RUN_WORKER": "false", "SELFPAY_TRUSTED_PROXIES": "127.0.0.1",
        "SELFPAY_WORKER_INTERVAL_S": "0.2", "SELFPAY_BRIDGE_TIMEOUT_S": "3",
        "SELFPAY_BRIDGE_POSTING_TIMEOUT_S": "5",
    })
    intranet = clean_env({
        **bridge, "SELFPAY_DATA_DIR": str(tmp_path / "intranet"),
        "SELFPAY_DATABASE_URL": ledger_url, "SELFPAY_BILLING": "ledger",
        "SELFPAY_SECRET_KEY": secrets.token_urlsafe(48), "SELFPAY_QR_KEYS": f"1:{new_qr_key()}",
        "SELFPAY_AGENT_PREFETCH": "4", "SELFPAY_AGENT_WORKERS": "2",
    })
    nginx_env = {**os.environ, "SELFPAY_NGINX_DIR": str(tmp_path / "nginx")}
    procs: list[Proc] = []
    try:
        procs += [start_selfpay(f"agent{i}", ["agent"], env=intranet, cwd=tmp_path)
                  for i in (1, 2)]
        procs.append(start_selfpay("worker", ["worker"], env=dmz, cwd=tmp_path))
        webs = [start_selfpay(f"serve{i}", ["serve", "--workers", "1", "--host", "127.0.0.1",
                                            "--port", str(p)], env=dmz, cwd=tmp_path)
                for i, p in enumerate(web_ports, 1)]
        procs += webs
        for p, port in zip(webs, web_ports, strict=True):
            wait_until(lambda port=port: answers(f"http://127.0.0.1:{port}/healthz"),
                       within_s=40, what=f"{p.name} to answer", procs=procs)
        for p in procs[:3]:
            mark = "agent: consuming" if p.name.startswith("agent") else "worker running"
            wait_until(lambda p=p, mark=mark: mark in p.log.read_text(errors="replace"),
                       within_s=30, what=f"{p.name}: {mark!r}", procs=procs)
        _nginx("start", str(nginx_port), *map(str, web_ports), env=nginx_env)
        access = tmp_path / "nginx" / "logs" / "selfpay.access.log"
        assert answers(f"{base}/healthz")

        with httpx.Client(base_url=base, timeout=15) as http:
            phone = Phone(http)
            third = threading.Event()
            done = Counter[str]()

            def journey(account: str) -> dict[str, Any]:
                try:
                    order = phone.pay(account)
                except BaseException:
                    third.set()  # let the main thread go on to the failure
                    raise
                with phone.lock:
                    done["paid"] += 1
                    if done["paid"] >= JOURNEYS // 3:
                        third.set()
                return order

            t0 = time.monotonic()
            with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
                futures = [pool.submit(journey, a) for a in ACCOUNTS[:JOURNEYS]]
                assert third.wait(60), "a third of the payments took over 60 s"
                victim, survivor = webs[0], f"127.0.0.1:{web_ports[1]}"
                at_kill = access.stat().st_size
                victim.kill()  # SIGKILL mid-stream: requests in hand on it are cut
                time.sleep(0.5)  # what the victim answered before it died is logged by now
                settled = access.stat().st_size
                orders = [f.result() for f in futures]
            stream_s = time.monotonic() - t0

            # every order posted within the bound, none left paid or pending
            waiting = {o["order_no"] for o in orders}
            dmz_db = make_engine(dmz_url)
            with dmz_db.connect() as conn:
                def all_posted() -> bool:
                    rows = conn.execute(select(t.orders.c.order_no, t.orders.c.status)).all()
                    conn.rollback()
                    return all(r.status == "posted" for r in rows if r.order_no in waiting)
                wait_until(all_posted, within_s=POSTED_WITHIN_S, what="every order posted",
                           procs=[p for p in procs if p is not victim])
                dmz_orders = conn.execute(select(t.orders.c.order_no, t.orders.c.account,
                                                 t.orders.c.amount_fen, t.orders.c.status)).all()
            dmz_db.dispose()
            for o in orders[:3] + orders[-3:]:  # the API says so too, through nginx
                assert phone.call("GET", f"/api/v1/orders/{o['order_no']}").json()[
                    "status"] == "posted"
    finally:
        try:
            _nginx("stop", env=nginx_env)
        finally:
            stop_all(procs)
            ledger.dispose()

    # one order per payment: no repeated request made a second one
    assert len(dmz_orders) == JOURNEYS
    assert sorted(r.account for r in dmz_orders) == ACCOUNTS[:JOURNEYS]
    assert {r.status for r in dmz_orders} == {"posted"}
    posted = sorted((r.order_no, r.account, r.amount_fen) for r in dmz_orders)
    assert posted == sorted((o["order_no"], o["account"], o["amount_fen"]) for o in orders)

    # exactly one ledger payment per posted order, of its amount; totals equal
    lp, b = t.ledger_payments.c, t.bills.c
    ledger = make_engine(ledger_url)
    with ledger.connect() as conn:
        payments = conn.execute(select(lp.payment_id, lp.account, lp.amount_fen)).all()
        per_order = Counter(r.payment_id for r in payments)
        total = conn.execute(select(func.coalesce(func.sum(lp.amount_fen), 0))).scalar()
        bills = {r.account: r for r in conn.execute(select(b.account, b.status, b.paid_fen,
                                                           b.amount_fen))}
    ledger.dispose()
    assert set(per_order.values()) == {1}
    assert sorted((r.payment_id, r.account, r.amount_fen) for r in payments) == posted
    assert total == sum(r.amount_fen for r in dmz_orders)
    # each paid bill paid once and in full; the others untouched
    for account, bill in bills.items():
        expected = ("paid", bill.amount_fen) if account in ACCOUNTS[:JOURNEYS] else ("open", 0)
        assert (bill.status, bill.paid_fen) == expected, account

    # nginx spread the stream over both instances, and once the kill had settled every
    # answer came from the survivor (a request that met the dead one first shows both)
    lines, after = _access_log(access), _access_log(access, at_kill)
    before = lines[: len(lines) - len(after)]
    answered_by = Counter(ups[-1] for _, status, ups in before if status < 400)
    assert len(answered_by) == 2, answered_by
    late = [(req, ups) for req, status, ups in _access_log(access, settled)
            if status < 400 and ups[-1] != survivor]
    assert not late, late
    passed_on = sum(1 for _, status, ups in after if len(ups) > 1 and status < 400)
    failed = Counter(f"{_route(req.rsplit(' ', 1)[0])} {status}" for req, status, _ in after
                     if status >= 500)
    print(f"\n{JOURNEYS} payments in {stream_s:.1f} s; answered before the kill "
          f"{dict(answered_by)}; after it {len(after)} requests, {passed_on} passed on by "
          f"nginx, failed {dict(failed)}; the client repeated {dict(phone.retries)}")
