"""The audit log in words: every action the code records has a label in both languages,
and a detail reads as "label value" with lists joined, never as a Python repr."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from selfpay.domain.messages import catalog
from selfpay.entrypoints.web.audit_text import ACTIONS, action_label, area_label, detail_items
from selfpay.services.ports import AuditEntry

SRC = Path(__file__).resolve().parents[2] / "src" / "selfpay"
CJK = re.compile(r"[\u3400-\u9fff]")
NOW = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


def recorded_actions() -> set[str]:
    """The action names in the source: on every line that passes `action="..."`, each
    dotted string (both arms of `"biller.enable" if ... else "biller.disable"`), with
    f"import.{kind}" as its two kinds."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.name == "audit_text.py":
            continue
        for line in path.read_text("utf-8").splitlines():
            if not re.search(r'\baction=f?"', line):
                continue
            for name in re.findall(r'"([a-z_]+(?:\.[a-z_{}]+)+)"', line):
                if "{kind}" in name:
                    found.update(name.replace("{kind}", k) for k in ("accounts", "bills"))
                else:
                    found.add(name)
    return found


def test_the_source_scan_finds_the_actions() -> None:
    found = recorded_actions()
    assert {"qr.batch.download", "biller.enable", "biller.disable", "import.bills",
            "posting.replay", "user.login.failed"} <= found


def test_every_action_the_code_records_is_listed() -> None:
    assert recorded_actions() <= set(ACTIONS), recorded_actions() - set(ACTIONS)


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_has_a_readable_label_in_both_languages(action: str) -> None:
    zh, en = action_label("zh-CN", action), action_label("en", action)
    assert CJK.search(zh) and zh != action
    assert not CJK.search(en) and en != action and "." not in en
    area = action.split(".")[0]
    assert CJK.search(area_label("zh-CN", area)) and area_label("en", area) != area


def test_a_detail_reads_as_labels_and_values_with_lists_joined() -> None:
    batch = AuditEntry(None, NOW, "operator", "qr.batch", "batch:7", {
        "source": "accounts.xlsx", "count": 2, "sha256": "ab" * 32, "skipped_rows": 0,
        "billers": ["ELEC", "GAS"]})
    zh = dict(detail_items("zh-CN", batch))
    assert zh == {"源文件": "accounts.xlsx", "数量": "2", "SHA-256": "abababababab…",
                  "跳过的行": "0", "业务类型": "ELEC、GAS"}
    en = dict(detail_items("en", batch))
    assert en["Billers"] == "ELEC, GAS" and en["Rows skipped"] == "0"
    assert all("[" not in v and "'" not in v for v in en.values())


def test_a_change_reads_old_to_new_and_codes_become_words() -> None:
    update = AuditEntry(None, NOW, "admin", "biller.update", "GAS", {
        "elderly": {"old": False, "new": True},
        "steps": {"old": [], "new": ["choose", "pay"]},
        "kind": {"old": "other", "new": "gas"}})
    assert detail_items("zh-CN", update) == [
        ("长者模式", "否 → 是"), ("自助机步骤", "（空） → choose、pay"), ("种类", "其他 → 燃气费")]
    assert detail_items("en", update)[0] == ("Elderly mode", "no → yes")
    login = AuditEntry(None, NOW, "x", "user.login", "", {"role": "auditor"})
    assert detail_items("zh-CN", login) == [("角色", "审计员")]
    imported = AuditEntry(None, NOW, "x", "import.bills", "b.csv", {"status": "partial"})
    assert detail_items("en", imported) == [("Status", "Partly imported")]


def test_what_it_does_not_know_it_shows_as_stored() -> None:
    entry = AuditEntry(None, NOW, "x", "kiosk.reboot", "", {"reason_code": "ups"})
    assert action_label("zh-CN", "kiosk.reboot") == "kiosk.reboot"
    assert detail_items("zh-CN", entry) == [("reason_code", "ups")]
    assert "audit.action.kiosk.reboot" not in catalog("zh-CN")
