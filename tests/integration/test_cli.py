"""The `selfpay` command end to end on a temporary SQLite data folder."""

import csv
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from typer.testing import CliRunner

from selfpay.bootstrap import bootstrap
from selfpay.config import load_settings
from selfpay.entrypoints.cli import app

BASE = "https://pay.example.cn"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {"SELFPAY_DATA_DIR": str(tmp_path / "data"), "SELFPAY_PUBLIC_BASE_URL": BASE,
              "SELFPAY_DATABASE_URL": ""}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return tmp_path


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def decode_png(data: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(data)))
    assert len(found) == 1
    return found[0].text


@pytest.fixture
def demo(env):
    result = run("demo", "--no-serve", "--data-dir", str(env / "data"))
    assert result.exit_code == 0, result.output
    return env


def test_demo_prints_the_console_url_and_a_working_staff_login(demo):
    result = run("demo", "--no-serve", "--data-dir", str(demo / "data"))
    assert "/admin" in result.output
    password = result.output.split("admin / ")[1].split()[0]
    c = bootstrap(load_settings())
    try:
        with c.uow_factory() as uow:
            user = uow.users.get("admin")
            assert user is not None and user.role == "admin"
            assert c.hasher.verify(user.password_hash, password)
            assert uow.accounts.count() >= 250  # a few hundred accounts, seeded once
    finally:
        c.close()


def test_qr_make_writes_a_code_that_decodes_to_a_payload_that_verifies(demo):
    result = run("qr", "make", "0012345678", "--biller", "elec", "--out", "card.png")
    assert result.exit_code == 0, result.output
    payload = decode_png((demo / "card.png").read_bytes())
    assert payload.startswith("HTTPS://PAY.EXAMPLE.CN/Q/ELEC/0012345678/")
    ok = run("qr", "verify", payload)
    assert ok.exit_code == 0 and "ELEC" in ok.output and "0012345678" in ok.output
    tampered = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    bad = run("qr", "verify", tampered)
    assert bad.exit_code == 1 and "无效的二维码" in bad.output


def test_qr_make_picks_the_format_by_suffix_and_refuses_unknown_ones(demo):
    assert run("qr", "make", "0012345678", "--biller", "ELEC", "--out", "c.svg").exit_code == 0
    assert (demo / "c.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    assert run("qr", "make", "0012345678", "--biller", "ELEC", "--out", "c.pdf").exit_code == 0
    assert (demo / "c.pdf").read_bytes().startswith(b"%PDF")
    bad = run("qr", "make", "0012345678", "--biller", "ELEC", "--out", "c.gif")
    assert bad.exit_code != 0 and not (demo / "c.gif").exists()


def test_qr_make_refuses_a_bad_account_number(demo):
    result = run("qr", "make", "12 34", "--biller", "ELEC", "--out", "x.png")
    assert result.exit_code == 1 and not (demo / "x.png").exists()


def test_qr_batch_writes_a_zip_with_a_manifest_and_records_the_batch(demo):
    import openpyxl

    template = demo / "template.xlsx"
    assert run("qr", "template", str(template)).exit_code == 0
    wb = openpyxl.load_workbook(template)
    ws = wb.worksheets[0]
    accounts = [f"{i:010d}" for i in range(1, 41)]
    for i, number in enumerate(accounts, start=2):
        ws.cell(row=i, column=1, value=number)
        ws.cell(row=i, column=2, value="WATER")
    for row in range(len(accounts) + 2, ws.max_row + 1):  # drop the template's examples
        ws.cell(row=row, column=1, value=None)
        ws.cell(row=row, column=2, value=None)
    wb.save(demo / "in.xlsx")
    result = run("qr", "batch", "in.xlsx", "--out", "out.zip")
    assert result.exit_code == 0, result.output
    data = (demo / "out.zip").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode("utf-8-sig"))))
        assert [m["account"] for m in manifest] == accounts
        for m in manifest[:5]:
            png = zf.read(f"{m['account']}.png")
            assert decode_png(png) == m["payload"]
            assert hashlib.sha256(png).hexdigest() == m["sha256"]
    c = bootstrap(load_settings())
    try:
        with c.uow_factory() as uow:
            batch = uow.batches.list().items[0]
            entries = uow.audit.list(action="qr.batch").items
        assert batch.count == 40 and batch.source_filename == "in.xlsx"
        assert batch.sha256 == hashlib.sha256(data).hexdigest()
        assert (Path(c.settings.data_dir) / batch.stored_path).read_bytes() == data
        assert entries and entries[0].target == f"batch:{batch.id}"
    finally:
        c.close()


def test_qr_batch_with_a_bad_row_generates_nothing_unless_asked_to_skip(demo):
    (demo / "bad.csv").write_text("account,biller\n0000000001,ELEC\n12 x,ELEC\n", "utf-8")
    result = run("qr", "batch", "bad.csv", "--out", "bad.zip")
    assert result.exit_code == 1 and "3" in result.output and not (demo / "bad.zip").exists()
    result = run("qr", "batch", "bad.csv", "--out", "bad.zip", "--skip-invalid")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(demo / "bad.zip") as zf:
        assert sorted(zf.namelist()) == ["0000000001.png", "manifest.csv"]


def test_import_with_bad_rows_writes_nothing(demo):
    (demo / "acc.csv").write_text(
        "业务类型,用户编号,户名,电话,地址\nELEC,0099000001,张三,13800000000,人民路1号\n"
        "NOPE,0099000002,李四,13800000001,人民路2号\n", "utf-8")
    result = run("import", "accounts", "acc.csv")
    assert result.exit_code == 1
    c = bootstrap(load_settings())
    try:
        with c.uow_factory() as uow:
            assert uow.accounts.get("ELEC", "0099000001") is None
    finally:
        c.close()
    assert run("import", "accounts", "acc.csv", "--skip-invalid").exit_code == 0


def test_qr_sheet_lays_out_print_ready_cards(demo):
    (demo / "few.csv").write_text("account\n0000000001\n0000000002\n0000000003\n", "utf-8")
    result = run("qr", "sheet", "few.csv", "--out", "cards.pdf", "--biller", "GAS")
    assert result.exit_code == 0, result.output
    assert (demo / "cards.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(("env", "named"), [
    ({"SELFPAY_ENV": "test"}, "SELFPAY_ENV='test': Input should be 'demo', 'development' or"),
    ({"SELFPAY_ORDER_TTL_S": "5", "SELFPAY_PORT": "abc"}, "SELFPAY_ORDER_TTL_S='5'"),
    ({"SELFPAY_BILLING_ROUTES": '{"gas": {"adapter": "http", "token": "s3cret"}}'},
     "give it as token_env or token_file"),
])
@pytest.mark.parametrize("command", [["db", "upgrade"], ["qr", "verify", "X"],
                                     ["worker", "--once"]])
def test_a_bad_setting_is_named_in_one_line_by_every_command(env, tmp_path, named, command):
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("SELFPAY_")}
    result = subprocess.run([sys.executable, "-m", "selfpay.entrypoints.cli", *command],
                            env={**clean, "SELFPAY_DATA_DIR": str(tmp_path), **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (1, 2)
    assert "Traceback" not in result.stderr + result.stdout
    assert named in result.stderr
    assert "s3cret" not in result.stderr + result.stdout  # a refused secret is not echoed
