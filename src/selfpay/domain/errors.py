"""Domain errors. Each names a fact; the web layer maps them to 4xx.

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


class DomainError(Exception):
    """Root of every error the core raises on purpose."""


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


class NotFound(DomainError, LookupError):
    pass


class AccountNotFound(NotFound):
    pass


class BillerNotFound(NotFound):
    pass


class BillerDisabled(DomainError):
    """The biller is disabled: none of its accounts is offered a payment any more."""


class PermissionDenied(DomainError):
    pass


class CurrencyMismatch(DomainError):
    pass
