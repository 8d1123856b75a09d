"""Many customers paying at once: a locust load test of the whole customer journey.

    .venv/bin/python bench/load.py [--users 1000] [--spawn-rate 100] [--seconds 60]
        [--accounts 30000] [--web-processes 1] [--workers 1] [--healthz-seconds 20]
        [--grace-seconds 20] [--output-md FILE] [--keep-logs DIR]

Needs `pip install -e '.[bench]'` (locust). In one run it:

1. creates a fresh database on the PostgreSQL server at SELFPAY_TEST_POSTGRES_URL
   (default postgresql+psycopg://postgres@127.0.0.1:5432/test), runs `selfpay db upgrade`
   and seeds --accounts accounts of biller ELEC with one or two open bills each straight
   in PostgreSQL (generate_series: seconds, not minutes);
2. starts `selfpay serve --workers N --no-access-log` with SELFPAY_RUN_WORKER=false and
   --workers `selfpay worker` processes (posting, reconcile, messages and the sandbox's
   notification deliveries), SELFPAY_ENV=development, the sandbox channel, explicit
   secrets (so that this script signs the QR codes with the server's key), Redis with a
   prefix of its own, and 127.0.0.1 as the trusted proxy;
3. phase 1, the baseline: --users locust users GET /healthz, 0.8-1.2 s think time, for
   --healthz-seconds once all are spawned;
4. phase 2: --users users, 0.8-1.2 s think time between steps, each walking the journey on an
   account of its own, never one already paid in this run: the code page (the signed QR
   URL), the account API, POST /api/v1/orders, the sandbox's scripted "success" (the
   sandbox then notifies the app over HTTP, signed, like a real channel), the order's
   status every second until `posted` (30 s at most), the receipt; then a fresh account.
   After --seconds, users finish the journey they are on and start no other;
5. prints per step: requests, failures, p50/p95/p99 and p99 against /healthz's, beside
   the targets; payments per second; orders left unfinished after --grace-seconds; the
   memory of every server and worker process; and the ledger's invariants. Exits 1 when
   an invariant fails.

Each user sends its own X-Forwarded-For (10.x.y.z), so per-client rate limits count per
user, as behind a real proxy. Percentiles cover the time from all users spawned to the
last journey ended (locust's reset on spawning complete). Locust runs on the same
machine as the server, PostgreSQL and Redis: its CPU is taken from theirs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gevent
import gevent.event
import httpx
import psutil
import psycopg
from locust import FastHttpUser, between, task
from locust.env import Environment
from locust.stats import RequestStats
from pay_flow import create_postgres_database, drop_postgres_database, free_port
from sqlalchemy import make_url

from selfpay.config import Settings, new_qr_key
from selfpay.domain.qrcodes import make_payload

BILLER = "ELEC"
# 1 s think time on average; the spread keeps users that spawned together from walking
# in step (with a constant second, 100 users would pay in the same instant, then idle)
THINK = between(0.8, 1.2)
POLL_S = 1.0  # how often a user asks whether its order is posted (--short-poll)
WAIT_S = 25.0  # a long poll waits this long for the next change (what /pay/{no} does)
POSTED_WITHIN_S = 30.0  # then the journey counts as "not posted"
DRAIN_MAX_S = 90.0  # journeys still running this long after the end are cut off
P99_LIMIT_MS = 2000.0
P99_AIM_MS = 500.0
UNFINISHED = ("created", "pending", "paid")  # order statuses that should not stay

STEP_HEALTHZ = "0 GET /healthz"
STEP_CODE = "1 GET /q/{biller}/{account}/{tag}"
STEP_ACCOUNT = "2 GET /api/v1/billers/{biller}/accounts/{account}"
STEP_ORDER = "3 POST /api/v1/orders"
STEP_PAY = "4 POST /sandbox/api/orders/{no}/pay"
STEP_POLL = "5 GET /api/v1/orders/{no} (until posted)"
STEP_WAIT = "5 GET /api/v1/orders/{no}?since&wait_s (long poll until posted)"
STEP_RECEIPT = "6 GET /receipt/{no}"
STEPS = (STEP_CODE, STEP_ACCOUNT, STEP_ORDER, STEP_PAY, STEP_POLL, STEP_WAIT, STEP_RECEIPT)


def client_ips() -> Iterator[str]:
    for n in itertools.count(1):
        yield f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def psycopg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- the database -------------------------------------------------------------------

SEED_SQL = """
INSERT INTO billers (code, name, name_en) VALUES (%(biller)s, '电费', 'Electricity');
INSERT INTO accounts (biller, number, name, phone, address, balance_fen, created_at, updated_at)
SELECT %(biller)s, lpad(n::text, 10, '0'), '张三丰', '138' || lpad(n::text, 8, '0'),
       '幸福路 ' || n || ' 号', 0, now(), now()
FROM generate_series(1, %(n)s) AS n;
INSERT INTO bills (biller, account, period, amount_fen, paid_fen, due_date, status, created_at)
SELECT %(biller)s, lpad(n::text, 10, '0'), '2026-10', 5000 + n %% 5000, 0,
       DATE '2026-11-30', 'open', now()
FROM generate_series(1, %(n)s) AS n
UNION ALL
SELECT %(biller)s, lpad(n::text, 10, '0'), '2026-09', 3000 + n %% 3000, 0,
       DATE '2026-10-31', 'open', now()
FROM generate_series(1, %(n)s) AS n WHERE n %% 2 = 0;
"""


def seed(url: str, accounts: int) -> tuple[list[str], int]:
    """Every account gets the bill of 2026-10, every other one that of 2026-09 too."""
    with psycopg.connect(psycopg_dsn(url)) as conn:
        for statement in SEED_SQL.split(";"):
            if statement.strip():
                conn.execute(statement, {"biller": BILLER, "n": accounts})
        conn.commit()
        bills = conn.execute("SELECT count(*) FROM bills").fetchone()
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return [f"{n:010d}" for n in range(1, accounts + 1)], int(bills[0] if bills else 0)


@dataclass
class Check:
    name: str
    value: int
    ok: bool


def ledger_checks(url: str) -> list[Check]:
    queries = [
        ("posted orders without exactly one ledger payment of their amount",
         "SELECT count(*) FROM orders o LEFT JOIN ledger_payments p ON p.payment_id = o.order_no"
         " WHERE o.status = 'posted' AND (p.payment_id IS NULL OR p.amount_fen <> o.amount_fen)"),
        ("ledger payments whose order is not posted",
         "SELECT count(*) FROM ledger_payments p LEFT JOIN orders o ON o.order_no = p.payment_id"
         " WHERE o.status IS DISTINCT FROM 'posted'"),
        ("bills with paid_fen > amount_fen",
         "SELECT count(*) FROM bills WHERE paid_fen > amount_fen"),
        ("bills covered by two or more posted orders",
         "SELECT count(*) FROM (SELECT b.value FROM orders o,"
         " json_array_elements_text(o.bill_ids::json) AS b WHERE o.status = 'posted'"
         " GROUP BY b.value HAVING count(*) > 1) AS twice"),
        ("sum of ledger payments - sum of posted orders (fen)",
         "SELECT (SELECT coalesce(sum(amount_fen), 0) FROM ledger_payments)"
         " - (SELECT coalesce(sum(amount_fen), 0) FROM orders WHERE status = 'posted')"),
        ("sum of bills' paid_fen - ledger payments applied to bills (fen)",
         "SELECT (SELECT coalesce(sum(paid_fen), 0) FROM bills)"
         " - (SELECT coalesce(sum(amount_fen - surplus_fen), 0) FROM ledger_payments)"),
    ]
    out = []
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        for name, sql in queries:
            row = conn.execute(sql).fetchone()
            value = int(row[0]) if row else -1
            out.append(Check(name, value, value == 0))
    return out


def order_counts(url: str) -> dict[str, int]:
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM orders GROUP BY status").fetchall()
        undelivered = conn.execute(
            "SELECT count(*) FROM sandbox_deliveries WHERE NOT acked").fetchone()
        postings = conn.execute(
            "SELECT count(*) FROM postings WHERE status <> 'done'").fetchone()
    counts = {str(status): int(n) for status, n in rows}
    counts["(sandbox deliveries not acknowledged)"] = int(undelivered[0]) if undelivered else 0
    counts["(postings not done)"] = int(postings[0]) if postings else 0
    return counts


STAGES_SQL = """
SELECT percentile_cont(ARRAY[0.5, 0.99])
           WITHIN GROUP (ORDER BY extract(epoch FROM e.at - t.paid_at)),
       percentile_cont(ARRAY[0.5, 0.99])
           WITHIN GROUP (ORDER BY extract(epoch FROM o.posted_at - e.at))
FROM orders o
JOIN sandbox_trades t ON t.order_no = o.order_no
JOIN order_events e ON e.order_no = o.order_no AND e.kind = 'state' AND e.to_status = 'paid'
WHERE o.status = 'posted'
"""


def stage_latencies(url: str) -> str:
    """Where the time from the sandbox's "paid" to `posted` goes, from the timestamps the
    app wrote: the notification's delivery (the sandbox's queue in the worker, then the
    app's notify handler), then the posting (the worker's outbox)."""
    with psycopg.connect(psycopg_dsn(url), autocommit=True) as conn:
        row = conn.execute(STAGES_SQL).fetchone()
    if not row or row[0] is None:
        return "no posted order"
    (n50, n99), (p50, p99) = row
    return (f"sandbox paid -> app notified p50 {n50:.1f} s, p99 {n99:.1f} s; "
            f"notified -> posted p50 {p50:.1f} s, p99 {p99:.1f} s")


def wait_for_quiet(url: str, grace_s: float) -> tuple[dict[str, int], float]:
    """Let the last notifications and postings land: until no order is unfinished, or
    grace_s. Returns the last counts and the seconds waited."""
    t0 = time.monotonic()
    while True:
        counts = order_counts(url)
        if sum(counts.get(s, 0) for s in UNFINISHED) == 0 or time.monotonic() - t0 >= grace_s:
            return counts, time.monotonic() - t0
        gevent.sleep(1.0)


# --- the server ---------------------------------------------------------------------


@dataclass
class Servers:
    web: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def all(self) -> list[subprocess.Popen[bytes]]:
        return [self.web, *self.workers]

    def stop(self) -> None:
        for proc in self.all():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.all():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def selfpay_command() -> list[str]:
    script = Path(sys.executable).parent / "selfpay"
    return [str(script)] if script.exists() else [sys.executable, "-m", "selfpay.entrypoints.cli"]


def server_env(*, port: int, data_dir: Path, url: str, redis_prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SELFPAY_ENV": "development",
        "SELFPAY_DATA_DIR": str(data_dir),
        "SELFPAY_DATABASE_URL": url,
        "SELFPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SELFPAY_HOST": "127.0.0.1",
        "SELFPAY_PORT": str(port),
        "SELFPAY_ENABLED_CHANNELS": "sandbox",
        "SELFPAY_RUN_WORKER": "false",
        "SELFPAY_SECRET_KEY": secrets.token_urlsafe(48),
        "SELFPAY_QR_KEYS": f"1:{new_qr_key()}",
        "SELFPAY_TRUSTED_PROXIES": "127.0.0.1",
        "SELFPAY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SELFPAY_REDIS_PREFIX": redis_prefix,
    })
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The server's Settings, built from the environment it is given (no .env file)."""
    fields = {name[len("SELFPAY_"):].lower(): value for name, value in env.items()
              if name.startswith("SELFPAY_")}
    known = {k: v for k, v in fields.items() if k in Settings.model_fields}
    return Settings(_env_file=None, **known)


def start_servers(env: dict[str, str], *, web_processes: int, workers: int,
                  log_dir: Path) -> Servers:
    port = int(env["SELFPAY_PORT"])
    cmd = selfpay_command()

    def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as fh:
            return subprocess.Popen([*cmd, *args], env=env, stdout=fh, stderr=subprocess.STDOUT)

    logs = [log_dir / "serve.log"]
    web = spawn(["serve", "--workers", str(web_processes), "--no-access-log"], logs[0])
    procs = []
    for i in range(workers):
        logs.append(log_dir / f"worker-{i + 1}.log")
        procs.append(spawn(["worker"], logs[-1]))
    servers = Servers(web, procs, logs)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dead = [p for p in servers.all() if p.poll() is not None]
        if dead:
            servers.stop()
            raise SystemExit(f"a server process exited at start; see {log_dir}")
        try:
            up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            up = False
        ready = all("worker running" in log.read_text(errors="replace") for log in logs[1:])
        if up and ready:
            return servers
        gevent.sleep(0.2)
    servers.stop()
    raise SystemExit("the server did not answer /healthz (or a worker did not start) in 60 s")


def server_log_problems(logs: list[Path], limit: int = 12) -> tuple[int, list[str]]:
    lines = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback")):
                lines.append(f"{log.name}: {line[:240]}")
    return len(lines), lines[:limit]


# --- memory and CPU ---------------------------------------------------------------------


@dataclass
class Usage:
    rss_now: dict[str, int] = field(default_factory=dict)  # "role pid" -> bytes
    rss_peak: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # % of one core, per second
    locust_cpu: list[float] = field(default_factory=list)
    machine_cpu: list[float] = field(default_factory=list)

    def new_phase(self) -> None:
        self.cpu.clear()
        self.locust_cpu.clear()
        self.machine_cpu.clear()


def process_tree(servers: Servers) -> list[tuple[str, int]]:
    out = []
    roots = [("serve", servers.web.pid)] + [(f"worker {i + 1}", p.pid)
                                            for i, p in enumerate(servers.workers)]
    for role, pid in roots:
        try:
            proc = psutil.Process(pid)
            children = proc.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        out.append((f"{role} (supervisor)" if role == "serve" and children else role, pid))
        for child in children:
            try:
                tracker = "resource_tracker" in " ".join(child.cmdline())
            except psutil.NoSuchProcess:
                continue
            out.append((f"{role} multiprocessing tracker" if tracker else f"{role} process",
                        child.pid))
    return out


def sample_usage(servers: Servers, usage: Usage, stop: gevent.event.Event) -> None:
    me = psutil.Process()
    me.cpu_percent()
    psutil.cpu_percent()
    procs: dict[int, psutil.Process] = {}  # kept: cpu_percent() measures since the last call
    while not stop.wait(1.0):
        for role, pid in process_tree(servers):
            key = f"{role} {pid}"
            try:
                if pid not in procs:
                    procs[pid] = psutil.Process(pid)
                    procs[pid].cpu_percent()
                else:
                    usage.cpu.setdefault(key, []).append(procs[pid].cpu_percent())
                rss = int(procs[pid].memory_info().rss)
            except psutil.NoSuchProcess:
                continue
            usage.rss_now[key] = rss
            usage.rss_peak[key] = max(rss, usage.rss_peak.get(key, 0))
        usage.locust_cpu.append(me.cpu_percent())
        usage.machine_cpu.append(psutil.cpu_percent())


# --- the users ----------------------------------------------------------------------


@dataclass
class Run:
    """What the users of one phase share (one process, greenlets: no locks needed)."""

    code_paths: dict[str, str]
    accounts: Iterator[str]
    draining: bool = False
    started: int = 0
    in_flight: int = 0
    finished: int = 0
    failed: int = 0  # a step failed: the journey was abandoned
    not_posted: int = 0
    exhausted: int = 0
    finish_times: list[float] = field(default_factory=list)
    pay_to_posted_s: list[float] = field(default_factory=list)
    journey_s: list[float] = field(default_factory=list)
    not_posted_orders: list[str] = field(default_factory=list)

    def take_account(self) -> str | None:
        return next(self.accounts, None)


IPS = client_ips()


class HealthzUser(FastHttpUser):
    wait_time = THINK
    connection_timeout = 30.0
    network_timeout = 60.0

    def on_start(self) -> None:
        self.headers = {"X-Forwarded-For": next(IPS)}

    @task
    def healthz(self) -> None:
        with self.client.get("/healthz", name=STEP_HEALTHZ, headers=self.headers,
                             catch_response=True) as r:
            if r.status_code == 200:
                r.success()
            else:
                r.failure(f"{r.status_code} {(r.text or '')[:160]}")


class JourneyUser(FastHttpUser):
    wait_time = THINK  # between journeys; think() between steps
    connection_timeout = 30.0
    network_timeout = 60.0
    shared: ClassVar[Run]  # ("run" is User's own method)
    long_poll: ClassVar[bool] = True  # False: ask every POLL_S (--short-poll)

    def on_start(self) -> None:
        self.headers = {"X-Forwarded-For": next(IPS)}

    def think(self) -> None:
        # gevent.sleep, not self.wait(): locust may stop a user inside wait(), and a
        # journey cut between order and payment would leave an order pending
        gevent.sleep(self.wait_time())

    def _call(self, method: str, path: str, step: str, *, expect: int = 200,
              json: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any] | None:
        """One request, counted as a failure unless it answers `expect`; JSON or {}."""
        with self.client.request(method, path, name=step, json=json,
                                 headers={**self.headers, **(headers or {})},
                                 catch_response=True) as r:
            if r.status_code != expect:
                r.failure(f"{r.status_code} {(r.text or str(r.error or ''))[:160]}")
                return None
            if "json" not in (r.headers.get("content-type") or ""):
                r.success()
                return {}
            try:
                body = r.json()
            except ValueError:
                r.failure(f"{r.status_code} not JSON: {(r.text or '')[:120]}")
                return None
            r.success()
            return body if isinstance(body, dict) else {}

    @task
    def journey(self) -> None:
        run = self.shared
        if run.draining:
            return
        account = run.take_account()
        if account is None:
            run.exhausted += 1
            return
        run.started += 1
        run.in_flight += 1
        try:
            self._journey(run, account)
        finally:
            run.in_flight -= 1

    def _journey(self, run: Run, account: str) -> None:
        t0 = time.monotonic()
        if self._call("GET", run.code_paths[account], STEP_CODE) is None:
            run.failed += 1
            return
        self.think()
        summary = self._call("GET", f"/api/v1/billers/{BILLER}/accounts/{account}",
                             STEP_ACCOUNT)
        if not summary or not summary.get("total_due_fen"):
            run.failed += 1
            return
        self.think()
        order = self._call("POST", "/api/v1/orders", STEP_ORDER, expect=201,
                           json={"biller": BILLER, "account": account, "channel": "sandbox"},
                           headers={"Idempotency-Key": uuid.uuid4().hex})
        if not order:
            run.failed += 1
            return
        order_no = order["order_no"]
        self.think()
        if self._call("POST", f"/sandbox/api/orders/{order_no}/pay", STEP_PAY,
                      json={"outcome": "success"}) is None:
            run.failed += 1
            return
        paid = time.monotonic()
        version = order.get("version")
        while True:
            if self.long_poll and isinstance(version, int):
                # as the status page does: the server answers at the next change
                status = self._call("GET", f"/api/v1/orders/{order_no}?since={version}"
                                           f"&wait_s={WAIT_S:g}", STEP_WAIT)
            else:
                gevent.sleep(POLL_S)
                status = self._call("GET", f"/api/v1/orders/{order_no}", STEP_POLL)
            if status and isinstance(status.get("version"), int):
                version = status["version"]
            if status is None:
                run.failed += 1
                return
            if status.get("status") == "posted":
                break
            if time.monotonic() - paid >= POSTED_WITHIN_S:
                run.not_posted += 1
                run.not_posted_orders.append(f"{order_no} ({status.get('status')})")
                return
        run.pay_to_posted_s.append(time.monotonic() - paid)
        self.think()
        if self._call("GET", f"/receipt/{order_no}", STEP_RECEIPT) is None:
            run.failed += 1
            return
        run.finished += 1
        run.finish_times.append(time.monotonic())
        run.journey_s.append(time.monotonic() - t0)


# --- phases ---------------------------------------------------------------------------


@dataclass
class Phase:
    stats: RequestStats
    spawn_s: float  # from start to all users spawned
    steady_s: float  # from all spawned to the end signal
    steady_start: float
    steady_end: float
    drain_s: float  # from the end signal to the last journey ended
    cut_off: int  # journeys still running when the drain was cut short
    exceptions: list[str]  # raised in a user: a bug of this script, not of the app


def run_phase(user_class: type[FastHttpUser], *, host: str, users: int, spawn_rate: float,
              seconds: float, run: Run | None = None) -> Phase:
    env = Environment(user_classes=[user_class], host=host, reset_stats=True)
    runner = env.create_local_runner()
    spawned = gevent.event.Event()
    env.events.spawning_complete.add_listener(lambda user_count: spawned.set())
    t0 = time.monotonic()
    runner.start(users, spawn_rate=spawn_rate)
    if not spawned.wait(timeout=users / spawn_rate + 120):
        raise SystemExit("locust did not finish spawning its users")
    steady_start = time.monotonic()
    gevent.sleep(seconds)
    steady_end = time.monotonic()
    cut_off = 0
    if run is not None:
        run.draining = True
        while run.in_flight and time.monotonic() - steady_end < DRAIN_MAX_S:
            gevent.sleep(0.2)
        cut_off = run.in_flight
    drain_end = time.monotonic()
    runner.stop()
    runner.quit()
    exceptions = [f"{e['count']} x {e['msg']}" for e in runner.exceptions.values()]
    return Phase(env.stats, steady_start - t0, steady_end - steady_start, steady_start,
                 steady_end, drain_end - steady_end, cut_off, exceptions)


# --- the report -------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Row:
    step: str
    requests: int
    failures: int
    p50: float
    p95: float
    p99: float
    ratio: float

    @property
    def verdict(self) -> str:
        if self.step == STEP_WAIT and not self.failures:
            # its time is the wait for the next change: judged as paid -> posted below
            return "waits (see paid -> posted)" if self.requests else "-"
        if self.step == STEP_POLL and not self.requests:
            return "-"  # long polls instead
        if not self.requests:
            return "MISS (no requests)"
        if self.failures or self.p99 > P99_LIMIT_MS:
            return "MISS"
        return "ok (aim met)" if self.p99 <= P99_AIM_MS else "ok"


def step_rows(healthz: RequestStats, journey: RequestStats) -> list[Row]:
    base = healthz.get(STEP_HEALTHZ, "GET")
    base_p99 = base.get_response_time_percentile(0.99) or 1.0
    rows = []
    for stats, step, method in [(healthz, STEP_HEALTHZ, "GET")] + [
            (journey, s, "POST" if s in (STEP_ORDER, STEP_PAY) else "GET") for s in STEPS]:
        e = stats.get(step, method)
        p99 = float(e.get_response_time_percentile(0.99) or 0)
        rows.append(Row(step, e.num_requests, e.num_failures,
                        float(e.get_response_time_percentile(0.5) or 0),
                        float(e.get_response_time_percentile(0.95) or 0), p99, p99 / base_p99))
    return rows


def format_table(rows: list[Row], markdown: bool) -> list[str]:
    head = ["step", "requests", "failures", "p50 ms", "p95 ms", "p99 ms", "p99 / healthz p99",
            "target: 0 failures, p99 <= 2000 (aim 500)"]
    cells = [[r.step, str(r.requests), str(r.failures), f"{r.p50:.0f}", f"{r.p95:.0f}",
              f"{r.p99:.0f}", f"{r.ratio:.1f}x", r.verdict] for r in rows]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return out + ["| " + " | ".join(c) + " |" for c in cells]
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(len(head))]

    def line(c: list[str]) -> str:
        return "  ".join(c[0].ljust(widths[0]) if i == 0 else c[i].rjust(widths[i])
                         for i in range(len(c))).rstrip()

    return [line(head)] + [line(c) for c in cells]


def error_lines(*stats: RequestStats, limit: int = 10) -> list[str]:
    errors = [e for s in stats for e in s.errors.values()]
    errors.sort(key=lambda e: -e.occurrences)
    return [f"{e.occurrences} x {e.name}: {e.error}"[:300] for e in errors[:limit]]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--spawn-rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="phase 2 length once all users are spawned")
    parser.add_argument("--accounts", type=int, default=30000)
    parser.add_argument("--web-processes", type=int, default=1,
                        help="selfpay serve --workers N")
    parser.add_argument("--workers", type=int, default=1, help="selfpay worker processes")
    parser.add_argument("--healthz-seconds", type=float, default=20.0)
    parser.add_argument("--grace-seconds", type=float, default=20.0,
                        help="at the end, wait this long at most for unfinished orders")
    parser.add_argument("--short-poll", action="store_true",
                        help=f"ask for the order every {POLL_S:g} s (the page before the "
                             "long poll) instead of waiting for its next change")
    parser.add_argument("--output-md", type=Path, help="also write the tables as Markdown")
    parser.add_argument("--keep-logs", type=Path, help="copy the server logs to this folder")
    parser.add_argument("--keep-db", action="store_true",
                        help="leave the database for a look afterwards (prints its URL)")
    args = parser.parse_args()
    if args.accounts < 1 or args.users < 1 or args.web_processes < 1 or args.workers < 1:
        parser.error("--users, --accounts, --web-processes and --workers must be at least 1")
    return args


@dataclass
class Result:
    healthz: Phase
    journey: Phase
    run: Run
    usage: Usage
    counts: dict[str, int]  # orders by status at the end
    waited_s: float
    checks: list[Check]
    stages: str
    log_count: int
    log_lines: list[str]


def measure(args: argparse.Namespace) -> Result:
    tmp = Path(tempfile.mkdtemp(prefix="selfpay-load-"))
    redis_prefix = f"selfpay-load-{uuid.uuid4().hex[:8]}:"
    pg_name = url = ""
    servers: Servers | None = None
    usage = Usage()
    try:
        url, pg_name = create_postgres_database()
        port = free_port()
        env = server_env(port=port, data_dir=tmp / "data", url=url, redis_prefix=redis_prefix)
        settings = settings_from(env)
        keyring, base = settings.keyring(), settings.code_base
        t0 = time.monotonic()
        subprocess.run([*selfpay_command(), "db", "upgrade"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        accounts, bills = seed(url, args.accounts)
        seed_s = time.monotonic() - t0
        # the code page's path, exactly as a phone opens the printed code
        code_paths = {a: "/q/" + make_payload(base, keyring, BILLER, a)[len(base):]
                      for a in accounts}
        print(f"database {pg_name}: {len(accounts)} accounts, {bills} open bills, schema and "
              f"seed in {seed_s:.1f} s", flush=True)
        servers = start_servers(env, web_processes=args.web_processes, workers=args.workers,
                                log_dir=tmp)
        host = f"http://127.0.0.1:{port}"
        stop_sampling = gevent.event.Event()
        sampler = gevent.spawn(sample_usage, servers, usage, stop_sampling)

        print(f"phase 1: {args.users} users on /healthz for {args.healthz_seconds:g} s",
              flush=True)
        healthz = run_phase(HealthzUser, host=host, users=args.users,
                            spawn_rate=args.spawn_rate, seconds=args.healthz_seconds)
        usage.new_phase()
        print(f"phase 2: {args.users} users paying for {args.seconds:g} s", flush=True)
        run = Run(code_paths=code_paths, accounts=iter(accounts))
        JourneyUser.shared = run
        JourneyUser.long_poll = not args.short_poll
        journey = run_phase(JourneyUser, host=host, users=args.users,
                            spawn_rate=args.spawn_rate, seconds=args.seconds, run=run)
        counts, waited = wait_for_quiet(url, args.grace_seconds)
        checks = ledger_checks(url)
        stages = stage_latencies(url)
        stop_sampling.set()
        sampler.join(5)
    finally:
        if servers is not None:
            servers.stop()
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for log in servers.logs:
                    shutil.copy(log, args.keep_logs / log.name)
        log_count, log_lines = server_log_problems(servers.logs) if servers else (0, [])
        if pg_name and args.keep_db:
            print(f"kept the database: {url}")
        elif pg_name:
            drop_postgres_database(pg_name)
        clear_redis(redis_prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    return Result(healthz, journey, run, usage, counts, waited, checks, stages, log_count,
                  log_lines)


def report(args: argparse.Namespace, r: Result) -> None:
    rows = step_rows(r.healthz.stats, r.journey.stats)
    journey, run = r.journey, r.run
    in_window = [t for t in run.finish_times if journey.steady_start <= t <= journey.steady_end]
    pending = sum(r.counts.get(s, 0) for s in UNFINISHED)
    failures = sum(row.failures for row in rows)
    header = [
        f"selfpay load test, {dt.datetime.now().isoformat(timespec='seconds')}: "
        f"{args.users} users (spawn rate {args.spawn_rate:g}/s), 0.8-1.2 s think time, "
        f"PostgreSQL, {args.web_processes} web process(es) (`selfpay serve --workers "
        f"{args.web_processes}`), {args.workers} `selfpay worker` process(es), "
        f"{args.accounts} accounts",
        f"machine: {os.cpu_count()} cores shared by locust, the server, its workers, "
        f"PostgreSQL and Redis; during phase 2 locust itself used {mean(r.usage.locust_cpu):.0f}%"
        f" of one core, the whole machine {mean(r.usage.machine_cpu):.0f}%",
        f"phase 1 (/healthz): {r.healthz.steady_s:.0f} s after {r.healthz.spawn_s:.0f} s of "
        f"spawning; phase 2 (journeys): {journey.steady_s:.0f} s after "
        f"{journey.spawn_s:.0f} s of spawning, then {journey.drain_s:.0f} s for the journeys "
        "under way to end (percentiles cover steady + drain)",
    ]
    summary = [
        f"completed payments: {len(in_window) / journey.steady_s:.1f}/s in the steady "
        f"{journey.steady_s:.0f} s ({len(in_window)} journeys ended with a receipt)",
        f"journeys: started {run.started}, finished {run.finished}, abandoned on a failed "
        f"step {run.failed}, not posted within {POSTED_WITHIN_S:.0f} s {run.not_posted} "
        f"(target 0), cut off at the end {journey.cut_off}, users out of accounts "
        f"{run.exhausted}",
        "paid -> posted as the customer sees it ("
        + (f"polled every {POLL_S:g} s" if args.short_poll else "long poll") + "): p50 "
        f"{pct(run.pay_to_posted_s, 50):.1f} s, p99 {pct(run.pay_to_posted_s, 99):.1f} s; "
        f"whole journey p50 {pct(run.journey_s, 50):.1f} s (5 s or more of it think time "
        "and polling)",
        f"from the database: {r.stages}",
        f"orders left unfinished after {r.waited_s:.0f} s of grace: {pending} (target 0); "
        "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())),
        f"request failures: {failures} (target 0)",
    ]
    memory = [f"{key}: {mib(r.usage.rss_now[key])} at the end, peak "
              f"{mib(r.usage.rss_peak[key])}; CPU in phase 2 "
              f"{mean(r.usage.cpu.get(key, [])):.0f}% of one core"
              for key in sorted(r.usage.rss_now)]
    invariants = [f"{'OK  ' if c.ok else 'FAIL'} {c.name}: {c.value}" for c in r.checks]
    errors = error_lines(r.healthz.stats, journey.stats)

    print("", *header, "", *format_table(rows, markdown=False), "", *summary, sep="\n")
    print("memory (RSS) and CPU per process:", *(f"  {line}" for line in memory), sep="\n")
    print("invariants:", *(f"  {line}" for line in invariants), sep="\n")
    if errors:
        print("request errors (most frequent first):", *(f"  {line}" for line in errors),
              sep="\n")
    if run.not_posted_orders:
        print("not posted within 30 s, e.g.: " + ", ".join(run.not_posted_orders[:5]))
    print(f"server log: {r.log_count} warning/error lines", *(f"  {line}" for line in
                                                               r.log_lines), sep="\n")
    if args.output_md:
        md = ["", *(f"{line}  " for line in header), "",
              *format_table(rows, markdown=True), "",
              *(f"- {line}" for line in summary),
              "- memory (RSS) and CPU per process:", *(f"  - {line}" for line in memory),
              "- invariants:", *(f"  - {line.replace('OK  ', 'OK')}" for line in invariants),
              ""]
        args.output_md.write_text("\n".join(md), encoding="utf-8")
        print(f"wrote {args.output_md}")


def main() -> None:
    args = parse_args()
    result = measure(args)
    report(args, result)
    if not all(c.ok for c in result.checks):
        sys.exit(1)
    raised = result.healthz.exceptions + result.journey.exceptions
    if raised:
        print("locust users raised (a bug of this script): " + "; ".join(raised))
        sys.exit(2)


def clear_redis(prefix: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=5)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    except Exception as exc:  # noqa: BLE001 - only tidying up after the run
        print(f"(could not clear Redis keys {prefix}*: {exc})")


if __name__ == "__main__":
    main()
