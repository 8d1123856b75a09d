"""What selfpay says, in zh-CN (the default) and English: src/selfpay/locales/*.json.

One catalog serves every surface: the web pages (`t()` in templates, the request's
language), the JSON API's `message`, the command line (Settings.locale) and the text of
domain errors, which carry a key and its values rather than a sentence (errors.py).

Standard library only, so that the domain may use it. A key missing from the English
catalog falls back to Chinese; a key missing from both shows the key itself, and a value
missing from the call leaves its `{name}` in place: a forgotten string is visible,
never an exception in an error path.

A value may itself name a catalog entry, "term.column.biller": it is said in the same
language as the sentence around it (业务类型 / biller). Such values keep an error's
values plain strings, so that a stored error (an import's row errors) is told later in
its reader's language.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

LANGS = ("zh-CN", "en")
DEFAULT_LANG = "zh-CN"
LOG_LANG = "en"  # what str(error) and the logs say
TERM = "term."  # a value starting so is a catalog key, said in the sentence's language


@cache
def catalog(lang: str) -> dict[str, str]:
    text = resources.files("selfpay").joinpath("locales", f"{lang}.json").read_text("utf-8")
    data: dict[str, str] = json.loads(text)
    return data


class _Values(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def translate(lang: str, key: str, /, **values: object) -> str:
    text = catalog(lang if lang in LANGS else DEFAULT_LANG).get(key)
    if text is None:
        text = catalog(DEFAULT_LANG).get(key, key)
    if not values:
        return text
    try:
        return text.format_map(_Values({k: join_list(lang, v) for k, v in values.items()}))
    except (ValueError, IndexError, AttributeError):  # a malformed entry: say it as it is
        return text


def join_list(lang: str, items: object) -> object:
    """A list as people write it, 甲、乙 / a, b; a term (TERM) in `lang`; anything else
    as it is."""
    if isinstance(items, list | tuple | set | frozenset):
        parts = [str(_term(lang, x)) for x in (sorted(items)
                                                if isinstance(items, set | frozenset)
                                                else items)]
        return ("、" if lang == "zh-CN" else ", ").join(parts)
    return _term(lang, items)


def _term(lang: str, value: object) -> object:
    if isinstance(value, str) and value.startswith(TERM):
        return translate(lang, value)
    return value
