"""Look-up without a code: by account number (a redirect to the signed page) and by
phone + SMS code (through the outbox), on the database and through the pages."""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from selfpay.adapters.db import tables as t
from selfpay.adapters.db.uow import SqlAlchemyUnitOfWork
from selfpay.adapters.secretbox import AesGcmBox
from selfpay.bootstrap import Container
from selfpay.domain.accounts import Account, Bill
from selfpay.domain.qrcodes import verify_payload
from selfpay.services import lookup
from selfpay.services.ports import SealBroken
from support.web import build_container, staff_login

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
SECRET = b"s" * 32
BOX = AesGcmBox.from_secret_key("k" * 40)
TEXT = "验证码 {code}，{minutes} 分钟内有效"
CODE_RE = re.compile(r"验证码是 (\d{6})")


# --- the service on SQLite and PostgreSQL ---------------------------------------------

def test_a_code_is_stored_hashed_and_queued_as_an_sms(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], seeded: object
) -> None:
    message = lookup.issue_code(uow_factory(), phone="138 1234 5678", secret=SECRET, box=BOX,
                                now=NOW, text=TEXT, code="246810")
    assert message.kind == "sms_code" and message.to == "13812345678"
    assert message.body == "验证码 ******，5 分钟内有效"
    with uow_factory() as uow:
        stored = uow.sms_codes.get("13812345678")
        queued = uow.messages.list(kind="sms_code").items
        rows = uow.connection.execute(t.messages.select()).all()
    assert stored is not None and "246810" not in stored.code_hash
    assert stored.expires_at == NOW + dt.timedelta(minutes=5)
    assert [m.body for m in queued] == [message.body]
    # nothing in the row gives the code away; only the box opens it, for this phone only
    assert len(rows) == 1 and "246810" not in repr(tuple(rows[0]))
    assert BOX.open(queued[0].sealed, to="13812345678") == "验证码 246810，5 分钟内有效"
    with pytest.raises(SealBroken):
        BOX.open(queued[0].sealed, to="13900000000")
    accounts = lookup.verify_code(uow_factory(), phone="13812345678", code="246810",
                                  secret=SECRET, now=NOW + dt.timedelta(minutes=1))
    assert [(a.biller, a.number) for a in accounts] == [("ELEC", "0012345678")]
    with pytest.raises(lookup.CodeExpired):  # used up
        lookup.verify_code(uow_factory(), phone="13812345678", code="246810",
                           secret=SECRET, now=NOW + dt.timedelta(minutes=1))


def test_wrong_codes_are_counted_and_the_sixth_try_is_locked(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], seeded: object
) -> None:
    lookup.issue_code(uow_factory(), phone="13812345678", secret=SECRET, box=BOX, now=NOW,
                      text=TEXT, code="111111")
    for left in (4, 3, 2, 1, 0):
        with pytest.raises(lookup.CodeWrong) as info:
            lookup.verify_code(uow_factory(), phone="13812345678", code="999999",
                               secret=SECRET, now=NOW)
        assert info.value.tries_left == left
    with pytest.raises(lookup.CodeLocked):
        lookup.verify_code(uow_factory(), phone="13812345678", code="111111",
                           secret=SECRET, now=NOW)
    with uow_factory() as uow:
        stored = uow.sms_codes.get("13812345678")
    assert stored is not None and stored.tries == 5


def test_resend_is_throttled_then_a_new_code_replaces_the_old(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], seeded: object
) -> None:
    lookup.issue_code(uow_factory(), phone="13812345678", secret=SECRET, box=BOX, now=NOW,
                      text=TEXT, code="111111")
    with pytest.raises(lookup.CodeThrottled) as info:
        lookup.issue_code(uow_factory(), phone="13812345678", secret=SECRET, box=BOX,
                          now=NOW + dt.timedelta(seconds=30), text=TEXT)
    assert info.value.retry_after_s == 30
    later = NOW + dt.timedelta(seconds=61)
    lookup.issue_code(uow_factory(), phone="13812345678", secret=SECRET, box=BOX, now=later,
                      text=TEXT, code="222222")
    with pytest.raises(lookup.CodeWrong):
        lookup.verify_code(uow_factory(), phone="13812345678", code="111111",
                           secret=SECRET, now=later)
    assert lookup.verify_code(uow_factory(), phone="13812345678", code="222222",
                              secret=SECRET, now=later)
    with uow_factory() as uow:
        assert len(uow.messages.list(kind="sms_code").items) == 2


def test_a_phone_without_accounts_gets_a_code_and_an_empty_list(
    uow_factory: Callable[[], SqlAlchemyUnitOfWork], seeded: object
) -> None:
    lookup.issue_code(uow_factory(), phone="13700000000", secret=SECRET, box=BOX, now=NOW,
                      text=TEXT, code="333333")
    assert lookup.verify_code(uow_factory(), phone="13700000000", code="333333",
                              secret=SECRET, now=NOW) == []


# --- the pages -------------------------------------------------------------------------

@dataclass
class Site:
    app: FastAPI
    container: Container
    clock: list[dt.datetime]

    def advance(self, **delta: float) -> None:
        self.clock[0] += dt.timedelta(**delta)


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    container = build_container(
        tmp_path_factory.mktemp("lookup"),
        accounts=[
            Account("ELEC", "0012345678", "张三丰", "13812345678", "幸福路 1 号"),
            Account("WATER", "W-001", "张三丰", "13812345678"),
            Account("ELEC", "0099999999", "李四", "13900000000"),
        ],
        bills=[Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)])
    app = create_app_with_clock(container)
    clock = [NOW]
    app.state.clock = lambda: clock[0]
    yield Site(app, container, clock)
    container.close()


def create_app_with_clock(container: Container) -> FastAPI:
    from selfpay.entrypoints.web.app import create_app

    return create_app(container=container)


def last_code(site: Site, phone: str) -> str:
    """The code of the last SMS to `phone`, as its phone would read it: the sealed text of
    the queued message, opened with the site's box (no worker runs here)."""
    with site.container.uow_factory() as uow:
        for message in uow.messages.list(kind="sms_code").items:
            if message.to == phone:
                assert CODE_RE.search(message.body) is None  # masked for staff
                found = CODE_RE.search(site.container.message_box.open(message.sealed,
                                                                       to=phone))
                assert found
                return found.group(1)
    raise AssertionError(f"no SMS to {phone}")


def sms_count(site: Site) -> int:
    with site.container.uow_factory() as uow:
        return uow.messages.list(kind="sms_code").total


def test_lookup_by_account_redirects_to_a_valid_code_url(site: Site) -> None:
    client = TestClient(site.app)
    page = client.get("/lookup")
    assert page.status_code == 200 and "按户号查询" in page.text and "按手机号查询" in page.text
    r = client.get("/lookup/account", params={"biller": "elec", "account": " 0012345678 "},
                   follow_redirects=False)
    assert r.status_code == 303
    location = r.headers["location"]
    ref = verify_payload(site.container.code_base, site.container.keyring,
                         "HTTPS://PAY.EXAMPLE.CN" + location)
    assert (ref.biller, ref.account) == ("ELEC", "0012345678")
    page = client.get(location)
    assert page.status_code == 200 and "张*丰" in page.text and "¥50.50" in page.text
    bad = client.get("/lookup/account", params={"biller": "ELEC", "account": "12 34/5"})
    assert bad.status_code == 400 and "户号只能包含" in bad.text


def test_sms_lookup_lists_only_that_phones_accounts_masked(site: Site) -> None:
    client = TestClient(site.app)
    r = client.post("/lookup/phone", data={"phone": "138-1234-5678"})
    assert r.status_code == 200 and "138****5678" in r.text
    code = last_code(site, "13812345678")
    r = client.post("/lookup/phone/verify", data={"phone": "13812345678", "code": code})
    assert r.status_code == 200
    assert "0012345678" in r.text and "W-001" in r.text
    assert "0099999999" not in r.text and "李" not in r.text
    assert "张*丰" in r.text and "张三丰" not in r.text
    links = re.findall(r'href="(/Q/[^"]+)"', r.text)
    assert len(links) == 2
    assert client.get(links[0]).status_code == 200


def test_sending_a_code_does_not_reveal_whether_a_phone_has_accounts(site: Site) -> None:
    client = TestClient(site.app)
    known = client.post("/lookup/phone", data={"phone": "13812345678"})
    unknown = client.post("/lookup/phone", data={"phone": "13700000000"})
    assert known.status_code == unknown.status_code == 200
    masked = lambda html, phone: html.replace(phone, "PHONE")  # noqa: E731
    assert masked(masked(known.text, "13812345678"), "138****5678") == masked(
        masked(unknown.text, "13700000000"), "137****0000")


def test_wrong_codes_are_counted_and_five_lock_the_code(site: Site) -> None:
    client = TestClient(site.app)
    client.post("/lookup/phone", data={"phone": "13812345678"})
    code = last_code(site, "13812345678")
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1, 0):
        r = client.post("/lookup/phone/verify", data={"phone": "13812345678", "code": wrong})
        assert r.status_code == 400 and f"还可尝试 {left} 次" in r.text
    r = client.post("/lookup/phone/verify", data={"phone": "13812345678", "code": code})
    assert r.status_code == 400 and "错误次数过多" in r.text
    assert "0012345678" not in r.text


def test_a_code_expires_after_five_minutes(site: Site) -> None:
    client = TestClient(site.app)
    client.post("/lookup/phone", data={"phone": "13812345678"})
    code = last_code(site, "13812345678")
    site.advance(minutes=5)
    r = client.post("/lookup/phone/verify", data={"phone": "13812345678", "code": code})
    assert r.status_code == 400 and "已失效" in r.text and "0012345678" not in r.text


def test_resend_is_throttled_for_a_minute(site: Site) -> None:
    client = TestClient(site.app)
    client.post("/lookup/phone", data={"phone": "13812345678"})
    first = last_code(site, "13812345678")
    site.advance(seconds=20)
    r = client.post("/lookup/phone", data={"phone": "13812345678"})
    assert r.status_code == 200 and "40 秒后" in r.text
    assert sms_count(site) == 1
    site.advance(seconds=41)
    client.post("/lookup/phone", data={"phone": "13812345678"})
    assert sms_count(site) == 2
    second = last_code(site, "13812345678")
    r = client.post("/lookup/phone/verify", data={"phone": "13812345678", "code": second})
    assert r.status_code == 200 and "0012345678" in r.text
    if first != second:
        r = client.post("/lookup/phone/verify", data={"phone": "13812345678", "code": first})
        assert r.status_code == 400


def test_bad_phone_numbers_are_refused_before_any_sms(site: Site) -> None:
    client = TestClient(site.app)
    r = client.post("/lookup/phone", data={"phone": "12345"})
    assert r.status_code == 400 and "11 位手机号码" in r.text
    assert sms_count(site) == 0


def test_one_address_may_not_spray_codes_at_many_phones(site: Site) -> None:
    client = TestClient(site.app)
    for i in range(10):
        assert client.post("/lookup/phone", data={"phone": f"1370000{i:04d}"}).status_code == 200
    r = client.post("/lookup/phone", data={"phone": "13700009999"})
    assert r.status_code == 429
    assert sms_count(site) == 10


def test_no_staff_role_sees_the_sms_code_in_the_outbox(site: Site) -> None:
    from selfpay.services import users

    client = TestClient(site.app)
    client.post("/lookup/phone", data={"phone": "13812345678"})
    code = last_code(site, "13812345678")
    for role in ("admin", "operator", "auditor"):
        users.create_user(site.container.uow_factory(), site.container.hasher,
                          username=role, password=f"{role}-pass-12", role=role, now=NOW)
        staff = staff_login(site.app, role, f"{role}-pass-12")
        html = staff.get("/admin/messages").text
        assert "13812345678" in html and "验证码是 ******" in html, role
        assert code not in html.replace("13812345678", "PHONE"), role
        # with SELFPAY_SMS_GATEWAY=outbox (this site) the page says no code goes out
        assert "不会送到任何手机" in html
