from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path

import openpyxl
import pytest

from selfpay.adapters.tabular import read_table
from selfpay.domain.errors import InvalidInput
from selfpay.domain.ledger_errors import UnreadableFile
from selfpay.services.imports import import_accounts, import_bills

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
    assert isinstance(info.value, InvalidInput) and "(" in str(info.value)


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
    assert run.errors[0].message.startswith("第 3 行：业务类型不存在")
    assert "duplicates row 2" in run.errors[4].message
    assert all_accounts(uow_factory) == before
    with uow_factory() as uow:
        assert uow.imports.get(run.id).errors == run.errors
        assert uow.audit.list(action="import.accounts").items[0].detail["status"] == "rejected"


def test_skip_invalid_imports_the_good_rows(uow_factory, seeded):
    data = csv_bytes([ACCOUNT_HEADERS_EN, ["ELEC", "200", "好人", "", ""],
                      ["ELEC", "", "无号", "", ""], ["ELEC", "201", "好人二", "", ""]])
    run = run_import(uow_factory, "accounts", data, "a.csv", skip_invalid=True)
    assert (run.status, run.imported, run.skipped) == ("partial", 2, 1)
    assert run.errors[0].row == 3 and "(account number is empty)" in run.errors[0].message
    assert {("ELEC", "200"), ("ELEC", "201")} <= set(all_accounts(uow_factory))


def test_a_missing_column_is_one_clear_error(uow_factory, seeded):
    run = run_import(uow_factory, "accounts", csv_bytes([["biller", "name"], ["ELEC", "x"]]),
                     "a.csv")
    assert run.status == "rejected" and len(run.errors) == 1
    assert run.errors[0].row == 1 and "用户编号 (account)" in run.errors[0].message


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
    messages = {e.row: e.message for e in run.errors}
    assert messages[3] == "第 3 行：金额最多两位小数 (amount has more than two decimals)"
    assert "账期无效" in messages[4]
    assert "(amount must be greater than zero)" in messages[5] and "大于零" in messages[6]
    assert "(not an amount" in messages[7]
    assert "(due date must look like" in messages[8]
    assert "not found" in messages[9]
    assert "already exists" in messages[10]
    assert "duplicates row 2" in messages[11]
    assert sorted(messages) == list(range(3, 12))
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
