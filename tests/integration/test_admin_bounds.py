"""Page numbers and ids far past the end: every admin list shows its last page, every
detail page a 404; nothing answers 500 (SQLite and PostgreSQL, whose INTEGER keys and
OFFSETs overflow on such numbers)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from selfpay.domain.accounts import Account, Bill
from selfpay.entrypoints.web.app import create_app
from support.web import add_staff, build_container, staff_login

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
HUGE = "999999999999999999999"
LISTS = ["/admin/accounts", "/admin/bills", "/admin/orders", "/admin/audit", "/admin/messages",
         "/admin/dead-letters", "/admin/work-orders", "/admin/qr/batches", "/admin/imports"]
DETAILS = [f"/admin/imports/{HUGE}", f"/admin/qr/batches/{HUGE}/download",
           "/admin/imports/2147483648", "/admin/imports/0"]


@pytest.fixture
def admin(db_url: str, tmp_path: Path):  # noqa: ANN201
    container = build_container(
        tmp_path, database_url=db_url, run_worker=False,
        accounts=[Account("ELEC", f"00{i:08d}", "张三丰", "") for i in range(60)],
        bills=[Bill(None, "ELEC", f"00{i:08d}", "2026-10", 100, None) for i in range(60)])
    add_staff(container, {"admin": "admin-pass-1"}, NOW)
    try:
        yield staff_login(create_app(container=container), "admin", "admin-pass-1")
    finally:
        container.close()


def test_a_page_far_past_the_end_shows_the_last_page(admin) -> None:  # noqa: ANN001
    for path in LISTS:
        r = admin.get(f"{path}?page={HUGE}")
        assert r.status_code == 200, (path, r.status_code)
    last = admin.get(f"/admin/accounts?page={HUGE}")
    assert "0000000059" in last.text  # 60 accounts, 50 a page: the last page has the 60th
    assert admin.get("/admin/accounts?page=-5").status_code == 200


def test_an_id_far_past_the_end_is_not_found(admin) -> None:  # noqa: ANN001
    for path in DETAILS:
        assert admin.get(path).status_code == 404, path
