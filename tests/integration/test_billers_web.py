"""The biller registry in the staff console (/admin/billers), and what a disabled biller
no longer offers: its code pages, orders, look-ups, console selects and imports."""

from __future__ import annotations

import datetime as dt
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from selfpay.bootstrap import Container
from selfpay.domain.accounts import Account, Bill, Biller
from selfpay.entrypoints.web.app import create_app
from selfpay.services import billers as service
from support.web import TestClient, add_staff, build_container, code_path, csrf_of, staff_login

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
PASSWORDS = {"admin": "admin-pass-1", "operator": "operator-pass-1", "auditor": "auditor-pass-1"}
ROUTES = {"water-co": {"adapter": "http", "url": "http://127.0.0.1:9/water"}}  # not called
GOOD = {"code": "gas", "name": "燃气费", "name_en": "Gas", "kind": "gas", "icon": "gas",
        "order": "30", "elderly": "on", "steps": "choose, identify, pay", "route": "water-co"}


class Site:
    def __init__(self, data_dir: Path) -> None:
        self.container: Container = build_container(
            data_dir, billing_routes=ROUTES, enabled_channels="sandbox", run_worker=False,
            accounts=[Account("ELEC", "0012345678", "张三丰", "13812345678"),
                      Account("WATER", "W-001", "王五", "13812345678")],
            bills=[Bill(None, "ELEC", "0012345678", "2026-10", 5050, None),
                   Bill(None, "WATER", "W-001", "2026-10", 3000, None)])
        add_staff(self.container, PASSWORDS, NOW)
        self.app: FastAPI = create_app(container=self.container)

    def login(self, role: str) -> tuple[TestClient, str]:
        client = staff_login(self.app, role, PASSWORDS[role])
        return client, csrf_of(client.get("/admin").text)

    def billers(self) -> list[Biller]:
        with self.container.uow_factory() as uow:
            return uow.billers.list()

    def audit(self, prefix: str = "biller.") -> list[tuple[str, str, str]]:
        with self.container.uow_factory() as uow:
            return [(e.action, e.actor, e.target) for e in uow.audit.list(limit=500).items
                    if e.action.startswith(prefix)]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    built = Site(tmp_path)
    try:
        yield built
    finally:
        built.container.close()


def test_admin_adds_edits_disables_and_enables_a_biller_with_audit(site: Site) -> None:
    admin, token = site.login("admin")
    page = admin.get("/admin/billers")
    assert page.status_code == 200
    assert 'href="/admin/billers"' in page.text  # the nav link
    assert '<option value="water-co"' in page.text  # the routes of the settings

    r = admin.post("/admin/billers", data={**GOOD, "csrf_token": token})
    assert r.status_code == 200 and r.url.path == "/admin/billers"
    assert "已添加业务类型 GAS" in r.text
    gas = next(b for b in site.billers() if b.code == "GAS")
    assert gas == Biller("GAS", "燃气费", "Gas", kind="gas", icon="gas", display_order=30,
                         elderly=True, steps=("choose", "identify", "pay"), route="water-co")
    # display order: GAS (30) before the test billers (100)
    assert [b.code for b in site.billers()][0] == "GAS"

    edit = {**GOOD, "name": "管道燃气", "elderly": "", "steps": "", "route": "default"}
    r = admin.post("/admin/billers/GAS", data={**edit, "csrf_token": token})
    assert r.status_code == 200 and "GAS" in r.text
    gas = next(b for b in site.billers() if b.code == "GAS")
    assert (gas.name, gas.elderly, gas.steps, gas.route) == ("管道燃气", False, (), "default")

    r = admin.post("/admin/billers/GAS/disable", data={"csrf_token": token})
    assert r.status_code == 200 and "已停用" in r.text
    assert not next(b for b in site.billers() if b.code == "GAS").enabled
    r = admin.post("/admin/billers/GAS/enable", data={"csrf_token": token})
    assert next(b for b in site.billers() if b.code == "GAS").enabled
    assert sorted(site.audit()) == sorted([
        ("biller.add", "admin", "GAS"), ("biller.update", "admin", "GAS"),
        ("biller.disable", "admin", "GAS"), ("biller.enable", "admin", "GAS")])


def test_the_page_speaks_english_too(site: Site) -> None:
    admin, _ = site.login("admin")
    page = admin.get("/admin/billers?lang=en")
    assert "Add a biller" in page.text and "Billing route" in page.text


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_only_admins_may_see_or_change_billers(site: Site, role: str) -> None:
    client, token = site.login(role)
    assert 'href="/admin/billers"' not in client.get("/admin").text
    assert client.get("/admin/billers").status_code == 403
    before = site.billers()
    for path, data in (("/admin/billers", GOOD), ("/admin/billers/ELEC", GOOD),
                       ("/admin/billers/ELEC/disable", {})):
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403
    assert site.billers() == before and site.audit() == []


def test_changes_without_the_csrf_token_are_refused(site: Site) -> None:
    admin, _ = site.login("admin")
    before = site.billers()
    for path, data in (("/admin/billers", GOOD), ("/admin/billers/ELEC", GOOD),
                       ("/admin/billers/ELEC/disable", {})):
        assert admin.post(path, data=data).status_code == 403
        assert admin.post(path, data={**data, "csrf_token": "forged"}).status_code == 403
    assert site.billers() == before and site.audit() == []


@pytest.mark.parametrize(("path", "changes", "message"), [
    ("/admin/billers", {"code": "ELEC"}, "业务类型 ELEC 已存在"),
    ("/admin/billers", {"code": "1X"}, "业务代码无效"),
    ("/admin/billers", {"name": " "}, "名称不能为空"),
    ("/admin/billers", {"kind": "heat"}, "业务种类“heat”无效"),
    ("/admin/billers", {"icon": "rocket"}, "图标“rocket”无效"),
    ("/admin/billers", {"order": "ten"}, "显示顺序必须是 0 到 9999 的整数"),
    ("/admin/billers", {"steps": "pay,choose"}, "自助机步骤顺序不对"),
    ("/admin/billers", {"route": "nowhere"}, "计费路由“nowhere”不存在"),
    ("/admin/billers/ELEC", {"name": ""}, "名称不能为空"),
    ("/admin/billers/ELEC", {"order": "-5"}, "显示顺序必须是 0 到 9999 的整数"),
    ("/admin/billers/ELEC", {"steps": "choose,fly,pay"}, "未知的自助机步骤“fly”"),
    ("/admin/billers/ELEC", {"route": "nowhere"}, "计费路由“nowhere”不存在"),
])
def test_bad_input_shows_the_error_and_changes_nothing(
        site: Site, path: str, changes: dict[str, str], message: str) -> None:
    admin, token = site.login("admin")
    before = site.billers()
    r = admin.post(path, data={**GOOD, **changes, "csrf_token": token})
    assert r.status_code == 400
    assert message in r.text and 'id="billers-error"' in r.text
    if "name" not in changes:  # what was typed is kept in the form
        assert 'value="燃气费"' in r.text
    assert site.billers() == before and site.audit() == []


def test_an_unknown_biller_cannot_be_edited_or_disabled(site: Site) -> None:
    admin, token = site.login("admin")
    assert admin.post("/admin/billers/NOPE", data={**GOOD, "csrf_token": token}
                      ).status_code == 404
    assert admin.post("/admin/billers/NOPE/disable", data={"csrf_token": token}
                      ).status_code == 404
    assert site.audit() == []


# --- a disabled biller is offered to no one --------------------------------------------

def disable(site: Site, code: str) -> None:
    service.disable_biller(site.container.uow_factory(), code, actor="admin", now=NOW)


def test_a_disabled_billers_code_page_says_it_is_no_longer_offered(site: Site) -> None:
    client = TestClient(site.app)
    path = code_path(site.container, "ELEC", "0012345678")
    assert client.get(path).status_code == 200
    disable(site, "ELEC")
    r = client.get(path)
    assert r.status_code == 410
    assert "已不在此处提供缴费服务" in r.text and "电费" in r.text
    assert "50.50" not in r.text  # no bills, no pay button
    assert client.get(path + "?lang=en").text.count("not offered here any more") == 1
    # the other biller is untouched
    assert client.get(code_path(site.container, "WATER", "W-001")).status_code == 200


def test_the_api_refuses_orders_and_look_ups_for_a_disabled_biller(site: Site) -> None:
    client = TestClient(site.app)
    body = {"biller": "ELEC", "account": "0012345678", "channel": "sandbox"}
    disable(site, "ELEC")
    r = client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 410
    assert r.json()["code"] == "biller_disabled" and "no longer offered" in r.json()["detail"]
    r = client.get("/api/v1/billers/ELEC/accounts/0012345678")
    assert r.status_code == 410
    with site.container.uow_factory() as uow:
        assert uow.orders.by_idempotency_key("k-1") is None
        assert uow.accounts.get("ELEC", "0012345678") is not None  # the account stays
    service.enable_biller(site.container.uow_factory(), "ELEC", actor="admin", now=NOW)
    r = client.post("/api/v1/orders", json=body, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 201, r.text


def test_look_up_and_console_selects_offer_only_enabled_billers(site: Site) -> None:
    disable(site, "WATER")
    options = re.compile(r'<option value="([A-Z0-9]+)"')
    lookup = TestClient(site.app).get("/lookup").text
    assert "ELEC" in options.findall(lookup) and "WATER" not in options.findall(lookup)
    operator, _ = site.login("operator")
    for path in ("/admin/qr", "/admin/qr/batch"):
        found = options.findall(operator.get(path).text)
        assert "ELEC" in found and "WATER" not in found, path
    r = operator.get("/admin/qr?biller=WATER&account=W-001")
    assert r.status_code == 400
    # the lists still filter by every biller: the history stays
    assert "WATER" in options.findall(operator.get("/admin/accounts").text)
    assert "WATER" in options.findall(operator.get("/admin/orders").text)


def test_imports_refuse_rows_of_a_disabled_biller(site: Site) -> None:
    disable(site, "WATER")
    operator, token = site.login("operator")
    sheet = "biller,account,name\nELEC,0000000001,甲\nWATER,W-002,乙\n".encode()
    r = operator.post("/admin/imports", data={"csrf_token": token, "kind": "accounts"},
                      files={"file": ("a.csv", io.BytesIO(sheet), "text/csv")},
                      follow_redirects=False)
    assert r.status_code == 303  # read and imported off the request, by a job
    job_url = r.headers["location"]
    deadline = time.monotonic() + 30
    while operator.get(job_url + ".json").json()["state"] == "running":
        assert time.monotonic() < deadline, "the import job did not finish"
        time.sleep(0.05)
    r = operator.get(job_url)  # the finished job opens its import run: rejected
    assert r.status_code == 200 and "未导入任何数据" in r.text
    assert "WATER" in r.text and "已停用" in r.text
    with site.container.uow_factory() as uow:
        assert uow.accounts.get("ELEC", "0000000001") is None  # nothing half-imported
