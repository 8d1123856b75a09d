"""SMS codes end to end: sealed in the outbox, opened only by the notifier, sent to a real
local HTTP gateway that checks the signed request; retries, refusals, settings, the
demo's terminal phone, and the 0012 migration of rows written in clear."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

from selfpay.adapters.db import migrate
from selfpay.adapters.db import tables as t
from selfpay.adapters.db.engine import make_engine
from selfpay.adapters.notifiers import (
    OutboxNotifier,
    RoutingNotifier,
    SmsNotifier,
    build_notifier,
    message_box,
)
from selfpay.adapters.secretbox import AesGcmBox
from selfpay.adapters.sms import HttpSmsGateway, TerminalSmsGateway
from selfpay.bootstrap import Container, bootstrap
from selfpay.config import SettingsError, load_settings
from selfpay.domain.accounts import Account, Biller
from selfpay.services import lookup, users
from selfpay.services.payments import MESSAGE_MAX_ATTEMPTS, Payments
from selfpay.services.ports import Message, MessageUndeliverable, NotifierError
from support.sms_http import Gateway, serving, sms_gateway
from support.web import staff_login

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

KEY = "gateway-key-0123456789abcdef"
PHONE = "13812345678"
CODE = "246810"
TEXT = "【缴费】您的查询验证码是 {code}，{minutes} 分钟内有效。"
START = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
PASSWORDS = {"admin": "admin-pass-123", "operator": "operator-pass-1",
             "auditor": "auditor-pass-1"}


@dataclass
class Site:
    container: Container
    payments: Payments  # the worker's message loop, on a clock the test moves
    clock: list[dt.datetime]
    gateway: Gateway

    def issue(self, code: str = CODE) -> Message:
        return lookup.issue_code(
            self.container.uow_factory(), phone=PHONE, code=code, text=TEXT,
            secret=self.container.settings.secret_key.get_secret_value().encode(),
            box=self.container.message_box, now=self.clock[0])

    def deliver(self, *, after_s: float = 0) -> int:
        self.clock[0] += dt.timedelta(seconds=after_s)
        return self.payments.deliver_messages(self.container.notifier)

    def row(self) -> Any:
        with self.container.engine.connect() as conn:
            rows = conn.execute(select(t.messages)).all()
        assert len(rows) == 1
        return rows[0]


def make_site(data_dir: Path, gateway: Gateway, url: str, *, database_url: str = "",
              **settings: Any) -> Site:
    s = load_settings(data_dir=data_dir, database_url=database_url, env="development",
                      public_base_url="https://pay.example.cn", sms_gateway="http",
                      sms_url=url, sms_key=KEY, sms_sender="【缴费】", **settings)
    migrate.upgrade(s.sqlalchemy_url)
    container = bootstrap(s)
    clock = [START]
    payments = Payments(uow_factory=container.uow_factory, billing=container.billing,
                        channels={}, notify_base_url=s.public_base_url,
                        clock=lambda: clock[0])
    return Site(container, payments, clock, gateway)


@pytest.fixture
def gateway() -> Iterator[tuple[Gateway, str]]:
    state = Gateway(key=KEY.encode())
    with serving(sms_gateway(state)) as url:
        yield state, url


@pytest.fixture
def site(gateway: tuple[Gateway, str], db_url: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    state, url = gateway
    built = make_site(tmp_path_factory.mktemp("sms"), state, url, database_url=db_url)
    yield built
    built.container.close()


def test_a_code_goes_from_the_look_up_through_the_worker_to_the_gateway_signed(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    message = site.issue()
    queued = site.row()
    assert queued.status == "queued" and queued.sealed
    assert CODE not in repr(tuple(queued))  # not in clear anywhere in the row
    assert "******" in queued.body

    assert site.deliver() == 1

    [request] = site.gateway.received
    assert request.signature_ok
    assert request.doc == {
        "id": f"selfpay-msg-{message.id}-{int(START.timestamp())}", "to": PHONE,
        "text": f"【缴费】您的查询验证码是 {CODE}，5 分钟内有效。", "sender": "【缴费】"}
    sent = site.row()
    assert (sent.status, sent.sealed, sent.error) == ("sent", "", "")
    assert CODE not in repr(tuple(sent))
    assert CODE not in caplog.text and KEY not in caplog.text
    # ... and the code the phone got is the one that opens the accounts
    accounts = lookup.verify_code(
        site.container.uow_factory(), phone=PHONE, code=CODE, now=site.clock[0],
        secret=site.container.settings.secret_key.get_secret_value().encode())
    assert [a.number for a in accounts] == []  # no accounts on this database: still valid


def test_a_bad_key_is_refused_by_the_gateway_and_the_message_stays_queued(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site.gateway.key = b"the-gateway-has-another-key-now"
    site.issue()
    assert site.deliver() == 0
    assert [r.signature_ok for r in site.gateway.received] == [False]
    row = site.row()
    assert (row.status, row.attempts) == ("queued", 1)
    assert "HTTP 401 bad_signature" in row.error and "SELFPAY_SMS_KEY" in row.error
    assert row.sealed  # kept for the next try
    assert site.deliver(after_s=5) == 0 and len(site.gateway.received) == 1  # backing off
    site.gateway.key = KEY.encode()  # the keys agree again
    assert site.deliver(after_s=10) == 1
    assert site.gateway.accepted[0]["text"].count(CODE) == 1
    assert site.row().sealed == ""
    assert CODE not in caplog.text and KEY not in caplog.text


def test_after_the_last_try_the_message_fails_and_its_sealed_code_is_wiped(
    site: Site
) -> None:
    site.gateway.key = b"the-gateway-has-another-key-now"
    site.issue()
    for _ in range(MESSAGE_MAX_ATTEMPTS):
        site.deliver(after_s=3600)
    row = site.row()
    assert (row.status, row.attempts, row.sealed) == ("failed", MESSAGE_MAX_ATTEMPTS, "")
    assert len(site.gateway.received) == MESSAGE_MAX_ATTEMPTS


def test_a_gateway_that_does_not_answer_in_time_is_tried_again(
    gateway: tuple[Gateway, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state, url = gateway
    site = make_site(tmp_path, state, url, sms_timeout_s=0.3)
    try:
        state.delays_s = [1.0]
        site.issue()
        assert site.deliver() == 0
        row = site.row()
        assert row.status == "queued" and "no answer within 0.3 s" in row.error
        assert site.deliver(after_s=10) == 1
        # both tries carry the same id: a gateway that got the first drops the second
        first, second = state.received
        assert first.doc["id"] == second.doc["id"]
        assert site.row().status == "sent"
        assert CODE not in caplog.text
    finally:
        site.container.close()


def test_a_number_the_gateway_refuses_fails_for_good_and_forgets_the_code(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site.gateway.refuse_numbers.add(PHONE)
    site.issue()
    assert site.deliver() == 0
    row = site.row()
    assert (row.status, row.sealed, row.attempts) == ("failed", "", 1)
    assert "refused the number: HTTP 422 invalid_number" in row.error
    assert CODE not in row.error  # the gateway echoed the text: not kept
    assert site.deliver(after_s=3600) == 0 and len(site.gateway.received) == 1
    assert CODE not in caplog.text


def test_a_refused_connection_is_a_retryable_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    gateway = HttpSmsGateway(url=f"http://127.0.0.1:{port}/sms", key=KEY.encode())
    try:
        with pytest.raises(NotifierError) as info:
            gateway.send(PHONE, f"code {CODE}", ref="r1")
    finally:
        gateway.close()
    assert not isinstance(info.value, MessageUndeliverable)
    assert "Connection refused" in str(info.value) and CODE not in str(info.value)


class Phone:
    """An SmsGateway that keeps what it is handed."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, str]] = []

    def send(self, phone: str, text: str, *, ref: str) -> None:
        self.got.append((phone, text, ref))


def test_a_sealed_text_that_does_not_open_fails_for_good() -> None:
    sealed_by_old_key = AesGcmBox.from_secret_key("o" * 40).seal("code 123456", to=PHONE)
    message = Message(id=7, kind="sms_code", to=PHONE, subject="", body="code ******",
                      created_at=START, sealed=sealed_by_old_key)
    phone = Phone()
    with pytest.raises(MessageUndeliverable, match="SELFPAY_SECRET_KEY"):
        SmsNotifier(phone, box=AesGcmBox.from_secret_key("n" * 40)).send(message)
    assert (message.status, message.sealed, phone.got) == ("failed", "", [])


def test_a_token_moved_to_another_phone_does_not_open() -> None:
    box = AesGcmBox.from_secret_key("k" * 40)
    message = Message(id=8, kind="sms_code", to="13900000000", subject="", body="******",
                      created_at=START, sealed=box.seal("code 123456", to=PHONE))
    phone = Phone()
    with pytest.raises(MessageUndeliverable):
        SmsNotifier(phone, box=box).send(message)
    assert phone.got == []


def test_email_goes_by_smtp_and_sms_by_the_gateway(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, env="development", notifier="smtp",
                      sms_gateway="http", sms_url="http://127.0.0.1:9/sms", sms_key=KEY)
    notifier = build_notifier(s)
    try:
        assert isinstance(notifier, RoutingNotifier)
        assert isinstance(notifier.sms, SmsNotifier)
        assert isinstance(notifier.sms.gateway, HttpSmsGateway)
        assert "@" not in PHONE
        default = load_settings(data_dir=tmp_path, env="development")
        assert isinstance(build_notifier(default), OutboxNotifier)
    finally:
        notifier.close()  # type: ignore[attr-defined]


# --- settings: a wrong one stops the start with one line -----------------------------

def settings_error(tmp_path: Path, **values: Any) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(data_dir=tmp_path, env="development", **values)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_the_http_gateway_needs_a_url_and_one_readable_key(tmp_path: Path) -> None:
    assert "SELFPAY_SMS_URL" in settings_error(tmp_path, sms_gateway="http", sms_key=KEY)
    assert "SELFPAY_SMS_URL" in settings_error(tmp_path, sms_gateway="http", sms_key=KEY,
                                               sms_url="ftp://sms.example.cn")
    both = settings_error(tmp_path, sms_gateway="http", sms_url="https://sms.example.cn",
                          sms_key=KEY, sms_key_file=str(tmp_path / "k"))
    assert "one of the two" in both
    missing = tmp_path / "no-such-key"
    unreadable = settings_error(tmp_path, sms_gateway="http", sms_url="https://sms.example.cn",
                                sms_key_file=str(missing))
    assert f"SELFPAY_SMS_KEY_FILE: cannot read {missing}: No such file" in unreadable
    short = settings_error(tmp_path, sms_gateway="http", sms_url="https://sms.example.cn",
                           sms_key="short")
    assert "at least 16 bytes" in short and "short" not in short.replace("at least", "")
    key_file = tmp_path / "sms.key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    s = load_settings(data_dir=tmp_path, env="development", sms_gateway="http",
                      sms_url="https://sms.example.cn", sms_key_file=str(key_file))
    assert s.sms_signing_key() == KEY.encode()
    assert KEY not in repr(s)


def test_production_refuses_the_terminal_and_plain_http_to_another_host(
    tmp_path: Path
) -> None:
    prod = {"env": "production", "secret_key": "p" * 40,
            "qr_keys": "1:" + "A" * 43 + "=", "database_url": f"sqlite:///{tmp_path}/x.db"}
    with pytest.raises(SettingsError, match="not in production"):
        load_settings(data_dir=tmp_path, sms_gateway="terminal", **prod)
    with pytest.raises(SettingsError, match="https:// in production"):
        load_settings(data_dir=tmp_path, sms_gateway="http", sms_key=KEY,
                      sms_url="http://sms.example.cn/send", **prod)
    relay = load_settings(data_dir=tmp_path, sms_gateway="http", sms_key=KEY,
                          sms_url="http://127.0.0.1:9000/send", **prod)
    assert relay.sms_gateway == "http"


def test_the_cli_stops_with_one_line_when_the_gateway_has_no_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selfpay.entrypoints.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SELFPAY_SMS_GATEWAY", "http")
    monkeypatch.setenv("SELFPAY_SMS_KEY", KEY)
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "SELFPAY_SMS_URL" in lines[0], result.output
    assert KEY not in result.output


# --- the demo: its phone is the terminal; staff see codes masked ----------------------

def test_the_demo_prints_the_code_in_its_terminal_and_staff_see_it_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    s = load_settings(data_dir=tmp_path, env="demo", public_base_url="https://pay.example.cn",
                      sms_gateway="terminal")
    migrate.upgrade(s.sqlalchemy_url)
    container = bootstrap(s)
    try:
        with container.uow_factory() as uow:
            uow.billers.add(Biller("ELEC", "电费"))
            uow.accounts.upsert_many([Account("ELEC", "0012345678", "张三丰", PHONE)])
            uow.commit()
        for role, password in PASSWORDS.items():
            users.create_user(container.uow_factory(), container.hasher, username=role,
                              password=password, role=role, now=START)
        from selfpay.entrypoints.web.app import create_app

        app = create_app(container=container)
        TestClient(app).post("/lookup/phone", data={"phone": PHONE})
        capsys.readouterr()
        assert container.payments.deliver_messages(container.notifier) == 1
        printed = capsys.readouterr().out
        assert f"demo SMS] → {PHONE}: " in printed
        code = printed.split("验证码是 ")[1][:6]
        assert code.isdigit() and code not in caplog.text.replace(PHONE, "PHONE")
        for role, password in PASSWORDS.items():
            html = staff_login(app, role, password).get("/admin/messages").text
            assert "验证码是 ******" in html, role
            assert code not in html.replace(PHONE, "PHONE"), role
            assert "打印在运行 selfpay demo 的终端" in html
        r = TestClient(app).post("/lookup/phone/verify", data={"phone": PHONE, "code": code})
        assert r.status_code == 200 and "0012345678" in r.text
    finally:
        container.close()


def test_the_terminal_gateway_writes_to_its_stream_not_the_log(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    TerminalSmsGateway().send(PHONE, "验证码 654321", ref="r")
    assert "654321" in capsys.readouterr().out and "654321" not in caplog.text


# --- the outbox without a gateway, and rows written before 0012 -----------------------

def test_the_outbox_notifier_drops_the_sealed_code(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, env="development")
    migrate.upgrade(s.sqlalchemy_url)
    container = bootstrap(s)
    try:
        lookup.issue_code(container.uow_factory(), phone=PHONE, code=CODE, text=TEXT,
                          secret=b"x" * 32, box=container.message_box, now=START)
        assert container.payments.deliver_messages(container.notifier) == 1
        with container.engine.connect() as conn:
            row = conn.execute(select(t.messages)).one()
        assert (row.status, row.sealed) == ("sent", "")
        assert CODE not in repr(tuple(row))
    finally:
        container.close()


def test_upgrade_0012_masks_codes_stored_in_clear_and_withdraws_queued_ones(
    db_url: str
) -> None:
    migrate.upgrade(db_url, "0011")
    engine = make_engine(db_url)
    rows = [("sms_code", "sent", "【缴费】您的查询验证码是 123456，5 分钟内有效。"),
            ("sms_code", "queued", "[selfpay] Your look-up code is 654321, valid for 5"),
            ("receipt", "sent", "订单 20261101 已缴 ¥50.50")]
    try:
        with engine.begin() as conn:
            for kind, status, body in rows:
                conn.execute(_legacy_insert(kind, status, body))
        migrate.upgrade(db_url)
        with engine.connect() as conn:
            got = conn.execute(select(t.messages.c.kind, t.messages.c.status,
                                      t.messages.c.body, t.messages.c.error,
                                      t.messages.c.sealed).order_by(t.messages.c.id)).all()
    finally:
        engine.dispose()
    assert [(k, s, b) for k, s, b, _, _ in got] == [
        ("sms_code", "sent", "【缴费】您的查询验证码是 ******，5 分钟内有效。"),
        ("sms_code", "failed", "[selfpay] Your look-up code is ******, valid for 5"),
        ("receipt", "sent", "订单 20261101 已缴 ¥50.50"),
    ]
    assert "ask for a new one" in got[1].error and {r.sealed for r in got} == {""}


def _legacy_insert(kind: str, status: str, body: str) -> Any:
    """A messages row as revision 0011 had it (no `sealed` column)."""
    return text("INSERT INTO messages (kind, \"to\", subject, body, attachments, status, "
                "created_at, error, attempts, claim) VALUES (:kind, :to, '', :body, '[]', "
                ":status, :created_at, '', 0, 0)").bindparams(
        kind=kind, to=PHONE, body=body, status=status, created_at=START)


def test_staff_settings_repr_and_notifier_never_show_the_key(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, env="development", sms_gateway="http",
                      sms_url="https://sms.example.cn/send", sms_key=KEY)
    notifier = build_notifier(s)
    try:
        assert KEY not in repr(s) and KEY not in repr(vars(notifier))
        assert KEY not in repr(message_box(s))
    finally:
        notifier.close()  # type: ignore[attr-defined]
