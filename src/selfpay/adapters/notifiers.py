"""Notifier adapters: the outbox (default), SMTP e-mail, SMS through a gateway, and a
router between them.

The message outbox table is the queue: a use case adds a Message in its own transaction
and the worker hands queued ones to a Notifier. OutboxNotifier delivers "into the
outbox": the message stays in the table, marked sent, and staff read it at
/admin/messages. An SMS code is there only masked: its real text is sealed in the
message (adapters/secretbox.py), and only SmsNotifier opens it, to hand it to the SMS
gateway (adapters/sms.py); the outbox drops the sealed text once the message is sent or
failed. The demo's gateway is the terminal it runs in.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING, Literal

from selfpay.adapters.receipts import render_receipt_pdf
from selfpay.adapters.secretbox import AesGcmBox
from selfpay.adapters.sms import HttpSmsGateway, TerminalSmsGateway
from selfpay.services.ports import (
    Message,
    MessageUndeliverable,
    Notifier,
    NotifierError,
    SealBroken,
    SecretBox,
    SmsGateway,
    UnitOfWork,
)
from selfpay.services.receipts import load_receipt

if TYPE_CHECKING:
    from selfpay.config import Settings

Security = Literal["starttls", "ssl", "none"]
log = logging.getLogger(__name__)
_RECEIPT_LINK = re.compile(r"/receipt/([A-Z0-9]{6,32})\b")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class OutboxNotifier:
    """Marks the message delivered into the admin outbox. Never fails. A sealed text
    (an SMS code) is dropped unread: nothing leaves, so no code reaches anyone."""

    def __init__(self, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._clock = clock

    def send(self, message: Message) -> None:
        message.sealed = ""
        message.status = "sent"
        message.sent_at = self._clock()
        message.error = ""


class SmtpNotifier:
    """E-mail through an SMTP server (smtplib): STARTTLS, implicit TLS or plain, with
    optional login and a timeout. A receipt's PDF travels as an attachment.

    Every failure (refused connection, timeout, TLS or login error, refused recipient)
    becomes NotifierError, so the worker keeps the message queued and tries again."""

    def __init__(
        self, *, host: str, port: int, sender: str, security: Security = "starttls",
        username: str = "", password: str = "", timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        self.security = security
        self.username, self._password = username, password
        self.timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._clock = clock

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject or message.kind
        mail["Date"] = formatdate(localtime=False)
        domain = parseaddr(self.sender)[1].partition("@")[2] or "selfpay.local"
        # The same outbox message always gets the same Message-ID: if a worker dies after
        # the SMTP server took a message but before it was marked sent, the one repeat
        # that follows is recognisable as such (mail systems drop it).
        mail["Message-ID"] = (f"<selfpay.{message.kind}.{message.id}."
                              f"{int(message.created_at.timestamp())}@{domain}>"
                              if message.id is not None else make_msgid(domain=domain))
        mail.set_content(message.body)
        for name, content_type, data in message.attachments:
            maintype, _, subtype = content_type.partition("/")
            mail.add_attachment(data, maintype=maintype or "application",
                                subtype=subtype or "octet-stream", filename=name)
        return mail

    def send(self, message: Message) -> None:
        if "@" not in message.to:
            raise NotifierError(f"not an e-mail address: {message.to!r}")
        mail = self.build(message)
        context = self._ssl_context or ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s,
                                        context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
            with smtp:
                if self.security == "starttls":
                    smtp.starttls(context=context)
                if self.username:
                    smtp.login(self.username, self._password)
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
            raise NotifierError(
                f"SMTP {self.host}:{self.port} ({self.security}): {type(exc).__name__}: {exc}"
            ) from exc
        message.status = "sent"
        message.sent_at = self._clock()
        message.error = ""


class SmsNotifier:
    """SMS through an SmsGateway. A sealed text is opened here, just before it is sent,
    and dropped from the message once the gateway took it or refused it for good.

    A message that can never go (the gateway refuses the number; the sealed text does
    not open, e.g. after a new SELFPAY_SECRET_KEY) is marked failed here before
    MessageUndeliverable is raised: the worker keeps that status, so it is not retried.
    Any other NotifierError leaves it queued for the worker's next try."""

    def __init__(self, gateway: SmsGateway, *, box: SecretBox,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self.gateway = gateway
        self._box = box
        self._clock = clock

    def close(self) -> None:
        close = getattr(self.gateway, "close", None)
        if callable(close):
            close()

    def send(self, message: Message) -> None:
        try:
            text = (self._box.open(message.sealed, to=message.to) if message.sealed
                    else message.body)
        except SealBroken:
            self._give_up(message)
            raise MessageUndeliverable("the sealed text does not open (was "
                                       "SELFPAY_SECRET_KEY changed?): a new code is needed"
                                       ) from None
        try:
            self.gateway.send(message.to, text, ref=_reference(message))
        except MessageUndeliverable:
            self._give_up(message)
            raise
        message.sealed = ""
        message.status = "sent"
        message.sent_at = self._clock()
        message.error = ""

    @staticmethod
    def _give_up(message: Message) -> None:
        message.sealed = ""
        message.status = "failed"


def _reference(message: Message) -> str:
    """The same on every try of one message (the gateway drops a repeat by it)."""
    if message.id is None:
        return f"selfpay-msg-x{secrets.token_hex(8)}"
    return f"selfpay-msg-{message.id}-{int(message.created_at.timestamp())}"


class RoutingNotifier:
    """E-mail addresses through `email`; everything else (phone numbers: SMS) through
    `sms`: the outbox, or an SMS gateway (SELFPAY_SMS_GATEWAY)."""

    def __init__(self, *, email: Notifier, sms: Notifier) -> None:
        self.email, self.sms = email, sms

    def close(self) -> None:
        for notifier in (self.email, self.sms):
            close = getattr(notifier, "close", None)
            if callable(close):
                close()

    def send(self, message: Message) -> None:
        (self.email if "@" in message.to else self.sms).send(message)


class ReceiptPdfAttacher:
    """Puts the receipt PDF on a receipt message that has none, then hands it on.

    The payments service writes the receipt's text (it may not import reportlab); the
    order number comes from the receipt link in that text."""

    def __init__(self, inner: Notifier, *, uow_factory: Callable[[], UnitOfWork],
                 base_url: str, timezone: str = "Asia/Shanghai") -> None:
        self.inner = inner
        self._uow_factory = uow_factory
        self._base = base_url.rstrip("/")
        self._timezone = timezone

    def send(self, message: Message) -> None:
        if message.kind == "receipt" and not message.attachments:
            found = _RECEIPT_LINK.search(message.body)
            receipt = load_receipt(self._uow_factory(), found.group(1)) if found else None
            if receipt is not None and receipt.is_paid:
                pdf = render_receipt_pdf(receipt, timezone=self._timezone,
                                         url=f"{self._base}/receipt/{receipt.order_no}")
                message.attachments.append(
                    (f"receipt-{receipt.order_no}.pdf", "application/pdf", pdf))
            else:
                log.warning("receipt message %s names no paid order", message.id)
        self.inner.send(message)


def build_sms_gateway(settings: Settings) -> SmsGateway | None:
    """SELFPAY_SMS_GATEWAY: http, terminal, or None for the outbox. Settings checked the
    URL and the key at load."""
    if settings.sms_gateway == "terminal":
        return TerminalSmsGateway()
    if settings.sms_gateway == "http":
        return HttpSmsGateway(url=settings.sms_url.strip(), key=settings.sms_signing_key(),
                              sender=settings.sms_sender, timeout_s=settings.sms_timeout_s)
    if settings.env == "production":
        log.warning("SELFPAY_SMS_GATEWAY is 'outbox': SMS (look-up codes) reach no phone; "
                    "set it to 'http' with SELFPAY_SMS_URL and SELFPAY_SMS_KEY(_FILE)")
    return None


def build_notifier(settings: Settings,
                   uow_factory: Callable[[], UnitOfWork] | None = None) -> Notifier:
    """E-mail by SELFPAY_NOTIFIER (outbox, the default, or smtp), SMS by
    SELFPAY_SMS_GATEWAY (outbox, the default, http or terminal). With `uow_factory`,
    e-mailed receipts carry their PDF."""
    outbox = OutboxNotifier()
    gateway = build_sms_gateway(settings)
    sms: Notifier = outbox
    if gateway is not None:
        sms = SmsNotifier(gateway, box=message_box(settings))
    if settings.notifier != "smtp":
        return outbox if gateway is None else RoutingNotifier(email=outbox, sms=sms)
    smtp = SmtpNotifier(
        host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from,
        security=settings.smtp_security, username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value(), timeout_s=settings.smtp_timeout_s,
    )
    email: Notifier = smtp
    if uow_factory is not None:
        email = ReceiptPdfAttacher(smtp, uow_factory=uow_factory,
                                   base_url=settings.public_base_url, timezone=settings.timezone)
    return RoutingNotifier(email=email, sms=sms)


def message_box(settings: Settings) -> SecretBox:
    """The box that seals an SMS code into the outbox and opens it to send it: keyed from
    SELFPAY_SECRET_KEY, so every `serve` and `worker` of a site opens what another sealed."""
    return AesGcmBox.from_secret_key(settings.secret_key.get_secret_value())
