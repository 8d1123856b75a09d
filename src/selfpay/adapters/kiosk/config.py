"""The kiosk agent's configuration file: a JSON document written by `kiosk-agent enroll`.

    {"server": "https://pay.example.cn", "device_id": "k-0001", "secret": "...",
     "printer": "tcp://192.168.1.50:9100", "nut": "kiosk@127.0.0.1:3493",
     "listen_port": 8765, "allowed_origins": [], "data_dir": "", "timezone": "Asia/Shanghai",
     "locale": "zh-CN", "line_chars": 32, "heartbeat_s": 30}

It holds the device's secret, so it is written with mode 0600 (owner only) through a
temporary file renamed over the old one: a crash mid-write never leaves half a file, and
the secret is never readable by others, not even for a moment. JSON rather than TOML:
the standard library writes it, and staff edit it rarely (printer and UPS addresses).

Where it lives, unless --config or SELFPAY_KIOSK_CONFIG says otherwise: the user's
configuration folder (`$XDG_CONFIG_HOME/selfpay/kiosk-agent.json`, by default
`~/.config/selfpay/kiosk-agent.json`; `%APPDATA%\\selfpay\\kiosk-agent.json` on
Windows), or `./kiosk-agent.json` for a user without a home folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selfpay.adapters.kiosk.nut import parse_address as parse_nut_address
from selfpay.domain.devices import HEARTBEAT_S, normalize_device_id
from selfpay.domain.errors import InvalidInput
from selfpay.domain.messages import DEFAULT_LANG, LANGS

FILE_NAME = "kiosk-agent.json"
DEFAULT_PORT = 8765
MIN_PERIOD_S, MAX_PERIOD_S = 5, 600  # a server's heartbeat_s outside this is not taken


class ConfigError(InvalidInput):
    """The file is missing, unreadable or holds a value that cannot work."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    server: str  # the selfpay server's base URL, no trailing slash
    device_id: str
    secret: str = field(repr=False)  # never shown, logged or printed
    printer: str = ""  # "" = none; see adapters/kiosk/printer.py for the forms
    nut: str = ""  # "" = no UPS; "ups@host[:port]"
    listen_port: int = DEFAULT_PORT
    allowed_origins: tuple[str, ...] = ()  # () = the server's origin
    data_dir: str = ""  # its free disk space is reported; "" = the config file's folder
    timezone: str = "Asia/Shanghai"  # times printed on receipts
    locale: str = DEFAULT_LANG  # messages of the command line
    line_chars: int = 32  # characters per printed line: 32 on 58 mm paper, 48 on 80 mm
    heartbeat_s: int = HEARTBEAT_S

    def origins(self) -> list[str]:
        """The web origins whose pages may call the local endpoint (CORS)."""
        return list(self.allowed_origins) or [origin_of(self.server)]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowed_origins"] = list(self.allowed_origins)
        return data


def origin_of(url: str) -> str:
    """'https://pay.example.cn/x' -> 'https://pay.example.cn' (what a browser sends)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def normalize_server(raw: str) -> str:
    """An http(s) base URL without a trailing slash, or ConfigError."""
    text = raw.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ConfigError(key="kiosk.err.server_url", value=raw[:80])
    return text


def default_path() -> Path:
    """Where the file is when no --config names it (module docstring)."""
    base: str | None
    if os.name == "nt":
        base = os.environ.get("APPDATA")
    else:
        base = os.environ.get("XDG_CONFIG_HOME")
        if not base:
            try:
                base = str(Path.home() / ".config")
            except RuntimeError:  # no HOME and no passwd entry (some service accounts)
                base = None
    return Path(base) / "selfpay" / FILE_NAME if base else Path(FILE_NAME)


def data_dir(config: AgentConfig, config_path: Path) -> Path:
    return Path(config.data_dir) if config.data_dir else config_path.resolve().parent


def check(config: AgentConfig) -> AgentConfig:
    """The same config with its values checked and normalised, or ConfigError."""
    try:
        device_id = normalize_device_id(config.device_id)
    except InvalidInput as exc:
        raise ConfigError(key="err.device.id", value=str(config.device_id)[:40]) from exc
    if not config.secret or not config.secret.isascii() or not config.secret.isalnum():
        raise ConfigError(key="kiosk.err.config_value", name="secret", value="***")
    if not 1 <= config.listen_port <= 65535:
        raise ConfigError(key="kiosk.err.config_value", name="listen_port",
                          value=str(config.listen_port))
    if not 16 <= config.line_chars <= 96:
        raise ConfigError(key="kiosk.err.config_value", name="line_chars",
                          value=str(config.line_chars))
    if config.locale not in LANGS:
        raise ConfigError(key="kiosk.err.config_value", name="locale", value=config.locale)
    if config.nut:
        try:
            parse_nut_address(config.nut)
        except ValueError as exc:
            raise ConfigError(key="kiosk.err.nut", value=config.nut[:60]) from exc
    period = min(max(int(config.heartbeat_s), MIN_PERIOD_S), MAX_PERIOD_S)
    return replace(config, server=normalize_server(config.server), device_id=device_id,
                   heartbeat_s=period,
                   allowed_origins=tuple(origin_of(normalize_server(o))
                                         for o in config.allowed_origins))


def load(path: Path) -> AgentConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(key="kiosk.err.config_missing", path=str(path)) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(key="kiosk.err.config_bad", path=str(path),
                          reason=str(exc)[:120]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(key="kiosk.err.config_bad", path=str(path), reason="not an object")
    known = {f.name: f for f in fields(AgentConfig)}
    missing = [n for n in ("server", "device_id", "secret") if not raw.get(n)]
    if missing:
        raise ConfigError(key="kiosk.err.config_bad", path=str(path),
                          reason="missing " + ", ".join(missing))
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            continue  # a newer agent's key: an older agent reads what it knows
        expected = int if name in ("listen_port", "line_chars", "heartbeat_s") else str
        if name == "allowed_origins":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(key="kiosk.err.config_value", name=name, value=str(value)[:40])
            values[name] = tuple(value)
        elif isinstance(value, bool) or not isinstance(value, expected):
            raise ConfigError(key="kiosk.err.config_value", name=name, value=str(value)[:40])
        else:
            values[name] = value
    return check(AgentConfig(**values))


def save(config: AgentConfig, path: Path) -> None:
    """Write atomically with mode 0600 (module docstring). OSError when it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config.as_json(), ensure_ascii=False, indent=2) + "\n"
    # mkstemp creates the file with mode 0600 before anything is written into it
    fd, tmp = tempfile.mkstemp(prefix=".kiosk-agent-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
