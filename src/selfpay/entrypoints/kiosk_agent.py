"""`selfpay kiosk-agent`: the process on each self-service terminal.

    selfpay kiosk-agent enroll --server URL --device ID --code CODE [--config PATH]
    selfpay kiosk-agent run [--config PATH] [--once]

`enroll` trades the one-time code shown in the console for the device's secret and
writes the configuration file (adapters/kiosk/config.py: where, and why 0600). `run`
sends a signed heartbeat with the terminal's readings every period and serves the
kiosk page on 127.0.0.1 (entrypoints/kiosk_local.py). Errors are one line in
SELFPAY_LOCALE (else the config's locale), exit status 2; the secret is never printed.

The terminal needs no database and no server settings: nothing here reads Settings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from selfpay.adapters.kiosk import config as agent_config
from selfpay.adapters.kiosk.config import AgentConfig, ConfigError
from selfpay.domain.errors import DomainError
from selfpay.domain.messages import DEFAULT_LANG, LANGS, translate

if TYPE_CHECKING:
    from selfpay.adapters.kiosk.agent import KioskAgent

FAILED = 2  # exit status of every kiosk-agent error

kiosk_app = typer.Typer(
    help="终端代理：小票打印机、传感器、UPS、心跳 / The terminal's agent: receipt printer, "
         "sensors, UPS, heartbeat.", no_args_is_help=True)

out = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", envvar="SELFPAY_KIOSK_CONFIG", show_default=False,
    help="配置文件 / config file (JSON, mode 0600); default: "
         "~/.config/selfpay/kiosk-agent.json, %APPDATA%\\selfpay\\kiosk-agent.json on "
         "Windows, ./kiosk-agent.json without a home folder")]


def _lang(config: AgentConfig | None = None) -> str:
    """SELFPAY_LOCALE when set, else the config's (written at enrolment), else zh-CN."""
    raw = os.environ.get("SELFPAY_LOCALE", "")
    if raw in LANGS:
        return raw
    return config.locale if config is not None else DEFAULT_LANG


def _fail(lang: str, key: str, /, **values: object) -> typer.Exit:
    """One line on stderr, "错误：..." or "error: ...", exit status 2."""
    prefix = translate(lang, "cli.error")
    err.print(f"[red]{prefix}[/red]{escape(translate(lang, key, **values))}", soft_wrap=True)
    return typer.Exit(FAILED)


def _fail_error(lang: str, exc: DomainError) -> typer.Exit:
    err.print(f"[red]{translate(lang, 'cli.error')}[/red]{escape(exc.localized(lang))}",
              soft_wrap=True)
    return typer.Exit(FAILED)


def _path(config: Path | None) -> Path:
    return config if config is not None else agent_config.default_path()


def _load(config: Path | None) -> tuple[AgentConfig, Path]:
    path = _path(config)
    try:
        return agent_config.load(path), path
    except ConfigError as exc:
        raise _fail_error(_lang(), exc) from exc


@kiosk_app.command("enroll")
def enroll(
    server: Annotated[str, typer.Option(
        help="服务器地址 / the selfpay server, e.g. https://pay.example.cn")],
    device: Annotated[str, typer.Option(help="设备编号 / device id, e.g. k-0001")],
    code: Annotated[str, typer.Option(
        help="控制台显示的一次性登记码 / the one-time code shown in the console")],
    config: ConfigOpt = None,
    printer: Annotated[str, typer.Option(
        help="小票打印机 / receipt printer: tcp://HOST[:9100], usb:VID:PID, "
             "serial:DEVICE@BAUD, file:PATH, win32:NAME; '' for none")] = "",
    nut: Annotated[str, typer.Option(
        help="UPS（NUT）/ the UPS in Network UPS Tools: ups@host[:3493]; '' for none")] = "",
    port: Annotated[int, typer.Option(
        help="本地端口 / local port of the kiosk page's endpoint (127.0.0.1)")] = (
        agent_config.DEFAULT_PORT),
    origin: Annotated[list[str] | None, typer.Option(
        help="允许调用的页面来源 / origin allowed to call it (repeat); default: the "
             "server's")] = None,
    data_dir: Annotated[str, typer.Option(
        help="报告剩余空间的目录 / folder whose free disk space is reported; default: the "
             "config file's")] = "",
    timezone: Annotated[str, typer.Option(help="小票时区 / time zone on receipts")] = (
        "Asia/Shanghai"),
    line_chars: Annotated[int, typer.Option(
        help="每行字符数 / characters per line: 32 (58 mm paper), 48 (80 mm)")] = 32,
) -> None:
    """登记本终端 / Enrol this terminal.

    Trades the one-time code for the device's secret and writes the config file
    (mode 0600). The secret is never printed."""
    from selfpay.adapters.kiosk.printer import PrinterUnavailable, opener
    from selfpay.adapters.kiosk.server import DeviceRefused, ServerClient, ServerUnreachable
    from selfpay.adapters.kiosk.server import ServerError as AnswerError

    lang = _lang()
    path = _path(config)
    draft = AgentConfig(server=server, device_id=device, secret="0", printer=printer.strip(),
                        nut=nut.strip(), listen_port=port, allowed_origins=tuple(origin or ()),
                        data_dir=data_dir, timezone=timezone, locale=lang,
                        line_chars=line_chars)
    try:
        draft = agent_config.check(draft)
    except ConfigError as exc:
        raise _fail_error(lang, exc) from exc
    if draft.printer:
        try:
            opener(draft.printer)
        except PrinterUnavailable as exc:
            raise _fail(lang, "kiosk.err.printer", reason=str(exc)) from exc
    client = ServerClient(draft.server)
    try:
        answer = client.enroll(draft.device_id, code)
    except DeviceRefused as exc:
        raise _fail(lang, "kiosk.err.refused", device=draft.device_id) from exc
    except ServerUnreachable as exc:
        raise _fail(lang, "kiosk.err.unreachable", server=draft.server, reason=str(exc)
                    ) from exc
    except AnswerError as exc:
        raise _fail(lang, "kiosk.err.server", reason=str(exc)) from exc
    finally:
        client.close()
    period = answer.get("heartbeat_s")
    enrolled = replace(draft, secret=str(answer["secret"]),
                       heartbeat_s=period if isinstance(period, int) else draft.heartbeat_s)
    try:
        agent_config.save(agent_config.check(enrolled), path)
    except (OSError, ConfigError) as exc:
        raise _fail(lang, "kiosk.err.config_write", path=str(path), reason=str(exc)) from exc
    out.print(escape(translate(lang, "kiosk.enrolled", device=draft.device_id,
                               path=str(path))), soft_wrap=True)


@kiosk_app.command("run")
def run(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(
        help="本地端口 / local port; default: the config's (8765)")] = None,
    once: Annotated[bool, typer.Option(
        help="只发送一次心跳并退出 / send one heartbeat and exit (a set-up check)")] = False,
) -> None:
    """运行终端代理 / Run the agent.

    A signed heartbeat every period (30 s, or the server's), and the kiosk page's
    endpoint on 127.0.0.1: POST /print, GET /status."""
    from selfpay.adapters.kiosk.agent import KioskAgent

    cfg, path = _load(config)
    lang = _lang(cfg)
    _quiet_logging()
    agent = KioskAgent.from_config(cfg, data_dir=agent_config.data_dir(cfg, path))
    try:
        if once:
            outcome = agent.beat()
            if not outcome.ok:
                raise _fail(lang, "kiosk.err.heartbeat", reason=outcome.error)
            readings = agent.status()["readings"] or {}
            out.print(escape(translate(lang, "kiosk.beat_ok", readings=" ".join(
                f"{k}={v}" for k, v in readings.items()))), soft_wrap=True)
            return
        _serve(agent, port or cfg.listen_port, lang)
    finally:
        agent.server.close()


def _quiet_logging() -> None:
    """INFO for the agent; not a line per request of httpx (two a minute, forever), nor
    python-escpos's, which logs every connection to the root logger."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def not_escpos(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or (
            f"{os.sep}escpos{os.sep}" not in record.pathname)

    for handler in logging.getLogger().handlers:
        handler.addFilter(not_escpos)


def _serve(agent: KioskAgent, port: int, lang: str) -> None:
    """The heartbeat loop in a thread, the local endpoint in this one, until a signal."""
    import uvicorn

    from selfpay.entrypoints.kiosk_local import create_local_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))  # never another interface: the browser is local
    except OSError as exc:
        sock.close()
        raise _fail(lang, "kiosk.err.port_busy", port=port, reason=str(exc)) from exc
    stop = threading.Event()
    beats = threading.Thread(target=agent.run, args=(stop,), name="heartbeat", daemon=True)
    beats.start()
    app = create_local_app(agent, origins=agent.config.origins())
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False,
                                           lifespan="off", ws="none"))
    out.print(escape(translate(lang, "kiosk.running", port=port, period=agent.period_s)))
    try:
        server.run(sockets=[sock])  # returns on SIGINT / SIGTERM
    finally:
        stop.set()
        beats.join(5)
        sock.close()
