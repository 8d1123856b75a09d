"""Checks a spreadsheet upload before python-calamine or openpyxl reads it.

Why: calamine builds one dense grid from A1 to the last used cell, 32 bytes a cell,
before a single row reaches us. A 1.5 KB .xlsx with values at A1 and XFD1048576 asks for
512 GiB and aborts the process; one at ZZ200000 costs 4.6 GB and half a minute. An .ods
cell repeated a million times, or a zip part that unpacks to gigabytes, does the same.
So a workbook past any of these caps is refused before a reader opens it (SheetLimits;
the first four are settings, README "Spreadsheet uploads"):

  rows       SELFPAY_SHEET_MAX_ROWS         1,000,000   last row with a value
  columns    SELFPAY_SHEET_MAX_COLUMNS      50 (A-AX)   last column with a value; imports
                                                        use 5, QR batches 2, the rest is
                                                        room for a billing system's export
  cells      SELFPAY_SHEET_MAX_CELLS        10,000,000  rows x columns of the grid a reader
                                                        builds (~320 MB inside calamine)
  unpacked   SELFPAY_SHEET_MAX_UNZIPPED_MB  1024        all parts of the zip together
  one part   MAX_PART_BYTES                 768 MiB
  ratio      MAX_RATIO                      200:1       for parts over 1 MiB (sheets pack
                                                        about 11:1; a bomb about 1000:1)
  parts      MAX_PARTS                      1,000       members of the zip

What is read, streaming through a 1 MiB buffer, never a whole part:
- the zip directory: each part's declared size, their total, the packing ratio, the
  number of parts. Python's zipfile and calamine's zip reader both refuse a part that
  unpacks to more than it declares, so declared sizes bound what a reader can inflate;
- each sheet's declared range, <dimension ref="A1:XFD1048576"/>, near its start;
- each sheet's cells: every <row r> and <c r> (or the position implied when r is left
  out) of a cell that may hold a value, and the repeat counts of an .ods row or cell. So
  a sheet whose <dimension> lies or is missing is refused too, at its first cell past a
  cap. Self-closing <c .../> (a styled empty cell) does not count: calamine ignores it.
  The .xlsx scan is a lenient tag scanner rather than an XML parser, as calamine's
  parser is lenient: a stray control character in a name must not refuse a real export.

check_workbook(quick=True) reads the directory and the first 64 KiB of each part, and
whole parts only while they unpack to at most QUICK_SCAN_BYTES in all (a few ms): fit
for a request thread, so a crafted file gets its 400 at once. The readers (tabular,
qr.sheets) run the full check. An .xls file is no zip: the format bounds its grid
(65,536 x 256) and the readers check its extent after loading, before converting a row.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from xml.parsers import expat

from selfpay.domain.ledger_errors import SheetTooLarge, UnreadableFile

if TYPE_CHECKING:
    from selfpay.config import Settings

MAX_ROWS = 1_000_000
MAX_COLUMNS = 50
MAX_CELLS = 10_000_000
MAX_UNZIPPED_BYTES = 1 << 30
MAX_PART_BYTES = 768 << 20
MAX_RATIO = 200
RATIO_FROM_BYTES = 1 << 20  # smaller parts may pack as tightly as they like
MAX_PARTS = 1000
QUICK_SCAN_BYTES = 4 << 20  # about 12,000 rows: scanned whole even on a request thread
HEAD_BYTES = 64 << 10
MAX_TAG_BYTES = 4 << 20  # no real tag is longer; a longer one is a crafted file

_CHUNK = 1 << 20
_MB = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"
_ODS_MIME = b"application/vnd.oasis.opendocument.spreadsheet"


@dataclass(frozen=True, slots=True)
class SheetLimits:
    """The caps a spreadsheet upload must keep (module docstring)."""

    max_rows: int = MAX_ROWS
    max_columns: int = MAX_COLUMNS
    max_cells: int = MAX_CELLS
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES
    max_part_bytes: int = MAX_PART_BYTES
    max_ratio: int = MAX_RATIO
    max_parts: int = MAX_PARTS

    @classmethod
    def from_settings(cls, settings: Settings) -> SheetLimits:
        total = settings.sheet_max_unzipped_mb * _MB
        return cls(max_rows=settings.sheet_max_rows, max_columns=settings.sheet_max_columns,
                   max_cells=settings.sheet_max_cells, max_unzipped_bytes=total,
                   max_part_bytes=min(MAX_PART_BYTES, total))

    def check_extent(self, rows: int, columns: int, *, sheet: str) -> None:
        """Refuse a grid that reaches row `rows` and column `columns` (1-based)."""
        if rows > self.max_rows:
            raise SheetTooLarge(key="err.sheet.rows", sheet=sheet, rows=f"{rows:,}",
                                max=f"{self.max_rows:,}")
        if columns > self.max_columns:
            raise SheetTooLarge(key="err.sheet.columns", sheet=sheet,
                                column=column_name(columns), max=self.max_columns,
                                last=column_name(self.max_columns))
        if rows * columns > self.max_cells:
            raise SheetTooLarge(key="err.sheet.cells", sheet=sheet, rows=f"{rows:,}",
                                columns=columns, max=f"{self.max_cells:,}")


DEFAULT_LIMITS = SheetLimits()


def column_name(number: int) -> str:
    """1 -> A, 27 -> AA, 16384 -> XFD."""
    name = ""
    while number > 0:
        number, rest = divmod(number - 1, 26)
        name = chr(65 + rest) + name
    return name


def _column_number(letters: bytes) -> int:
    number = 0
    for ch in letters.upper():
        number = number * 26 + ch - 64
    return number


def check_workbook(source: bytes | Path, limits: SheetLimits, *, quick: bool = False) -> None:
    """Raise SheetTooLarge or UnreadableFile for a zip workbook past `limits`; anything
    else (.xls, .csv) passes, as its reader bounds it."""
    if _head(source, 4) != _ZIP_MAGIC:
        return
    count = _declared_part_count(source)
    if count is not None and count > limits.max_parts:
        raise SheetTooLarge(key="err.sheet.parts", count=f"{count:,}", max=limits.max_parts)
    with _opened(source) as zf:
        parts = [info for info in zf.infolist() if not info.is_dir()]
        _check_directory(parts, limits)
        ods = _kind(zf) == "ods"
        if ods:
            parts = [zf.getinfo("content.xml")]
        budget = QUICK_SCAN_BYTES if quick else None
        for info in parts:
            whole = budget is None or info.file_size <= budget
            if budget is not None and whole:
                budget -= info.file_size
            sheet = _label(info.filename)
            scanner = _OdsCells(sheet, limits) if ods else _XlsxCells(sheet, limits)
            _scan_part(zf, info, scanner, whole=whole)


def _head(source: bytes | Path, size: int) -> bytes:
    if isinstance(source, bytes):
        return source[:size]
    with source.open("rb") as fh:
        return fh.read(size)


def _declared_part_count(source: bytes | Path) -> int | None:
    """The entry count in the zip's end record, read before zipfile builds an object for
    each of maybe millions of entries. None when there is no end record (zipfile says
    why); 0xFFFF (a ZIP64 archive) is over any cap anyway."""
    if isinstance(source, bytes):
        tail = source[-(22 + 0xFFFF):]
    else:
        with source.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - (22 + 0xFFFF)))
            tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    return int.from_bytes(tail[at + 10:at + 12], "little")


@contextmanager
def _opened(source: bytes | Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableFile(key="err.sheet.damaged", reason=str(exc)) from exc
    with zf:
        yield zf


def _check_directory(parts: list[zipfile.ZipInfo], limits: SheetLimits) -> None:
    if len(parts) > limits.max_parts:
        raise SheetTooLarge(key="err.sheet.parts", count=f"{len(parts):,}", max=limits.max_parts)
    total = 0
    for info in parts:
        if info.file_size > limits.max_part_bytes:
            raise SheetTooLarge(key="err.sheet.part", part=info.filename,
                                size=_mb(info.file_size), max=_mb(limits.max_part_bytes))
        if (info.file_size > RATIO_FROM_BYTES
                and info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            raise SheetTooLarge(key="err.sheet.ratio", part=info.filename,
                                ratio=f"{info.file_size // max(info.compress_size, 1):,}")
        total += info.file_size
    if total > limits.max_unzipped_bytes:
        raise SheetTooLarge(key="err.sheet.unzipped", size=_mb(total),
                            max=_mb(limits.max_unzipped_bytes))


def _mb(size: int) -> str:
    return f"{-(-size // _MB):,}"  # rounded up: 1 byte over a cap must not read as equal


def _kind(zf: zipfile.ZipFile) -> str:
    """"xlsx" or "ods", as calamine tells them apart; anything else is refused."""
    names = set(zf.namelist())
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "xl/workbook.bin" in names:
        raise UnreadableFile(key="err.sheet.xlsb")
    if "content.xml" in names:
        mime = _ODS_MIME
        if "mimetype" in names:
            with zf.open("mimetype") as fh:
                mime = fh.read(200).strip()
        if mime == _ODS_MIME:
            return "ods"
    raise UnreadableFile(key="err.sheet.not_workbook")


def _label(part: str) -> str:
    """How messages name a part: xl/worksheets/sheet2.xml -> sheet2."""
    return part.rsplit("/", 1)[-1].rsplit(".", 1)[0] or part


class _Scanner(Protocol):
    def feed(self, data: bytes) -> None:
        """Take the next bytes of the part (b"" at its end)."""
        ...


def _scan_part(zf: zipfile.ZipFile, info: zipfile.ZipInfo, scanner: _Scanner, *,
               whole: bool) -> None:
    """Feed the part (or its first HEAD_BYTES) to `scanner`, a buffer at a time."""
    size = _CHUNK if whole else HEAD_BYTES
    try:
        with zf.open(info) as stream:
            while chunk := stream.read(size):
                scanner.feed(chunk)
                if not whole:
                    return
            scanner.feed(b"")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError,
            OSError) as exc:  # a bad CRC, an unknown method, a password, a cut-off file
        raise UnreadableFile(key="err.sheet.damaged", reason=f"{info.filename}: {exc}") from exc


# --- reading within the caps -------------------------------------------------------------


class _CalamineSheet(Protocol):  # what python_calamine.CalamineSheet offers
    @property
    def name(self) -> str: ...
    @property
    def start(self) -> tuple[int, int] | None: ...
    @property
    def end(self) -> tuple[int, int] | None: ...
    def iter_rows(self) -> Iterator[list[Any]]: ...


def calamine_rows(sheet: _CalamineSheet, limits: SheetLimits) -> list[list[object]]:
    """The rows of a loaded sheet from A1, as Excel numbers them (what to_python with
    skip_empty_area=False gives). The extent is checked first: for an .xls this is the
    only check. Row by row rather than to_python, which holds the GIL for the whole
    sheet (about 1 s for a million rows) and so stalls every other request."""
    if sheet.end is None:
        return []
    limits.check_extent(sheet.end[0] + 1, sheet.end[1] + 1, sheet=sheet.name)
    # iter_rows starts at row 1 but at the first used column: put the columns back.
    pad: list[object] = [""] * (sheet.start[1] if sheet.start else 0)
    return [pad + row for row in sheet.iter_rows()]


def csv_rows(text: str, limits: SheetLimits, *, sheet: str) -> list[list[object]]:
    """The rows of a CSV text, refused at the first row or column past a cap (a 50 MB
    upload of line breaks is 50 million rows). Trailing empty fields, which Excel writes
    to pad a row to the widest one, are dropped and do not count."""
    rows: list[list[object]] = []
    widest = 0
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        width = len(row)
        while width and not row[width - 1]:
            width -= 1
        widest = max(widest, width)
        limits.check_extent(number, widest, sheet=sheet)
        rows.append(list(row[:width]))
    return rows


# --- .xlsx -------------------------------------------------------------------------------

# <row ...>, <c ...> or <dimension ...> with any prefix, up to the first '<' or '>'. A
# tag with a quoted '>' ends early here and is refused below if that hid an attribute
# (its quotes do not balance); one with a '<' inside (no XML, but a lenient parser may
# take it for part of a value) is refused.
_TAG = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?(row|c|dimension)(?=[\s/>])([^<>]*)([<>])")
_ATTR_R = re.compile(rb"""(?:^|\s)r\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_ATTR_REF = re.compile(rb"""(?:^|\s)ref\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_BALANCED = re.compile(rb"""(?:[^"']|"[^"]*"|'[^']*')*""")
_CELL_REF = re.compile(rb"\$?([A-Za-z]{1,4})\$?([0-9]{1,10})")


def _complete(carry: bytes, data: bytes, sheet: str) -> tuple[bytes, bytes]:
    """(the bytes up to the last whole tag, an unfinished tag left for the next buffer)."""
    buf = carry + data if carry else data
    cut = buf.rfind(b"<")
    if cut < 0 or b">" in buf[cut:] or not data:
        return buf, b""
    if len(buf) - cut > MAX_TAG_BYTES:
        raise UnreadableFile(key="err.sheet.damaged", reason=f"{sheet}: a tag over 4 MB")
    return buf[:cut], buf[cut:]


class _XlsxCells:
    """The extent of one part's cells, tag by tag (1.5 s or so per 100,000 rows of five
    cells, in the job's thread; calamine takes a third of that to read them, the import
    several times that to check them), following the position implied for a cell or row
    written without r. Every part is scanned: calamine finds sheets through the
    workbook's relationships, so a sheet may sit under any name."""

    def __init__(self, sheet: str, limits: SheetLimits) -> None:
        self.sheet = sheet
        self.limits = limits
        self.row = self.col = 0
        self.max_row = self.max_col = 0
        self.carry = b""

    def feed(self, data: bytes) -> None:
        buf, self.carry = _complete(self.carry, data, self.sheet)
        for m in _TAG.finditer(buf):
            if m.group(3) == b"<":
                raise UnreadableFile(key="err.sheet.damaged",
                                     reason=f"{self.sheet}: a '<' inside a tag")
            self._tag(m.group(1), m.group(2))

    def _attr(self, pattern: re.Pattern[bytes], attrs: bytes) -> bytes | None:
        if (b"'" in attrs or attrs.count(b'"') % 2) and _BALANCED.fullmatch(attrs) is None:
            raise UnreadableFile(key="err.sheet.damaged",
                                 reason=f"{self.sheet}: a tag with unbalanced quotes")
        found = pattern.findall(attrs)
        if len(found) > 1:  # readers differ on which one counts
            raise UnreadableFile(key="err.sheet.damaged",
                                 reason=f"{self.sheet}: an attribute given twice")
        return (found[0][0] or found[0][1]) if found else None

    def _tag(self, name: bytes, attrs: bytes) -> None:
        if name == b"c":
            ref = self._attr(_ATTR_R, attrs)
            if ref:
                m = _CELL_REF.fullmatch(ref)
                if m is None:
                    raise UnreadableFile(key="err.sheet.cell_ref", sheet=self.sheet,
                                         ref=ref.decode("ascii", "replace")[:20])
                self.col, self.row = _column_number(m.group(1)), int(m.group(2))
            else:
                self.col += 1
            row = self.row or 1
            if not attrs.endswith(b"/") and (row > self.max_row or self.col > self.max_col):
                self.max_row, self.max_col = max(row, self.max_row), max(self.col, self.max_col)
                self.limits.check_extent(self.max_row, self.max_col, sheet=self.sheet)
        elif name == b"row":
            r = self._attr(_ATTR_R, attrs)
            self.row = self._number(r) if r else self.row + 1
            self.col = 0
        else:
            self.declared(attrs)

    def _number(self, raw: bytes) -> int:
        try:
            return int(raw)
        except ValueError as exc:
            raise UnreadableFile(key="err.sheet.cell_ref", sheet=self.sheet,
                                 ref=raw.decode("ascii", "replace")[:20]) from exc

    def declared(self, attrs: bytes) -> None:
        """Refuse the range a <dimension ref="A1:XFD1048576"/> declares, if past a cap."""
        ref = self._attr(_ATTR_REF, attrs) or b""
        last = ref.rsplit(b":", 1)[-1].strip()
        m = _CELL_REF.fullmatch(last)
        if m is None:
            return  # no usable range declared: the cells will tell
        rows, cols = int(m.group(2)), _column_number(m.group(1))
        try:
            self.limits.check_extent(rows, cols, sheet=self.sheet)
        except SheetTooLarge as exc:
            raise SheetTooLarge(
                key="err.sheet.declared", sheet=self.sheet,
                ref=ref.decode("ascii", "replace")[:40], max_rows=f"{self.limits.max_rows:,}",
                max_columns=self.limits.max_columns,
                last=column_name(self.limits.max_columns)) from exc


# --- .ods --------------------------------------------------------------------------------

_TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ROW, _CELL = f"{_TABLE} table-row", f"{_TABLE} table-cell"
_COVERED = f"{_TABLE} covered-table-cell"
_SHEET, _SHEET_NAME = f"{_TABLE} table", f"{_TABLE} name"
_ROWS_REPEATED = f"{_TABLE} number-rows-repeated"
_COLUMNS_REPEATED = f"{_TABLE} number-columns-repeated"
_VALUE_TYPE = f"{_OFFICE} value-type"


class _OdsCells:
    """Rows and cells of content.xml with their repeat counts. A cell counts when it
    holds a value (a value type or any content); trailing empty repeats, which LibreOffice
    writes to the end of the sheet, do not. ODS comes from LibreOffice or WPS, so a real
    XML parser (expat, with DTDs refused) reads it."""

    def __init__(self, sheet: str, limits: SheetLimits) -> None:
        self.sheet = sheet
        self.limits = limits
        self.row = 0  # rows before the current one
        self.row_repeat = 1
        self.col = 0  # columns before the current cell
        self.cell: tuple[int, int] | None = None  # (first column, repeat) of an open cell
        self.max_row = self.max_col = 0
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.StartDoctypeDeclHandler = self._doctype
        self.parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def feed(self, data: bytes) -> None:
        try:
            self.parser.Parse(data, not data)
        except expat.ExpatError as exc:
            raise UnreadableFile(key="err.sheet.damaged",
                                 reason=f"{self.sheet}: {exc}") from exc

    def _doctype(self, *args: object) -> None:
        raise UnreadableFile(key="err.sheet.damaged", reason=f"{self.sheet}: a DOCTYPE")

    def _repeat(self, attrs: dict[str, str], name: str) -> int:
        try:
            return max(1, int(attrs.get(name, "1")))
        except ValueError as exc:
            raise UnreadableFile(key="err.sheet.damaged",
                                 reason=f"{self.sheet}: {name.split()[-1]}") from exc

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        if name == _SHEET:
            self.row = self.max_row = self.max_col = 0
            self.sheet = attrs.get(_SHEET_NAME, self.sheet)
        elif name == _ROW:
            self.row_repeat = self._repeat(attrs, _ROWS_REPEATED)
            self.col = 0
        elif name in (_CELL, _COVERED):
            repeat = self._repeat(attrs, _COLUMNS_REPEATED)
            self.cell = (self.col, repeat)
            self.col += repeat
            if _VALUE_TYPE in attrs:
                self._filled()
        elif self.cell is not None:  # content inside a cell: text, an annotation, ...
            self._filled()

    def _filled(self) -> None:
        if self.cell is None:
            return
        first, repeat = self.cell
        self.cell = None  # counted once
        rows, cols = self.row + self.row_repeat, first + repeat
        if rows > self.max_row or cols > self.max_col:
            self.max_row, self.max_col = max(rows, self.max_row), max(cols, self.max_col)
            self.limits.check_extent(self.max_row, self.max_col, sheet=self.sheet)

    def _end(self, name: str) -> None:
        if name in (_CELL, _COVERED):
            self.cell = None
        elif name == _ROW:
            self.row += self.row_repeat
            self.row_repeat = 1
