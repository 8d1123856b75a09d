"""Settings: environment variables prefixed SELFPAY_, and a `.env` file.

Nothing builds Settings at import time; create_app() and the CLI build one and pass it
down, so a test can build its own.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from selfpay.domain.qrcodes import QrKeyring, code_base

SECRETS_FILE = "secrets.env"


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


def new_qr_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def load_settings(**overrides: object) -> Settings:
    """Build Settings; outside production, fill missing secrets from (or into)
    <data_dir>/secrets.env so that a fresh checkout runs with no set-up."""
    settings = Settings(**overrides)  # type: ignore[arg-type]
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
