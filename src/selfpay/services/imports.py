"""Import accounts and bills from a spreadsheet, all or nothing.

A file with any invalid row writes no account and no bill; the run is still recorded
(status 'rejected') with its row errors, so staff can see what to fix. With
`skip_invalid` the valid rows are imported and the run is 'partial'. Every run writes
an audit entry. Row numbers are those the user sees in Excel: the header is row 1.

The adapter selfpay.adapters.tabular turns .xlsx/.xls/.csv into a `Table`.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from selfpay.domain.accounts import Account, Bill, normalize_account, normalize_biller
from selfpay.domain.errors import InvalidAccountNumber, InvalidAmount, InvalidInput
from selfpay.domain.money import parse_yuan
from selfpay.services import audit
from selfpay.services.ports import ImportRun, RowError, UnitOfWork

MAX_STORED_ERRORS = 1000
PROGRESS_EVERY = 1000  # rows between two calls of a run's progress callback
EXCEL_EPOCH = dt.date(1899, 12, 30)  # serial 1 = 1900-01-01 (with Excel's 1900 leap bug)
MAX_NAME, MAX_PHONE, MAX_ADDRESS = 128, 32, 256
T = TypeVar("T")
Progress = Callable[[int, int], None]  # (rows checked, rows in the file)


@dataclass(frozen=True, slots=True)
class TableRow:
    row_number: int  # as the user sees it in Excel
    cells: Sequence[object]


@dataclass(slots=True)
class Table:
    headers: list[str]
    rows: list[TableRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Column:
    field: str
    required: bool
    aliases: tuple[str, ...]

    @property
    def label(self) -> str:
        """How messages name it, in their reader's language (messages.TERM)."""
        return f"term.column.{self.field}"


ACCOUNT_COLUMNS = (
    Column("biller", True, ("biller", "billercode", "业务类型", "业务代码")),
    Column("account", True, ("account", "accountno", "accountnumber", "用户编号", "户号")),
    Column("name", True, ("name", "holder", "户名", "用户名称")),
    Column("phone", False, ("phone", "mobile", "电话", "手机", "手机号", "联系电话")),
    Column("address", False, ("address", "地址")),
)
BILL_COLUMNS = (
    ACCOUNT_COLUMNS[0],
    ACCOUNT_COLUMNS[1],
    Column("period", True, ("period", "账期")),
    Column("amount", True, ("amount", "金额", "应缴金额")),
    Column("due_date", False, ("duedate", "到期日", "缴费截止日")),
)


def header_key(text: object) -> str:
    """'Due Date', 'due_date', ' DUE-DATE ' -> 'duedate'."""
    raw = unicodedata.normalize("NFKC", "" if text is None else str(text))
    return re.sub(r"[\s_\-]+", "", raw).lower()


def map_headers(headers: Sequence[object], columns: Sequence[Column]) -> dict[str, int]:
    """Field -> column index. Raises InvalidInput naming every missing required column."""
    found: dict[str, int] = {}
    by_alias = {header_key(a): c for c in columns for a in c.aliases}
    for index, header in enumerate(headers):
        column = by_alias.get(header_key(header))
        if column is None:
            continue
        if column.field in found:
            raise InvalidInput(key="err.import.column_twice", column=column.label)
        found[column.field] = index
    missing = [c.label for c in columns if c.required and c.field not in found]
    if missing:
        raise InvalidInput(key="err.import.columns_missing", columns=missing)
    return found


# -- cell parsers: each returns the clean value or raises InvalidInput with a key -------


def _is_blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _text(cell: object) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return unicodedata.normalize("NFKC", str(cell)).strip()


def parse_biller(cell: object, known: set[str], disabled: frozenset[str] = frozenset()) -> str:
    """An enabled biller's code; `known` holds the enabled ones, `disabled` the others."""
    if _is_blank(cell):
        raise InvalidInput(key="err.import.biller_empty")
    code = normalize_biller(_text(cell))  # its own error names what is wrong with it
    if code in disabled:
        raise InvalidInput(key="err.import.biller_disabled", code=code)
    if code not in known:
        raise InvalidInput(key="err.biller.unknown", code=code)
    return code


def parse_account(cell: object) -> str:
    if _is_blank(cell):
        raise InvalidAccountNumber(key="err.account.empty")
    return normalize_account(cell)  # its own error names what is wrong with it


def parse_name(cell: object) -> str:
    name = _text(cell)
    if not name:
        raise InvalidInput(key="err.import.name_empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(key="err.import.name_long", max=MAX_NAME)
    return name


_PHONE_RE = re.compile(r"^\+?[0-9]{3,20}$")


def parse_phone(cell: object) -> str:
    """Digits with an optional leading '+'; spaces and '-' between them are dropped."""
    raw = _text(cell)
    if not raw:
        return ""
    phone = re.sub(r"[\s\-]+", "", raw)
    if not _PHONE_RE.match(phone) or len(phone) > MAX_PHONE:
        raise InvalidInput(key="err.import.phone", value=raw)
    return phone


def parse_address(cell: object) -> str:
    address = _text(cell)
    if len(address) > MAX_ADDRESS:
        raise InvalidInput(key="err.import.address_long", max=MAX_ADDRESS)
    return address


_TOO_PRECISE = re.compile(r"^\s*[¥￥]?\s*[\d,]*\.\d{3,}\s*$")


def parse_amount(cell: object) -> int:
    if _is_blank(cell):
        raise InvalidAmount(key="err.amount.empty")
    if isinstance(cell, (int, float, Decimal)) and not isinstance(cell, bool) and cell <= 0:
        raise InvalidAmount(key="err.amount.positive")
    try:
        fen = parse_yuan(cell)
    except InvalidAmount as exc:
        text = unicodedata.normalize("NFKC", repr(cell) if isinstance(cell, float) else str(cell))
        if _TOO_PRECISE.match(text):
            raise InvalidAmount(key="err.amount.decimals") from exc
        if text.strip().startswith("-"):
            raise InvalidAmount(key="err.amount.positive") from exc
        raise InvalidAmount(key="err.amount.invalid", value=repr(cell)) from exc
    if fen <= 0:
        raise InvalidAmount(key="err.amount.positive")
    return fen


_PERIOD_RE = re.compile(r"^(\d{4})[-/.年]?(\d{1,2})月?$")


def parse_period(cell: object) -> str:
    """2026-10, 2026/10, 202610, 2026年10月, or a date cell (Excel turns '2026-10'
    into 2026-10-01) -> '2026-10'."""
    bad = InvalidInput(key="err.import.period", value=_text(cell))
    if isinstance(cell, dt.date):  # datetime is a date too
        return f"{cell.year:04d}-{cell.month:02d}"
    if isinstance(cell, bool):
        raise bad
    if isinstance(cell, float):
        if not cell.is_integer():
            raise bad
        cell = int(cell)
    text = _text(cell)
    m = _PERIOD_RE.match(text)
    if m is None or (len(text) == 5 and text.isdigit()):  # 20261 is ambiguous
        raise bad
    year, month = int(m.group(1)), int(m.group(2))
    if not (1900 <= year <= 2999 and 1 <= month <= 12):
        raise bad
    return f"{year:04d}-{month:02d}"


_DATE_RE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]00:00(?::00(?:\.0+)?)?)?$")


def parse_due_date(cell: object) -> dt.date | None:
    """A date cell, 'YYYY-MM-DD', 'YYYY/MM/DD', 'YYYYMMDD' or an Excel serial number."""
    if _is_blank(cell):
        return None
    bad = InvalidInput(key="err.import.due_date", value=_text(cell))
    if isinstance(cell, dt.datetime):
        return cell.date()
    if isinstance(cell, dt.date):
        return cell
    if isinstance(cell, bool):
        raise bad
    if isinstance(cell, (int, float)):
        if not 1 <= cell < 2958466:  # 9999-12-31
            raise bad
        return EXCEL_EPOCH + dt.timedelta(days=int(cell))
    text = _text(cell)
    try:
        if len(text) == 8 and text.isdigit():
            return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        m = _DATE_RE.match(text)
        if m is None:
            raise bad
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError as exc:
        raise bad from exc


# -- the use cases ------------------------------------------------------------------


class _Rows:
    """Collects per-row errors while validating."""

    def __init__(self, table: Table, columns: dict[str, int]) -> None:
        self.table = table
        self.columns = columns
        self.errors: list[RowError] = []
        self.bad_rows: set[int] = set()

    def cell(self, row: TableRow, name: str) -> object:
        index = self.columns.get(name)
        if index is None or index >= len(row.cells):
            return None
        return row.cells[index]

    def error(self, row_number: int, key: str, /, **params: object) -> None:
        self.bad_rows.add(row_number)
        self.errors.append(RowError.keyed(row_number, key, **params))

    def parse(self, row: TableRow, name: str, parser: Callable[[object], T]) -> T | None:
        try:
            return parser(self.cell(row, name))
        except InvalidInput as exc:
            self.bad_rows.add(row.row_number)
            self.errors.append(RowError.of(row.row_number, exc))
            return None


def _billers(uow: UnitOfWork) -> tuple[set[str], frozenset[str]]:
    """(enabled, disabled) biller codes: rows for a disabled biller are refused."""
    billers = uow.billers.list()
    return ({b.code for b in billers if b.enabled},
            frozenset(b.code for b in billers if not b.enabled))


def _checked(table: Table, progress: Progress | None) -> Iterator[TableRow]:
    """The rows of `table`, telling `progress` every PROGRESS_EVERY rows."""
    total = len(table.rows)
    for index, row in enumerate(table.rows):
        if progress is not None and index % PROGRESS_EVERY == 0:
            progress(index, total)
        yield row
    if progress is not None:
        progress(total, total)


def _validate_accounts(uow: UnitOfWork, table: Table, rows: _Rows,
                       progress: Progress | None) -> list[Account]:
    known, disabled = _billers(uow)
    seen: dict[tuple[str, str], int] = {}
    valid: list[Account] = []
    for row in _checked(table, progress):
        biller = rows.parse(row, "biller", lambda c: parse_biller(c, known, disabled))
        number = rows.parse(row, "account", parse_account)
        name = rows.parse(row, "name", parse_name)
        phone = rows.parse(row, "phone", parse_phone)
        address = rows.parse(row, "address", parse_address)
        if biller is None or number is None or name is None or phone is None or address is None:
            continue
        first = seen.setdefault((biller, number), row.row_number)
        if first != row.row_number:
            rows.error(row.row_number, "err.import.duplicate_account", first=first,
                       biller=biller, account=number)
            continue
        valid.append(Account(biller, number, name, phone, address))
    return valid


def _validate_bills(uow: UnitOfWork, table: Table, rows: _Rows,
                    progress: Progress | None) -> list[Bill]:
    known, disabled = _billers(uow)
    parsed: list[tuple[int, Bill]] = []
    seen: dict[tuple[str, str, str], int] = {}
    for row in _checked(table, progress):
        biller = rows.parse(row, "biller", lambda c: parse_biller(c, known, disabled))
        number = rows.parse(row, "account", parse_account)
        period = rows.parse(row, "period", parse_period)
        amount = rows.parse(row, "amount", parse_amount)
        due: dt.date | None = None
        if "due_date" in rows.columns:
            before = len(rows.errors)
            due = rows.parse(row, "due_date", parse_due_date)
            if len(rows.errors) > before:
                continue
        if biller is None or number is None or period is None or amount is None:
            continue
        first = seen.setdefault((biller, number, period), row.row_number)
        if first != row.row_number:
            rows.error(row.row_number, "err.import.duplicate_bill", first=first,
                       biller=biller, account=number, period=period)
            continue
        parsed.append((row.row_number, Bill(None, biller, number, period, amount, due)))
    accounts = uow.accounts.existing([(b.biller, b.account) for _, b in parsed])
    billed = uow.bills.existing_periods([(b.biller, b.account, b.period) for _, b in parsed])
    valid: list[Bill] = []
    for row_number, bill in parsed:
        if (bill.biller, bill.account) not in accounts:
            rows.error(row_number, "err.import.account_missing", biller=bill.biller,
                       account=bill.account)
        elif (bill.biller, bill.account, bill.period) in billed:
            rows.error(row_number, "err.import.bill_exists", biller=bill.biller,
                       account=bill.account, period=bill.period)
        else:
            valid.append(bill)
    return valid


def import_accounts(
    uow: UnitOfWork, table: Table, *, filename: str, actor: str, skip_invalid: bool,
    now: dt.datetime, progress: Progress | None = None, check_uow: UnitOfWork | None = None,
) -> ImportRun:
    """New accounts are added; known ones get their name, phone and address updated
    (their balance is never touched). `progress` hears how many rows are checked; with
    `check_uow` (read-only) the rows are checked outside the write transaction (_run)."""
    return _run("accounts", uow, table, filename=filename, actor=actor,
                skip_invalid=skip_invalid, now=now, progress=progress, check_uow=check_uow)


def import_bills(
    uow: UnitOfWork, table: Table, *, filename: str, actor: str, skip_invalid: bool,
    now: dt.datetime, progress: Progress | None = None, check_uow: UnitOfWork | None = None,
) -> ImportRun:
    """Bills of accounts already in the ledger; a (biller, account, period) that already
    has a bill is refused. `progress` and `check_uow` as for import_accounts."""
    return _run("bills", uow, table, filename=filename, actor=actor,
                skip_invalid=skip_invalid, now=now, progress=progress, check_uow=check_uow)


@dataclass(slots=True)
class _Checked:
    rows: _Rows
    valid: Sequence[Account | Bill]
    fatal: bool


def _check(kind: str, uow: UnitOfWork, table: Table, progress: Progress | None) -> _Checked:
    columns_spec = ACCOUNT_COLUMNS if kind == "accounts" else BILL_COLUMNS
    try:
        rows = _Rows(table, map_headers(table.headers, columns_spec))
    except InvalidInput as exc:
        rows = _Rows(table, {})
        rows.errors.append(RowError.of(1, exc))  # the header row
        return _Checked(rows, [], True)
    if not table.rows:
        rows.errors.append(RowError.keyed(2, "err.import.no_rows"))
        return _Checked(rows, [], True)
    if kind == "accounts":
        return _Checked(rows, _validate_accounts(uow, table, rows, progress), False)
    return _Checked(rows, _validate_bills(uow, table, rows, progress), False)


def _changed_since(kind: str, uow: UnitOfWork, before: tuple[set[str], frozenset[str]],
                   valid: Sequence[Account | Bill]) -> bool:
    """Whether what the check relied on changed before the write lock was taken: the
    billers, or (for bills) the accounts and the bills already there."""
    if _billers(uow) != before:
        return True
    bills = [v for v in valid if isinstance(v, Bill)]
    if kind == "accounts" or not bills:
        return False
    found = uow.accounts.existing([(b.biller, b.account) for b in bills])
    return (len(found) < len({(b.biller, b.account) for b in bills})
            or bool(uow.bills.existing_periods([(b.biller, b.account, b.period)
                                                for b in bills])))


def _run(
    kind: str, uow: UnitOfWork, table: Table, *, filename: str, actor: str,
    skip_invalid: bool, now: dt.datetime, progress: Progress | None,
    check_uow: UnitOfWork | None,
) -> ImportRun:
    """Check every row, then write in one transaction. Checking a big file takes a
    while (tens of µs a row); given a read-only `check_uow` it happens outside the write
    transaction, which on SQLite locks every other writer out (the job's own progress
    too). What the check relied on is then looked at again under the lock, and checked
    anew if someone changed it meanwhile."""
    if check_uow is None:
        with uow:
            return _write(kind, uow, table, _check(kind, uow, table, progress),
                          filename=filename, actor=actor, skip_invalid=skip_invalid, now=now)
    with check_uow:
        billers = _billers(check_uow)
        checked = _check(kind, check_uow, table, progress)
    with uow:
        if not checked.fatal and _changed_since(kind, uow, billers, checked.valid):
            checked = _check(kind, uow, table, None)
        return _write(kind, uow, table, checked, filename=filename, actor=actor,
                      skip_invalid=skip_invalid, now=now)


def _write(
    kind: str, uow: UnitOfWork, table: Table, checked: _Checked, *, filename: str,
    actor: str, skip_invalid: bool, now: dt.datetime,
) -> ImportRun:
    """Write the valid rows (all or none, unless skip_invalid), the run and its audit
    entry, and commit: `uow` is open."""
    rows, valid = checked.rows, checked.valid
    detail: dict[str, Any] = {}
    write = not checked.fatal and bool(valid) and (skip_invalid or not rows.errors)
    if write and kind == "accounts":
        inserted, updated = uow.accounts.upsert_many([v for v in valid
                                                      if isinstance(v, Account)])
        detail.update(inserted=inserted, updated=updated)
    elif write:
        detail.update(inserted=uow.bills.add_many([v for v in valid if isinstance(v, Bill)]))
    imported = len(valid) if write else 0
    if not rows.errors:
        status = "imported"
    elif imported:
        status = "partial"
    else:
        status = "rejected"
    rows.errors.sort(key=lambda e: e.row)
    errors = rows.errors[:MAX_STORED_ERRORS]
    if len(rows.errors) > MAX_STORED_ERRORS:
        extra = len(rows.errors) - MAX_STORED_ERRORS
        errors.append(RowError.keyed(0, "err.import.more_errors", n=extra))  # no one row
    run = ImportRun(
        id=None, kind=kind, filename=filename, actor=actor, at=now, status=status,
        total_rows=len(table.rows), imported=imported,
        skipped=len(table.rows) - imported, errors=errors,
    )
    run.id = uow.imports.add(run)
    detail.update(run_id=run.id, filename=filename, status=status,
                  total_rows=run.total_rows, imported=imported, skipped=run.skipped,
                  errors=len(rows.errors))
    audit.record(uow, actor=actor, action=f"import.{kind}", target=filename,
                 detail=detail, now=now)
    uow.commit()
    return run
