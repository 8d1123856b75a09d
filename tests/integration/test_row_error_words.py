"""Row errors of imports and QR batches, in one language at a time and their row named
once: the console's pages (stored errors told in the reader's language, whoever
uploaded the file) and the command line (Settings.locale, "row N: message")."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import openpyxl
import pytest
from test_web_admin import Site, Staff, build_site, login, wait_for_job
from typer.testing import CliRunner

from selfpay.entrypoints.cli import app as cli
from selfpay.services.ports import ImportRun, RowError
from support.web import BASE

CJK = re.compile(r"[\u3400-\u9fff\uff01-\uff5e\u3000-\u303f]")
ENGLISH_WORD = re.compile(r"\b[a-z]{3,}\b")  # "the", "row", "biller"; not "ELEC" or "A-Z"
ROW_NAMED = re.compile(r"第 \d+ 行：|\brow \d+:", re.IGNORECASE)

# Rows 3, 4, 5 and 6 are bad: an unknown biller, an account with a '#', no name, a
# phone with letters; row 7 repeats row 2.
BAD_ACCOUNTS = [
    ["业务类型", "用户编号", "户名", "电话", "地址"],
    ["ELEC", "0012340001", "张三", "", ""],
    ["NOPE", "0012340002", "李四", "", ""],
    ["ELEC", "12#4", "王五", "", ""],
    ["ELEC", "0012340004", None, "", ""],
    ["ELEC", "0012340005", "赵六", "PHONE?", ""],
    ["ELEC", "0012340001", "张三", "", ""],
]
# Row 3: an account with a '#'; row 4 repeats row 2 (a warning); row 5: an unknown biller.
BAD_BATCH = "用户编号,业务类型\n0012345678,ELEC\n12#4,ELEC\n0012345678,ELEC\n0099,GAS\n"
VALUES = ("NOPE", "12#4", "PHONE?", "GAS", "ELEC")  # quoted as given, in any language


def xlsx(rows: list[list[object]]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def assert_one_language(lang: str, message: str) -> None:
    if lang == "en":
        assert not CJK.search(message), message
        return
    words = re.sub(r"--[a-z-]+", "", message)  # a command line option is no English
    for value in VALUES:
        words = words.replace(value, "")
    assert CJK.search(message) and not ENGLISH_WORD.search(words), message


def error_table(html: str) -> list[tuple[str, str]]:
    """(row cell, message cell) of each line of the page's row-error tables."""
    cells: list[tuple[str, str]] = []
    for table in re.findall(r'<table class="table errors">(.*?)</table>', html, re.S):
        cells += [(unescape(r).strip(), unescape(m).strip()) for r, m in re.findall(
            r'<tr><td class="num">(.*?)</td><td>(.*?)</td></tr>', table, re.S)]
    return cells


def assert_rows_named_once(rows: list[tuple[str, str]]) -> None:
    for row, message in rows:
        assert row.isdigit() or row == "—", row
        assert not ROW_NAMED.search(message), message
        assert f"第 {row} 行" not in message and f"row {row}" not in message.lower(), message


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    built = build_site(tmp_path_factory.mktemp("row-errors"))
    yield built
    built.container.close()


def upload_import(operator: Staff, data: bytes) -> str:
    """Upload a bad accounts file in Chinese (the console's default); the run's URL."""
    r = operator.post("/admin/imports?lang=zh-CN", data={"csrf_token": operator.csrf,
                                                         "kind": "accounts"},
                      files={"file": ("bad.xlsx", data)}, follow_redirects=False)
    assert r.status_code == 303
    job = wait_for_job(operator, r.headers["location"])
    assert job["state"] == "done", job
    run_url = job["run_url"]
    assert isinstance(run_url, str)
    return run_url


# --- the console ------------------------------------------------------------------------------


def test_an_import_run_is_told_in_the_readers_language_with_each_row_named_once(
        site: Site) -> None:
    operator = login(site, "operator")
    run_url = upload_import(operator, xlsx(BAD_ACCOUNTS))
    said: dict[str, list[tuple[str, str]]] = {}
    for lang in ("zh-CN", "en"):  # uploaded in Chinese: read now in either
        rows = error_table(operator.get(f"{run_url}?lang={lang}").text)
        assert [r for r, _ in rows] == ["3", "4", "5", "6", "7"], rows
        assert_rows_named_once(rows)
        for _, message in rows:
            assert_one_language(lang, message)
        said[lang] = rows
    assert said["zh-CN"][0][1] == "业务类型 NOPE 不存在。"
    assert said["en"][0][1] == "There is no biller NOPE."
    assert said["zh-CN"][4][1] == "与第 2 行重复（ELEC 0012340001）。"  # the other row
    assert said["en"][2][1] == "The name is empty."


def test_a_missing_column_is_told_by_its_name_in_the_readers_language(site: Site) -> None:
    operator = login(site, "operator")
    run_url = upload_import(operator, xlsx([["biller", "name"], ["ELEC", "张三"]]))
    assert error_table(operator.get(f"{run_url}?lang=en").text) == [
        ("1", "Missing required columns: account (the first row must hold the headers).")]
    assert error_table(operator.get(f"{run_url}?lang=zh-CN").text) == [
        ("1", "缺少必需的列：用户编号（第一行须为表头）。")]


def test_a_run_stored_before_errors_had_keys_still_shows_its_words(site: Site) -> None:
    import datetime as dt

    with site.container.uow_factory() as uow:
        run_id = uow.imports.add(ImportRun(
            id=None, kind="accounts", filename="old.xlsx", actor="operator",
            at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), status="rejected", total_rows=1,
            imported=0, skipped=1, errors=[RowError(2, "户名为空 (name is empty)")]))
        uow.commit()
    operator = login(site, "operator")
    assert error_table(operator.get(f"/admin/imports/{run_id}?lang=en").text) == [
        ("2", "户名为空 (name is empty)")]


def batch_job(operator: Staff, data: str, *, skip_invalid: bool = False) -> str:
    """Start a batch in Chinese; the job page's URL once the job is over."""
    form = {"csrf_token": operator.csrf}
    if skip_invalid:
        form["skip_invalid"] = "true"
    r = operator.post("/admin/qr/batch?lang=zh-CN", data=form,
                      files={"file": ("bad.csv", data.encode())})
    wait_for_job(operator, r.url.path)
    return r.url.path


def test_a_rejected_batch_is_told_in_the_readers_language(site: Site) -> None:
    operator = login(site, "operator")
    url = batch_job(operator, BAD_BATCH)
    for lang in ("zh-CN", "en"):
        job = operator.get(f"{url}.json?lang={lang}").json()
        assert job["state"] == "failed"
        errors = [(str(e["row"]), e["message"]) for e in job["errors"]]
        assert [r for r, _ in errors] == ["3", "5"]
        assert_rows_named_once(errors)
        for text in [m for _, m in errors] + job["warnings"] + [job["message"]]:
            assert_one_language(lang, text)
        page = operator.get(f"{url}?lang={lang}").text
        assert error_table(page) == errors
    job = operator.get(f"{url}.json?lang=en").json()
    assert job["warnings"] == ["Row 4 repeats row 2 (ELEC 0012345678); one code is made."]
    assert job["errors"][1]["message"] == "Unknown biller GAS (configured: ELEC, WATER)."
    assert job["message"].startswith("The sheet has invalid rows")
    zh = operator.get(f"{url}.json?lang=zh-CN").json()
    assert zh["warnings"] == ["第 4 行与第 2 行重复（ELEC 0012345678），只生成一个二维码。"]


def test_the_rows_a_batch_skipped_are_told_in_the_readers_language(site: Site) -> None:
    operator = login(site, "operator")
    url = batch_job(operator, BAD_BATCH, skip_invalid=True)
    for lang in ("zh-CN", "en"):
        job = operator.get(f"{url}.json?lang={lang}").json()
        assert job["state"] == "done", job
        skipped = [(str(e["row"]), e["message"]) for e in job["skipped"]]
        assert [r for r, _ in skipped] == ["3", "5"]
        assert_rows_named_once(skipped)
        for _, message in skipped:
            assert_one_language(lang, message)
        assert error_table(operator.get(f"{url}?lang={lang}").text) == skipped


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    built = build_site(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    for key, value in {"SELFPAY_DATA_DIR": str(tmp_path / "data"), "SELFPAY_DATABASE_URL": "",
                       "SELFPAY_PUBLIC_BASE_URL": BASE}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "bad.xlsx").write_bytes(xlsx(BAD_ACCOUNTS))
    (tmp_path / "bad.csv").write_text(BAD_BATCH, encoding="utf-8")
    yield tmp_path
    built.container.close()


def selfpay(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize(("lang", "row"), [("zh-CN", "第 {n} 行："), ("en", "row {n}: ")])
def test_the_command_line_names_each_row_once_in_its_locale(
        cli_env: Path, monkeypatch: pytest.MonkeyPatch, lang: str, row: str) -> None:
    monkeypatch.setenv("SELFPAY_LOCALE", lang)
    code, lines = selfpay("import", "accounts", "bad.xlsx")
    assert code == 1
    for n in (3, 4, 5, 6, 7):
        (line,) = [x for x in lines if row.format(n=n) in x]
        assert line.strip().startswith(row.format(n=n)), line
        assert not ROW_NAMED.search(line.replace(row.format(n=n), "", 1)), line
        assert_one_language(lang, line.replace(row.format(n=n), "", 1))
    code, lines = selfpay("qr", "batch", "bad.csv", "--out", "out.zip")
    assert code == 1
    assert any(line.strip().startswith(row.format(n=3)) for line in lines), lines
    assert any(line.strip().startswith(row.format(n=5)) for line in lines), lines
    for line in lines:
        assert_one_language(lang, line)
    warning = "提示：第 4 行与第 2 行重复" if lang == "zh-CN" else "warning: Row 4 repeats row 2"
    assert any(line.startswith(warning) for line in lines), lines
