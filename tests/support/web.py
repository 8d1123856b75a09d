"""What the web test modules share: a container on a fresh SQLite database with the two
test billers, staff users, a code's page path and a staff login through the form."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.adapters.db.migrate import upgrade
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.domain.qrcodes import make_payload
from selfpay.services import users

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it finds only httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

BASE = "https://pay.example.cn"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def build_container(data_dir: Path, *, accounts: Iterable[Account] = (),
                    bills: Iterable[Bill] = (), **settings: object) -> Container:
    """A container on `data_dir` (development settings, code base BASE) whose ledger
    holds the billers ELEC (电费) and WATER (水费), `accounts` and `bills`."""
    s = load_settings(data_dir=data_dir, public_base_url=BASE, env="development", **settings)
    upgrade(s.sqlalchemy_url)
    container = bootstrap(s)
    with container.uow_factory() as uow:
        uow.billers.add(Biller("ELEC", "电费", "Electricity"))
        uow.billers.add(Biller("WATER", "水费", "Water"))
        uow.accounts.upsert_many(list(accounts))
        uow.bills.add_many(list(bills))
        uow.commit()
    return container


def add_staff(container: Container, passwords: Mapping[str, str], now: dt.datetime) -> None:
    """One user per role, named after the role."""
    for role, password in passwords.items():
        users.create_user(container.uow_factory(), container.hasher, username=role,
                          password=password, role=role, now=now)


def code_path(container: Container, biller: str, account: str) -> str:
    """The path a printed code opens: "/Q/ELEC/0012345678/1ABC..."."""
    payload = make_payload(container.code_base, container.keyring, biller, account)
    return "/" + payload.split("/", 3)[3]


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no csrf_token field"
    return match.group(1)


def staff_login(app: FastAPI, username: str, password: str,
                client: TestClient | None = None) -> TestClient:
    """Log in through the form (CSRF token included); the client keeps the session."""
    client = client if client is not None else TestClient(app)
    page = client.get("/admin/login")
    r = client.post("/admin/login", data={"username": username, "password": password,
                                          "csrf_token": csrf_of(page.text)})
    assert r.status_code == 200 and r.url.path == "/admin", r.text
    return client
