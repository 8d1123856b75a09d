"""Notifier adapters: the outbox (default), SMTP e-mail, and a router between them.

The message outbox table is the queue: a use case adds a Message in its own transaction
and the worker hands queued ones to a Notifier. OutboxNotifier delivers "into the
outbox": the message stays in the table, marked sent, and staff read it at
/admin/messages (which is how the demo receives its SMS codes).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING, Literal

from selfpay.adapters.receipts import render_receipt_pdf
from selfpay.services.ports import Message, Notifier, NotifierError, UnitOfWork
from selfpay.services.receipts import load_receipt

if TYPE_CHECKING:
    from selfpay.config import Settings

Security = Literal["starttls", "ssl", "none"]
log = logging.getLogger(__name__)
_RECEIPT_LINK = re.compile(r"/receipt/([A-Z0-9]{6,32})\b")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class OutboxNotifier:
    """Marks the message delivered into the admin outbox. Never fails."""

    def __init__(self, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._clock = clock

    def send(self, message: Message) -> None:
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


class RoutingNotifier:
    """E-mail addresses through `email`; everything else (SMS) through `other`, which
    is the outbox until a site plugs in an SMS gateway."""

    def __init__(self, *, email: Notifier, other: Notifier) -> None:
        self.email, self.other = email, other

    def send(self, message: Message) -> None:
        (self.email if "@" in message.to else self.other).send(message)


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


def build_notifier(settings: Settings,
                   uow_factory: Callable[[], UnitOfWork] | None = None) -> Notifier:
    """SELFPAY_NOTIFIER=outbox (default) or smtp (e-mail by SMTP, SMS to the outbox).
    With `uow_factory`, e-mailed receipts carry their PDF."""
    outbox = OutboxNotifier()
    if settings.notifier != "smtp":
        return outbox
    smtp = SmtpNotifier(
        host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from,
        security=settings.smtp_security, username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value(), timeout_s=settings.smtp_timeout_s,
    )
    email: Notifier = smtp
    if uow_factory is not None:
        email = ReceiptPdfAttacher(smtp, uow_factory=uow_factory,
                                   base_url=settings.public_base_url, timezone=settings.timezone)
    return RoutingNotifier(email=email, other=outbox)
