"""The audit log in words: a label for each action the code records, and its detail as
"label: value" pairs, in the page's language.

Entries are stored as the code wrote them (`qr.batch.download`, `{"billers": ["ELEC",
"GAS"]}`), which stays the stable thing to filter and export by; only the pages turn
them into text. Templates use the filters `audit_action` (an action's label) and
`audit_detail` (an entry's list of (label, value) pairs), or the macro
`audit_detail(entry)` in admin/_macros.html.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from selfpay.domain.messages import catalog, join_list, translate
from selfpay.services.ports import AuditEntry

# Every action the code records (tests/unit/test_audit_text.py finds them in the source),
# by area, in the order the filter lists them.
ACTIONS: tuple[str, ...] = (
    "user.login", "user.login.failed", "user.login.blocked", "user.logout", "user.create",
    "qr.make", "qr.template", "qr.batch", "qr.batch.download", "qr.sheet",
    "import.accounts", "import.bills",
    "biller.add", "biller.update", "biller.enable", "biller.disable",
    "rate_limit.set",
    "work_order.billing_status",
    "posting.replay",
    "device.add", "device.update", "device.enrol_code", "device.enrolled", "device.revoke",
    "device.alarm_ack", "device.task_add", "device.task_done",
)
AREAS: tuple[str, ...] = tuple(dict.fromkeys(a.split(".")[0] for a in ACTIONS))

_SHORT_HASH = 12


def action_label(lang: str, action: str) -> str:
    """'qr.batch.download' -> '下载二维码批次' / 'Downloaded a QR batch'; an action we do
    not know (an older version's) as it is."""
    key = f"audit.action.{action}"
    return translate(lang, key) if key in catalog("zh-CN") else action


def area_label(lang: str, area: str) -> str:
    key = f"audit.area.{area}"
    return translate(lang, key) if key in catalog("zh-CN") else area


def _known(lang: str, key: str, value: object) -> str:
    """The catalog's word for a stored code (a role, a status), else the code."""
    return translate(lang, key) if key in catalog("zh-CN") else str(value)


def _seconds(lang: str, _action: str, value: object) -> str:
    return translate(lang, "audit.seconds", n=value)


def _role(lang: str, _action: str, value: object) -> str:
    return _known(lang, f"role.{value}", value)


def _status(lang: str, action: str, value: object) -> str:
    if action.startswith("import."):
        return _known(lang, f"imports.status.{value}", value)
    if action.startswith("work_order."):
        return _known(lang, f"wo.status.{value}", value)
    return str(value)


def _kind(lang: str, action: str, value: object) -> str:
    if action.startswith("biller."):
        return _known(lang, f"billers.kind.{value}", value)
    return str(value)


def _hash(_lang: str, _action: str, value: object) -> str:
    text = str(value)
    return text[:_SHORT_HASH] + "…" if len(text) > _SHORT_HASH else text


def _upper(_lang: str, _action: str, value: object) -> str:
    return str(value).upper()


# Values that are codes in the log and words on the page.
_VALUES: dict[str, Callable[[str, str, object], str]] = {
    "retry_after_s": _seconds, "role": _role, "status": _status, "kind": _kind,
    "sha256": _hash, "format": _upper,
}


def _value(lang: str, action: str, key: str, value: Any) -> str:
    if isinstance(value, Mapping) and set(value) == {"old", "new"}:  # biller.update
        old, new = (_value(lang, action, key, value[k]) for k in ("old", "new"))
        return f"{old} → {new}"
    if value is None or value == "" or value == [] or value == ():
        return translate(lang, "audit.empty")
    if isinstance(value, bool):
        return translate(lang, "audit.yes" if value else "audit.no")
    if isinstance(value, list | tuple | set | frozenset):
        return str(join_list(lang, [_value(lang, action, key, v) for v in value]))
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_value(lang, action, k, v)}" for k, v in value.items())
    shown = _VALUES.get(key)
    return shown(lang, action, value) if shown else str(value)


def detail_items(lang: str, entry: AuditEntry) -> list[tuple[str, str]]:
    """The entry's detail as (label, value) pairs: labels from the catalog (a key it
    does not know as itself), lists joined, old → new for changes."""
    items = []
    for key, value in entry.detail.items():
        label_key = f"audit.detail.{key}"
        label = translate(lang, label_key) if label_key in catalog("zh-CN") else str(key)
        items.append((label, _value(lang, entry.action, str(key), value)))
    return items
