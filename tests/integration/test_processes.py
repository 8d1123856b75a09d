"""The processes a deployment runs: `selfpay serve --workers N` (several web processes on
one port, a dead one replaced) and `selfpay worker` (the loops without a web tier)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.services.payments import CreateOrder
from support import free_port

SELFPAY = [sys.executable, "-m", "selfpay.entrypoints.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFPAY_")}
    env.update({"SELFPAY_DATA_DIR": str(tmp_path / "data"), "SELFPAY_ENV": "development",
                "SELFPAY_PUBLIC_BASE_URL": "http://127.0.0.1:8000"}, **extra)
    return env


def _children(pid: int) -> set[int]:
    """The web processes under uvicorn's supervisor (multiprocessing's spawn children;
    not its resource tracker)."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return {int(line.split()[0]) for line in out.splitlines() if "spawn_main" in line}


def _wait(predicate, timeout: float = 30.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_serve_runs_several_web_processes_and_replaces_one_that_dies(tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*SELFPAY, "serve", "--workers", "2", "--port", str(port)],
                            env=_env(tmp_path, SELFPAY_RUN_WORKER="false"),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait(lambda: _healthy(port) and len(_children(proc.pid)) >= 2, 60), \
            "serve --workers 2 did not come up"
        web = _children(proc.pid)
        assert len(web) == 2
        victim = max(web)
        os.kill(victim, signal.SIGKILL)
        assert _wait(lambda: victim not in _children(proc.pid)
                     and len(_children(proc.pid)) == 2, 30), "the dead one was not replaced"
        assert _wait(lambda: _healthy(port), 30)
        for _ in range(20):  # and every answer comes from a live process
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
    assert _wait(lambda: not _healthy(port), 10)


def test_worker_posts_paid_orders_and_sends_their_receipts_without_a_web_tier(
        tmp_path: Path) -> None:
    env = _env(tmp_path, SELFPAY_RUN_WORKER="false")
    settings = load_settings(data_dir=tmp_path / "data", env="development",
                             public_base_url="http://127.0.0.1:8000")
    upgrade(settings.sqlalchemy_url)
    c = bootstrap(settings)
    try:
        with c.uow_factory() as uow:
            uow.billers.add(Biller("ELEC", "电费", "Electricity"))
            uow.accounts.upsert_many([Account("ELEC", "0012345678", "张三丰", "")])
            uow.bills.add_many([Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)])
            uow.commit()
        view = c.payments.create_order(CreateOrder(
            idempotency_key="k", biller="ELEC", account="0012345678", channel="sandbox",
            email="a@example.cn"))
        c.channels["sandbox"].pay(view.order_no, "success")  # type: ignore[attr-defined]
        # the sandbox's delivery would reach a web tier; hand the notification over here
        c.channels["sandbox"]._http = _AppTransportless(c)  # type: ignore[attr-defined]
        assert c.channels["sandbox"].deliver_due() == 1  # type: ignore[attr-defined]
        assert c.payments.get(view.order_no).status == "paid"
    finally:
        c.close()

    result = subprocess.run([*SELFPAY, "worker", "--once"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "posted=1" in result.stdout and "messages=1" in result.stdout

    c = bootstrap(settings)
    try:
        assert c.payments.get(view.order_no).status == "posted"
        with c.uow_factory() as uow:
            [receipt] = uow.messages.list(kind="receipt").items
        assert receipt.status == "sent" and receipt.to == "a@example.cn"
    finally:
        c.close()


class _AppTransportless:
    """An httpx-like client that hands the sandbox's notification straight to the
    payments service, as the web tier's notify route would."""

    def __init__(self, container) -> None:  # noqa: ANN001
        self._c = container

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> httpx.Response:
        answer = self._c.payments.handle_notification("sandbox", headers, content)
        return httpx.Response(answer.status_code, content=answer.body)

    def close(self) -> None:
        pass
