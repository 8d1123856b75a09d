"""The biller registry: add, change, disable and enable the services customers pay.

Every change runs in one unit of work together with its audit entry (`biller.add`,
`biller.update`, `biller.disable`, `biller.enable`); input that does not validate raises
an InvalidInput (InvalidBillerCode, InvalidBiller, BillerExists) whose message is shown
to the user in Chinese and English, and changes nothing. Billing routes are named by the
caller (Settings.route_names): this layer does not read the configuration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from selfpay.domain.accounts import BILLER_KINDS, DEFAULT_ROUTE, Biller, normalize_biller
from selfpay.domain.errors import BillerExists, BillerNotFound, InvalidBiller, InvalidBillerCode
from selfpay.services import audit
from selfpay.services.ports import DuplicateKey, UnitOfWork

MAX_NAME = 64
MAX_ORDER = 9999
# Icon names the kiosk and the pages know; "" uses the kind's own.
ICONS = ("electricity", "water", "gas", "property", "parking", "heating", "internet",
         "phone", "tv", "other")
# Kiosk steps in the only order they may come in; a list names a subset of them.
KIOSK_STEPS = ("choose", "identify", "identify_plate", "confirm_plate", "confirm", "pay",
               "receipt")
EDITABLE = ("name", "name_en", "kind", "icon", "display_order", "elderly", "steps", "route")


def normalize_code(raw: object) -> str:
    """A biller code as typed ("elec ") -> "ELEC"; InvalidBillerCode in both languages."""
    try:
        return normalize_biller(raw)
    except InvalidBillerCode as exc:
        raise InvalidBillerCode(f"业务代码须为 1 个字母加最多 7 个字母或数字 ({exc})") from exc


def parse_steps(text: str) -> tuple[str, ...]:
    """"choose, identify,pay" -> ("choose", "identify", "pay"); "" -> () (the kind's
    default steps). Names are checked by add_biller / update_biller."""
    return tuple(s.strip().lower() for s in text.replace("，", ",").split(",") if s.strip())


def parse_order(text: str) -> int:
    """A display order typed by a user: a whole number 0-9999."""
    raw = text.strip()
    if not raw.isascii() or not raw.isdigit():
        raise InvalidBiller(f"显示顺序必须是 0 到 {MAX_ORDER} 的整数 (display order must be a "
                            f"whole number from 0 to {MAX_ORDER}): {text!r}")
    return _order(int(raw))


def _order(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ORDER:
        raise InvalidBiller(f"显示顺序必须是 0 到 {MAX_ORDER} 的整数 (display order must be a "
                            f"whole number from 0 to {MAX_ORDER}): {value!r}")
    return value


def _name(value: object, *, required: bool, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidBiller(f"{field} must be text: {value!r}")
    text = " ".join(value.split())
    if required and not text:
        raise InvalidBiller("名称不能为空 (the name must not be empty)")
    if len(text) > MAX_NAME:
        raise InvalidBiller(f"名称最多 {MAX_NAME} 个字符 ({field} may have at most {MAX_NAME} "
                            f"characters)")
    return text


def _steps(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidBiller(f"steps must be a list of step names: {value!r}")
    steps = tuple(value)
    unknown = [s for s in steps if s not in KIOSK_STEPS]
    if unknown:
        raise InvalidBiller(f"未知的自助机步骤 (unknown kiosk step {unknown[0]!r}; known: "
                            f"{', '.join(KIOSK_STEPS)})")
    if not steps:
        return ()
    if len(set(steps)) != len(steps):
        raise InvalidBiller("自助机步骤不能重复 (a kiosk step appears twice)")
    if [KIOSK_STEPS.index(s) for s in steps] != sorted(KIOSK_STEPS.index(s) for s in steps):
        raise InvalidBiller(f"自助机步骤顺序不对 (kiosk steps out of order; they go "
                            f"{' → '.join(KIOSK_STEPS)})")
    if "pay" not in steps:
        raise InvalidBiller("自助机步骤必须包含 pay (the kiosk steps must include pay)")
    if "identify" in steps and "identify_plate" in steps:
        raise InvalidBiller("identify 与 identify_plate 只能选一个 (choose identify or "
                            "identify_plate, not both)")
    if "confirm_plate" in steps and "identify_plate" not in steps:
        raise InvalidBiller("confirm_plate 需要先有 identify_plate (confirm_plate needs "
                            "identify_plate)")
    return steps


def _checked(biller: Biller, routes: Sequence[str]) -> Biller:
    """The biller with its names tidied; InvalidBiller for anything out of bounds."""
    if biller.kind not in BILLER_KINDS:
        raise InvalidBiller(f"业务种类无效 (unknown kind {biller.kind!r}; one of "
                            f"{', '.join(BILLER_KINDS)})")
    if biller.icon != "" and biller.icon not in ICONS:
        raise InvalidBiller(f"图标无效 (unknown icon {biller.icon!r}; one of "
                            f"{', '.join(ICONS)}, or empty for the kind's)")
    if not isinstance(biller.elderly, bool):
        raise InvalidBiller(f"elderly must be true or false: {biller.elderly!r}")
    if biller.route not in routes:
        raise InvalidBiller(f"计费路由不存在 (unknown billing route {biller.route!r}; "
                            f"configured: {', '.join(routes)})")
    return replace(
        biller,
        name=_name(biller.name, required=True, field="name"),
        name_en=_name(biller.name_en, required=False, field="name_en"),
        display_order=_order(biller.display_order),
        steps=_steps(biller.steps),
    )


def _describe(biller: Biller) -> dict[str, Any]:
    return {"name": biller.name, "name_en": biller.name_en, "kind": biller.kind,
            "icon": biller.icon, "display_order": biller.display_order,
            "elderly": biller.elderly, "steps": list(biller.steps), "route": biller.route}


def list_billers(uow: UnitOfWork, *, include_disabled: bool = True) -> list[Biller]:
    """In display order, then by code."""
    with uow:
        return uow.billers.list(include_disabled=include_disabled)


def add_biller(
    uow: UnitOfWork,
    *,
    code: str,
    name: str,
    name_en: str = "",
    kind: str = "other",
    icon: str = "",
    display_order: int = 100,
    elderly: bool = False,
    steps: Sequence[str] = (),
    route: str = DEFAULT_ROUTE,
    routes: Sequence[str],
    actor: str,
    ip: str = "",
    now: dt.datetime,
) -> Biller:
    """Register a biller (enabled). BillerExists when the code is taken."""
    biller = _checked(Biller(
        code=normalize_code(code), name=name, name_en=name_en, kind=kind, icon=icon,
        display_order=display_order, elderly=elderly, steps=tuple(steps), route=route,
    ), routes)
    exists = BillerExists(f"业务类型 {biller.code} 已存在 (biller {biller.code} already exists)")
    with uow:
        if uow.billers.get(biller.code) is not None:
            raise exists
        try:
            uow.billers.add(biller)
        except DuplicateKey as exc:  # added by someone else since the check above
            raise exists from exc
        audit.record(uow, actor=actor, action="biller.add", target=biller.code,
                     detail=_describe(biller), ip=ip, now=now)
        uow.commit()
    return biller


def update_biller(
    uow: UnitOfWork,
    code: str,
    /,
    *,
    routes: Sequence[str],
    actor: str,
    ip: str = "",
    now: dt.datetime,
    **changes: Any,
) -> Biller:
    """Change some of a biller's fields (EDITABLE); the audit entry holds each changed
    field's old and new value. Nothing is written when nothing changes."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise InvalidBiller(f"不能修改 {', '.join(unknown)} (cannot change {', '.join(unknown)}; "
                            f"editable: {', '.join(EDITABLE)})")
    if "steps" in changes:
        changes["steps"] = _steps(changes["steps"])
    key = normalize_code(code)
    with uow:
        current = _get(uow, key)
        updated = _checked(replace(current, **changes), routes)
        before, after = _describe(current), _describe(updated)
        diff = {k: {"old": before[k], "new": after[k]} for k in before if before[k] != after[k]}
        if diff:
            uow.billers.save(updated)
            audit.record(uow, actor=actor, action="biller.update", target=key, detail=diff,
                         ip=ip, now=now)
            uow.commit()
    return updated


def disable_biller(uow: UnitOfWork, code: str, *, actor: str, ip: str = "",
                   now: dt.datetime) -> Biller:
    """Offer the biller to no one; its accounts, bills and history stay."""
    return _set_enabled(uow, code, False, actor=actor, ip=ip, now=now)


def enable_biller(uow: UnitOfWork, code: str, *, actor: str, ip: str = "",
                  now: dt.datetime) -> Biller:
    return _set_enabled(uow, code, True, actor=actor, ip=ip, now=now)


def _set_enabled(uow: UnitOfWork, code: str, enabled: bool, *, actor: str, ip: str,
                 now: dt.datetime) -> Biller:
    key = normalize_code(code)
    with uow:
        current = _get(uow, key)
        if current.enabled == enabled:
            return current
        updated = replace(current, enabled=enabled)
        uow.billers.save(updated)
        audit.record(uow, actor=actor, action="biller.enable" if enabled else "biller.disable",
                     target=key, ip=ip, now=now)
        uow.commit()
    return updated


def _get(uow: UnitOfWork, code: str) -> Biller:
    biller = uow.billers.get(code)
    if biller is None:
        raise BillerNotFound(f"业务类型 {code} 不存在 (no biller {code})")
    return biller
