"""Errors carry a message key and its values; each reader gets one language, never a
sentence that mixes both; str(error) stays English for the logs."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from selfpay.domain.accounts import normalize_account, normalize_biller
from selfpay.domain.errors import (
    AccountNotFound,
    BillerDisabled,
    InvalidAccountNumber,
    InvalidInput,
)
from selfpay.domain.messages import catalog, translate
from selfpay.domain.money import parse_yuan

SRC = Path(__file__).resolve().parents[2] / "src" / "selfpay"
CJK = re.compile(r"[\u3400-\u9fff\uff01-\uff5e\u3000-\u303f]")
ENGLISH_WORD = re.compile(r"\b[a-z]{3,}\b")  # "account", "may", "only"; not "A-Z" or "pay"


def keys_named_in_the_code() -> set[str]:
    """Every message key the source raises with (key="..."), gives as a class default
    (default_key = "..."), builds from a field name (key=f"err.biller.{field}_..."), or
    refuses a command with (_refuse(c, "cli...."))."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text("utf-8")
        found.update(re.findall(r'\bkey="([a-z_]+\.[a-z0-9_.]+)"', text))
        found.update(re.findall(r'\bdefault_key = "([a-z_]+\.[a-z0-9_.]+)"', text))
        found.update(re.findall(r'_refuse\(c, "([a-z_]+\.[a-z0-9_.]+)"', text))
        # a row error: RowError.keyed(row, "err...."), _Rows.error(row, "err....")
        found.update(re.findall(r'\b(?:keyed|error)\([^,()]+, "([a-z_]+\.[a-z0-9_.]+)"',
                                text))
        found.update(re.findall(r'"(term\.[a-z0-9_.]+)"', text))  # a value said in words
        for template in re.findall(r'\bkey=f"(err\.biller\.\{field\}_[a-z]+)"', text):
            found.update(template.replace("{field}", f) for f in ("name", "name_en"))
    return found


def test_the_code_names_message_keys() -> None:
    keys = keys_named_in_the_code()
    assert {"err.account.chars", "err.biller.code", "err.biller.name_en_long",
            "err.account.not_found", "cli.no_billers", "err.import.no_rows",
            "err.import.duplicate_bill", "err.batch.duplicate", "err.batch.empty",
            "term.batch.default_web"} <= keys


def test_every_import_column_has_a_name_in_both_catalogs() -> None:
    from selfpay.services.imports import ACCOUNT_COLUMNS, BILL_COLUMNS

    for column in (*ACCOUNT_COLUMNS, *BILL_COLUMNS):
        zh, en = catalog("zh-CN").get(column.label), catalog("en").get(column.label)
        assert zh and en and CJK.search(zh) and not CJK.search(en), column


@pytest.mark.parametrize("key", sorted(keys_named_in_the_code()))
def test_every_message_key_the_code_names_is_in_both_catalogs_in_one_language(key: str
                                                                               ) -> None:
    zh, en = catalog("zh-CN").get(key), catalog("en").get(key)
    assert zh is not None and en is not None, f"{key} is missing from a catalog"
    assert CJK.search(zh), f"zh-CN {key} is not Chinese: {zh!r}"
    assert not CJK.search(en), f"en {key} holds Chinese: {en!r}"


@pytest.mark.parametrize(("call", "raw"), [
    (normalize_account, "12 34"), (normalize_account, ""), (normalize_account, -5),
    (normalize_account, 12.5), (normalize_account, object()), (normalize_biller, "1ELEC"),
    (normalize_biller, ""), (parse_yuan, "12.345"), (parse_yuan, "abc"), (parse_yuan, None),
])
def test_a_bad_value_is_told_in_one_language_at_a_time(call: object, raw: object) -> None:
    assert callable(call)
    with pytest.raises(InvalidInput) as refused:
        call(raw)
    error = refused.value
    zh, en = error.localized("zh-CN"), error.localized("en")
    words = zh
    for value in error.params.values():  # the refused value is quoted as it came
        words = words.replace(str(value), "")
    assert CJK.search(zh) and not ENGLISH_WORD.search(words), zh
    assert not CJK.search(en), en
    assert str(error) == en  # the logs read English


def test_the_message_quotes_the_value_as_given() -> None:
    with pytest.raises(InvalidAccountNumber) as refused:
        normalize_account("12 34/5")
    assert refused.value.localized("zh-CN") == (
        "用户编号无效（12 34/5）：只能包含数字 0-9、大写字母 A-Z 和短横线 -，1 到 32 位。")
    assert refused.value.params == {"value": "12 34/5"}
    assert refused.value.key == "err.account.chars"


def test_an_error_keeps_its_key_and_values_through_pickling() -> None:
    """Batch jobs run in worker processes: their errors come back pickled."""
    with pytest.raises(InvalidAccountNumber) as refused:
        normalize_account("A B")
    copy = pickle.loads(pickle.dumps(refused.value))
    assert type(copy) is InvalidAccountNumber and str(copy) == str(refused.value)
    assert copy.localized("zh-CN") == refused.value.localized("zh-CN")


def test_an_error_raised_the_old_way_says_its_text_or_its_class_default() -> None:
    plain = InvalidInput("bill ids must be integers")
    assert plain.localized("zh-CN") == plain.localized("en") == "bill ids must be integers"
    # a class that names a default says it, whatever sentence it was raised with
    gone = BillerDisabled("该业务已停止在此缴费 (biller ELEC is not offered here any more)")
    assert gone.localized("zh-CN") == "该业务已停止在此缴费。"
    assert gone.localized("en") == "This service is no longer offered here."
    assert "ELEC" in str(gone)  # the log keeps what the raiser said
    assert AccountNotFound("ELEC 1").localized("en") == "There is no such account."


def test_translate_joins_lists_and_keeps_a_missing_value_visible() -> None:
    assert translate("zh-CN", "err.biller.kind", value="heat", known=["gas", "water"]) == (
        "业务种类“heat”无效，可选：gas、water")
    assert translate("en", "err.biller.kind", value="heat", known=["gas", "water"]) == (
        "Unknown kind 'heat'; one of: gas, water")
    assert translate("en", "err.biller.kind", value="heat") == (
        "Unknown kind 'heat'; one of: {known}")
    assert translate("en", "no.such.key") == "no.such.key"


def test_a_term_among_the_values_is_said_in_the_sentences_language() -> None:
    error = InvalidInput(key="err.import.columns_missing",
                         columns=["term.column.account", "term.column.due_date"])
    assert error.localized("zh-CN") == "缺少必需的列：用户编号、到期日（第一行须为表头）。"
    assert str(error) == (
        "Missing required columns: account, due date (the first row must hold the headers).")
    assert translate("en", "err.import.column_twice", column="term.column.biller") == (
        "Column biller appears twice.")


def test_the_sms_lookup_refusals_carry_the_keys_the_pages_tell() -> None:
    from selfpay.services import lookup

    with pytest.raises(lookup.InvalidPhone) as bad_phone:
        lookup.normalize_phone("12")
    refusals = [bad_phone.value, lookup.CodeWrong(2), lookup.CodeThrottled(42)]
    assert [(e.key, e.params) for e in refusals] == [
        ("lookup.bad_phone", {}), ("lookup.code_wrong", {"n": 2}),
        ("lookup.throttled", {"seconds": 42})]
    assert refusals[1].localized("zh-CN") == "验证码不正确，还可尝试 2 次。"
    assert str(refusals[2]) == "A code was just sent; you can ask for another in 42 s."
    assert refusals[1].tries_left == 2 and refusals[2].retry_after_s == 42
