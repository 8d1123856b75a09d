"""Workbooks built by hand with zipfile, byte for byte as a test needs them: a crafted
sheet (a value at XFD1048576, a <dimension> that lies, a zip bomb) is a few hundred bytes,
and a big plain sheet of 100,000 rows is written in a fraction of a second (openpyxl
takes several)."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from xml.sax.saxutils import escape

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>")
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="accounts" sheetId="1" r:id="rId1"/></sheets></workbook>')
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>')
_REF = re.compile(r"([A-Z]+)(\d+)")


def cell(ref: str, value: object) -> str:
    """<c> of an inline string (or of a number, for an int or float)."""
    if isinstance(value, int | float):
        return f'<c r="{ref}"><v>{value}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t>{escape(str(value))}</t></is></c>'


def sheet_xml(cells: Iterable[tuple[str, object]] = (), *, dimension: str | None = None,
              data: str = "") -> bytes:
    """A worksheet whose <sheetData> holds `cells` ((ref, value), grouped into rows) and
    then the raw `data`; with <dimension ref=...> only if given."""
    rows: dict[int, list[str]] = {}
    for ref, value in cells:
        match = _REF.fullmatch(ref)
        assert match, ref
        rows.setdefault(int(match.group(2)), []).append(cell(ref, value))
    body = "".join(f'<row r="{n}">{"".join(cs)}</row>' for n, cs in sorted(rows.items()))
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"{dim}<sheetData>{body}{data}</sheetData></worksheet>").encode()


def workbook(sheet: bytes, *, extra: Mapping[str, bytes] | None = None) -> bytes:
    """An .xlsx of one sheet (named "accounts"), plus `extra` parts."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        zf.writestr("xl/workbook.xml", _WORKBOOK)
        zf.writestr("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS)
        zf.writestr("xl/worksheets/sheet1.xml", sheet)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def crafted(cells: Iterable[tuple[str, object]], *, dimension: str | None = None) -> bytes:
    """A tiny .xlsx with these cells, e.g. [("A1", "x"), ("XFD1048576", "y")]."""
    return workbook(sheet_xml(cells, dimension=dimension))


def table_xlsx(rows: Sequence[Sequence[object]], *, data_after: str = "",
               dimension: str | None = None) -> bytes:
    """An .xlsx of `rows` from A1 (None leaves a cell out), then the raw `data_after`."""
    def column(index: int) -> str:
        name = ""
        while index >= 0:
            index, rest = divmod(index, 26)
            name = chr(65 + rest) + name
            index -= 1
        return name

    parts = []
    for r, row in enumerate(rows, start=1):
        cells = "".join(cell(f"{column(c)}{r}", v) for c, v in enumerate(row) if v is not None)
        parts.append(f'<row r="{r}">{cells}</row>')
    return workbook(sheet_xml(dimension=dimension, data="".join(parts) + data_after))


def bomb(size: int, *, part: str = "xl/sharedStrings.xml") -> bytes:
    """A valid little .xlsx with one more part that unpacks to `size` zero bytes
    (written a MiB at a time: the test never holds it whole)."""
    buf = io.BytesIO(workbook(sheet_xml([("A1", "account")])))
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as zf, \
            zf.open(part, "w", force_zip64=True) as out:
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            out.write(chunk)
    return buf.getvalue()


def not_a_workbook() -> bytes:
    """A zip of a picture and a note: what a user may upload by mistake."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
        zf.writestr("readme.txt", "二维码照片")
    return buf.getvalue()
