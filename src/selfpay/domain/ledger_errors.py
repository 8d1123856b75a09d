"""Errors of the built-in ledger, of imports and of staff users.

They extend the tree in selfpay.domain.errors:

DomainError
 ├── InvalidInput
 │    ├── BillNotOpen            a chosen bill id is unknown, paid or cancelled
 │    ├── UnreadableFile         an upload that is no spreadsheet we can read
 │    │    └── SheetTooLarge      a workbook past the caps on rows, columns, cells or
 │    │                           unpacked size (adapters/sheet_guard.py), refused unread
 │    ├── MissingColumns         a sheet without a required column
 │    ├── InvalidUsername
 │    ├── WeakPassword
 │    └── UnknownRole
 ├── PaymentIdConflict           a payment id reused for another account or amount
 └── UsernameTaken
"""

from __future__ import annotations

from selfpay.domain.errors import DomainError, InvalidInput


class BillNotOpen(InvalidInput):
    default_key = "err.bill.not_open_any"


class UnreadableFile(InvalidInput):
    pass


class SheetTooLarge(UnreadableFile):
    pass


class MissingColumns(InvalidInput):
    pass


class InvalidUsername(InvalidInput):
    pass


class WeakPassword(InvalidInput):
    pass


class UnknownRole(InvalidInput):
    pass


class PaymentIdConflict(DomainError):
    """The payment id was posted before with another biller, account or amount."""


class UsernameTaken(DomainError):
    pass
