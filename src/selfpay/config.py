"""Settings: environment variables prefixed SELFPAY_, and a `.env` file.

Nothing builds Settings at import time; create_app() and the CLI build one and pass it
down, so a test can build its own.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from selfpay.domain.qrcodes import QrKeyring, code_base

SECRETS_FILE = "secrets.env"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """"10.0.0.1, 10.1.0.0/16, fd00::/8" -> networks (an address is a /32 or /128);
    ValueError names the entry that is neither an address nor a network."""
    networks: list[IPNetwork] = []
    for item in raw.split(","):
        entry = item.strip()
        if not entry:
            continue
        try:
            # strict: "10.0.0.1/8" has host bits set, which is a typo more often than not
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network in CIDR form "
                             f"(e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8): {exc}") from exc
    return tuple(networks)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SELFPAY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["demo", "development", "production"] = "development"
    data_dir: Path = Path("selfpay-data")
    database_url: str = ""  # empty: SQLite file in data_dir
    public_base_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    access_log: bool = True  # uvicorn's per-request log; nginx in front keeps its own
    # /docs and /openapi.json; unset: on outside production, off in production
    api_docs: bool | None = None

    @property
    def api_docs_enabled(self) -> bool:
        return self.api_docs if self.api_docs is not None else self.env != "production"
    locale: Literal["zh-CN", "en"] = "zh-CN"
    timezone: str = "Asia/Shanghai"  # times are stored in UTC and shown in this zone

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r} (e.g. Asia/Shanghai)") from exc
        return v

    # Secrets. Never in the repository: `selfpay demo` (and development) generate them
    # into <data_dir>/secrets.env with mode 0600; production refuses to start without them.
    secret_key: SecretStr = SecretStr("")
    qr_keys: SecretStr = SecretStr("")  # "1:<base64 key>,2:<base64 key>"
    qr_active_key: str = ""  # key id that signs new codes; default: the last in qr_keys

    session_max_age_s: int = Field(default=8 * 3600, ge=60)
    batch_workers: int = Field(default=0, ge=0)  # 0: one per core
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # Spreadsheet uploads (imports, QR batches): a sheet past these is refused unread
    # (adapters/sheet_guard.py says why and what else is capped).
    sheet_max_rows: int = Field(default=1_000_000, ge=10, le=1_048_576)
    sheet_max_columns: int = Field(default=50, ge=5, le=16_384)  # A-AX
    sheet_max_cells: int = Field(default=10_000_000, ge=1000)  # rows x columns of the grid
    sheet_max_unzipped_mb: int = Field(default=1024, ge=1)  # an .xlsx's parts, unpacked

    # --- payments core: channels, order life cycle, background worker -----------------
    enabled_channels: str = "sandbox"  # comma-separated `selfpay.channels` entry points
    order_ttl_s: int = Field(default=1800, ge=60)  # an unpaid order is closed after this
    order_query_after_s: int = Field(default=120, ge=1)  # a silent pending order is queried
    posting_flag_after: int = Field(default=6, ge=1)  # failed postings before "stuck"
    # failed postings before "dead": no longer retried, listed at /admin/dead-letters
    # for staff to replay; work orders that fail as often are marked failed
    posting_dead_after: int = Field(default=20, ge=1)
    work_order_poll_s: int = Field(default=30, ge=1)  # ask billing for news this often
    work_orders_per_account_per_day: int = Field(default=10, ge=1)  # over all browsers
    work_orders_per_ip_per_hour: int = Field(default=3, ge=1)  # per account + address
    # how long a claimed posting is held before another worker may take it: longer than
    # any billing call it guards (checked against the bridge and HTTP billing timeouts)
    posting_lease_s: int = Field(default=60, ge=5, le=3600)
    run_worker: bool = True  # `serve` runs the posting / reconcile / message worker thread
    worker_interval_s: float = Field(default=1.0, gt=0)
    reconcile_interval_s: float = Field(default=15.0, gt=0)  # how often it asks channels

    # --- database pool, per process (docs/scaling.md: the sum over all processes must
    # stay under PostgreSQL's max_connections) -------------------------------------------
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=10.0, gt=0, le=120)

    # --- shared state and request limits (README: rate limits) ---------------------------
    # "" keeps rate-limit counts in this process's memory: only for one process (demo)
    redis_url: str = ""  # redis://host:6379/0, shared by every web process
    redis_prefix: str = "selfpay"  # namespace of our keys in Redis
    # comma-separated IPs / CIDRs of reverse proxies whose X-Forwarded-For is believed
    trusted_proxies: str = ""
    rate_limit_per_minute: int = Field(default=500, ge=0)  # per client and group; 0: off
    history_cache_s: int = Field(default=1800, ge=0)  # the code page's recent payments

    @field_validator("redis_prefix")
    @classmethod
    def _plain_prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v):
            raise ValueError("SELFPAY_REDIS_PREFIX must be 1 to 64 letters, digits or _ . : -")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, v: str) -> str:
        try:
            parse_networks(v)
        except ValueError as exc:
            raise ValueError(f"SELFPAY_TRUSTED_PROXIES: {exc}") from None
        return v

    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    # --- billing routes: one installation, several billing systems (README, deployment) ---
    # Each biller names a route (selfpay billers set CODE --route NAME). "default" is the
    # one above (SELFPAY_BILLING / SELFPAY_TRANSPORT); others are configured here as JSON,
    # name -> {"adapter": "http" | "bridge" | "ledger" | <plug-in>, ...its options}.
    # Secrets are never values here: "token_env" names an environment variable and
    # "token_file" a file that holds them.
    billing_routes: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("billing_routes")
    @classmethod
    def _route_names(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, route in v.items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name) or name == "default":
                raise ValueError(f"SELFPAY_BILLING_ROUTES: bad route name {name!r} (1-32 "
                                 "lower-case letters, digits, _ or -; not 'default')")
            if not isinstance(route, dict) or not route.get("adapter"):
                raise ValueError(f"SELFPAY_BILLING_ROUTES: route {name!r} needs an 'adapter'")
            for key in route:
                if key in ("token", "password", "secret", "api_key", "key"):
                    raise ValueError(f"SELFPAY_BILLING_ROUTES: route {name!r} holds a secret "
                                     f"({key!r}); give it as {key}_env or {key}_file")
        return v

    @property
    def route_names(self) -> list[str]:
        """The billing routes a biller may name: "default" first."""
        return ["default", *sorted(self.billing_routes)]

    @property
    def channel_names(self) -> list[str]:
        return [n.strip() for n in self.enabled_channels.split(",") if n.strip()]

    # --- kiosks ------------------------------------------------------------------------
    # where device alarms go: e-mail addresses and/or phone numbers, comma-separated ('':
    # the console's outbox and the devices page only)
    alert_to: str = ""
    kiosk_idle_s: int = Field(default=60, ge=15, le=600)  # idle before the countdown
    kiosk_countdown_s: int = Field(default=10, ge=3, le=60)  # then back to step 1
    # Spoken prompts (adapters/voice.py, docs/kiosk.md), made by espeak-ng on the server:
    # elderly: in elderly mode only; always: for every customer; off: never.
    voice: Literal["off", "elderly", "always"] = "elderly"
    # espeak-ng voices: for zh-CN cmn (Mandarin) or yue (Cantonese); for the English screen
    voice_name: str = Field(default="cmn", pattern=r"^[A-Za-z][A-Za-z0-9_+-]{0,39}$")
    voice_name_en: str = Field(default="en-us", pattern=r"^[A-Za-z][A-Za-z0-9_+-]{0,39}$")
    voice_speed: int = Field(default=175, ge=80, le=450)  # words per minute
    voice_speed_elderly: int = Field(default=130, ge=80, le=450)  # slower in elderly mode

    @property
    def alert_recipients(self) -> list[str]:
        return [n.strip() for n in self.alert_to.replace("，", ",").split(",") if n.strip()]

    # --- customer pages: notifier, SMTP, SMS look-up, WeChat OAuth ---------------------
    notifier: Literal["outbox", "smtp"] = "outbox"  # outbox: kept for the admin console
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = "selfpay <no-reply@localhost>"
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    sms_code_ttl_s: int = Field(default=300, ge=30)  # a look-up code lives 5 minutes
    sms_max_tries: int = Field(default=5, ge=1)  # wrong codes before it is locked
    sms_resend_s: int = Field(default=60, ge=1)  # at most one code per phone per minute
    # Where SMS go (e-mail follows SELFPAY_NOTIFIER): outbox: nowhere, kept masked for
    # the console; http: the generic HTTP gateway (adapters/sms.py documents its signed
    # request); terminal: printed where the process runs (the demo's phone, not in
    # production).
    sms_gateway: Literal["outbox", "http", "terminal"] = "outbox"
    sms_url: str = ""  # http: the gateway's endpoint, https:// in production
    sms_key: SecretStr = SecretStr("")  # http: HMAC key that signs requests, or ...
    sms_key_file: str = ""  # ... a file that holds it (one of the two)
    sms_sender: str = ""  # sent as "sender": the SMS signature or sender id, e.g. 【缴费】
    # each of connect, send and answer may take this long: 3 x 15 + 5 s stays inside the
    # 60 s for which the worker holds a message
    sms_timeout_s: float = Field(default=10.0, gt=0, le=15)

    @model_validator(mode="after")
    def _sms_gateway_usable(self) -> Settings:
        if self.sms_gateway == "terminal" and self.env == "production":
            raise ValueError("SELFPAY_SMS_GATEWAY=terminal prints SMS codes where the process "
                             "runs: not in production (use http, or outbox)")
        if self.sms_gateway != "http":
            return self
        url = urlsplit(self.sms_url.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("SELFPAY_SMS_GATEWAY=http needs SELFPAY_SMS_URL, the gateway's "
                             "http:// or https:// address")
        if (self.env == "production" and url.scheme == "http"
                and url.hostname not in ("127.0.0.1", "::1", "localhost")):
            raise ValueError("SELFPAY_SMS_URL must be https:// in production (an SMS carries "
                             "its code): plain http only to a relay on this machine")
        if bool(self.sms_key.get_secret_value()) == bool(self.sms_key_file):
            raise ValueError("SELFPAY_SMS_GATEWAY=http needs the gateway's key in "
                             "SELFPAY_SMS_KEY or in the file named by SELFPAY_SMS_KEY_FILE "
                             "(one of the two)")
        self.sms_signing_key()
        return self

    def sms_signing_key(self) -> bytes:
        """The HTTP SMS gateway's HMAC key: SELFPAY_SMS_KEY, or the content of the file
        SELFPAY_SMS_KEY_FILE without surrounding white space, as UTF-8 bytes. ValueError
        names the setting or file, never the key."""
        if self.sms_key_file:
            path = Path(self.sms_key_file).expanduser()
            try:
                key = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(f"SELFPAY_SMS_KEY_FILE: cannot read {path}: {reason}") from None
            where = f"SELFPAY_SMS_KEY_FILE ({path})"
        else:
            key, where = self.sms_key.get_secret_value().strip(), "SELFPAY_SMS_KEY"
        if len(key.encode("utf-8")) < 16:
            raise ValueError(f"{where}: the key must be at least 16 bytes")
        return key.encode("utf-8")
    wechat_oauth: bool = True  # in WeChat, get the payer's openid before JSAPI pay
    payer_cookie_max_age_s: int = Field(default=400 * 24 * 3600, ge=60)  # "my accounts"

    # --- payment channel: WeChat Pay API v3 (adapters/channels/wechatpay.py documents each)
    wechatpay_mchid: str = ""
    wechatpay_appid: str = ""
    wechatpay_api_base_url: str = "https://api.mch.weixin.qq.com"
    wechatpay_merchant_key_file: str = ""  # PEM of the merchant API private key
    wechatpay_merchant_serial: str = ""  # serial of the merchant API certificate
    wechatpay_apiv3_key: SecretStr = SecretStr("")  # 32 characters
    wechatpay_platform_keys: str = ""  # "PUB_KEY_ID_...=wxp_pub.pem,<cert serial>=cert.pem"
    wechatpay_app_secret: SecretStr = SecretStr("")  # official account AppSecret (OAuth)
    wechatpay_oauth_base_url: str = "https://api.weixin.qq.com"
    wechatpay_open_base_url: str = "https://open.weixin.qq.com"
    wechatpay_timeout_s: float = Field(default=10.0, gt=0)

    # --- DMZ/intranet bridge (adapters/bridge; docs/deployment.md) -----------------------
    # none: the web tier calls the billing system in-process (demo, one machine);
    # embedded: request/reply through a table of this database; stomp: through a broker.
    transport: Literal["none", "embedded", "stomp"] = "none"
    broker_kind: Literal["activemq", "rabbitmq"] = "activemq"
    broker_urls: str = ""  # failover list: "stomp+ssl://mq1:61614,stomp+ssl://mq2:61614"
    broker_user: str = ""
    broker_password: SecretStr = SecretStr("")
    broker_vhost: str = ""  # RabbitMQ virtual host (default "/")
    broker_ca_file: str = ""  # CA that signed the broker's certificate (TLS)
    broker_cert_file: str = ""  # client certificate for mutual TLS (PEM)
    broker_key_file: str = ""
    bridge_request_queue: str = "selfpay.bridge.requests"
    bridge_instance_id: str = ""  # names this web instance's reply queue; default: host.random
    bridge_timeout_s: float = Field(default=5.0, gt=0, le=60)  # queries (page waits this long)
    bridge_posting_timeout_s: float = Field(default=15.0, gt=0, le=300)
    bridge_cache_s: int = Field(default=1800, ge=0, le=1800)  # outage fallback, 30 min at most
    bridge_cache_url: str = ""  # "" in-process; redis://127.0.0.1:6379/0 shared
    # with transport=embedded: the web process also runs the agent (`selfpay demo`)
    run_embedded_agent: bool = False
    agent_prefetch: int = Field(default=8, ge=1, le=500)
    agent_workers: int = Field(default=4, ge=1, le=64)
    billing: str = "ledger"  # the agent's adapter: ledger | http | an entry-point plug-in
    billing_http_url: str = ""  # http adapter: base URL of the billing system's JSON API
    billing_http_token: SecretStr = SecretStr("")
    billing_http_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _lease_outlasts_billing_calls(self) -> Settings:
        longest = max(self.bridge_posting_timeout_s, self.billing_http_timeout_s)
        if self.posting_lease_s < longest + 5:
            raise ValueError(
                f"SELFPAY_POSTING_LEASE_S ({self.posting_lease_s}) must outlast the billing "
                f"call it guards: at least {longest + 5:.0f} s (the longest billing timeout, "
                "SELFPAY_BRIDGE_POSTING_TIMEOUT_S or SELFPAY_BILLING_HTTP_TIMEOUT_S, plus 5 s)")
        if self.smtp_timeout_s * 2 + 5 > 60:
            raise ValueError("SELFPAY_SMTP_TIMEOUT_S must stay under 27 s: a message is "
                             "claimed for 60 s, and a send must end within that lease")
        return self

    @field_validator("public_base_url")
    @classmethod
    def _base_url_fits_alphanumeric_qr(cls, v: str) -> str:
        code_base(v)  # raises ValueError with a clear message
        return v.rstrip("/")

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'selfpay.db').as_posix()}"

    @property
    def code_base(self) -> str:
        return code_base(self.public_base_url)

    def keyring(self) -> QrKeyring:
        raw = self.qr_keys.get_secret_value().strip()
        if not raw:
            raise ValueError(
                "SELFPAY_QR_KEYS is not set: give '1:<base64 key of 32 bytes>' "
                "(run `selfpay keys new` to make one)"
            )
        keys: dict[str, bytes] = {}
        for item in raw.split(","):
            kid, sep, b64 = item.strip().partition(":")
            if not sep:
                raise ValueError("SELFPAY_QR_KEYS items must look like '<key id>:<base64 key>'")
            try:
                keys[kid.strip()] = base64.b64decode(b64.strip(), validate=True)
            except binascii.Error as exc:
                raise ValueError(f"QR key {kid!r} is not valid base64") from exc
        active = self.qr_active_key or list(keys)[-1]
        return QrKeyring(keys=keys, active=active)

    def check_production(self) -> None:
        """Refuse to run in production with missing or generated-for-demo secrets."""
        if self.env != "production":
            return
        if len(self.secret_key.get_secret_value()) < 32:
            raise ValueError("SELFPAY_SECRET_KEY must be set to at least 32 characters")
        self.keyring()
        if not self.database_url:
            raise ValueError("SELFPAY_DATABASE_URL must be set in production")
        if self.transport == "stomp" and not (
                (self.broker_user and self.broker_password.get_secret_value())
                or (not self.broker_user and self.broker_cert_file)):
            # without a login, stompman's CONNECT carries none: RabbitMQ would fall back
            # to its default user
            raise ValueError("the broker needs SELFPAY_BROKER_USER and SELFPAY_BROKER_PASSWORD, "
                             "or no user and a client certificate (SELFPAY_BROKER_CERT_FILE)")


def new_qr_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class SettingsError(ValueError):
    """A setting is wrong: the message names it and says what it accepts, one line each."""


def describe(exc: ValidationError) -> str:
    """pydantic's report as one line per wrong setting: 'SELFPAY_ENV='test': Input should
    be 'demo', 'development' or 'production''."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        name = f"SELFPAY_{field.upper()}" if error["loc"] else "settings"
        given = error.get("input")
        shown = "" if isinstance(given, dict) or given is None or field.endswith(
            ("key", "keys", "password", "token", "secret")) else f"={str(given)[:60]!r}"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}{shown}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Build Settings; outside production, fill missing secrets from (or into)
    <data_dir>/secrets.env so that a fresh checkout runs with no set-up. A wrong setting
    raises SettingsError with one line that names it."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    if settings.env == "production":
        settings.check_production()
        return settings
    need_secret = not settings.secret_key.get_secret_value()
    need_keys = not settings.qr_keys.get_secret_value()
    if not (need_secret or need_keys):
        return settings
    path = settings.data_dir / SECRETS_FILE
    stored = _read_env_file(path)
    if "SELFPAY_SECRET_KEY" not in stored or "SELFPAY_QR_KEYS" not in stored:
        stored.setdefault("SELFPAY_SECRET_KEY", secrets.token_urlsafe(48))
        stored.setdefault("SELFPAY_QR_KEYS", f"1:{new_qr_key()}")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# generated by selfpay; keep private, back it up with the database\n")
            fh.writelines(f"{k}={v}\n" for k, v in stored.items())
    update: dict[str, object] = {}
    if need_secret:
        update["secret_key"] = SecretStr(stored["SELFPAY_SECRET_KEY"])
    if need_keys:
        update["qr_keys"] = SecretStr(stored["SELFPAY_QR_KEYS"])
    return settings.model_copy(update=update)


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out
