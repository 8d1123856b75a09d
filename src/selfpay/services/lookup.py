"""Finding one's accounts without a code: by phone number and a 6-digit SMS code.

Rules:
- a code lives `ttl` (5 minutes) and is good for one look-up;
- at most `max_tries` (5) wrong entries, then it is locked until a new one is sent;
- a new code at most once per `resend_after` (60 s) per phone;
- only an HMAC of the code (keyed with the site's secret and bound to the phone) is
  stored, so a copy of the table does not give live codes away;
- the SMS waits in the message outbox with its code masked in the body that staff see
  ("验证码 ******"); the text with the code is sealed (SecretBox) for the notifier, which
  opens it only to send it, and the outbox forgets it once the message is sent or failed;
- the answer to "send me a code" is the same whether or not the phone has accounts:
  who owns which phone number is revealed only to the one who can read its SMS.

Errors (all InvalidInput, so their message may be shown):
    LookupRefused
     ├── CodeThrottled   another code too soon (retry_after_s)
     ├── CodeWrong       not the code sent (tries_left)
     ├── CodeLocked      too many wrong codes: ask for a new one
     └── CodeExpired     too old, used, or never sent: ask for a new one
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass

from selfpay.domain.accounts import Account
from selfpay.domain.errors import InvalidInput
from selfpay.services.ports import Message, SecretBox, SmsCode, UnitOfWork

CODE_DIGITS = 6
CODE_MASK = "*" * CODE_DIGITS
_PHONE_RE = re.compile(r"^1[3-9]\d{9}$")  # mainland mobile numbers
# what could be a code in an SMS body: 4 to 8 digits on their own (not a phone number)
_CODE_LIKE = re.compile(r"(?<!\d)\d{4,8}(?!\d)")


@dataclass(frozen=True, slots=True)
class SmsRules:
    ttl: dt.timedelta = dt.timedelta(minutes=5)
    max_tries: int = 5
    resend_after: dt.timedelta = dt.timedelta(seconds=60)


DEFAULT_RULES = SmsRules()


class LookupRefused(InvalidInput):
    pass


class InvalidPhone(LookupRefused):
    pass


class CodeThrottled(LookupRefused):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(key="lookup.throttled", seconds=retry_after_s)
        self.retry_after_s = retry_after_s


class CodeWrong(LookupRefused):
    def __init__(self, tries_left: int) -> None:
        super().__init__(key="lookup.code_wrong", n=tries_left)
        self.tries_left = tries_left


class CodeLocked(LookupRefused):
    pass


class CodeExpired(LookupRefused):
    pass


def normalize_phone(raw: str) -> str:
    """'+86 138-1234-5678', '１３８１２３４５６７８' -> '13812345678'; else InvalidPhone."""
    text = unicodedata.normalize("NFKC", raw).strip()
    text = re.sub(r"[\s\-()]", "", text)
    if text.startswith("+86"):
        text = text[3:]
    elif text.startswith("0086"):
        text = text[4:]
    if not _PHONE_RE.match(text):
        raise InvalidPhone(key="lookup.bad_phone")
    return text


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def mask_codes(text: str) -> str:
    """'验证码 123456，5 分钟' -> '验证码 ******，5 分钟': what staff may see of an SMS
    body (rows written before codes were sealed held them in clear)."""
    return _CODE_LIKE.sub(CODE_MASK, text)


def hash_code(secret: bytes, phone: str, code: str) -> str:
    return hmac.new(secret, f"sms-code/v1|{phone}|{code}".encode(), hashlib.sha256).hexdigest()


def wait_before_resend(existing: SmsCode | None, now: dt.datetime, rules: SmsRules) -> int:
    """Seconds until another code may be sent to this phone; 0 when it may now."""
    if existing is None:
        return 0
    left = existing.sent_at + rules.resend_after - now
    return max(0, int(left.total_seconds() + 0.999)) if left > dt.timedelta(0) else 0


def check_code(row: SmsCode | None, code_hash: str, now: dt.datetime, rules: SmsRules) -> None:
    """Raise unless `code_hash` is the live code of `row`. Does not count the try."""
    if row is None or row.used or now >= row.expires_at:
        raise CodeExpired(key="lookup.code_expired")
    if row.tries >= rules.max_tries:
        raise CodeLocked(key="lookup.code_locked")
    if not hmac.compare_digest(row.code_hash, code_hash):
        raise CodeWrong(max(rules.max_tries - row.tries - 1, 0))


def issue_code(
    uow: UnitOfWork, *, phone: str, secret: bytes, box: SecretBox, now: dt.datetime,
    text: str, rules: SmsRules = DEFAULT_RULES, code: str | None = None,
) -> Message:
    """Store a new code for `phone` and queue its SMS in the message outbox (one
    transaction): the body masked, the real text sealed by `box` for the notifier.
    `text` holds `{code}` and `{minutes}`. Raises CodeThrottled."""
    phone = normalize_phone(phone)
    code = code or new_code()
    with uow:
        existing = uow.sms_codes.get(phone, for_update=True)
        wait = wait_before_resend(existing, now, rules)
        if wait:
            raise CodeThrottled(wait)
        uow.sms_codes.put(SmsCode(
            phone=phone, code_hash=hash_code(secret, phone, code),
            expires_at=now + rules.ttl, sent_at=now,
        ))
        minutes = int(rules.ttl.total_seconds() // 60)
        message = Message(id=None, kind="sms_code", to=phone, subject="",
                          body=text.format(code=CODE_MASK, minutes=minutes), created_at=now,
                          sealed=box.seal(text.format(code=code, minutes=minutes), to=phone))
        message.id = uow.messages.add(message)
        uow.commit()
    return message


def verify_code(
    uow: UnitOfWork, *, phone: str, code: str, secret: bytes, now: dt.datetime,
    rules: SmsRules = DEFAULT_RULES,
) -> list[Account]:
    """The phone's accounts once `code` checks out; a wrong code is counted (and the
    count committed) before CodeWrong is raised. A good code is used up."""
    phone = normalize_phone(phone)
    code = unicodedata.normalize("NFKC", code).strip()
    with uow:
        row = uow.sms_codes.get(phone, for_update=True)
        try:
            check_code(row, hash_code(secret, phone, code), now, rules)
        except CodeWrong:
            assert row is not None
            row.tries += 1
            uow.sms_codes.put(row)
            uow.commit()
            raise
        assert row is not None
        row.used = True
        uow.sms_codes.put(row)
        accounts = uow.accounts.by_phone(phone)
        uow.commit()
    return accounts
