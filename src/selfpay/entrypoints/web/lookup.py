"""Look-up without a code (/lookup): by biller + account number, which redirects to the
account's signed page as a printed code would; or by phone number + a 6-digit SMS code
(rules in services/lookup.py), which lists only that phone's accounts, masked.

The SMS goes through the message outbox and the Notifier to the SMS gateway
(SELFPAY_SMS_GATEWAY); staff see it at /admin/messages with its code masked. The demo's
gateway is the terminal that runs `selfpay demo`, where the code is printed.
"Send me a code" answers the same whether or not the phone has accounts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from selfpay.adapters.ratelimit import RateLimiter
from selfpay.bootstrap import Container
from selfpay.domain.accounts import mask_name, mask_phone, normalize_account, normalize_biller
from selfpay.domain.errors import InvalidInput
from selfpay.entrypoints.web.deps import ContainerDep, client_ip, render
from selfpay.entrypoints.web.i18n import request_lang, translate
from selfpay.entrypoints.web.pay import PRIVATE, code_path
from selfpay.services import lookup as sms
from selfpay.services.lookup import SmsRules

router = APIRouter(include_in_schema=False)

# Codes one address may have sent per hour, over all phones: a spray of numbers from one
# place costs us SMS and bothers strangers.
SENDS_PER_IP_PER_HOUR = 10


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def clock(request: Request) -> dt.datetime:
    """Now; tests put their own clock in app.state.clock."""
    now: Callable[[], dt.datetime] = getattr(request.app.state, "clock", _utcnow)
    return now()


def rules(container: Container) -> SmsRules:
    s = container.settings
    return SmsRules(ttl=dt.timedelta(seconds=s.sms_code_ttl_s), max_tries=s.sms_max_tries,
                    resend_after=dt.timedelta(seconds=s.sms_resend_s))


def _secret(container: Container) -> bytes:
    return container.settings.secret_key.get_secret_value().encode()


def _send_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.sms_limiter
    return limiter


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    response = render(request, name, context, status_code=status)
    response.headers.update(PRIVATE)
    return response


def _form(request: Request, container: Container, *, status: int = 200,
          **values: Any) -> Response:
    with container.uow_factory() as uow:
        billers = uow.billers.list(include_disabled=False)
    ctx: dict[str, Any] = {"billers": billers, "biller": "", "account": "", "phone": "",
                           "account_error": "", "phone_error": ""}
    ctx.update(values)
    return _page(request, "public/lookup.html", ctx, status)


def _code_form(request: Request, phone: str, *, error: str = "", notice: str = "",
               status: int = 200, can_resend: bool = False) -> Response:
    return _page(request, "public/lookup_code.html", {
        "phone": phone, "masked_phone": mask_phone(phone), "error": error, "notice": notice,
        "can_resend": can_resend,
    }, status)


@router.get("/lookup", name="lookup")
def lookup_form(request: Request, container: ContainerDep, biller: str = "",
                account: str = "") -> Response:
    """The form; `biller` and `account` fill it in again (the "account not found" page
    links back here with what was looked up, to be corrected)."""
    return _form(request, container, biller=biller.strip().upper()[:8], account=account[:40])


@router.get("/lookup/account", name="lookup_account")
def lookup_account(request: Request, container: ContainerDep, biller: str = "",
                   account: str = "") -> Response:
    """Biller + account number -> the account's signed page (what its code opens)."""
    lang = request_lang(request)
    try:
        biller_code = normalize_biller(biller)
        number = normalize_account(account)
    except InvalidInput:
        return _form(request, container, status=400, biller=biller[:8], account=account[:40],
                     account_error=translate(lang, "lookup.bad_account"))
    return RedirectResponse(code_path(container, biller_code, number), status_code=303)


@router.post("/lookup/phone", name="lookup_phone")
def send_code(request: Request, container: ContainerDep,
              phone: Annotated[str, Form(max_length=32)] = "") -> Response:
    lang = request_lang(request)
    try:
        number = sms.normalize_phone(phone)
    except sms.InvalidPhone:
        return _form(request, container, status=400, phone=phone,
                     phone_error=translate(lang, "lookup.bad_phone"))
    limiter = _send_limiter(request)
    ip = client_ip(request)
    wait = limiter.retry_after("sms", ip)
    if wait:
        return _form(request, container, status=429, phone=phone,
                     phone_error=translate(lang, "lookup.too_many_sends",
                                           minutes=(wait + 59) // 60))
    r = rules(container)
    try:
        sms.issue_code(
            container.uow_factory(), phone=number, secret=_secret(container),
            box=container.message_box, now=clock(request), rules=r,
            text=translate(lang, "lookup.sms_text"),
        )
    except sms.CodeThrottled as exc:
        # A code is on its way already: same page, and say when another may be sent.
        return _code_form(request, number, notice=translate(
            lang, "lookup.throttled", seconds=exc.retry_after_s))
    limiter.record("sms", ip)
    return _code_form(request, number, notice=translate(
        lang, "lookup.sent", minutes=int(r.ttl.total_seconds() // 60)))


@router.post("/lookup/phone/verify", name="lookup_verify")
def verify_code(request: Request, container: ContainerDep,
                phone: Annotated[str, Form(max_length=32)] = "",
                code: Annotated[str, Form(max_length=16)] = "") -> Response:
    lang = request_lang(request)
    try:
        number = sms.normalize_phone(phone)
    except sms.InvalidPhone:
        return _form(request, container, status=400, phone=phone,
                     phone_error=translate(lang, "lookup.bad_phone"))
    try:
        accounts = sms.verify_code(
            container.uow_factory(), phone=number, code=code, secret=_secret(container),
            now=clock(request), rules=rules(container),
        )
    except sms.CodeWrong as exc:
        return _code_form(request, number, status=400, can_resend=exc.tries_left == 0,
                          error=translate(lang, "lookup.code_wrong", n=exc.tries_left))
    except sms.CodeLocked:
        return _code_form(request, number, status=400, can_resend=True,
                          error=translate(lang, "lookup.code_locked"))
    except sms.CodeExpired:
        return _code_form(request, number, status=400, can_resend=True,
                          error=translate(lang, "lookup.code_expired"))
    with container.uow_factory() as uow:
        billers = {b.code: b for b in uow.billers.list()}
    items = []
    for acc in accounts:
        biller = billers.get(acc.biller)
        if biller is not None and not biller.enabled:
            continue  # offered to no one
        name = acc.biller
        if biller is not None:
            name = (biller.name_en or biller.name) if lang == "en" else biller.name
        items.append({"biller": acc.biller, "biller_name": name, "account": acc.number,
                      "masked_name": mask_name(acc.name),
                      "url": code_path(container, acc.biller, acc.number)})
    return _page(request, "public/lookup_accounts.html",
                 {"items": items, "masked_phone": mask_phone(number)})
