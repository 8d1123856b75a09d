"""Notifiers against a real SMTP server (aiosmtpd on a free local port): plain, STARTTLS
with login, the receipt PDF as an attachment, and failures as NotifierError."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd is in the test extras")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402

from selfpay.adapters.notifiers import (  # noqa: E402
    OutboxNotifier,
    ReceiptPdfAttacher,
    RoutingNotifier,
    SmtpNotifier,
    build_notifier,
)
from selfpay.config import load_settings  # noqa: E402
from selfpay.services.ports import Message, NotifierError  # noqa: E402

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
PDF = b"%PDF-1.4 receipt\n%%EOF\n"


@dataclass
class Inbox:
    """aiosmtpd handler: keeps every message it is given."""

    received: list[tuple[list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.received.append((list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def receipt(to: str = "payer@example.cn") -> Message:
    return Message(
        id=7, kind="receipt", to=to, subject="缴费凭证 电费 0012345678 ¥150.50",
        body="您的缴费已成功入账。\n订单号：SP20261101ABCDEFGHJKLMNPQR", created_at=NOW,
        attachments=[("receipt-SP20261101ABCDEFGHJKLMNPQR.pdf", "application/pdf", PDF)],
    )


def test_smtp_delivers_the_receipt_with_its_pdf(smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    notifier = SmtpNotifier(host="127.0.0.1", port=port, security="none",
                            sender="selfpay <no-reply@pay.example.cn>", timeout_s=5,
                            clock=lambda: NOW)
    message = receipt()
    notifier.send(message)
    assert message.status == "sent" and message.sent_at == NOW
    assert len(inbox.received) == 1
    rcpt, mail = inbox.received[0]
    assert rcpt == ["payer@example.cn"]
    assert mail["Subject"] == "缴费凭证 电费 0012345678 ¥150.50"
    assert mail["From"] == "selfpay <no-reply@pay.example.cn>"
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None and "订单号：SP20261101ABCDEFGHJKLMNPQR" in body.get_content()
    attachments = list(mail.iter_attachments())
    assert [a.get_filename() for a in attachments] == [
        "receipt-SP20261101ABCDEFGHJKLMNPQR.pdf"]
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == PDF


def test_smtp_starttls_with_login(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = (auth_data.login, auth_data.password) == (b"selfpay", b"s3cret")
        return AuthResult(success=ok)

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=server_tls,
                            require_starttls=True, authenticator=authenticator,
                            auth_require_tls=True, server_hostname="localhost")
    controller.start()
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        client_tls.check_hostname = False  # the server listens on 127.0.0.1
        good = SmtpNotifier(host="127.0.0.1", port=port, security="starttls",
                            username="selfpay", password="s3cret", sender="a@pay.example.cn",
                            ssl_context=client_tls, timeout_s=5)
        good.send(receipt())
        assert len(inbox.received) == 1 and logins == [("selfpay", "s3cret")]

        bad = SmtpNotifier(host="127.0.0.1", port=port, security="starttls",
                           username="selfpay", password="wrong", sender="a@pay.example.cn",
                           ssl_context=client_tls, timeout_s=2)
        with pytest.raises(NotifierError):
            bad.send(receipt())
        untrusting = SmtpNotifier(host="127.0.0.1", port=port, security="starttls",
                                  sender="a@pay.example.cn", timeout_s=5)
        with pytest.raises(NotifierError, match="SSL"):
            untrusting.send(receipt())  # a certificate nobody vouches for is refused
        assert len(inbox.received) == 1
    finally:
        controller.stop()


def test_smtp_server_down_is_a_notifier_error() -> None:
    notifier = SmtpNotifier(host="127.0.0.1", port=free_port(), security="none",
                            sender="a@pay.example.cn", timeout_s=2)
    message = receipt()
    with pytest.raises(NotifierError, match="127.0.0.1"):
        notifier.send(message)
    assert message.status == "queued" and message.sent_at is None


def test_smtp_over_ssl_to_a_plain_server_is_a_notifier_error(
    smtp_server: tuple[Inbox, int]
) -> None:
    _, port = smtp_server
    notifier = SmtpNotifier(host="127.0.0.1", port=port, security="ssl",
                            sender="a@pay.example.cn", timeout_s=2)
    with pytest.raises(NotifierError):
        notifier.send(receipt())


def test_smtp_refuses_a_phone_number_as_address() -> None:
    notifier = SmtpNotifier(host="127.0.0.1", port=1, sender="a@pay.example.cn")
    with pytest.raises(NotifierError, match="not an e-mail address"):
        notifier.send(receipt(to="13812345678"))


def test_outbox_marks_the_message_delivered() -> None:
    message = receipt()
    OutboxNotifier(clock=lambda: NOW).send(message)
    assert (message.status, message.sent_at, message.error) == ("sent", NOW, "")


def test_smtp_settings_route_email_to_smtp_and_sms_to_the_outbox(
    smtp_server: tuple[Inbox, int], tmp_path: Path
) -> None:
    inbox, port = smtp_server
    settings = load_settings(data_dir=tmp_path, notifier="smtp", smtp_host="127.0.0.1",
                             smtp_port=port, smtp_security="none", env="development")
    notifier = build_notifier(settings)
    assert isinstance(notifier, RoutingNotifier)
    sms = Message(id=1, kind="sms_code", to="13812345678", subject="", body="验证码是 123456",
                  created_at=NOW)
    notifier.send(sms)
    notifier.send(receipt())
    assert sms.status == "sent"
    assert [r for r, _ in inbox.received] == [["payer@example.cn"]]
    assert isinstance(build_notifier(load_settings(data_dir=tmp_path, env="development")),
                      OutboxNotifier)


def test_receipt_messages_get_their_pdf_attached(tmp_path: Path) -> None:
    from selfpay.adapters.db.migrate import upgrade
    from selfpay.bootstrap import bootstrap
    from selfpay.domain.accounts import Account, Bill, Biller
    from selfpay.domain.orders import Order, new_order_no

    settings = load_settings(data_dir=tmp_path, public_base_url="https://pay.example.cn",
                             env="development")
    upgrade(settings.sqlalchemy_url)
    container = bootstrap(settings)
    try:
        with container.uow_factory() as uow:
            uow.billers.add(Biller("ELEC", "电费"))
            uow.accounts.upsert_many([Account("ELEC", "0012345678", "张三丰")])
            uow.bills.add_many([Bill(None, "ELEC", "0012345678", "2026-10", 5050, None)])
            order = Order(order_no=new_order_no(NOW), idempotency_key="k", request_hash="h",
                          biller="ELEC", account="0012345678", bill_ids=(1,),
                          amount_fen=5050, channel="sandbox", created_at=NOW,
                          expires_at=NOW + dt.timedelta(minutes=30))
            order.start_attempt({"kind": "redirect", "url": "x"})
            order.mark_paid(channel_txn_id="TXN-9", amount_fen=5050, paid_at=NOW)
            uow.orders.add(order)
            uow.commit()
        sent: list[Message] = []

        class Keep:
            def send(self, message: Message) -> None:
                sent.append(message)

        attacher = ReceiptPdfAttacher(Keep(), uow_factory=container.uow_factory,
                                      base_url="https://pay.example.cn")
        message = Message(id=3, kind="receipt", to="payer@example.cn", subject="缴费凭证",
                          body=f"电子凭证：https://pay.example.cn/receipt/{order.order_no}",
                          created_at=NOW)
        attacher.send(message)
        assert sent == [message]
        (name, kind, data), = message.attachments
        assert name == f"receipt-{order.order_no}.pdf" and kind == "application/pdf"
        assert data.startswith(b"%PDF")
        other = Message(id=4, kind="receipt", to="x@example.cn", subject="", body="no link",
                        created_at=NOW)
        attacher.send(other)
        assert other.attachments == []
    finally:
        container.close()
