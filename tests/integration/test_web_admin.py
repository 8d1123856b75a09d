"""The staff console through the ASGI app: login, roles, CSRF, codes, batches, imports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest
import zxingcpp
from fastapi import FastAPI
from PIL import Image
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.bootstrap import Container
from selfpay.domain.accounts import Account, Bill
from selfpay.domain.qrcodes import make_payload
from selfpay.entrypoints.web.app import create_app
from support.web import add_staff, build_container, csrf_of, staff_login

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient and warns when it finds only httpx.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
PASSWORDS = {"admin": "admin-pass-1", "operator": "operator-pass-1", "auditor": "auditor-pass-1"}


@dataclass
class Site:
    app: FastAPI
    container: Container
    data_dir: Path


def build_site(data_dir: Path, **overrides: object) -> Site:
    container = build_container(
        data_dir,
        accounts=[Account("ELEC", "0012345678", "张三丰", "13812345678", "幸福路 1 号")],
        bills=[
            Bill(None, "ELEC", "0012345678", "2026-09", 10000, dt.date(2026, 10, 31)),
            Bill(None, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30)),
        ],
        **overrides)
    add_staff(container, PASSWORDS, NOW)
    return Site(create_app(container=container), container, data_dir)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    built = build_site(tmp_path_factory.mktemp("web"))
    yield built
    built.container.close()


class Staff(TestClient):
    csrf: str = ""


def login(site: Site, role: str) -> Staff:
    client = staff_login(site.app, role, PASSWORDS[role], client=Staff(site.app))
    client.csrf = csrf_of(client.get("/admin").text)
    return client


def audit_actions(site: Site, action: str) -> list[tuple[str, str, dict[str, object]]]:
    with site.container.uow_factory() as uow:
        return [(e.actor, e.target, e.detail) for e in uow.audit.list(action=action).items]


def decode_png(data: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))
    assert len(found) == 1
    return found[0].text


# --- login, sessions --------------------------------------------------------------------

def test_console_pages_redirect_to_login(site: Site) -> None:
    client = TestClient(site.app)
    for path in ("/admin", "/admin/qr", "/admin/accounts", "/admin/audit", "/admin/users"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/admin/login?next=")
    assert client.get("/admin/qr/batch/jobs/x.json").status_code == 401


def test_health_and_readiness(site: Site) -> None:
    client = TestClient(site.app)
    assert client.get("/healthz").text == "ok"
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs").status_code == 200


def test_wrong_password_is_refused_and_audited(site: Site) -> None:
    client = TestClient(site.app)
    token = csrf_of(client.get("/admin/login").text)
    r = client.post("/admin/login", data={"username": "auditor", "password": "nope-nope",
                                          "csrf_token": token})
    assert r.status_code == 401
    assert "用户名或密码错误" in r.text
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert ("auditor", "", {}) in audit_actions(site, "user.login.failed")
    site.app.state.login_limiter.reset("auditor", "testclient")


def test_login_attempts_are_rate_limited(site: Site) -> None:
    client = TestClient(site.app)
    token = csrf_of(client.get("/admin/login").text)
    codes = [
        client.post("/admin/login", data={"username": "ghost", "password": "wrong-guess",
                                          "csrf_token": token}).status_code
        for _ in range(6)
    ]
    assert codes == [401] * 5 + [429]


def test_login_rotates_the_session_and_logout_ends_it(site: Site) -> None:
    client = TestClient(site.app)
    before = csrf_of(client.get("/admin/login").text)
    client.post("/admin/login", data={"username": "operator", "password": "operator-pass-1",
                                      "csrf_token": before})
    after = csrf_of(client.get("/admin").text)
    assert after != before
    stolen = dict(client.cookies)  # a copy of the signed-in cookie, taken before logout
    r = client.post("/admin/logout", data={"csrf_token": after})
    assert r.url.path == "/admin/login"
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert any(actor == "operator" for actor, _, _ in audit_actions(site, "user.logout"))
    # the server ended the sign-in: the copied cookie no longer works either
    replay = TestClient(site.app, cookies=stolen)
    assert replay.get("/admin", follow_redirects=False).status_code == 303


def test_next_parameter_cannot_leave_the_console(site: Site) -> None:
    client = TestClient(site.app)
    token = csrf_of(client.get("/admin/login").text)
    r = client.post("/admin/login", follow_redirects=False, data={
        "username": "auditor", "password": "auditor-pass-1", "csrf_token": token,
        "next": "//evil.example/admin"})
    assert r.headers["location"] == "/admin"


# --- CSRF ---------------------------------------------------------------------------------

def test_posts_without_csrf_token_are_refused_and_change_nothing(site: Site) -> None:
    admin = login(site, "admin")
    r = admin.post("/admin/users", data={"username": "mallory", "password": "long-enough-1",
                                         "role": "admin"})
    assert r.status_code == 403
    assert "CSRF" in r.text
    r = admin.post("/admin/users", data={"username": "mallory", "password": "long-enough-1",
                                         "role": "admin", "csrf_token": "forged"})
    assert r.status_code == 403
    r = admin.post("/admin/users", headers={"X-CSRF-Token": "forged"},
                   data={"username": "mallory", "password": "long-enough-1", "role": "admin"})
    assert r.status_code == 403
    with site.container.uow_factory() as uow:
        assert uow.users.get("mallory") is None
    assert admin.post("/admin/logout").status_code == 403
    assert admin.get("/admin").status_code == 200  # still signed in
    fresh = TestClient(site.app)
    fresh.get("/admin/login")
    r = fresh.post("/admin/login", data={"username": "admin", "password": "admin-pass-1"})
    assert r.status_code == 403


def test_csrf_header_is_accepted(site: Site) -> None:
    admin = login(site, "admin")
    r = admin.post("/admin/users", headers={"X-CSRF-Token": admin.csrf},
                   data={"username": "via-header", "password": "long-enough-1",
                         "role": "auditor"})
    assert r.status_code == 200 and r.url.path == "/admin/users"


# --- roles --------------------------------------------------------------------------------

def test_auditor_cannot_generate_or_download_codes(site: Site) -> None:
    auditor = login(site, "auditor")
    q = "biller=ELEC&account=0012345678"
    for path in (f"/admin/qr?{q}", f"/admin/qr/preview.png?{q}",
                 f"/admin/qr/download?{q}&format=png", "/admin/qr/template.xlsx",
                 "/admin/qr/batch", "/admin/users"):
        r = auditor.get(path)
        assert r.status_code == 403, path
        assert "image" not in r.headers["content-type"]
    r = auditor.post("/admin/qr/batch", data={"csrf_token": auditor.csrf},
                     files={"file": ("a.csv", b"account,biller\n0012345678,ELEC\n")})
    assert r.status_code == 403
    r = auditor.post("/admin/imports", data={"csrf_token": auditor.csrf, "kind": "accounts"},
                     files={"file": ("a.csv", b"biller,account,name\nELEC,1,X\n")})
    assert r.status_code == 403
    for path in ("/admin", "/admin/accounts", "/admin/bills", "/admin/qr/batches",
                 "/admin/imports", "/admin/audit"):
        assert auditor.get(path).status_code == 200, path
    assert 'href="/admin/qr"' not in auditor.get("/admin").text


def test_operator_cannot_manage_staff_or_read_the_audit_log(site: Site) -> None:
    operator = login(site, "operator")
    assert operator.get("/admin/users").status_code == 403
    assert operator.get("/admin/audit").status_code == 403
    r = operator.post("/admin/users", data={"csrf_token": operator.csrf, "username": "x-user",
                                            "password": "long-enough-1", "role": "admin"})
    assert r.status_code == 403


def test_admin_adds_a_staff_user_and_it_is_audited(site: Site) -> None:
    admin = login(site, "admin")
    r = admin.post("/admin/users", data={"csrf_token": admin.csrf, "username": "Clerk.Two",
                                         "password": "clerk-pass-2", "role": "operator"})
    assert r.status_code == 200
    assert "clerk.two" in r.text
    assert ("admin", "clerk.two", {"role": "operator"}) in audit_actions(site, "user.create")
    r = admin.post("/admin/users", data={"csrf_token": admin.csrf, "username": "short",
                                         "password": "123", "role": "operator"})
    assert r.status_code == 400 and "8" in r.text


# --- single codes -------------------------------------------------------------------------

def test_operator_previews_a_code_with_the_masked_holder(site: Site) -> None:
    operator = login(site, "operator")
    r = operator.get("/admin/qr", params={"biller": "elec", "account": " ００12345678 "})
    assert r.status_code == 200
    payload = make_payload(site.container.code_base, site.container.keyring, "ELEC",
                           "0012345678")
    assert payload in r.text
    assert "张*丰" in r.text and "张三丰" not in r.text
    assert "/admin/qr/preview.png?biller=ELEC&account=0012345678" in r.text
    img = operator.get("/admin/qr/preview.png?biller=ELEC&account=0012345678")
    assert img.headers["content-type"] == "image/png"
    assert decode_png(img.content) == payload


def test_unknown_account_gets_a_warning(site: Site) -> None:
    operator = login(site, "operator")
    r = operator.get("/admin/qr", params={"biller": "ELEC", "account": "77777"})
    assert r.status_code == 200
    assert "账务系统中没有这个用户编号" in r.text


def test_bad_account_input_shows_the_form_with_an_error(site: Site) -> None:
    operator = login(site, "operator")
    before = len(audit_actions(site, "qr.make"))
    r = operator.get("/admin/qr", params={"biller": "ELEC", "account": "12 34!"})
    assert r.status_code == 400
    assert "用户编号无效" in r.text
    assert "preview.png" not in r.text
    r = operator.get("/admin/qr", params={"biller": "NOPE", "account": "123"})
    assert r.status_code == 400 and "NOPE" in r.text
    r = operator.get("/admin/qr/download", params={"biller": "ELEC", "account": "bad/1"})
    assert r.status_code == 400
    assert len(audit_actions(site, "qr.make")) == before


@pytest.mark.parametrize("fmt,media,magic", [
    ("png", "image/png", b"\x89PNG"),
    ("svg", "image/svg+xml", b"<?xml"),
    ("pdf", "application/pdf", b"%PDF"),
])
def test_operator_downloads_a_code_in_each_format(
    site: Site, fmt: str, media: str, magic: bytes
) -> None:
    operator = login(site, "operator")
    r = operator.get("/admin/qr/download", params={"biller": "ELEC", "account": "0012345678",
                                                   "format": fmt})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert r.headers["content-disposition"] == f'attachment; filename="0012345678.{fmt}"'
    assert r.content.startswith(magic)
    if fmt == "png":
        payload = make_payload(site.container.code_base, site.container.keyring, "ELEC",
                               "0012345678")
        assert decode_png(r.content) == payload
    assert ("operator", "ELEC/0012345678",
            {"biller": "ELEC", "account": "0012345678", "format": fmt}) in audit_actions(
        site, "qr.make")


def test_template_download_is_a_valid_workbook(site: Site) -> None:
    operator = login(site, "operator")
    r = operator.get("/admin/qr/template.xlsx")
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    assert wb.worksheets[0].cell(1, 1).value
    assert audit_actions(site, "qr.template")


# --- batches ------------------------------------------------------------------------------

def wait_for_job(client: TestClient, job_url: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(job_url + ".json").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError("batch job did not finish")


def sheet_csv(accounts: list[str], biller: str = "ELEC") -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["用户编号", "业务类型"])
    for a in accounts:
        writer.writerow([a, biller])
    return buf.getvalue().encode("utf-8")


def test_operator_runs_a_batch_and_downloads_the_zip(site: Site) -> None:
    operator = login(site, "operator")
    accounts = [f"00{i:08d}" for i in range(12)]
    r = operator.post("/admin/qr/batch", data={"csrf_token": operator.csrf},
                      files={"file": ("客户.csv", sheet_csv(accounts), "text/csv")})
    assert r.status_code == 200 and "/admin/qr/batch/jobs/" in r.url.path
    job = wait_for_job(operator, r.url.path)
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == 12
    page = operator.get(r.url.path)
    assert str(job["download_url"]) in page.text
    z = operator.get(str(job["download_url"]))
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        pngs = [n for n in zf.namelist() if n.endswith(".png")]
        assert len(pngs) == 12
    history = operator.get("/admin/qr/batches")
    assert "客户.csv" in history.text
    assert audit_actions(site, "qr.batch.download")
    # another operator's job stays private; auditors may list but not download
    other = login(site, "admin")
    assert other.get(r.url.path).status_code == 200  # admins see every job
    auditor = login(site, "auditor")
    assert auditor.get(str(job["download_url"])).status_code == 403
    assert auditor.get(r.url.path + ".json").status_code == 403


def test_a_sheet_with_bad_rows_is_rejected_with_row_errors(site: Site) -> None:
    operator = login(site, "operator")
    with site.container.uow_factory() as uow:
        batches_before = uow.batches.list().total
    r = operator.post("/admin/qr/batch", data={"csrf_token": operator.csrf},
                      files={"file": ("bad.csv", sheet_csv(["0012345678", "bad acct!"]))})
    job = wait_for_job(operator, r.url.path)
    assert job["state"] == "failed"
    errors = job["errors"]
    assert isinstance(errors, list) and errors and errors[0]["row"] == 3
    assert "bad acct!" in operator.get(r.url.path).text or "BAD ACCT" in operator.get(
        r.url.path).text
    with site.container.uow_factory() as uow:
        assert uow.batches.list().total == batches_before


def test_a_job_is_visible_only_to_its_owner(site: Site) -> None:
    operator = login(site, "operator")
    r = operator.post("/admin/qr/batch", data={"csrf_token": operator.csrf},
                      files={"file": ("one.csv", sheet_csv(["0012345678"]))})
    wait_for_job(operator, r.url.path)
    admin = login(site, "admin")
    admin.post("/admin/users", data={"csrf_token": admin.csrf, "username": "op2",
                                     "password": "op2-pass-12", "role": "operator"})
    other = Staff(site.app)
    token = csrf_of(other.get("/admin/login").text)
    other.post("/admin/login", data={"username": "op2", "password": "op2-pass-12",
                                     "csrf_token": token})
    assert other.get(r.url.path).status_code == 404
    assert other.get("/admin/qr/batch/jobs/nope").status_code == 404


def test_a_batch_whose_file_is_gone_gives_404(site: Site) -> None:
    operator = login(site, "operator")
    r = operator.post("/admin/qr/batch", data={"csrf_token": operator.csrf},
                      files={"file": ("gone.csv", sheet_csv(["0012345678"]))})
    job = wait_for_job(operator, r.url.path)
    with site.container.uow_factory() as uow:
        batch = uow.batches.get(int(str(job["batch_id"])))
    assert batch is not None
    (site.data_dir / batch.stored_path).unlink()
    assert operator.get(str(job["download_url"])).status_code == 404


def test_uploads_over_the_limit_are_refused(tmp_path: Path) -> None:
    small = build_site(tmp_path, max_upload_bytes=2048)
    try:
        operator = login(small, "operator")
        big = sheet_csv([f"{i:010d}" for i in range(400)])
        assert len(big) > 2048
        r = operator.post("/admin/qr/batch", data={"csrf_token": operator.csrf},
                          files={"file": ("big.csv", big)})
        assert r.status_code == 413
        assert "2 KB" in r.text
    finally:
        small.container.close()


# --- lists, imports, audit ----------------------------------------------------------------

def test_lists_show_full_names_to_staff_and_filter(site: Site) -> None:
    auditor = login(site, "auditor")
    r = auditor.get("/admin/accounts", params={"q": "张三"})
    assert "张三丰" in r.text and "13812345678" in r.text
    r = auditor.get("/admin/accounts", params={"q": "nobody-like-this"})
    assert "0012345678" not in r.text
    assert "没有符合条件的记录" in r.text and 'class="table"' not in r.text
    r = auditor.get("/admin/bills", params={"biller": "ELEC", "status": "open"})
    assert "¥100.00" in r.text and "¥50.50" in r.text
    dashboard = auditor.get("/admin")
    assert "¥150.50" in dashboard.text and "<svg" in dashboard.text


def test_import_with_bad_rows_shows_errors_and_writes_nothing(site: Site) -> None:
    operator = login(site, "operator")
    with site.container.uow_factory() as uow:
        before = uow.accounts.count()
    bad = ("业务类型,用户编号,户名,电话\n"
           "ELEC,0055500001,赵六,13700000000\n"
           "ELEC,bad number!,钱七,\n"
           "NOPE,0055500003,孙八,\n").encode()
    r = operator.post("/admin/imports", data={"csrf_token": operator.csrf, "kind": "accounts"},
                      files={"file": ("accounts.csv", bad, "text/csv")}, follow_redirects=False)
    assert r.status_code == 303  # read and imported off the request, by a job
    wait_for_job(operator, r.headers["location"])
    r = operator.get(r.headers["location"])  # the finished job opens its import run
    assert "未导入任何数据" in r.text
    assert re.search(r'<td class="num">3</td>', r.text)
    assert re.search(r'<td class="num">4</td>', r.text)
    with site.container.uow_factory() as uow:
        assert uow.accounts.count() == before
        run = uow.imports.list(limit=1).items[0]
    assert run.status == "rejected" and r.url.path == f"/admin/imports/{run.id}"
    r = operator.post("/admin/imports", data={"csrf_token": operator.csrf, "kind": "accounts",
                                              "skip_invalid": "true"},
                      files={"file": ("accounts.csv", bad, "text/csv")}, follow_redirects=False)
    wait_for_job(operator, r.headers["location"])
    r = operator.get(r.headers["location"])
    assert r.status_code == 200
    assert "已导入有效行" in r.text
    with site.container.uow_factory() as uow:
        assert uow.accounts.count() == before + 1


def test_audit_log_filters_by_action(site: Site) -> None:
    admin = login(site, "admin")
    r = admin.get("/admin/audit", params={"action": "user.login"})
    assert r.status_code == 200
    assert 'tag-user" title="user.login">登录</span>' in r.text  # the key stays in the title
    assert "tag-qr" not in r.text


# --- language -----------------------------------------------------------------------------

def test_english_is_a_click_away_and_sticks(site: Site) -> None:
    client = TestClient(site.app)
    zh = client.get("/admin/login")
    assert "员工登录" in zh.text and 'lang="zh-CN"' in zh.text
    en = client.get("/admin/login?lang=en")
    assert "Staff sign-in" in en.text and 'lang="en"' in en.text
    assert "lang=en" in en.headers["set-cookie"]
    assert "Staff sign-in" in client.get("/admin/login").text
    assert "员工登录" in client.get("/admin/login?lang=zh-CN").text


def test_every_state_changing_route_checks_csrf() -> None:
    from fastapi.routing import APIRoute

    from selfpay.entrypoints.web import admin, auth, public
    from selfpay.entrypoints.web.deps import check_csrf

    modules = (admin.audit, admin.batch, admin.dashboard, admin.imports, admin.lists,
               admin.qr, admin.users)
    routers = [auth.router, public.router, *(m.router for m in modules)]
    posts = [r for router in routers for r in router.routes
             if isinstance(r, APIRoute) and (r.methods or set()) - {"GET", "HEAD", "OPTIONS"}]
    assert {r.path for r in posts} >= {"/admin/login", "/admin/logout", "/admin/qr/batch",
                                       "/admin/imports", "/admin/users"}
    for route in posts:
        calls = {d.call for d in route.dependant.dependencies}
        assert check_csrf in calls, route.path


def test_every_page_string_has_both_translations() -> None:
    import json
    from importlib import resources

    zh = json.loads(resources.files("selfpay").joinpath("locales", "zh-CN.json").read_text())
    en = json.loads(resources.files("selfpay").joinpath("locales", "en.json").read_text())
    assert zh.keys() == en.keys()
    templates = Path(__file__).parents[2] / "src/selfpay/entrypoints/web/templates"
    used = {
        key for path in templates.rglob("*.html")
        for key in re.findall(r"(?<![\w.])t\('([a-z_.]+)'\)", path.read_text(encoding="utf-8"))
    }
    assert used - zh.keys() == set()
