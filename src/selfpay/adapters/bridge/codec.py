"""The bridge's wire format: a versioned JSON envelope for requests and replies.

Request::

    {"v": 1, "type": "request", "kind": "post_payment", "message_id": "<32 hex digits>",
     "correlation_id": "<same as message_id>", "reply_to": "selfpay.reply.<instance>",
     "deadline": 1793500000.25, "idempotency_key": "<payment id>", "sender": "<instance>",
     "payload": {...}}

Reply::

    {"v": 1, "type": "reply", "kind": "post_payment", "message_id": "<32 hex digits>",
     "correlation_id": "<the request's message_id>", "ok": true, "payload": {...}}
    {"v": 1, "type": "reply", ..., "ok": false,
     "error": {"code": "account_not_found", "message": "ELEC 001"}}

`kind` is account_summary | post_payment | submit_work_order | work_order_status |
ping. `deadline` is UNIX
time in seconds (UTC clocks on both sides; NTP). Amounts are integer fen and a float
where an amount belongs is refused. A reader accepts any `v` up to VERSION and ignores
fields it does not know, so a newer agent can be rolled out before the web tier.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from selfpay.domain.accounts import AccountSummary, Bill, BillStatus, PaymentPosting, PostingResult
from selfpay.domain.errors import (
    AccountNotFound,
    BillerNotFound,
    InvalidAccountNumber,
    InvalidAmount,
    InvalidBillerCode,
    InvalidInput,
    NotFound,
)
from selfpay.domain.ledger_errors import BillNotOpen, PaymentIdConflict
from selfpay.services.ports import BillingSystemError, WorkOrderRequest, WorkOrderResult

VERSION = 1
KINDS = frozenset({"account_summary", "post_payment", "submit_work_order", "work_order_status",
                   "ping"})
UNAVAILABLE = "billing system unavailable, try later"


_id_prefix = secrets.token_hex(10)
_id_counter = itertools.count()


def _new_prefix() -> None:
    global _id_prefix
    _id_prefix = secrets.token_hex(10)


os.register_at_fork(after_in_child=_new_prefix)


def new_message_id() -> str:
    """32 hex digits, unique: 80 random bits per process, then a counter (uuid4 per
    message read os.urandom each time, a system call on every request and reply)."""
    return f"{_id_prefix}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


class CodecError(ValueError):
    """A message that is not a bridge envelope we can read (poison message)."""


@dataclass(frozen=True, slots=True)
class Request:
    kind: str
    payload: dict[str, Any]
    reply_to: str
    deadline: float
    idempotency_key: str = ""
    sender: str = ""
    message_id: str = field(default_factory=new_message_id)

    @property
    def correlation_id(self) -> str:
        return self.message_id


@dataclass(frozen=True, slots=True)
class Reply:
    kind: str
    correlation_id: str
    ok: bool
    payload: dict[str, Any] = field(default_factory=dict)
    error_code: str = ""
    error_message: str = ""
    message_id: str = field(default_factory=new_message_id)


def encode_request(r: Request) -> bytes:
    return _dump({
        "v": VERSION, "type": "request", "kind": r.kind, "message_id": r.message_id,
        "correlation_id": r.correlation_id, "reply_to": r.reply_to, "deadline": r.deadline,
        "idempotency_key": r.idempotency_key, "sender": r.sender, "payload": r.payload,
    })


def encode_reply(r: Reply) -> bytes:
    doc: dict[str, Any] = {
        "v": VERSION, "type": "reply", "kind": r.kind, "message_id": r.message_id,
        "correlation_id": r.correlation_id, "ok": r.ok,
    }
    if r.ok:
        doc["payload"] = r.payload
    else:
        doc["error"] = {"code": r.error_code, "message": r.error_message}
    return _dump(doc)


def decode_request(body: bytes) -> Request:
    doc = _load(body, "request")
    deadline = doc.get("deadline")
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise CodecError("request without a numeric deadline")
    return Request(
        kind=_kind(doc), payload=_obj(doc.get("payload", {}), "payload"),
        reply_to=_str(doc, "reply_to", required=True), deadline=float(deadline),
        idempotency_key=_str(doc, "idempotency_key"), sender=_str(doc, "sender"),
        message_id=_str(doc, "message_id", required=True),
    )


def decode_reply(body: bytes) -> Reply:
    doc = _load(body, "reply")
    ok = doc.get("ok")
    if not isinstance(ok, bool):
        raise CodecError("reply without ok")
    error = _obj(doc.get("error") or {}, "error")
    return Reply(
        kind=_kind(doc), correlation_id=_str(doc, "correlation_id", required=True), ok=ok,
        payload=_obj(doc.get("payload", {}), "payload"),
        error_code=str(error.get("code", "")), error_message=str(error.get("message", "")),
        message_id=_str(doc, "message_id"),
    )


# --- payloads ---------------------------------------------------------------------------

def summary_to_json(s: AccountSummary) -> dict[str, Any]:
    return {
        "biller": s.biller, "account": s.account, "masked_name": s.masked_name,
        "balance_fen": s.balance_fen,
        "open_bills": [{
            "id": b.id, "biller": b.biller, "account": b.account, "period": b.period,
            "amount_fen": b.amount_fen, "paid_fen": b.paid_fen, "status": str(b.status),
            "due_date": b.due_date.isoformat() if b.due_date else None,
        } for b in s.open_bills],
    }


def summary_from_json(d: dict[str, Any]) -> AccountSummary:
    try:
        bills = tuple(
            Bill(
                id=_int_or_none(b.get("id")), biller=str(b["biller"]), account=str(b["account"]),
                period=str(b["period"]), amount_fen=_fen(b["amount_fen"]),
                paid_fen=_fen(b.get("paid_fen", 0)), status=BillStatus(b.get("status", "open")),
                due_date=dt.date.fromisoformat(b["due_date"]) if b.get("due_date") else None,
            )
            for b in d.get("open_bills", [])
        )
        return AccountSummary(
            biller=str(d["biller"]), account=str(d["account"]),
            masked_name=str(d.get("masked_name", "")), balance_fen=_fen(d.get("balance_fen", 0)),
            open_bills=bills,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad account summary: {exc}") from exc


def posting_to_json(p: PaymentPosting) -> dict[str, Any]:
    return {
        "payment_id": p.payment_id, "biller": p.biller, "account": p.account,
        "amount_fen": p.amount_fen, "bill_ids": list(p.bill_ids), "channel": p.channel,
        "channel_txn_id": p.channel_txn_id,
        "paid_at": p.paid_at.isoformat() if p.paid_at else None,
    }


def posting_from_json(d: dict[str, Any]) -> PaymentPosting:
    try:
        paid_at = dt.datetime.fromisoformat(d["paid_at"]) if d.get("paid_at") else None
        return PaymentPosting(
            payment_id=str(d["payment_id"]), biller=str(d["biller"]), account=str(d["account"]),
            amount_fen=_fen(d["amount_fen"]),
            bill_ids=tuple(_int(i) for i in d.get("bill_ids", [])),
            channel=str(d.get("channel", "")), channel_txn_id=str(d.get("channel_txn_id", "")),
            paid_at=paid_at,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad payment posting: {exc}") from exc


def result_to_json(r: PostingResult) -> dict[str, Any]:
    return {
        "payment_id": r.payment_id, "applied": [[b, f] for b, f in r.applied],
        "surplus_fen": r.surplus_fen, "balance_fen": r.balance_fen, "duplicate": r.duplicate,
    }


def result_from_json(d: dict[str, Any]) -> PostingResult:
    try:
        return PostingResult(
            payment_id=str(d["payment_id"]),
            applied=tuple((_int(b), _fen(f)) for b, f in d.get("applied", [])),
            surplus_fen=_fen(d.get("surplus_fen", 0)), balance_fen=_fen(d.get("balance_fen", 0)),
            duplicate=bool(d.get("duplicate", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad posting result: {exc}") from exc


def work_order_to_json(w: WorkOrderRequest) -> dict[str, Any]:
    return {
        "ticket_no": w.ticket_no, "biller": w.biller, "account": w.account, "kind": w.kind,
        "description": w.description, "contact_phone": w.contact_phone,
        "created_at": w.created_at.isoformat(),
    }


def work_order_from_json(d: dict[str, Any]) -> WorkOrderRequest:
    try:
        return WorkOrderRequest(
            ticket_no=str(d["ticket_no"]), biller=str(d["biller"]), account=str(d["account"]),
            kind=str(d["kind"]), description=str(d.get("description", "")),
            contact_phone=str(d.get("contact_phone", "")),
            created_at=dt.datetime.fromisoformat(d["created_at"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad work order: {exc}") from exc


def work_order_result_to_json(r: WorkOrderResult) -> dict[str, Any]:
    return {"ticket_no": r.ticket_no, "id": r.ref, "status": r.status, "note": r.note,
            "duplicate": r.duplicate}


def work_order_result_from_json(d: dict[str, Any]) -> WorkOrderResult:
    """Also reads the HTTP/JSON contract's {"id", "status"}."""
    try:
        return WorkOrderResult(
            ticket_no=str(d.get("ticket_no", "")), ref=str(d["id"]), status=str(d["status"]),
            note=str(d.get("note") or ""), duplicate=bool(d.get("duplicate", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad work order result: {exc}") from exc


# --- errors -----------------------------------------------------------------------------

# Most specific first: the first class an exception is an instance of names its code.
_ERRORS: tuple[tuple[str, type[Exception]], ...] = (
    ("account_not_found", AccountNotFound),
    ("biller_not_found", BillerNotFound),
    ("not_found", NotFound),
    ("bill_not_open", BillNotOpen),
    ("invalid_account", InvalidAccountNumber),
    ("invalid_biller", InvalidBillerCode),
    ("invalid_amount", InvalidAmount),
    ("invalid_input", InvalidInput),
    ("payment_id_conflict", PaymentIdConflict),
)
TRANSIENT = frozenset({"unavailable", "expired"})


def error_code(exc: BaseException) -> str:
    """The wire code of an exception raised by a billing adapter. Anything that is not
    a known, permanent answer is `unavailable`: the caller may retry it."""
    for code, cls in _ERRORS:
        if isinstance(exc, cls):
            return code
    return "unavailable"


def raise_error(code: str, message: str) -> None:
    """Raise what `code` stands for on the side that asked."""
    for known, cls in _ERRORS:
        if known == code:
            raise cls(message)
    if code in TRANSIENT:
        raise BillingSystemError(UNAVAILABLE)
    raise BillingSystemError(f"billing system refused the request ({code}): {message}")


# --- helpers ----------------------------------------------------------------------------

# orjson rather than json: every request and reply is encoded and decoded once on each
# side, and under load the standard library's json was ~15 % of the bridge's own CPU
# (bench/bridge.py: +15-20 % round trips with orjson). It also refuses NaN/Infinity,
# which json.loads would have let through as amounts or deadlines.
def _dump(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def _load(body: bytes, expected: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CodecError("envelope is not a JSON object")
    v = doc.get("v")
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= VERSION:
        raise CodecError(f"unsupported envelope version {v!r}")
    if doc.get("type") != expected:
        raise CodecError(f"expected a {expected}, got {doc.get('type')!r}")
    return doc


def _kind(doc: dict[str, Any]) -> str:
    kind = doc.get("kind")
    if kind not in KINDS:
        raise CodecError(f"unknown kind {kind!r}")
    return str(kind)


def _str(doc: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise CodecError(f"{key} must be a non-empty string" if required else f"{key} not text")
    return value


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(f"{what} is not a JSON object")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _fen(value: object) -> int:
    """Money is an integer number of fen; 12.5 or "12.50" never passes."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"an amount must be an integer number of fen, got {value!r}")
    return value


def _int_or_none(value: object) -> int | None:
    return None if value is None else _int(value)
