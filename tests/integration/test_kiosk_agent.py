"""`selfpay kiosk-agent` with real parts: a real app served by uvicorn (SQLite and
PostgreSQL), a fake ESC/POS printer on a TCP port that answers DLE EOT, Debian's NUT
(upsd + dummy-ups) for the UPS, sensor plug-ins loaded through entry points."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

import selfpay
from fakes import FakeChannel
from selfpay.adapters.db.migrate import upgrade
from selfpay.adapters.kiosk import nut, probes
from selfpay.adapters.kiosk.agent import KioskAgent
from selfpay.adapters.kiosk.config import AgentConfig
from selfpay.adapters.kiosk.printer import EscposPrinter, decode_status
from selfpay.adapters.kiosk.server import ServerClient
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.devices import AlarmKind, Printer, Ups
from selfpay.entrypoints.cli import app as cli_app
from selfpay.entrypoints.kiosk_local import create_local_app
from selfpay.entrypoints.web.app import create_app
from support import free_port, serve_asgi
from support.escpos_printer import COVER_OPEN, PAPER_LOW, PAPER_OUT, FakeEscposPrinter
from support.nut import NutInstance, NutUnavailable, installed, nut_instance
from support.processes import clean_env, start_selfpay, stop_all, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

BASE = "https://pay.example.cn"
SECRET_KEY = "test-secret-key-for-kiosk-agent-0123456789"
DEVICE = "k-0001"
FS_CHINESE_MODE = b"\x1c&"
QR_STORE = b"\x1d(k"  # GS ( k: the printer's own QR code commands
CUT = b"\x1dV"


@dataclass
class Server:
    container: Container
    app: FastAPI
    url: str
    channel: FakeChannel

    def enrolment_code(self, device_id: str = DEVICE) -> str:
        self.container.devices.register(actor="admin", device_id=device_id, name="一号机",
                                        site="幸福小区", location="东门")
        return self.container.devices.issue_enrolment_code(device_id, actor="admin")

    def secret(self, device_id: str = DEVICE) -> str:
        return self.container.devices.enroll(device_id, self.enrolment_code(device_id))

    def device_readings(self, device_id: str = DEVICE) -> dict[str, object]:
        return dict(self.container.devices.get(device_id).readings)

    def open_alarms(self, device_id: str = DEVICE) -> dict[AlarmKind, bool]:
        """Open alarms by kind: True while their condition lasts, False once cleared."""
        with self.container.uow_factory() as uow:
            return {a.kind: a.cleared_at is None for a in uow.alarms.open(device_id)}


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[Server]:
    """The selfpay app on a real 127.0.0.1 port, its payment channel a fake one."""
    settings = load_settings(data_dir=tmp_path / "server", database_url=db_url,
                             public_base_url=BASE, env="development", secret_key=SECRET_KEY,
                             run_worker=False)
    upgrade(settings.sqlalchemy_url)
    channel = FakeChannel()
    container = bootstrap(settings, channels={"fake": channel})
    app = create_app(container=container)
    try:
        with serve_asgi(app) as url:
            yield Server(container, app, url, channel)
    finally:
        container.close()


@pytest.fixture
def printer() -> Iterator[FakeEscposPrinter]:
    with FakeEscposPrinter() as fake:
        yield fake


class Agents:
    """Builds agents for a test and closes their HTTP clients after it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clients: list[ServerClient] = []

    def __call__(self, server: Server, *, secret: str, printer: str = "",
                 nut_address: str = "", sensors: list[EntryPoint] | None = None,
                 client: ServerClient | None = None) -> KioskAgent:
        config = AgentConfig(server=server.url, device_id=DEVICE, secret=secret,
                             printer=printer, nut=nut_address)
        if client is None:
            client = ServerClient(server.url)
            self.clients.append(client)
        return KioskAgent(config, server=client, data_dir=self.tmp_path,
                          printer=EscposPrinter(printer, timeout_s=0.5) if printer else None,
                          nut_address=nut.parse_address(nut_address) if nut_address else None,
                          sensors=probes.load_sensors(sensors or []))


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Agents]:
    agents = Agents(tmp_path)
    yield agents
    for client in agents.clients:
        client.close()


def wait_for(check, *, within_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + within_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"waiting for {what}: {within_s:g} s passed")
        time.sleep(0.1)


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli_app, ["kiosk-agent", *args], catch_exceptions=False)


# --- enrolment and one heartbeat, through the command line --------------------------------


def test_enrol_then_one_heartbeat_round_reaches_the_real_server(
        server: Server, printer: FakeEscposPrinter, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFPAY_LOCALE", "zh-CN")
    code = server.enrolment_code()
    config = tmp_path / "terminal" / "kiosk-agent.json"
    enrolled = cli("enroll", "--server", server.url + "/", "--device", "K-0001", "--code",
                   code.lower(), "--config", str(config), "--printer", printer.address)
    assert enrolled.exit_code == 0, enrolled.output
    saved = json.loads(config.read_text(encoding="utf-8"))
    assert saved["device_id"] == DEVICE and saved["server"] == server.url
    assert saved["printer"] == printer.address and saved["heartbeat_s"] == 30
    assert len(saved["secret"]) == 64 and saved["secret"] not in enrolled.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "已登记" in enrolled.output and str(config) in enrolled.output
    assert server.device_readings() == {}

    beat = cli("run", "--config", str(config), "--once")

    assert beat.exit_code == 0, beat.output
    assert saved["secret"] not in beat.output
    stored = server.device_readings()
    assert stored["app_version"] == selfpay.__version__ and stored["printer"] == "ok"
    assert isinstance(stored["uptime_s"], int) and stored["uptime_s"] > 0
    assert isinstance(stored["disk_free_pct"], float) and 0 < stored["disk_free_pct"] <= 100
    assert stored["ups"] == "unknown" and stored["temp_c"] is None
    assert server.container.devices.get(DEVICE).last_seen_at is not None
    assert printer.queries == [2, 4]  # the printer's state came from its own answers


def test_a_spent_code_and_a_server_that_is_down_are_one_line_errors_with_status_2(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFPAY_LOCALE", "en")
    code = server.enrolment_code()
    config = tmp_path / "kiosk-agent.json"
    assert cli("enroll", "--server", server.url, "--device", DEVICE, "--code", code,
               "--config", str(config)).exit_code == 0
    config.unlink()

    spent = cli("enroll", "--server", server.url, "--device", DEVICE, "--code", code,
                "--config", str(config))
    down = cli("enroll", "--server", f"http://127.0.0.1:{free_port()}", "--device", DEVICE,
               "--code", code, "--config", str(config))
    missing = cli("run", "--config", str(config), "--once")

    for result, words in ((spent, "the server refused the enrolment"),
                          (down, "cannot reach the server"),
                          (missing, "no config file at")):
        assert result.exit_code == 2
        assert result.output.startswith("error: " + words), result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not config.exists()


def test_the_agent_process_serves_the_kiosk_page_and_stops_on_sigterm(
        server: Server, printer: FakeEscposPrinter, tmp_path: Path) -> None:
    config = tmp_path / "kiosk-agent.json"
    assert cli("enroll", "--server", server.url, "--device", DEVICE, "--code",
               server.enrolment_code(), "--config", str(config), "--printer",
               printer.address).exit_code == 0
    port = free_port()
    agent = start_selfpay("kiosk-agent", ["kiosk-agent", "run", "--port", str(port)],
                          env=clean_env({"SELFPAY_KIOSK_CONFIG": str(config)}), cwd=tmp_path)
    try:
        def status() -> dict[str, object]:
            try:
                return dict(httpx.get(f"http://127.0.0.1:{port}/status", timeout=1).json())
            except httpx.HTTPError:
                return {}

        wait_until(lambda: bool((status().get("heartbeat") or {}).get("ok")),  # type: ignore[union-attr]
                   within_s=20, what="the first heartbeat", procs=[agent])
        assert status()["readings"]["printer"] == "ok"  # type: ignore[index]
        assert server.device_readings()["printer"] == "ok"
        lan = lan_address()
        if lan is not None:
            with pytest.raises(httpx.ConnectError):  # 127.0.0.1 only
                httpx.get(f"http://{lan}:{port}/status", timeout=1)
    finally:
        agent.popen.terminate()
        code = agent.popen.wait(10)
        stop_all([agent])
    # uvicorn shuts down gracefully, then ends by the signal it caught (systemd counts
    # an exit by SIGTERM as a clean stop)
    assert code in (0, -signal.SIGTERM) and "Shutting down" in agent.tail(), agent.tail()
    assert "Traceback" not in agent.tail(200)


def lan_address() -> str | None:
    """This machine's address on its default route, or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: a UDP connect sends no packet
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


# --- heartbeats: retried, and never stopped by a bad reading --------------------------------


def test_a_missed_heartbeat_is_sent_again_next_period_when_the_server_is_back(
        tmp_path: Path, db_url: str, make_agent: Agents) -> None:
    settings = load_settings(data_dir=tmp_path / "server", database_url=db_url,
                             public_base_url=BASE, env="development", secret_key=SECRET_KEY,
                             run_worker=False)
    upgrade(settings.sqlalchemy_url)
    container = bootstrap(settings)
    port = free_port()
    down = Server(container, create_app(container=container), f"http://127.0.0.1:{port}",
                  FakeChannel())
    agent = make_agent(down, secret=down.secret())
    agent.period_s = 0.2  # the server's heartbeat_s (30) replaces it after the first answer
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    try:
        loop.start()
        wait_for(lambda: (agent.status()["heartbeat"] or {}).get("ok") is False, within_s=5,
                 what="a heartbeat that found the server down")
        assert loop.is_alive() and down.device_readings() == {}

        with serve_asgi(down.app, port=port):
            # the server stores the readings a moment before the agent reads its answer
            wait_for(lambda: bool(down.device_readings())
                     and (agent.status()["heartbeat"] or {}).get("ok") is True,
                     within_s=10, what="the next period's heartbeat, taken")
            assert agent.period_s == 30  # the server's config.heartbeat_s
    finally:
        stop.set()
        loop.join(5)
        container.close()
    assert not loop.is_alive()


def test_sensor_plug_ins_report_and_a_broken_or_impossible_one_costs_only_its_reading(
        server: Server, make_agent: Agents) -> None:
    def plugin(name: str, function: str) -> EntryPoint:
        return EntryPoint(name=name, value=f"support.sensors:{function}",
                          group=probes.SENSOR_GROUP)

    secret = server.secret()
    good = make_agent(server, secret=secret,
                      sensors=[plugin("b-cabinet", "read_cabinet"),
                               plugin("a-broken", "read_broken")])
    assert good.beat().ok
    stored = server.device_readings()
    assert stored["temp_c"] == 24.5 and stored["humidity_pct"] == 41.0

    bad = make_agent(server, secret=secret, client=good.server,  # its next timestamp
                     sensors=[plugin("impossible", "read_impossible"),
                              plugin("missing", "no_such_function")])
    outcome = bad.beat()

    assert outcome.ok, outcome.error  # the server refuses 500 °C: it was dropped, not sent
    stored = server.device_readings()
    assert stored["temp_c"] is None and stored["humidity_pct"] == 40.0


def test_cpu_temperature_is_the_hottest_thermal_zone_and_uptime_comes_from_proc(
        tmp_path: Path) -> None:
    for zone, millidegrees in (("thermal_zone0", "41000\n"), ("thermal_zone1", "48500\n"),
                               ("thermal_zone2", "garbage\n")):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "temp").write_text(millidegrees)
    (tmp_path / "uptime").write_text("12345.67 40000.00\n")
    assert probes.cpu_temp_c(tmp_path) == 48.5
    assert probes.cpu_temp_c(tmp_path / "none") is None  # a VM, or Windows
    assert probes.uptime_s(tmp_path / "uptime") == 12345
    assert probes.uptime_s(tmp_path / "none") >= 0  # the monotonic clock instead


def test_a_hand_edited_config_that_cannot_work_is_a_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFPAY_LOCALE", "en")
    config = tmp_path / "kiosk-agent.json"
    good = {"server": "https://pay.example.cn", "device_id": DEVICE, "secret": "ab12" * 16}
    for broken, words in (({**good, "listen_port": "8765"}, "invalid value for listen_port"),
                          ({**good, "nut": "kiosk@host:port"}, "not a UPS address"),
                          ({**good, "server": "pay.example.cn"}, "not a server URL"),
                          ({"server": good["server"]}, "cannot be read")):
        config.write_text(json.dumps(broken))
        result = cli("run", "--config", str(config), "--once")
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert words in result.output and len(result.output.strip().splitlines()) == 1
        assert good["secret"] not in result.output


# --- the receipt printer -----------------------------------------------------------------


@pytest.mark.parametrize(("cause", "paper", "state"), [
    (b"\x12", b"\x12", Printer.OK),
    (b"\x12", bytes([PAPER_LOW]), Printer.PAPER_LOW),
    (b"\x12", bytes([PAPER_OUT]), Printer.PAPER_OUT),
    (b"\x32", b"\x12", Printer.PAPER_OUT),  # stopped at paper end (offline cause, bit 5)
    (bytes([COVER_OPEN]), bytes([PAPER_OUT]), Printer.COVER_OPEN),
    (b"", b"", Printer.OFFLINE),
    (b"\xff", b"\x12", Printer.UNKNOWN),  # not a status byte: fixed bits are wrong
])
def test_the_printer_state_comes_from_the_dle_eot_bits(cause: bytes, paper: bytes,
                                                       state: Printer) -> None:
    assert decode_status(cause, paper) is state


def paid_order(server: Server) -> str:
    client = TestClient(server.app)
    r = client.post("/api/v1/orders", json={"biller": "ELEC", "account": "0012345678",
                                            "channel": "fake"},
                    headers={"Idempotency-Key": "kiosk-1"})
    assert r.status_code in (200, 201), r.text
    order_no = str(r.json()["order_no"])
    headers, body = server.channel.notification(order_no)
    assert client.post("/api/v1/notify/fake", content=body, headers=headers).status_code == 200
    return order_no


def test_a_receipt_is_printed_in_gb18030_with_the_printers_own_qr_code_then_cut(
        server: Server, seeded: object, printer: FakeEscposPrinter,
        make_agent: Agents) -> None:
    order_no = paid_order(server)
    receipt = TestClient(server.app).get(f"/api/v1/orders/{order_no}/receipt").json()
    agent = make_agent(server, secret=server.secret(), printer=printer.address)
    origin = server.url
    with serve_asgi(create_local_app(agent, origins=[origin])) as local:
        r = httpx.post(f"{local}/print", json={"order_no": order_no},
                       headers={"Origin": origin})

    assert r.status_code == 200 and r.json() == {"printed": True, "printer": "ok"}, r.text
    assert r.headers["access-control-allow-origin"] == origin
    wait_for(lambda: CUT in printer.received, within_s=5, what="the cut")
    job = bytes(printer.received)
    assert job.startswith(b"\x10\x04\x02\x10\x04\x04")  # its state first, same connection
    text = job.decode("gb18030")
    assert receipt["masked_name"] == "张*丰" and "户名 Name: 张*丰" in text
    assert "缴费项目 Biller: 电费 Electricity" in text and "0012345678" in text
    assert "2026-09" in text and "￥100.00" in text and "￥50.50" in text
    assert "合计 Total" in text and "￥150.50" in text
    assert "¥150.50" in unicodedata.normalize("NFKC", text)  # the full-width yuan sign
    assert "\u00a5" not in text  # never the 4-byte GB18030 ¥ that GBK fonts lack
    assert order_no in text and receipt["channel_txn_id"] in text
    # Chinese mode is selected before the first Chinese byte; no single-byte code page
    assert job.index(FS_CHINESE_MODE) < job.index("缴费凭证".encode("gb18030"))
    assert b"\x1bt" not in job
    url = receipt["receipt_url"].encode()
    assert url == f"{BASE}/receipt/{order_no}".encode()
    store = QR_STORE + (len(url) + 3).to_bytes(2, "little") + b"1P0" + url
    assert store in job and QR_STORE + b"\x03\x001Q0" in job  # stored, then printed
    assert job.rstrip(b"\x00").endswith(CUT) and job.index(store) < job.rindex(CUT)


def test_out_of_paper_the_receipt_is_not_sent_and_the_page_gets_503_paper_out(
        server: Server, seeded: object, printer: FakeEscposPrinter,
        make_agent: Agents) -> None:
    order_no = paid_order(server)
    agent = make_agent(server, secret=server.secret(), printer=printer.address)
    printer.status[4] = PAPER_OUT
    assert agent.read().printer is Printer.PAPER_OUT  # what the heartbeat reports
    printer.clear()
    origin = server.url
    with serve_asgi(create_local_app(agent, origins=[origin])) as local:
        out = httpx.post(f"{local}/print", json={"order_no": order_no},
                         headers={"Origin": origin, "Accept-Language": "en"})
        status = httpx.get(f"{local}/status").json()
        printer.status[4] = 0x12
        printer.status[2] = COVER_OPEN
        cover = httpx.post(f"{local}/print", json={"order_no": order_no})
        printer.stop()  # switched off
        off = httpx.post(f"{local}/print", json={"order_no": order_no})

    assert out.status_code == 503 and out.json()["code"] == "paper_out"
    assert out.json()["printed"] is False and "out of paper" in out.json()["message"]
    time.sleep(0.2)
    assert bytes(printer.received) == b"\x10\x04\x02\x10\x04\x04" * 2  # two status reads
    assert QR_STORE not in printer.received and order_no.encode() not in printer.received
    assert status["readings"]["printer"] == "paper_out"
    assert cover.status_code == 503 and cover.json()["code"] == "cover_open"
    assert off.status_code == 503 and off.json()["code"] == "printer_offline"
    assert "打印机" in off.json()["message"]  # Chinese unless the page asks for English
    assert agent.beat().ok and server.device_readings()["printer"] == "offline"
    assert server.open_alarms()[AlarmKind.PRINTER_OFFLINE] is True


def test_a_printer_that_does_not_answer_its_status_is_offline(
        printer: FakeEscposPrinter) -> None:
    printer.silent = True
    started = time.monotonic()
    assert EscposPrinter(printer.address, timeout_s=0.3).status() is Printer.OFFLINE
    assert time.monotonic() - started < 3


def test_only_the_servers_pages_may_use_the_local_endpoint(
        server: Server, seeded: object, printer: FakeEscposPrinter,
        make_agent: Agents) -> None:
    order_no = paid_order(server)
    agent = make_agent(server, secret=server.secret(), printer=printer.address)
    origin = server.url
    with serve_asgi(create_local_app(agent, origins=[origin])) as local:
        evil = httpx.post(f"{local}/print", json={"order_no": order_no},
                          headers={"Origin": "https://evil.example"})
        plain = httpx.post(f"{local}/print", content=json.dumps({"order_no": order_no}),
                           headers={"Content-Type": "text/plain", "Origin": origin})
        preflight = httpx.options(f"{local}/print", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
            "Access-Control-Request-Private-Network": "true"})
        evil_preflight = httpx.options(f"{local}/print", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Private-Network": "true"})
        rebound = httpx.post(f"{local}/print", json={"order_no": order_no},
                             headers={"Host": "evil.example"})
        unknown = httpx.post(f"{local}/print", json={"order_no": "SP0000NOSUCHORDER"})
    assert evil.status_code == 403 and evil.json()["code"] == "origin_refused"
    assert plain.status_code == 415
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-private-network"] == "true"
    assert evil_preflight.status_code == 400  # the browser never sends the POST
    assert "access-control-allow-origin" not in evil_preflight.headers
    assert rebound.status_code == 400
    assert unknown.status_code == 404 and unknown.json()["code"] == "order_not_found"
    assert CUT not in printer.received  # nothing was printed


def test_an_unpaid_order_has_no_receipt_to_print(
        server: Server, seeded: object, printer: FakeEscposPrinter,
        make_agent: Agents) -> None:
    r = TestClient(server.app).post("/api/v1/orders", json={
        "biller": "ELEC", "account": "0012345678", "channel": "fake"},
        headers={"Idempotency-Key": "kiosk-unpaid"})
    agent = make_agent(server, secret=server.secret(), printer=printer.address)
    with serve_asgi(create_local_app(agent, origins=[server.url])) as local:
        unpaid = httpx.post(f"{local}/print", json={"order_no": r.json()["order_no"]})
    assert unpaid.status_code == 409 and unpaid.json()["code"] == "not_paid"
    assert printer.connections == 0


# --- the UPS through Debian's Network UPS Tools ----------------------------------------------


@pytest.fixture
def ups() -> Iterator[NutInstance]:
    """A NUT instance of this test's own (scripts/nut.sh); skipped without NUT unless
    SELFPAY_REQUIRE_SERVERS=1, which installs it (as root) or fails."""
    required = os.environ.get("SELFPAY_REQUIRE_SERVERS") == "1"
    if not installed() and not required:
        pytest.skip("Network UPS Tools is not installed (apt-get install nut-server "
                    "nut-client, or scripts/nut.sh install)")
    try:
        with nut_instance() as instance:
            yield instance
    except NutUnavailable as exc:
        if required:
            pytest.fail(f"{exc} (SELFPAY_REQUIRE_SERVERS=1)")
        pytest.skip(str(exc))


def test_ups_states_from_nut_reach_the_server_and_raise_the_ups_alarms(
        server: Server, ups: NutInstance, make_agent: Agents) -> None:
    agent = make_agent(server, secret=server.secret(), nut_address=ups.address)
    assert agent.read().ups is Ups.ONLINE
    assert agent.beat().ok and server.open_alarms() == {}

    ups.set("OB", charge=60)
    wait_for(lambda: agent.read().ups is Ups.ON_BATTERY, within_s=20, what="OB from upsd")
    on_battery = agent.beat()
    assert on_battery.ok and on_battery.raised == ("ups_on_battery",)
    assert server.open_alarms() == {AlarmKind.UPS_ON_BATTERY: True}
    assert server.device_readings()["ups_charge_pct"] == 60.0

    ups.set("OB LB", charge=20)
    wait_for(lambda: agent.read().ups is Ups.LOW_BATTERY, within_s=20, what="OB LB")
    low = agent.beat()
    assert low.ok and low.raised == ("ups_low",) and low.cleared == ("ups_on_battery",)
    assert server.open_alarms() == {AlarmKind.UPS_ON_BATTERY: False, AlarmKind.UPS_LOW: True}
    stored = server.device_readings()
    assert stored["ups"] == "low_battery" and stored["ups_charge_pct"] == 20.0


def test_an_unknown_ups_or_a_silent_upsd_reads_unknown(ups: NutInstance) -> None:
    assert nut.read_ups(nut.parse_address(ups.address)) == (Ups.ONLINE, 100.0)
    assert nut.read_ups(nut.parse_address(f"nosuch@127.0.0.1:{ups.port}")) == (
        Ups.UNKNOWN, None)
    assert nut.read_ups(nut.parse_address(f"kiosk@127.0.0.1:{free_port()}")) == (
        Ups.UNKNOWN, None)
