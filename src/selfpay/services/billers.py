"""The biller registry: add, change, disable and enable the services customers pay.

Every change runs in one unit of work together with its audit entry (`biller.add`,
`biller.update`, `biller.disable`, `biller.enable`); input that does not validate raises
an InvalidInput (InvalidBillerCode, InvalidBiller, BillerExists) that carries a message
key (shown to each user in their language), and changes nothing. Billing routes are named by the
caller (Settings.route_names): this layer does not read the configuration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from selfpay.domain.accounts import BILLER_KINDS, DEFAULT_ROUTE, Biller, normalize_biller
from selfpay.domain.errors import BillerExists, BillerNotFound, InvalidBiller
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
    """A biller code as typed ("elec ") -> "ELEC"; InvalidBillerCode otherwise."""
    return normalize_biller(raw)


def parse_steps(text: str) -> tuple[str, ...]:
    """"choose, identify,pay" -> ("choose", "identify", "pay"); "" -> () (the kind's
    default steps). Names are checked by add_biller / update_biller."""
    return tuple(s.strip().lower() for s in text.replace("，", ",").split(",") if s.strip())


def parse_order(text: str) -> int:
    """A display order typed by a user: a whole number 0-9999."""
    raw = text.strip()
    if not raw.isascii() or not raw.isdigit():
        raise InvalidBiller(key="err.biller.order", max=MAX_ORDER, value=text[:16])
    return _order(int(raw))


def _order(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ORDER:
        raise InvalidBiller(key="err.biller.order", max=MAX_ORDER, value=repr(value)[:16])
    return value


def _name(value: object, *, required: bool, field: str) -> str:
    """`field` is "name" or "name_en": it picks the message (名称 / 英文名称)."""
    if not isinstance(value, str):
        raise InvalidBiller(key=f"err.biller.{field}_text", value=type(value).__name__)
    text = " ".join(value.split())
    if required and not text:
        raise InvalidBiller(key="err.biller.name_empty")
    if len(text) > MAX_NAME:
        raise InvalidBiller(key=f"err.biller.{field}_long", max=MAX_NAME)
    return text


def _steps(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidBiller(key="err.biller.steps_type", value=type(value).__name__)
    steps = tuple(value)
    unknown = [s for s in steps if s not in KIOSK_STEPS]
    if unknown:
        raise InvalidBiller(key="err.biller.step_unknown", step=str(unknown[0])[:32],
                            known=list(KIOSK_STEPS))
    if not steps:
        return ()
    if len(set(steps)) != len(steps):
        raise InvalidBiller(key="err.biller.steps_twice")
    if [KIOSK_STEPS.index(s) for s in steps] != sorted(KIOSK_STEPS.index(s) for s in steps):
        raise InvalidBiller(key="err.biller.steps_order", order=" → ".join(KIOSK_STEPS))
    if "pay" not in steps:
        raise InvalidBiller(key="err.biller.steps_pay")
    if "identify" in steps and "identify_plate" in steps:
        raise InvalidBiller(key="err.biller.steps_identify")
    if "confirm_plate" in steps and "identify_plate" not in steps:
        raise InvalidBiller(key="err.biller.steps_plate")
    return steps


def _checked(biller: Biller, routes: Sequence[str]) -> Biller:
    """The biller with its names tidied; InvalidBiller for anything out of bounds."""
    if biller.kind not in BILLER_KINDS:
        raise InvalidBiller(key="err.biller.kind", value=str(biller.kind)[:32],
                            known=list(BILLER_KINDS))
    if biller.icon != "" and biller.icon not in ICONS:
        raise InvalidBiller(key="err.biller.icon", value=str(biller.icon)[:32],
                            known=list(ICONS))
    if not isinstance(biller.elderly, bool):
        raise InvalidBiller(key="err.biller.elderly", value=repr(biller.elderly)[:16])
    if biller.route not in routes:
        raise InvalidBiller(key="err.biller.route", value=str(biller.route)[:64],
                            known=list(routes))
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
    exists = BillerExists(key="err.biller.exists", code=biller.code)
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
        raise InvalidBiller(key="err.biller.not_editable", fields=unknown,
                            editable=list(EDITABLE))
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
        raise BillerNotFound(key="err.biller.unknown", code=code)
    return biller
