"""Domain errors. Each names a fact; the web layer maps them to 4xx.

An error says what went wrong as a message key with its values, never as a sentence in
one language (or in two at once):

    raise InvalidAccountNumber(key="err.account.chars", value=text)

`error.localized(lang)` is the sentence for a reader (the web page or the API in the
request's language, the command line in Settings.locale, from src/selfpay/locales);
`str(error)` is the English one, for logs. An error raised with a plain sentence (the
older way) shows that sentence to everyone, unless its class names a `default_key`.

DomainError
 ├── InvalidInput            bad value from a user or a file (message is shown to them)
 │    ├── InvalidAccountNumber
 │    ├── InvalidBillerCode
 │    ├── InvalidAmount
 │    ├── InvalidBiller        a biller's name, kind, icon, order, steps or route
 │    └── BillerExists         a new biller with a code already in the registry
 ├── InvalidCode             a QR payload that does not verify
 ├── NotFound
 │    ├── AccountNotFound
 │    └── BillerNotFound
 ├── BillerDisabled          a biller no longer offered (its accounts and history stay)
 ├── PermissionDenied
 └── CurrencyMismatch
"""

from __future__ import annotations

from typing import ClassVar

from selfpay.domain.messages import LOG_LANG, translate


class DomainError(Exception):
    """Root of every error the core raises on purpose."""

    default_key: ClassVar[str] = ""  # what a reader is told when the raiser gave no key

    def __init__(self, text: str = "", /, *, key: str = "", **params: object) -> None:
        self.key = key
        self.params = params
        super().__init__(text or (translate(LOG_LANG, key, **params) if key else ""))

    def localized(self, lang: str) -> str:
        """The message in `lang` ("zh-CN" or "en")."""
        if self.key:
            return translate(lang, self.key, **self.params)
        if self.default_key:
            return translate(lang, self.default_key)
        return str(self)


class InvalidInput(DomainError, ValueError):
    pass


class InvalidAccountNumber(InvalidInput):
    pass


class InvalidBillerCode(InvalidInput):
    pass


class InvalidAmount(InvalidInput):
    pass


class InvalidBiller(InvalidInput):
    pass


class BillerExists(InvalidInput):
    pass


class InvalidCode(DomainError):
    """A QR payload that is malformed, tampered with, or signed with an unknown key."""

    default_key = "err.code.invalid"


class NotFound(DomainError, LookupError):
    default_key = "error.not_found"


class AccountNotFound(NotFound):
    default_key = "err.account.not_found"


class BillerNotFound(NotFound):
    default_key = "err.biller.not_found"


class BillerDisabled(DomainError):
    """The biller is disabled: none of its accounts is offered a payment any more."""

    default_key = "err.biller.disabled"


class PermissionDenied(DomainError):
    default_key = "error.forbidden"


class CurrencyMismatch(DomainError):
    pass
