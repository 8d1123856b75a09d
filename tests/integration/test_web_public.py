"""The page a scanned code opens: only verified codes, only masked data."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.bootstrap import Container
from selfpay.domain.accounts import Account, Bill
from selfpay.domain.qrcodes import mac_tag
from selfpay.entrypoints.web.app import create_app
from support.web import build_container, code_path

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it finds only httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRETS = ("张三丰", "13812345678", "幸福路")


@dataclass
class Site:
    app: FastAPI
    container: Container

    def path(self, biller: str, account: str) -> str:
        return code_path(self.container, biller, account)

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    container = build_container(
        tmp_path_factory.mktemp("public"),
        accounts=[
            Account("ELEC", "0012345678", "张三丰", "13812345678", "幸福路 1 号"),
            Account("WATER", "W-001", "王五", "", "", balance_fen=500),
        ],
        bills=[
            Bill(None, "ELEC", "0012345678", "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30)),
        ])
    yield Site(create_app(container=container), container)
    container.close()


@pytest.fixture
def client(site: Site) -> TestClient:
    return TestClient(site.app)


def test_a_valid_code_shows_the_masked_holder_and_open_bills(site: Site,
                                                           client: TestClient) -> None:
    r = client.get(site.path("ELEC", "0012345678"))
    assert r.status_code == 200
    assert "张*丰" in r.text
    for secret in SECRETS:
        assert secret not in r.text
    assert "电费" in r.text and "0012345678" in r.text
    assert "2026-09" in r.text and "¥100.00" in r.text and "¥50.50" in r.text
    assert "¥150.50" in r.text  # total due
    assert re.search(r"<button[^>]*id=\"pay-button\"(?![^>]*disabled)", r.text)  # payable
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in r.headers


def test_the_upper_case_path_printed_in_codes_and_the_lower_case_one_both_work(
    site: Site, client: TestClient
) -> None:
    upper = site.path("ELEC", "0012345678")
    assert upper.startswith("/Q/")
    assert client.get(upper).status_code == 200
    assert client.get("/q/" + upper[3:]).status_code == 200


def test_prepaid_balance_is_shown(site: Site, client: TestClient) -> None:
    r = client.get(site.path("WATER", "W-001"))
    assert r.status_code == 200
    assert "王*" in r.text and "王五" not in r.text
    assert "¥5.00" in r.text and "无需缴费" in r.text  # nothing owed: no ¥0.00 to pay
    assert "¥0.00" not in r.text and 'id="pay-button"' not in r.text


@pytest.mark.parametrize("tamper", [
    lambda p: p[:-1] + ("A" if p[-1] != "A" else "B"),  # one MAC character
    lambda p: p.replace("0012345678", "0012345679"),  # another account, same MAC
    lambda p: p.replace("/ELEC/", "/WATER/"),  # another biller
    lambda p: p.rsplit("/", 1)[0] + "/Z" + p.rsplit("/", 1)[1][1:],  # unknown key id
    lambda p: p.rsplit("/", 1)[0] + "/" + p.rsplit("/", 1)[1].lower(),  # case folded
    lambda p: p.rsplit("/", 1)[0] + "/short",
])
def test_a_tampered_code_is_refused_and_shows_no_account_data(
    site: Site, client: TestClient, tamper: object
) -> None:
    assert callable(tamper)
    r = client.get(tamper(site.path("ELEC", "0012345678")))
    assert r.status_code == 400
    assert "无效的二维码" in r.text
    for leak in (*SECRETS, "张*丰", "0012345678", "0012345679", "¥", "2026-09", "电费"):
        assert leak not in r.text


def test_a_valid_code_of_an_unknown_account_gets_a_friendly_404(site: Site,
                                                              client: TestClient) -> None:
    tag = mac_tag(site.container.keyring, "ELEC", "0000000001")
    r = client.get(f"/Q/ELEC/0000000001/{tag}")
    assert r.status_code == 404
    assert "未找到用户" in r.text


def test_the_public_page_speaks_english_on_request(site: Site, client: TestClient) -> None:
    r = client.get(site.path("ELEC", "0012345678") + "?lang=en")
    assert r.status_code == 200
    assert "Amount due" in r.text and "Electricity" in r.text and 'lang="en"' in r.text
    r = client.get("/Q/ELEC/0012345678/1AAAAAAAAAAAAA")
    assert r.status_code == 400 and "Invalid code" in r.text
