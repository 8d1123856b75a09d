"""The staff's batch sheet: write the template, read it back, check every row.

Reading uses python-calamine (a 100k-row sheet in ~0.25 s; openpyxl read-only needs
~3.7 s), after adapters.sheet_guard has checked the file against the caps on rows,
columns and unpacked size. Row numbers are the ones Excel shows, so error messages point
at real rows. Staff reach this through the console or the command line (`audience`):
the template and the row errors name the default-biller control each of them has.
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import openpyxl
import python_calamine
from openpyxl.styles import Alignment, Font, PatternFill

from selfpay.adapters.sheet_guard import (
    DEFAULT_LIMITS,
    SheetLimits,
    calamine_rows,
    check_workbook,
    csv_rows,
)
from selfpay.domain.accounts import normalize_account, normalize_biller
from selfpay.domain.errors import InvalidAccountNumber, InvalidBillerCode
from selfpay.domain.ledger_errors import UnreadableFile
from selfpay.services import ports

SHEET_NAME = "accounts"
HELP_SHEET_NAME = "说明"
TEMPLATE_TEXT_ROWS = 5000  # rows pre-formatted as text so typed leading zeros survive

_ACCOUNT_HEADERS = {
    "用户编号",
    "户号",
    "账号",
    "用户号",
    "客户编号",
    "account",
    "account number",
    "account_no",
    "account no",
    "accountno",
}
_BILLER_HEADERS = {"业务类型", "单位代码", "收费单位代码", "biller", "biller code", "biller_code"}
_HEADER_SCAN_ROWS = 10  # a header may sit below a title row or two
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0"
_SHOWN_ROWS = 10  # numeric-cell warning lists at most this many row numbers

Audience = Literal["web", "cli"]  # who fills in the sheet: where its default biller is set
# where a row without a biller gets its biller from, as each audience knows it: in the
# template's (Chinese) instructions, and as a term of the row errors (messages.TERM)
_DEFAULT_BILLER_FROM: dict[Audience, str] = {
    "web": "上传页面上选择的“默认业务类型”",
    "cli": "命令行参数 --biller",
}
_DEFAULT_BILLER_TERM: dict[Audience, str] = {
    "web": "term.batch.default_web",
    "cli": "term.batch.default_cli",
}


@dataclass(frozen=True, slots=True)
class BatchRow:
    row_number: int  # 1-based, as Excel (or a text editor, for CSV) shows it
    account_raw: object
    biller_raw: object | None


@dataclass(slots=True)
class RowError(ports.RowError):
    """ports.RowError (`row`, `message`, its key and values), shared with the
    account/bill import."""

    @property
    def row_number(self) -> int:
        return self.row


@dataclass(slots=True)
class BatchPlan:
    items: list[tuple[str, str]] = field(default_factory=list)  # (biller, account)
    errors: list[RowError] = field(default_factory=list)
    # what is made anyway but worth a look (a repeated row, numeric cells), keyed alike
    warnings: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# --- template ----------------------------------------------------------------------------

def _instructions(audience: Audience) -> list[str]:
    return [line.format(default_from=_DEFAULT_BILLER_FROM[audience])
            for line in _INSTRUCTIONS_ZH]


_INSTRUCTIONS_ZH = [
    "批量生成缴费二维码：填写说明",
    "",
    "1. 在“accounts”工作表中，每行填写一个用户编号（A 列），从第 2 行开始。",
    "2. A 列已设置为“文本”格式，以 0 开头的用户编号（如 0012345678）会原样保留。"
    "从其他表格粘贴时请使用“选择性粘贴 → 数值”，不要把 A 列改回“常规”或“数值”格式。",
    "3. 用户编号只能包含数字 0-9、大写字母 A-Z 和连字符“-”，长度 1-32 位；"
    "全角数字和首尾空格会自动纠正，小写字母会转为大写。",
    "4. B 列“业务类型”可选，填写收费单位代码（如 ELEC 电费、WATER 水费）。"
    "留空时使用{default_from}。",
    "5. 重复的行只生成一个二维码，并给出提示；有错误的行会逐行列出行号和原因。",
    "6. 第 2-4 行是示例，使用前请删除或覆盖。",
    "7. 也可以上传 CSV 文件（UTF-8 或 GBK 编码），列的顺序和表头与本表相同。",
    "",
    "English: put one account number per row in column A of the 'accounts' sheet "
    "(kept as text, so leading zeros survive) and, optionally, a biller code in column B; "
    "delete the example rows 2-4 before use.",
]

_EXAMPLES = [("0012345678", "ELEC"), ("0098765432", "WATER"), ("A-20240001", "")]


def _is_english(locale: str) -> bool:
    return locale.lower().startswith("en")


def write_template(
    path_or_buffer: str | os.PathLike[str] | IO[bytes], *, locale: str = "zh-CN",
    audience: Audience = "cli",
) -> None:
    """Write the batch template (.xlsx) staff fill in, for the console's batch page
    (audience "web") or `selfpay qr batch` ("cli")."""
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None  # a new workbook always has one sheet
    ws.title = SHEET_NAME
    headers = ("account", "biller") if _is_english(locale) else ("用户编号", "业务类型")
    ws.append(list(headers))
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="DDEBF7")
    # Text format ('@') on the cells themselves: Excel then keeps what is typed or
    # pasted as values verbatim instead of turning 0012345678 into 12345678.
    for row in range(2, TEMPLATE_TEXT_ROWS + 2):
        ws.cell(row=row, column=1).number_format = "@"
        ws.cell(row=row, column=2).number_format = "@"
    for offset, (account, biller) in enumerate(_EXAMPLES):
        ws.cell(row=2 + offset, column=1, value=account)
        ws.cell(row=2 + offset, column=2, value=biller or None)
    ws.column_dimensions["A"].width = 24
    ws.column_dimensions["B"].width = 14
    ws.freeze_panes = "A2"

    help_ws = wb.create_sheet(HELP_SHEET_NAME)
    help_ws.column_dimensions["A"].width = 110
    for line in _instructions(audience):
        help_ws.append([line])
    help_ws["A1"].font = Font(bold=True, size=14)
    for (cell,) in help_ws.iter_rows(min_row=2):
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    wb.save(path_or_buffer)


# --- reading -----------------------------------------------------------------------------


def _header_key(value: object) -> str:
    text = unicodedata.normalize("NFKC", str(value)).strip().lower()
    # '业务类型（可选）' and 'Account *' are still headers.
    return text.split("(")[0].rstrip(" *")


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _find_header(rows: Sequence[Sequence[object]]) -> tuple[int, int, int | None] | None:
    """(index of the header row, account column, biller column) or None."""
    seen = 0
    for index, row in enumerate(rows):
        if all(_is_blank(v) for v in row):
            continue
        keys = [_header_key(v) if isinstance(v, str) else "" for v in row]
        account_col = next((i for i, k in enumerate(keys) if k in _ACCOUNT_HEADERS), None)
        if account_col is not None:
            biller_col = next((i for i, k in enumerate(keys) if k in _BILLER_HEADERS), None)
            return index, account_col, biller_col
        seen += 1
        if seen >= _HEADER_SCAN_ROWS:
            break
    return None


def _rows_to_batch(rows: Sequence[Sequence[object]]) -> list[BatchRow]:
    header = _find_header(rows)
    biller_col: int | None
    if header is None:
        # No header: column A holds accounts, column B (if filled) billers. Reading B
        # rather than ignoring it makes a wrong guess fail loudly, row by row.
        first, account_col, biller_col = 0, 0, 1
    else:
        first, account_col, biller_col = header[0] + 1, header[1], header[2]
    out: list[BatchRow] = []
    for index in range(first, len(rows)):
        row = rows[index]
        if all(_is_blank(v) for v in row):
            continue
        account = row[account_col] if account_col < len(row) else None
        biller = row[biller_col] if biller_col is not None and biller_col < len(row) else None
        out.append(
            BatchRow(
                row_number=index + 1,
                account_raw=None if _is_blank(account) else account,
                biller_raw=None if _is_blank(biller) else biller,
            )
        )
    return out


def _decode_csv(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Excel on a Chinese Windows saves "CSV" in the ANSI code page, i.e. GBK;
        # GB18030 is its superset and decodes every GBK file.
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise UnreadableFile(key="err.file.encoding", filename=name) from exc


def _read_csv(data: bytes, limits: SheetLimits, name: str) -> list[list[object]]:
    try:
        return csv_rows(_decode_csv(data, name or "CSV"), limits, sheet=name or "CSV")
    except csv.Error as exc:  # a field over csv's size limit, a NUL byte, ...
        raise UnreadableFile(key="err.file.csv", filename=name or "CSV",
                             reason=str(exc)) from exc


def _read_workbook(source: str | os.PathLike[str] | bytes,
                   limits: SheetLimits) -> list[list[object]]:
    check_workbook(source if isinstance(source, bytes) else Path(source), limits)
    try:
        if isinstance(source, bytes):
            wb = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(source))
        else:
            wb = python_calamine.CalamineWorkbook.from_path(os.fspath(source))
        with wb:
            names = wb.sheet_names
            if not names:
                return []
            sheet = wb.get_sheet_by_name(SHEET_NAME if SHEET_NAME in names else names[0])
            return calamine_rows(sheet, limits)
    except python_calamine.CalamineError as exc:  # not a workbook after all, damaged, ...
        raise UnreadableFile(key="err.sheet.damaged", reason=str(exc)) from exc


def read_batch_rows(
    path_or_bytes: str | os.PathLike[str] | bytes, *, filename: str | None = None,
    limits: SheetLimits = DEFAULT_LIMITS,
) -> list[BatchRow]:
    """Rows of an .xlsx/.xls/.ods or .csv batch sheet, empty rows skipped.

    The type comes from the content (a workbook is a zip or an OLE file), so a wrongly
    named upload still reads; a `.csv` name (of the path or `filename`) forces CSV. A
    file past `limits` is refused (SheetTooLarge) before it is read.
    """
    if isinstance(path_or_bytes, bytes):
        head = path_or_bytes[:4]
    else:
        with Path(path_or_bytes).open("rb") as fh:
            head = fh.read(4)
    name = (
        filename
        if filename is not None
        else ("" if isinstance(path_or_bytes, bytes) else os.fspath(path_or_bytes))
    )
    is_csv = name.lower().endswith(".csv") or head not in (_XLSX_MAGIC, _XLS_MAGIC)
    if is_csv:
        data = (
            path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        )
        return _rows_to_batch(_read_csv(data, limits, Path(name).name))
    return _rows_to_batch(_read_workbook(path_or_bytes, limits))


# --- validation --------------------------------------------------------------------------


def _biller_for(
    row: BatchRow, default: str | None, known: set[str] | None, audience: Audience
) -> tuple[str | None, InvalidBillerCode | None]:
    """(normalized biller, None) or (None, what is wrong with it)."""
    if row.biller_raw is None:
        if default is None:
            return None, InvalidBillerCode(key="err.batch.no_biller",
                                           source=_DEFAULT_BILLER_TERM[audience])
        return default, None
    try:
        biller = normalize_biller(
            str(row.biller_raw) if isinstance(row.biller_raw, int | float) else row.biller_raw
        )
    except InvalidBillerCode as exc:
        return None, exc
    if known is not None and biller not in known:
        return None, InvalidBillerCode(key="err.batch.unknown_biller", code=biller,
                                       known=sorted(known) or ["-"])
    return biller, None


def _numeric_warning(rows: list[int]) -> RowError:
    """Row 0: it is about several rows, named in the message."""
    if len(rows) > _SHOWN_ROWS:
        return RowError.keyed(0, "err.batch.numeric_more", rows=rows[:_SHOWN_ROWS],
                              n=len(rows))
    return RowError.keyed(0, "err.batch.numeric", rows=rows)


def validate_batch_rows(
    rows: Iterable[BatchRow], default_biller: str | None, known_billers: set[str] | None,
    *, audience: Audience = "cli",
) -> BatchPlan:
    """Normalize every row; collect row errors, drop duplicates with a warning.

    `default_biller` is the caller's choice (e.g. --biller), so a bad one is raised
    (InvalidBillerCode), not reported per row. `known_billers=None` accepts any code.
    """
    default = normalize_biller(default_biller) if default_biller is not None else None
    if default is not None and known_billers is not None and default not in known_billers:
        raise InvalidBillerCode(key="err.batch.default_biller", code=default)
    plan = BatchPlan()
    first_row: dict[tuple[str, str], int] = {}
    numeric_rows: list[int] = []
    for row in rows:
        n = row.row_number
        account: str | None = None
        try:
            account = normalize_account(row.account_raw)
        except InvalidAccountNumber as exc:
            plan.errors.append(RowError.of(n, exc))
        biller, problem = _biller_for(row, default, known_billers, audience)
        if problem is not None:
            plan.errors.append(RowError.of(n, problem))
        if account is None or biller is None:
            continue
        if isinstance(row.account_raw, int | float):
            numeric_rows.append(n)
        key = (biller, account)
        if key in first_row:
            plan.warnings.append(RowError.keyed(n, "err.batch.duplicate", row=n,
                                                first=first_row[key], biller=biller,
                                                account=account))
            continue
        first_row[key] = n
        plan.items.append(key)
    if numeric_rows:
        plan.warnings.append(_numeric_warning(numeric_rows))
    return plan
