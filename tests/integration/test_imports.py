from __future__ import annotations

import datetime as dt
import io
import re
import time
from pathlib import Path

import openpyxl
import pytest

from selfpay.adapters.tabular import read_table
from selfpay.domain.errors import InvalidInput
from selfpay.domain.ledger_errors import UnreadableFile
from selfpay.services.imports import import_accounts, import_bills

CJK = re.compile(r"[\u3400-\u9fff\uff01-\uff5e\u3000-\u303f]")
ENGLISH_WORD = re.compile(r"\b[a-z]{3,}\b")


def one_language(errors, values=()):
    """Each row error in zh-CN holds no English word (but the quoted `values`), in
    English no Chinese; neither names its own row (the page's row column, the CLI's
    "row N: " do)."""
    for e in errors:
        zh, en = e.localized("zh-CN"), e.localized("en")
        words = zh
        for value in values:
            words = words.replace(value, "")
        assert CJK.search(zh) and not ENGLISH_WORD.search(words), zh
        assert not CJK.search(en), en
        assert f"第 {e.row} 行" not in zh and f"row {e.row}" not in en.lower(), (zh, en)

NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
ACCOUNT_HEADERS_EN = ["Biller", "Account", "Name", "Phone", "Address"]
ACCOUNT_HEADERS_ZH = ["业务类型", "用户编号", "户名", "电话", "地址"]
BILL_HEADERS_EN = ["biller", "account", "period", "amount", "due_date"]
BILL_HEADERS_ZH = ["业务类型", "用户编号", "账期", "金额", "到期日"]


def xlsx(rows: list[list[object]]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row, start=1):
            if value is not None:
                ws.cell(r, c, value)
    buf = io.BytesIO()
    wb.save(buf)
    wb.close()
    return buf.getvalue()


def csv_bytes(rows: list[list[object]], encoding: str = "utf-8-sig") -> bytes:
    return "\r\n".join(",".join(str(c) for c in row) for row in rows).encode(encoding)


def run_import(uow_factory, kind, data, filename, skip_invalid=False):
    table = read_table(data, filename)
    fn = import_accounts if kind == "accounts" else import_bills
    return fn(uow_factory(), table, filename=filename, actor="alice",
              skip_invalid=skip_invalid, now=NOW)


def all_accounts(uow_factory):
    with uow_factory() as uow:
        return {(a.biller, a.number): a for a in uow.accounts.search(limit=10**6).items}


def all_bills(uow_factory):
    with uow_factory() as uow:
        return {(b.biller, b.account, b.period): b for b in uow.bills.search(limit=10**6).items}


# -- reading files ---------------------------------------------------------------------


def test_xlsx_rows_keep_excel_row_numbers_and_skip_empty_rows():
    data = xlsx([["biller", "account"], ["ELEC", "001"], [None, None], ["GAS", 12345678]])
    table = read_table(data, "a.XLSX")
    assert table.headers == ["biller", "account"]
    assert [(r.row_number, r.cells) for r in table.rows] == [
        (2, ["ELEC", "001"]), (4, ["GAS", 12345678.0])
    ]


def test_csv_with_bom_and_in_gbk(tmp_path: Path):
    rows = [ACCOUNT_HEADERS_ZH, ["ELEC", "0012", "张三", "", ""]]
    for encoding in ("utf-8-sig", "utf-8", "gbk"):
        path = tmp_path / f"{encoding}.csv"
        path.write_bytes(csv_bytes(rows, encoding))
        table = read_table(path, path.name)
        assert table.headers == ACCOUNT_HEADERS_ZH
        assert table.rows[0].cells[:3] == ["ELEC", "0012", "张三"]


@pytest.mark.parametrize(
    ("data", "filename"),
    [(b"hello", "x.txt"), (b"not a workbook", "x.xlsx"), (b"\xd0\xcf\x11\xe0junk", "x.xls"),
     (b"", "x.csv"), (xlsx([["a"]])[:200], "x.xlsx"), (xlsx([["a"], ["b"]]), "x.csv")],
)
def test_unreadable_files_give_a_clear_error(data, filename):
    with pytest.raises(UnreadableFile) as info:
        read_table(data, filename)
    error = info.value
    assert isinstance(error, InvalidInput) and error.key.startswith(("err.file.", "err.sheet."))
    zh, en = error.localized("zh-CN"), error.localized("en")
    assert CJK.search(zh) and not CJK.search(en) and str(error) == en
    if error.key != "err.sheet.damaged":  # calamine's own (English) reason is quoted as is
        assert filename in zh or filename[1:] in zh or error.key == "err.file.empty", zh


# -- accounts ------------------------------------------------------------------------


def test_accounts_from_xlsx_with_english_headers_keep_leading_zeros(uow_factory, seeded):
    data = xlsx([
        ACCOUNT_HEADERS_EN,
        ["elec", "0000012345", "赵六", "138 1234 5678", "长安街 1 号"],
        ["GAS", 12345678, "钱七", 13912345678, None],
        ["ELEC", "0012345678", "张三丰", "13812345678", "搬到了新家"],  # known: updated
    ])
    run = run_import(uow_factory, "accounts", data, "accounts.xlsx")
    assert (run.status, run.total_rows, run.imported, run.skipped) == ("imported", 3, 3, 0)
    accounts = all_accounts(uow_factory)
    assert accounts[("ELEC", "0000012345")].phone == "13812345678"
    assert accounts[("GAS", "12345678")].phone == "13912345678"
    assert accounts[("ELEC", "0012345678")].address == "搬到了新家"
    with uow_factory() as uow:
        entry = uow.audit.list(action="import.accounts").items[0]
        assert entry.actor == "alice" and entry.target == "accounts.xlsx"
        assert entry.detail["inserted"] == 2 and entry.detail["updated"] == 1
        assert uow.imports.get(run.id).status == "imported"


def test_accounts_from_csv_with_chinese_headers(uow_factory, seeded):
    data = csv_bytes([ACCOUNT_HEADERS_ZH, ["WATER", "W-002", "孙八", "+86-10-1234", "北京"]])
    run = run_import(uow_factory, "accounts", data, "用户.csv")
    assert run.status == "imported"
    assert all_accounts(uow_factory)[("WATER", "W-002")].phone == "+86101234"


def test_a_bad_accounts_file_writes_nothing_but_its_errors(uow_factory, seeded):
    before = all_accounts(uow_factory)
    data = xlsx([
        ACCOUNT_HEADERS_EN,
        ["ELEC", "100", "好人", "", ""],
        ["NOPE", "101", "甲", "", ""],
        ["ELEC", "1 02", "乙", "", ""],
        ["ELEC", "103", None, "", ""],
        ["ELEC", "104", "丙", "phone?", ""],
        ["ELEC", "100", "重复", "", ""],
    ])
    run = run_import(uow_factory, "accounts", data, "bad.xlsx")
    assert run.status == "rejected" and run.imported == 0 and run.skipped == 6
    assert [e.row for e in run.errors] == [3, 4, 5, 6, 7]
    assert run.errors[0].localized("zh-CN") == "业务类型 NOPE 不存在。"
    assert run.errors[0].localized("en") == run.errors[0].message == "There is no biller NOPE."
    assert run.errors[4].localized("zh-CN") == "与第 2 行重复（ELEC 100）。"
    assert run.errors[4].localized("en") == "Repeats row 2 (ELEC 100)."
    one_language(run.errors, values=("NOPE", "1 02", "phone?", "ELEC 100"))
    assert all_accounts(uow_factory) == before
    with uow_factory() as uow:
        assert uow.imports.get(run.id).errors == run.errors
        assert uow.audit.list(action="import.accounts").items[0].detail["status"] == "rejected"


def test_skip_invalid_imports_the_good_rows(uow_factory, seeded):
    data = csv_bytes([ACCOUNT_HEADERS_EN, ["ELEC", "200", "好人", "", ""],
                      ["ELEC", "", "无号", "", ""], ["ELEC", "201", "好人二", "", ""]])
    run = run_import(uow_factory, "accounts", data, "a.csv", skip_invalid=True)
    assert (run.status, run.imported, run.skipped) == ("partial", 2, 1)
    assert run.errors[0].row == 3 and run.errors[0].key == "err.account.empty"
    assert {("ELEC", "200"), ("ELEC", "201")} <= set(all_accounts(uow_factory))


def test_a_missing_column_is_one_clear_error(uow_factory, seeded):
    run = run_import(uow_factory, "accounts", csv_bytes([["biller", "name"], ["ELEC", "x"]]),
                     "a.csv")
    assert run.status == "rejected" and len(run.errors) == 1
    assert run.errors[0].row == 1
    assert run.errors[0].localized("zh-CN") == "缺少必需的列：用户编号（第一行须为表头）。"
    assert run.errors[0].localized("en") == (
        "Missing required columns: account (the first row must hold the headers).")
    with uow_factory() as uow:  # stored with its key: told later in the reader's language
        assert uow.imports.get(run.id).errors[0].localized("en").startswith("Missing")


# -- bills ---------------------------------------------------------------------------


def test_bills_from_xlsx_parse_amounts_periods_and_dates_exactly(uow_factory, seeded):
    data = xlsx([
        BILL_HEADERS_EN,
        ["ELEC", "0099999999", "2026-10", "0.1", dt.date(2026, 11, 30)],
        ["ELEC", "0099999999", 202611, "12.30", "2026/12/31"],
        ["ELEC", "0099999999", dt.datetime(2026, 12, 1), 1234.5, 46418],
        ["WATER", "W-001", "2026/11", 88, "2026-12-01"],
        ["ELEC", "0012345678", "2026-11", "¥1,000.00", None],
    ])
    run = run_import(uow_factory, "bills", data, "bills.xlsx")
    assert run.status == "imported", run.errors
    bills = all_bills(uow_factory)
    got = {k: (b.amount_fen, b.due_date) for k, b in bills.items() if k[2] >= "2026-10"
           and k[1] == "0099999999"}
    assert got == {
        ("ELEC", "0099999999", "2026-10"): (10, dt.date(2026, 11, 30)),
        ("ELEC", "0099999999", "2026-11"): (1230, dt.date(2026, 12, 31)),
        ("ELEC", "0099999999", "2026-12"): (123450, dt.date(2027, 1, 31)),
    }
    assert bills[("WATER", "W-001", "2026-11")].amount_fen == 8800
    assert bills[("ELEC", "0012345678", "2026-11")].due_date is None


def test_bills_from_csv_with_chinese_headers(uow_factory, seeded):
    data = csv_bytes([BILL_HEADERS_ZH, ["ELEC", "0099999999", "202610", "12.30", "2026-11-30"]],
                     "gbk")
    run = run_import(uow_factory, "bills", data, "账单.csv")
    assert run.status == "imported"
    assert all_bills(uow_factory)[("ELEC", "0099999999", "2026-10")].amount_fen == 1230


def test_a_bad_bills_file_gives_row_errors_and_writes_nothing(uow_factory, seeded):
    before = all_bills(uow_factory)
    data = csv_bytes([
        BILL_HEADERS_EN,
        ["ELEC", "0099999999", "2026-10", "12.30", ""],
        ["ELEC", "0099999999", "2026-11", "12.345", ""],
        ["ELEC", "0099999999", "2026-13", "1", ""],
        ["ELEC", "0099999999", "2026-12", "0", ""],
        ["ELEC", "0099999999", "2027-01", "-5", ""],
        ["ELEC", "0099999999", "2027-02", "abc", ""],
        ["ELEC", "0099999999", "2027-03", "1", "31/12/2026"],
        ["ELEC", "404", "2026-10", "1", ""],
        ["ELEC", "0012345678", "2026-10", "1", ""],
        ["ELEC", "0099999999", "2026-10", "2", ""],
    ])
    run = run_import(uow_factory, "bills", data, "bills.csv")
    assert run.status == "rejected"
    messages = {e.row: e.localized("zh-CN") for e in run.errors}
    english = {e.row: e.localized("en") for e in run.errors}
    assert messages[3] == "金额最多两位小数。"
    assert messages[4] == "账期无效（2026-13）：应为 2026-10 或 202610 这样的格式。"
    assert messages[5] == messages[6] == "金额必须大于零。"
    assert english[7] == "Not an amount: 'abc'"
    assert english[8] == "Invalid due date '31/12/2026': write it like 2026-10-31."
    assert messages[9] == "用户 ELEC 404 不存在，请先导入用户档案。"
    assert english[10] == "A bill for ELEC 0012345678 2026-10 already exists."
    assert messages[11] == "与第 2 行重复（ELEC 0099999999 2026-10）。"
    assert sorted(messages) == list(range(3, 12))
    assert [e.message for e in run.errors] == [english[e.row] for e in run.errors]
    one_language(run.errors, values=("2026-13", "'abc'", "31/12/2026", "ELEC 404",
                                     "ELEC 0012345678", "ELEC 0099999999"))
    assert all_bills(uow_factory) == before


def test_bills_with_skip_invalid(uow_factory, seeded):
    data = csv_bytes([BILL_HEADERS_EN, ["ELEC", "0099999999", "2026-10", "1", ""],
                      ["ELEC", "404", "2026-10", "1", ""]])
    run = run_import(uow_factory, "bills", data, "b.csv", skip_invalid=True)
    assert (run.status, run.imported, run.skipped) == ("partial", 1, 1)
    assert ("ELEC", "0099999999", "2026-10") in all_bills(uow_factory)


def test_ten_thousand_rows_import_quickly(uow_factory, seeded):
    accounts = [ACCOUNT_HEADERS_EN] + [
        ["ELEC", f"{i:010d}", f"用户{i}", f"139{i:08d}", f"第 {i} 号"] for i in range(10_000)
    ]
    bills = [BILL_HEADERS_EN] + [
        ["ELEC", f"{i:010d}", "2026-10", f"{i % 500 + 1}.{i % 100:02d}", "2026-11-30"]
        for i in range(1, 10_001)
    ]
    accounts_xlsx, bills_csv = xlsx(accounts), csv_bytes(bills)
    started = time.perf_counter()
    run = run_import(uow_factory, "accounts", accounts_xlsx, "big.xlsx")
    assert (run.status, run.imported) == ("imported", 10_000)
    bill_run = run_import(uow_factory, "bills", bills_csv, "big.csv",
                          skip_invalid=True)  # account 10000 does not exist
    assert (bill_run.status, bill_run.imported) == ("partial", 9_999)
    again = run_import(uow_factory, "accounts", accounts_xlsx, "big.xlsx")
    assert again.imported == 10_000
    elapsed = time.perf_counter() - started
    assert elapsed < 15, f"10,000-row imports took {elapsed:.1f}s"
    with uow_factory() as uow:
        assert uow.accounts.count() == 10_003
