"""`selfpay billers ...` end to end on a fresh SQLite data folder: a real installation
starts with db upgrade, billers add, import accounts and qr make."""

from __future__ import annotations

import getpass
import io
from pathlib import Path

import pytest
import zxingcpp
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from selfpay.bootstrap import bootstrap
from selfpay.config import load_settings
from selfpay.domain.accounts import Biller
from selfpay.entrypoints.cli import app

BASE = "https://pay.example.cn"
ACCOUNTS = "biller,account,name,phone,address\nELEC,0012345678,张三丰,13812345678,幸福路 1 号\n"


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for k, v in {"SELFPAY_DATA_DIR": str(tmp_path / "data"), "SELFPAY_PUBLIC_BASE_URL": BASE,
                 "SELFPAY_DATABASE_URL": ""}.items():
        monkeypatch.setenv(k, v)
    result = run("db", "upgrade")
    assert result.exit_code == 0, result.output
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def billers_and_audit() -> tuple[list[Biller], list[tuple[str, str, str]]]:
    c = bootstrap(load_settings())
    try:
        with c.uow_factory() as uow:
            entries = uow.audit.list(limit=500).items
            return uow.billers.list(), [(e.action, e.actor, e.target) for e in entries]
    finally:
        c.close()


def test_a_fresh_installation_adds_a_biller_imports_accounts_and_makes_a_code(
        fresh: Path) -> None:
    (fresh / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    refused = run("import", "accounts", "accounts.csv")
    assert refused.exit_code == 1 and "业务类型 ELEC 不存在" in refused.output
    no_biller = run("qr", "make", "0012345678", "--out", "card.png")
    assert no_biller.exit_code == 1 and "billers add" in no_biller.output

    added = run("billers", "add", "ELEC", "--name", "电费", "--kind", "electricity")
    assert added.exit_code == 0, added.output
    imported = run("import", "accounts", "accounts.csv")
    assert imported.exit_code == 0, imported.output
    assert "imported 1 accounts" in imported.output
    made = run("qr", "make", "0012345678", "--out", "card.png")
    assert made.exit_code == 0, made.output
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO((fresh / "card.png").read_bytes())))
    assert len(found) == 1
    assert found[0].text.startswith("HTTPS://PAY.EXAMPLE.CN/Q/ELEC/0012345678/")
    assert run("qr", "verify", found[0].text).exit_code == 0

    billers, entries = billers_and_audit()
    assert billers == [Biller("ELEC", "电费", kind="electricity")]
    assert ("biller.add", f"cli:{getpass.getuser()}", "ELEC") in entries


def test_list_shows_every_field_and_set_changes_only_what_is_given(fresh: Path) -> None:
    assert run("billers", "add", "park", "--name", "停车费", "--name-en", "Parking", "--kind",
               "parking", "--order", "50", "--steps", "choose,identify_plate,confirm_plate,pay",
               "--elderly").exit_code == 0
    assert run("billers", "add", "WATER", "--name", "水费", "--order", "5").exit_code == 0
    changed = run("billers", "set", "PARK", "--no-elderly", "--icon", "parking")
    assert changed.exit_code == 0, changed.output
    billers, entries = billers_and_audit()
    assert [b.code for b in billers] == ["WATER", "PARK"]  # display order
    park = billers[1]
    assert (park.name_en, park.kind, park.display_order, park.elderly, park.icon) == (
        "Parking", "parking", 50, False, "parking")
    assert park.steps == ("choose", "identify_plate", "confirm_plate", "pay")
    assert [a for a, _, t in entries if t == "PARK"] == ["biller.update", "biller.add"]
    listed = run("billers", "list")
    assert listed.exit_code == 0
    for text in ("PARK", "停车费", "Parking", "parking", "50", "WATER", "default"):
        assert text in listed.output


@pytest.mark.parametrize("args", [
    ("billers", "add", "ELEC", "--name", "电费"),  # exists
    ("billers", "add", "9X", "--name", "x"),
    ("billers", "add", "GAS", "--name", " "),
    ("billers", "add", "GAS", "--name", "燃气费", "--kind", "heat"),
    ("billers", "add", "GAS", "--name", "燃气费", "--order", "10000"),
    ("billers", "add", "GAS", "--name", "燃气费", "--icon", "rocket"),
    ("billers", "add", "GAS", "--name", "燃气费", "--steps", "pay,choose"),
    ("billers", "add", "GAS", "--name", "燃气费", "--route", "nowhere"),
    ("billers", "set", "ELEC", "--route", "nowhere"),
    ("billers", "set", "ELEC"),
    ("billers", "set", "GAS", "--name", "燃气费"),
    ("billers", "disable", "GAS"),
])
def test_errors_are_one_line_exit_1_and_change_nothing(fresh: Path, args: tuple[str, ...]
                                                        ) -> None:
    assert run("billers", "add", "ELEC", "--name", "电费").exit_code == 0
    before = billers_and_audit()
    result = run(*args)
    assert result.exit_code == 1
    assert result.output.startswith("错误：")  # Settings.locale, zh-CN by default
    assert "error" not in result.output.lower()  # one language, not two
    assert len(result.output.strip().splitlines()) <= 2  # rich may wrap one long line
    assert billers_and_audit() == before


def test_a_disabled_biller_takes_no_imports_and_no_new_codes(fresh: Path) -> None:
    assert run("billers", "add", "ELEC", "--name", "电费").exit_code == 0
    assert run("billers", "add", "WATER", "--name", "水费").exit_code == 0
    (fresh / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    assert run("import", "accounts", "accounts.csv").exit_code == 0
    off = run("billers", "disable", "elec")
    assert off.exit_code == 0 and "disabled" in off.output

    refused = run("import", "accounts", "accounts.csv")
    assert refused.exit_code == 1 and "业务类型 ELEC 已停用" in refused.output
    no_code = run("qr", "make", "0012345678", "--biller", "ELEC", "--out", "card.png")
    assert no_code.exit_code == 1 and "业务类型 ELEC 已停用" in no_code.output
    assert not (fresh / "card.png").exists()
    c = bootstrap(load_settings())
    try:
        with c.uow_factory() as uow:
            assert uow.accounts.get("ELEC", "0012345678") is not None  # accounts stay
    finally:
        c.close()

    assert run("billers", "enable", "ELEC").exit_code == 0
    assert run("qr", "make", "0012345678", "--biller", "ELEC", "--out", "card.png"
               ).exit_code == 0
