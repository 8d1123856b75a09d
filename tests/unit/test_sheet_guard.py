"""Spreadsheet uploads past the caps are refused before a reader opens them: a 1.5 KB
.xlsx with values at A1 and XFD1048576 once made calamine ask for 512 GiB and abort the
process, and one at ZZ200000 cost 4.6 GB."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import openpyxl
import pytest
import python_calamine

from selfpay.adapters.qr.sheets import read_batch_rows, write_template
from selfpay.adapters.sheet_guard import (
    DEFAULT_LIMITS,
    HEAD_BYTES,
    QUICK_SCAN_BYTES,
    SheetLimits,
    calamine_rows,
    check_workbook,
    column_name,
)
from selfpay.adapters.tabular import read_table
from selfpay.config import Settings
from selfpay.domain.ledger_errors import SheetTooLarge, UnreadableFile
from support.sheets import bomb, crafted, not_a_workbook, sheet_xml, table_xlsx, workbook

XFD = crafted([("A1", "account"), ("XFD1048576", "x")], dimension="A1:XFD1048576")
XFD_UNDECLARED = crafted([("A1", "account"), ("XFD1048576", "x")])
ZZ = crafted([("A1", "account"), ("ZZ200000", "x")], dimension="A1:ZZ200000")
ZZ_LYING = crafted([("A1", "account"), ("ZZ200000", "x")], dimension="A1:B2")
READERS: dict[str, Callable[[bytes], object]] = {
    "imports": lambda data: read_table(data, "upload.xlsx"),
    "qr batch": lambda data: read_batch_rows(data, filename="upload.xlsx"),
}


@pytest.fixture
def no_reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if calamine or openpyxl is asked to open a workbook."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reader was given a workbook the guard should refuse")

    for name in ("from_filelike", "from_path", "from_object"):
        monkeypatch.setattr(python_calamine.CalamineWorkbook, name, refuse)
    monkeypatch.setattr(openpyxl, "load_workbook", refuse)
    yield


def refused(data: bytes | Path, limits: SheetLimits = DEFAULT_LIMITS, *,
            quick: bool = False) -> UnreadableFile:
    """The error check_workbook raises, after checking it came fast and cheap."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(UnreadableFile) as caught:
            check_workbook(data, limits, quick=quick)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB to refuse a tiny file"
    return caught.value


# --- the crafted sheets of the issue -------------------------------------------------------


@pytest.mark.parametrize("quick", [True, False])
def test_a_sheet_declaring_A1_to_XFD1048576_is_refused_unread(quick: bool) -> None:
    assert len(XFD) < 2000
    exc = refused(XFD, quick=quick)
    assert isinstance(exc, SheetTooLarge) and exc.key == "err.sheet.declared"
    zh = exc.localized("zh-CN")
    assert "A1:XFD1048576" in zh and "1,000,000 行" in zh and "50 列" in zh
    assert "beyond the limits of 1,000,000 rows and 50 columns" in exc.localized("en")


@pytest.mark.parametrize("data", [XFD_UNDECLARED, ZZ_LYING],
                         ids=["no dimension", "lying dimension"])
@pytest.mark.parametrize("quick", [True, False])
def test_the_cells_themselves_are_checked_when_the_dimension_lies_or_is_missing(
        data: bytes, quick: bool) -> None:
    exc = refused(data, quick=quick)
    assert isinstance(exc, SheetTooLarge)
    assert exc.key in ("err.sheet.rows", "err.sheet.columns")


def test_a_cell_at_ZZ200000_is_refused_as_too_wide() -> None:
    exc = refused(ZZ_LYING)
    assert exc.key == "err.sheet.columns"
    assert "ZZ" in exc.localized("zh-CN") and "AX" in exc.localized("zh-CN")
    assert refused(ZZ).key == "err.sheet.declared"


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("data", [XFD, XFD_UNDECLARED, ZZ, ZZ_LYING])
def test_both_readers_refuse_a_crafted_sheet_without_opening_it(
        reader: str, data: bytes, no_reader: None) -> None:
    with pytest.raises(SheetTooLarge):
        READERS[reader](data)


def test_the_crafted_sheets_no_longer_kill_the_process(tmp_path: Path) -> None:
    """The reproduction of the issue: in a process that may use at most 2 GiB, the
    readers used to abort (512 GiB asked) or die (4.6 GB); now they refuse with an error."""
    files = {}
    for name, data in {"xfd": XFD_UNDECLARED, "zz": ZZ_LYING}.items():
        files[name] = tmp_path / f"{name}.xlsx"
        files[name].write_bytes(data)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from pathlib import Path\n"
        "from selfpay.adapters.tabular import read_table\n"
        "from selfpay.adapters.qr.sheets import read_batch_rows\n"
        "from selfpay.domain.ledger_errors import SheetTooLarge\n"
        "for path in sys.argv[1:]:\n"
        "    for read in (lambda p: read_table(Path(p), 'a.xlsx'), read_batch_rows):\n"
        "        try:\n"
        "            read(path)\n"
        "        except SheetTooLarge as exc:\n"
        "            print('refused', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *map(str, files.values())],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("refused") == 4, result.stdout


# --- zip bombs and other zips ---------------------------------------------------------------


def test_a_zip_bomb_part_is_refused_from_the_directory_alone(no_reader: None) -> None:
    data = bomb(300 << 20)  # 300 MiB of zeros in about 300 KB
    assert len(data) < 1 << 20
    exc = refused(data)
    assert isinstance(exc, SheetTooLarge) and exc.key == "err.sheet.ratio"
    assert "sharedStrings.xml" in exc.localized("zh-CN")
    with pytest.raises(SheetTooLarge):
        read_table(data, "bomb.xlsx")


def test_the_unpacked_size_caps_the_parts_and_their_total() -> None:
    noise = bytes(range(256)) * 2048  # 512 KiB that packs badly, like real data
    data = workbook(sheet_xml([("A1", "account")]),
                    extra={"xl/media/a.bin": noise, "xl/media/b.bin": noise})
    total = refused(data, SheetLimits(max_unzipped_bytes=1 << 20))
    assert total.key == "err.sheet.unzipped" and "1 MB" in total.localized("en")
    part = refused(data, SheetLimits(max_part_bytes=256 << 10))
    assert part.key == "err.sheet.part" and "xl/media/a.bin" in part.localized("en")


def test_a_zip_of_too_many_parts_is_refused_before_its_directory_is_read() -> None:
    buf = io.BytesIO(workbook(sheet_xml([("A1", "account")])))
    with zipfile.ZipFile(buf, "a") as zf:
        for n in range(1001):
            zf.writestr(f"x/{n}", b"")
    assert refused(buf.getvalue()).key == "err.sheet.parts"


@pytest.mark.parametrize("reader", READERS)
def test_a_zip_that_is_no_workbook_gets_a_clear_error(reader: str) -> None:
    with pytest.raises(UnreadableFile) as caught:
        READERS[reader](not_a_workbook())
    assert caught.value.key == "err.sheet.not_workbook"
    assert "另存为 .xlsx" in caught.value.localized("zh-CN")
    assert "not an Excel workbook" in caught.value.localized("en")


def test_a_binary_workbook_is_refused_with_advice() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("xl/workbook.bin", b"\x83\x01")
    assert refused(buf.getvalue()).key == "err.sheet.xlsb"


def test_a_cut_off_zip_is_damaged() -> None:
    assert refused(XFD[: len(XFD) // 2]).key == "err.sheet.damaged"


# --- cells written in unusual ways -----------------------------------------------------------


def refused_sheet(data: str, *, dimension: str | None = None) -> UnreadableFile:
    return refused(workbook(sheet_xml([("A1", "account")], dimension=dimension, data=data)))


def test_cells_without_a_reference_count_from_their_row() -> None:
    row = '<row r="2">' + '<c t="inlineStr"><is><t>x</t></is></c>' * 51 + "</row>"
    assert refused_sheet(row).key == "err.sheet.columns"
    row = "<row><c><v>1</v></c></row>"  # neither the row nor the cell says where
    check_workbook(workbook(sheet_xml(data=row * 5)), SheetLimits(max_rows=5))
    with pytest.raises(SheetTooLarge):
        check_workbook(workbook(sheet_xml(data=row * 6)), SheetLimits(max_rows=5))


@pytest.mark.parametrize("tag", [
    '<x:c r="XFD1"><x:v>1</x:v></x:c>',  # a namespace prefix
    "<c r='XFD1'><v>1</v></c>",  # single quotes
    '<c s="1"\n   r="XFD1"><v>1</v></c>',  # r not first, a line break
    '<c r="$XFD$1"><v>1</v></c>',
])
def test_a_far_cell_is_found_however_its_tag_is_written(tag: str) -> None:
    assert refused_sheet(f'<row r="1">{tag}</row>').key == "err.sheet.columns"


@pytest.mark.parametrize("tag", [
    '<c x=">" r="XFD1"><v>1</v></c>',  # a quoted '>' that would hide r
    '<c x="<" r="XFD1"><v>1</v></c>',  # a '<' a lenient parser takes for part of x
    '<c r="A1" r="XFD1"><v>1</v></c>',  # readers differ on which r counts
    '<c r="1A"><v>1</v></c>',
])
def test_a_cell_tag_readers_could_read_two_ways_is_refused(tag: str) -> None:
    exc = refused_sheet(f'<row r="2">{tag}</row>')
    assert exc.key in ("err.sheet.damaged", "err.sheet.cell_ref")


def test_a_far_cell_split_across_two_buffers_is_still_found() -> None:
    head = sheet_xml([("A1", "account")], data="")
    prefix = head[: head.index(b"</sheetData>")]
    for offset in (1, 5, 9):  # the buffer ends inside the far cell's tag
        filler = (1 << 20) - len(prefix) - len(b'<row r="2">') - offset
        far = (f'<row r="2"><c r="B2" t="inlineStr"><is><t>{"x" * (filler - 45)}</t></is></c>'
               '<c r="XFD2"><v>1</v></c></row>')
        data = workbook(sheet_xml([("A1", "account")], data=far))
        with pytest.raises(SheetTooLarge):
            check_workbook(data, SheetLimits())


def test_styled_empty_cells_past_the_caps_are_fine_as_calamine_ignores_them() -> None:
    data = workbook(sheet_xml([("A1", "account"), ("A2", "0012345678")],
                              data='<row r="1048576"><c r="XFD1048576" s="1"/></row>'))
    check_workbook(data, SheetLimits())
    table = read_table(data, "styled.xlsx")
    assert table.headers == ["account"] and [r.cells for r in table.rows] == [["0012345678"]]


def test_the_grid_of_rows_times_columns_is_capped() -> None:
    data = crafted([("A1", "account"), ("J200", "x")])  # 200 x 10
    check_workbook(data, SheetLimits(max_cells=2000))
    assert refused(data, SheetLimits(max_cells=1999)).key == "err.sheet.cells"


def test_the_quick_check_reads_only_the_head_of_a_big_sheet() -> None:
    """On a request thread only the head of a big sheet is read; the readers' full check
    finds the far cell at its end."""
    rows = [[f"{n:010d}", "x" * 100] for n in range(QUICK_SCAN_BYTES // 100)]
    data = table_xlsx(rows, data_after='<row r="999999"><c r="ZZ999999"><v>1</v></c></row>')
    check_workbook(data, SheetLimits(), quick=True)
    with pytest.raises(SheetTooLarge):
        check_workbook(data, SheetLimits())
    assert HEAD_BYTES < QUICK_SCAN_BYTES


# --- .ods, CSV, .xls -----------------------------------------------------------------------


def ods(rows: str) -> bytes:
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        '<office:body><office:spreadsheet><table:table table:name="户表">' + rows +
        "</table:table></office:spreadsheet></office:body></office:document-content>")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        zf.writestr("META-INF/manifest.xml", '<?xml version="1.0"?><manifest:manifest '
                    'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>')
    return buf.getvalue()


ODS_CELL = '<table:table-cell office:value-type="string"><text:p>{}</text:p></table:table-cell>'


def test_an_ods_cell_repeated_past_the_caps_is_refused_unread(no_reader: None) -> None:
    repeated = ods('<table:table-row table:number-rows-repeated="100000">'
                   '<table:table-cell table:number-columns-repeated="1000" '
                   'office:value-type="string"><text:p>x</text:p></table:table-cell>'
                   "</table:table-row>")
    assert len(repeated) < 1000
    exc = refused(repeated)
    assert exc.key == "err.sheet.columns" and "户表" in exc.localized("zh-CN")
    with pytest.raises(SheetTooLarge):
        read_table(repeated, "a.ods")


def test_an_ods_with_the_empty_rows_libreoffice_writes_reads() -> None:
    data = ods(f"<table:table-row>{ODS_CELL.format('account')}</table:table-row>"
               f"<table:table-row>{ODS_CELL.format('0012345678')}</table:table-row>"
               '<table:table-row table:number-rows-repeated="1048574">'
               '<table:table-cell table:number-columns-repeated="1024"/></table:table-row>')
    check_workbook(data, SheetLimits())
    assert [r.account_raw for r in read_batch_rows(data)] == ["0012345678"]


def test_a_csv_stops_at_the_first_row_or_column_past_a_cap() -> None:
    limits = SheetLimits(max_rows=100, max_columns=5)
    ok = "account,name,,,,,,,\r\n" + "0012,张三,,,\r\n" * 99  # trailing commas: padding
    assert len(read_table(ok.encode(), "a.csv", limits=limits).rows) == 99
    with pytest.raises(SheetTooLarge) as rows:
        read_table((ok + "0013,李四\r\n").encode(), "a.csv", limits=limits)
    assert rows.value.key == "err.sheet.rows" and "a.csv" in rows.value.localized("en")
    with pytest.raises(SheetTooLarge) as cols:
        read_batch_rows(b"account\r\n1,2,3,4,5,6\r\n", filename="b.csv", limits=limits)
    assert cols.value.key == "err.sheet.columns"


def test_a_csv_of_line_breaks_is_refused_at_the_row_cap_not_read_whole() -> None:
    started = time.perf_counter()
    with pytest.raises(SheetTooLarge):
        read_table(b"account\n" + b"\n" * 1_200_000, "blank.csv")
    assert time.perf_counter() - started < 5


class FarSheet:
    """What calamine gives for an .xls reaching IV65536 (the format's limit): the extent
    must be refused before a row is converted."""

    name = "Sheet1"
    start = (0, 0)
    end = (65535, 255)

    def iter_rows(self) -> Iterator[list[object]]:
        raise AssertionError("rows converted before the extent was checked")


def test_a_loaded_sheet_is_checked_before_its_rows_are_converted() -> None:
    with pytest.raises(SheetTooLarge) as caught:
        calamine_rows(FarSheet(), SheetLimits())
    assert caught.value.key == "err.sheet.columns"


def test_rows_keep_excel_numbering_when_data_starts_past_A1() -> None:
    data = crafted([("B3", "account"), ("D5", "0012")])
    sheet = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(0)
    assert calamine_rows(sheet, SheetLimits()) == sheet.to_python(skip_empty_area=False)


# --- what still reads ------------------------------------------------------------------------


def test_a_normal_workbook_and_the_template_pass(tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["业务类型", "用户编号", "户名"])
    for n in range(2000):
        ws.append(["ELEC", f"{n:010d}", "张三"])
    path = tmp_path / "normal.xlsx"
    wb.save(path)
    check_workbook(path, SheetLimits())
    assert len(read_table(path, path.name).rows) == 2000
    template = tmp_path / "template.xlsx"
    write_template(template, audience="web")
    check_workbook(template, SheetLimits())


def test_limits_come_from_the_settings() -> None:
    settings = Settings(sheet_max_rows=5000, sheet_max_columns=8, sheet_max_cells=40_000,
                        sheet_max_unzipped_mb=64)
    limits = SheetLimits.from_settings(settings)
    assert (limits.max_rows, limits.max_columns, limits.max_cells) == (5000, 8, 40_000)
    assert limits.max_unzipped_bytes == limits.max_part_bytes == 64 << 20
    assert SheetLimits.from_settings(Settings()) == SheetLimits()


def test_column_names() -> None:
    assert [column_name(n) for n in (1, 26, 27, 50, 702, 16384)] == [
        "A", "Z", "AA", "AX", "ZZ", "XFD"]
