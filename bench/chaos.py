"""Faults under load: sandbox payments while processes die, then a checker.

    python bench/chaos.py [--seconds 120] [--clients 8] [--broker activemq|rabbitmq]
                          [--kill-every 4] [--short] [--seed N]

Starts, as real processes on fresh PostgreSQL databases (the DMZ's and the intranet
ledger's, at SELFPAY_TEST_POSTGRES_URL): two `selfpay serve` (SELFPAY_RUN_WORKER=false),
two `selfpay worker`, one `selfpay agent`, and uses a STOMP broker (ActiveMQ of
scripts/brokers.sh by default). Receipts go by e-mail to an SMTP sink in this process,
which counts every message it is handed. Then, for --seconds:

- --clients customers pay through either web process (retrying with the same
  Idempotency-Key on a connection error or a 5xx, as a phone would), and the sandbox
  cashier is told to send duplicate (3x), late (8 s) and out-of-order (a failure that
  arrives after the success) notifications; some customers never pay (closed at TTL);
- every --kill-every seconds on average a random one of serve, worker, agent and broker
  is killed with SIGKILL and restarted 1-3 s later (the broker: killed and started again;
  RabbitMQ is the machine's service, so its connections are dropped instead).

Then everything is left to settle (past the order TTL) and the checker proves:

1. every order the channel reports paid is posted, exactly once: one ledger payment per
   order, of the order's amount; nothing is posted that the channel did not take;
2. no order is left pending past its TTL (none created, pending or paid-not-posted);
3. ledger totals equal the sum of payments (bills paid + prepaid balances = payments =
   posted orders, to the fen);
4. no message was sent twice: the SMTP sink saw each Message-ID once, and every message
   marked sent.

Exit status 0 only if all four hold. `--short` is the CI variant (25 s of load, fewer
clients). Uses only loopback addresses.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "SELFPAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SELFPAY = [sys.executable, "-m", "selfpay.entrypoints.cli"]
ORDER_TTL_S = 60  # the smallest the settings allow: the settle phase waits past it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def log(text_: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text_}", flush=True)


# --- databases ------------------------------------------------------------------------

def create_database(name: str) -> str:
    import psycopg
    from sqlalchemy import make_url

    from selfpay.adapters.db.engine import normalize_url

    admin = make_url(normalize_url(POSTGRES_URL))
    with psycopg.connect(admin.set(drivername="postgresql").render_as_string(
            hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    import psycopg
    from sqlalchemy import make_url

    u = make_url(url)
    with psycopg.connect(u.set(drivername="postgresql", database="postgres").render_as_string(
            hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')


def seed(dmz_url: str, intranet_url: str, accounts: int) -> list[str]:
    from selfpay.adapters.db.migrate import upgrade

    upgrade(dmz_url)
    upgrade(intranet_url)
    numbers = [f"7{n:09d}" for n in range(accounts)]
    for url, with_accounts in ((dmz_url, False), (intranet_url, True)):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO billers (code, name, name_en) VALUES "
                              "('ELEC', '电费', 'Electricity')"))
            if with_accounts:
                conn.execute(text(
                    "INSERT INTO accounts (biller, number, name, phone, address, balance_fen,"
                    " created_at, updated_at) SELECT 'ELEC', '7' || lpad(g::text, 9, '0'),"
                    " '张三', '', '', 0, now(), now() FROM generate_series(0, :n - 1) g"),
                    {"n": accounts})
                conn.execute(text(
                    "INSERT INTO bills (biller, account, period, amount_fen, paid_fen, status,"
                    " created_at) SELECT 'ELEC', '7' || lpad(g::text, 9, '0'), '2026-10',"
                    " 100 + (g * 7919) % 99900, 0, 'open', now()"
                    " FROM generate_series(0, :n - 1) g"), {"n": accounts})
        engine.dispose()
    return numbers


# --- an SMTP sink that counts what it is handed ----------------------------------------

@dataclass
class Sink:
    received: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        from email import message_from_bytes

        mail = message_from_bytes(envelope.content)
        with self.lock:
            self.received[str(mail["Message-ID"])] += 1
        return "250 OK"


# --- processes --------------------------------------------------------------------------

@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    logfile: Path
    popen: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> None:
        fh = self.logfile.open("ab")
        self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=fh, stderr=fh,
                                      start_new_session=True, cwd=ROOT)
        fh.close()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
            self.kills += 1

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Broker:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.kills = 0
        self.script = ROOT / "scripts" / "brokers.sh"

    def settings(self) -> dict[str, str]:
        if self.kind == "rabbitmq":
            return {"SELFPAY_BROKER_KIND": "rabbitmq",
                    "SELFPAY_BROKER_URLS": "stomp://127.0.0.1:61613",
                    "SELFPAY_BROKER_USER": "guest", "SELFPAY_BROKER_PASSWORD": "guest",
                    "SELFPAY_BROKER_VHOST": "selfpay"}
        creds = {}
        for line in (ROOT / ".brokers" / "activemq" / "credentials.env").read_text().splitlines():
            k, _, v = line.partition("=")
            creds[k] = v
        return {"SELFPAY_BROKER_KIND": "activemq",
                "SELFPAY_BROKER_URLS": "stomp://127.0.0.1:61614",
                "SELFPAY_BROKER_USER": creds.get("SELFPAY_BROKER_USER", ""),
                "SELFPAY_BROKER_PASSWORD": creds.get("SELFPAY_BROKER_PASSWORD", "")}

    def ensure(self) -> None:
        port = 61613 if self.kind == "rabbitmq" else 61614
        if not port_open(port):
            subprocess.run([str(self.script), "start", self.kind], check=True, timeout=240,
                           stdout=subprocess.DEVNULL)

    def kill(self) -> None:
        self.kills += 1
        if self.kind == "rabbitmq":  # the machine's service: drop every connection instead
            subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "-p", "selfpay",
                            "chaos"], timeout=60, check=False)
            return
        pid_file = ROOT / ".brokers" / "activemq" / "activemq.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def restart(self) -> None:
        if self.kind == "activemq":
            subprocess.run([str(self.script), "start", "activemq"], timeout=240, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- customers ----------------------------------------------------------------------------

@dataclass
class Tally:
    started: int = 0
    abandoned: int = 0
    paid: int = 0
    client_retries: int = 0
    gave_up: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def call(http: httpx.Client, urls: list[str], method: str, path: str, *, deadline_s: float,
         tally: Tally, **kwargs: Any) -> httpx.Response | None:
    """Like a phone: on a connection error or a 5xx, try again (the other web process
    too) until the deadline; the same request, so the same Idempotency-Key."""
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        url = random.choice(urls)
        try:
            r = http.request(method, url + path, **kwargs)
            if r.status_code < 500:
                return r
        except httpx.HTTPError:
            pass
        with tally.lock:
            tally.client_retries += 1
        time.sleep(0.3)
    with tally.lock:
        tally.gave_up += 1
    return None


def customer(urls: list[str], accounts: list[str], stop: threading.Event,
             tally: Tally, rnd: random.Random) -> None:
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            with tally.lock:
                if not accounts:
                    return
                account = accounts.pop()
                tally.started += 1
            key = uuid.uuid4().hex
            r = call(http, urls, "POST", "/api/v1/orders", deadline_s=30, tally=tally,
                     headers={"Idempotency-Key": key},
                     json={"biller": "ELEC", "account": account, "channel": "sandbox",
                           "email": f"{account}@example.cn"})
            if r is None or r.status_code != 201 and r.status_code != 200:
                continue
            order_no = r.json()["order_no"]
            pick = rnd.random()
            pay = f"/sandbox/api/orders/{order_no}/pay"
            if pick < 0.05:
                with tally.lock:
                    tally.abandoned += 1
                    tally.scenarios["abandoned"] += 1
                continue
            if pick < 0.20:  # out of order: a failure that arrives after the success
                call(http, urls, "POST", pay, deadline_s=30, tally=tally,
                     json={"outcome": "fail", "delay_s": 3})
                plan = [{"outcome": "success", "repeat": 2}]
                scenario = "failure after success"
            elif pick < 0.40:
                plan = [{"outcome": "success", "repeat": 3}]
                scenario = "duplicates"
            elif pick < 0.50:
                plan = [{"outcome": "success", "delay_s": 8}]
                scenario = "late"
            else:
                plan = [{"outcome": "success"}]
                scenario = "plain"
            for body in plan:
                call(http, urls, "POST", pay, deadline_s=30, tally=tally, json=body)
            with tally.lock:
                tally.paid += 1
                tally.scenarios[scenario] += 1
            time.sleep(rnd.uniform(0.05, 0.3))


# --- chaos ---------------------------------------------------------------------------------

def chaos(victims: dict[str, Proc], broker: Broker, stop: threading.Event, every_s: float,
          rnd: random.Random) -> None:
    names = [*victims, "broker"]
    # the first kill comes within every_s (an exponential wait alone leaves a short run
    # without any kill once in 150: a run that proves nothing); then a Poisson process
    wait = rnd.uniform(0.5, every_s)
    while not stop.wait(wait):
        wait = rnd.expovariate(1 / every_s)
        name = rnd.choice(names)
        if name == "broker":
            log(f"chaos: SIGKILL broker ({broker.kind})")
            broker.kill()
            time.sleep(rnd.uniform(1, 3))
            broker.restart()
            continue
        proc = victims[name]
        log(f"chaos: SIGKILL {name}")
        proc.kill()
        time.sleep(rnd.uniform(1, 3))
        proc.start()


# --- the checker ------------------------------------------------------------------------

def check(dmz_url: str, intranet_url: str, sink: Sink) -> list[str]:
    problems: list[str] = []
    dmz, ledger = create_engine(dmz_url), create_engine(intranet_url)
    with dmz.connect() as d, ledger.connect() as lg:
        orders = {r.order_no: r for r in d.execute(text(
            "SELECT order_no, status, amount_fen FROM orders"))}
        trades = {r.order_no: r.state for r in d.execute(text(
            "SELECT order_no, state FROM sandbox_trades"))}
        payments = {r.payment_id: r.amount_fen for r in lg.execute(text(
            "SELECT payment_id, amount_fen FROM ledger_payments"))}
        bills_paid = lg.execute(text("SELECT coalesce(sum(paid_fen), 0) FROM bills")).scalar_one()
        balances = lg.execute(text(
            "SELECT coalesce(sum(balance_fen), 0) FROM accounts")).scalar_one()
        overpaid = lg.execute(text(
            "SELECT count(*) FROM bills WHERE paid_fen > amount_fen")).scalar_one()
        messages = list(d.execute(text("SELECT id, kind, status, created_at FROM messages")))
    dmz.dispose()
    ledger.dispose()

    paid_at_channel = {no for no, state in trades.items() if state == "SUCCESS"}
    for no in sorted(paid_at_channel):
        order = orders.get(no)
        if order is None or order.status != "posted":
            problems.append(f"1. {no}: paid at the channel, order is "
                            f"{order.status if order else 'missing'}")
        elif payments.get(no) != order.amount_fen:
            problems.append(f"1. {no}: ledger has {payments.get(no)} fen, order {order.amount_fen}")
    for no in sorted(set(payments) - paid_at_channel):
        problems.append(f"1. {no}: in the ledger, but the channel never took the money")
    stuck = Counter(o.status for o in orders.values() if o.status in ("created", "pending",
                                                                      "paid"))
    if stuck:
        problems.append(f"2. orders left open past the TTL: {dict(stuck)}")
    total_payments = sum(payments.values())
    total_posted = sum(o.amount_fen for o in orders.values() if o.status == "posted")
    if not (total_payments == total_posted == bills_paid + balances) or overpaid:
        problems.append(f"3. ledger payments {total_payments} fen, posted orders {total_posted}"
                        f" fen, bills paid {bills_paid} + balances {balances} fen, "
                        f"{overpaid} bills overpaid")
    twice = {mid: n for mid, n in sink.received.items() if n > 1}
    if twice:
        problems.append(f"4. messages sent more than once: {twice}")
    unsent = [m.id for m in messages if m.status != "sent"]
    if unsent:
        problems.append(f"4. messages never sent: {unsent[:20]}")
    if len(sink.received) != len(messages):
        problems.append(f"4. the sink got {len(sink.received)} messages, the outbox has "
                        f"{len(messages)}")
    log(f"checked: {len(orders)} orders, {len(paid_at_channel)} paid at the channel, "
        f"{len(payments)} ledger payments ({total_payments} fen), {len(messages)} messages, "
        f"{sum(sink.received.values())} SMTP deliveries")
    return problems


def settled(dmz_url: str) -> bool:
    engine = create_engine(dmz_url)
    with engine.connect() as conn:
        open_orders = conn.execute(text(
            "SELECT count(*) FROM orders WHERE status IN ('created', 'pending', 'paid')"
        )).scalar_one()
        queued = conn.execute(text(
            "SELECT count(*) FROM messages WHERE status = 'queued'")).scalar_one()
        undelivered = conn.execute(text(
            "SELECT count(*) FROM sandbox_deliveries WHERE NOT acked AND attempts < 10"
        )).scalar_one()
    engine.dispose()
    return open_orders == 0 and queued == 0 and undelivered == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--accounts", type=int, default=20000)
    ap.add_argument("--broker", choices=("activemq", "rabbitmq"), default="activemq")
    ap.add_argument("--kill-every", type=float, default=4.0)
    ap.add_argument("--short", action="store_true", help="the CI variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the databases and logs")
    args = ap.parse_args()
    if args.short:
        args.seconds, args.clients, args.kill_every = min(args.seconds, 25), 4, 5.0
    rnd = random.Random(args.seed or None)
    workdir = Path(tempfile.mkdtemp(prefix="selfpay-chaos-"))
    run_id = uuid.uuid4().hex[:8]
    dmz_url = create_database(f"selfpay_chaos_dmz_{run_id}")
    intranet_url = create_database(f"selfpay_chaos_cis_{run_id}")
    procs: list[Proc] = []
    controller = None
    ok = False
    try:
        broker = Broker(args.broker)
        broker.ensure()
        accounts = seed(dmz_url, intranet_url, args.accounts)
        rnd.shuffle(accounts)
        sink = Sink()
        from aiosmtpd.controller import Controller

        smtp_port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
        controller.start()

        web_ports = [free_port(), free_port()]
        urls = [f"http://127.0.0.1:{p}" for p in web_ports]
        common = {k: v for k, v in os.environ.items() if not k.startswith("SELFPAY_")}
        common.update({
            "SELFPAY_ENV": "development", "SELFPAY_DATA_DIR": str(workdir / "data"),
            "SELFPAY_SECRET_KEY": secrets.token_urlsafe(48),
            "SELFPAY_QR_KEYS": "1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "SELFPAY_TRANSPORT": "stomp", **broker.settings(),
            "SELFPAY_BRIDGE_REQUEST_QUEUE": f"selfpay.chaos.{run_id}.requests",
            "SELFPAY_ORDER_TTL_S": str(ORDER_TTL_S), "SELFPAY_ORDER_QUERY_AFTER_S": "3",
            "SELFPAY_RECONCILE_INTERVAL_S": "2", "SELFPAY_WORKER_INTERVAL_S": "0.5",
            "SELFPAY_POSTING_LEASE_S": "25", "SELFPAY_ACCESS_LOG": "false",
            "SELFPAY_NOTIFIER": "smtp", "SELFPAY_SMTP_HOST": "127.0.0.1",
            "SELFPAY_SMTP_PORT": str(smtp_port), "SELFPAY_SMTP_SECURITY": "none",
            "SELFPAY_SMTP_TIMEOUT_S": "5",
            "SELFPAY_PUBLIC_BASE_URL": urls[0],  # where the sandbox sends notifications
        })
        dmz = {**common, "SELFPAY_DATABASE_URL": dmz_url}
        victims: dict[str, Proc] = {}
        for i, port in enumerate(web_ports):
            victims[f"serve{i + 1}"] = Proc(
                f"serve{i + 1}", [*SELFPAY, "serve", "--workers", "1", "--port", str(port)],
                {**dmz, "SELFPAY_RUN_WORKER": "false"}, workdir / f"serve{i + 1}.log")
        for i in range(2):
            victims[f"worker{i + 1}"] = Proc(f"worker{i + 1}", [*SELFPAY, "worker"], dmz,
                                             workdir / f"worker{i + 1}.log")
        victims["agent"] = Proc("agent", [*SELFPAY, "agent"],
                                {**common, "SELFPAY_DATABASE_URL": intranet_url,
                                 "SELFPAY_DATA_DIR": str(workdir / "intranet")},
                                workdir / "agent.log")
        procs = list(victims.values())
        for p in procs:
            p.start()
        deadline = time.monotonic() + 60
        while not all(port_open(p) for p in web_ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"web processes did not start: see {workdir}")
            time.sleep(0.3)
        log(f"up: {', '.join(victims)}, broker {broker.kind}; {args.clients} customers for "
            f"{args.seconds:g} s, a kill every ~{args.kill_every:g} s")

        stop = threading.Event()
        tally = Tally()
        chaos_thread = threading.Thread(
            target=chaos, args=(victims, broker, stop, args.kill_every, rnd), daemon=True)
        clients = [threading.Thread(target=customer, args=(urls, accounts, stop, tally,
                                                           random.Random(rnd.random())))
                   for _ in range(args.clients)]
        chaos_thread.start()
        for c in clients:
            c.start()
        time.sleep(args.seconds)
        stop.set()
        chaos_thread.join(120)
        for c in clients:
            c.join(120)
        broker.restart()
        for p in procs:  # whatever the last kill left down comes back
            if not p.alive:
                p.start()
        log(f"load over: {tally.started} orders, {tally.paid} paid, {tally.abandoned} "
            f"abandoned, {tally.client_retries} client retries, {tally.gave_up} gave up; "
            f"scenarios {dict(tally.scenarios)}; kills "
            f"{ {p.name: p.kills for p in procs} | {'broker': broker.kills} }")
        until = time.monotonic() + ORDER_TTL_S + 90
        while not settled(dmz_url) and time.monotonic() < until:
            time.sleep(2)
        time.sleep(3)  # let a last SMTP delivery land
        problems = check(dmz_url, intranet_url, sink)
        for line in problems:
            log("FAIL " + line)
        ok = not problems
        log("all four checks hold" if ok else f"{len(problems)} problems (logs in {workdir})")
        return 0 if ok else 1
    finally:
        for p in procs:
            p.stop()
        if controller is not None:
            controller.stop()
        if not args.keep:
            drop_database(dmz_url)
            drop_database(intranet_url)
            if ok:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
