"""The staff console and the command line in one language at a time: errors told from the
catalog, an audit log that reads as text, overdue bills marked."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from selfpay.bootstrap import Container
from selfpay.domain.accounts import Account, Bill
from selfpay.entrypoints.cli import app as cli
from selfpay.entrypoints.web.app import create_app
from selfpay.services import audit
from support.web import BASE, TestClient, add_staff, build_container, csrf_of, staff_login

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)  # 16:00 in Shanghai
PASSWORDS = {"admin": "admin-pass-1", "operator": "operator-pass-1"}
CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass
class Site:
    app: FastAPI
    container: Container


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    container = build_container(
        tmp_path_factory.mktemp("console"),
        accounts=[Account("ELEC", "0012345678", "张三丰", "13812345678")],
        bills=[Bill(None, "ELEC", "0012345678", "2026-09", 10000, dt.date(2026, 10, 31)),
               Bill(None, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30))])
    add_staff(container, PASSWORDS, NOW)
    with container.uow_factory() as uow:
        audit.record(uow, actor="operator", action="qr.batch", target="batch:7",
                     detail={"source": "accounts.xlsx", "count": 2, "sha256": "ab" * 32,
                             "skipped_rows": 0, "billers": ["ELEC", "GAS"]}, now=NOW)
        audit.record(uow, actor="operator", action="qr.batch.download", target="batch:7",
                     detail={"sha256": "ab" * 32}, now=NOW)
        audit.record(uow, actor="admin", action="biller.update", target="ELEC",
                     detail={"steps": {"old": [], "new": ["choose", "pay"]}}, now=NOW)
        uow.commit()
    app = create_app(container=container)
    app.state.clock = lambda: NOW
    yield Site(app, container)
    container.close()


def login(site: Site, role: str) -> TestClient:
    return staff_login(site.app, role, PASSWORDS[role])


def shown(html: str) -> str:
    """The page's text as read: no tags and no attribute values (titles keep the keys)."""
    return unescape(re.sub(r"<[^>]+>", " ", html))


def error_box(html: str) -> str:
    found = re.search(r'class="flash flash-error"[^>]*>(.*?)</div>', html, flags=re.S)
    assert found, "no error on the page"
    return unescape(found.group(1)).strip()


def test_a_bad_account_number_is_told_in_the_pages_language_only(site: Site) -> None:
    operator = login(site, "operator")
    r = operator.get("/admin/qr", params={"biller": "ELEC", "account": "12 34!"})
    assert r.status_code == 400
    zh = error_box(r.text)
    assert zh.startswith("用户编号无效（12 34!）") and not re.search(r"[a-z]{3,}", zh)
    r = operator.get("/admin/qr", params={"biller": "ELEC", "account": "12 34!", "lang": "en"})
    en = error_box(r.text)
    assert en.startswith("Invalid account number '12 34!'") and not CJK.search(en)
    r = operator.get("/admin/qr", params={"biller": "NOPE", "account": "1"})
    assert error_box(r.text) == "There is no biller NOPE."  # the cookie kept English


def test_biller_and_staff_forms_tell_errors_in_one_language(site: Site) -> None:
    admin = login(site, "admin")
    token = csrf_of(admin.get("/admin/billers").text)
    form = {"code": "GAS", "name": "燃气费", "name_en": "", "kind": "heat", "icon": "",
            "order": "10", "elderly": "", "steps": "", "route": "default", "csrf_token": token}
    r = admin.post("/admin/billers", data=form)
    assert r.status_code == 400
    assert "业务种类“heat”无效，可选：electricity、water" in r.text
    assert "unknown kind" not in r.text.lower()
    r = admin.post("/admin/billers?lang=en", data=form)
    assert "Unknown kind &#39;heat&#39;; one of: electricity, water" in r.text
    token = csrf_of(admin.get("/admin/users?lang=zh-CN").text)
    r = admin.post("/admin/users", data={"username": "new.one", "password": "short",
                                         "role": "operator", "csrf_token": token})
    assert r.status_code == 400 and "密码须为 8 到 1024 个字符。" in r.text
    assert "password must" not in r.text.lower()


def test_the_audit_log_reads_as_text_in_the_pages_language(site: Site) -> None:
    admin = login(site, "admin")
    page = shown(admin.get("/admin/audit?lang=zh-CN").text)
    for raw in ("qr.batch.download", "['ELEC', 'GAS']", "skipped_rows", "biller.update",
                "{'old'"):
        assert raw not in page
    assert "下载二维码批次" in page and "批量生成二维码" in page and "修改业务类型" in page
    assert "ELEC、GAS" in page and "（空） → choose、pay" in page and "源文件" in page
    en = shown(admin.get("/admin/audit?lang=en").text)
    assert "Downloaded a QR batch" in en and "ELEC, GAS" in en and "Rows skipped" in en
    # the filter lists words, and still filters by the stored key
    html = admin.get("/admin/audit?lang=zh-CN").text
    assert '<option value="qr.batch.download" >下载二维码批次</option>' in html
    only = shown(admin.get("/admin/audit", params={"action": "qr.batch.download"}).text)
    assert "共 1 条" in only and "abababababab…" in only


def test_the_bills_list_marks_open_bills_past_their_due_date(site: Site) -> None:
    operator = login(site, "operator")
    html = operator.get("/admin/bills?lang=zh-CN").text
    rows = {m.group(1): m.group(0) for m in
            re.finditer(r"<tr>\s*<td>ELEC</td>.*?<td>(2026-\d\d)</td>.*?</tr>", html, re.S)}
    assert set(rows) == {"2026-09", "2026-10"}
    assert "已逾期" in rows["2026-09"] and "逾期 1 天" in rows["2026-09"]
    assert "已逾期" not in rows["2026-10"]
    assert "Overdue" in operator.get("/admin/bills?lang=en").text


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for k, v in {"SELFPAY_DATA_DIR": str(tmp_path / "data"), "SELFPAY_PUBLIC_BASE_URL": BASE,
                 "SELFPAY_DATABASE_URL": ""}.items():
        monkeypatch.setenv(k, v)
    return tmp_path


def test_the_command_line_speaks_the_configured_locale(cli_env: Path,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    runner = CliRunner()
    zh = runner.invoke(cli, ["billers", "add", "9X", "--name", "x"], catch_exceptions=False)
    assert zh.exit_code == 1
    assert zh.output.startswith("错误：业务代码无效（9X）") and "error" not in zh.output.lower()
    monkeypatch.setenv("SELFPAY_LOCALE", "en")
    en = runner.invoke(cli, ["billers", "add", "9X", "--name", "x"], catch_exceptions=False)
    assert en.exit_code == 1
    assert en.output.startswith("error: Invalid biller code '9X'") and not CJK.search(en.output)
    bad = runner.invoke(cli, ["qr", "verify", f"{BASE.upper()}/Q/ELEC/1/ZAAAAAAAAAAAAA"],
                        catch_exceptions=False)
    assert bad.exit_code == 1 and "Invalid code: Unknown or retired key id Z." in bad.output
