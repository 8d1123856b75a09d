"""Read the first sheet of an .xlsx/.xls/.ods (python-calamine, openpyxl as a fallback for
.xlsx) or a .csv (UTF-8 with or without BOM, else GB18030/GBK) into a services Table.

The first non-empty row holds the headers; rows keep the numbers Excel shows; fully
empty rows are skipped. Cells keep their types (str, float, date, datetime, ...):
validation is the services' job. A file past the caps of `limits` (rows, columns,
unpacked size: adapters.sheet_guard) is refused before a reader opens it.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from selfpay.adapters.sheet_guard import (
    DEFAULT_LIMITS,
    SheetLimits,
    calamine_rows,
    check_workbook,
    csv_rows,
)
from selfpay.domain.ledger_errors import UnreadableFile
from selfpay.services.imports import Table, TableRow

# .xlsb is not read: nothing checks a binary sheet's cells before calamine builds its grid
EXCEL_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
SUFFIXES = (*EXCEL_SUFFIXES, ".csv")

RawTable = Table  # the names used in the design notes
RawRow = TableRow


def read_table(data: bytes | Path, filename: str, *,
               limits: SheetLimits = DEFAULT_LIMITS) -> Table:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise UnreadableFile(key="err.file.type", suffix=suffix or filename)
    if isinstance(data, Path):
        try:
            data = data.read_bytes()
        except OSError as exc:
            raise UnreadableFile(key="err.file.unreadable", filename=filename,
                                 reason=exc.strerror or str(exc)) from exc
    if suffix == ".csv":
        return _to_table(_csv_rows(data, filename, limits))
    check_workbook(data, limits)
    return _to_table(_excel_rows(data, filename, suffix, limits))


def _excel_rows(data: bytes, filename: str, suffix: str,
                limits: SheetLimits) -> list[list[object]]:
    from python_calamine import CalamineWorkbook

    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(data))
        try:
            if not workbook.sheet_names:
                raise UnreadableFile(key="err.file.no_sheet", filename=filename)
            return calamine_rows(workbook.get_sheet_by_index(0), limits)
        finally:
            workbook.close()
    except UnreadableFile:
        raise
    except Exception as calamine_error:  # calamine raises several unrelated types
        reason = str(calamine_error)
        if suffix in (".xlsx", ".xlsm"):
            try:
                return _openpyxl_rows(data, limits)
            except Exception as openpyxl_error:  # both readers failed: report both
                reason = f"{reason}; openpyxl: {openpyxl_error}"
        raise UnreadableFile(key="err.file.not_spreadsheet", filename=filename,
                             reason=reason) from calamine_error


def _openpyxl_rows(data: bytes, limits: SheetLimits) -> list[list[object]]:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheet = workbook.worksheets[0]
        # Bounded even when the sheet declares no range: openpyxl would pad each row to
        # its last (maybe styled, empty) cell and fill every missing row up to the last.
        rows = sheet.iter_rows(min_row=1, max_row=limits.max_rows,
                               max_col=limits.max_columns, values_only=True)
        return [list(r) for r in rows]
    finally:
        workbook.close()


def _csv_rows(data: bytes, filename: str, limits: SheetLimits) -> list[list[object]]:
    if data.startswith(b"PK\x03\x04") and zipfile.is_zipfile(io.BytesIO(data)):
        raise UnreadableFile(key="err.file.workbook_not_csv", filename=filename)
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes almost anything
        raise UnreadableFile(key="err.file.encoding", filename=filename)
    if "\x00" in text:
        raise UnreadableFile(key="err.file.not_text", filename=filename)
    try:
        return csv_rows(text, limits, sheet=filename)
    except csv.Error as exc:
        raise UnreadableFile(key="err.file.csv", filename=filename, reason=str(exc)) from exc


def _blank(cells: Sequence[object]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def _to_table(rows: Iterable[list[object]]) -> Table:
    headers: list[str] | None = None
    out: list[TableRow] = []
    for number, cells in enumerate(rows, start=1):
        if _blank(cells):
            continue
        if headers is None:
            headers = ["" if c is None else str(c).strip() for c in cells]
            continue
        out.append(TableRow(number, cells))
    if headers is None:
        raise UnreadableFile(key="err.file.empty")
    return Table(headers, out)
