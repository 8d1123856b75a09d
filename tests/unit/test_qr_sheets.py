from __future__ import annotations

import io
import re
from pathlib import Path

import openpyxl
import pytest

from selfpay.adapters.qr.sheets import (
    BatchPlan,
    BatchRow,
    read_batch_rows,
    validate_batch_rows,
    write_template,
)
from selfpay.domain.errors import InvalidBillerCode
from selfpay.services import ports

CJK = re.compile(r"[\u3400-\u9fff\uff01-\uff5e\u3000-\u303f]")


def xlsx(rows: list[list[object]], *, text_column_a: bool = False) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    if text_column_a:
        for (cell,) in ws.iter_rows(min_col=1, max_col=1):
            cell.number_format = "@"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def plan_of(data: bytes, default: str | None = "ELEC", known: set[str] | None = None) -> BatchPlan:
    return validate_batch_rows(read_batch_rows(data), default, known)


def test_numeric_cells_become_account_strings_without_fraction_or_exponent() -> None:
    plan = plan_of(xlsx([["用户编号"], [12345678], [12345679.0], [1.2345678901e10]]))
    assert plan.errors == []
    assert plan.items == [("ELEC", "12345678"), ("ELEC", "12345679"), ("ELEC", "12345678901")]
    # numeric cells may have lost leading zeros: one warning naming the rows
    (warning,) = plan.warnings
    assert "2、3、4" in warning.localized("zh-CN") and "2, 3, 4" in warning.localized("en")


def test_text_cells_keep_leading_zeros_and_are_normalized() -> None:
    rows = [["户号"], ["0012345678"], ["  0000000001 "], ["\u3000００１２３\u3000"], ["a-12"]]
    plan = plan_of(xlsx(rows, text_column_a=True))
    assert plan.errors == [] and plan.warnings == []
    assert [a for _, a in plan.items] == ["0012345678", "0000000001", "00123", "A-12"]


def test_duplicates_give_one_code_and_a_warning_naming_both_rows() -> None:
    rows = [
        ["用户编号", "业务类型"],
        ["001", "ELEC"],
        ["002", "ELEC"],
        [" 001", "elec"],
        ["001", "W"],
    ]
    plan = plan_of(xlsx(rows))
    assert plan.items == [("ELEC", "001"), ("ELEC", "002"), ("W", "001")]
    (warning,) = plan.warnings
    assert warning.localized("zh-CN") == "第 4 行与第 2 行重复（ELEC 001），只生成一个二维码。"
    assert warning.localized("en") == "Row 4 repeats row 2 (ELEC 001); one code is made."


def test_invalid_rows_are_reported_with_their_excel_row_numbers() -> None:
    rows: list[list[object]] = [
        ["用户编号", "业务类型"],  # row 1
        ["0012", "ELEC"],  # row 2 ok
        [None, None],  # row 3 empty: skipped, not an error
        ["12#4", "ELEC"],  # row 4 bad characters
        ["0013", "1BAD"],  # row 5 bad biller code
        [12.5, "ELEC"],  # row 6 not a whole number
        [None, "ELEC"],  # row 7 biller but no account
        ["0014", "GAS"],  # row 8 unknown biller
    ]
    plan = plan_of(xlsx(rows), known={"ELEC", "WATER"})
    assert plan.items == [("ELEC", "0012")]
    assert [e.row_number for e in plan.errors] == [4, 5, 6, 7, 8]
    by_row = {e.row: e.localized("zh-CN") for e in plan.errors}
    assert by_row[4].startswith("用户编号无效（12#4）：只能包含")  # the domain's own words
    assert by_row[5].startswith("业务代码无效（1BAD）")
    assert "整数" in by_row[6]
    assert by_row[7] == "请输入用户编号。"
    assert "GAS" in by_row[8] and "ELEC" in by_row[8]
    assert all(isinstance(e, ports.RowError) for e in plan.errors)
    # the row is named by its column (or the command line's "row N: "), never twice
    assert not any("行" in m for m in by_row.values())
    english = {e.row: e.localized("en") for e in plan.errors}
    assert english[8] == "Unknown biller GAS (configured: ELEC, WATER)."
    assert not any(CJK.search(m) or "row" in m.lower() for m in english.values())
    assert [e.message for e in plan.errors] == list(english.values())  # the logs: English


def test_a_row_without_biller_needs_a_default() -> None:
    data = xlsx([["account", "biller"], ["1", None], ["2", "W"]])
    plan = plan_of(data, default=None)
    assert plan.items == [("W", "2")]
    assert [e.row_number for e in plan.errors] == [2]
    assert "命令行参数 --biller" in plan.errors[0].localized("zh-CN")  # the CLI's own control
    assert "the --biller option" in plan.errors[0].localized("en")
    web = validate_batch_rows(read_batch_rows(data), None, None, audience="web")
    assert "上传页面上的“默认业务类型”" in web.errors[0].localized("zh-CN")
    assert "--" not in web.errors[0].localized("en")
    assert plan_of(data, default="elec").items == [("ELEC", "1"), ("W", "2")]


def test_a_bad_default_biller_is_the_callers_error() -> None:
    rows = [BatchRow(2, "1", None)]
    with pytest.raises(InvalidBillerCode):
        validate_batch_rows(rows, "1X", None)
    with pytest.raises(InvalidBillerCode) as refused:
        validate_batch_rows(rows, "GAS", {"ELEC"})
    assert refused.value.localized("zh-CN") == "未知的默认业务类型：GAS"
    assert str(refused.value) == "Unknown default biller: GAS"


@pytest.mark.parametrize(
    ("header", "biller_col"),
    [
        (["用户编号", "业务类型"], 1),
        (["账号", "单位代码"], 1),
        (["Account", "BILLER"], 1),
        (["biller", "Account Number"], 0),
        (["备注", "户号", "业务类型（可选）"], 2),
    ],
)
def test_chinese_and_english_headers_are_found_in_any_column(
    header: list[str], biller_col: int
) -> None:
    account_col = 1 if header[0] in ("biller", "备注") else 0
    row: list[object] = ["x"] * len(header)
    row[account_col], row[biller_col] = "007", "WATER"
    rows = read_batch_rows(xlsx([["2024 年 电费用户"], header, row]))
    assert rows == [BatchRow(3, "007", "WATER")]


def test_a_sheet_without_header_has_accounts_in_column_a(tmp_path: Path) -> None:
    path = tmp_path / "plain.xlsx"
    path.write_bytes(xlsx([["0012345678"], [None], ["0012345679", "WATER"]]))
    assert read_batch_rows(path) == [
        BatchRow(1, "0012345678", None),
        BatchRow(3, "0012345679", "WATER"),
    ]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gbk"])
def test_csv_in_utf8_with_or_without_bom_and_gbk(tmp_path: Path, encoding: str) -> None:
    text = "用户编号,业务类型\r\n0012345678,ELEC\r\n,\r\n００９,\r\n"
    data = text.encode(encoding)
    expected = [BatchRow(2, "0012345678", "ELEC"), BatchRow(4, "００９", None)]
    assert read_batch_rows(data) == expected
    path = tmp_path / "accounts.csv"
    path.write_bytes(data)
    assert read_batch_rows(path) == expected
    assert plan_of(data).items == [("ELEC", "0012345678"), ("ELEC", "009")]


def test_a_csv_upload_is_recognized_by_its_filename() -> None:
    assert read_batch_rows(b"account\n1\n", filename="up.CSV") == [BatchRow(2, "1", None)]


def test_template_has_text_account_column_examples_and_instructions(tmp_path: Path) -> None:
    path = tmp_path / "template.xlsx"
    write_template(path)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["accounts", "说明"]
    ws = wb["accounts"]
    assert [c.value for c in ws[1]] == ["用户编号", "业务类型"]
    assert all(ws.cell(row=r, column=1).number_format == "@" for r in range(2, 1000))
    text = "\n".join(str(c.value) for (c,) in wb["说明"].iter_rows() if c.value)
    assert "文本" in text and "English" in text
    rows = read_batch_rows(path)
    assert rows[0] == BatchRow(2, "0012345678", "ELEC")  # leading zeros survive the trip
    assert validate_batch_rows(rows, "ELEC", None).errors == []


def test_english_template_has_english_headers() -> None:
    buf = io.BytesIO()
    write_template(buf, locale="en")
    ws = openpyxl.load_workbook(io.BytesIO(buf.getvalue()))["accounts"]
    assert [c.value for c in ws[1]] == ["account", "biller"]
