from __future__ import annotations

import datetime as dt
import json

import pytest

from selfpay.adapters.bridge import codec
from selfpay.domain.accounts import AccountSummary, Bill, PaymentPosting, PostingResult
from selfpay.domain.errors import AccountNotFound, InvalidAmount
from selfpay.domain.ledger_errors import PaymentIdConflict
from selfpay.services.ports import BillingSystemError

SUMMARY = AccountSummary("ELEC", "0012345678", "张*丰", 500, (
    Bill(7, "ELEC", "0012345678", "2026-10", 5050, dt.date(2026, 11, 30), paid_fen=50),
    Bill(8, "ELEC", "0012345678", "2026-11", 10000, None),
))


def test_a_request_survives_encoding_with_its_correlation_id_deadline_and_key():
    r = codec.Request("post_payment", {"x": 1}, reply_to="selfpay.reply.a", deadline=1.5e9,
                      idempotency_key="P1", sender="a")
    back = codec.decode_request(codec.encode_request(r))
    assert back == r
    assert back.correlation_id == r.message_id


def test_a_reply_carries_the_request_id_as_correlation_id():
    ok = codec.Reply("ping", "abc", ok=True, payload={"at": 1})
    assert codec.decode_reply(codec.encode_reply(ok)) == ok
    err = codec.Reply("ping", "abc", ok=False, error_code="unavailable", error_message="down")
    assert codec.decode_reply(codec.encode_reply(err)) == err


def test_account_summary_posting_and_result_round_trip():
    assert codec.summary_from_json(json.loads(json.dumps(codec.summary_to_json(SUMMARY)))) \
        == SUMMARY
    p = PaymentPosting("P1", "ELEC", "0012345678", 15050, (7, 8), "sandbox", "T1",
                       dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC))
    assert codec.posting_from_json(codec.posting_to_json(p)) == p
    r = PostingResult("P1", ((7, 5000), (8, 10000)), 50, 550, duplicate=True)
    assert codec.result_from_json(json.loads(json.dumps(codec.result_to_json(r)))) == r


@pytest.mark.parametrize("amount", [150.5, 150.0, "150", True])
def test_an_amount_that_is_not_integer_fen_is_refused(amount):
    doc = codec.posting_to_json(PaymentPosting("P1", "ELEC", "1", 100))
    doc["amount_fen"] = amount
    with pytest.raises(codec.CodecError):
        codec.posting_from_json(doc)


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"v": 99, "type": "request"}',
    b'{"v": 1, "type": "request", "kind": "drop_tables", "message_id": "m", "reply_to": "q",'
    b' "deadline": 1}',
    b'{"v": 1, "type": "request", "kind": "ping", "message_id": "m", "reply_to": "q"}',
    b'{"v": 1, "type": "reply", "kind": "ping", "message_id": "m", "correlation_id": "c",'
    b' "ok": true}',
    # not JSON, though Python's json module reads it: a deadline that never passes
    b'{"v": 1, "type": "request", "kind": "ping", "message_id": "m", "reply_to": "q",'
    b' "deadline": Infinity}',
    b'{"v": 1, "type": "request", "kind": "ping", "message_id": "m", "reply_to": "q",'
    b' "deadline": NaN}',
])
def test_a_malformed_request_is_a_codec_error(body):
    with pytest.raises(codec.CodecError):
        codec.decode_request(body)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    doc = json.loads(codec.encode_request(codec.Request("ping", {}, "q", 1.0)))
    doc["future_field"] = {"x": 1}
    assert codec.decode_request(json.dumps(doc).encode()).kind == "ping"


def test_errors_cross_the_bridge_as_the_same_facts():
    assert codec.error_code(AccountNotFound("x")) == "account_not_found"
    assert codec.error_code(PaymentIdConflict("x")) == "payment_id_conflict"
    assert codec.error_code(InvalidAmount("x")) == "invalid_amount"
    assert codec.error_code(BillingSystemError("x")) == "unavailable"
    assert codec.error_code(RuntimeError("bug")) == "unavailable"
    with pytest.raises(AccountNotFound):
        codec.raise_error("account_not_found", "ELEC 1")
    with pytest.raises(BillingSystemError, match="billing system unavailable, try later"):
        codec.raise_error("unavailable", "db down")
